"""Cloning between two appliances over NTLS, object fingerprints, backup and restore.

Two real appliance cores, each behind its own NTLS listener on loopback; the test is the
client that mediates (as LunaCM and the HA library do).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from ntls_harness import Harness

from hsmcloud.appliances.luna.core.roles import Role
from hsmcloud.clients.luna.ntls_client import Pkcs11Error, clone_objects
from hsmcloud.protocols.pkcs11 import constants as c
from luna_helpers import CO_PIN, PO_PIN

SOURCE_SERIAL, TARGET_SERIAL, OTHER_SERIAL = "154700011", "154700012", "154700013"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("source"), serial=SOURCE_SERIAL)
    yield h
    h.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("target"), serial=TARGET_SERIAL)
    yield h
    h.close()


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    """An appliance whose partition is in another cloning domain."""
    h = Harness(tmp_path_factory.mktemp("stranger"), serial=OTHER_SERIAL, domain="otherDomain")
    yield h
    h.close()


@pytest.fixture(scope="module")
def src(source):
    with source.connect() as client:
        yield client, source.session(client)


@pytest.fixture(scope="module")
def dst(target):
    with target.connect() as client:
        yield client, target.session(client)


def rsa_token_pair(ntls, session, label: str) -> tuple[int, int]:
    return ntls.generate_key_pair(
        session, c.CKM_RSA_PKCS_KEY_PAIR_GEN,
        [(c.CKA_MODULUS_BITS, 2048), (c.CKA_TOKEN, True), (c.CKA_LABEL, label.encode())],
        [(c.CKA_TOKEN, True), (c.CKA_LABEL, label.encode()), (c.CKA_SIGN, True),
         (c.CKA_SENSITIVE, True), (c.CKA_EXTRACTABLE, False)])


def aes_token_key(ntls, session, label: str) -> int:
    return ntls.generate_key(session, c.CKM_AES_KEY_GEN,
                             [(c.CKA_VALUE_LEN, 32), (c.CKA_TOKEN, True),
                              (c.CKA_LABEL, label.encode()), (c.CKA_ENCRYPT, True),
                              (c.CKA_DECRYPT, True)])


def public_key(ntls, session, handle) -> rsa.RSAPublicKey:
    a = ntls.get_attributes(session, handle, c.CKA_MODULUS, c.CKA_PUBLIC_EXPONENT)
    return rsa.RSAPublicNumbers(int.from_bytes(a[c.CKA_PUBLIC_EXPONENT], "big"),
                                int.from_bytes(a[c.CKA_MODULUS], "big")).public_key()


def sign(ntls, session, key, data: bytes) -> bytes:
    ntls.sign_init(session, c.CKM_SHA256_RSA_PKCS, key)
    return ntls.sign(session, data)


def private_der(core, serial: str, handle: int) -> bytes:
    """The private key's PKCS#8 DER as the source appliance holds it (for the wire check)."""
    return core.keystore.get(serial, handle).secret


def find_label(ntls, session, label: str, cls: int) -> list[int]:
    return ntls.find_objects(session, [(c.CKA_LABEL, label.encode()), (c.CKA_CLASS, cls)])


def test_cloning_info_shows_domain_and_cloning_policies(source, target, stranger, src, dst):
    (a, _), (b, _) = src, dst
    info_a = a.get_cloning_info(source.serial)
    info_b = b.get_cloning_info(target.serial)
    with stranger.connect() as other:
        info_c = other.get_cloning_info(stranger.serial)
    assert info_a.initialized and len(info_a.domain_id) == 32
    assert info_a.domain_id == info_b.domain_id != info_c.domain_id
    assert (info_a.hsm_allow_cloning, info_a.private_key_cloning, info_a.secret_key_cloning) == (1, 1, 1)


