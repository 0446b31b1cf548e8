"""`hsmcloud up` as a user runs it: a restart right after Ctrl-C, port conflicts, next-step hints."""
from __future__ import annotations

import json
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hsmcloud.cli.main import app
from hsmcloud.identity.tokens import TokenAuthority
from tests.controlplane.test_rules import PAY, hsm_url
from tests.helpers import HSM_API, hsm_body, make_network


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, what: str, tries: int = 1200):
    for _ in range(tries):
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Up:
    """`hsmcloud up --state-dir D --port P` as a separate process."""

    def __init__(self, state_dir: Path, port: int, *, home: Path):
        self.state_dir, self.port, self.home = state_dir, port, home
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        """Start it and wait until it serves; returns what it printed up to 'hsmcloud is up'."""
        (self.state_dir / "endpoint.json").unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "hsmcloud.cli.main", "up", "--state-dir", str(self.state_dir),
               "--port", str(self.port), "--gateway-provision-seconds", "0", "--step-delay", "0",
               "--region", "eastus", "--device-ssh-port", "0", "--device-host-port", "0"]
        log = self.home / "up.log"
        with log.open("a") as stderr:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                         env={"PATH": "/usr/bin:/bin", "COLUMNS": "250", "HOME": str(self.home)})
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=30)
                raise AssertionError(f"hsmcloud up exited {self.proc.returncode}: {''.join(lines)}{log.read_text()}")
            lines.append(line)
            if line.startswith("Ctrl-C stops it"):
                return "".join(lines)

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def http(self, sub: str | None = None, operator: bool = False, token: str | None = None) -> httpx.Client:
        info = json.loads((self.state_dir / "endpoint.json").read_text())
        tok = token or TokenAuthority(self.state_dir).issue(subscription_id=sub, operator=operator)
        return httpx.Client(base_url=info["endpoint"], verify=ssl.create_default_context(cafile=info["ca"]),
                            headers={"Authorization": f"Bearer {tok}"}, timeout=30)


def host_call(sock: socket.socket, command: bytes) -> bytes:
    msg = b"HEAD" + command
    sock.sendall(struct.pack(">H", len(msg)) + msg)
    (length,) = struct.unpack(">H", sock.recv(2))
    data = b""
    while len(data) < length:
        data += sock.recv(length - len(data))
    return data


