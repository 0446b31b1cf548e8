"""Helpers for the PKCS#11 library tests: building the C test programs, client configurations and
certificates, and running a program with its environment.

Debian packages the tests use (the suite skips, saying which, when one is missing):
gcc and libssl-dev (to build the library and the C test programs), opensc (pkcs11-tool).
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsmcloud.clients.pkcs11.module_path import module_path

HERE = Path(__file__).resolve().parent
NATIVE = Path(__file__).resolve().parents[3] / "src" / "hsmcloud" / "clients" / "pkcs11" / "native"
#: Guards against a hung program; never an assertion about speed.
GUARD_SECONDS = 300


SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def build_program(name: str, out_dir: Path, *, sanitize: bool = False) -> Path:
    """Compiles tests/clients/pkcs11/<name>.c against the library's own header (with
    AddressSanitizer and UBSan when `sanitize`)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (Debian: apt-get install gcc); the C test programs need it")
    exe = out_dir / (name + ("-asan" if sanitize else ""))
    if not exe.exists():
        result = subprocess.run(
            [gcc, "-Wall", "-Wextra", "-Werror", "-O1", "-g", *(SANITIZE if sanitize else []), f"-I{NATIVE}",
             "-o", str(exe), str(HERE / f"{name}.c"), "-ldl", "-lpthread"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    return exe


def build_sanitized_library(out_dir: Path) -> Path:
    """The library built from the same sources with AddressSanitizer and UBSan."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (Debian: apt-get install gcc)")
    lib = out_dir / "libhsmcloud_pkcs11-asan.so"
    result = subprocess.run(
        [gcc, "-Wall", "-Wextra", "-O1", "-g", "-fPIC", "-fvisibility=hidden", "-shared", *SANITIZE, "-o", str(lib),
         *sorted(str(p) for p in NATIVE.glob("*.c")), "-lssl", "-lcrypto", "-lpthread"],
        capture_output=True, text=True)
    if result.returncode != 0 and "asan" in result.stderr.lower():
        pytest.skip(f"gcc cannot build with AddressSanitizer here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    return lib


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(kw_only=True)
class Identity:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()


def make_identity(directory: Path, name: str) -> Identity:
    """A self-signed EC P-256 certificate for `name`, valid now."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}Key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return Identity(cert=cert_path, key=key_path)


@dataclass(kw_only=True)
class ServerEntry:
    name: str
    address: str
    port: int
    certificate: Path


def write_config(path: Path, *, client: Identity | None, servers: list[ServerEntry],
                 slots: list[tuple[str, str]], receive_timeout: int | None = None) -> Path:
    """A client configuration in the shared format ([client], [server NAME], [slot] sections)."""
    lines = ["# written by the test suite", "[client]", "name = testclient"]
    if client is not None:
        lines += [f"certificate = {client.cert}", f"private_key = {client.key}"]
    if receive_timeout is not None:
        lines.append(f"receive_timeout_seconds = {receive_timeout}")
    for s in servers:
        lines += ["", f"[server {s.name}]", f"address = {s.address}", f"port = {s.port}",
                  f"certificate = {s.certificate}"]
    for server, partition in slots:
        lines += ["", "[slot]", f"server = {server}", f"partition = {partition}"]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def library_env(*, conf: Path | None = None, log: Path | None = None, home: Path | None = None,
                **extra: str) -> dict[str, str]:
    """The environment a program loading the library gets: only the variables it documents."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HSMCLOUD_CONF", "HSMCLOUD_CLIENT_HOME", "HSMCLOUD_PKCS11_LOG")}
    if conf is not None:
        env["HSMCLOUD_CONF"] = str(conf)
    if log is not None:
        env["HSMCLOUD_PKCS11_LOG"] = str(log)
    if home is not None:
        env["HOME"] = str(home)
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], timeout: float = GUARD_SECONDS) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True, timeout=timeout)


# ---- a real appliance (the Luna core behind its NTLS listener), in its own process ----

#: Before the NTLS server is merged, point these at a checkout that has it (its src/ and python).
APPLIANCE_PYTHON = os.environ.get("HSMCLOUD_TEST_APPLIANCE_PYTHON", sys.executable)
APPLIANCE_SRC = os.environ.get("HSMCLOUD_TEST_APPLIANCE_SRC")
PO_PIN = "po-pin-0001"
CO_PIN = "co-pin-0001"
CU_PIN = "cu-pin-0001"


def _appliance_env() -> dict[str, str]:
    env = dict(os.environ)
    if APPLIANCE_SRC:
        env["PYTHONPATH"] = APPLIANCE_SRC
    return env


_PROBE = """
import dataclasses
from hsmcloud.appliances.luna.appliance import ApplianceConfig
assert "ntls_port" in {f.name for f in dataclasses.fields(ApplianceConfig)}, "the Luna appliance serves no NTLS"
"""


def ntls_server_missing() -> str | None:
    """Why no appliance with an NTLS listener can run here, or None."""
    probe = subprocess.run([APPLIANCE_PYTHON, "-c", _PROBE], env=_appliance_env(), capture_output=True, text=True)
    if probe.returncode != 0:
        return ("the Luna appliance's NTLS listener is not in this tree yet: "
                + (probe.stderr.strip().splitlines() or ["import failed"])[-1])
    return None


@dataclass(kw_only=True)
class Appliance:
    """A running appliance and a client configuration that reaches it."""

    port: int
    server_pem: Path
    serials: dict[str, str]
    client: Identity
    conf: Path
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def revoke(self, partition: str) -> None:
        """Revokes the client's assignment of `partition` (by name) on the appliance."""
        self.process.stdin.write(f"revoke {partition}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start_appliance(tmp: Path, *, partitions: list[tuple], receive_timeout: int | None = None,
                    client: Identity | None = None) -> Appliance:
    """An appliance with `partitions` ((name, ready[, assigned]) tuples: initialized with PINs or
    not, assigned to the client or not, by default assigned); the configuration's slots are the
    partitions in order, by name."""
    reason = ntls_server_missing()
    if reason:
        pytest.skip(reason)
    client = client or make_identity(tmp / "client", "libclient")
    spec = {"state_dir": str(tmp / "appliance"), "client_name": "libclient", "client_cert": str(client.cert),
            "partitions": [{"name": p[0], "ready": p[1], "assigned": p[2] if len(p) > 2 else True}
                           for p in partitions],
            "po_pin": PO_PIN, "co_pin": CO_PIN, "cu_pin": CU_PIN}
    (tmp / "appliance").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([APPLIANCE_PYTHON, str(HERE / "ntls_appliance.py"), json.dumps(spec)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_appliance_env())
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=30)
        raise AssertionError(f"the appliance did not start: {process.stderr.read()}")
    info = json.loads(line)
    conf = write_config(tmp / "client.conf", client=client,
                        servers=[ServerEntry(name="hsm1", address="127.0.0.1", port=info["port"],
                                             certificate=Path(info["server_pem"]))],
                        slots=[("hsm1", p[0]) for p in partitions], receive_timeout=receive_timeout)
    return Appliance(port=info["port"], server_pem=Path(info["server_pem"]), serials=info["serials"], client=client,
                     conf=conf, process=process)
