"""The NTLS listener: who may connect, what is refused with which TLS alert, and what is logged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
import time

import asyncssh
import pytest
from luna_helpers import (
    ADMIN_PASSWORD,
    FACTORY_PASSWORD,
    GUARD_SECONDS,
    SO_PASSWORD,
    config,
    connect,
    guarded,
    initialized,
    make_client_certificate,
    management,
    ok,
    run_exec,
    running,
)

from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from hsmcloud.appliances.luna.ntls.dispatcher import NtlsDispatcher
from hsmcloud.appliances.luna.ntls.server import NtlsServer
from hsmcloud.clients.luna.ntls_client import NtlsClient, Pkcs11Error
from hsmcloud.protocols.pkcs11 import constants as c

SERIAL = "154700001"
PID = os.getpid()


class Listener:
    """A core with an initialized HSM and partition app1, and its NTLS listener on 127.0.0.1."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "client"
        self.core = ApplianceCore.open(tmp_path / "appliance", SERIAL)
        self.shell = initialized(self.core)
        ok(self.shell, "partition create -partition app1")
        self.serial = self.core.partitions.by_name("app1").serial
        self.server = NtlsServer(self.core, NtlsDispatcher)
        self.port = self.server.start("127.0.0.1", 0)
        self.server_pem = self.dir / "server.pem"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fetch_server_certificate()

    def fetch_server_certificate(self):
        self.server_pem.write_text(self.core.clients.server_certificate().certificate_pem)

    def register(self, name, *, expired=False, assign=True):
        cert, key = make_client_certificate(self.dir, name, expired=expired)
        self.core.files.put(f"{name}.pem", cert.read_bytes())
        ok(self.shell, f"client register -client {name} -hostname {name}")
        if assign:
            ok(self.shell, f"client assignPartition -client {name} -partition app1")
        return cert, key

    def connect(self, cert, key, **kwargs):
        return NtlsClient.connect("127.0.0.1", self.port, certificate=cert, private_key=key,
                                  server_certificate=self.server_pem, timeout=GUARD_SECONDS, **kwargs)

    def close(self):
        self.server.stop()
        self.core.close()


@pytest.fixture
def listener(tmp_path):
    opened = Listener(tmp_path)
    yield opened
    opened.close()


def _log_lines(core, marker: str) -> list[str]:
    """The NTLS lines logged for one client connection, once its last line is there."""
    deadline = time.monotonic() + GUARD_SECONDS  # a guard against a hang, not a timing check
    while True:
        lines = [e.line for e in core.state.log_tail(200) if e.line.startswith("NTLS[")]
        if any("Connection instance removed" in line and marker in line for line in lines):
            return lines
        assert time.monotonic() < deadline, lines
        time.sleep(0.02)


def _refused(listener, cert, key) -> tuple[str, list[str]]:
    """Connect with a certificate the appliance must refuse; the client's error and the log."""
    raw = socket.create_connection(("127.0.0.1", listener.port), timeout=GUARD_SECONDS)
    peer = "127.0.0.1/{}".format(raw.getsockname()[1])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(listener.server_pem))
    context.load_cert_chain(str(cert), str(key))
    with pytest.raises((ssl.SSLError, ConnectionError)) as caught:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"\x00\x00\x00\x02\x00\x01")  # TLS 1.3: the refusal arrives on the first read
            tls.recv(1)
    lines = _log_lines(listener.core, peer)
    return str(caught.value), [line for line in lines if line.endswith(peer) or "SSL" in line]


def _failure_lines(error_text: str, peer_lines: list[str]) -> None:
    peer = peer_lines[0].rsplit(" : ", 1)[1]
    assert peer_lines[-4:] == [
        f"NTLS[{PID}]: Error message from SSLAccept is : {error_text}",
        f"NTLS[{PID}]: Error during SSL accept ( RC_SSL_ERROR )",
        f"NTLS[{PID}]: info : 0xc0000711 : Fail to establish a secure channel with client : {peer} : "
        "RC_SSL_FAILED_HANDSHAKE",
        f'NTLS[{PID}]: info : 0 : NTLS Client "Unknown host name" Connection instance removed : {peer}',
    ]
    assert peer_lines[-5] == f"NTLS[{PID}]: info : 0 : Incoming connection request... : {peer}"


