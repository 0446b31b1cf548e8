"""Every NTLS message, declared once: its opcode, request fields and response fields.

The server and the Python client share these declarations, so the two cannot disagree. A
field knows how to read and write itself; templates and mechanism parameters use the
application's :class:`~hsmcloud.protocols.pkcs11.attributes.NativeLayout` from ``HELLO``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..pkcs11 import constants as c
from ..pkcs11 import params as p
from ..pkcs11.attributes import NativeLayout
from .opcodes import Op
from .wire import ProtocolError, Reader, Writer

VERSION = 1

#: The deepest nesting of attribute arrays accepted (CKA_WRAP_TEMPLATE inside a template, ...).
MAX_TEMPLATE_DEPTH = 4
#: More attributes than this in one template is not an application but an attack.
MAX_TEMPLATE_ATTRIBUTES = 4096


class OutBuf(NamedTuple):
    """What a caller offers for an output: a buffer (of ``capacity`` bytes) or none (size query)."""

    has_buffer: bool
    capacity: int


class Output(NamedTuple):
    """An output response: the data, or (size query) only the length it would need."""

    data: bytes | None
    needed: int


class GetRequest(NamedTuple):
    """One attribute asked for in C_GetAttributeValue."""

    type: int
    has_buffer: bool
    buffer_length: int


class AttributeResult(NamedTuple):
    """One answer of C_GetAttributeValue: ulValueLen and, when copied, the native bytes."""

    value_length: int
    value: bytes | None


class PartitionEntry(NamedTuple):
    serial: str
    name: str
    initialized: bool
    label: str


class Hello(NamedTuple):
    version: int
    ulong_size: int
    byte_order: int  # 0 little, 1 big
    application_id: int
    pid: int
    client_software: str


class CloningInfo(NamedTuple):
    """GET_CLONING_INFO: what decides whether two partitions can clone to each other."""

    initialized: bool
    #: Public identifier of the cloning domain (32 hex characters; "" when not initialized).
    domain_id: str
    hsm_allow_cloning: int
    hsm_network_replication: int
    hsm_allow_non_fips: int
    private_key_cloning: int
    secret_key_cloning: int


class ObjectFingerprint(NamedTuple):
    """LIST_OBJECT_FINGERPRINTS: a token object and its domain-keyed fingerprint."""

    handle: int
    cls: int
    fingerprint: bytes


class HelloReply(NamedTuple):
    version: int
    appliance_serial: str
    model: str
    firmware: str
    software: str


# -- fields ---------------------------------------------------------------------------------


class Field:
    name = "field"

    def read(self, r: Reader, layout: NativeLayout) -> Any:
        raise NotImplementedError

    def write(self, w: Writer, value: Any, layout: NativeLayout) -> None:
        raise NotImplementedError


class _Simple(Field):
    def __init__(self, name: str) -> None:
        self.name = name
        self._read = getattr(Reader, name)
        self._write = getattr(Writer, name)

    def read(self, r, layout):
        return self._read(r)

    def write(self, w, value, layout):
        self._write(w, value)


U8 = _Simple("u8")
U16 = _Simple("u16")
U32 = _Simple("u32")
U64 = _Simple("u64")
ULONG = _Simple("ulong")
BOOL = _Simple("bool")
BYTES = _Simple("bytes")
STRING = _Simple("string")
OPT_BYTES = _Simple("opt_bytes")
SESSION = ULONG
OBJECT = ULONG
PARTITION = STRING


class _OutBuf(Field):
    name = "outbuf"

    def read(self, r, layout):
        has = r.bool()
        capacity = r.ulong()
        return OutBuf(has, capacity if has else 0)

    def write(self, w, value, layout):
        """``value``: an OutBuf, or the capacity of the caller's buffer, or None (size query)."""
        if isinstance(value, OutBuf):
            has, capacity = value
        else:
            has, capacity = value is not None, value or 0
        w.bool(has).ulong(capacity if has else 0)


class _Output(Field):
    name = "output"

    def read(self, r, layout):
        if r.bool():
            data = r.bytes()
            return Output(data, len(data))
        return Output(None, r.ulong())

    def write(self, w, value, layout):
        data, needed = value
        if data is None:
            w.bool(False).ulong(needed)
        else:
            w.bool(True).bytes(data)


