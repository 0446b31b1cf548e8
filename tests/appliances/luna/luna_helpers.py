"""Helpers shared by the Luna appliance tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import httpx

from hsmcloud.appliances.luna.appliance import ApplianceConfig, LunaAppliance
from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from hsmcloud.appliances.luna.lunash.errors import CommandAborted
from hsmcloud.appliances.luna.lunash.shell import ShellSession

SERIAL = "154700001"
TOKEN = "test-management-token"
FACTORY_PASSWORD = "PASSWORD"
ADMIN_PASSWORD = "Adm1n-Passw0rd"
SO_PASSWORD = "hsm-so-secret-1"
#: Guards against a hung test; never an assertion about speed.
GUARD_SECONDS = 20


class ScriptedTerminal:
    """A terminal whose prompts are answered from a list; records everything written."""

    def __init__(self, answers: list[str] | None = None, *, interactive: bool | None = None):
        self.answers = list(answers or [])
        self._interactive = bool(answers) if interactive is None else interactive
        self.output: list[str] = []
        self.prompts: list[tuple[str, bool]] = []

    @property
    def interactive(self) -> bool:
        return self._interactive

    def write(self, text: str) -> None:
        self.output.append(text)

    async def ask(self, prompt: str, *, secret: bool = False) -> str:
        self.prompts.append((prompt, secret))
        if not self.answers:
            raise CommandAborted("The input ended. Nothing was changed.")
        return self.answers.pop(0)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def take(self) -> str:
        """The output since the last take()."""
        text = self.text
        self.output.clear()
        return text


def run_line(session: ShellSession, line: str, answers: list[str] | None = None) -> tuple[int, str]:
    """Run one command line on a fresh (non-interactive unless answered) terminal."""
    terminal = ScriptedTerminal(answers)
    code = asyncio.run(session.execute(line, terminal))
    return code, terminal.text


def ok(session: ShellSession, line: str, answers: list[str] | None = None) -> str:
    code, text = run_line(session, line, answers)
    assert code == 0, text
    assert "Command Result : 0 (Success)" in text
    return text


def fails(session: ShellSession, line: str, answers: list[str] | None = None) -> str:
    code, text = run_line(session, line, answers)
    assert code != 0, text
    assert "Error: " in text, text
    assert "Command Result : 65535" in text
    return text


def admin_ready(core: ApplianceCore) -> ShellSession:
    """A session on ``core`` whose admin already changed the factory password."""
    session = ShellSession(core, origin="127.0.0.1/40000")
    ok(session, f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}")
    return session


def initialized(core: ApplianceCore) -> ShellSession:
    """A session with the HSM initialized and the HSM SO logged in."""
    session = admin_ready(core)
    ok(session, f"hsm init -label myHSM -domain myDomain -password {SO_PASSWORD}")
    ok(session, f"hsm login -password {SO_PASSWORD}")
    return session


def config(tmp_path: Path, **overrides) -> ApplianceConfig:
    values = dict(
        serial=SERIAL,
        state_dir=tmp_path / "appliance",
        address="127.0.0.1",
        ssh_port=0,
        ntls_port=0,
        mgmt_port=0,
        mgmt_token=TOKEN,
    )
    values.update(overrides)
    return ApplianceConfig(**values)


@contextlib.asynccontextmanager
async def running(cfg: ApplianceConfig) -> AsyncIterator[LunaAppliance]:
    appliance = LunaAppliance(cfg)
    await appliance.start()
    try:
        yield appliance
    finally:
        await appliance.stop()


def connect(appliance: LunaAppliance, password: str, **kwargs):
    """An asyncssh client connection to the appliance as admin (use with ``async with``)."""
    return connect_to(appliance.config.address, appliance.ssh_port, password, **kwargs)


def connect_to(address: str, port: int, password: str, *, username: str = "admin", **kwargs):
    """An asyncssh client connection, trusting any host key and using only the password."""
    return asyncssh.connect(
        address,
        port,
        username=username,
        password=password,
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        preferred_auth="password",
        **kwargs,
    )


async def run_exec(appliance: LunaAppliance, password: str, command: str):
    """One exec request on a new connection; returns the asyncssh SSHCompletedProcess."""
    async with connect(appliance, password) as conn:
        return await conn.run(command, check=False)


def management(appliance: LunaAppliance, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(
        base_url=f"http://{appliance.config.address}:{appliance.mgmt_port}",
        headers=headers,
        timeout=GUARD_SECONDS,
    )


def guarded(coro):
    """asyncio.run with a generous guard against hangs."""

    async def main():
        return await asyncio.wait_for(coro, GUARD_SECONDS)

    return asyncio.run(main())


# -- partitions and roles (through the core) ---------------------------------------------

PO_PIN = "po-pin-0001"
CO_PIN = "co-pin-0001"
CU_PIN = "cu-pin-0001"


class SteppedClock:
    """An injectable clock that moves only when a test moves it."""

    def __init__(self, start=None):
        from datetime import datetime, timezone

        self.now = start or datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now

    def advance(self, **delta):
        from datetime import timedelta

        self.now += timedelta(**delta)


def partition_ready(core: ApplianceCore, name: str = "app1", *, co: bool = True, cu: bool = False,
                    session: ShellSession | None = None):
    """An initialized HSM with partition ``name`` initialized (PO), its CO and optionally CU set."""
    from hsmcloud.appliances.luna.core.roles import Role

    session = session or initialized(core)
    ok(session, f"partition create -partition {name}")
    serial = core.partitions.by_name(name).serial
    core.partitions.init(serial, so_pin=PO_PIN, label=f"{name}-label")
    if co or cu:
        po = core.partitions.login(serial, Role.PARTITION_SO, PO_PIN)
        core.partitions.init_role(serial, Role.CRYPTO_OFFICER, CO_PIN, by=po)
    if cu:
        officer = core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)
        core.partitions.init_role(serial, Role.CRYPTO_USER, CU_PIN, by=officer)
    return core.partitions.get(serial)


# -- NTLS clients ------------------------------------------------------------------------


def make_client_certificate(directory: Path, name: str, *, expired: bool = False):
    """A self-signed client certificate and key as PEM files (``vtl createCert``); returns the paths."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired \
        else (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30))
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}Key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
