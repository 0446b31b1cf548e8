"""One emulated payShield 10K: state, host ports HOST1/HOST2 and management API together.

Several appliances can run in one event loop, each on its own loopback address; an
appliance keeps no global state and its state directory is its only storage.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import cards as _cards
from . import keycrypto as kc
from .domain import HostSettings, SecurityDomain
from .errors import (
    AlreadyClaimed,
    FirmwareRefused,
    HostError,
    InvalidRequest,
    LmkError,
    NotAuthorized,
    NotFound,
    NoTrustedClientCertificate,
)
from .host_commands import COMMANDS, ClearKey, open_key, seal_key
from .host_runtime import domain_message
from .host_server import DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, ConnectionLimits
from .host_shared import INTERFACES, SharedHostState
from .host_workers import HostWorkers, InProcessHosts
from .host_tls import (
    MAX_TRUSTED,
    MODES,
    MUTUAL,
    OFF,
    ON,
    PORTS,
    ServerIdentity,
    TrustedCertificate,
    new_server_identity,
    parse_certificates,
)
from .lmk import (
    KEY_USAGES,
    MODES_OF_USE,
    TYPE_USAGES,
    KeyBlockAttributes,
    KeyBlockLmk,
    VARIANT_SCHEMES,
    VariantLmk,
    lmk_from_components,
    material_of,
    parse_key_type,
)
from ..management_server import ManagementServer
from .management import PROVIDER, TENANT, create_management_app
from .product import (
    DEFAULT_HOST_PORT,
    LMK_SLOT_CHOICES,
    MINIMUM_FIRMWARE,
    MODEL,
    PREMIUM_PACKAGE_FEATURES,
    firmware_key,
    firmware_number as product_firmware_number,
)
from .state import ApplianceState, Claim

MAX_HOST_WORKERS = 16
#: Seconds between two samples of the host workers' busy time (J2's utilisation bands).
UTILISATION_SAMPLE_SECONDS = 1.0
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(kw_only=True)
class PayShieldConfig:
    """Where and as what one appliance runs. Port 0 picks a free port."""

    serial: str
    state_dir: Path
    address: str = "127.0.0.1"
    #: HOST2 listens on its own loopback address if given (then both can use port 1500).
    host2_address: str | None = None
    host1_port: int = DEFAULT_HOST_PORT
    host2_port: int = DEFAULT_HOST_PORT + 1
    mgmt_port: int = 0
    mgmt_token: str
    lmk_slots: int = 1
    calls_per_second: int = 60
    header_length: int = 4
    #: A host connection that starts no frame for this many seconds is closed.
    host_idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Seconds to complete a frame once its first byte arrived (and a TLS handshake, and reading an answer).
    host_frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    #: Processes serving HOST1/HOST2 (sharing their listening sockets): None = one per CPU core;
    #: 0 = serve them in the appliance's own event loop.
    host_workers: int | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        if not _SERIAL.fullmatch(self.serial):
            raise ValueError(f"invalid appliance serial {self.serial!r}")
        for name in ("address", "host2_address"):
            value = getattr(self, name)
            if value is not None and not _loopback(value):
                raise ValueError(f"{name} {value!r} is not a loopback address (127.0.0.0/8 or ::1)")
        for name in ("host1_port", "host2_port", "mgmt_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be 0..65535")
        if self.lmk_slots not in LMK_SLOT_CHOICES:
            raise ValueError(f"lmk_slots must be one of {LMK_SLOT_CHOICES}")
        if self.calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        if not 0 <= self.header_length <= 255:
            raise ValueError("header_length must be 0..255")
        if not self.mgmt_token:
            raise ValueError("mgmt_token must not be empty")
        if self.host_workers is not None and not (
            isinstance(self.host_workers, int) and not isinstance(self.host_workers, bool)
            and 0 <= self.host_workers <= MAX_HOST_WORKERS
        ):
            raise ValueError(f"host_workers must be 0..{MAX_HOST_WORKERS} (or None: one per CPU core)")
        self.host_limits()  # checks the timeouts

    def worker_count(self) -> int:
        """How many processes serve the host ports (0: the appliance's own event loop)."""
        if self.host_workers is None:
            return max(1, min(os.cpu_count() or 1, MAX_HOST_WORKERS))
        return self.host_workers

    def host_limits(self) -> ConnectionLimits:
        """Connection count and timeouts of each host interface."""
        return ConnectionLimits(idle_timeout=self.host_idle_timeout, frame_timeout=self.host_frame_timeout)


_LMK_ALGORITHMS = {
    "variant": "3DES (20 double-length pairs)",
    "variant3": "3DES (20 triple-length pairs)",
    "keyblock": "AES-256",
}


def _card_component(card: _cards.CardComponents, scheme: str) -> bytes:
    if scheme == "keyblock":
        return card.keyblock
    if scheme == "variant":
        return card.variant
    if card.variant3 is None:
        raise InvalidRequest(f"card {card.card_id} predates 3-key variant LMKs: make new cards for scheme 'variant3'")
    return card.variant3


def firmware_number(version: str) -> str:
    """The 9-character firmware number of NC/NO, in the real device's ``NNNN-NNNN`` form."""
    return product_firmware_number(version)


class PayShieldAppliance:
    """An emulated payShield 10K. ``await start()``, use it, ``await stop()``; restartable."""

    def __init__(self, config: PayShieldConfig) -> None:
        self.config = config
        self._state: ApplianceState | None = None
        self._domain = SecurityDomain(lmk_slots=config.lmk_slots)
        self._settings = HostSettings(header_length=config.header_length, serial=config.serial)
        # Licence bucket, connection slots and counters, shared with the host worker processes.
        self._shared = SharedHostState(workers=max(1, config.worker_count()), commands=tuple(COMMANDS),
                                       rate=config.calls_per_second, shared=config.worker_count() > 0)
        self._hosts: HostWorkers | InProcessHosts | None = None
        self._host_ports: dict[str, int] = {}
        self._sampler: asyncio.Task | None = None
        self._mgmt: ManagementServer | None = None
        self._mgmt_port: int | None = None
        # TLS on the host ports: mode per port, trusted client certificates, the server identity.
        self._tls_modes: dict[str, str] = dict.fromkeys(PORTS, OFF)
        self._tls_trusted: list[TrustedCertificate] = []
        self._tls_identity: ServerIdentity | None = None
        self._lifecycle_lock: asyncio.Lock | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._state is not None

    async def start(self) -> None:
        """Open the state and serve HOST1, HOST2 and management on the configured address."""
        if self._state is not None:
            raise RuntimeError(f"appliance {self.config.serial} is already running")
        cfg = self.config
        state = await asyncio.to_thread(ApplianceState.open, cfg.state_dir, cfg.serial)
        self._state = state
        self._lifecycle_lock = asyncio.Lock()
        try:
            await asyncio.to_thread(state.count_start)
            self._load_from_state()
            await self._start_host_ports(cfg.host1_port, cfg.host2_port)
            mgmt = ManagementServer(create_management_app(self, cfg.mgmt_token), name="payshield-mgmt")
            self._mgmt_port = await mgmt.start(cfg.address, cfg.mgmt_port)
            self._shared.mgmt_port = self._mgmt_port
            self._mgmt = mgmt
            self._sampler = asyncio.get_running_loop().create_task(self._sample_utilisation())
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the listeners and every connection; the state stays on disk. Idempotent."""
        try:
            if self._sampler is not None:
                self._sampler.cancel()
                self._sampler = None
            if self._mgmt is not None:
                await self._mgmt.stop()
            await self._stop_host_ports()
        finally:
            if self._state is not None:
                self._state.close()
            self._state = self._mgmt = None
            self._mgmt_port = None
            self._domain.clear()

    def _load_from_state(self) -> None:
        state = self.state
        device = state.device()
        self._shared.lifted = device.cps_limit_lifted
        self._domain.clear()
        for record in state.lmks():
            lmk_id = f"{record.slot:02d}"
            self._domain.lmks[record.slot] = (
                VariantLmk(record.material)
                if record.scheme in VARIANT_SCHEMES
                else KeyBlockLmk(record.material, lmk_id)
            )
        stored = state.settings()
        self._settings = HostSettings(
            header_length=stored.get("header_length", self.config.header_length),
            disabled_commands=frozenset(stored.get("disabled_commands", ())),
            firmware_number=firmware_number(device.firmware),
            serial=self.config.serial,
            starts=state.starts(),
        )
        # States written before TLS modes per port had one switch, host_tls, for both.
        modes = stored.get("host_tls_modes") or dict.fromkeys(PORTS, ON if stored.get("host_tls") else OFF)
        self._tls_modes = {port: modes.get(port, OFF) for port in PORTS}
        self._tls_trusted = [cert for pem in stored.get("host_tls_trusted", ()) for cert in parse_certificates(pem)]
        identity = state.host_tls_identity()
        self._tls_identity = None if identity is None else ServerIdentity(certificate=identity[0],
                                                                          private_key=identity[1])

    async def _start_host_ports(self, port1: int, port2: int) -> None:
        cfg = self.config
        count = cfg.worker_count()
        if count:
            hosts: HostWorkers | InProcessHosts = HostWorkers(
                count=count, shared=self._shared, limits=cfg.host_limits(), name=f"payshield-{cfg.serial}",
                sink=self._host_event)
        else:
            hosts = InProcessHosts(shared=self._shared, limits=cfg.host_limits(), sink=self._host_event)
        self._host_ports = await hosts.start({"HOST1": (cfg.address, port1),
                                              "HOST2": (cfg.host2_address or cfg.address, port2)})
        self._hosts = hosts
        for name, port in self._host_ports.items():
            self._shared.set_listening(name, port)
        self._push_settings()
        self._push_domain()
        await self._apply_host_tls(PORTS, cut=False)

    async def _stop_host_ports(self) -> None:
        for name in INTERFACES:
            self._shared.set_listening(name, 0)
        if self._hosts is not None:
            await self._hosts.stop()
        self._hosts = None
        self._host_ports = {}

    def _push_domain(self) -> None:
        """Every process serving the host ports has the security domain as it is now."""
        if self._hosts is not None:
            self._hosts.push(domain_message(self._domain, material_of))

    def _push_settings(self) -> None:
        if self._hosts is not None:
            self._hosts.push({"op": "settings", "settings": self._settings})

    def _host_event(self, entries: list[dict[str, Any]]) -> None:
        """Error-log entries from the host ports (failed commands, closed connections)."""
        if self._state is not None:
            self._state.errors(entries)

    async def _sample_utilisation(self) -> None:
        """Once a second: the share of the host workers' time spent executing commands (J2)."""
        loop = asyncio.get_running_loop()
        shared = self._shared
        last_busy, last_at = shared.busy_seconds(), loop.time()
        pins: collections.deque[tuple[float, int, int]] = collections.deque()
        while True:
            await asyncio.sleep(UTILISATION_SAMPLE_SECONDS)
            busy, now = shared.busy_seconds(), loop.time()
            if busy < last_busy:  # the counters were reset (release)
                last_busy = 0.0
                pins.clear()
            elapsed = max(now - last_at, 1e-6)
            shared.add_utilisation_sample(100.0 * (busy - last_busy) / (elapsed * shared.workers))
            last_busy, last_at = busy, now
            # PIN verifications in the last minute and hour (J8), failed ones in the last hour (JK).
            verifies, failures = shared.pin_counts()
            pins.append((now, verifies, failures))
            while pins and pins[0][0] < now - 3600:
                pins.popleft()
            minute = next((v for t, v, _ in pins if t >= now - 60), verifies)
            shared.set_pin_rates(verifies - minute, verifies - pins[0][1], failures - pins[0][2])

    @property
    def host_worker_pids(self) -> list[int]:
        """Process ids serving the host ports (this process's own with ``host_workers=0``)."""
        return [] if self._hosts is None else self._hosts.pids

    def host_statistics(self) -> dict[str, Any]:
        """Counters of the host ports, summed over every process that serves them."""
        shared = self._shared
        return {
            "workers": self.config.worker_count(),
            "per_worker": {name: shared.per_worker(name) for name in INTERFACES},
            "command_volumes": shared.command_volumes(),
            "traffic": shared.traffic(),
            "connections": shared.connections(),
        }

    @property
    def state(self) -> ApplianceState:
        if self._state is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return self._state

    def _port(self, name: str) -> int:
        port = self._host_ports.get(name)
        if port is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return port

    @property
    def host1_port(self) -> int:
        return self._port("HOST1")

    @property
    def host2_port(self) -> int:
        return self._port("HOST2")

    @property
    def host2_address(self) -> str:
        return self.config.host2_address or self.config.address

    @property
    def mgmt_port(self) -> int:
        if self._mgmt_port is None:
            raise RuntimeError(f"appliance {self.config.serial} is not running")
        return self._mgmt_port

    @property
    def host_tls_certificate(self) -> str | None:
        """PEM of the host ports' TLS certificate while TLS is on on either port."""
        return self._server_identity().certificate if self._host_tls_on else None

    @property
    def _host_tls_on(self) -> bool:
        return any(mode != OFF for mode in self._tls_modes.values())

    # -- host commands ------------------------------------------------------------------

    # -- provider -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        device = self.state.device()
        return {
            "serial": device.serial,
            "model": MODEL,
            "firmware": device.firmware,
            "licence": {
                "lmk_slots": self.config.lmk_slots,
                "cps": self.config.calls_per_second,
                "cps_limit_lifted": device.cps_limit_lifted,
                "premium_package": list(PREMIUM_PACKAGE_FEATURES),
            },
            "links": {
                "host1": "up" if self._hosts is not None and self._hosts.alive() else "down",
                "host2": "up" if self._hosts is not None and self._hosts.alive() else "down",
                "mgmt": "up" if self._mgmt is not None and self._mgmt.serving else "down",
            },
            "ports": {
                "host1": self._host_ports.get("HOST1"),
                "host2": self._host_ports.get("HOST2"),
                "mgmt": self._mgmt_port,
            },
            "claimed": device.tenant_token_hash is not None,
            "released": not self.state.customer_content_findings() and not self._domain.lmks,
            "lmks_loaded": len(self._domain.lmks),
            "host_connections": self._host_connections(),
            "host_workers": len(self.host_worker_pids) if self.config.worker_count() else 0,
        }

    def _host_connections(self) -> int:
        return self._shared.connections() if self._hosts is not None else 0

    def tenant_token_hash(self) -> str | None:
        return self.state.device().tenant_token_hash

    def record(self, actor: str, action: str, result: str = "ok", **detail: Any) -> None:
        if self._state is not None:
            self._state.audit(actor=actor, action=action, result=result, **detail)

    def set_cps_limit_lifted(self, lifted: bool) -> None:
        self.state.set_cps_limit_lifted(lifted)
        self._shared.lifted = lifted
        self.record(PROVIDER, "licence.cps_limit", lifted=lifted)

    def set_calls_per_second(self, cps: int) -> None:
        """Install another performance licence: host commands are paced at `cps` from now on."""
        before = self.config.calls_per_second
        self.config.calls_per_second = cps
        self._shared.rate = cps
        self.record(PROVIDER, "licence.cps", before=before, after=cps)

    def claim(self, digest: str) -> bool:
        """Register the tenant's credential (its SHA-256) on an unclaimed device.

        True if it was registered now, False if this credential held the device already."""
        outcome = self.state.claim_tenant_token_hash(digest)
        if outcome is Claim.REFUSED:
            self.record(PROVIDER, "tenant.credential.claim", "refused: already claimed")
            raise AlreadyClaimed(
                "the device is already claimed: only its tenant can change the credential "
                "(POST /tenant/credential); a release makes the device unclaimed again"
            )
        if outcome is Claim.CLAIMED:
            self.record(PROVIDER, "tenant.credential.claim")
        return outcome is Claim.CLAIMED

    def rotate_tenant_credential(self, digest: str) -> None:
        self.state.replace_tenant_token_hash(digest)
        self.record(TENANT, "tenant.credential.rotate")

    def update_firmware(self, version: str, actor: str) -> str:
        try:
            wanted = firmware_key(version)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        if wanted < firmware_key(MINIMUM_FIRMWARE):
            raise FirmwareRefused(f"firmware {version} is below {MINIMUM_FIRMWARE}, the lowest supported version")
        if actor == PROVIDER and self.state.device().tenant_token_hash is not None:
            raise FirmwareRefused("the device is allocated: its tenant patches its firmware")
        self.state.set_firmware(version.strip())
        self._settings = replace(self._settings, firmware_number=firmware_number(version.strip()))
        self._push_settings()
        self.record(actor, "firmware.update", version=version.strip())
        return version.strip()

    async def release(self, actor: str) -> None:
        """Erase all customer content: LMKs, authorised state, settings, logs, connections."""
        assert self._lifecycle_lock is not None
        async with self._lifecycle_lock:
            self._domain.clear()
            self._push_domain()
            if self._hosts is not None:
                await self._hosts.apush({"op": "close"})
                self._hosts.drain()
            await asyncio.to_thread(self.state.release)
            self._load_from_state()
            self._shared.reset_counters()
            self._push_settings()
            self._push_domain()
            await self._apply_host_tls(PORTS)

    async def pristine_findings(self) -> list[str]:
        findings = self.state.customer_content_findings()
        if self._domain.lmks:
            findings.append(f"{len(self._domain.lmks)} LMK(s) in memory")
        if self._domain.authorised:
            findings.append("authorised state is set")
        if self._host_tls_on:
            findings.append("TLS is enabled on the host ports")
        connections = self._host_connections()
        if connections:
            findings.append(f"{connections} host connection(s) open")
        return findings

    # -- tenant: LMKs and authorised state -----------------------------------------------

    def _check_slot(self, slot: Any) -> int:
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < self.config.lmk_slots:
            raise InvalidRequest(f"slot must be 0..{self.config.lmk_slots - 1} (licence: {self.config.lmk_slots} LMK)")
        return slot

    def load_lmk(self, body: dict[str, Any]) -> dict[str, Any]:
        """Form an LMK from >= 2 admin cards (document + PIN each) into a slot."""
        slot = self._check_slot(body.get("slot", 0))
        scheme = body.get("scheme", "variant")
        if scheme not in ("variant", "variant3", "keyblock"):
            raise InvalidRequest("scheme must be 'variant', 'variant3' (3-key variant LMK) or 'keyblock'")
        entries = body.get("cards")
        if not isinstance(entries, list) or len(entries) < 2:
            raise InvalidRequest("at least 2 admin cards are needed to form an LMK")
        if slot in self._domain.lmks and not body.get("replace", False):
            raise LmkError(f"LMK slot {slot:02d} is loaded; erase it first or pass replace=true")
        unlocked = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise InvalidRequest("each card entry is {'card': <card document>, 'pin': <PIN>}")
            unlocked.append(_cards.unlock_card(entry.get("card"), entry.get("pin")))
        ids = [c.card_id for c in unlocked]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("the same card was presented twice")
        components = [_card_component(c, scheme) for c in unlocked]
        lmk = lmk_from_components(scheme, components, f"{slot:02d}")
        check_value = lmk.check_value()
        self.state.put_lmk(slot=slot, scheme=scheme, check_value=check_value, material=material_of(lmk), cards=ids)
        self._domain.lmks[slot] = lmk
        self._domain.authorised.discard(slot)
        self._push_domain()
        self.record(TENANT, "lmk.load", slot=slot, scheme=scheme, check_value=check_value, cards=ids)
        return self._lmk_entry(slot, scheme, check_value, len(ids))

    def _lmk_entry(self, slot: int, scheme: str, check_value: str, cards: int) -> dict[str, Any]:
        return {
            "slot": slot,
            "id": f"{slot:02d}",
            "scheme": scheme,
            "algorithm": _LMK_ALGORITHMS[scheme],
            "check_value": check_value,
            "authorised": slot in self._domain.authorised,
            "cards": cards,
        }

    def lmk_table(self) -> list[dict[str, Any]]:
        return [
            self._lmk_entry(r.slot, r.scheme, r.check_value, len(r.cards)) | {"loaded_at": r.loaded_at}
            for r in self.state.lmks()
        ]

    def authorize(self, slot: int, on: bool) -> dict[str, Any]:
        slot = self._check_slot(slot)
        if on and slot not in self._domain.lmks:
            raise LmkError(f"no LMK is loaded in slot {slot:02d}")
        if on:
            self._domain.authorised.add(slot)
        else:
            self._domain.authorised.discard(slot)
        self._push_domain()
        self.record(TENANT, "authorize" if on else "deauthorize", slot=slot)
        return {"slot": slot, "authorised": on}

    # -- tenant: key loading device and trusted management device --------------------------

    def _lmk_for(self, body: dict[str, Any]):  # type: ignore[no-untyped-def]
        slot = self._check_slot(body.get("slot", 0))
        lmk = self._domain.lmks.get(slot)
        if lmk is None:
            raise LmkError(f"no LMK is loaded in slot {slot:02d}")
        return slot, lmk

    def load_key(self, body: dict[str, Any]) -> dict[str, Any]:
        """Clear components (hex) -> key under the LMK + KCV (the key-loading-device path)."""
        slot, lmk = self._lmk_for(body)
        key_type = str(body.get("type", "")).upper()
        components = body.get("components")
        if not isinstance(components, list) or not 2 <= len(components) <= 9:
            raise InvalidRequest("2 to 9 clear components are required")
        if not all(isinstance(c, str) and _HEX.fullmatch(c) and len(c) % 2 == 0 for c in components):
            raise InvalidRequest("components must be hexadecimal strings")
        values = [bytes.fromhex(c) for c in components]
        if len({len(v) for v in values}) != 1:
            raise InvalidRequest("components must all have the same length")
        algorithm = str(body.get("algorithm", "T")).upper()
        if algorithm not in ("T", "A"):
            raise InvalidRequest("algorithm must be T (TDES) or A (AES)")
        allowed = (16, 24, 32) if algorithm == "A" else (8, 16, 24)
        if len(values[0]) not in allowed:
            raise InvalidRequest(f"component length must be one of {allowed} bytes")
        if algorithm == "T" and not all(kc.has_odd_parity(v) for v in values):
            raise InvalidRequest("every TDES component must have odd parity")
        value = values[0]
        for other in values[1:]:
            value = kc.xor(value, other)
        if algorithm == "T":
            value = kc.adjust_parity(value)
        try:
            if isinstance(lmk, VariantLmk):
                if algorithm == "A":
                    raise InvalidRequest("AES keys need a key-block LMK")
                parse_key_type(key_type)
                scheme = str(body.get("scheme") or {8: "Z", 16: "U", 24: "T"}[len(value)]).upper()
                under_lmk = seal_key(lmk, value, key_type, scheme)
            else:
                attrs = self._attrs_from_body(body, key_type, algorithm)
                under_lmk = seal_key(lmk, value, key_type, "S", attrs)
        except HostError as exc:
            raise InvalidRequest(f"{exc.message} (payShield error {exc.code})") from exc
        kcv = kc.kcv(value, algorithm)
        self.record(TENANT, "keys.load", slot=slot, type=key_type, kcv=kcv, components=len(values))
        return {
            "key": under_lmk,
            "kcv": kcv,
            "component_kcvs": [kc.kcv(v, algorithm) for v in values],
            "type": key_type,
            "slot": slot,
        }

    @staticmethod
    def _attrs_from_body(body: dict[str, Any], key_type: str, algorithm: str) -> KeyBlockAttributes:
        usage = body.get("usage") or (TYPE_USAGES.get(key_type) or ("",))[0]
        if not isinstance(usage, str) or len(usage) != 2:
            raise InvalidRequest("a key-block key needs a 2-character 'usage' or a known key 'type'")
        if usage.upper() not in KEY_USAGES:
            raise InvalidRequest(f"key usage {usage!r} is neither a TR-31 nor a Thales key usage")
        mode = str(body.get("mode_of_use", "N")).upper()[:1] or "N"
        if mode not in MODES_OF_USE:
            raise InvalidRequest(f"mode of use {mode!r} is not a key-block mode of use")
        return KeyBlockAttributes(
            usage=usage.upper(),
            algorithm=algorithm,
            mode_of_use=mode,
            version=str(body.get("version", "00")),
            exportability=str(body.get("exportability", "E")).upper()[:1] or "E",
        )

    def export_components(self, body: dict[str, Any]) -> dict[str, Any]:
        """Key under the LMK -> N clear components + KCVs (trusted management device path)."""
        slot, lmk = self._lmk_for(body)
        if slot not in self._domain.authorised:
            raise NotAuthorized("exporting key components needs the authorised state (payShield error 17)")
        key_type = str(body.get("type", "")).upper()
        count = body.get("components", 2)
        if not isinstance(count, int) or isinstance(count, bool) or not 2 <= count <= 9:
            raise InvalidRequest("components must be 2..9")
        field = body.get("key")
        if not isinstance(field, str) or not field:
            raise InvalidRequest("key (the key under the LMK) is required")
        try:
            key: ClearKey = open_key(lmk, field, key_type if isinstance(lmk, VariantLmk) else "FFF", None)
        except HostError as exc:
            raise InvalidRequest(f"{exc.message} (payShield error {exc.code})") from exc
        if key.attrs is not None and key.attrs.exportability == "N":
            raise InvalidRequest("the key is not exportable")
        des = key.algorithm == "T"
        parts = [kc.random_des_key(len(key.value)) if des else os.urandom(len(key.value)) for _ in range(count - 1)]
        last = key.value
        for part in parts:
            last = kc.xor(last, part)
        parts.append(kc.adjust_parity(last) if des else last)
        kcv = kc.kcv(key.value, key.algorithm)
        self.record(TENANT, "keys.export-components", slot=slot, type=key_type, kcv=kcv, components=count)
        return {
            "components": [p.hex().upper() for p in parts],
            "component_kcvs": [kc.kcv(p, key.algorithm) for p in parts],
            "kcv": kcv,
            "algorithm": key.algorithm,
        }

    # -- tenant: settings and logs ----------------------------------------------------------

    def settings_view(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "header_length": self._settings.header_length,
            "disabled_commands": sorted(self._settings.disabled_commands),
            "host_tls": self._host_tls_on,
        }
        if self._host_tls_on:
            view["host_tls_certificate"] = self.host_tls_certificate
        return view

    async def update_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "header_length" in body:
            value = body["header_length"]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                raise InvalidRequest("header_length must be 0..255")
            changes["header_length"] = value
        if "disabled_commands" in body:
            value = body["disabled_commands"]
            if not isinstance(value, list) or not all(isinstance(c, str) and c in COMMANDS for c in value):
                raise InvalidRequest(f"disabled_commands must list host command codes of {sorted(COMMANDS)}")
            changes["disabled_commands"] = sorted(set(value))
        if "host_tls" in body:
            if not isinstance(body["host_tls"], bool):
                raise InvalidRequest("host_tls must be true or false")
            changes["host_tls"] = body["host_tls"]
        unknown = set(body) - {"header_length", "disabled_commands", "host_tls"}
        if unknown:
            raise InvalidRequest(f"unknown settings: {sorted(unknown)}")
        stored = {k: v for k, v in changes.items() if k != "host_tls"}
        modes = dict(self._tls_modes)
        if "host_tls" in changes:
            # One switch for both ports: on leaves a mutual port mutual; off turns TLS off everywhere.
            modes = {p: (m if m != OFF else ON) if changes["host_tls"] else OFF for p, m in modes.items()}
            stored["host_tls_modes"] = modes
        assert self._lifecycle_lock is not None
        async with self._lifecycle_lock:
            self.state.put_settings(stored)
            self._settings = replace(
                self._settings,
                header_length=changes.get("header_length", self._settings.header_length),
                disabled_commands=frozenset(changes.get("disabled_commands", self._settings.disabled_commands)),
            )
            self._push_settings()
            changed = [p for p in PORTS if modes[p] != self._tls_modes[p]]
            self._tls_modes = modes
            await self._apply_host_tls(changed)
        self.record(TENANT, "settings.update", **changes)
        return self.settings_view()

    def audit_entries(self) -> list[dict[str, Any]]:
        entries = self.state.audit_entries()
        self.record(TENANT, "logs.export", log="audit")
        return entries

    def error_entries(self) -> list[dict[str, Any]]:
        if self._hosts is not None:
            self._hosts.drain()  # entries the host workers sent before answering
        entries = self.state.error_entries()
        self.record(TENANT, "logs.export", log="error")
        return entries

    # -- tenant: TLS on the host ports ---------------------------------------------------

    def _server_identity(self) -> ServerIdentity:
        """The host ports' TLS certificate and key, made (and kept in the state) on first use."""
        if self._tls_identity is None:
            cfg = self.config
            identity = new_server_identity(cfg.serial, [cfg.address, cfg.host2_address or cfg.address])
            self.state.put_host_tls_identity(identity.certificate, identity.private_key)
            self._tls_identity = identity
        return self._tls_identity

    def _host_tls_spec(self, port: str) -> tuple | None:
        """What a host runtime needs to make the TLS context of ``port`` (None: plain TCP)."""
        mode = self._tls_modes[port]
        return None if mode == OFF else (self._server_identity(), mode, list(self._tls_trusted))

    async def _apply_host_tls(self, ports: list[str] | tuple[str, ...], *, cut: bool = True) -> None:
        """Serve ``ports`` with their current TLS mode; ``cut`` closes their open connections."""
        if self._hosts is None or not ports:
            return
        specs = {name.upper(): self._host_tls_spec(name) for name in ports}
        await self._hosts.apush({"op": "tls", "ports": specs, "cut": cut})
        self._hosts.drain()

    def host_tls_view(self) -> dict[str, Any]:
        identity = self._tls_identity
        return {
            "ports": dict(self._tls_modes),
            "trusted": [cert.view() for cert in self._tls_trusted],
            "server_certificate": None if identity is None else {
                "fingerprint": identity.fingerprint, "pem": identity.certificate},
        }

    def host_tls_server_certificate(self) -> str:
        """The PEM certificate the host ports present (made now if TLS was never used)."""
        return self._server_identity().certificate

    async def set_host_tls(self, body: dict[str, Any]) -> dict[str, Any]:
        """Set the TLS mode of HOST1 and/or HOST2: off, on or mutual. Open connections of a changed port are cut."""
        unknown = set(body) - set(PORTS)
        if unknown or not body:
            raise InvalidRequest(f"give the mode of host1 and/or host2 (unknown: {sorted(unknown)})" if unknown
                                 else "give the mode of host1 and/or host2")
        for port, mode in body.items():
            if mode not in MODES:
                raise InvalidRequest(f"{port} must be one of {', '.join(MODES)}")
        modes = self._tls_modes | body
        if MUTUAL in modes.values() and not self._tls_trusted:
            raise NoTrustedClientCertificate(
                "mutual TLS needs a client certificate to trust: add your client CA (or client certificate) first")
        assert self._lifecycle_lock is not None
        async with self._lifecycle_lock:
            self.state.put_settings({"host_tls_modes": modes})
            changed = [p for p in PORTS if modes[p] != self._tls_modes[p]]
            self._tls_modes = modes
            await self._apply_host_tls(changed)
        self.record(TENANT, "host_tls.update", **modes)
        return self.host_tls_view()

    async def trust_client_certificates(self, body: dict[str, Any]) -> dict[str, Any]:
        """Trust the certificates of a PEM text (CA certificates or client certificates)."""
        unknown = set(body) - {"certificate"}
        if unknown:
            raise InvalidRequest(f"unknown fields: {sorted(unknown)}; give 'certificate' (PEM text)")
        known = {cert.fingerprint for cert in self._tls_trusted}
        added = [cert for cert in parse_certificates(body.get("certificate")) if cert.fingerprint not in known]
        added = list({cert.fingerprint: cert for cert in added}.values())
        if len(self._tls_trusted) + len(added) > MAX_TRUSTED:
            raise InvalidRequest(f"at most {MAX_TRUSTED} trusted certificates; remove some first")
        await self._store_trusted(self._tls_trusted + added, cut=False)
        self.record(TENANT, "host_tls.trust", fingerprints=[cert.fingerprint for cert in added])
        return self.host_tls_view()

    async def untrust_client_certificate(self, fingerprint: str) -> dict[str, Any]:
        """Stop trusting one certificate; connections of mutual ports are cut (some may have used it)."""
        wanted = fingerprint.strip().lower().replace(":", "")
        remaining = [cert for cert in self._tls_trusted if cert.fingerprint != wanted]
        if len(remaining) == len(self._tls_trusted):
            raise NotFound(f"no trusted certificate has the fingerprint {fingerprint[:80]!r}")
        if not remaining and MUTUAL in self._tls_modes.values():
            raise NoTrustedClientCertificate(
                "this is the last trusted client certificate and a port is in mutual TLS: set it to on or off first")
        await self._store_trusted(remaining, cut=True)
        self.record(TENANT, "host_tls.untrust", fingerprint=wanted)
        return self.host_tls_view()

    async def _store_trusted(self, trusted: list[TrustedCertificate], *, cut: bool) -> None:
        assert self._lifecycle_lock is not None
        async with self._lifecycle_lock:
            self.state.put_settings({"host_tls_trusted": [cert.pem for cert in trusted]})
            self._tls_trusted = trusted
            await self._apply_host_tls([p for p in PORTS if self._tls_modes[p] == MUTUAL], cut=cut)


__all__ = ["PayShieldAppliance", "PayShieldConfig", "firmware_number"]
