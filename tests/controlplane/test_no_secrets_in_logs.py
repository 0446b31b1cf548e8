"""No secret reaches a log: the service log at every level, and the appliances' own logs.

A session uses every secret a tenant has (the appliance admin password and its change, the HSM
SO password and cloning domain, the payment HSM's management credential, admin-card PINs, LMK
components, clear key components in and out); then every log is searched for each value.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid

import asyncssh
import httpx

from hsmcloud.appliances.payshield import cards
from hsmcloud.identity.tokens import TokenAuthority
from tests.controlplane.test_rules import PAY, hsm_url, put_hsm, wait_terminal
from tests.helpers import HSM_API, hsm_body, make_network

ADMIN_PASSWORD = "Adm1n-Qx7vLr2Kp"
SO_PASSWORD = "So-Secret-Jh4Zt9Wm"
DOMAIN = "Domain-Secret-Bn6Fy3"
CARD_PINS = ("Pin-Card-A-Mw83", "Pin-Card-B-Tq51")
ENV_SECRET = "Env-Secret-Hc5Pd8"


#: A line of asyncssh's packet dump: offset, up to 16 hex bytes, their characters.
DUMP_LINE = re.compile(r"^  [0-9a-f]{8}:((?: [0-9a-f]{2})+)", re.MULTILINE)


class Capture(logging.Handler):
    """Every record that reaches the root logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.lines.append(line)
        # A packet dump spreads a secret over several lines: add the dumped bytes back together.
        dumped = bytes.fromhex("".join(DUMP_LINE.findall(line)))
        if dumped:
            self.lines.append(dumped.decode("latin-1"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def everything_logged():
    """The root logger at DEBUG with asyncssh at its most verbose (packet dumps)."""
    root = logging.getLogger()
    handler = Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    asyncssh.set_debug_level(3)
    try:
        yield handler
    finally:
        asyncssh.set_debug_level(1)
        root.setLevel(level)
        root.removeHandler(handler)


def _variants(secret: str | bytes) -> list[str]:
    """How a secret could appear in a log line: as text, or as hex in either case."""
    if isinstance(secret, bytes):
        return [secret.hex(), secret.hex().upper()]
    return [secret, secret.encode().hex()]


def assert_no_secret(text: str, secrets: dict[str, str | bytes], where: str) -> None:
    for name, secret in secrets.items():
        for form in _variants(secret):
            assert form not in text, f"{name} appears in {where}"


def endpoints(c, sub, name) -> dict:
    r = c.get(hsm_url(sub, "hsm-rg", name) + "/endpoints", params={"api-version": HSM_API})
    assert r.status_code == 200, r.text
    return r.json()


async def luna_session(ep: dict, first_password: str) -> str:
    """First login and password change, HSM init and SO login; returns the appliance log."""
    options = dict(port=ep["ports"]["ssh"], username="admin", known_hosts=None, client_keys=None,
                   agent_path=None, preferred_auth="password")
    async with asyncssh.connect(ep["address"], password=first_password, **options) as conn:
        changed = await conn.run(f"my password set -oldpassword {first_password} -newpassword {ADMIN_PASSWORD}")
        assert changed.exit_status == 0, changed.stdout
    async with asyncssh.connect(ep["address"], password=ADMIN_PASSWORD, **options) as conn:
        for command in (f"hsm init -label logtest -domain {DOMAIN} -password {SO_PASSWORD}",
                        f"hsm login -password {SO_PASSWORD}", "partition create -partition p1"):
            result = await conn.run(command)
            assert result.exit_status == 0, result.stdout
        # The SO password typed at an interactive prompt travels as channel data.
        process = await conn.create_process("hsm login", term_type="xterm")
        await asyncio.wait_for(process.stdout.readuntil(":"), 20)
        process.stdin.write(SO_PASSWORD + "\n")
        await asyncio.wait_for(process.wait(), 20)
        # Environment values a client sends are its own business too.
        shown = await conn.run("hsm show", env={"HSM_NOTE": ENV_SECRET})
        assert shown.exit_status == 0, shown.stdout
        log = await conn.run("syslog tail -entries 200")
        assert log.exit_status == 0, log.stdout
        return log.stdout


def host_frame(address: str, port: int, command: bytes) -> bytes:
    with socket.create_connection((address, port), timeout=30) as s:
        msg = b"HEAD" + command
        s.sendall(struct.pack(">H", len(msg)) + msg)
        (length,) = struct.unpack(">H", s.recv(2))
        data = b""
        while len(data) < length:
            data += s.recv(length - len(data))
        return data


def payment_session(ep: dict, secrets: dict[str, str | bytes]) -> str:
    """LMK from two cards, a key from clear components and back; returns the payShield logs."""
    token = ep["managementToken"]
    secrets["management token"] = token
    variant_a, variant_b = os.urandom(320), os.urandom(320)
    lmk = bytes(a ^ b for a, b in zip(variant_a, variant_b))
    secrets |= {"LMK component A": variant_a[:16], "LMK component B": variant_b[:16], "LMK": lmk[:16]}
    card_a = cards.new_card(CARD_PINS[0], variant_component=variant_a)
    card_b = cards.new_card(CARD_PINS[1], variant_component=variant_b)
    with httpx.Client(base_url=f"http://{ep['address']}:{ep['ports']['management']}", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as mgmt:
        r = mgmt.post("/lmk", json={"cards": [{"card": card_a, "pin": CARD_PINS[0]},
                                             {"card": card_b, "pin": CARD_PINS[1]}]})
        assert r.status_code == 200, r.text
        # A wrong PIN is refused without the PIN showing up anywhere.
        r = mgmt.post("/lmk", json={"replace": True, "cards": [{"card": card_a, "pin": "Wrong-Pin-Rk27"},
                                                              {"card": card_b, "pin": CARD_PINS[1]}]})
        assert r.status_code == 400, r.text
        secrets["wrong card PIN"] = "Wrong-Pin-Rk27"
        assert mgmt.post("/authorize", json={"slot": 0}).status_code == 200
        from psec import des

        parts = [des.adjust_key_parity(os.urandom(16)) for _ in range(2)]
        secrets |= {"key component 1": parts[0], "key component 2": parts[1]}
        r = mgmt.post("/keys/load", json={"type": "000", "components": [p.hex() for p in parts]})
        assert r.status_code == 200, r.text
        key = r.json()["key"]
        r = mgmt.post("/keys/export-components", json={"type": "000", "key": key, "components": 3})
        assert r.status_code == 200, r.text
        for i, part in enumerate(r.json()["components"]):
            secrets[f"exported component {i + 1}"] = bytes.fromhex(part)
        assert host_frame(ep["address"], ep["ports"]["host1"], b"NC")[4:8] == b"ND00"
        # A failing host command lands in the error log; its key field must not.
        assert host_frame(ep["address"], ep["ports"]["host1"], b"A6000" + key.encode() + b"ZZZ")[4:6] == b"A7"
        logs = mgmt.get("/logs/audit", params={"format": "jsonl"}).text
        logs += mgmt.get("/logs/error", params={"format": "jsonl"}).text
        assert mgmt.post("/release").status_code == 200
    return logs


def test_no_secret_in_any_log_at_debug_level(cloud):
    sub = cloud.new_subscription()
    secrets: dict[str, str | bytes] = {"admin password": ADMIN_PASSWORD, "SO password": SO_PASSWORD,
                                       "cloning domain": DOMAIN, "card PIN A": CARD_PINS[0],
                                       "card PIN B": CARD_PINS[1], "environment value": ENV_SECRET}
    with everything_logged() as captured:
        with cloud.http(sub) as c:
            subnet = make_network(c, sub)
            put_hsm(c, sub, "hsm-rg", "logluna", hsm_body(subnet))
            put_hsm(c, sub, "hsm-rg", "logpay", hsm_body(subnet, sku=PAY))
            assert wait_terminal(c, sub, "hsm-rg", "logluna")["properties"]["provisioningState"] == "Succeeded"
            assert wait_terminal(c, sub, "hsm-rg", "logpay")["properties"]["provisioningState"] == "Succeeded"
            luna, pay = endpoints(c, sub, "logluna"), endpoints(c, sub, "logpay")
            claimed = c.post(hsm_url(sub, "hsm-rg", "logpay") + "/managementCredential",
                             params={"api-version": HSM_API})
            assert claimed.status_code == 200, claimed.text
            pay["managementToken"] = claimed.json()["managementToken"]
        first = luna.get("initialAdminPassword") or "PASSWORD"
        if first != "PASSWORD":
            secrets["initial admin password"] = first
        appliance_log = asyncio.run(asyncio.wait_for(luna_session(luna, first), 60))
        payshield_logs = payment_session(pay, secrets)
    # The session really was logged, at the levels that would carry the secrets...
    for seen in ("Command:", "Env: HSM_NOTE=", "Received MSG_USERAUTH_REQUEST", "Received MSG_CHANNEL_DATA"):
        assert seen in captured.text
    assert "hsm init -label logtest" in appliance_log and "********" in appliance_log
    # ...and no secret is in any of it.
    assert_no_secret(captured.text, secrets, "the service log")
    assert_no_secret(appliance_log, secrets, "the Luna appliance log")
    assert_no_secret(payshield_logs, secrets, "the payShield audit and error logs")


def test_hsmcloud_up_verbose_log_holds_no_password(tmp_path):
    """`hsmcloud up -v`, the log docs/errors.md asks users to attach, after a first login and HSM init."""
    state_dir = tmp_path / "state"
    stderr = (tmp_path / "up.log").open("wb")
    cmd = [sys.executable, "-m", "hsmcloud.cli.main", "up", "-v", "--state-dir", str(state_dir), "--port", "0",
           "--step-delay", "0", "--gateway-provision-seconds", "0", "--region", "eastus",
           "--device-ssh-port", "0", "--device-host-port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        for _ in range(1200):
            if (state_dir / "endpoint.json").exists():
                break
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            time.sleep(0.05)
        info = json.loads((state_dir / "endpoint.json").read_text())
        authority = TokenAuthority(state_dir)

        def http(**kwargs) -> httpx.Client:
            return httpx.Client(base_url=info["endpoint"], verify=ssl.create_default_context(cafile=info["ca"]),
                                timeout=30, headers={"Authorization": f"Bearer {authority.issue(**kwargs)}"})

        sub = str(uuid.uuid4())
        with http(operator=True) as op:
            assert op.put(f"/operator/subscriptions/{sub}/allowlist").status_code == 200
        with http(subscription_id=sub) as c:
            subnet = make_network(c, sub)
            put_hsm(c, sub, "hsm-rg", "uplog", hsm_body(subnet))
            assert wait_terminal(c, sub, "hsm-rg", "uplog")["properties"]["provisioningState"] == "Succeeded"
            ep = endpoints(c, sub, "uplog")
        first = ep.get("initialAdminPassword") or "PASSWORD"
        asyncio.run(asyncio.wait_for(luna_session(ep, first), 60))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
    log = (tmp_path / "up.log").read_text()
    assert "Command:" in log  # -v logs at INFO, where asyncssh reports each exec request
    secrets = {"admin password": ADMIN_PASSWORD, "SO password": SO_PASSWORD, "cloning domain": DOMAIN}
    if first != "PASSWORD":
        secrets["initial admin password"] = first
    assert_no_secret(log, secrets, "the log of hsmcloud up -v")