class _Template(Field):
    """An input template: ``[(type, value), ...]`` with values typed per their attribute."""

    name = "template"

    def read(self, r, layout, depth: int = 0):
        count = r.u32()
        if count > MAX_TEMPLATE_ATTRIBUTES:
            raise ProtocolError(f"a template of {count} attributes")
        items = []
        for _ in range(count):
            type_ = r.ulong()
            kind = r.u8()
            if kind == 0:
                items.append((type_, _Deferred(type_, r.bytes())))
            elif kind == 2:
                if depth >= MAX_TEMPLATE_DEPTH:
                    raise ProtocolError("attribute arrays nested too deeply")
                items.append((type_, tuple(self.read(r, layout, depth + 1))))
            else:
                raise ProtocolError(f"attribute kind {kind} is not 0 or 2")
        return [(t, v.decode(layout) if isinstance(v, _Deferred) else v) for t, v in items]

    def write(self, w, value, layout):
        w.u32(len(value))
        for type_, item in value:
            w.ulong(type_)
            if isinstance(item, (tuple, list)) and (type_ & c.CKF_ARRAY_ATTRIBUTE) and (
                    type_ != c.CKA_ALLOWED_MECHANISMS):
                w.u8(2)
                self.write(w, list(item), layout)
            else:
                w.u8(0).bytes(item if isinstance(item, (bytes, bytearray)) else
                              layout.encode_value(type_, item))


class _Deferred:
    """A template value read before it is decoded, so that a wrong-size value is reported
    (CKR_ATTRIBUTE_VALUE_INVALID) only after the whole payload was read."""

    __slots__ = ("type", "raw")

    def __init__(self, type_: int, raw: bytes) -> None:
        self.type, self.raw = type_, raw

    def decode(self, layout: NativeLayout):
        return layout.decode_value(self.type, self.raw)


def encode_attribute_array(items, layout: NativeLayout) -> bytes:
    """The value of an attribute-array attribute (CKA_WRAP_TEMPLATE, ...) in C_GetAttributeValue's
    answer: the nested template, encoded as an input template is."""
    w = Writer()
    TEMPLATE.write(w, list(items), layout)
    return w.payload()


def decode_attribute_array(raw: bytes, layout: NativeLayout) -> list:
    """The inverse of encode_attribute_array (for clients written in Python)."""
    r = Reader(raw)
    items = TEMPLATE.read(r, layout)
    r.end()
    return items


class _GetTemplate(Field):
    name = "get_template"

    def read(self, r, layout):
        count = r.u32()
        if count > MAX_TEMPLATE_ATTRIBUTES:
            raise ProtocolError(f"a template of {count} attributes")
        out = []
        for _ in range(count):
            type_ = r.ulong()
            has = r.bool()
            out.append(GetRequest(type_, has, r.ulong()))
        return out

    def write(self, w, value, layout):
        """``value``: GetRequests, or (type, buffer_length|None) pairs."""
        w.u32(len(value))
        for item in value:
            if isinstance(item, GetRequest):
                type_, has, length = item
            else:
                type_, length = item
                has = length is not None
            w.ulong(type_).bool(has).ulong(length if has else 0)


class _AttributeResults(Field):
    name = "attribute_results"

    def read(self, r, layout):
        out = []
        for _ in range(r.u32()):
            length = r.ulong()
            out.append(AttributeResult(length, r.bytes() if r.bool() else None))
        return out

    def write(self, w, value, layout):
        w.u32(len(value))
        for length, data in value:
            w.ulong(length)
            if data is None:
                w.u8(0)
            else:
                w.u8(1).bytes(data)