def test_clone_between_appliances_signs_the_same_and_never_carries_the_key_in_clear(
        source, src, dst):
    (a, sa), (b, sb) = src, dst
    pub, priv = rsa_token_pair(a, sa, "clone-me")
    secret = aes_token_key(a, sa, "clone-aes")
    der = private_der(source.core, source.serial, priv)
    aes_value = source.core.keystore.get(source.serial, secret).secret

    offer = b.clone_offer(sb)
    blob = a.clone_export(sa, offer, [pub, priv, secret])
    assert der not in blob and der[-64:] not in blob and aes_value not in blob
    new = b.clone_import(sb, blob)
    assert len(new) == 3

    cloned_priv = find_label(b, sb, "clone-me", c.CKO_PRIVATE_KEY)
    assert cloned_priv == [new[1]]
    signature = sign(b, sb, new[1], b"signed on the target")
    public_key(a, sa, pub).verify(signature, b"signed on the target", padding.PKCS1v15(),
                                  hashes.SHA256())
    # the clone keeps its attributes: still sensitive, never extractable
    with pytest.raises(Pkcs11Error) as raised:
        b.get_attributes(sb, new[1], c.CKA_PRIVATE_EXPONENT)
    assert raised.value.rv == c.CKR_ATTRIBUTE_SENSITIVE
    # fingerprints match on both sides
    fa = {f.handle: f.fingerprint for f in a.list_object_fingerprints(sa)}
    fb = {f.handle: f.fingerprint for f in b.list_object_fingerprints(sb)}
    assert [fa[h] for h in (pub, priv, secret)] == [fb[h] for h in new]


def test_a_blob_imports_once(src, dst):
    (a, sa), (b, sb) = src, dst
    key = aes_token_key(a, sa, "replay")
    blob = a.clone_export(sa, b.clone_offer(sb), [key])
    b.clone_import(sb, blob)
    with pytest.raises(Pkcs11Error) as raised:
        b.clone_import(sb, blob)
    assert raised.value.rv == c.CKR_OPERATION_NOT_INITIALIZED
    assert len(find_label(b, sb, "replay", c.CKO_SECRET_KEY)) == 1


def test_another_cloning_domain_is_refused_both_ways(stranger, src):
    a, sa = src
    key = aes_token_key(a, sa, "not-for-strangers")
    with stranger.connect() as other:
        so = stranger.session(other)
        with pytest.raises(Pkcs11Error) as raised:
            a.clone_export(sa, other.clone_offer(so), [key])
        assert raised.value.rv == c.CKR_WRAPPED_KEY_INVALID
        # a stranger's blob does not open here either
        theirs = aes_token_key(other, so, "stranger-key")
        with pytest.raises(Pkcs11Error) as raised:
            other.clone_export(so, a.clone_offer(sa), [theirs])
        assert raised.value.rv == c.CKR_WRAPPED_KEY_INVALID
        assert find_label(other, so, "not-for-strangers", c.CKO_SECRET_KEY) == []


def test_tampered_blob_is_refused_and_stores_nothing(src, dst):
    (a, sa), (b, sb) = src, dst
    key = aes_token_key(a, sa, "tampered")
    blob = bytearray(a.clone_export(sa, b.clone_offer(sb), [key]))
    blob[-1] ^= 1
    with pytest.raises(Pkcs11Error) as raised:
        b.clone_import(sb, bytes(blob))
    assert raised.value.rv == c.CKR_WRAPPED_KEY_INVALID
    assert find_label(b, sb, "tampered", c.CKO_SECRET_KEY) == []
    with pytest.raises(Pkcs11Error) as raised:
        b.clone_import(sb, b"not a blob")
    assert raised.value.rv == c.CKR_DATA_INVALID


def test_cloning_needs_the_crypto_officer(source):
    for user in (c.CKU_CRYPTO_USER, c.CKU_SO, None):
        with source.connect() as client:
            session = source.session(client, user=user)
            for call in (lambda: client.list_object_fingerprints(session),
                         lambda: client.clone_offer(session),
                         lambda: client.backup(session)):
                with pytest.raises(Pkcs11Error) as raised:
                    call()
                assert raised.value.rv == c.CKR_USER_NOT_LOGGED_IN


def test_target_refuses_what_its_own_policies_forbid(target, src, dst):
    (a, sa), (b, sb) = src, dst
    key = aes_token_key(a, sa, "secret-policy")
    po = target.core.partitions.login(target.serial, Role.PARTITION_SO, PO_PIN)
    target.core.partitions.change_policy(target.serial, 4, 0, by=po)
    try:
        with pytest.raises(Pkcs11Error) as raised:
            b.clone_import(sb, a.clone_export(sa, b.clone_offer(sb), [key]))
        assert raised.value.rv == c.CKR_KEY_NOT_WRAPPABLE
        assert find_label(b, sb, "secret-policy", c.CKO_SECRET_KEY) == []
    finally:
        target.core.partitions.change_policy(target.serial, 4, 1, by=po)


