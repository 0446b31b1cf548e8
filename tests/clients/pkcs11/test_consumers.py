"""Unchanged third-party PKCS#11 consumers on the library, against a real appliance: p11tool
(GnuTLS) lists and signs; OpenSSL through libp11's engine signs a CSR and a certificate that plain
OpenSSL verifies; nginx serves HTTPS with its private key inside the appliance (its workers fork
after the master loaded the library) and curl completes the handshake.

Debian packages: gcc, libssl-dev (the library), opensc (pkcs11-tool, to make the key),
gnutls-bin (p11tool), libengine-pkcs11-openssl (the engine), nginx, curl. A test skips, naming
the package, when one is missing.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import CO_PIN, free_port, library_env, run, start_appliance

ENGINE_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so", "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so")
KEY_LABEL = "offload-rsa"
#: Guards against a hung program; never an assertion about speed.
START_GUARD_SECONDS = 60


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install {package})")
    return path


@pytest.fixture(scope="module")
def appliance_with_key(tmp_path_factory):
    """An appliance whose partition holds an RSA-2048 key pair made through the library."""
    pkcs11_tool = tool("pkcs11-tool", "opensc")
    appliance = start_appliance(tmp_path_factory.mktemp("consumers"), partitions=[("app1", True)])
    try:
        made = run([pkcs11_tool, "--module", module_path(), "--login", "--pin", CO_PIN, "--keypairgen",
                    "--key-type", "rsa:2048", "--id", "4242", "--label", KEY_LABEL], library_env(conf=appliance.conf))
        assert made.returncode == 0, made.stdout + made.stderr
        yield appliance
    finally:
        appliance.stop()


def test_p11tool_lists_the_token_and_signs(appliance_with_key):
    p11tool = tool("p11tool", "gnutls-bin")
    env = library_env(conf=appliance_with_key.conf, GNUTLS_PIN=CO_PIN)
    tokens = run([p11tool, "--provider", module_path(), "--list-tokens"], env)
    assert tokens.returncode == 0, tokens.stderr
    assert "token=app1" in tokens.stdout and "Manufacturer: hsmcloud" in tokens.stdout
    objects = run([p11tool, "--provider", module_path(), "--login", "--list-all", "pkcs11:token=app1"], env)
    assert f"object={KEY_LABEL};type=private" in objects.stdout, objects.stdout + objects.stderr
    signed = run([p11tool, "--provider", module_path(), "--login", "--test-sign",
                  f"pkcs11:token=app1;object={KEY_LABEL};type=private"], env)
    out = signed.stdout + signed.stderr
    assert signed.returncode == 0, out
    assert "Verifying against public key in the token... ok" in out


def engine_config(directory: Path) -> Path:
    engine = next((p for p in ENGINE_CANDIDATES if Path(p).exists()), None)
    if engine is None:
        pytest.skip("libp11's OpenSSL engine is not installed (Debian: apt-get install libengine-pkcs11-openssl)")
    conf = directory / "openssl.cnf"
    conf.write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
        "[engine_section]\npkcs11 = pkcs11_section\n"
        f"[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = {engine}\nMODULE_PATH = {module_path()}\ninit = 0\n"
        "[req]\ndistinguished_name = dn\n[dn]\n")
    return conf


def key_uri() -> str:
    return f"pkcs11:token=app1;object={KEY_LABEL};type=private;pin-value={CO_PIN}"


def self_signed_certificate(appliance, directory: Path) -> tuple[Path, Path]:
    """A CSR and a self-signed certificate signed by the appliance's key through OpenSSL's engine."""
    openssl = tool("openssl", "openssl")
    conf = engine_config(directory)
    env = library_env(conf=appliance.conf, OPENSSL_CONF=str(conf))
    csr, cert = directory / "offload.csr", directory / "offload.pem"
    for args, out in ((["-new", "-subj", "/CN=offload.test"], csr),
                      (["-new", "-x509", "-days", "2", "-subj", "/CN=offload.test"], cert)):
        made = run([openssl, "req", "-engine", "pkcs11", "-keyform", "engine", "-key", key_uri(), *args,
                    "-out", out], env)
        assert made.returncode == 0, made.stdout + made.stderr
    return csr, cert


def test_openssl_engine_signs_a_csr_and_a_certificate_that_openssl_verifies(appliance_with_key, tmp_path):
    csr, cert = self_signed_certificate(appliance_with_key, tmp_path)
    plain = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    checked = subprocess.run(["openssl", "req", "-in", str(csr), "-verify", "-noout"], env=plain,
                             capture_output=True, text=True)
    assert "verify OK" in checked.stdout + checked.stderr
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(cert), str(cert)], env=plain,
                              capture_output=True, text=True)
    assert verified.stdout.strip() == f"{cert}: OK", verified.stderr
    # the certificate carries the appliance key's public half
    from cryptography import x509
    pub = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    assert pub.key_size == 2048


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_GUARD_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {process.stderr.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("nginx did not listen")


def test_nginx_serves_https_with_its_key_in_the_appliance(appliance_with_key, tmp_path):
    nginx = tool("nginx", "nginx")
    curl = tool("curl", "curl")
    _, cert = self_signed_certificate(appliance_with_key, tmp_path)
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the client key
    temp = " ".join(f"{d}_temp_path {prefix / d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(f"""{user}worker_processes 2;
daemon off;
master_process on;
error_log {prefix}/logs/error.log info;
pid {prefix}/nginx.pid;
env HSMCLOUD_CONF;
env HSMCLOUD_PKCS11_LOG;
env OPENSSL_CONF;
ssl_engine pkcs11;
events {{ worker_connections 64; }}
http {{
  access_log {prefix}/logs/access.log;
  {temp}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key "engine:pkcs11:{key_uri()}";
    location / {{ return 200 "served with a key inside the HSM\\n"; }}
  }}
}}
""")
    log = tmp_path / "p11.log"
    env = library_env(conf=appliance_with_key.conf, log=log, OPENSSL_CONF=str(engine_config(tmp_path)))
    process = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)
        for _ in range(4):  # several handshakes, spread over the workers
            got = run([curl, "-sS", "--cacert", cert, "--resolve", f"offload.test:{port}:127.0.0.1",
                       f"https://offload.test:{port}/"], library_env(), timeout=60)
            assert got.returncode == 0, got.stderr
            assert got.stdout == "served with a key inside the HSM\n"
    finally:
        process.terminate()
        process.wait(timeout=30)
    # the master loaded the library, and forked workers initialized it again before signing
    pids = {line.split(" pid=")[1].split()[0] for line in log.read_text().splitlines() if "C_Initialize:" in line}
    assert len(pids) >= 2, log.read_text()