def test_a_registered_and_assigned_client_connects_and_is_logged(listener):
    cert, key = listener.register("client1")
    with listener.connect(cert, key) as client:
        assert [p.serial for p in client.list_partitions()] == [listener.serial]
        assert listener.server.connected_clients() == ["client1"]
        local = client._sock.getsockname()
        version = client._sock.version()
    peer = f"127.0.0.1/{local[1]}"
    lines = _log_lines(listener.core, peer)
    assert f'NTLS[{PID}]: info : 0 : NTLS Client "client1" Connected : {peer}' in lines
    assert f'NTLS[{PID}]: info : 0 : NTLS Client "client1" Connection instance removed : {peer}' in lines
    assert version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_accepted(listener, version):
    cert, key = listener.register("client1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.minimum_version = context.maximum_version = version
    context.load_verify_locations(cafile=str(listener.server_pem))
    context.load_cert_chain(str(cert), str(key))
    with context.wrap_socket(socket.create_connection(("127.0.0.1", listener.port), timeout=GUARD_SECONDS)) as tls:
        assert tls.version() == version.name.replace("_", ".")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(listener):
    cert, key = listener.register("client1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with context.wrap_socket(socket.create_connection(("127.0.0.1", listener.port), timeout=GUARD_SECONDS)):
            pass


def test_an_unknown_certificate_is_refused_and_logged(listener):
    listener.register("client1")  # someone else is registered
    stranger, key = make_client_certificate(listener.dir / "other", "stranger")
    error, lines = _refused(listener, stranger, key)
    assert "unknown ca" in error.lower()
    _failure_lines("error:14089086:SSL routines:ssl3_get_client_certificate:certificate verify "
                   "failed: self-signed certificate", lines)


def test_an_expired_certificate_is_refused_and_logged(listener):
    cert, key = listener.register("old", expired=True)
    error, lines = _refused(listener, cert, key)
    assert "expired" in error.lower()
    _failure_lines("error:14089086:SSL routines:ssl3_get_client_certificate:certificate verify "
                   "failed: certificate has expired", lines)


def test_an_overwritten_client_certificate_is_refused(listener):
    listener.register("client1")
    cert, key = make_client_certificate(listener.dir, "client1")  # vtl createCert again: new key
    error, lines = _refused(listener, cert, key)
    assert "unknown ca" in error.lower()
    assert "certificate verify failed" in lines[-4]


def test_a_registered_client_without_a_partition_is_refused(listener):
    cert, key = listener.register("client1", assign=False)
    error, lines = _refused(listener, cert, key)
    assert "certificate verify failed" in lines[-4]
    ok(listener.shell, "client assignPartition -client client1 -partition app1")
    with listener.connect(cert, key) as client:
        assert client.list_partitions()


def test_a_replaced_server_certificate_breaks_the_channel_until_it_is_trusted_again(listener):
    cert, key = listener.register("client1")
    with listener.connect(cert, key):
        pass
    text = ok(listener.shell, "sysconf regenCert -force")
    assert "new NTLS server certificate" in text
    error, lines = _refused(listener, cert, key)  # the client still pins the old server.pem
    assert "certificate verify failed" in error
    _failure_lines("error:14094418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca", lines)
    listener.fetch_server_certificate()
    with listener.connect(cert, key) as client:
        assert client.list_partitions()


def test_plain_tcp_garbage_is_logged_as_a_failed_handshake(listener):
    with socket.create_connection(("127.0.0.1", listener.port), timeout=GUARD_SECONDS) as raw:
        peer = f"127.0.0.1/{raw.getsockname()[1]}"
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            raw.recv(100)
    lines = _log_lines(listener.core, peer)
    assert any("Error message from SSLAccept is : error:1407609C:SSL routines:SSL23_GET_CLIENT_HELLO:"
               "http request" in line for line in lines)


def test_revoking_the_last_partition_or_deleting_the_client_ends_its_connections(listener):
    cert, key = listener.register("client1")
    ok(listener.shell, "partition create -partition app2")
    ok(listener.shell, "client assignPartition -client client1 -partition app2")
    app2 = listener.core.partitions.by_name("app2").serial
    client = listener.connect(cert, key)
    try:
        ok(listener.shell, "client revokePartition -client client1 -partition app2")
        with pytest.raises(Pkcs11Error) as caught:
            client.get_token_info(app2)  # the connection stays; that partition is gone for it
        assert caught.value.rv == c.CKR_SLOT_ID_INVALID
        assert [p.serial for p in client.list_partitions()] == [listener.serial]

        ok(listener.shell, "client revokePartition -client client1 -partition app1")
        with pytest.raises((OSError, EOFError, Exception)):
            deadline = time.monotonic() + GUARD_SECONDS
            while time.monotonic() < deadline:  # ended by the appliance (a guard, not a timing check)
                client.list_partitions()
                time.sleep(0.02)
    finally:
        client.close()
    _refused(listener, cert, key)  # and it can no longer connect

    ok(listener.shell, "client assignPartition -client client1 -partition app1")
    client = listener.connect(cert, key)
    try:
        ok(listener.shell, "client delete -client client1 -force")
        with pytest.raises(Exception):
            deadline = time.monotonic() + GUARD_SECONDS
            while time.monotonic() < deadline:
                client.list_partitions()
                time.sleep(0.02)
    finally:
        client.close()
    assert "No clients are registered." in ok(listener.shell, "client list")


def test_client_commands_show_the_registration(listener):
    listener.register("client1")
    assert "registered client 1: client1" in ok(listener.shell, "client list")
    shown = ok(listener.shell, "client show -client client1")
    assert re.search(r"Partitions:\s+\"app1\"", shown)
    assert "Hostname:                client1" in shown
    fingerprint = listener.core.clients.show("client1").fingerprint.upper()
    assert fingerprint[:2] + ":" + fingerprint[2:4] in ok(listener.shell, "client fingerprint -client client1")
    ntls = ok(listener.shell, "ntls show")
    assert "Registered clients: 1 (1 with partitions assigned)" in ntls


def test_register_names_the_files_it_looked_for(listener):
    listener.core.files.put("other.pem", b"x")
    text = _fail(listener, "client register -client web1 -hostname web1.example.com")
    assert "looked for web1.example.com.pem and web1.pem" in text and "Files here: other.pem" in text
    cert, _ = make_client_certificate(listener.dir, "web1")
    listener.core.files.put("web1.pem", cert.read_bytes())  # <name>.pem is accepted too
    ok(listener.shell, "client register -client web1 -hostname web1.example.com")
    assert "Hostname:                web1.example.com" in ok(listener.shell, "client show -client web1")
    assert "already registered" in _fail(listener, "client register -client WEB1 -ip 10.0.0.5")
    listener.core.files.put("bad.pem", b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert "not a PEM X.509 certificate" in _fail(listener, "client register -client bad -hostname bad")


def _fail(listener, line):
    from luna_helpers import fails

    return fails(listener.shell, line)


# -- end to end through the appliance: ssh, scp, LunaSH, NTLS ----------------------------------


def test_the_registration_flow_over_ssh_and_scp(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await run_exec(appliance, FACTORY_PASSWORD,
                           f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}")
            cert, key = make_client_certificate(tmp_path / "client", "myclient")
            async with connect(appliance, ADMIN_PASSWORD) as conn:
                for command in (f"hsm init -label myHSM -domain d -password {SO_PASSWORD}",
                                f"hsm login -password {SO_PASSWORD}", "partition create -partition app1"):
                    assert (await conn.run(command)).exit_status == 0
                async with conn.start_sftp_client() as sftp:
                    await sftp.put(str(cert), "myclient.pem")
                await asyncssh.scp((conn, "server.pem"), str(tmp_path / "client" / "server.pem"))
                for command in ("client register -client myclient -hostname myclient",
                                "client assignPartition -client myclient -partition app1"):
                    result = await conn.run(command)
                    assert result.exit_status == 0, result.stdout
            assert (tmp_path / "client" / "server.pem").read_text() == \
                appliance.core.clients.server_certificate().certificate_pem

            def use_ntls():
                with NtlsClient.connect(appliance.config.address, appliance.ntls_port, certificate=cert,
                                        private_key=key, server_certificate=tmp_path / "client" / "server.pem",
                                        timeout=GUARD_SECONDS) as client:
                    return [p.name for p in client.list_partitions()], appliance.ntls.connection_count()

            names, connections = await asyncio.to_thread(use_ntls)
            assert names == ["app1"] and connections == 1
            shown = await run_exec(appliance, ADMIN_PASSWORD, "ntls show")
            assert f'IP Address: "127.0.0.1" (TCP port {appliance.ntls_port})' in shown.stdout
            assert "Status: running" in shown.stdout

    guarded(scenario())


def test_provider_reset_cuts_ntls_and_forgets_clients_and_certificates(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            core = appliance.core
            cert, key = make_client_certificate(tmp_path / "client", "c1")

            def tenant_setup():  # LunaSH in a thread: this one runs the appliance's event loop
                session = initialized(core)
                ok(session, "partition create -partition app1")
                core.files.put("c1.pem", cert.read_bytes())
                ok(session, "client register -client c1 -hostname c1")
                ok(session, "client assignPartition -client c1 -partition app1")

            await asyncio.to_thread(tenant_setup)
            pem = tmp_path / "client" / "server.pem"
            pem.write_text(core.clients.server_certificate().certificate_pem)
            client = await asyncio.to_thread(
                NtlsClient.connect, "127.0.0.1", appliance.ntls_port, certificate=cert, private_key=key,
                server_certificate=pem, timeout=GUARD_SECONDS)
            try:
                async with management(appliance) as provider:
                    findings = (await provider.get("/provider/pristine")).json()["findings"]
                    assert "1 NTLS connection(s) open" in findings
                    assert "1 registered client certificate present" in findings
                    reset = (await provider.post("/provider/reset")).json()
                assert reset["pristine"] is True, reset
                with pytest.raises(Exception):
                    await asyncio.to_thread(client.list_partitions)
            finally:
                client.close()
            assert core.clients.list() == [] and core.files.uploaded_names() == []
            assert core.clients.server_certificate().certificate_pem != pem.read_text()
            assert appliance.ntls.running

    guarded(scenario())