class _PrfDataParams(Field):
    """SP 800-108's CK_PRF_DATA_PARAM array: ``u32 n``, then per parameter ``ulong type`` and
    its value: a counter format (``u8 present``, then ``bool little_endian``, ``ulong
    width_bits``), a DKM length format (``ulong method``, ``bool little_endian``, ``ulong
    width_bits``) or ``bytes``."""

    name = "prf_data_params"

    def read(self, r, layout):
        count = r.u32()
        if count > MAX_TEMPLATE_ATTRIBUTES:
            raise ProtocolError(f"{count} SP 800-108 data parameters")
        out = []
        for _ in range(count):
            type_ = r.ulong()
            if type_ in (c.CK_SP800_108_ITERATION_VARIABLE, c.CK_SP800_108_OPTIONAL_COUNTER):
                value = p.CounterFormat(r.bool(), r.ulong()) if r.bool() else None
            elif type_ == c.CK_SP800_108_DKM_LENGTH:
                value = p.DkmLengthFormat(r.ulong(), r.bool(), r.ulong())
            elif type_ == c.CK_SP800_108_BYTE_ARRAY:
                value = r.bytes()
            else:
                raise ProtocolError(f"SP 800-108 data parameter type {type_} is not 1..4")
            out.append(p.PrfDataParam(type_, value))
        return tuple(out)

    def write(self, w, value, layout):
        w.u32(len(value))
        for param in value:
            w.ulong(param.type)
            v = param.value
            if isinstance(v, p.CounterFormat):
                w.bool(True).bool(v.little_endian).ulong(v.width_bits)
            elif isinstance(v, p.DkmLengthFormat):
                w.ulong(v.method).bool(v.little_endian).ulong(v.width_bits)
            elif v is None:
                w.bool(False)
            else:
                w.bytes(v)


class _Templates(Field):
    """SP 800-108's additional derived keys: ``u32 n``, n templates."""

    name = "templates"

    def read(self, r, layout):
        count = r.u32()
        if count > 256:
            raise ProtocolError(f"{count} additional derived keys")
        return tuple(TEMPLATE.read(r, layout) for _ in range(count))

    def write(self, w, value, layout):
        w.u32(len(value))
        for template in value:
            TEMPLATE.write(w, list(template), layout)


PRF_DATA_PARAMS = _PrfDataParams()
TEMPLATES = _Templates()

# Structured mechanism parameters: the fields of each, in wire order.
_STRUCTURED: dict[int, tuple[type, tuple[Field, ...]]] = {
    c.CKM_AES_GCM: (p.GcmParams, (BYTES, ULONG, BYTES, ULONG)),
    c.CKM_RSA_PKCS_OAEP: (p.OaepParams, (ULONG, ULONG, ULONG, BYTES)),
    c.CKM_ECDH1_DERIVE: (p.Ecdh1DeriveParams, (ULONG, BYTES, BYTES)),
    c.CKM_ECDH1_COFACTOR_DERIVE: (p.Ecdh1DeriveParams, (ULONG, BYTES, BYTES)),
    c.CKM_HKDF_DERIVE: (p.HkdfParams, (BOOL, BOOL, ULONG, ULONG, BYTES, OBJECT, BYTES)),
    c.CKM_HKDF_DATA: (p.HkdfParams, (BOOL, BOOL, ULONG, ULONG, BYTES, OBJECT, BYTES)),
    c.CKM_AES_ECB_ENCRYPT_DATA: (p.KeyDerivationStringData, (BYTES,)),
    c.CKM_AES_CBC_ENCRYPT_DATA: (p.AesCbcEncryptDataParams, (BYTES, BYTES)),
    c.CKM_EDDSA: (p.EddsaParams, (BOOL, BYTES)),
    c.CKM_SP800_108_COUNTER_KDF: (p.Sp800108CounterParams, (ULONG, PRF_DATA_PARAMS, TEMPLATES)),
    c.CKM_SP800_108_FEEDBACK_KDF: (p.Sp800108FeedbackParams,
                                   (ULONG, PRF_DATA_PARAMS, BYTES, TEMPLATES)),
}


def structured_mechanisms() -> frozenset[int]:
    """The mechanisms whose parameter travels field by field."""
    return frozenset(_STRUCTURED)


