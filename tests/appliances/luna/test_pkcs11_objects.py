"""Objects over NTLS: templates, sensitive and extractable keys, visibility, roles, attributes."""

from __future__ import annotations

import os

import pytest
from ntls_harness import RO, RW, Harness

from hsmcloud.clients.luna.ntls_client import Pkcs11Error
from hsmcloud.protocols.ntls.messages import AttributeResult
from hsmcloud.protocols.pkcs11 import constants as c

UNAVAILABLE = c.CK_UNAVAILABLE_INFORMATION
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


def aes(ntls, session, **template):
    attrs = [(getattr(c, f"CKA_{k.upper()}"), v) for k, v in template.items()]
    return ntls.generate_key(session, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 32), *attrs])


def test_token_objects_persist_and_session_objects_do_not(harness, ntls):
    s = harness.session(ntls)
    token = aes(ntls, s, token=True, label=b"kept")
    temp = aes(ntls, s, label=b"temp")
    assert token < 0x80000000 <= temp
    ntls.close_session(s)
    s = harness.session(ntls)
    assert ntls.find_objects(s, [(c.CKA_LABEL, b"kept")]) == [token]
    assert ntls.find_objects(s, [(c.CKA_LABEL, b"temp")]) == []
    record = harness.core.keystore.get(harness.serial, token)
    # the keystore holds no sensitive value in the attributes; the key is the (sealed) secret
    assert c.CKA_VALUE not in record.attributes and len(record.secret) == 32


def test_sensitive_and_unextractable_values_never_leave(harness, ntls):
    s = harness.session(ntls)
    key = aes(ntls, s)
    results = rv(ntls.get_attribute_value, s, key, [(c.CKA_VALUE, None), (c.CKA_LABEL, None)])
    assert results == c.CKR_ATTRIBUTE_SENSITIVE
    with pytest.raises(Pkcs11Error) as error:
        ntls.get_attribute_value(s, key, [(c.CKA_VALUE, 64), (c.CKA_VALUE_LEN, 8)])
    value, length = error.value.fields[0]
    assert value == AttributeResult(UNAVAILABLE, None)
    assert length.value_length == 8  # the other attributes are still answered
    clear = aes(ntls, s, sensitive=False, extractable=False)
    assert rv(ntls.get_attribute_value, s, clear, [(c.CKA_VALUE, 64)]) == c.CKR_ATTRIBUTE_SENSITIVE
    readable = aes(ntls, s, sensitive=False)
    assert len(ntls.get_attributes(s, readable, c.CKA_VALUE)[c.CKA_VALUE]) == 32
    pub, priv = ntls.generate_key_pair(s, c.CKM_RSA_PKCS_KEY_PAIR_GEN, [(c.CKA_MODULUS_BITS, 2048)], [])
    for attribute in (c.CKA_PRIVATE_EXPONENT, c.CKA_PRIME_1, c.CKA_COEFFICIENT):
        assert rv(ntls.get_attribute_value, s, priv, [(attribute, None)]) == c.CKR_ATTRIBUTE_SENSITIVE
    assert ntls.get_attributes(s, priv, c.CKA_MODULUS)[c.CKA_MODULUS] == \
        ntls.get_attributes(s, pub, c.CKA_MODULUS)[c.CKA_MODULUS]


def test_sensitive_and_extractable_change_one_way_only(harness, ntls):
    s = harness.session(ntls)
    key = aes(ntls, s, sensitive=False, extractable=True)
    attrs = ntls.get_attributes(s, key, c.CKA_ALWAYS_SENSITIVE, c.CKA_NEVER_EXTRACTABLE)
    assert attrs == {c.CKA_ALWAYS_SENSITIVE: False, c.CKA_NEVER_EXTRACTABLE: False}
    ntls.set_attribute_value(s, key, [(c.CKA_SENSITIVE, True), (c.CKA_EXTRACTABLE, False)])
    assert rv(ntls.set_attribute_value, s, key, [(c.CKA_SENSITIVE, False)]) == c.CKR_ATTRIBUTE_READ_ONLY
    assert rv(ntls.set_attribute_value, s, key, [(c.CKA_EXTRACTABLE, True)]) == c.CKR_ATTRIBUTE_READ_ONLY
    # it was not always sensitive, and that stays so
    assert ntls.get_attributes(s, key, c.CKA_ALWAYS_SENSITIVE)[c.CKA_ALWAYS_SENSITIVE] is False
    generated = aes(ntls, s, extractable=False)
    assert ntls.get_attributes(s, generated, c.CKA_ALWAYS_SENSITIVE, c.CKA_NEVER_EXTRACTABLE) == \
        {c.CKA_ALWAYS_SENSITIVE: True, c.CKA_NEVER_EXTRACTABLE: True}


