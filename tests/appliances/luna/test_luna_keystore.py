"""The keystore: objects persist, secrets are encrypted at rest, destruction is real, crashes lose nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from luna_helpers import (
    ADMIN_PASSWORD,
    CO_PIN,
    FACTORY_PASSWORD,
    GUARD_SECONDS,
    PO_PIN,
    SERIAL,
    SO_PASSWORD,
    TOKEN,
    ShellSession,
    connect_to,
    initialized,
    make_client_certificate,
    ok,
    partition_ready,
    run_line,
)

from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
from hsmcloud.appliances.luna.core.errors import (
    ObjectChanged,
    ObjectNotFound,
    PartitionChanged,
    PartitionNotFound,
    PartitionNotInitialized,
    StateError,
)
from hsmcloud.appliances.luna.core.passwords import verify_password
from hsmcloud.appliances.luna.core.roles import Role
from hsmcloud.appliances.luna.core.sealing import DEVICE_KEY_FILE
from hsmcloud.clients.luna.ntls_client import NtlsClient
from hsmcloud.protocols.pkcs11 import constants as c


def _officer(core, serial):
    return core.partitions.login(serial, Role.CRYPTO_OFFICER, CO_PIN)


def _private_key_der() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _state_bytes(state_dir) -> bytes:
    """Every byte the appliance keeps on disk."""
    return b"".join(p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file())


def _forms(secret: bytes) -> list[bytes]:
    """The secret and the encodings it could hide in (a prefix is enough for a leak)."""
    return [secret[:24], secret[:24].hex().encode(), base64.b64encode(secret[:24])[:24]]


def test_objects_persist_with_their_attributes_and_secrets(tmp_path):
    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    serial = partition_ready(core).serial
    grant = _officer(core, serial)
    template = {0: 4, 3: b"my-key", 0x100: 0x1F, 0x162: True, 0x600: [0x1081, 0x1087],
                0x40000211: {0x104: True, 0x105: False}, 0x11: "text"}
    created = core.keystore.create(serial, generation=grant.generation, attributes=template,
                                   secret=b"\x01" * 32)
    public = core.keystore.create(serial, generation=grant.generation, attributes={0: 2, 3: b"pub"})
    core.close()

    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    try:
        again = core.keystore.get(serial, created.handle)
        assert dict(again.attributes) == template and again.secret == b"\x01" * 32
        assert core.keystore.get(serial, public.handle).secret is None
        assert [o.handle for o in core.keystore.objects(serial)] == [created.handle, public.handle]
        assert 1 <= created.handle < public.handle <= 0x7FFFFFFF
    finally:
        core.close()


def test_secrets_never_appear_in_listings(core):
    serial = partition_ready(core).serial
    record = core.keystore.create(serial, generation=_officer(core, serial).generation,
                                  attributes={3: b"k"}, secret=b"top-secret-value")
    assert "top-secret-value" not in repr(record)
    assert "top-secret-value" not in repr(core.keystore.objects(serial))


def test_objects_are_refused_before_hsm_and_partition_initialization(core):
    session = initialized(core)
    ok(session, "partition create -partition raw")
    serial = core.partitions.by_name("raw").serial
    with pytest.raises(PartitionNotInitialized):
        core.keystore.create(serial, generation=0, attributes={3: b"x"}, secret=b"y")
    ok(session, "hsm zeroize -force")
    with pytest.raises(PartitionNotFound):
        core.keystore.create(serial, generation=0, attributes={3: b"x"}, secret=b"y")
    assert core.state.object_count() == 0


def test_secrets_are_encrypted_at_rest(tmp_path):
    state_dir = tmp_path / "a"
    core = ApplianceCore.open(state_dir, SERIAL)
    serial = partition_ready(core).serial
    grant = _officer(core, serial)
    aes_key = os.urandom(32)
    private_der = _private_key_der()
    core.keystore.create(serial, generation=grant.generation, attributes={3: b"aes"}, secret=aes_key)
    core.keystore.create(serial, generation=grant.generation, attributes={3: b"rsa"}, secret=private_der)
    raw = _state_bytes(state_dir)  # with the write-ahead log still present
    core.close()
    raw += _state_bytes(state_dir)
    assert b"aes".hex().encode() in raw  # the non-sensitive attributes are readable: the right files
    for secret in (aes_key, private_der[40:]):
        for form in _forms(secret):
            assert form not in raw
    assert stat.S_IMODE((state_dir / DEVICE_KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir / "appliance.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_a_modified_or_moved_sealed_value_does_not_open(tmp_path):
    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    serial = partition_ready(core).serial
    grant = _officer(core, serial)
    one = core.keystore.create(serial, generation=grant.generation, attributes={3: b"1"}, secret=b"a" * 32)
    two = core.keystore.create(serial, generation=grant.generation, attributes={3: b"2"}, secret=b"b" * 32)
    core.close()
    db = sqlite3.connect(tmp_path / "a" / "appliance.sqlite3")
    with db:  # swap the two sealed values: each is bound to its own handle
        blobs = dict(db.execute("SELECT handle, secret_sealed FROM keystore_objects"))
        db.execute("UPDATE keystore_objects SET secret_sealed = ? WHERE handle = ?", (blobs[two.handle], one.handle))
    db.close()
    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    try:
        with pytest.raises(StateError):
            core.keystore.objects(serial)
    finally:
        core.close()


def test_update_and_destroy(core):
    serial = partition_ready(core).serial
    record = core.keystore.create(serial, generation=_officer(core, serial).generation,
                                  attributes={3: b"old"}, secret=b"s" * 16)
    updated = core.keystore.update(serial, record.handle, {3: b"new"}, expected_version=1)
    assert updated.version == 2 and updated.secret == b"s" * 16
    with pytest.raises(ObjectChanged):
        core.keystore.update(serial, record.handle, {3: b"other"}, expected_version=1)
    core.keystore.destroy(serial, record.handle)
    with pytest.raises(ObjectNotFound):
        core.keystore.get(serial, record.handle)
    assert core.state.object_count() == 0


def test_a_reinitialized_partition_has_a_new_key_and_no_objects(core):
    serial = partition_ready(core).serial
    grant = _officer(core, serial)
    core.keystore.create(serial, generation=grant.generation, attributes={3: b"k"}, secret=b"v" * 16)
    key_before = core.partitions.get(serial).key_id
    core.partitions.init(serial, so_pin="po-pin-0001", label="again")
    assert core.partitions.get(serial).key_id != key_before
    assert core.keystore.objects(serial) == []
    with pytest.raises(PartitionChanged):  # a create under the old login
        core.keystore.create(serial, generation=grant.generation, attributes={3: b"k"}, secret=b"v")


@pytest.mark.parametrize("zeroize", [
    ["hsm zeroize -force"],
    ["hsm login -password wrong-pass-1"] * 3,
    ["hsm init -label again -force"],
    ["hsm changePolicy -policy 12 -value 0 -force"],
    ["partition changePolicy -partition app1 -policy 1 -value 1 -psopin po-pin-0001 -force"],
    ["partition changePolicy -partition app1 -policy 20 -value 5 -psopin wrong-pin-01"] * 10,
    ["partition delete -partition app1 -force"],
], ids=["hsm-zeroize", "three-bad-so-logins", "soft-init", "destructive-hsm-policy",
        "destructive-partition-policy", "ten-bad-po-logins", "partition-delete"])
def test_destroyed_keys_leave_no_sealed_bytes_in_the_files(tmp_path, zeroize):
    state_dir = tmp_path / "a"
    core = ApplianceCore.open(state_dir, SERIAL)
    session = initialized(core)
    serial = partition_ready(core, session=session).serial
    core.keystore.create(serial, generation=_officer(core, serial).generation, attributes={3: b"k"},
                         secret=os.urandom(32))
    sealed = core.state.query("SELECT secret_sealed FROM keystore_objects")[0][0]
    partition_key = core.state.query("SELECT key_sealed FROM partition_state")[0][0]
    assert sealed[12:40] in _state_bytes(state_dir)  # what the check looks for is there before
    for line in zeroize:
        run_line(session, line)
    assert core.state.object_count() == 0
    key_kept = bool(core.state.query("SELECT 1 FROM partition_state WHERE key_sealed = ?", (partition_key,)))
    raw = _state_bytes(state_dir)  # the appliance still running
    core.close()
    raw += _state_bytes(state_dir)
    assert sealed[12:40] not in raw
    assert key_kept or partition_key[12:40] not in raw  # a policy change keeps the partition's key


def test_provider_reset_replaces_the_device_key_and_leaves_the_device_pristine(tmp_path):
    state_dir = tmp_path / "a"
    core = ApplianceCore.open(state_dir, SERIAL)
    session = initialized(core)
    serial = partition_ready(core, session=session).serial
    core.keystore.create(serial, generation=_officer(core, serial).generation, attributes={3: b"k"},
                         secret=os.urandom(32))
    ok(session, "audit init -password aud1t-passw0rd -domain d")
    ok(session, "hsm changePolicy -policy 16 -value 0")
    core.files.put("client.pem", b"-----BEGIN CERTIFICATE-----\n")
    server_before = core.clients.server_certificate().fingerprint
    ok(session, "hsm zeroize -force")
    findings = core.tenant_state_findings()
    assert any("device key has sealed tenant partition keys" in f for f in findings)
    assert any("Audit role" in f for f in findings) and any("uploaded file" in f for f in findings)
    assert any("HSM policy" in f for f in findings)

    old_key = (state_dir / DEVICE_KEY_FILE).read_bytes()
    core.factory_reset()
    assert core.tenant_state_findings() == []
    assert (state_dir / DEVICE_KEY_FILE).read_bytes() != old_key
    assert core.clients.server_certificate().fingerprint != server_before
    assert core.hsm.policy(16) == 1 and not core.hsm.auditor().initialized
    core.close()
    assert old_key not in _state_bytes(state_dir)
    reopened = ApplianceCore.open(state_dir, SERIAL)  # the state opens with the new key
    try:
        assert reopened.tenant_state_findings() == []
    finally:
        reopened.close()


def test_a_missing_device_key_file_is_refused_clearly(tmp_path):
    core = ApplianceCore.open(tmp_path / "a", SERIAL)
    partition_ready(core)
    core.close()
    (tmp_path / "a" / DEVICE_KEY_FILE).unlink()
    with pytest.raises(StateError, match="device key file .* is missing"):
        ApplianceCore.open(tmp_path / "a", SERIAL)


_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE device (id INTEGER PRIMARY KEY CHECK (id = 1), serial TEXT NOT NULL,
    ssh_host_key TEXT NOT NULL, admin_password_hash TEXT, admin_must_change INTEGER NOT NULL,
    monitoring INTEGER NOT NULL, next_partition_number INTEGER NOT NULL);
CREATE TABLE hsm (id INTEGER PRIMARY KEY CHECK (id = 1), initialized INTEGER NOT NULL, label TEXT,
    domain_digest TEXT, so_password_hash TEXT, failed_so_logins INTEGER NOT NULL,
    generation INTEGER NOT NULL, initialized_at TEXT, zeroized_at TEXT);
CREATE TABLE partitions (serial TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at TEXT NOT NULL);
CREATE TABLE objects (id INTEGER PRIMARY KEY, partition_serial TEXT NOT NULL REFERENCES
    partitions(serial) ON DELETE CASCADE, label TEXT, object_class TEXT NOT NULL, data BLOB,
    created_at TEXT NOT NULL);
CREATE TABLE client_certificates (name TEXT PRIMARY KEY, hostname TEXT,
    certificate_pem TEXT NOT NULL, registered_at TEXT NOT NULL);
CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, line TEXT NOT NULL);
"""


