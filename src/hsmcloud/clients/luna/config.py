"""The tenant-side client configuration: which appliances, which certificates, which partitions are slots.

One file, read by the PKCS#11 library (C) and by `hsmcloud client`/`hsmcloud lunacm` (Python), so
its syntax is deliberately plain: `[section]` or `[section name]` headers, `key = value` lines,
`#`/`;` comments. `[slot]` sections are repeated; their order gives the slot IDs 0, 1, 2, ...
`[hagroup NAME]` sections are HA groups over slots (`hsmcloud lunacm` `hagroup ...` writes them); the
library shows each as a virtual slot after the physical ones (only those with `ha_only = yes`).

Where it lives: `$HSMCLOUD_CONF`, else `$HSMCLOUD_CLIENT_HOME/client.conf`, else
`~/.hsmcloud-client/client.conf`. The client home holds the client's private key, so it is kept
private (0700, files 0600)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_NTLS_PORT = 1792
DEFAULT_RECEIVE_TIMEOUT = 20
HA_MAX_MEMBERS = 32
HA_MIN_INTERVAL = 60
HA_MAX_INTERVAL = 1200
HA_DEFAULT_INTERVAL = 60

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SECTION = re.compile(r"^\[\s*([A-Za-z]+)(?:\s+([^\]\s]+))?\s*\]$")


class ConfigError(Exception):
    """The configuration file cannot be used as it is; the message names the line and the fix."""

    def __init__(self, message: str, *, code: str = "InvalidClientConfig"):
        super().__init__(message)
        self.message = message
        self.code = code


def client_home() -> Path:
    return Path(os.environ.get("HSMCLOUD_CLIENT_HOME") or "~/.hsmcloud-client").expanduser()


def config_path() -> Path:
    explicit = os.environ.get("HSMCLOUD_CONF")
    if explicit:
        return Path(explicit).expanduser()
    return client_home() / "client.conf"


def check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise ConfigError(f"'{name}' is not a valid {what} name: use 1 to 64 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit.", code="InvalidName")
    return name


@dataclass(frozen=True, kw_only=True)
class ClientIdentity:
    name: str
    certificate: Path
    private_key: Path


@dataclass(frozen=True, kw_only=True)
class Server:
    """One appliance: where its NTLS listener is and the server certificate pinned for it."""

    name: str
    address: str
    port: int = DEFAULT_NTLS_PORT
    certificate: Path


@dataclass(frozen=True, kw_only=True)
class Slot:
    """A partition of a server, shown to applications as a PKCS#11 slot."""

    server: str
    partition: str


@dataclass(kw_only=True)
class HAGroup:
    """An HA group: a virtual slot over member partitions (each a configured slot), as LunaCM's
    `hagroup` commands keep it. Members are `server/partition` exactly as their [slot] says."""

    name: str
    serial: str
    members: list[str] = field(default_factory=list)
    standby: list[str] = field(default_factory=list)
    #: 0: no auto-recovery (the default); -1: retry forever; N: N attempts.
    retry_count: int = 0
    interval_seconds: int = HA_DEFAULT_INTERVAL
    #: Increased by `hagroup recover`: running applications recover their failed members.
    recovery_request: int = 0


def member_key(slot: Slot) -> str:
    return f"{slot.server}/{slot.partition}"