def test_only_extractable_keys_can_be_wrapped(harness, ntls):
    s = harness.session(ntls)
    kek = aes(ntls, s)
    locked = aes(ntls, s, extractable=False)
    assert rv(ntls.wrap_key, s, c.CKM_AES_KEY_WRAP, kek, locked) == c.CKR_KEY_UNEXTRACTABLE
    trusted_only = aes(ntls, s, wrap_with_trusted=True)
    assert rv(ntls.wrap_key, s, c.CKM_AES_KEY_WRAP, kek, trusted_only) == c.CKR_KEY_NOT_WRAPPABLE
    no_wrap = aes(ntls, s, wrap=False)
    target = aes(ntls, s)
    assert rv(ntls.wrap_key, s, c.CKM_AES_KEY_WRAP, no_wrap, target) == \
        c.CKR_KEY_FUNCTION_NOT_PERMITTED
    # size query first: the same bytes come back on the next call
    size = ntls.wrap_key(s, c.CKM_AES_KEY_WRAP, kek, target, capacity=None)
    assert size == 40
    assert rv(ntls.wrap_key, s, c.CKM_AES_KEY_WRAP, kek, target, capacity=10) == c.CKR_BUFFER_TOO_SMALL
    assert len(ntls.wrap_key(s, c.CKM_AES_KEY_WRAP, kek, target, capacity=40)) == 40


def test_trusted_wrapping_key_set_by_the_partition_so(harness, ntls):
    so = harness.session(ntls, user=c.CKU_SO)
    value = os.urandom(32)
    template = [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE, value),
                (c.CKA_TOKEN, True), (c.CKA_PRIVATE, False), (c.CKA_TRUSTED, True),
                (c.CKA_LABEL, b"trusted kek")]
    kek = ntls.create_object(so, template)
    ntls.close_session(so)
    s = harness.session(ntls)
    bad = [(t, v) for t, v in template if t != c.CKA_LABEL]
    assert rv(ntls.create_object, s, bad) == c.CKR_ATTRIBUTE_READ_ONLY  # not as the CO
    target = aes(ntls, s, wrap_with_trusted=True)
    assert len(ntls.wrap_key(s, c.CKM_AES_KEY_WRAP, kek, target)) == 40


def test_private_objects_are_hidden_before_login(harness, ntls):
    s = harness.session(ntls)
    private = aes(ntls, s, token=True, label=b"secret")
    public = ntls.create_object(s, [(c.CKA_CLASS, c.CKO_DATA), (c.CKA_TOKEN, True),
                                    (c.CKA_LABEL, b"note"), (c.CKA_VALUE, b"hello")])
    ntls.logout(s)
    assert ntls.find_objects(s, []) == [public]
    assert rv(ntls.get_attribute_value, s, private, [(c.CKA_LABEL, None)]) == \
        c.CKR_OBJECT_HANDLE_INVALID
    assert rv(ntls.encrypt_init, s, c.CKM_AES_ECB, private) == c.CKR_KEY_HANDLE_INVALID
    assert ntls.get_attributes(s, public, c.CKA_VALUE) == {c.CKA_VALUE: b"hello"}
    ntls.login(s, c.CKU_USER, b"co-pin-0001")
    assert sorted(ntls.find_objects(s, [])) == sorted([private, public])


def test_private_objects_need_the_crypto_officer(harness, ntls):
    s = harness.session(ntls, user=None)
    assert rv(aes, ntls, s) == c.CKR_USER_NOT_LOGGED_IN
    ntls.create_object(s, [(c.CKA_CLASS, c.CKO_DATA), (c.CKA_VALUE, b"public")])
    so = harness.session(ntls, user=c.CKU_SO)
    assert rv(aes, ntls, so) == c.CKR_USER_NOT_LOGGED_IN


