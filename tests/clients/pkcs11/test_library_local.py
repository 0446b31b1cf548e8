"""The PKCS#11 library without an appliance: ABI, function lists, initialization, error codes,
C_Initialize/C_Finalize cycles, fork, the configuration file, the transport's refusals, the build.

Debian packages: gcc, libssl-dev (the C test programs and the library), binutils (nm).
"""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hsmcloud.cli.main import app
from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import (ServerEntry, build_program, build_sanitized_library, free_port, library_env,
                              make_identity, run, write_config)

CKR_OK = 0x0
CKR_GENERAL_ERROR = 0x5
CKR_DEVICE_ERROR = 0x30


@pytest.fixture(scope="module")
def p11_local(tmp_path_factory) -> Path:
    return build_program("p11_local", tmp_path_factory.mktemp("cprog"))


@pytest.fixture
def unreachable_conf(tmp_path) -> Path:
    """Three slots on an appliance that does not answer (nothing listens on its port)."""
    client = make_identity(tmp_path / "client", "testclient")
    server = make_identity(tmp_path / "server", "hsm-down")
    return write_config(tmp_path / "client.conf", client=client,
                        servers=[ServerEntry(name="hsm-down", address="127.0.0.1", port=free_port(),
                                             certificate=server.cert)],
                        slots=[("hsm-down", "7012345001"), ("hsm-down", "7012345002"), ("hsm-down", "tenantpart")])