@dataclass(kw_only=True)
class ClientConfig:
    client: ClientIdentity | None = None
    receive_timeout_seconds: int = DEFAULT_RECEIVE_TIMEOUT
    servers: dict[str, Server] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)
    hagroups: dict[str, HAGroup] = field(default_factory=dict)
    #: Only the HA groups' virtual slots are visible to applications (`hagroup haonly -enable`).
    ha_only: bool = False

    def hagroup(self, name: str) -> HAGroup:
        for group in self.hagroups.values():
            if group.name.lower() == (name or "").lower():
                return group
        raise ConfigError(f"There is no HA group '{name}'; 'hagroup listgroups' shows them.", code="HAGroupNotFound")

    def slot_of_member(self, member: str) -> int | None:
        for i, slot in enumerate(self.slots):
            if member_key(slot).lower() == member.lower():
                return i
        return None

    # ---- changes ----------------------------------------------------------------------------
    def set_server(self, server: Server) -> None:
        self.servers[server.name] = server

    def remove_server(self, name: str) -> Server:
        if name not in self.servers:
            raise ConfigError(f"No server named '{name}' in the client configuration; see 'hsmcloud client config "
                              "show'.", code="ServerNotFound")
        for slot in self.slots:
            if slot.server == name:
                self._refuse_if_member(slot)
        self.slots = [s for s in self.slots if s.server != name]
        return self.servers.pop(name)

    def _refuse_if_member(self, slot: Slot) -> None:
        key = member_key(slot).lower()
        for group in self.hagroups.values():
            if key in (m.lower() for m in group.members):
                raise ConfigError(f"Slot {member_key(slot)} is a member of HA group '{group.name}': remove it "
                                  "from the group first (lunacm: hagroup removemember).", code="SlotInHAGroup")

    def add_slot(self, slot: Slot) -> int:
        """Add a slot (or return the existing one's ID); the server must be configured."""
        if slot.server not in self.servers:
            raise ConfigError(f"No server named '{slot.server}' in the client configuration: add it first with "
                              "'hsmcloud client server add'.", code="ServerNotFound")
        for i, existing in enumerate(self.slots):
            if existing.server == slot.server and existing.partition.lower() == slot.partition.lower():
                return i
        self.slots.append(slot)
        return len(self.slots) - 1

    def remove_slot(self, slot_id: int) -> Slot:
        if not 0 <= slot_id < len(self.slots):
            raise ConfigError(f"There is no slot {slot_id}; the configuration has {len(self.slots)} slot(s).",
                              code="SlotNotFound")
        self._refuse_if_member(self.slots[slot_id])
        return self.slots.pop(slot_id)

    def server_by_address(self, address: str, port: int) -> Server | None:
        return next((s for s in self.servers.values() if s.address == address and s.port == port), None)

    # ---- text --------------------------------------------------------------------------------
    def render(self) -> str:
        lines = ["# hsmcloud client configuration: written by 'hsmcloud client'; the PKCS#11 library reads it.",
                 "# Slot IDs are the order of the [slot] sections, starting at 0.", ""]
        lines.append("[client]")
        if self.client is not None:
            lines += [f"name = {self.client.name}", f"certificate = {self.client.certificate}",
                      f"private_key = {self.client.private_key}"]
        lines += [f"receive_timeout_seconds = {self.receive_timeout_seconds}"]
        if self.ha_only:
            lines.append("ha_only = yes")
        lines.append("")
        for server in self.servers.values():
            lines += [f"[server {server.name}]", f"address = {server.address}", f"port = {server.port}",
                      f"certificate = {server.certificate}", ""]
        for slot in self.slots:
            lines += ["[slot]", f"server = {slot.server}", f"partition = {slot.partition}", ""]
        for group in self.hagroups.values():
            lines += [f"[hagroup {group.name}]", f"serial = {group.serial}",
                      f"members = {', '.join(group.members)}"]
            if group.standby:
                lines.append(f"standby = {', '.join(group.standby)}")
            lines += [f"retry_count = {group.retry_count}", f"interval_seconds = {group.interval_seconds}",
                      f"recovery_request = {group.recovery_request}", ""]
        return "\n".join(lines)


