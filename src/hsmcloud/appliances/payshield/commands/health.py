"""Health and utilisation host commands: JK, J2, J4, J8 and NI.

Their figures are real counters, summed over every process that serves the host ports (the
block they share, :mod:`..host_shared`): commands answered per command code, the share of
the workers' time spent executing commands (sampled once a second by the appliance), PIN
verifications, connections. The counting period starts when the appliance starts and again
at a release (which erases the tenant's traffic figures with the rest of its content).

Response layouts follow the field lists real monitoring clients decode (serial number 12 A,
dates DDMMYY, times hhmmss, counts as fixed-width decimal). Where no public source gives a
field's exact form (the J2 band delimiter, NI's record layout) the emulator's choice is
documented in docs/payshield.md and docs/differences.md.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import HostError
from ..fields import Cursor
from ..host_shared import INTERFACES, UTILISATION_BANDS

#: J2: what follows each utilisation band (start %, end %, number of one-second periods).
BAND_DELIMITER = ";"
#: JK: LMK records are separated by X'14 and the LMK list ends with X'15.
LMK_SEPARATOR, LMK_LIST_END = "\x14", "\x15"
#: JK status codes.
RUNNING, NOT_RUNNING = "1", "2"
NOT_TAMPERED = "1"
#: JK's LMK algorithm codes: 3DES 2-key, 3DES 3-key, AES-256.
JK_ALGORITHMS = {"variant": "0", "variant3": "1", "keyblock": "2"}


def _host(ctx: Any):  # noqa: ANN202 - the HostRuntime
    if ctx.host is None:
        raise HostError("41", "no host port statistics where the command was executed")
    return ctx.host


def _no_fields(cur: Cursor) -> None:
    """These commands take no fields of their own (only a trailer); anything else is error 15."""
    cur.trailing()


def date_time(at: float) -> str:
    """DDMMYY + hhmmss (UTC) of a wall-clock time."""
    return time.strftime("%d%m%y%H%M%S", time.gmtime(at))


def _serial(ctx: Any) -> str:
    return ctx.settings.serial[:12].ljust(12)


def _period(ctx: Any) -> str:
    """Start, end and current date/time of the counting period, then its length in seconds."""
    started = _host(ctx).shared.started
    now = time.time()
    return date_time(started) + date_time(now) + date_time(now) + f"{min(int(now - started), 10**10 - 1):010d}"


def cmd_j2(ctx: Any, cur: Cursor) -> str:
    """Get HSM loading: how many one-second periods fell in each 10 % band of utilisation."""
    _no_fields(cur)
    shared = _host(ctx).shared
    bands = "".join(
        f"{band * 10:03d}{band * 10 + 10:03d}{count:010d}{BAND_DELIMITER}"
        for band, count in zip(range(UTILISATION_BANDS), shared.utilisation_histogram(), strict=True)
    )
    return _serial(ctx) + _period(ctx) + bands


def cmd_j4(ctx: Any, cur: Cursor) -> str:
    """Get host command volumes: each command code answered in the period, with its count."""
    _no_fields(cur)
    volumes = _host(ctx).shared.command_volumes()
    return _serial(ctx) + _period(ctx) + "".join(f"{code}{n:012d}" for code, n in sorted(volumes.items()))


def cmd_j8(ctx: Any, cur: Cursor) -> str:
    """Get health check accumulated counts: starts, tampers, PIN verifications, failed ones."""
    _no_fields(cur)
    shared = _host(ctx).shared
    _, failures = shared.pin_counts()
    per_minute, per_hour = shared.pin_rates()
    return (
        _serial(ctx) + _period(ctx)
        + f"{min(ctx.settings.starts, 10**10 - 1):010d}"  # reboots: starts of the appliance
        + f"{0:010d}"  # tampers: an emulation is never tampered with
        + f"{min(per_minute, 10**7 - 1):07d}{min(per_hour, 10**5 - 1):05d}"
        + f"{min(failures, 10**8 - 1):08d}"
    )


def cmd_jk(ctx: Any, cur: Cursor) -> str:
    """Get instantaneous health check status: interfaces, tamper state, the LMKs loaded."""
    _no_fields(cur)
    host = _host(ctx)
    shared = host.shared
    states = "".join(RUNNING if shared.listening(name) else NOT_RUNNING for name in INTERFACES)
    manager = RUNNING if shared.mgmt_port else NOT_RUNNING
    domain = ctx.domain
    records = []
    for slot, lmk in sorted(domain.lmks.items()):
        records.append(
            f"{slot:02d}"
            + ("1" if slot in domain.authorised else "0")
            + "00"  # authorised activities: the emulation authorises per LMK, not per activity
            + ("K" if lmk.scheme == "keyblock" else "V")
            + JK_ALGORITHMS[lmk.scheme]
            + "L"  # live
        )
    return (
        _serial(ctx) + date_time(time.time())
        + NOT_RUNNING  # console: the emulation has no serial console
        + manager + states + "00"  # two reserved
        + NOT_TAMPERED
        + f"{len(domain.lmks):02d}" + "00" + "00"  # LMKs loaded, of them test LMKs, old LMKs
        + LMK_SEPARATOR.join(records) + LMK_LIST_END
        + "0"  # fraud detection limits exceeded: no fraud detection limits are set
        + ("0" if not failures_exceeded(shared) else "1")
    )


def failures_exceeded(shared: Any) -> bool:
    """PIN attack limit: more failed PIN verifications than this in the last hour."""
    return shared.pin_failures_last_hour() > PIN_ATTACK_LIMIT_PER_HOUR


#: Failed PIN verifications per hour beyond which JK reports the PIN attack limit exceeded.
PIN_ATTACK_LIMIT_PER_HOUR = 1000

# NI records: protocol, local port, remote address, remote port, state, since (DDMMYYhhmmss).
_LISTENING, _ESTABLISHED = "LISTENING", "ESTABLISHED"


def _record(local_port: int, remote: str, remote_port: int, state: str, since: float) -> str:
    return f"TCP{local_port:05d}{remote[:15].ljust(15)}{remote_port:05d}{state.ljust(11)}{date_time(since)}"


def cmd_ni(ctx: Any, cur: Cursor) -> str:
    """Return network information: the endpoints of the host (H: both ports; 1 / 2: HOST1 /
    HOST2 alone, as PayShieldPressureTest asks with NI11) or management (M) interface."""
    interface = cur.take(1)
    if interface not in ("H", "1", "2", "M"):
        raise HostError("81", "network interface must be H (host), 1 or 2 (one host port) or M (management)")
    statistics = cur.take(1)
    if statistics not in ("0", "1"):
        raise HostError("82", "Ethernet statistics flag must be 0 or 1")
    _no_fields(cur)
    shared = _host(ctx).shared
    started = shared.started
    records = []
    if interface != "M":
        for index, name in enumerate(INTERFACES):
            if interface in ("1", "2") and index != int(interface) - 1:
                continue
            port = shared.listening(name)
            if not port:
                continue
            records.append(_record(port, "0.0.0.0", 0, _LISTENING, started))
            for peer, peer_port, since in shared.connection_records(index):
                records.append(_record(port, peer, peer_port, _ESTABLISHED, since))
    elif shared.mgmt_port:
        records.append(_record(shared.mgmt_port, "0.0.0.0", 0, _LISTENING, started))
    out = f"{len(records):04d}" + "".join(records)
    if statistics == "1":
        traffic = shared.traffic() if interface != "M" else dict.fromkeys(
            ("frames_in", "frames_out", "bytes_in", "bytes_out", "connections"), 0)
        out += (f"{traffic['frames_in']:010d}{traffic['frames_out']:010d}"
                f"{traffic['bytes_in']:012d}{traffic['bytes_out']:012d}{traffic['connections']:010d}")
    return out