class _Mechanism(Field):
    name = "mechanism"

    def read(self, r, layout):
        type_ = r.ulong()
        kind = r.u8()
        if kind == 0:
            return p.Mechanism(type_, None)
        if kind == 1:
            return p.Mechanism(type_, r.bytes())
        if kind == 2:
            spec = _STRUCTURED.get(type_)
            if spec is None:
                raise ProtocolError(
                    f"mechanism {c.mechanism_name(type_)} has no structured parameter form")
            cls, fields = spec
            return p.Mechanism(type_, cls(*(f.read(r, layout) for f in fields)))
        raise ProtocolError(f"mechanism parameter kind {kind} is not 0, 1 or 2")

    def write(self, w, value, layout):
        """``value``: a Mechanism, or a bare mechanism type (no parameter)."""
        if isinstance(value, int):
            value = p.Mechanism(value, None)
        w.ulong(value.type)
        param = value.param
        if param is None:
            w.u8(0)
        elif isinstance(param, (bytes, bytearray)):
            w.u8(1).bytes(param)
        elif isinstance(param, p.RAW_TYPES):
            w.u8(1).bytes(param.pack(layout))
        else:
            spec = _STRUCTURED.get(value.type)
            if spec is None or not isinstance(param, spec[0]):
                raise TypeError(f"{type(param).__name__} is not a parameter of "
                                f"{c.mechanism_name(value.type)}")
            w.u8(2)
            for f, item in zip(spec[1], _fields_of(param)):
                f.write(w, item, layout)


def _fields_of(param) -> tuple:
    return tuple(getattr(param, name) for name in param.__slots__)


class _List(Field):
    def __init__(self, item: Field, name: str) -> None:
        self.item, self.name = item, name

    def read(self, r, layout):
        return [self.item.read(r, layout) for _ in range(r.u32())]

    def write(self, w, value, layout):
        w.u32(len(value))
        for item in value:
            self.item.write(w, item, layout)


class _Record(Field):
    def __init__(self, cls: type, fields: tuple[Field, ...]) -> None:
        self.cls, self.fields, self.name = cls, fields, cls.__name__

    def read(self, r, layout):
        return self.cls(*(f.read(r, layout) for f in self.fields))

    def write(self, w, value, layout):
        for f, item in zip(self.fields, value):
            f.write(w, item, layout)


OUTBUF = _OutBuf()
OUTPUT = _Output()
TEMPLATE = _Template()
GET_TEMPLATE = _GetTemplate()
ATTRIBUTE_RESULTS = _AttributeResults()
MECHANISM = _Mechanism()
ULONG_LIST = _List(ULONG, "ulong_list")
PARTITION_LIST = _List(_Record(PartitionEntry, (STRING, STRING, BOOL, STRING)), "partitions")
CLONING_INFO = _Record(CloningInfo, (BOOL, STRING, U8, U8, U8, U8, U8))
FINGERPRINT_LIST = _List(_Record(ObjectFingerprint, (OBJECT, ULONG, BYTES)), "fingerprints")
HELLO_REQUEST = _Record(Hello, (U16, U8, U8, U64, U32, STRING))
HELLO_RESPONSE = _Record(HelloReply, (U16, STRING, STRING, STRING, STRING))


# -- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    op: Op
    request: tuple[Field, ...]
    response: tuple[Field, ...] = ()
    #: rv (other than CKR_OK) → the fields the response carries with that rv.
    on_error: dict[int, tuple[Field, ...]] = field(default_factory=dict)


_TOO_SMALL = {c.CKR_BUFFER_TOO_SMALL: (ULONG,)}
_ATTRIBUTE_RESULTS_ON = {rv: (ATTRIBUTE_RESULTS,) for rv in (
    c.CKR_ATTRIBUTE_SENSITIVE, c.CKR_ATTRIBUTE_TYPE_INVALID, c.CKR_BUFFER_TOO_SMALL)}

_TOKEN_INFO = (
    BYTES, BYTES, BYTES, BYTES, ULONG, ULONG, ULONG, ULONG, ULONG, ULONG, ULONG, ULONG, ULONG,
    ULONG, ULONG, U8, U8, U8, U8, BYTES,
)


def _output(*request: Field) -> tuple[tuple[Field, ...], tuple[Field, ...], dict]:
    return request, (OUTPUT,), _TOO_SMALL