def leftover_connections(port: int) -> list[str]:
    """TCP states (hex, as /proc/net/tcp writes them) of non-listening sockets on local port `port`."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":
            states.append(fields[3])
    return states


def endpoints(c: httpx.Client, sub: str, name: str) -> dict:
    r = c.get(hsm_url(sub, "hsm-rg", name) + "/endpoints", params={"api-version": HSM_API})
    assert r.status_code == 200, r.text
    return r.json()


def succeeded(c: httpx.Client, sub: str, name: str) -> bool:
    r = c.get(hsm_url(sub, "hsm-rg", name), params={"api-version": HSM_API})
    state = r.json()["properties"]["provisioningState"]
    assert state != "Failed", r.text
    return state == "Succeeded"


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp to see TIME_WAIT")
def test_restart_right_after_ctrl_c_with_clients_connected(tmp_path):
    # The default state directory (~/.hsmcloud), so the hints need no --state-dir.
    state_dir, port = tmp_path / ".hsmcloud", free_port()
    up = Up(state_dir, port, home=tmp_path)
    held: list = []
    try:
        banner = up.start()
        assert "  first:  hsmcloud operator allowlist <uuid>\n" in banner
        sub = str(uuid.uuid4())
        with up.http(operator=True) as op:
            assert op.put(f"/operator/subscriptions/{sub}/allowlist").status_code == 200
        tenant = up.http(sub)  # a keep-alive HTTPS connection, held across the restart
        held.append(tenant)
        subnet = make_network(tenant, sub)
        for name, body in (("restart-luna", hsm_body(subnet)), ("restart-pay", hsm_body(subnet, sku=PAY))):
            r = tenant.put(hsm_url(sub, "hsm-rg", name), params={"api-version": HSM_API}, json=body)
            assert r.status_code in (200, 201), r.text
        for name in ("restart-luna", "restart-pay"):
            wait_for(lambda: succeeded(tenant, sub, name), f"{name} to succeed")
        luna, pay = endpoints(tenant, sub, "restart-luna"), endpoints(tenant, sub, "restart-pay")
        # Clients of every listener stay connected: SSH, payShield HOST1 and the management port.
        ssh = socket.create_connection((luna["address"], luna["ports"]["ssh"]), timeout=30)
        assert ssh.recv(64).startswith(b"SSH-2.0")
        host1 = socket.create_connection((pay["address"], pay["ports"]["host1"]), timeout=30)
        assert host1_reply_ok(host1)
        mgmt = httpx.Client(base_url=f"http://{pay['address']}:{pay['ports']['management']}", timeout=30)
        mgmt.get("/health")
        held += [ssh, host1, mgmt]

        # The same port again while it runs: the one listening there is named.
        result = CliRunner().invoke(app, ["up", "--state-dir", str(state_dir), "--port", str(port)])
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            f"error: PortInUse: an hsmcloud (pid {up.proc.pid}) for state directory {state_dir} is already "
            f"listening on 127.0.0.1:{port}: use it, stop it (Ctrl-C where it runs), or pick another port with "
            "--port.")

        up.interrupt()
        assert leftover_connections(port), "the stopped service left no connection on its port to test against"
        assert (state_dir / "endpoint.json").exists()  # the old run's file, naming a process that is gone

        second = up.start()  # at once, on the same port
        assert f"hsmcloud is up at https://127.0.0.1:{port}" in second
        with up.http(sub) as c:
            assert endpoints(c, sub, "restart-luna")["ports"] == luna["ports"]
            assert endpoints(c, sub, "restart-pay")["ports"] == pay["ports"]
        # Every appliance listener came back on its own port.
        with socket.create_connection((luna["address"], luna["ports"]["ssh"]), timeout=30) as s:
            assert s.recv(64).startswith(b"SSH-2.0")
        with socket.create_connection((pay["address"], pay["ports"]["host1"]), timeout=30) as s:
            assert host1_reply_ok(s)
    finally:
        for thing in held:
            thing.close()
        up.stop()


def host1_reply_ok(sock: socket.socket) -> bool:
    return host_call(sock, b"NO00")[:8] == b"HEADNP00"


def test_another_process_listening_is_named_and_nothing_is_created(tmp_path):
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time\n"
                               "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
                               "print('ready', flush=True); time.sleep(120)", str(port)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        state_dir = tmp_path / "state"
        result = CliRunner().invoke(app, ["up", "--state-dir", str(state_dir), "--port", str(port)])
        assert result.exit_code == 1
        line = result.stderr.strip()
        assert line.startswith(f"error: PortInUse: another process (pid {holder.pid}, python"), line
        assert line.endswith(f") is listening on 127.0.0.1:{port}: stop it, or pick another port with --port."), line
        assert "\n" not in line and "Traceback" not in result.output
        assert not state_dir.exists()  # refused before anything was created
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_hints_name_the_state_directory_and_work_as_pasted(tmp_path):
    state_dir = tmp_path / "my [lab] state"  # a space and rich-markup brackets, printed as they are
    up = Up(state_dir, free_port(), home=tmp_path)
    try:
        banner = up.start()
        quoted = shlex.quote(str(state_dir))
        hints = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in banner.splitlines()
                 if line.strip().startswith(("token:", "first:"))}
        assert hints["token"] == (f"hsmcloud token --subscription <uuid> --state-dir {quoted}   "
                                  f"(operators: hsmcloud token --operator --state-dir {quoted})")
        sub = str(uuid.uuid4())
        runner = CliRunner()
        env = {"HSMCLOUD_STATE_DIR": None, "HSMCLOUD_TOKEN": None, "HSMCLOUD_SUBSCRIPTION": None,
               "HSMCLOUD_ENDPOINT": None}
        # Each hint, pasted with the placeholder filled in, works from anywhere.
        first = hints["first"].replace("<uuid>", sub)
        result = runner.invoke(app, shlex.split(first)[1:], env=env)
        assert result.exit_code == 0, result.output
        assert f"Subscription {sub} is now allowlisted" in result.stdout
        token_cmd = hints["token"].split("   ")[0].replace("<uuid>", sub)
        result = runner.invoke(app, shlex.split(token_cmd)[1:], env=env)
        assert result.exit_code == 0, result.output
        with up.http(token=result.stdout.strip()) as c:
            r = c.get(f"/subscriptions/{sub}/resourcegroups", params={"api-version": "2022-09-01"})
            assert r.status_code == 200, r.text
    finally:
        up.stop()
