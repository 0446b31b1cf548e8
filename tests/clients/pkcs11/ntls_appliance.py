"""A Luna appliance with its NTLS listener on loopback, in a process of its own, for the PKCS#11
library tests (so the appliance's Python never shares a GIL with the program under test).

    python ntls_appliance.py SPEC_JSON

SPEC_JSON: {"state_dir", "client_name", "client_cert", "partitions": [{"name", "ready", "assigned"}],
"po_pin", "co_pin", "cu_pin"}. The HSM is initialized through its shell; "ready" partitions are
initialized with PO, CO and CU PINs and partition policy 21 (PIN change after set) off, the
others left uninitialized (C_InitToken's job). The client certificate is registered and assigned
to every partition marked "assigned". Prints one JSON line ({"port", "server_pem", "serials"}), then serves until
its standard input closes, and exits. A line "revoke NAME" on standard input revokes the client's
assignment of partition NAME (as `client revokePartition` does) and answers "done".
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from hsmcloud.appliances.luna.core.roles import Role
from hsmcloud.appliances.luna.lunash.shell import ShellSession
from hsmcloud.appliances.luna.ntls.dispatcher import NtlsDispatcher
from hsmcloud.appliances.luna.ntls.server import NtlsServer

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


def shell(session: ShellSession, line: str) -> None:
    terminal = Terminal()
    code = asyncio.run(session.execute(line, terminal))
    if code != 0:
        raise SystemExit(f"'{line.split(' -password')[0]}' failed: {terminal.text}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    core = ApplianceCore.open(Path(spec["state_dir"]), APPLIANCE_SERIAL)
    session = ShellSession(core, origin="127.0.0.1/40000")
    shell(session, f"my password set -oldpassword PASSWORD -newpassword {ADMIN_PASSWORD}")
    shell(session, f"hsm init -label libtest -domain libtestDomain -password {SO_PASSWORD}")
    shell(session, f"hsm login -password {SO_PASSWORD}")
    serials = {}
    for p in spec["partitions"]:
        shell(session, f"partition create -partition {p['name']}")
        serial = core.partitions.by_name(p["name"]).serial
        serials[p["name"]] = serial
        if p["ready"]:
            parts = core.partitions
            parts.init(serial, so_pin=spec["po_pin"], label=p["name"])
            po = parts.login(serial, Role.PARTITION_SO, spec["po_pin"])
            parts.change_policy(serial, 21, 0, by=po)
            parts.init_role(serial, Role.CRYPTO_OFFICER, spec["co_pin"], by=po)
            co = parts.login(serial, Role.CRYPTO_OFFICER, spec["co_pin"])
            parts.init_role(serial, Role.CRYPTO_USER, spec["cu_pin"], by=co)
    core.clients.register(spec["client_name"], certificate_pem=Path(spec["client_cert"]).read_bytes(),
                          hostname=spec["client_name"])
    for p in spec["partitions"]:
        if p["assigned"]:
            core.clients.assign(spec["client_name"], serials[p["name"]])
    server_pem = Path(spec["state_dir"]) / "server.pem"
    server_pem.write_text(core.clients.server_certificate().certificate_pem)
    server = NtlsServer(core, NtlsDispatcher)
    port = server.start("127.0.0.1", 0)
    print(json.dumps({"port": port, "server_pem": str(server_pem), "serials": serials}), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["revoke"]:
                core.clients.revoke(spec["client_name"], serials[words[1]])
                print("done", flush=True)
    finally:
        server.stop()
        core.close()


if __name__ == "__main__":
    main()