def test_partition_cloning_policies_are_respected(source, target, src, dst):
    (a, sa), (b, sb) = src, dst
    pub, priv = rsa_token_pair(a, sa, "policy-pair")
    public_only = b.clone_import(sb, a.clone_export(sa, b.clone_offer(sb), [pub]))
    assert len(public_only) == 1  # public objects clone whatever the policies
    po = source.core.partitions.login(source.serial, Role.PARTITION_SO, PO_PIN)
    source.core.partitions.change_policy(source.serial, 0, 0, by=po)
    try:
        with pytest.raises(Pkcs11Error) as raised:
            a.clone_export(sa, b.clone_offer(sb), [priv])
        assert raised.value.rv == c.CKR_KEY_NOT_WRAPPABLE
        assert a.get_cloning_info(source.serial).private_key_cloning == 0
    finally:
        # turning cloning back on is destructive (the partition's objects go)
        source.core.partitions.change_policy(source.serial, 0, 1, by=po)


def test_hsm_policy_7_off_refuses_cloning(tmp_path):
    h = Harness(tmp_path / "no-cloning", serial="154700021")
    try:
        from luna_helpers import ok
        ok(h.shell, "hsm changePolicy -policy 7 -value 0 -force")
        ok(h.shell, "partition create -partition app2")
        serial = h.core.partitions.by_name("app2").serial
        h.prepare_partition(serial, label="app2")
        h.core.clients.assign("client1", serial)
        with h.connect() as client:
            session = client.open_session(serial)
            client.login(session, c.CKU_USER, CO_PIN.encode())
            info = client.get_cloning_info(serial)
            assert (info.hsm_allow_cloning, info.private_key_cloning) == (0, 0)
            key = aes_token_key(client, session, "stuck")
            with pytest.raises(Pkcs11Error) as raised:
                client.clone_offer(session)
            assert raised.value.rv == c.CKR_KEY_NOT_WRAPPABLE
            with pytest.raises(Pkcs11Error) as raised:
                client.backup(session)
            assert raised.value.rv == c.CKR_KEY_NOT_WRAPPABLE
            del key
    finally:
        h.close()


def test_clone_objects_helper_and_export_limits(src, dst):
    (a, sa), (b, sb) = src, dst
    key = aes_token_key(a, sa, "helper")
    assert len(clone_objects(a, sa, b, sb, [key])) == 1
    with pytest.raises(Pkcs11Error) as raised:
        a.clone_export(sa, b.clone_offer(sb), [])
    assert raised.value.rv == c.CKR_ARGUMENTS_BAD
    with pytest.raises(Pkcs11Error) as raised:
        a.clone_export(sa, b.clone_offer(sb), [0x7FFFFFF0])
    assert raised.value.rv == c.CKR_OBJECT_HANDLE_INVALID


def test_imported_objects_survive_a_restart(tmp_path, source, src):
    a, sa = src
    h = Harness(tmp_path / "restart", serial="154700031")
    try:
        pub, priv = rsa_token_pair(a, sa, "durable")
        with h.connect() as client:
            session = h.session(client)
            new = client.clone_import(session, a.clone_export(sa, client.clone_offer(session),
                                                               [pub, priv]))
    finally:
        h.close()
    reopened = type(h.core).open(tmp_path / "restart" / "appliance", "154700031")
    try:
        record = reopened.keystore.get(h.serial, new[1])
        assert record.secret == private_der(source.core, source.serial, priv)
        assert record.attributes[c.CKA_LABEL] in (b"durable", "durable")
    finally:
        reopened.close()


# -- backup and restore -----------------------------------------------------------------


def test_backup_then_hsm_zeroize_reinit_restore_recovers_signing_keys(tmp_path):
    h = Harness(tmp_path / "zeroize", serial="154700041")
    try:
        with h.connect() as client:
            session = h.session(client)
            pub, priv = rsa_token_pair(client, session, "app-signing")
            saved_public = public_key(client, session, pub).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            backup = client.backup(session)
        der = h.core.keystore.get(h.serial, priv).secret
        assert der not in backup
        from luna_helpers import SO_PASSWORD, ok
        # three wrong HSM SO passwords zeroize the HSM
        ok(h.shell, "hsm logout")
        for _ in range(3):
            from luna_helpers import run_line
            run_line(h.shell, "hsm login -password Wrong-pass-1")
        assert not h.core.state.hsm().initialized
        ok(h.shell, f"hsm init -label myHSM -domain myDomain -password {SO_PASSWORD} -force")
        ok(h.shell, f"hsm login -password {SO_PASSWORD}")
        ok(h.shell, "partition create -partition app1")
        serial = h.core.partitions.by_name("app1").serial
        h.prepare_partition(serial, label="app1-again")
        h.core.clients.assign("client1", serial)
        with h.connect() as client:
            session = client.open_session(serial)
            client.login(session, c.CKU_USER, CO_PIN.encode())
            assert client.restore(session, backup) == (2, 0)
            assert client.restore(session, backup) == (0, 2)  # idempotent
            (restored,) = find_label(client, session, "app-signing", c.CKO_PRIVATE_KEY)
            signature = sign(client, session, restored, b"after the zeroization")
        serialization.load_der_public_key(saved_public).verify(
            signature, b"after the zeroization", padding.PKCS1v15(), hashes.SHA256())
    finally:
        h.close()


