"""What one process serving the host ports holds and does: HOST1/HOST2 listeners, the security
domain (LMKs, authorised state), the host settings, TLS, and the command path itself.

The appliance runs one :class:`HostRuntime` per host worker process (:func:`run_worker`, the
worker's entry point) or, with ``host_workers=0``, one inside its own event loop. Either way
the runtime only changes on a message from the appliance (:meth:`HostRuntime.apply`), and the
appliance waits until every runtime applied it before a management call returns: a command
that arrives after an LMK load, an authorisation, a settings or TLS change sees it.

Secrets reach a worker only through its control pipe (the LMK material, the TLS private key),
never through its arguments, its environment or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from . import keycrypto
from .domain import HostSettings, SecurityDomain
from .host_commands import Outcome, execute
from .host_server import ConnectionLimits, HostPort, RateLimiter
from .host_shared import INTERFACES, SharedHostState
from .host_tls import server_context
from .lmk import KeyBlockLmk, VariantLmk

#: Where a runtime reports an error-log entry: (source, command, error_code, peer, message).
EventSink = Callable[[dict[str, Any]], None]


def domain_message(domain: SecurityDomain, material: Callable[[Any], bytes]) -> dict[str, Any]:
    """The ``domain`` message for ``domain`` (LMK material included: for the control pipe only)."""
    return {
        "op": "domain",
        "lmk_slots": domain.lmk_slots,
        "lmks": [(slot, lmk.scheme, material(lmk)) for slot, lmk in sorted(domain.lmks.items())],
        "authorised": sorted(domain.authorised),
    }


class HostRuntime:
    """HOST1 and HOST2 served by this process, as worker ``index`` of the appliance."""

    def __init__(self, index: int, shared: SharedHostState, limits: ConnectionLimits, sink: EventSink) -> None:
        self.index = index
        self.shared = shared
        self.limits = limits
        self._sink = sink
        self.domain = SecurityDomain(lmk_slots=1)
        self.settings = HostSettings()
        self.limiter = RateLimiter(shared.rate, shared=shared)
        self.ports: dict[str, HostPort] = {}
        self._interface = {name: i for i, name in enumerate(INTERFACES)}

    async def start(self, sockets: dict[str, socket.socket]) -> None:
        for name, sock in sockets.items():
            port = HostPort(name, self.process, self._connection_error, limits=self.limits, shared=self.shared,
                            owner=self.index + 1)
            await port.start_on(sock)
            self.ports[name] = port

    async def stop(self) -> None:
        for port in self.ports.values():
            await port.stop()
        self.ports.clear()
        self.domain = SecurityDomain(lmk_slots=self.domain.lmk_slots)
        keycrypto.clear_key_caches()

    # -- messages from the appliance -------------------------------------------------------

    def apply(self, message: dict[str, Any]) -> None:
        """A change that needs no waiting: the security domain or the host settings."""
        op = message["op"]
        if op == "domain":
            lmks = {
                slot: KeyBlockLmk(material, f"{slot:02d}") if scheme == "keyblock" else VariantLmk(material)
                for slot, scheme, material in message["lmks"]
            }
            # One assignment: a command being executed sees the old domain or the new one whole.
            self.domain = SecurityDomain(lmk_slots=message["lmk_slots"], lmks=lmks,
                                         authorised=set(message["authorised"]))
            keycrypto.clear_key_caches()
        elif op == "settings":
            self.settings = message["settings"]
        else:
            raise ValueError(f"unknown host runtime message {op!r}")

    async def handle(self, message: dict[str, Any]) -> None:
        """Any message, including those that close connections."""
        op = message["op"]
        if op == "tls":
            for name, spec in message["ports"].items():
                port = self.ports.get(name)
                if port is not None:
                    await port.use_tls(_tls_context(spec), close_connections=message["cut"])
        elif op == "close":
            for port in self.ports.values():
                await port.close_connections()
        else:
            self.apply(message)

    # -- the command path -----------------------------------------------------------------

    def process(self, body: bytes, port: str, peer: str) -> Outcome | None | Any:
        """Execute one message; an awaitable instead when the licence's rate makes it wait."""
        if len(body) < self.settings.header_length + 2:
            return None
        wait = self.limiter.delay()
        if wait > 0:
            return self._later(wait, body, port, peer)
        return self._run(body, port, peer)

    async def _later(self, wait: float, body: bytes, port: str, peer: str) -> Outcome | None:
        await asyncio.sleep(wait)
        return self._run(body, port, peer)

    def _run(self, body: bytes, port: str, peer: str) -> Outcome:
        settings = self.settings
        started = time.perf_counter()
        outcome = execute(body, self.domain, settings, host=self)
        self.shared.count_command(self.index, self._interface.get(port, 0), outcome.command, outcome.error_code,
                                  time.perf_counter() - started, len(body), len(outcome.response))
        if outcome.error_code != "00":
            command = outcome.command if outcome.command.isprintable() else outcome.command.encode("latin-1").hex()
            self._sink({"source": port, "command": command, "error_code": outcome.error_code, "peer": peer,
                        "message": outcome.message})
        return outcome

    def _connection_error(self, port: str, peer: str, kind: str, message: str) -> None:
        self._sink({"source": port, "command": "--", "error_code": kind, "peer": peer, "message": message})

    # -- what the health commands read ------------------------------------------------------

    def interface_up(self, name: str) -> bool:
        return self.shared.listening(name) != 0


def _tls_context(spec: tuple | None) -> ssl.SSLContext | None:
    if spec is None:
        return None
    identity, mode, trusted = spec
    return server_context(identity, mode, trusted)


# -- the worker process --------------------------------------------------------------------


def run_worker(index: int, sockets: dict[str, socket.socket], shared: SharedHostState, limits: ConnectionLimits,
               control: Any, events: Any) -> None:
    """Entry point of host worker ``index``: serve until told to stop or the appliance is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the appliance stops its workers itself
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(index, sockets, shared, limits, control, events))


async def _serve(index: int, sockets: dict[str, socket.socket], shared: SharedHostState, limits: ConnectionLimits,
                 control: Any, events: Any) -> None:
    loop = asyncio.get_running_loop()

    def sink(entry: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, ValueError):
            events.send(entry)

    runtime = HostRuntime(index, shared, limits, sink)
    await runtime.start(sockets)
    inbox: asyncio.Queue = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(control.recv())
        except (EOFError, OSError):
            loop.remove_reader(control.fileno())
            inbox.put_nowait({"op": "stop", "orphaned": True})

    loop.add_reader(control.fileno(), readable)
    control.send(("ready", os.getpid()))
    while True:
        message = await inbox.get()
        if message["op"] == "stop":
            await runtime.stop()
            if not message.get("orphaned"):
                with contextlib.suppress(OSError):
                    control.send(("ok", None))
            return
        try:
            await runtime.handle(message)
        except Exception as exc:  # noqa: BLE001 - reported to the appliance, which raises it
            control.send(("error", f"{exc.__class__.__name__}: {exc}"))
        else:
            control.send(("ok", None))
