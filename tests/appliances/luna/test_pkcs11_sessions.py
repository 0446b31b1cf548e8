"""Sessions, logins and applications over NTLS: states, codes, sharing, concurrency, drops."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from luna_helpers import CO_PIN, CU_PIN, PO_PIN
from ntls_harness import RO, RW, Harness

from hsmcloud.appliances.luna.core.roles import Role
from hsmcloud.clients.luna.ntls_client import Pkcs11Error
from hsmcloud.protocols.ntls import messages
from hsmcloud.protocols.ntls.opcodes import Op
from hsmcloud.protocols.ntls.wire import ConnectionClosed, Writer, read_frame
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import NativeLayout

P256 = bytes.fromhex("06082a8648ce3d030107")


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


@pytest.fixture
def ntls(harness):
    with harness.connect() as client:
        yield client


def rv(call, *args, **kwargs) -> int:
    with pytest.raises(Pkcs11Error) as error:
        call(*args, **kwargs)
    return error.value.rv


def test_session_states_follow_the_login(harness, ntls):
    rw = ntls.open_session(harness.serial, RW)
    ro = ntls.open_session(harness.serial, RO)
    assert ntls.get_session_info(rw) == (c.CKS_RW_PUBLIC_SESSION, RW, 0)
    assert ntls.get_session_info(ro) == (c.CKS_RO_PUBLIC_SESSION, RO, 0)
    ntls.login(ro, c.CKU_USER, CO_PIN.encode())  # a login applies to all the sessions
    assert ntls.get_session_info(rw)[0] == c.CKS_RW_USER_FUNCTIONS
    assert ntls.get_session_info(ro)[0] == c.CKS_RO_USER_FUNCTIONS
    assert rv(ntls.login, rw, c.CKU_USER, CO_PIN.encode()) == c.CKR_USER_ALREADY_LOGGED_IN
    assert rv(ntls.login, rw, c.CKU_CRYPTO_USER, CU_PIN.encode()) == \
        c.CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    ntls.logout(rw)
    assert ntls.get_session_info(ro)[0] == c.CKS_RO_PUBLIC_SESSION
    assert rv(ntls.logout, rw) == c.CKR_USER_NOT_LOGGED_IN
    # the SO logs in only without read-only sessions, and then none can be opened
    assert rv(ntls.login, rw, c.CKU_SO, PO_PIN.encode()) == c.CKR_SESSION_READ_ONLY_EXISTS
    ntls.close_session(ro)
    ntls.login(rw, c.CKU_SO, PO_PIN.encode())
    assert ntls.get_session_info(rw)[0] == c.CKS_RW_SO_FUNCTIONS
    assert rv(ntls.open_session, harness.serial, RO) == c.CKR_SESSION_READ_WRITE_SO_EXISTS


def test_login_errors(harness, ntls):
    s = ntls.open_session(harness.serial, RW)
    assert rv(ntls.login, s, c.CKU_USER, b"wrong-pin-1") == c.CKR_PIN_INCORRECT
    assert rv(ntls.login, s, 7, b"x") == c.CKR_USER_TYPE_INVALID
    assert rv(ntls.login, s, c.CKU_USER, None) == c.CKR_ARGUMENTS_BAD
    assert rv(ntls.login, s, c.CKU_CONTEXT_SPECIFIC, b"x") == c.CKR_USER_NOT_LOGGED_IN
    assert harness.core.partitions.get(harness.serial).roles[Role.CRYPTO_OFFICER].failed_logins == 1
    ntls.login(s, c.CKU_USER, CO_PIN.encode())
    assert harness.core.partitions.get(harness.serial).roles[Role.CRYPTO_OFFICER].failed_logins == 0


def test_crypto_officer_lockout_over_pkcs11(harness, ntls):
    s = ntls.open_session(harness.serial, RW)
    codes = [rv(ntls.login, s, c.CKU_USER, b"wrong-pin-1") for _ in range(10)]
    assert codes == [c.CKR_PIN_INCORRECT] * 10
    assert rv(ntls.login, s, c.CKU_USER, CO_PIN.encode()) == c.CKR_PIN_LOCKED
    assert rv(ntls.login, s, c.CKU_CRYPTO_USER, CU_PIN.encode()) == c.CKR_PIN_LOCKED
    flags = ntls.get_token_info(harness.serial)["flags"]
    assert flags & c.CKF_USER_PIN_LOCKED


def test_partition_so_failures_zeroize_the_partition(harness, ntls):
    s = ntls.open_session(harness.serial, RW)
    codes = [rv(ntls.login, s, c.CKU_SO, b"wrong-pin-1") for _ in range(10)]
    assert codes[:9] == [c.CKR_PIN_INCORRECT] * 9
    assert codes[9] == c.CKR_SO_LOGIN_FAILURE_THRESHOLD
    assert rv(ntls.get_session_info, s) == c.CKR_SESSION_HANDLE_INVALID
    assert rv(ntls.open_session, harness.serial, RW) == c.CKR_TOKEN_NOT_RECOGNIZED
    assert not ntls.get_token_info(harness.serial)["flags"] & c.CKF_TOKEN_INITIALIZED


def test_session_and_slot_errors(harness, ntls):
    assert rv(ntls.open_session, harness.serial, c.CKF_RW_SESSION) == \
        c.CKR_SESSION_PARALLEL_NOT_SUPPORTED
    assert rv(ntls.open_session, "999999999999", RW) == c.CKR_SLOT_ID_INVALID
    assert rv(ntls.get_session_info, 12345) == c.CKR_SESSION_HANDLE_INVALID
    assert rv(ntls.close_session, 12345) == c.CKR_SESSION_HANDLE_INVALID
    s = harness.session(ntls)
    assert rv(ntls.sign, s, b"x") == c.CKR_OPERATION_NOT_INITIALIZED
    assert rv(ntls.encrypt_final, s) == c.CKR_OPERATION_NOT_INITIALIZED
    assert rv(ntls.verify, s, b"x", b"y") == c.CKR_OPERATION_NOT_INITIALIZED
    assert rv(ntls.digest_update, s, b"x") == c.CKR_OPERATION_NOT_INITIALIZED


def test_one_operation_per_kind_and_buffer_rules(harness, ntls):
    s = harness.session(ntls)
    pub, priv = ntls.generate_key_pair(s, c.CKM_EC_KEY_PAIR_GEN, [(c.CKA_EC_PARAMS, P256)], [])
    ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)
    assert rv(ntls.sign_init, s, c.CKM_ECDSA_SHA256, priv) == c.CKR_OPERATION_ACTIVE
    ntls.verify_init(s, c.CKM_ECDSA_SHA256, pub)  # another kind is fine
    # size query, then a too-small buffer, then the real call: one signature, computed once
    assert ntls.sign(s, b"message", capacity=None) == 64
    assert rv(ntls.sign, s, b"message", capacity=10) == c.CKR_BUFFER_TOO_SMALL
    first = ntls.sign(s, b"message", capacity=64)
    assert rv(ntls.sign, s, b"message") == c.CKR_OPERATION_NOT_INITIALIZED  # it ended
    ntls.verify(s, b"message", first)
    # ECDSA is randomized: had the signature been computed twice, a fresh one would differ
    ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)
    assert ntls.sign(s, b"message", capacity=None) == 64
    kept = ntls.sign(s, b"message", capacity=64)
    assert kept != first
    point = ntls.get_attributes(s, pub, c.CKA_EC_POINT)[c.CKA_EC_POINT][2:]
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    public.verify(utils.encode_dss_signature(int.from_bytes(kept[:32], "big"),
                                             int.from_bytes(kept[32:], "big")),
                  b"message", ec.ECDSA(hashes.SHA256()))
    # an error ends the operation
    ntls.verify_init(s, c.CKM_ECDSA_SHA256, pub)
    assert rv(ntls.verify, s, b"message", b"short") == c.CKR_SIGNATURE_LEN_RANGE
    assert rv(ntls.verify, s, b"message", first) == c.CKR_OPERATION_NOT_INITIALIZED


def test_multi_part_sign_equals_single_part(harness, ntls):
    s = harness.session(ntls)
    pub, priv = ntls.generate_key_pair(s, c.CKM_RSA_PKCS_KEY_PAIR_GEN, [(c.CKA_MODULUS_BITS, 2048)], [])
    ntls.sign_init(s, c.CKM_SHA256_RSA_PKCS, priv)
    one = ntls.sign(s, b"part one, part two")
    ntls.sign_init(s, c.CKM_SHA256_RSA_PKCS, priv)
    ntls.sign_update(s, b"part one, ")
    ntls.sign_update(s, b"part two")
    assert ntls.sign_final(s) == one
    ntls.verify_init(s, c.CKM_SHA256_RSA_PKCS, pub)
    ntls.verify_update(s, b"part one, part ")
    ntls.verify_update(s, b"two")
    ntls.verify_final(s, one)


def test_connections_of_one_application_share_sessions_and_logins(harness):
    first = harness.connect()
    second = harness.connect(application_id=first.application_id)
    try:
        s = harness.session(first)
        assert second.get_session_info(s)[0] == c.CKS_RW_USER_FUNCTIONS
        key = second.generate_key(s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16)])
        assert first.get_object_size(s, key) > 0
        first.close()
        # the application lives on while one connection remains
        assert second.get_session_info(s)[0] == c.CKS_RW_USER_FUNCTIONS
    finally:
        second.close()
    with harness.connect(application_id=first.application_id) as again:
        # the last connection closed: the application's sessions and logins are gone
        assert rv(again.get_session_info, s) == c.CKR_SESSION_HANDLE_INVALID


def test_a_different_application_has_its_own_login(harness):
    with harness.connect() as a, harness.connect() as b:
        harness.session(a)
        extra = a.open_session(harness.serial, RW)
        sb = b.open_session(harness.serial, RW)
        assert a.get_session_info(extra)[0] == c.CKS_RW_USER_FUNCTIONS
        assert b.get_session_info(sb)[0] == c.CKS_RW_PUBLIC_SESSION
        assert rv(b.get_session_info, extra) == c.CKR_SESSION_HANDLE_INVALID  # not b's handle


def test_finalize_closes_the_applications_sessions(harness, ntls):
    s = harness.session(ntls)
    ntls.finalize()
    assert rv(ntls.get_session_info, s) == c.CKR_SESSION_HANDLE_INVALID


def test_reinitialized_partition_ends_sessions(harness, ntls):
    s = harness.session(ntls)
    key = ntls.generate_key(s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16), (c.CKA_TOKEN, True)])
    harness.core.partitions.init(harness.serial, so_pin=PO_PIN, label="again")
    assert rv(ntls.get_session_info, s) == c.CKR_SESSION_HANDLE_INVALID
    assert harness.core.keystore.count(harness.serial) == 0
    assert key  # the handle meant something before


def test_init_token_and_init_pin_over_pkcs11(harness, ntls):
    s = harness.session(ntls)
    assert rv(ntls.init_token, harness.serial, PO_PIN.encode(), "fresh") == c.CKR_SESSION_EXISTS
    ntls.close_session(s)
    assert rv(ntls.init_token, harness.serial, b"wrong-pin-1", "fresh") == c.CKR_PIN_INCORRECT
    ntls.init_token(harness.serial, PO_PIN.encode(), "fresh")
    info = ntls.get_token_info(harness.serial)
    assert info["label"] == b"fresh".ljust(32)
    assert not info["flags"] & c.CKF_USER_PIN_INITIALIZED
    so = ntls.open_session(harness.serial, RW)
    ntls.login(so, c.CKU_SO, PO_PIN.encode())
    ntls.init_pin(so, b"new-co-pin-1")
    info = ntls.get_token_info(harness.serial)
    # policy 21 is back at its default (1) after the re-initialization
    assert info["flags"] & c.CKF_USER_PIN_INITIALIZED and info["flags"] & c.CKF_USER_PIN_TO_BE_CHANGED
    # HSM policy 15 is 0: the PO cannot reset the CO it already initialized
    assert rv(ntls.init_pin, so, b"other-co-pin") == c.CKR_ACTION_PROHIBITED
    ntls.logout(so)
    ntls.login(so, c.CKU_USER, b"new-co-pin-1")
    assert rv(ntls.generate_key, so, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16)]) == c.CKR_PIN_EXPIRED
    assert rv(ntls.set_pin, so, b"new-co-pin-1", b"short") == c.CKR_PIN_LEN_RANGE
    ntls.set_pin(so, b"new-co-pin-1", b"changed-co-pin")
    ntls.generate_key(so, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16)])
    assert not ntls.get_token_info(harness.serial)["flags"] & c.CKF_USER_PIN_TO_BE_CHANGED
    assert rv(ntls.init_pin, so, b"x" * 10) == c.CKR_USER_NOT_LOGGED_IN


def test_revoked_assignment_answers_slot_id_invalid(tmp_path):
    harness = Harness(tmp_path, partitions=("app1", "app2"))
    try:
        with harness.connect() as ntls:
            s = harness.session(ntls)
            other = ntls.open_session(harness.serials[1], RW)
            harness.core.clients.revoke("client1", harness.serial)
            assert rv(ntls.get_session_info, s) == c.CKR_SLOT_ID_INVALID
            assert rv(ntls.open_session, harness.serial, RW) == c.CKR_SLOT_ID_INVALID
            assert [p.serial for p in ntls.list_partitions()] == [harness.serials[1]]
            assert ntls.get_session_info(other)[0] == c.CKS_RW_PUBLIC_SESSION
    finally:
        harness.close()


def test_hello_must_come_first_and_unknown_opcodes(harness):
    with harness.connect() as ntls:
        reply = ntls.send_raw(Writer().u16(0x0999).payload())
        assert messages.Reader(reply).u32() == c.CKR_FUNCTION_NOT_SUPPORTED
        assert ntls.list_partitions()  # the connection goes on
        # a payload that does not decode: CKR_ARGUMENTS_BAD, then the server closes
        reply = ntls.send_raw(Writer().u16(Op.LOGIN).u8(1).payload())
        assert messages.Reader(reply).u32() == c.CKR_ARGUMENTS_BAD
        with pytest.raises((ConnectionClosed, OSError)):
            ntls.list_partitions()


def test_client_in_4_byte_big_endian_layout(harness):
    with harness.connect(layout=NativeLayout(4, "big")) as ntls:
        s = harness.session(ntls)
        key = ntls.generate_key(s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 24)])
        assert ntls.get_attributes(s, key, c.CKA_VALUE_LEN, c.CKA_KEY_GEN_MECHANISM) == \
            {c.CKA_VALUE_LEN: 24, c.CKA_KEY_GEN_MECHANISM: c.CKM_AES_KEY_GEN}
        (result,) = ntls.get_attribute_value(s, key, [(c.CKA_VALUE_LEN, 4)])
        assert result.value == (24).to_bytes(4, "big")
        assert key >= 0x80000000 and key <= 0xFFFFFFFF


def test_connection_dropped_mid_operation(harness):
    client = harness.connect()
    s = harness.session(client)
    pub, priv = client.generate_key_pair(s, c.CKM_EC_KEY_PAIR_GEN, [(c.CKA_EC_PARAMS, P256),
                                                                   (c.CKA_TOKEN, True)],
                                         [(c.CKA_TOKEN, True)])
    client.sign_init(s, c.CKM_ECDSA_SHA256, priv)
    client.sign_update(s, b"half")
    # send half a frame and vanish
    payload = messages.encode_request(Op.SIGN_UPDATE, (s, b"rest"), client.layout)
    client._sock.sendall(len(payload).to_bytes(4, "big") + payload[:5])
    client._sock.shutdown(socket.SHUT_RDWR)
    client.close()
    with harness.connect(application_id=client.application_id) as again:
        assert rv(again.get_session_info, s) == c.CKR_SESSION_HANDLE_INVALID
        fresh = harness.session(again)
        again.sign_init(fresh, c.CKM_ECDSA_SHA256, priv)  # the token key outlives the drop
        assert again.get_session_info(fresh)[0] == c.CKS_RW_USER_FUNCTIONS


def test_sixteen_threads_signing_and_generating_on_one_application(harness):
    first = harness.connect()
    clients = [first] + [harness.connect(application_id=first.application_id) for _ in range(15)]
    try:
        s0 = harness.session(first)
        pub, priv = first.generate_key_pair(s0, c.CKM_RSA_PKCS_KEY_PAIR_GEN,
                                            [(c.CKA_MODULUS_BITS, 2048), (c.CKA_TOKEN, True)],
                                            [(c.CKA_TOKEN, True)])
        errors: list[BaseException] = []
        made: list[int] = []
        lock = threading.Lock()

        def work(client, index):
            try:
                session = client.open_session(harness.serial, RW)  # shares the login
                for round_ in range(6):
                    data = os.urandom(32)
                    client.sign_init(session, c.CKM_SHA256_RSA_PKCS, priv)
                    signature = client.sign(session, data)
                    client.verify_init(session, c.CKM_SHA256_RSA_PKCS, pub)
                    client.verify(session, data, signature)
                    if round_ % 3 == 0:
                        key = client.generate_key(session, c.CKM_AES_KEY_GEN,
                                                  [(c.CKA_VALUE_LEN, 32), (c.CKA_TOKEN, True),
                                                   (c.CKA_ID, b"t%d" % index)])
                        with lock:
                            made.append(key)
                client.close_session(session)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(cl, i)) for i, cl in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors[:3]
        assert len(made) == 16 * 2 == len(set(made))
        assert harness.core.keystore.count(harness.serial) == 2 + 32
    finally:
        for client in clients:
            client.close()


def test_hello_with_no_supported_version(harness):
    with pytest.raises(Pkcs11Error) as error:
        harness.connect(version=0)
    assert error.value.rv == c.CKR_FUNCTION_NOT_SUPPORTED


def test_first_message_not_hello(harness):
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(harness.server_cert))
    context.load_cert_chain(str(harness.cert), str(harness.key))
    with socket.create_connection(("127.0.0.1", harness.port), timeout=20) as raw:
        with context.wrap_socket(raw) as sock:
            from hsmcloud.protocols.ntls.wire import write_frame
            write_frame(sock, Writer().u16(Op.LIST_PARTITIONS).payload())
            assert messages.Reader(read_frame(sock)).u32() == c.CKR_CRYPTOKI_NOT_INITIALIZED


def test_signing_with_a_token_key_reads_no_sqlite(harness, ntls):
    """The hot path works from memory: partition status, assignments, keystore, key objects."""
    s = harness.session(ntls)
    pub, priv = ntls.generate_key_pair(s, c.CKM_EC_KEY_PAIR_GEN, [(c.CKA_EC_PARAMS, P256),
                                                                  (c.CKA_TOKEN, True)],
                                       [(c.CKA_TOKEN, True)])
    ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)
    ntls.sign(s, b"warm up")
    statements: list[str] = []
    harness.core.state._db.set_trace_callback(statements.append)
    try:
        for _ in range(20):
            ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)
            assert len(ntls.sign(s, b"hot path")) == 64
    finally:
        harness.core.state._db.set_trace_callback(None)
    assert statements == []


def test_always_authenticate_keys_need_a_context_specific_login(harness, ntls):
    s = harness.session(ntls)
    assert rv(ntls.login, s, c.CKU_CONTEXT_SPECIFIC, CO_PIN.encode()) == \
        c.CKR_OPERATION_NOT_INITIALIZED
    pub, priv = ntls.generate_key_pair(s, c.CKM_EC_KEY_PAIR_GEN, [(c.CKA_EC_PARAMS, P256)],
                                       [(c.CKA_ALWAYS_AUTHENTICATE, True)])
    ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)
    assert rv(ntls.sign, s, b"data") == c.CKR_USER_NOT_LOGGED_IN  # and the operation ended
    ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)
    assert rv(ntls.login, s, c.CKU_CONTEXT_SPECIFIC, b"wrong-pin-1") == c.CKR_PIN_INCORRECT
    ntls.login(s, c.CKU_CONTEXT_SPECIFIC, CO_PIN.encode())
    signature = ntls.sign(s, b"data")
    ntls.verify_init(s, c.CKM_ECDSA_SHA256, pub)  # public-key use needs no PIN
    ntls.verify(s, b"data", signature)
    ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)  # each use needs it again
    assert rv(ntls.sign, s, b"data") == c.CKR_USER_NOT_LOGGED_IN


def test_init_with_a_null_mechanism_cancels_the_operation(harness, ntls):
    """PKCS#11 3.0: C_SignInit(NULL) ends the active operation (NTLS: mechanism type all ones)."""
    s = harness.session(ntls)
    key = ntls.generate_key(s, c.CKM_GENERIC_SECRET_KEY_GEN, [(c.CKA_VALUE_LEN, 32)])
    ntls.sign_init(s, c.CKM_SHA256_HMAC, key)
    ntls.sign_update(s, b"half")
    ntls.sign_init(s, c.CK_UNAVAILABLE_INFORMATION, key)
    assert rv(ntls.sign_final, s) == c.CKR_OPERATION_NOT_INITIALIZED
    ntls.digest_init(s, c.CKM_SHA256)
    ntls.digest_init(s, c.CK_UNAVAILABLE_INFORMATION)
    ntls.digest_init(s, c.CKM_SHA256)  # no longer active