def parse(text: str, *, source: str = "client.conf") -> ClientConfig:
    """Read the configuration syntax; every problem is a ConfigError naming the line."""
    sections: list[tuple[str, str | None, dict[str, str], int]] = []
    current: dict[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        header = _SECTION.match(line)
        if header:
            current = {}
            sections.append((header.group(1).lower(), header.group(2), current, number))
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}, line {number}: expected 'key = value' or a [section] header, not '{line}'.")
        if current is None:
            raise ConfigError(f"{source}, line {number}: '{key.strip()}' comes before any [section].")
        key = key.strip().lower()
        if key in current:
            raise ConfigError(f"{source}, line {number}: '{key}' is given twice in its section.")
        current[key] = value.strip()

    config = ClientConfig()
    seen_client = False
    for kind, name, values, number in sections:
        where = f"{source}, section at line {number}"
        if kind == "client":
            if seen_client:
                raise ConfigError(f"{where}: [client] is given twice.")
            seen_client = True
            identity = {"name", "certificate", "private_key"}
            present = identity & values.keys()
            if present and present != identity:
                raise ConfigError(f"{where}: [client] needs name, certificate and private_key together "
                                  f"(missing: {', '.join(sorted(identity - present))}).")
            if "name" in values:
                config.client = ClientIdentity(name=check_name(values["name"], "client"),
                                               certificate=Path(values["certificate"]),
                                               private_key=Path(values["private_key"]))
            if "receive_timeout_seconds" in values:
                config.receive_timeout_seconds = _int(values["receive_timeout_seconds"], 1, 300,
                                                      f"{where}: receive_timeout_seconds")
            if "ha_only" in values:
                flag = values["ha_only"].lower()
                if flag not in ("yes", "no", "1", "0", "true", "false"):
                    raise ConfigError(f"{where}: ha_only must be yes or no, not '{values['ha_only']}'.")
                config.ha_only = flag in ("yes", "1", "true")
            _unknown(values, {"name", "certificate", "private_key", "receive_timeout_seconds", "ha_only"}, where)
        elif kind == "server":
            if not name:
                raise ConfigError(f"{where}: a server section needs a name: [server NAME].")
            check_name(name, "server")
            for key in ("address", "certificate"):
                if key not in values:
                    raise ConfigError(f"{where}: [server {name}] needs '{key}'.")
            if name in config.servers:
                raise ConfigError(f"{where}: server '{name}' is defined twice.")
            config.servers[name] = Server(name=name, address=values["address"],
                                          port=_int(values.get("port", str(DEFAULT_NTLS_PORT)), 1, 65535,
                                                    f"{where}: port"),
                                          certificate=Path(values["certificate"]))
            _unknown(values, {"address", "port", "certificate"}, where)
        elif kind == "slot":
            for key in ("server", "partition"):
                if key not in values:
                    raise ConfigError(f"{where}: [slot] needs '{key}'.")
            config.slots.append(Slot(server=values["server"], partition=values["partition"]))
            _unknown(values, {"server", "partition"}, where)
        elif kind == "hagroup":
            if not name:
                raise ConfigError(f"{where}: an HA group section needs a name: [hagroup NAME].")
            check_name(name, "HA group")
            if name.lower() in (g.lower() for g in config.hagroups):
                raise ConfigError(f"{where}: HA group '{name}' is defined twice.")
            if "members" not in values:
                raise ConfigError(f"{where}: [hagroup {name}] needs 'members'.")
            members = [m.strip() for m in values["members"].split(",") if m.strip()]
            standby = [m.strip() for m in values.get("standby", "").split(",") if m.strip()]
            config.hagroups[name] = HAGroup(
                name=name, serial=values.get("serial", ""), members=members, standby=standby,
                retry_count=_int(values.get("retry_count", "0"), -1, 1000000, f"{where}: retry_count"),
                interval_seconds=_int(values.get("interval_seconds", str(HA_DEFAULT_INTERVAL)), HA_MIN_INTERVAL,
                                      HA_MAX_INTERVAL, f"{where}: interval_seconds"),
                recovery_request=_int(values.get("recovery_request", "0"), 0, 2147483647,
                                      f"{where}: recovery_request"))
            _unknown(values, {"serial", "members", "standby", "retry_count", "interval_seconds",
                              "recovery_request"}, where)
        else:
            raise ConfigError(f"{where}: unknown section [{kind}] (known: client, server, slot, hagroup).")
    for i, slot in enumerate(config.slots):
        if slot.server not in config.servers:
            raise ConfigError(f"{source}: slot {i} names server '{slot.server}', which has no [server] section.")
    for group in config.hagroups.values():
        if not group.members or len(group.members) > HA_MAX_MEMBERS:
            raise ConfigError(f"{source}: HA group '{group.name}' needs 1 to {HA_MAX_MEMBERS} members.")
        for member in group.members + group.standby:
            if config.slot_of_member(member) is None:
                raise ConfigError(f"{source}: HA group '{group.name}' names member '{member}', which is not a "
                                  "[slot] (SERVER/PARTITION) of this file.")
        for member in group.standby:
            if member.lower() not in (m.lower() for m in group.members):
                raise ConfigError(f"{source}: HA group '{group.name}': standby member '{member}' is not one of "
                                  "its members.")
    return config


def _int(raw: str, low: int, high: int, what: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{what} must be a whole number, not '{raw}'.") from None
    if not low <= value <= high:
        raise ConfigError(f"{what} must be {low} to {high}, not {value}.")
    return value


def _unknown(values: dict[str, str], known: set[str], where: str) -> None:
    extra = sorted(set(values) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} (known: {', '.join(sorted(known))}).")


def load(path: Path | None = None) -> ClientConfig:
    """The configuration at `path` (default: config_path()); an absent file is an empty configuration."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ClientConfig()
    except OSError as exc:
        raise ConfigError(f"Cannot read the client configuration {path}: {exc.strerror}.") from None
    return parse(text, source=str(path))


def save(config: ClientConfig, path: Path | None = None) -> Path:
    """Write atomically, private to the user."""
    path = path or config_path()
    ensure_private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(config.render())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def ensure_private_dir(path: Path) -> Path:
    """Create `path` and every missing parent with mode 0700 (whatever the umask); tighten `path` if it exists."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, data: bytes) -> Path:
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return path


def with_client(config: ClientConfig, identity: ClientIdentity) -> ClientConfig:
    return replace(config, client=identity)