def test_crypto_user_uses_keys_and_creates_public_objects_only(harness, tmp_path):
    with harness.connect() as officer:
        s = harness.session(officer)
        pub, priv = officer.generate_key_pair(s, c.CKM_EC_KEY_PAIR_GEN, [(c.CKA_EC_PARAMS, P256),
                                                                        (c.CKA_TOKEN, True)],
                                              [(c.CKA_TOKEN, True), (c.CKA_LABEL, b"ec")])
    with harness.connect() as user:
        s = harness.session(user, user=c.CKU_CRYPTO_USER)
        (found,) = user.find_objects(s, [(c.CKA_LABEL, b"ec")])
        user.sign_init(s, c.CKM_ECDSA_SHA256, found)
        assert len(user.sign(s, b"data")) == 64
        assert rv(aes, user, s) == c.CKR_USER_NOT_LOGGED_IN
        assert rv(user.generate_key_pair, s, c.CKM_EC_KEY_PAIR_GEN, [(c.CKA_EC_PARAMS, P256)], []) \
            == c.CKR_USER_NOT_LOGGED_IN
        assert rv(user.destroy_object, s, found) == c.CKR_USER_NOT_LOGGED_IN
        assert rv(user.set_attribute_value, s, found, [(c.CKA_LABEL, b"x")]) == \
            c.CKR_USER_NOT_LOGGED_IN
        handle = user.create_object(s, [(c.CKA_CLASS, c.CKO_PUBLIC_KEY), (c.CKA_KEY_TYPE, c.CKK_EC),
                                        (c.CKA_EC_PARAMS, P256),
                                        (c.CKA_EC_POINT, user.get_attributes(s, pub, c.CKA_EC_POINT)
                                         [c.CKA_EC_POINT])])
        assert user.get_attributes(s, handle, c.CKA_PRIVATE) == {c.CKA_PRIVATE: False}
        assert user.get_session_info(s)[0] == c.CKS_RW_USER_FUNCTIONS


def test_read_only_sessions_cannot_change_token_objects(harness, ntls):
    rw = harness.session(ntls)
    key = aes(ntls, rw, token=True)
    ro = ntls.open_session(harness.serial, RO)
    assert ntls.get_session_info(ro)[0] == c.CKS_RO_USER_FUNCTIONS
    assert rv(aes, ntls, ro, token=True) == c.CKR_SESSION_READ_ONLY
    assert rv(ntls.destroy_object, ro, key) == c.CKR_SESSION_READ_ONLY
    assert rv(ntls.set_attribute_value, ro, key, [(c.CKA_LABEL, b"x")]) == c.CKR_SESSION_READ_ONLY
    aes(ntls, ro)  # session objects are fine in a read-only session
    ntls.encrypt_init(ro, c.CKM_AES_ECB, key)
    assert len(ntls.encrypt(ro, bytes(16))) == 16


def test_template_rules(harness, ntls):
    s = harness.session(ntls)
    assert rv(ntls.create_object, s, [(c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE, bytes(16))]) == \
        c.CKR_TEMPLATE_INCOMPLETE
    assert rv(ntls.create_object, s, [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES)]) \
        == c.CKR_TEMPLATE_INCOMPLETE
    assert rv(ntls.create_object, s, [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES),
                                      (c.CKA_VALUE, bytes(15))]) == c.CKR_TEMPLATE_INCONSISTENT
    assert rv(ntls.generate_key, s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16),
                                                        (c.CKA_KEY_TYPE, c.CKK_RSA)]) == \
        c.CKR_TEMPLATE_INCONSISTENT
    assert rv(ntls.generate_key, s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16),
                                                        (c.CKA_VALUE, bytes(16))]) == \
        c.CKR_TEMPLATE_INCONSISTENT
    assert rv(ntls.generate_key, s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16),
                                                        (c.CKA_MODULUS_BITS, 2048)]) == \
        c.CKR_ATTRIBUTE_TYPE_INVALID
    assert rv(ntls.generate_key, s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16), (0x7ABC, b"x")]) == \
        c.CKR_ATTRIBUTE_TYPE_INVALID
    assert rv(ntls.generate_key, s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16), (c.CKA_LOCAL, True)]) \
        == c.CKR_ATTRIBUTE_READ_ONLY
    assert rv(ntls.generate_key, s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16), (c.CKA_SIGN, True),
                                                        (c.CKA_SIGN, False)]) == \
        c.CKR_TEMPLATE_INCONSISTENT
    # a wrong-size CK_BBOOL never reaches the token
    from hsmcloud.protocols.ntls import messages
    from hsmcloud.protocols.ntls.opcodes import Op
    payload = messages.encode_request(
        Op.GENERATE_KEY, (s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16), (c.CKA_TOKEN, b"\x01\x00")]),
        ntls.layout)
    assert messages.decode_response(messages.MESSAGES[Op.GENERATE_KEY], ntls.send_raw(payload),
                                    ntls.layout)[0] == c.CKR_ATTRIBUTE_VALUE_INVALID