MESSAGES: dict[int, Message] = {m.op: m for m in (
    Message(Op.HELLO, (HELLO_REQUEST,), (HELLO_RESPONSE,)),
    Message(Op.LIST_PARTITIONS, (), (PARTITION_LIST,)),
    Message(Op.GET_SLOT_INFO, (PARTITION,), (STRING, STRING, ULONG, U8, U8, U8, U8)),
    Message(Op.GET_TOKEN_INFO, (PARTITION,), _TOKEN_INFO),
    Message(Op.GET_MECHANISM_LIST, (PARTITION,), (ULONG_LIST,)),
    Message(Op.GET_MECHANISM_INFO, (PARTITION, ULONG), (ULONG, ULONG, ULONG)),
    Message(Op.INIT_TOKEN, (PARTITION, OPT_BYTES, BYTES)),
    Message(Op.OPEN_SESSION, (PARTITION, ULONG), (SESSION,)),
    Message(Op.CLOSE_SESSION, (SESSION,)),
    Message(Op.CLOSE_ALL_SESSIONS, (PARTITION,)),
    Message(Op.GET_SESSION_INFO, (SESSION,), (ULONG, ULONG, ULONG)),
    Message(Op.INIT_PIN, (SESSION, OPT_BYTES)),
    Message(Op.SET_PIN, (SESSION, OPT_BYTES, OPT_BYTES)),
    Message(Op.LOGIN, (SESSION, ULONG, OPT_BYTES)),
    Message(Op.LOGOUT, (SESSION,)),
    Message(Op.CREATE_OBJECT, (SESSION, TEMPLATE), (OBJECT,)),
    Message(Op.COPY_OBJECT, (SESSION, OBJECT, TEMPLATE), (OBJECT,)),
    Message(Op.DESTROY_OBJECT, (SESSION, OBJECT)),
    Message(Op.GET_OBJECT_SIZE, (SESSION, OBJECT), (ULONG,)),
    Message(Op.GET_ATTRIBUTE_VALUE, (SESSION, OBJECT, GET_TEMPLATE), (ATTRIBUTE_RESULTS,),
            _ATTRIBUTE_RESULTS_ON),
    Message(Op.SET_ATTRIBUTE_VALUE, (SESSION, OBJECT, TEMPLATE)),
    Message(Op.FIND_OBJECTS_INIT, (SESSION, TEMPLATE)),
    Message(Op.FIND_OBJECTS, (SESSION, ULONG), (ULONG_LIST,)),
    Message(Op.FIND_OBJECTS_FINAL, (SESSION,)),
    Message(Op.ENCRYPT_INIT, (SESSION, MECHANISM, OBJECT)),
    Message(Op.ENCRYPT, *_output(SESSION, BYTES, OUTBUF)),
    Message(Op.ENCRYPT_UPDATE, *_output(SESSION, BYTES, OUTBUF)),
    Message(Op.ENCRYPT_FINAL, *_output(SESSION, OUTBUF)),
    Message(Op.DECRYPT_INIT, (SESSION, MECHANISM, OBJECT)),
    Message(Op.DECRYPT, *_output(SESSION, BYTES, OUTBUF)),
    Message(Op.DECRYPT_UPDATE, *_output(SESSION, BYTES, OUTBUF)),
    Message(Op.DECRYPT_FINAL, *_output(SESSION, OUTBUF)),
    Message(Op.DIGEST_INIT, (SESSION, MECHANISM)),
    Message(Op.DIGEST, *_output(SESSION, BYTES, OUTBUF)),
    Message(Op.DIGEST_UPDATE, (SESSION, BYTES)),
    Message(Op.DIGEST_KEY, (SESSION, OBJECT)),
    Message(Op.DIGEST_FINAL, *_output(SESSION, OUTBUF)),
    Message(Op.SIGN_INIT, (SESSION, MECHANISM, OBJECT)),
    Message(Op.SIGN, *_output(SESSION, BYTES, OUTBUF)),
    Message(Op.SIGN_UPDATE, (SESSION, BYTES)),
    Message(Op.SIGN_FINAL, *_output(SESSION, OUTBUF)),
    Message(Op.VERIFY_INIT, (SESSION, MECHANISM, OBJECT)),
    Message(Op.VERIFY, (SESSION, BYTES, BYTES)),
    Message(Op.VERIFY_UPDATE, (SESSION, BYTES)),
    Message(Op.VERIFY_FINAL, (SESSION, BYTES)),
    Message(Op.GENERATE_KEY, (SESSION, MECHANISM, TEMPLATE), (OBJECT,)),
    Message(Op.GENERATE_KEY_PAIR, (SESSION, MECHANISM, TEMPLATE, TEMPLATE), (OBJECT, OBJECT)),
    Message(Op.WRAP_KEY, *_output(SESSION, MECHANISM, OBJECT, OBJECT, OUTBUF)),
    Message(Op.UNWRAP_KEY, (SESSION, MECHANISM, OBJECT, BYTES, TEMPLATE), (OBJECT,)),
    Message(Op.DERIVE_KEY, (SESSION, MECHANISM, OBJECT, TEMPLATE), (OBJECT,)),
    Message(Op.DERIVE_KEYS, (SESSION, MECHANISM, OBJECT, TEMPLATE), (OBJECT, ULONG_LIST)),
    Message(Op.SEED_RANDOM, (SESSION, BYTES)),
    Message(Op.GENERATE_RANDOM, (SESSION, ULONG), (BYTES,)),
    Message(Op.FINALIZE, ()),
    Message(Op.GET_CLONING_INFO, (PARTITION,), (CLONING_INFO,)),
    Message(Op.CLONE_OFFER, (SESSION,), (BYTES,)),
    Message(Op.CLONE_EXPORT, (SESSION, BYTES, ULONG_LIST), (BYTES,)),
    Message(Op.CLONE_IMPORT, (SESSION, BYTES), (ULONG_LIST,)),
    Message(Op.LIST_OBJECT_FINGERPRINTS, (SESSION,), (FINGERPRINT_LIST,)),
    Message(Op.BACKUP, (SESSION,), (BYTES,)),
    Message(Op.RESTORE, (SESSION, BYTES, BOOL), (U32, U32)),
    Message(Op.ADMIN, (STRING,), (STRING,)),
)}


