"""The NTLS v1 codec: framing, every message's round trip, native CK_ULONG layouts."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from hsmcloud.protocols.ntls import messages as m
from hsmcloud.protocols.ntls.opcodes import Op
from hsmcloud.protocols.ntls.wire import (
    MAX_FRAME,
    ConnectionClosed,
    ProtocolError,
    Reader,
    Writer,
    frame,
    read_frame,
    write_frame,
)
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11 import params as p
from hsmcloud.protocols.pkcs11.attributes import AttributeValueInvalid, NativeLayout

LAYOUTS = [NativeLayout(8, "little"), NativeLayout(4, "little"), NativeLayout(8, "big"),
           NativeLayout(4, "big")]
IDS = ["lp64-le", "ilp32-le", "lp64-be", "ilp32-be"]

TEMPLATE = [
    (c.CKA_CLASS, c.CKO_PRIVATE_KEY),
    (c.CKA_TOKEN, True),
    (c.CKA_LABEL, b"my key"),
    (c.CKA_MODULUS_BITS, 3072),
    (c.CKA_START_DATE, b"20260101"),
    (c.CKA_ALLOWED_MECHANISMS, (c.CKM_RSA_PKCS, c.CKM_SHA256_RSA_PKCS)),
    (c.CKA_WRAP_TEMPLATE, ((c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_EXTRACTABLE, True))),
]


def _request_values() -> dict[int, tuple]:
    """One realistic value for every request field of every message."""
    mech = p.Mechanism(c.CKM_AES_GCM, p.GcmParams(b"\x01" * 12, 96, b"aad", 128))
    return {
        Op.HELLO: (m.Hello(1, 8, 0, 0x0123456789ABCDEF, 4242, "test/1"),),
        Op.LIST_PARTITIONS: (),
        Op.GET_SLOT_INFO: ("154700001001",),
        Op.GET_TOKEN_INFO: ("154700001001",),
        Op.GET_MECHANISM_LIST: ("154700001001",),
        Op.GET_MECHANISM_INFO: ("154700001001", c.CKM_ECDSA),
        Op.INIT_TOKEN: ("154700001001", b"so-pin", b"label".ljust(32)),
        Op.OPEN_SESSION: ("154700001001", c.CKF_SERIAL_SESSION | c.CKF_RW_SESSION),
        Op.CLOSE_SESSION: (7,),
        Op.CLOSE_ALL_SESSIONS: ("154700001001",),
        Op.GET_SESSION_INFO: (7,),
        Op.INIT_PIN: (7, None),
        Op.SET_PIN: (7, b"old", b"new"),
        Op.LOGIN: (7, c.CKU_CRYPTO_USER, b"pin"),
        Op.LOGOUT: (7,),
        Op.CREATE_OBJECT: (7, TEMPLATE),
        Op.COPY_OBJECT: (7, 12, [(c.CKA_TOKEN, False)]),
        Op.DESTROY_OBJECT: (7, 12),
        Op.GET_OBJECT_SIZE: (7, 12),
        Op.GET_ATTRIBUTE_VALUE: (7, 12, [m.GetRequest(c.CKA_LABEL, True, 64),
                                         m.GetRequest(c.CKA_VALUE, False, 0)]),
        Op.SET_ATTRIBUTE_VALUE: (7, 12, [(c.CKA_LABEL, b"renamed")]),
        Op.FIND_OBJECTS_INIT: (7, [(c.CKA_CLASS, c.CKO_SECRET_KEY)]),
        Op.FIND_OBJECTS: (7, 100),
        Op.FIND_OBJECTS_FINAL: (7,),
        Op.ENCRYPT_INIT: (7, mech, 12),
        Op.ENCRYPT: (7, b"data", m.OutBuf(True, 1024)),
        Op.ENCRYPT_UPDATE: (7, b"data", m.OutBuf(False, 0)),
        Op.ENCRYPT_FINAL: (7, m.OutBuf(True, 16)),
        Op.DECRYPT_INIT: (7, p.Mechanism(c.CKM_RSA_PKCS_OAEP,
                                          p.OaepParams(c.CKM_SHA256, c.CKG_MGF1_SHA256,
                                                       c.CKZ_DATA_SPECIFIED, b"label")), 12),
        Op.DECRYPT: (7, b"ct", m.OutBuf(True, 256)),
        Op.DECRYPT_UPDATE: (7, b"ct", m.OutBuf(True, 256)),
        Op.DECRYPT_FINAL: (7, m.OutBuf(True, 256)),
        Op.DIGEST_INIT: (7, p.Mechanism(c.CKM_SHA256)),
        Op.DIGEST: (7, b"data", m.OutBuf(True, 32)),
        Op.DIGEST_UPDATE: (7, b"data"),
        Op.DIGEST_KEY: (7, 12),
        Op.DIGEST_FINAL: (7, m.OutBuf(True, 32)),
        Op.SIGN_INIT: (7, p.Mechanism(c.CKM_EDDSA, p.EddsaParams(False, b"")), 12),
        Op.SIGN: (7, b"data", m.OutBuf(True, 512)),
        Op.SIGN_UPDATE: (7, b"data"),
        Op.SIGN_FINAL: (7, m.OutBuf(True, 512)),
        Op.VERIFY_INIT: (7, p.Mechanism(c.CKM_SHA256_RSA_PKCS_PSS, b"\x00" * 24), 12),
        Op.VERIFY: (7, b"data", b"sig"),
        Op.VERIFY_UPDATE: (7, b"data"),
        Op.VERIFY_FINAL: (7, b"sig"),
        Op.GENERATE_KEY: (7, p.Mechanism(c.CKM_AES_KEY_GEN), [(c.CKA_VALUE_LEN, 32)]),
        Op.GENERATE_KEY_PAIR: (7, p.Mechanism(c.CKM_EC_KEY_PAIR_GEN),
                               [(c.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107"))],
                               [(c.CKA_SIGN, True)]),
        Op.WRAP_KEY: (7, p.Mechanism(c.CKM_AES_KEY_WRAP_KWP), 12, 13, m.OutBuf(True, 40)),
        Op.UNWRAP_KEY: (7, p.Mechanism(c.CKM_AES_KEY_WRAP), 12, b"wrapped",
                        [(c.CKA_CLASS, c.CKO_SECRET_KEY)]),
        Op.DERIVE_KEY: (7, p.Mechanism(c.CKM_HKDF_DERIVE,
                                       p.HkdfParams(True, True, c.CKM_SHA256,
                                                    c.CKF_HKDF_SALT_DATA, b"salt", 0, b"info")),
                        12, [(c.CKA_VALUE_LEN, 32)]),
        Op.DERIVE_KEYS: (7, p.Mechanism(c.CKM_SP800_108_FEEDBACK_KDF, p.Sp800108FeedbackParams(
            c.CKM_SHA256_HMAC,
            (p.PrfDataParam(c.CK_SP800_108_ITERATION_VARIABLE, None),
             p.PrfDataParam(c.CK_SP800_108_OPTIONAL_COUNTER, p.CounterFormat(True, 16)),
             p.PrfDataParam(c.CK_SP800_108_BYTE_ARRAY, b"label"),
             p.PrfDataParam(c.CK_SP800_108_DKM_LENGTH,
                            p.DkmLengthFormat(c.CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, False, 32))),
            b"iv", ([(c.CKA_VALUE_LEN, 16)], [(c.CKA_VALUE_LEN, 24), (c.CKA_TOKEN, True)]))),
            12, [(c.CKA_VALUE_LEN, 32)]),
        Op.SEED_RANDOM: (7, b"seed"),
        Op.GENERATE_RANDOM: (7, 32),
        Op.FINALIZE: (),
        Op.ADMIN: ('{"action": "role.list", "partition": "154700001001"}',),
        Op.GET_CLONING_INFO: ("154700001001",),
        Op.CLONE_OFFER: (7,),
        Op.CLONE_EXPORT: (7, b"offer", [3, 4]),
        Op.CLONE_IMPORT: (7, b"blob"),
        Op.LIST_OBJECT_FINGERPRINTS: (7,),
        Op.BACKUP: (7,),
        Op.RESTORE: (7, b"backup", True),
    }


def _response_values() -> dict[int, tuple]:
    token_info = (b"L" * 32, b"M" * 32, b"m" * 16, b"s" * 16, 0x40D, 0, 1, 0, 1, 255, 8,
                  c.CK_UNAVAILABLE_INFORMATION, 0, 5, 6, 7, 0, 7, 0, b"2026010112000000")
    out = m.Output(b"\x00result", 7)
    return {
        Op.HELLO: (m.HelloReply(1, "154700001", "A790", "7.0.3", "7.2"),),
        Op.LIST_PARTITIONS: ([m.PartitionEntry("154700001001", "app1", True, "label"),
                              m.PartitionEntry("154700001002", "app2", False, "")],),
        Op.GET_SLOT_INFO: ("desc", "manufacturer", 5, 7, 0, 7, 0),
        Op.GET_TOKEN_INFO: token_info,
        Op.GET_MECHANISM_LIST: ([c.CKM_RSA_PKCS, c.CKM_AES_GCM],),
        Op.GET_MECHANISM_INFO: (2048, 4096, c.CKF_SIGN | c.CKF_HW),
        Op.OPEN_SESSION: (3,),
        Op.GET_SESSION_INFO: (c.CKS_RW_USER_FUNCTIONS, 6, 0),
        Op.CREATE_OBJECT: (0x80000001,),
        Op.COPY_OBJECT: (12,),
        Op.GET_OBJECT_SIZE: (400,),
        Op.GET_ATTRIBUTE_VALUE: ([m.AttributeResult(6, b"my key"),
                                  m.AttributeResult(c.CK_UNAVAILABLE_INFORMATION, None)],),
        Op.FIND_OBJECTS: ([1, 2, 0x80000003],),
        Op.ENCRYPT: (out,), Op.ENCRYPT_UPDATE: (m.Output(None, 16),), Op.ENCRYPT_FINAL: (out,),
        Op.DECRYPT: (out,), Op.DECRYPT_UPDATE: (out,), Op.DECRYPT_FINAL: (out,),
        Op.DIGEST: (out,), Op.DIGEST_FINAL: (out,), Op.SIGN: (out,), Op.SIGN_FINAL: (out,),
        Op.WRAP_KEY: (out,),
        Op.GENERATE_KEY: (5,), Op.GENERATE_KEY_PAIR: (5, 6), Op.UNWRAP_KEY: (9,),
        Op.DERIVE_KEY: (9,), Op.DERIVE_KEYS: (9, [10, 11]), Op.GENERATE_RANDOM: (b"r" * 32,),
        Op.ADMIN: ('{"ok": true}',),
        Op.GET_CLONING_INFO: (m.CloningInfo(True, "ab" * 16, 1, 1, 1, 1, 0),),
        Op.CLONE_OFFER: (b"offer",), Op.CLONE_EXPORT: (b"blob",), Op.CLONE_IMPORT: ([5, 6],),
        Op.LIST_OBJECT_FINGERPRINTS: ([m.ObjectFingerprint(5, 3, b"f" * 32)],),
        Op.BACKUP: (b"backup",), Op.RESTORE: (3, 1),
    }


def test_every_opcode_has_test_values():
    assert set(_request_values()) == set(m.MESSAGES)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("op", sorted(m.MESSAGES), ids=lambda op: Op(op).name)
def test_request_round_trip(op, layout):
    values = _request_values()[op]
    payload = m.encode_request(op, values, layout)
    assert struct.unpack(">H", payload[:2])[0] == op
    message, reader = m.decode_request_header(payload)
    assert message.op == op
    assert list(values) == m.decode_fields(message, reader, layout)


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
@pytest.mark.parametrize("op", sorted(m.MESSAGES), ids=lambda op: Op(op).name)
def test_response_round_trip(op, layout):
    message = m.MESSAGES[op]
    values = _response_values().get(op, ())
    payload = m.encode_response(message, c.CKR_OK, values, layout)
    assert m.decode_response(message, payload, layout) == (c.CKR_OK, list(values))


def test_error_responses_carry_only_their_fields():
    sign = m.MESSAGES[Op.SIGN]
    payload = m.encode_response(sign, c.CKR_BUFFER_TOO_SMALL, (256,), NativeLayout(8, "little"))
    assert payload == struct.pack(">IQ", c.CKR_BUFFER_TOO_SMALL, 256)
    assert m.encode_response(sign, c.CKR_KEY_HANDLE_INVALID, (), NativeLayout(8, "little")) == \
        struct.pack(">I", c.CKR_KEY_HANDLE_INVALID)
    get = m.MESSAGES[Op.GET_ATTRIBUTE_VALUE]
    results = [m.AttributeResult(c.CK_UNAVAILABLE_INFORMATION, None)]
    payload = m.encode_response(get, c.CKR_ATTRIBUTE_SENSITIVE, (results,), NativeLayout(4, "big"))
    assert m.decode_response(get, payload, NativeLayout(4, "big")) == \
        (c.CKR_ATTRIBUTE_SENSITIVE, [results])


def test_sign_request_bytes_follow_the_document():
    """The exact layout docs/ntls-protocol.md gives for C_Sign with a 256-byte buffer."""
    payload = m.encode_request(Op.SIGN, (5, b"abc", 256), NativeLayout(4, "little"))
    assert payload == (struct.pack(">HQ", 0x0041, 5) + struct.pack(">I", 3) + b"abc"
                       + b"\x01" + struct.pack(">Q", 256))


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_template_values_are_in_the_clients_native_layout(layout):
    payload = m.encode_request(Op.CREATE_OBJECT, (1, [(c.CKA_VALUE_LEN, 32), (c.CKA_SIGN, True)]),
                               layout)
    r = Reader(payload)
    assert (r.u16(), r.ulong(), r.u32()) == (Op.CREATE_OBJECT, 1, 2)
    assert (r.ulong(), r.u8()) == (c.CKA_VALUE_LEN, 0)
    assert r.bytes() == (32).to_bytes(layout.ulong_size, layout.byte_order)
    assert (r.ulong(), r.u8(), r.bytes()) == (c.CKA_SIGN, 0, b"\x01")


def test_wrong_size_ulong_attribute_is_value_invalid():
    """A 4-byte CKA_VALUE_LEN from a client that declared 8-byte CK_ULONGs."""
    w = Writer().u16(Op.CREATE_OBJECT).ulong(1).u32(1).ulong(c.CKA_VALUE_LEN).u8(0)
    w.bytes(b"\x20\x00\x00\x00")
    message, reader = m.decode_request_header(w.payload())
    with pytest.raises(AttributeValueInvalid):
        m.decode_fields(message, reader, NativeLayout(8, "little"))


def test_structured_and_raw_mechanism_parameters():
    layout = NativeLayout(4, "big")
    pss = p.Mechanism(c.CKM_RSA_PKCS_PSS, p.PssParams(c.CKM_SHA256, c.CKG_MGF1_SHA256, 32))
    payload = m.encode_request(Op.SIGN_INIT, (1, pss, 2), layout)
    message, reader = m.decode_request_header(payload)
    _, mechanism, _ = m.decode_fields(message, reader, layout)
    assert mechanism.param == struct.pack(">III", c.CKM_SHA256, c.CKG_MGF1_SHA256, 32)
    assert p.PssParams.unpack(mechanism.param, layout) == pss.param
    with pytest.raises(p.ParamError):
        p.PssParams.unpack(mechanism.param, NativeLayout(8, "big"))
    ctr = p.CtrParams(128, bytes(range(16)))
    assert p.CtrParams.unpack(ctr.pack(NativeLayout(8, "little")), NativeLayout(8, "little")) == ctr


def test_structured_parameter_for_an_unstructured_mechanism_is_a_protocol_error():
    w = Writer().u16(Op.SIGN_INIT).ulong(1).ulong(c.CKM_SHA256_RSA_PKCS).u8(2)
    message, reader = m.decode_request_header(w.payload())
    with pytest.raises(ProtocolError):
        m.decode_fields(message, reader, NativeLayout(8, "little"))


def test_truncated_trailing_and_unknown_payloads():
    layout = NativeLayout(8, "little")
    payload = m.encode_request(Op.LOGIN, (1, c.CKU_USER, b"pin"), layout)
    message, reader = m.decode_request_header(payload[:-1])
    with pytest.raises(ProtocolError):
        m.decode_fields(message, reader, layout)
    message, reader = m.decode_request_header(payload + b"\x00")
    with pytest.raises(ProtocolError):
        m.decode_fields(message, reader, layout)
    with pytest.raises(m.UnknownOpcode):
        m.decode_request_header(struct.pack(">H", 0x7777))
    with pytest.raises(ProtocolError):
        Reader(b"\x02").bool()


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_native_layout_values(layout):
    assert layout.decode_value(c.CKA_MODULUS_BITS, layout.encode_value(c.CKA_MODULUS_BITS, 4096)) == 4096
    assert layout.encode_value(c.CKA_KEY_GEN_MECHANISM, c.CK_UNAVAILABLE_INFORMATION) == \
        b"\xff" * layout.ulong_size
    mechanisms = (c.CKM_AES_GCM, c.CKM_ECDSA)
    raw = layout.encode_value(c.CKA_ALLOWED_MECHANISMS, mechanisms)
    assert len(raw) == 2 * layout.ulong_size
    assert layout.decode_value(c.CKA_ALLOWED_MECHANISMS, raw) == mechanisms
    with pytest.raises(AttributeValueInvalid):
        layout.decode_value(c.CKA_TOKEN, b"\x01\x00")
    with pytest.raises(AttributeValueInvalid):
        layout.decode_value(c.CKA_START_DATE, b"2026")


def test_frames_over_a_socket_pair():
    left, right = socket.socketpair()
    try:
        write_frame(left, b"hello")
        assert read_frame(right) == b"hello"
        left.sendall(struct.pack(">I", MAX_FRAME + 1))
        with pytest.raises(ProtocolError):
            read_frame(right)
        left.sendall(frame(b"x")[:3])
        left.close()
        with pytest.raises(ConnectionClosed):
            read_frame(right)
    finally:
        right.close()
    with pytest.raises(ProtocolError):
        frame(b"")


def test_frame_reader_splits_and_joins_frames():
    from hsmcloud.protocols.ntls.wire import FrameReader
    left, right = socket.socketpair()
    try:
        reader = FrameReader(right)
        left.sendall(frame(b"one") + frame(b"two") + frame(b"three")[:5])
        assert reader.read() == b"one"
        assert reader.read() == b"two"
        left.sendall(frame(b"three")[5:])
        assert reader.read() == b"three"
        big = os.urandom(100_000)
        left.sendall(frame(big))
        assert reader.read() == big
        left.sendall(frame(b"x")[:2])
        left.close()
        with pytest.raises(ConnectionClosed):
            reader.read()
    finally:
        right.close()
