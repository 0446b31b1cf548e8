"""Memory the appliance shares with the processes that serve its host ports.

One block of doubles (``multiprocessing.RawArray``) and one lock, made by the appliance and
handed to every host worker when it is started:

* the **licence's token bucket** (tokens, last refill, rate, lifted), so the calls-per-second
  limit holds for the device as a whole, whichever process a command reaches;
* the **connection slots** of each host interface (64 per interface, as ``NO`` reports), so the
  limit and the choice of the connection to close for a newcomer cover every process;
* **counters** written by one process each (command volumes per interface, busy time, bytes,
  PIN verifications), read and summed by whoever answers ``J2``/``J4``/``J8``/``NI`` or the health API;
* facts the appliance publishes to the workers: listening ports, start of the counting period,
  the utilisation histogram it samples once a second.

No secret is ever stored here: keys and LMKs travel to workers over their control pipe only.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import threading
import time
from dataclasses import dataclass

from .product import TCP_CONNECTIONS_PER_INTERFACE

#: Host interfaces, in the order of their slot tables and counters.
INTERFACES = ("HOST1", "HOST2")
#: PIN verification commands (J8 counts their answers; 01 is a failed verification).
PIN_VERIFY_COMMANDS = frozenset({"DA", "EA", "DC", "EC", "BC", "BE", "CK", "CM", "GO", "GQ", "GU", "GW"})
#: Utilisation bands of J2: 0-10 %, 10-20 %, ... 90-100 %.
UTILISATION_BANDS = 10

# Fixed cells.
_TOKENS, _UPDATED, _RATE, _LIFTED, _STARTED, _SEQ, _MGMT_PORT, _SAMPLES = range(8)
_PIN_MINUTE, _PIN_HOUR, _FAIL_HOUR = range(8, 11)  # published by the appliance's sampler
_LISTEN = 11  # + interface: the listening port (0: not listening)
_HISTOGRAM = _LISTEN + len(INTERFACES)
_FIXED = _HISTOGRAM + UTILISATION_BANDS

# One connection slot.
_GEN, _OWNER, _EXECUTING, _LAST, _ORDER, _PEER_IP, _PEER_PORT, _CONNECTED = range(8)
_SLOT = 8

# Counters of one worker on one interface (before the per-command counts).
_BUSY, _FRAMES_IN, _FRAMES_OUT, _BYTES_IN, _BYTES_OUT, _PIN_VERIFIES, _PIN_FAILURES, _CONNECTS = range(8)
_PORT_COUNTERS = 8


def mp_context():
    # forkserver: workers are forked from a small server process that has the host-command code
    # loaded, not from the appliance's process (threads, an event loop, open databases).
    return multiprocessing.get_context("forkserver")


@dataclass(frozen=True, kw_only=True)
class Admission:
    """A slot given to a new connection, and the connection closed to free it (if any)."""

    slot: int
    gen: int
    victim_owner: int = 0
    victim_slot: int = -1
    victim_gen: int = -1
    victim_idle: float = 0.0


class SharedHostState:
    """The shared block; picklable into a worker process while it is being started."""

    def __init__(
        self,
        *,
        workers: int,
        commands: tuple[str, ...],
        rate: int = 60,
        slots: int = TCP_CONNECTIONS_PER_INTERFACE,
        shared: bool = True,
    ) -> None:
        self.workers = max(1, workers)
        self.commands = tuple(sorted(commands))
        self.command_index = {code: i for i, code in enumerate(self.commands)}
        self.capacity = slots
        self._slots_base = _FIXED
        self._counters_base = _FIXED + len(INTERFACES) * slots * _SLOT
        self._per_port = _PORT_COUNTERS + len(self.commands) + 1  # +1: codes not in the table
        size = self._counters_base + self.workers * len(INTERFACES) * self._per_port
        if shared:
            ctx = mp_context()
            self.cells = ctx.RawArray("d", size)
            self.lock = ctx.Lock()
        else:
            self.cells = [0.0] * size  # type: ignore[assignment]
            self.lock = threading.Lock()  # type: ignore[assignment]
        self.cells[_RATE] = float(rate)
        self.cells[_TOKENS] = float(rate)
        self.cells[_UPDATED] = time.monotonic()
        self.cells[_STARTED] = time.time()

    # -- the licence -------------------------------------------------------------------------

    @property
    def rate(self) -> int:
        return int(self.cells[_RATE])

    @rate.setter
    def rate(self, value: int) -> None:
        self.cells[_RATE] = float(value)

    @property
    def lifted(self) -> bool:
        return bool(self.cells[_LIFTED])

    @lifted.setter
    def lifted(self, value: bool) -> None:
        self.cells[_LIFTED] = 1.0 if value else 0.0

    def take_token(self, now: float) -> float:
        """Take one call's token at ``now``; seconds the caller must wait before running it."""
        cells = self.cells
        if cells[_LIFTED]:
            return 0.0
        with self.lock:
            rate = cells[_RATE]
            tokens = min(rate, cells[_TOKENS] + max(0.0, now - cells[_UPDATED]) * rate)
            if now > cells[_UPDATED]:
                cells[_UPDATED] = now
            tokens -= 1.0
            cells[_TOKENS] = tokens
        return 0.0 if tokens >= 0 else -tokens / rate

    def reset_bucket(self, now: float) -> None:
        with self.lock:
            self.cells[_TOKENS] = self.cells[_RATE]
            self.cells[_UPDATED] = now

    # -- published facts ---------------------------------------------------------------------

    def set_listening(self, interface: str, port: int) -> None:
        self.cells[_LISTEN + INTERFACES.index(interface)] = float(port)

    def listening(self, interface: str) -> int:
        return int(self.cells[_LISTEN + INTERFACES.index(interface)])

    @property
    def mgmt_port(self) -> int:
        return int(self.cells[_MGMT_PORT])

    @mgmt_port.setter
    def mgmt_port(self, port: int) -> None:
        self.cells[_MGMT_PORT] = float(port)

    @property
    def started(self) -> float:
        """Wall-clock start of the counting period (appliance start or release)."""
        return self.cells[_STARTED]

    # -- connection slots --------------------------------------------------------------------

    def _slot(self, interface: int, slot: int) -> int:
        return self._slots_base + (interface * self.capacity + slot) * _SLOT

    def admit(self, interface: int, owner: int, now: float, peer: tuple[str, int] | None,
              limit: int | None = None) -> Admission | None:
        """A slot for a new connection of ``owner`` (a worker number, 1..n); None when the
        interface's slots are all held by connections executing a command. When all are taken,
        the one that has gone longest without an answer gives its slot up (the caller closes it)."""
        cells = self.cells
        limit = min(limit or self.capacity, self.capacity)
        with self.lock:
            free = -1
            held = 0
            victim = -1
            for s in range(self.capacity):
                at = self._slot(interface, s)
                if cells[at + _OWNER] == 0:
                    if free < 0:
                        free = s
                    continue
                held += 1
                if not cells[at + _EXECUTING] and (
                    victim < 0
                    or (cells[at + _LAST], cells[at + _ORDER])
                    < (cells[self._slot(interface, victim) + _LAST], cells[self._slot(interface, victim) + _ORDER])
                ):
                    victim = s
            result = None
            if held < limit and free >= 0:
                result = Admission(slot=free, gen=int(cells[self._slot(interface, free) + _GEN]) + 1)
                chosen = free
            elif victim >= 0:
                at = self._slot(interface, victim)
                result = Admission(
                    slot=victim, gen=int(cells[at + _GEN]) + 1, victim_owner=int(cells[at + _OWNER]),
                    victim_slot=victim, victim_gen=int(cells[at + _GEN]), victim_idle=now - cells[at + _LAST],
                )
                chosen = victim
            else:
                return None
            at = self._slot(interface, chosen)
            cells[_SEQ] += 1
            cells[at + _GEN] = result.gen
            cells[at + _OWNER] = owner
            cells[at + _EXECUTING] = 0
            cells[at + _LAST] = now
            cells[at + _ORDER] = cells[_SEQ]
            cells[at + _PEER_IP] = _ip_number(peer[0]) if peer else 0
            cells[at + _PEER_PORT] = peer[1] if peer else 0
            cells[at + _CONNECTED] = time.time()
            return result

    def holds(self, interface: int, slot: int, gen: int) -> bool:
        return self.cells[self._slot(interface, slot) + _GEN] == gen

    def begin(self, interface: int, slot: int, gen: int) -> bool:
        """Mark the connection as executing a command; False if it lost its slot meanwhile."""
        at = self._slot(interface, slot)
        with self.lock:
            if self.cells[at + _GEN] != gen:
                return False
            self.cells[at + _EXECUTING] = 1
            return True

    def answered(self, interface: int, slot: int, gen: int, now: float) -> None:
        at = self._slot(interface, slot)
        with self.lock:
            if self.cells[at + _GEN] == gen:
                self.cells[at + _EXECUTING] = 0
                self.cells[at + _LAST] = now

    def release(self, interface: int, slot: int, gen: int) -> None:
        at = self._slot(interface, slot)
        with self.lock:
            if self.cells[at + _GEN] == gen:
                self.cells[at + _OWNER] = 0
                self.cells[at + _EXECUTING] = 0

    def release_owner(self, owner: int) -> int:
        """Free every slot of a worker that is gone; how many there were."""
        freed = 0
        with self.lock:
            for interface in range(len(INTERFACES)):
                for s in range(self.capacity):
                    at = self._slot(interface, s)
                    if self.cells[at + _OWNER] == owner:
                        self.cells[at + _OWNER] = 0
                        self.cells[at + _EXECUTING] = 0
                        self.cells[at + _GEN] += 1
                        freed += 1
        return freed

    def connections(self, interface: int | None = None) -> int:
        interfaces = range(len(INTERFACES)) if interface is None else (interface,)
        cells = self.cells
        return sum(1 for i in interfaces for s in range(self.capacity) if cells[self._slot(i, s) + _OWNER])

    def connection_records(self, interface: int) -> list[tuple[str, int, float]]:
        """(peer address, peer port, wall-clock connect time) of every open connection."""
        cells = self.cells
        out = []
        for s in range(self.capacity):
            at = self._slot(interface, s)
            if cells[at + _OWNER]:
                out.append((str(ipaddress.IPv4Address(int(cells[at + _PEER_IP]))), int(cells[at + _PEER_PORT]),
                            cells[at + _CONNECTED]))
        return out

    # -- counters ----------------------------------------------------------------------------

    def _counter_base(self, worker: int, interface: int) -> int:
        return self._counters_base + (worker * len(INTERFACES) + interface) * self._per_port

    def count_command(self, worker: int, interface: int, command: str, code: str, busy: float,
                      size_in: int, size_out: int) -> None:
        """One answered command (only this worker writes these cells: no lock)."""
        cells = self.cells
        base = self._counter_base(worker, interface)
        cells[base + _BUSY] += busy
        cells[base + _FRAMES_IN] += 1
        cells[base + _FRAMES_OUT] += 1
        cells[base + _BYTES_IN] += size_in + 2
        cells[base + _BYTES_OUT] += size_out + 2
        index = self.command_index.get(command, len(self.commands))
        cells[base + _PORT_COUNTERS + index] += 1
        if command in PIN_VERIFY_COMMANDS and code in ("00", "01"):
            cells[base + _PIN_VERIFIES] += 1
            if code == "01":
                cells[base + _PIN_FAILURES] += 1

    def count_connect(self, worker: int, interface: int) -> None:
        self.cells[self._counter_base(worker, interface) + _CONNECTS] += 1

    def _sum(self, field: int, interfaces: tuple[int, ...] | range | None = None) -> float:
        interfaces = range(len(INTERFACES)) if interfaces is None else interfaces
        return sum(self.cells[self._counter_base(w, i) + field] for w in range(self.workers) for i in interfaces)

    def busy_seconds(self) -> float:
        return self._sum(_BUSY)

    def command_volumes(self) -> dict[str, int]:
        """Commands answered since the counting period started, by command code (both interfaces)."""
        volumes = {}
        for code, index in self.command_index.items():
            n = int(self._sum(_PORT_COUNTERS + index))
            if n:
                volumes[code] = n
        return volumes

    def per_worker(self, interface: str) -> list[int]:
        """Frames answered on ``interface`` by each worker (to see that several processes serve)."""
        i = INTERFACES.index(interface)
        return [int(self.cells[self._counter_base(w, i) + _FRAMES_OUT]) for w in range(self.workers)]

    def pin_counts(self) -> tuple[int, int]:
        return int(self._sum(_PIN_VERIFIES)), int(self._sum(_PIN_FAILURES))

    def traffic(self, interfaces: tuple[int, ...] | range | None = None) -> dict[str, int]:
        return {
            "frames_in": int(self._sum(_FRAMES_IN, interfaces)),
            "frames_out": int(self._sum(_FRAMES_OUT, interfaces)),
            "bytes_in": int(self._sum(_BYTES_IN, interfaces)),
            "bytes_out": int(self._sum(_BYTES_OUT, interfaces)),
            "connections": int(self._sum(_CONNECTS, interfaces)),
        }

    # -- utilisation (sampled by the appliance) ----------------------------------------------

    def add_utilisation_sample(self, percent: float) -> None:
        band = min(UTILISATION_BANDS - 1, max(0, int(percent // 10)))
        self.cells[_HISTOGRAM + band] += 1
        self.cells[_SAMPLES] += 1

    def set_pin_rates(self, per_minute: int, per_hour: int, failures_per_hour: int) -> None:
        self.cells[_PIN_MINUTE], self.cells[_PIN_HOUR], self.cells[_FAIL_HOUR] = per_minute, per_hour, failures_per_hour

    def pin_rates(self) -> tuple[int, int]:
        """PIN verifications in the last minute and in the last hour."""
        return int(self.cells[_PIN_MINUTE]), int(self.cells[_PIN_HOUR])

    def pin_failures_last_hour(self) -> int:
        return int(self.cells[_FAIL_HOUR])

    def utilisation_histogram(self) -> list[int]:
        return [int(self.cells[_HISTOGRAM + b]) for b in range(UTILISATION_BANDS)]

    def reset_counters(self) -> None:
        """Start a new counting period (a release erases the tenant's traffic figures)."""
        with self.lock:
            for i in range(self._counters_base, len(self.cells)):
                self.cells[i] = 0.0
            for b in range(UTILISATION_BANDS):
                self.cells[_HISTOGRAM + b] = 0.0
            for cell in (_SAMPLES, _PIN_MINUTE, _PIN_HOUR, _FAIL_HOUR):
                self.cells[cell] = 0.0
            self.cells[_STARTED] = time.time()


def _ip_number(address: str) -> int:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return 0
    return int(ip) if ip.version == 4 else 0