class UnknownOpcode(ProtocolError):
    """An opcode this protocol version does not have (answered CKR_FUNCTION_NOT_SUPPORTED)."""

    def __init__(self, opcode: int) -> None:
        super().__init__(f"unknown opcode 0x{opcode:04X}")
        self.opcode = opcode


# -- codec ----------------------------------------------------------------------------------


def encode_request(op: int, values: tuple | list, layout: NativeLayout) -> bytes:
    message = MESSAGES[op]
    if len(values) != len(message.request):
        raise TypeError(f"{Op(op).name} takes {len(message.request)} fields, not {len(values)}")
    w = Writer().u16(op)
    for f, value in zip(message.request, values):
        f.write(w, value, layout)
    return w.payload()


def decode_request_header(payload: bytes) -> tuple[Message, Reader]:
    """The message a request payload is (UnknownOpcode if none) and a reader at its fields."""
    r = Reader(payload)
    opcode = r.u16()
    message = MESSAGES.get(opcode)
    if message is None:
        raise UnknownOpcode(opcode)
    return message, r


def decode_fields(message: Message, r: Reader, layout: NativeLayout) -> list:
    """The request's fields; ProtocolError if malformed, AttributeValueInvalid if a value is."""
    values = [f.read(r, layout) for f in message.request]
    r.end()
    return values


def encode_response(message: Message, rv: int, values, layout: NativeLayout) -> bytes:
    w = Writer().u32(rv)
    fields = message.response if rv == c.CKR_OK else message.on_error.get(rv, ())
    if fields:
        if len(values) != len(fields):
            raise TypeError(f"{message.op.name} answers {len(fields)} fields, not {len(values)}")
        for f, value in zip(fields, values):
            f.write(w, value, layout)
    return w.payload()


def decode_response(message: Message, payload: bytes, layout: NativeLayout) -> tuple[int, list]:
    r = Reader(payload)
    rv = r.u32()
    fields = message.response if rv == c.CKR_OK else message.on_error.get(rv, ())
    values = [f.read(r, layout) for f in fields]
    r.end()
    return rv, values