def test_partition_so_zeroization_then_restore(tmp_path):
    h = Harness(tmp_path / "pso", serial="154700051")
    try:
        with h.connect() as client:
            session = h.session(client)
            key = aes_token_key(client, session, "pso-key")
            backup = client.backup(session)
        partitions = h.core.partitions
        for _ in range(10):
            with pytest.raises(Exception):
                partitions.login(h.serial, Role.PARTITION_SO, "wrong-po-pin")
        assert not partitions.get(h.serial).initialized
        h.prepare_partition(h.serial, label="app1-again")
        with h.connect() as client:
            session = h.session(client)
            assert client.restore(session, backup, replace=True) == (1, 0)
            (restored,) = find_label(client, session, "pso-key", c.CKO_SECRET_KEY)
            assert h.core.keystore.get(h.serial, restored).secret is not None
        del key
    finally:
        h.close()


def test_backup_of_another_domain_is_refused(tmp_path, src, stranger):
    a, sa = src
    aes_token_key(a, sa, "backup-domain")
    backup = a.backup(sa)
    with stranger.connect() as other:
        so = stranger.session(other)
        before = len(other.list_object_fingerprints(so))
        with pytest.raises(Pkcs11Error) as raised:
            other.restore(so, backup, replace=True)
        assert raised.value.rv == c.CKR_WRAPPED_KEY_INVALID
        assert len(other.list_object_fingerprints(so)) == before


# -- the appliance shell: backup into the file area, restore from it ---------------------


def test_lunash_backup_zeroize_reinit_restore_from_the_file_area(tmp_path):
    from luna_helpers import SO_PASSWORD, ok, run_line

    h = Harness(tmp_path / "lunash", serial="154700061")
    try:
        with h.connect() as client:
            session = h.session(client)
            pub, priv = rsa_token_pair(client, session, "shell-backup")
            saved = public_key(client, session, pub)
        der = h.core.keystore.get(h.serial, priv).secret
        code, text = run_line(h.shell, "partition backup -partition app1 -file app1.pem "
                                       f"-password {CO_PIN}")
        assert code != 0 and ".bak" in text
        code, text = run_line(h.shell, "partition backup -partition app1 -file app1.bak "
                                       "-password wrong-co-pin")
        assert code != 0 and not h.core.files.exists("app1.bak")
        assert h.core.partitions.get(h.serial).roles[Role.CRYPTO_OFFICER].failed_logins == 1
        text = ok(h.shell, f"partition backup -partition app1 -file app1.bak -password {CO_PIN}")
        assert "backed up to 'app1.bak'" in text
        data = h.core.files.get("app1.bak")
        assert der not in data
        code, text = run_line(h.shell, f"partition backup -partition app1 -file app1.bak "
                                       f"-password {CO_PIN}")
        assert code != 0 and "already has 'app1.bak'" in text

        ok(h.shell, "hsm zeroize -force")
        ok(h.shell, f"hsm init -label myHSM -domain myDomain -password {SO_PASSWORD} -force")
        ok(h.shell, f"hsm login -password {SO_PASSWORD}")
        ok(h.shell, "partition create -partition app1")
        serial = h.core.partitions.by_name("app1").serial
        h.prepare_partition(serial, label="app1-again")
        h.core.clients.assign("client1", serial)
        text = ok(h.shell, f"partition restore -partition app1 -file app1.bak -password {CO_PIN}")
        assert "2 object(s) restored" in text
        with h.connect() as client:
            session = client.open_session(serial)
            client.login(session, c.CKU_USER, CO_PIN.encode())
            (restored,) = find_label(client, session, "shell-backup", c.CKO_PRIVATE_KEY)
            signature = sign(client, session, restored, b"restored in the shell")
        saved.verify(signature, b"restored in the shell", padding.PKCS1v15(), hashes.SHA256())

        # a partition of another domain refuses the file, and keeps its objects
        ok(h.shell, "partition create -partition app2")
        other = h.core.partitions.by_name("app2").serial
        h.prepare_partition(other, label="app2", domain="elsewhere")
        code, text = run_line(h.shell, "partition restore -partition app2 -file app1.bak "
                                       f"-password {CO_PIN} -replace -force")
        assert code != 0 and "cloning domain" in text
        assert h.core.keystore.count(other) == 0
    finally:
        h.close()


