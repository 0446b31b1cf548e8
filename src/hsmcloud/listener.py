"""The ARM endpoint's listening socket: bound once, before anything else starts, and a clear
error that says who holds the port when it cannot be.

SO_REUSEADDR lets a restart bind at once although connections of the previous run are still
in TIME_WAIT (or FIN_WAIT) on the port; it does not let two listeners share a port, so a real
conflict still fails and is reported as such."""
from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from pathlib import Path

from hsmcloud.errors import HsmCloudError

ENDPOINT_FILE = "endpoint.json"


class PortInUse(HsmCloudError):
    """Another process listens on the port the service should listen on."""

    code = "PortInUse"


class CannotListen(HsmCloudError):
    """The port cannot be bound for another reason (privileged port, address not on this host...)."""

    code = "CannotListen"


def listen(host: str, port: int, *, state_dir: Path, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on (host, port), or PortInUse / CannotListen naming the cause."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(in_use_message(host, port, state_dir=state_dir)) from None
        hint = " (ports below 1024 need privileges: pick another with --port)" if exc.errno == errno.EACCES else ""
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}.") from None
    return sock


def in_use_message(host: str, port: int, *, state_dir: Path) -> str:
    """What holds (host, port), as far as this process can tell, and what to do about it."""
    where = f"{host}:{port}"
    inodes = _listening_inodes(host, port)
    pid = _pid_of(inodes)
    mine = _service_of(state_dir)
    if mine is not None and mine[1] == port and (pid is None or pid == mine[0]) and _alive(mine[0]):
        return (f"an hsmcloud (pid {mine[0]}) for state directory {state_dir} is already listening on {where}: "
                "use it, stop it (Ctrl-C where it runs), or pick another port with --port.")
    if pid is not None:
        if _is_hsmcloud(pid):
            who = f"an hsmcloud (pid {pid})"
        else:
            name = _process_name(pid)
            who = f"another process (pid {pid}{', ' + name if name else ''})"
        return f"{who} is listening on {where}: stop it, or pick another port with --port."
    if inodes or _accepts(host, port):
        return (f"another process is listening on {where} (not one of this user's, or its pid cannot be "
                "read): stop it, or pick another port with --port.")
    return (f"{where} is held by a socket that is not listening (a client connection or a socket another "
            "process bound without listening): pick another port with --port, or retry when it is released.")


def _service_of(state_dir: Path) -> tuple[int, int] | None:
    """(pid, port) of the service this state directory's endpoint.json names, if any."""
    try:
        info = json.loads((state_dir / ENDPOINT_FILE).read_text())
        return int(info["pid"]), int(str(info["endpoint"]).rsplit(":", 1)[1].rstrip("/"))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _pid_of(inodes: set[str]) -> int | None:
    """The pid of a process holding one of these socket inodes, from /proc (Linux; only processes of
    this user are visible). None when it cannot be told."""
    if not inodes:
        return None
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(entry.name)
        except OSError:
            continue  # another user's process, or it just ended
    return None


def _listening_inodes(host: str, port: int) -> set[str]:
    """Socket inodes in LISTEN state on port (bound to host or to every address), from /proc/net (Linux)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return set()
    table, width = ("/proc/net/tcp6", 32) if ip.version == 6 else ("/proc/net/tcp", 8)
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return set()
    wanted = {_proc_address(ip), "0" * width}
    inodes = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A: TCP_LISTEN
            continue
        address, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) == port and address in wanted:
            inodes.add(fields[9])
    return inodes


def _proc_address(ip) -> str:
    """An address as /proc/net/tcp{,6} spells it: each 32-bit word in host byte order, in hex."""
    raw = ip.packed
    words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    order = "little" if socket.htonl(1) != 1 else "big"
    return "".join(f"{int.from_bytes(w, order):08X}" for w in words)


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_hsmcloud(pid: int) -> bool:
    """Whether the process runs the hsmcloud command (`hsmcloud ...` or `python -m hsmcloud.cli.main ...`)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return any(Path(a).name == "hsmcloud" or a.startswith("hsmcloud.") for a in args)