def check(p11_local: Path, name: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    result = run([p11_local, module_path(), name, *args], env)
    assert result.returncode == 0 and f"ok {name}" in result.stdout, result.stdout + result.stderr
    return result


def test_struct_layouts_match_the_standard_abi(p11_local):
    check(p11_local, "abi", library_env())


def test_function_lists_hold_every_function_in_the_standards_order(p11_local, unreachable_conf):
    check(p11_local, "function-lists", library_env(conf=unreachable_conf))


def test_every_function_answers_not_initialized_before_and_after(p11_local, unreachable_conf):
    check(p11_local, "not-initialized", library_env(conf=unreachable_conf))


def test_initialize_arguments_and_application_mutexes(p11_local, unreachable_conf):
    result = check(p11_local, "init-args", library_env(conf=unreachable_conf))
    assert "ok callbacks creates=" in result.stdout


def test_error_codes_for_bad_arguments_slots_and_sessions(p11_local, unreachable_conf, tmp_path):
    log = tmp_path / "p11.log"
    check(p11_local, "errors", library_env(conf=unreachable_conf, log=log))
    text = log.read_text()
    assert "cannot connect to 127.0.0.1:" in text
    assert "C_OpenSession -> 0x30" in text


def test_initialize_finalize_cycles_leave_nothing_behind(p11_local, unreachable_conf):
    result = check(p11_local, "cycles", library_env(conf=unreachable_conf), "600")
    assert "fds" in result.stdout


def test_forked_child_must_initialize_again(p11_local, unreachable_conf):
    check(p11_local, "fork", library_env(conf=unreachable_conf))


@pytest.mark.parametrize("name, args", [("not-initialized", ()), ("init-args", ()), ("errors", ()),
                                        ("cycles", ("30",)), ("fork", ())])
def test_no_memory_error_or_leak_under_address_sanitizer(tmp_path_factory, unreachable_conf, name, args):
    """The same checks with the library and the program built with ASan and UBSan (leaks included)."""
    out = tmp_path_factory.getbasetemp() / "asan"
    out.mkdir(exist_ok=True)
    lib = out / "libhsmcloud_pkcs11-asan.so"
    if not lib.exists():
        build_sanitized_library(out)
    program = build_program("p11_local", out, sanitize=True)
    env = library_env(conf=unreachable_conf, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
                      UBSAN_OPTIONS="print_stacktrace=1")
    result = run([program, lib, name, *args], env)
    assert result.returncode == 0 and f"ok {name}" in result.stdout, result.stdout + result.stderr
    assert "Sanitizer" not in result.stderr, result.stderr


def test_only_pkcs11_entry_points_are_exported():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed (Debian: apt-get install binutils)")
    out = subprocess.run([nm, "-D", "--defined-only", str(module_path())], capture_output=True, text=True,
                         check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names, out
    assert {n for n in names if not n.startswith("C_")} == set()
    assert {"C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface", "C_Initialize", "C_Sign"} <= names
    assert len(names) == 92  # 68 of v2.40 and the 24 v3.0 adds


def test_the_library_needs_only_openssl_and_libc_and_no_run_path():
    """Loaded into C programs that never ran Python: no libpython, no Python run path."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed (Debian: apt-get install binutils)")
    dynamic = subprocess.run([readelf, "-d", str(module_path())], capture_output=True, text=True, check=True).stdout
    needed = {line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line}
    assert needed == {"libssl.so.3", "libcrypto.so.3", "libc.so.6"}
    assert "RPATH" not in dynamic and "RUNPATH" not in dynamic


def test_the_library_is_built_from_the_current_sources():
    """A stale build would test old code: `pip install -e .` (or `make test`) rebuilds it."""
    built = module_path().stat().st_mtime
    native = Path(__file__).resolve().parents[3] / "src" / "hsmcloud" / "clients" / "pkcs11" / "native"
    newer = [p.name for p in native.iterdir() if p.suffix in (".c", ".h") and p.stat().st_mtime > built]
    assert newer == [], f"{newer} changed after {module_path()} was built: run 'pip install -e .' again"


def test_module_path_command_prints_the_built_library():
    result = CliRunner().invoke(app, ["pkcs11", "module-path"])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path.is_absolute() and path.name == "libhsmcloud_pkcs11.so" and path.is_file()
    assert path.read_bytes()[:4] == b"\x7fELF"


# ---- the configuration file ----

def report_init(p11_local: Path, env: dict) -> tuple[str, str]:
    result = run([p11_local, module_path(), "report-init"], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


def test_no_configuration_at_the_default_paths_means_zero_slots(p11_local, tmp_path):
    out, err = report_init(p11_local, library_env(home=tmp_path))
    assert out == "rv=0x0 slots=0"
    assert err == ""


def test_configuration_found_through_client_home_then_home(p11_local, tmp_path, unreachable_conf):
    home = tmp_path / "home"
    (home / ".hsmcloud-client").mkdir(parents=True)
    (home / ".hsmcloud-client" / "client.conf").write_text(unreachable_conf.read_text())
    assert report_init(p11_local, library_env(home=home))[0] == "rv=0x0 slots=3"
    client_home = tmp_path / "client-home"
    client_home.mkdir()
    write_config(client_home / "client.conf", client=make_identity(tmp_path / "c2", "c2"),
                 servers=[ServerEntry(name="a", address="127.0.0.2", port=1792, certificate=tmp_path / "s.pem")],
                 slots=[("a", "p")])
    assert report_init(p11_local, library_env(home=home, HSMCLOUD_CLIENT_HOME=str(client_home)))[0] == \
        "rv=0x0 slots=1"
    # HSMCLOUD_CONF wins over both
    assert report_init(p11_local, library_env(conf=unreachable_conf, home=home,
                                              HSMCLOUD_CLIENT_HOME=str(client_home)))[0] == "rv=0x0 slots=3"


def test_a_configuration_named_by_hsmcloud_conf_must_exist(p11_local, tmp_path):
    out, err = report_init(p11_local, library_env(conf=tmp_path / "missing.conf"))
    assert out == "rv=0x5 slots=0"
    assert f"{tmp_path / 'missing.conf'}: cannot open: No such file or directory" in err


@pytest.mark.parametrize("text, message", [
    ("[client]\ncertificate = a.pem\nprivate_key = a.key\n[server h]\naddress = 10.0.0.5\ncertificate = s.pem\n",
     ":5: address '10.0.0.5' is not a loopback IPv4 address (127.0.0.0/8)"),
    ("[client]\ncertificate = a.pem\nprivate_key = a.key\n[slot]\nserver = nowhere\npartition = 1\n",
     ":4: [slot] names server 'nowhere', which no [server nowhere] defines"),
    ("[server h]\naddress = 127.0.0.1\nport = 99999\ncertificate = s.pem\n",
     ":3: port '99999' is not a number from 1 to 65535"),
    ("[client]\nreceive_timeout_seconds = 0\n", ":2: receive_timeout_seconds '0' is not a whole number"),
    ("name = x\n", ":1: 'name' appears before any [section]"),
    ("[client]\njust words\n", ":2: expected 'key = value' or a [section]"),
    ("[server h]\naddress = 127.0.0.1\n", ":1: [server h] has no 'certificate'"),
    ("[server h]\ncertificate = s.pem\naddress = 127.0.0.1\n[server h]\n", ":4: server 'h' is defined twice"),
    ("[server h]\naddress = 127.0.0.1\ncertificate = s.pem\n[slot]\nserver = h\npartition = 1\n",
     "[client] needs 'certificate' and 'private_key'"),
    ("[slot]\nserver = h\n", ":1: [slot] has no 'partition'"),
    ("[server h]\naddress = 127.0.0.1\ncertificate = s.pem\n[hagroup g]\nmembers = h/p1\n",
     ":4: [hagroup g]: member 'h/p1' is not a [slot] of this file"),
    ("[hagroup g]\ninterval_seconds = 5\n", ":2: interval_seconds '5' must be 60 to 1200"),
    ("[hagroup g]\nretry_count = -3\n", ":2: retry_count '-3' must be -1 (forever)"),
    ("[hagroup g]\n", ":1: [hagroup g] has no 'members'"),
    ("[client]\nha_only = maybe\n", ":2: ha_only 'maybe' must be yes or no"),
])
def test_broken_configuration_fails_initialize_and_says_where(p11_local, tmp_path, text, message):
    conf = tmp_path / "client.conf"
    conf.write_text(text)
    log = tmp_path / "p11.log"
    out, err = report_init(p11_local, library_env(conf=conf, log=log))
    assert out == "rv=0x5 slots=0"
    assert message in err
    assert message in log.read_text()


def test_comments_unknown_sections_and_relative_paths_are_accepted(p11_local, tmp_path):
    client = make_identity(tmp_path, "rel")
    (tmp_path / "client.conf").write_text(
        "# a comment\n; another\n[client]\nname = rel   ; inline\ncertificate = rel.pem\nprivate_key = relKey.pem\n"
        "[server h]   # inline after a header\naddress = localhost\ncertificate = rel.pem\n"
        "[futurefeature later]\nmembers = x, y\n[slot]\nserver = h\npartition = 7012345001  ; serial\n")
    assert report_init(p11_local, library_env(conf=tmp_path / "client.conf"))[0] == "rv=0x0 slots=1"
    assert client.cert.exists()


def test_ha_groups_are_virtual_slots_after_the_physical_ones_or_alone(p11_local, tmp_path):
    make_identity(tmp_path, "rel")
    text = ("[client]\nname = rel\ncertificate = rel.pem\nprivate_key = relKey.pem\n"
            "[server h]\naddress = localhost\ncertificate = rel.pem\n"
            "[slot]\nserver = h\npartition = p1\n[slot]\nserver = h\npartition = p2\n"
            "[hagroup g]\nmembers = h/p1, h/p2\nstandby = h/p2\n")
    conf = tmp_path / "client.conf"
    conf.write_text(text)
    assert report_init(p11_local, library_env(conf=conf))[0] == "rv=0x0 slots=3"
    conf.write_text(text.replace("[client]\n", "[client]\nha_only = yes\n"))
    assert report_init(p11_local, library_env(conf=conf))[0] == "rv=0x0 slots=1"


# ---- the transport refuses what it must ----

class TlsPeer:
    """A TLS listener on loopback that accepts this client's certificate and then does what a test
    needs: it presents `certificate` (maybe not the pinned one) and never answers a request."""

    def __init__(self, tmp: Path, *, server_identity, client_identity):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(server_identity.cert, server_identity.key)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(client_identity.cert)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.handshakes = 0
        self._conns: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
                self.handshakes += 1
                conn.settimeout(30)
                self.received.append(conn.recv(65536))  # the HELLO, left unanswered
                self._conns.append(conn)
            except (OSError, ssl.SSLError):
                raw.close()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self._conns:
            c.close()
        self.sock.close()


def test_an_appliance_certificate_other_than_the_pinned_one_is_refused(p11_local, tmp_path):
    client = make_identity(tmp_path / "client", "testclient")
    impostor = make_identity(tmp_path / "impostor", "hsm1")
    pinned = make_identity(tmp_path / "pinned", "hsm1")
    peer = TlsPeer(tmp_path, server_identity=impostor, client_identity=client)
    try:
        conf = write_config(tmp_path / "client.conf", client=client,
                            servers=[ServerEntry(name="hsm1", address="127.0.0.1", port=peer.port,
                                                 certificate=pinned.cert)],
                            slots=[("hsm1", "7012345001")])
        log = tmp_path / "p11.log"
        result = run([p11_local, module_path(), "report-token"], library_env(conf=conf, log=log))
        assert result.stdout.strip() == "present=0 token_info=0x30"
        assert "the appliance's certificate is not the pinned one" in log.read_text()
        assert peer.received == []  # nothing was sent to the impostor
    finally:
        peer.close()


def test_no_answer_within_the_receive_timeout_is_a_device_error(p11_local, tmp_path):
    client = make_identity(tmp_path / "client", "testclient")
    server = make_identity(tmp_path / "server", "hsm1")
    peer = TlsPeer(tmp_path, server_identity=server, client_identity=client)
    try:
        conf = write_config(tmp_path / "client.conf", client=client,
                            servers=[ServerEntry(name="hsm1", address="127.0.0.1", port=peer.port,
                                                 certificate=server.cert)],
                            slots=[("hsm1", "7012345001")], receive_timeout=1)
        log = tmp_path / "p11.log"
        result = run([p11_local, module_path(), "report-token"], library_env(conf=conf, log=log))
        assert result.stdout.strip() == "present=0 token_info=0x30"
        text = log.read_text()
        assert "no HELLO answer" in text
        # the peer got a well-formed HELLO frame: length, opcode 1, version 1, 8-byte CK_ULONG, little endian
        assert peer.received and peer.received[0][4:10] == b"\x00\x01\x00\x01\x08\x00"
        assert int.from_bytes(peer.received[0][:4], "big") == len(peer.received[0]) - 4
    finally:
        peer.close()


# ---- the build ----

def test_a_missing_compiler_gives_a_clear_message(tmp_path):
    """`pip install` without gcc says what to install instead of a compiler traceback."""
    repo = Path(__file__).resolve().parents[3]
    env = library_env(CC="/nonexistent/gcc", LDSHARED="/nonexistent/gcc -shared")
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys, runpy; sys.argv = ['setup.py', 'build_ext', '--build-temp', sys.argv[1], "
         "'--build-lib', sys.argv[1]]; runpy.run_path('setup.py', run_name='__main__')", str(tmp_path)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "needs a C compiler and the OpenSSL headers" in result.stdout + result.stderr
    assert "/nonexistent/gcc" in result.stdout + result.stderr