def test_hsm_policy_16_off_refuses_cloning_with_another_appliance(tmp_path, src):
    from luna_helpers import ok

    a, sa = src
    h = Harness(tmp_path / "no-replication", serial="154700071")
    try:
        ok(h.shell, "hsm changePolicy -policy 16 -value 0")
        with h.connect() as client:
            session = h.session(client)
            key = aes_token_key(a, sa, "no-network")
            with pytest.raises(Pkcs11Error) as raised:
                client.clone_import(session, a.clone_export(sa, client.clone_offer(session), [key]))
            assert raised.value.rv == c.CKR_KEY_NOT_WRAPPABLE
            mine = aes_token_key(client, session, "stays-here")
            with pytest.raises(Pkcs11Error) as raised:
                client.clone_export(session, a.clone_offer(sa), [mine])
            assert raised.value.rv == c.CKR_KEY_NOT_WRAPPABLE
            assert client.get_cloning_info(h.serial).hsm_network_replication == 0
            # within the appliance, and to a file, cloning still works
            assert client.restore(session, client.backup(session)) == (0, 1)
    finally:
        h.close()


def test_an_import_that_fails_midway_stores_nothing_even_after_a_restart(tmp_path, monkeypatch, src):
    """The keystore writes a clone (or restore) in one transaction: a failure on its second
    object rolls the first back, in memory and on disk."""
    import hsmcloud.appliances.luna.core.keystore as keystore_module

    a, sa = src
    h = Harness(tmp_path / "atomic", serial="154700081")
    try:
        first, second = aes_token_key(a, sa, "atomic-1"), aes_token_key(a, sa, "atomic-2")
        real_seal, calls = keystore_module.seal, []

        def failing_seal(*args):
            calls.append(1)
            if len(calls) == 2:
                raise OSError("disk gone")
            return real_seal(*args)

        with h.connect() as client:
            session = h.session(client)
            blob = a.clone_export(sa, client.clone_offer(session), [first, second])
            monkeypatch.setattr(keystore_module, "seal", failing_seal)
            with pytest.raises(Pkcs11Error) as raised:
                client.clone_import(session, blob)
            assert raised.value.rv == c.CKR_GENERAL_ERROR
            monkeypatch.setattr(keystore_module, "seal", real_seal)
            assert client.list_object_fingerprints(session) == []
    finally:
        h.close()
    reopened = type(h.core).open(tmp_path / "atomic" / "appliance", "154700081")
    try:
        assert reopened.keystore.objects(h.serial) == []
    finally:
        reopened.close()


def test_the_domain_secret_is_kept_sealed_and_older_partitions_must_be_reinitialized(tmp_path):
    from hsmcloud.appliances.luna.core.passwords import domain_secret

    h = Harness(tmp_path / "sealed", serial="154700091")
    try:
        h.core.state.scrub()
        raw = b"".join(p.read_bytes() for p in (tmp_path / "sealed" / "appliance").iterdir()
                       if p.name.startswith("appliance.sqlite3"))
        assert domain_secret("myDomain") not in raw
        # a partition initialized before the secret was kept (state schema 2) has none
        with h.core.state.transaction() as db:
            db.execute("UPDATE partition_state SET domain_secret_sealed = NULL WHERE serial = ?",
                       (h.serial,))
        with h.connect() as client:
            session = h.session(client)
            with pytest.raises(Pkcs11Error) as raised:
                client.backup(session)
            assert raised.value.rv == c.CKR_KEY_NOT_WRAPPABLE
        h.prepare_partition(h.serial, label="again")
        with h.connect() as client:
            session = h.session(client)
            assert client.backup(session)
    finally:
        h.close()