def test_a_v1_state_opens_with_its_admin_password_hsm_and_partitions(tmp_path):
    """A state directory written by the previous release (schema 1) is migrated in place."""
    from hsmcloud.appliances.luna.core.passwords import domain_digest, hash_password
    from hsmcloud.appliances.luna.core.state import new_ssh_host_key

    state_dir = tmp_path / "a"
    state_dir.mkdir(mode=0o700)
    db = sqlite3.connect(state_dir / "appliance.sqlite3")
    db.executescript(_V1_SCHEMA)
    with db:
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute("INSERT INTO device VALUES (1, ?, ?, ?, 0, 1, 3)",
                   (SERIAL, new_ssh_host_key(), hash_password(ADMIN_PASSWORD)))
        db.execute("INSERT INTO hsm VALUES (1, 1, 'oldHSM', ?, ?, 1, 7, '2026-01-01T00:00:00+00:00', NULL)",
                   (domain_digest("dom"), hash_password("hsm-so-secret-1")))
        db.execute("INSERT INTO partitions VALUES (?, 'app1', '2026-01-01T00:00:00+00:00')", (f"{SERIAL}001",))
        db.execute("INSERT INTO partitions VALUES (?, 'app2', '2026-01-01T00:00:00+00:00')", (f"{SERIAL}002",))
        db.execute("INSERT INTO log (at, line) VALUES ('2026-01-01T00:00:00+00:00', 'old line')")
    db.close()

    core = ApplianceCore.open(state_dir, SERIAL)
    try:
        assert core.state.query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "3"
        tables = {r[0] for r in core.state.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "objects" not in tables and "client_certificates" not in tables
        assert verify_password(ADMIN_PASSWORD, core.state.device().admin_password_hash)
        hsm = core.state.hsm()
        assert hsm.initialized and hsm.label == "oldHSM" and hsm.generation == 7
        assert [p.name for p in core.partitions.list()] == ["app1", "app2"]
        assert not core.partitions.by_name("app1").initialized
        session = ShellSession(core)
        assert "old line" in ok(session, "syslog tail")
        ok(session, "hsm login -password hsm-so-secret-1")
        ok(session, "partition create -partition app3")
        assert core.partitions.by_name("app3").serial == f"{SERIAL}003"
        serial = core.partitions.by_name("app1").serial
        core.partitions.init(serial, so_pin="po-pin-0001", label="migrated")
        assert core.partitions.get(serial).initialized
    finally:
        core.close()


_CREATE_LOOP = textwrap.dedent("""
    import sys
    from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
    from hsmcloud.appliances.luna.core.roles import Role
    core = ApplianceCore.open(sys.argv[1], sys.argv[2])
    serial = sys.argv[3]
    grant = core.partitions.login(serial, Role.CRYPTO_OFFICER, sys.argv[4])
    i = 0
    while True:
        secret = i.to_bytes(4, "big") * 8
        record = core.keystore.create(serial, generation=grant.generation,
                                      attributes={3: f"key-{i}".encode()}, secret=secret)
        print(record.handle, i, flush=True)
        i += 1
""")


def test_a_crash_in_a_loop_of_creates_loses_no_acknowledged_object(tmp_path):
    state_dir = tmp_path / "a"
    core = ApplianceCore.open(state_dir, SERIAL)
    serial = partition_ready(core).serial
    core.close()
    process = subprocess.Popen(
        [sys.executable, "-c", _CREATE_LOOP, str(state_dir), SERIAL, serial, CO_PIN],
        stdout=subprocess.PIPE, text=True,
    )
    acknowledged = {}
    try:
        for line in process.stdout:
            handle, index = map(int, line.split())
            acknowledged[handle] = index
            if len(acknowledged) == 40:
                process.send_signal(signal.SIGKILL)  # in the middle of the next create
                break
    finally:
        process.kill()
        process.wait(timeout=GUARD_SECONDS)
    assert process.returncode == -signal.SIGKILL
    core = ApplianceCore.open(state_dir, SERIAL)
    try:
        stored = {o.handle: o for o in core.keystore.objects(serial)}
        for handle, index in acknowledged.items():
            assert stored[handle].secret == index.to_bytes(4, "big") * 8
            assert stored[handle].attributes[3] == f"key-{index}".encode()
        assert len(stored) in (len(acknowledged), len(acknowledged) + 1)  # at most the one in flight
        json.dumps(core.tenant_state_findings())
    finally:
        core.close()


def test_sigkill_of_a_standalone_appliance_during_creates_over_ntls_loses_no_key(tmp_path):
    """The real thing: an appliance process, an application creating keys over NTLS, SIGKILL."""
    state_dir = tmp_path / "appliance"
    process = subprocess.Popen(
        [sys.executable, "-m", "hsmcloud.appliances.luna", "--state-dir", str(state_dir),
         "--serial", SERIAL, "--address", "127.0.0.1", "--ssh-port", "0", "--ntls-port", "0",
         "--mgmt-port", "0", "--mgmt-token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        ports = json.loads(process.stdout.readline())
        cert, key = make_client_certificate(tmp_path / "client", "app")
        server_pem = tmp_path / "client" / "server.pem"

        async def tenant_setup():
            async with connect_to("127.0.0.1", ports["ssh_port"], FACTORY_PASSWORD) as conn:
                await conn.run(f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}",
                               check=True)
            async with connect_to("127.0.0.1", ports["ssh_port"], ADMIN_PASSWORD) as conn:
                for command in (f"hsm init -label crash -domain d -password {SO_PASSWORD}",
                                f"hsm login -password {SO_PASSWORD}", "partition create -partition app1"):
                    await conn.run(command, check=True)
                async with conn.start_sftp_client() as sftp:
                    await sftp.put(str(cert), "app.pem")
                    await sftp.get("server.pem", str(server_pem))
                for command in ("client register -client app -hostname app",
                                "client assignPartition -client app -partition app1"):
                    await conn.run(command, check=True)

        asyncio.run(asyncio.wait_for(tenant_setup(), GUARD_SECONDS * 3))
        client = NtlsClient.connect("127.0.0.1", ports["ntls_port"], certificate=cert, private_key=key,
                                    server_certificate=server_pem, timeout=GUARD_SECONDS)
        (partition,) = client.list_partitions()
        client.init_token(partition.serial, PO_PIN.encode(), "crash")
        session = client.open_session(partition.serial, c.CKF_SERIAL_SESSION | c.CKF_RW_SESSION)
        client.login(session, c.CKU_SO, PO_PIN.encode())
        client.init_pin(session, CO_PIN.encode())
        client.logout(session)
        client.login(session, c.CKU_USER, CO_PIN.encode())
        client.set_pin(session, CO_PIN.encode(), b"co-pin-0002")  # policy 21: change it first

        acknowledged: list[bytes] = []
        killed = threading.Event()

        def kill_after(count: int) -> None:
            while len(acknowledged) < count:
                time.sleep(0.001)
            process.send_signal(signal.SIGKILL)
            killed.set()

        threading.Thread(target=kill_after, args=(25,), daemon=True).start()
        with pytest.raises((OSError, EOFError, Exception)):
            for i in range(100_000):
                value = i.to_bytes(4, "big") * 8
                client.create_object(session, [
                    (c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_TOKEN, True),
                    (c.CKA_LABEL, f"key-{i}".encode()), (c.CKA_VALUE, value)])
                acknowledged.append(value)  # the appliance answered: the key is committed
        assert killed.wait(GUARD_SECONDS)
        client.close()
        process.wait(timeout=GUARD_SECONDS)
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    core = ApplianceCore.open(state_dir, SERIAL)
    try:
        stored = {o.secret for o in core.keystore.objects(partition.serial)}
        assert len(acknowledged) >= 25
        assert set(acknowledged) <= stored
        assert len(stored) <= len(acknowledged) + 1  # at most the create in flight
    finally:
        core.close()
