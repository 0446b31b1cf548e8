"""A Luna appliance (LunaAppliance: SSH shell, management API and NTLS on loopback) in a process of
its own, for the PKCS#11 library tests, so the appliance's Python never shares a GIL with the
program under test.

    python ntls_appliance.py SPEC_JSON

SPEC_JSON: {"state_dir", "client_name", "client_cert", "partitions": [{"name", "ready", "assigned"}],
"po_pin", "co_pin", "cu_pin"}. The HSM is initialized through its shell; "ready" partitions are
initialized with PO, CO and CU PINs and partition policy 21 (PIN change after set) off, the
others left uninitialized (C_InitToken's job). The client certificate is registered and assigned
to every partition marked "assigned". Prints one JSON line ({"port", "server_pem", "serials"}),
then serves until its standard input closes, and exits. A line "revoke NAME" on standard input
revokes the client's assignment of partition NAME (as `client revokePartition` does) and answers
"done".
With "resume": true (and "ntls_port") it starts again from an existing state_dir, initializing
nothing: an appliance that was killed comes back with its keys, on the same port.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import sys
from pathlib import Path

from hsmcloud.appliances.luna.appliance import ApplianceConfig, LunaAppliance
from hsmcloud.appliances.luna.core.roles import Role
from hsmcloud.appliances.luna.lunash.shell import ShellSession

APPLIANCE_SERIAL = "154700077"
ADMIN_PASSWORD = "Adm1n-Passw0rd"
SO_PASSWORD = "hsm-so-secret-1"


class Terminal:
    """A non-interactive terminal that keeps what the shell writes."""

    interactive = False

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    async def ask(self, prompt: str, *, secret: bool = False) -> str:
        raise RuntimeError(f"the shell asked: {prompt}")


async def shell(session: ShellSession, line: str) -> None:
    terminal = Terminal()
    if await session.execute(line, terminal) != 0:
        raise SystemExit(f"'{line.split(' -password')[0]}' failed: {terminal.text}")


def prepare(core, spec: dict, serial: str) -> None:
    """Partition SO, Crypto Officer and Crypto User PINs, no forced PIN change."""
    parts = core.partitions
    parts.init(serial, so_pin=spec["po_pin"], label=partition_name(spec, serial))
    po = parts.login(serial, Role.PARTITION_SO, spec["po_pin"])
    parts.change_policy(serial, 21, 0, by=po)
    parts.init_role(serial, Role.CRYPTO_OFFICER, spec["co_pin"], by=po)
    co = parts.login(serial, Role.CRYPTO_OFFICER, spec["co_pin"])
    parts.init_role(serial, Role.CRYPTO_USER, spec["cu_pin"], by=co)


def partition_name(spec: dict, serial: str) -> str:
    return next(p["name"] for p in spec["partitions"] if p["serial"] == serial)


async def main() -> None:
    spec = json.loads(sys.argv[1])
    appliance = LunaAppliance(ApplianceConfig(serial=APPLIANCE_SERIAL, state_dir=Path(spec["state_dir"]),
                                              address="127.0.0.1", ssh_port=0, mgmt_port=0,
                                              ntls_port=spec.get("ntls_port", 0),
                                              mgmt_token=secrets.token_urlsafe(16)))
    await appliance.start()
    try:
        core = appliance.core
        if spec.get("resume"):
            serials = {p["name"]: core.partitions.by_name(p["name"]).serial for p in spec["partitions"]}
            server_pem = Path(spec["state_dir"]) / "server.pem"
            print(json.dumps({"port": appliance.ntls_port, "server_pem": str(server_pem), "serials": serials}),
                  flush=True)
            while await asyncio.to_thread(sys.stdin.readline):
                pass
            return
        session = ShellSession(core, origin="127.0.0.1/40000")
        await shell(session, f"my password set -oldpassword PASSWORD -newpassword {ADMIN_PASSWORD}")
        await shell(session, f"hsm init -label libtest -domain libtestDomain -password {SO_PASSWORD}")
        await shell(session, f"hsm login -password {SO_PASSWORD}")
        serials = {}
        for p in spec["partitions"]:
            await shell(session, f"partition create -partition {p['name']}")
            p["serial"] = serials[p["name"]] = core.partitions.by_name(p["name"]).serial
        for p in spec["partitions"]:
            if p["ready"]:
                prepare(core, spec, p["serial"])
        core.clients.register(spec["client_name"], certificate_pem=Path(spec["client_cert"]).read_bytes(),
                              hostname=spec["client_name"])
        for p in spec["partitions"]:
            if p["assigned"]:
                core.clients.assign(spec["client_name"], p["serial"])
        server_pem = Path(spec["state_dir"]) / "server.pem"
        server_pem.write_text(core.clients.server_certificate().certificate_pem)
        print(json.dumps({"port": appliance.ntls_port, "server_pem": str(server_pem), "serials": serials}),
              flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            words = line.split()
            if words[:1] == ["revoke"]:
                core.clients.revoke(spec["client_name"], serials[words[1]])
                print("done", flush=True)
    finally:
        await appliance.stop()


if __name__ == "__main__":
    asyncio.run(main())