def test_defaults_and_key_origin(harness, ntls):
    s = harness.session(ntls)
    key = aes(ntls, s)
    attrs = ntls.get_attributes(s, key, c.CKA_TOKEN, c.CKA_PRIVATE, c.CKA_SENSITIVE,
                                c.CKA_EXTRACTABLE, c.CKA_MODIFIABLE, c.CKA_COPYABLE,
                                c.CKA_DESTROYABLE, c.CKA_LOCAL, c.CKA_KEY_GEN_MECHANISM,
                                c.CKA_VALUE_LEN, c.CKA_ENCRYPT, c.CKA_ALLOWED_MECHANISMS)
    assert attrs == {c.CKA_TOKEN: False, c.CKA_PRIVATE: True, c.CKA_SENSITIVE: True,
                     c.CKA_EXTRACTABLE: True, c.CKA_MODIFIABLE: True, c.CKA_COPYABLE: True,
                     c.CKA_DESTROYABLE: True, c.CKA_LOCAL: True,
                     c.CKA_KEY_GEN_MECHANISM: c.CKM_AES_KEY_GEN, c.CKA_VALUE_LEN: 32,
                     c.CKA_ENCRYPT: True, c.CKA_ALLOWED_MECHANISMS: ()}
    imported = ntls.create_object(s, [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES),
                                      (c.CKA_VALUE, bytes(16))])
    assert ntls.get_attributes(s, imported, c.CKA_LOCAL, c.CKA_KEY_GEN_MECHANISM) == \
        {c.CKA_LOCAL: False, c.CKA_KEY_GEN_MECHANISM: UNAVAILABLE}
    assert rv(ntls.get_attribute_value, s, key, [(c.CKA_MODULUS, None)]) == \
        c.CKR_ATTRIBUTE_TYPE_INVALID


def test_get_attribute_value_buffers(harness, ntls):
    s = harness.session(ntls)
    data = ntls.create_object(s, [(c.CKA_CLASS, c.CKO_DATA), (c.CKA_LABEL, b"twelve bytes")])
    (size,) = ntls.get_attribute_value(s, data, [(c.CKA_LABEL, None)])
    assert size == AttributeResult(12, None)
    (exact,) = ntls.get_attribute_value(s, data, [(c.CKA_LABEL, 12)])
    assert exact == AttributeResult(12, b"twelve bytes")
    with pytest.raises(Pkcs11Error) as error:
        ntls.get_attribute_value(s, data, [(c.CKA_LABEL, 11)])
    assert error.value.rv == c.CKR_BUFFER_TOO_SMALL
    assert error.value.fields[0] == [AttributeResult(UNAVAILABLE, None)]


def test_set_copy_destroy(harness, ntls):
    s = harness.session(ntls)
    key = aes(ntls, s, label=b"one")
    ntls.set_attribute_value(s, key, [(c.CKA_LABEL, b"two"), (c.CKA_ID, b"\x01")])
    assert ntls.get_attributes(s, key, c.CKA_LABEL, c.CKA_ID) == {c.CKA_LABEL: b"two",
                                                                  c.CKA_ID: b"\x01"}
    assert rv(ntls.set_attribute_value, s, key, [(c.CKA_VALUE_LEN, 16)]) == c.CKR_ATTRIBUTE_READ_ONLY
    assert rv(ntls.set_attribute_value, s, key, [(c.CKA_CLASS, c.CKO_DATA)]) == \
        c.CKR_ATTRIBUTE_READ_ONLY
    copy = ntls.copy_object(s, key, [(c.CKA_TOKEN, True), (c.CKA_LABEL, b"copy")])
    ntls.encrypt_init(s, c.CKM_AES_ECB, key)
    a = ntls.encrypt(s, bytes(16))
    ntls.encrypt_init(s, c.CKM_AES_ECB, copy)
    assert ntls.encrypt(s, bytes(16)) == a
    frozen = aes(ntls, s, modifiable=False, copyable=False, destroyable=False)
    assert rv(ntls.set_attribute_value, s, frozen, [(c.CKA_LABEL, b"x")]) == c.CKR_ACTION_PROHIBITED
    assert rv(ntls.copy_object, s, frozen, []) == c.CKR_ACTION_PROHIBITED
    assert rv(ntls.destroy_object, s, frozen) == c.CKR_ACTION_PROHIBITED
    ntls.destroy_object(s, copy)
    assert harness.core.keystore.count(harness.serial) == 0
    assert rv(ntls.get_object_size, s, copy) == c.CKR_OBJECT_HANDLE_INVALID
    assert ntls.get_object_size(s, key) > 32


def test_find_objects_in_chunks_and_operation_state(harness, ntls):
    s = harness.session(ntls)
    handles = [aes(ntls, s, token=True, id=b"batch") for _ in range(5)]
    assert ntls.find_objects(s, [(c.CKA_ID, b"batch")], max_count=2) == handles
    assert ntls.find_objects(s, [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_VALUE_LEN, 32),
                                 (c.CKA_ID, b"batch")]) == handles
    assert ntls.find_objects(s, [(c.CKA_VALUE, bytes(32))]) == []  # no search on secrets
    from hsmcloud.protocols.ntls.opcodes import Op
    ntls.call(Op.FIND_OBJECTS_INIT, s, [])
    assert rv(ntls.call, Op.FIND_OBJECTS_INIT, s, []) == c.CKR_OPERATION_ACTIVE
    ntls.call(Op.FIND_OBJECTS_FINAL, s)
    assert rv(ntls.call, Op.FIND_OBJECTS, s, 10) == c.CKR_OPERATION_NOT_INITIALIZED


def test_session_objects_are_visible_to_the_applications_other_sessions_only(harness, ntls):
    a = harness.session(ntls)
    b = ntls.open_session(harness.serial, RW)
    key = aes(ntls, a, label=b"mine")
    assert ntls.find_objects(b, [(c.CKA_LABEL, b"mine")]) == [key]
    with harness.connect() as other:  # another application
        s = harness.session(other)
        assert other.find_objects(s, [(c.CKA_LABEL, b"mine")]) == []
        assert rv(other.get_object_size, s, key) == c.CKR_OBJECT_HANDLE_INVALID
    ntls.close_session(a)  # the session that created it: the object goes
    assert ntls.find_objects(b, [(c.CKA_LABEL, b"mine")]) == []


def test_certificate_objects(harness, ntls):
    s = harness.session(ntls)
    der = os.urandom(300)  # the token stores certificates as given
    template = [(c.CKA_CLASS, c.CKO_CERTIFICATE), (c.CKA_CERTIFICATE_TYPE, c.CKC_X_509),
                (c.CKA_TOKEN, True), (c.CKA_SUBJECT, b"\x30\x00"), (c.CKA_VALUE, der),
                (c.CKA_ID, b"\x42"), (c.CKA_LABEL, b"cert")]
    handle = ntls.create_object(s, template)
    assert ntls.get_attributes(s, handle, c.CKA_VALUE, c.CKA_CERTIFICATE_TYPE, c.CKA_TRUSTED,
                               c.CKA_PRIVATE) == {c.CKA_VALUE: der, c.CKA_CERTIFICATE_TYPE: c.CKC_X_509,
                                                  c.CKA_TRUSTED: False, c.CKA_PRIVATE: False}
    assert ntls.find_objects(s, [(c.CKA_CLASS, c.CKO_CERTIFICATE), (c.CKA_ID, b"\x42")]) == [handle]
    assert rv(ntls.create_object, s, [t for t in template if t[0] != c.CKA_CERTIFICATE_TYPE]) == \
        c.CKR_TEMPLATE_INCOMPLETE
    assert rv(ntls.create_object, s, [t for t in template if t[0] != c.CKA_SUBJECT]) == \
        c.CKR_TEMPLATE_INCOMPLETE
    assert rv(ntls.create_object, s, [(c.CKA_CLASS, c.CKO_CERTIFICATE),
                                      (c.CKA_CERTIFICATE_TYPE, c.CKC_WTLS)]) == \
        c.CKR_TEMPLATE_INCONSISTENT
