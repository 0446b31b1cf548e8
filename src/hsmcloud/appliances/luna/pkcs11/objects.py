"""PKCS#11 objects: which attributes each class and key type has, their defaults, and the rules.

Declared as tables (per object class and key type: the valid attributes, the defaults, what
a template must give on C_CreateObject, what only the token may set, what stays sensitive,
what can change after creation); the functions below apply them. An object's ``attrs`` hold
every non-sensitive attribute; the key material is its ``secret`` (PKCS#8 DER for a private
key, the value of a secret key), from which the sensitive attributes are derived on demand.
"""

from __future__ import annotations

import enum
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import ATTRIBUTE_KINDS, Kind

from . import keys
from .errors import (
    ActionProhibited,
    AttributeReadOnly,
    AttributeTypeInvalid,
    AttributeValueInvalid,
    TemplateIncomplete,
    TemplateInconsistent,
)

UNAVAILABLE = c.CK_UNAVAILABLE_INFORMATION


class Creation(enum.Enum):
    """How an object comes to be: which template rules apply."""

    CREATE = "create"        # C_CreateObject: the caller gives the key material
    GENERATE = "generate"    # C_GenerateKey(Pair): the token makes it (CKA_LOCAL true)
    UNWRAP = "unwrap"        # C_UnwrapKey: the material comes from the wrapped blob
    DERIVE = "derive"        # C_DeriveKey: the material comes from a base key


# -- attribute sets ------------------------------------------------------------------------------

_COMMON = frozenset({c.CKA_CLASS, c.CKA_TOKEN, c.CKA_PRIVATE, c.CKA_LABEL, c.CKA_MODIFIABLE,
                     c.CKA_COPYABLE, c.CKA_DESTROYABLE, c.CKA_UNIQUE_ID})
_KEY = _COMMON | {c.CKA_KEY_TYPE, c.CKA_ID, c.CKA_START_DATE, c.CKA_END_DATE, c.CKA_DERIVE,
                  c.CKA_LOCAL, c.CKA_KEY_GEN_MECHANISM, c.CKA_ALLOWED_MECHANISMS}
_PUBLIC = _KEY | {c.CKA_SUBJECT, c.CKA_ENCRYPT, c.CKA_VERIFY, c.CKA_VERIFY_RECOVER, c.CKA_WRAP,
                  c.CKA_TRUSTED, c.CKA_WRAP_TEMPLATE, c.CKA_PUBLIC_KEY_INFO}
_PRIVATE = _KEY | {c.CKA_SUBJECT, c.CKA_SENSITIVE, c.CKA_DECRYPT, c.CKA_SIGN, c.CKA_SIGN_RECOVER,
                   c.CKA_UNWRAP, c.CKA_EXTRACTABLE, c.CKA_ALWAYS_SENSITIVE,
                   c.CKA_NEVER_EXTRACTABLE, c.CKA_WRAP_WITH_TRUSTED, c.CKA_UNWRAP_TEMPLATE,
                   c.CKA_DERIVE_TEMPLATE, c.CKA_ALWAYS_AUTHENTICATE, c.CKA_PUBLIC_KEY_INFO}
_SECRET = _KEY | {c.CKA_SENSITIVE, c.CKA_ENCRYPT, c.CKA_DECRYPT, c.CKA_SIGN, c.CKA_VERIFY,
                  c.CKA_WRAP, c.CKA_UNWRAP, c.CKA_EXTRACTABLE, c.CKA_ALWAYS_SENSITIVE,
                  c.CKA_NEVER_EXTRACTABLE, c.CKA_CHECK_VALUE, c.CKA_WRAP_WITH_TRUSTED,
                  c.CKA_TRUSTED, c.CKA_WRAP_TEMPLATE, c.CKA_UNWRAP_TEMPLATE,
                  c.CKA_DERIVE_TEMPLATE, c.CKA_VALUE, c.CKA_VALUE_LEN}
_RSA_PUBLIC = frozenset({c.CKA_MODULUS, c.CKA_MODULUS_BITS, c.CKA_PUBLIC_EXPONENT})
_RSA_PRIVATE_SENSITIVE = frozenset({c.CKA_PRIVATE_EXPONENT, c.CKA_PRIME_1, c.CKA_PRIME_2,
                                    c.CKA_EXPONENT_1, c.CKA_EXPONENT_2, c.CKA_COEFFICIENT})
_RSA_PRIVATE = frozenset({c.CKA_MODULUS, c.CKA_PUBLIC_EXPONENT}) | _RSA_PRIVATE_SENSITIVE
_EC_PUBLIC = frozenset({c.CKA_EC_PARAMS, c.CKA_EC_POINT})
_EC_PRIVATE = frozenset({c.CKA_EC_PARAMS, c.CKA_VALUE})
_DATA = _COMMON | {c.CKA_APPLICATION, c.CKA_OBJECT_ID, c.CKA_VALUE}
_CERTIFICATE = _COMMON | {c.CKA_CERTIFICATE_TYPE, c.CKA_TRUSTED, c.CKA_CERTIFICATE_CATEGORY,
                          c.CKA_CHECK_VALUE, c.CKA_START_DATE, c.CKA_END_DATE,
                          c.CKA_PUBLIC_KEY_INFO, c.CKA_SUBJECT, c.CKA_ID, c.CKA_ISSUER,
                          c.CKA_SERIAL_NUMBER, c.CKA_VALUE, c.CKA_URL,
                          c.CKA_HASH_OF_SUBJECT_PUBLIC_KEY, c.CKA_HASH_OF_ISSUER_PUBLIC_KEY,
                          c.CKA_JAVA_MIDP_SECURITY_DOMAIN, c.CKA_NAME_HASH_ALGORITHM}

SECRET_KEY_TYPES = frozenset({c.CKK_AES, c.CKK_GENERIC_SECRET, c.CKK_SHA_1_HMAC,
                              c.CKK_SHA224_HMAC, c.CKK_SHA256_HMAC, c.CKK_SHA384_HMAC,
                              c.CKK_SHA512_HMAC, c.CKK_HKDF})
ASYMMETRIC_KEY_TYPES = frozenset({c.CKK_RSA, c.CKK_EC, c.CKK_EC_EDWARDS})


@dataclass(frozen=True)
class Shape:
    """The rules of one object class (and key type)."""

    valid: frozenset[int]
    defaults: dict[int, Any]
    required: frozenset[int] = frozenset()      # on C_CreateObject
    sensitive: frozenset[int] = frozenset()     # derived from the secret, never stored in attrs
    material: frozenset[int] = frozenset()      # key material: only C_CreateObject may give it


_KEY_DEFAULTS = {c.CKA_TOKEN: False, c.CKA_LABEL: b"", c.CKA_MODIFIABLE: True,
                 c.CKA_COPYABLE: True, c.CKA_DESTROYABLE: True, c.CKA_ID: b"",
                 c.CKA_START_DATE: b"", c.CKA_END_DATE: b"", c.CKA_DERIVE: False,
                 c.CKA_LOCAL: False, c.CKA_KEY_GEN_MECHANISM: UNAVAILABLE,
                 c.CKA_ALLOWED_MECHANISMS: ()}
_PUBLIC_DEFAULTS = {**_KEY_DEFAULTS, c.CKA_PRIVATE: False, c.CKA_SUBJECT: b"",
                    c.CKA_ENCRYPT: True, c.CKA_VERIFY: True, c.CKA_VERIFY_RECOVER: False,
                    c.CKA_WRAP: True, c.CKA_TRUSTED: False, c.CKA_WRAP_TEMPLATE: ()}
_PRIVATE_DEFAULTS = {**_KEY_DEFAULTS, c.CKA_PRIVATE: True, c.CKA_SUBJECT: b"",
                     c.CKA_SENSITIVE: True, c.CKA_DECRYPT: True, c.CKA_SIGN: True,
                     c.CKA_SIGN_RECOVER: False, c.CKA_UNWRAP: True, c.CKA_EXTRACTABLE: False,
                     c.CKA_WRAP_WITH_TRUSTED: False, c.CKA_UNWRAP_TEMPLATE: (),
                     c.CKA_DERIVE_TEMPLATE: (), c.CKA_ALWAYS_AUTHENTICATE: False}
_SECRET_DEFAULTS = {**_KEY_DEFAULTS, c.CKA_PRIVATE: True, c.CKA_SENSITIVE: True,
                    c.CKA_ENCRYPT: True, c.CKA_DECRYPT: True, c.CKA_SIGN: True,
                    c.CKA_VERIFY: True, c.CKA_WRAP: True, c.CKA_UNWRAP: True,
                    c.CKA_EXTRACTABLE: True, c.CKA_WRAP_WITH_TRUSTED: False,
                    c.CKA_TRUSTED: False, c.CKA_WRAP_TEMPLATE: (), c.CKA_UNWRAP_TEMPLATE: (),
                    c.CKA_DERIVE_TEMPLATE: ()}
_BASE_DEFAULTS = {c.CKA_TOKEN: False, c.CKA_PRIVATE: False, c.CKA_LABEL: b"",
                  c.CKA_MODIFIABLE: True, c.CKA_COPYABLE: True, c.CKA_DESTROYABLE: True}

SHAPES: dict[tuple[int, int | None], Shape] = {
    (c.CKO_PUBLIC_KEY, c.CKK_RSA): Shape(
        _PUBLIC | _RSA_PUBLIC, _PUBLIC_DEFAULTS,
        required=frozenset({c.CKA_MODULUS, c.CKA_PUBLIC_EXPONENT}),
        material=frozenset({c.CKA_MODULUS})),
    (c.CKO_PRIVATE_KEY, c.CKK_RSA): Shape(
        _PRIVATE | _RSA_PRIVATE, _PRIVATE_DEFAULTS,
        required=frozenset({c.CKA_MODULUS, c.CKA_PRIVATE_EXPONENT}),
        sensitive=_RSA_PRIVATE_SENSITIVE,
        material=_RSA_PRIVATE_SENSITIVE | {c.CKA_MODULUS, c.CKA_PUBLIC_EXPONENT}),
    **{(c.CKO_PUBLIC_KEY, kt): Shape(
        _PUBLIC | _EC_PUBLIC, _PUBLIC_DEFAULTS,
        required=frozenset({c.CKA_EC_PARAMS, c.CKA_EC_POINT}),
        material=frozenset({c.CKA_EC_POINT})) for kt in (c.CKK_EC, c.CKK_EC_EDWARDS)},
    **{(c.CKO_PRIVATE_KEY, kt): Shape(
        _PRIVATE | _EC_PRIVATE, _PRIVATE_DEFAULTS,
        required=frozenset({c.CKA_EC_PARAMS, c.CKA_VALUE}),
        sensitive=frozenset({c.CKA_VALUE}),
        material=frozenset({c.CKA_VALUE})) for kt in (c.CKK_EC, c.CKK_EC_EDWARDS)},
    **{(c.CKO_SECRET_KEY, kt): Shape(
        _SECRET, _SECRET_DEFAULTS, required=frozenset({c.CKA_VALUE}),
        sensitive=frozenset({c.CKA_VALUE}),
        material=frozenset({c.CKA_VALUE})) for kt in SECRET_KEY_TYPES},
    (c.CKO_DATA, None): Shape(
        _DATA, {**_BASE_DEFAULTS, c.CKA_APPLICATION: b"", c.CKA_OBJECT_ID: b"", c.CKA_VALUE: b""}),
    (c.CKO_CERTIFICATE, c.CKC_X_509): Shape(
        _CERTIFICATE, {**_BASE_DEFAULTS, c.CKA_TRUSTED: False, c.CKA_CERTIFICATE_CATEGORY: 0,
                       c.CKA_START_DATE: b"", c.CKA_END_DATE: b"", c.CKA_ID: b"",
                       c.CKA_ISSUER: b"", c.CKA_SERIAL_NUMBER: b"", c.CKA_URL: b"",
                       c.CKA_HASH_OF_SUBJECT_PUBLIC_KEY: b"",
                       c.CKA_HASH_OF_ISSUER_PUBLIC_KEY: b"",
                       c.CKA_JAVA_MIDP_SECURITY_DOMAIN: 0,
                       c.CKA_NAME_HASH_ALGORITHM: c.CKM_SHA_1},
        required=frozenset({c.CKA_SUBJECT, c.CKA_VALUE})),
}

#: Only the token sets these (CKR_ATTRIBUTE_READ_ONLY in any template).
TOKEN_SET = frozenset({c.CKA_LOCAL, c.CKA_KEY_GEN_MECHANISM, c.CKA_ALWAYS_SENSITIVE,
                       c.CKA_NEVER_EXTRACTABLE, c.CKA_UNIQUE_ID})
#: What C_SetAttributeValue may change (further rules in :func:`check_change`).
MODIFIABLE = frozenset({c.CKA_LABEL, c.CKA_ID, c.CKA_SUBJECT, c.CKA_START_DATE, c.CKA_END_DATE,
                        c.CKA_ENCRYPT, c.CKA_DECRYPT, c.CKA_WRAP, c.CKA_UNWRAP, c.CKA_SIGN,
                        c.CKA_SIGN_RECOVER, c.CKA_VERIFY, c.CKA_VERIFY_RECOVER, c.CKA_DERIVE,
                        c.CKA_APPLICATION, c.CKA_OBJECT_ID, c.CKA_SENSITIVE,
                        c.CKA_EXTRACTABLE, c.CKA_WRAP_WITH_TRUSTED, c.CKA_TRUSTED,
                        c.CKA_COPYABLE, c.CKA_DESTROYABLE, c.CKA_ALLOWED_MECHANISMS,
                        c.CKA_ISSUER, c.CKA_SERIAL_NUMBER, c.CKA_URL,
                        c.CKA_CERTIFICATE_CATEGORY, c.CKA_PUBLIC_KEY_INFO})
#: Changes that may go one way only: attribute → the only value it may change to.
ONE_WAY = {c.CKA_SENSITIVE: True, c.CKA_EXTRACTABLE: False, c.CKA_WRAP_WITH_TRUSTED: True,
           c.CKA_COPYABLE: False, c.CKA_DESTROYABLE: False, c.CKA_MODIFIABLE: False}
#: C_CopyObject may also set these.
COPY_ALSO = frozenset({c.CKA_TOKEN, c.CKA_PRIVATE, c.CKA_MODIFIABLE})


def shape_of(cls: int, kind: int | None) -> Shape:
    shape = SHAPES.get((cls, kind if cls != c.CKO_DATA else None))
    if shape is None:
        if cls in (c.CKO_PUBLIC_KEY, c.CKO_PRIVATE_KEY, c.CKO_SECRET_KEY):
            raise TemplateInconsistent(f"Key type {kind} is not supported for this class.")
        if cls == c.CKO_CERTIFICATE:
            raise TemplateInconsistent("Only X.509 certificates (CKC_X_509) are supported.")
        raise AttributeValueInvalid(f"Object class {cls} is not supported.")
    return shape


# -- objects -------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class P11Object:
    """One PKCS#11 object. Token objects mirror a keystore record; session objects live only here."""

    handle: int
    attrs: dict[int, Any]
    secret: bytes | None = None
    version: int = 0
    #: The session that created a session object (it goes when that session closes).
    session: int | None = None
    _crypto: Any = field(default=None, repr=False)
    #: The key's size (see token.key_size), worked out once.
    size_cache: int | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cls(self) -> int:
        return self.attrs[c.CKA_CLASS]

    @property
    def key_type(self) -> int | None:
        return self.attrs.get(c.CKA_KEY_TYPE)

    @property
    def token(self) -> bool:
        return self.attrs.get(c.CKA_TOKEN, False)

    @property
    def private(self) -> bool:
        return self.attrs.get(c.CKA_PRIVATE, False)

    def flag(self, attribute: int) -> bool:
        return bool(self.attrs.get(attribute, False))

    @property
    def is_key(self) -> bool:
        return self.cls in (c.CKO_PUBLIC_KEY, c.CKO_PRIVATE_KEY, c.CKO_SECRET_KEY)

    @property
    def shape(self) -> Shape:
        return shape_of(self.cls, self.attrs.get(c.CKA_KEY_TYPE, self.attrs.get(c.CKA_CERTIFICATE_TYPE)))

    def crypto(self):
        """The `cryptography` key (private or public key object) or a secret key's bytes, cached."""
        key = self._crypto
        if key is None:
            with self._lock:
                if self._crypto is None:
                    self._crypto = _load_crypto(self)
                key = self._crypto
        return key

    def secret_value(self) -> bytes:
        """A secret key's CKA_VALUE (key material; never leaves unless extractable and wrapped)."""
        assert self.cls == c.CKO_SECRET_KEY and self.secret is not None
        return self.secret

    def size(self) -> int:
        """A C_GetObjectSize answer: the bytes its attributes and material take."""
        total = len(self.secret or b"")
        for value in self.attrs.values():
            total += len(value) if isinstance(value, (bytes, str, tuple)) else 8
        return total


def _load_crypto(obj: P11Object):
    cls = obj.cls
    if cls == c.CKO_SECRET_KEY:
        return obj.secret
    if cls == c.CKO_PRIVATE_KEY:
        return keys.load_pkcs8(obj.secret)
    if cls == c.CKO_PUBLIC_KEY:
        attrs = obj.attrs
        if obj.key_type == c.CKK_RSA:
            return keys.rsa_public_key(attrs[c.CKA_MODULUS], attrs[c.CKA_PUBLIC_EXPONENT])
        curve = keys.curve_of_params(attrs[c.CKA_EC_PARAMS], obj.key_type)
        return keys.ec_public_key(curve, keys.unwrap_ec_point(attrs[c.CKA_EC_POINT], curve))
    raise TypeError("only keys have key material")


def sensitive_value(obj: P11Object, attribute: int) -> bytes:
    """A sensitive attribute's value, derived from the key material (only for extractable keys)."""
    key = obj.crypto()
    if obj.cls == c.CKO_SECRET_KEY:
        return key
    if obj.key_type == c.CKK_RSA:
        return keys.rsa_private_attributes(key)[attribute]
    return keys.ec_private_value(key, keys.curve_of_key(key))


def value_readable(obj: P11Object) -> bool:
    """Sensitive attributes may be read only when CKA_SENSITIVE is false and CKA_EXTRACTABLE true."""
    return not obj.flag(c.CKA_SENSITIVE) and obj.flag(c.CKA_EXTRACTABLE)


# -- templates -----------------------------------------------------------------------------------


def template_dict(template: list[tuple[int, Any]]) -> dict[int, Any]:
    """A template as a dict; the same attribute twice with different values is inconsistent."""
    out: dict[int, Any] = {}
    for type_, value in template:
        if type_ in out and out[type_] != value:
            raise TemplateInconsistent(f"{c.attribute_name(type_)} is given twice, differently.")
        out[type_] = value
    return out


def _check_kinds(template: dict[int, Any]) -> None:
    for type_, value in template.items():
        kind = ATTRIBUTE_KINDS.get(type_)
        if kind is None:
            raise AttributeTypeInvalid(f"{c.attribute_name(type_)} is not an attribute this "
                                       "token knows.")
        if kind is Kind.TEMPLATE:
            if not isinstance(value, tuple):
                raise AttributeValueInvalid(f"{c.attribute_name(type_)} must be an attribute array.")
            _check_kinds(template_dict(list(value)))


def new_attributes(template: dict[int, Any], *, how: Creation, cls: int | None = None,
                   key_type: int | None = None) -> tuple[dict[int, Any], Shape]:
    """The attributes of a new object: the template checked against the class's rules, plus
    defaults. ``cls``/``key_type`` are what the mechanism implies (a template may repeat them,
    not contradict them). Key material in the template is left for the caller to use."""
    _check_kinds(template)
    given_cls = template.get(c.CKA_CLASS)
    if cls is None:
        if given_cls is None:
            raise TemplateIncomplete("The template needs CKA_CLASS.")
        cls = given_cls
    elif given_cls is not None and given_cls != cls:
        raise TemplateInconsistent(f"CKA_CLASS {given_cls} does not fit this function.")
    if cls in (c.CKO_PUBLIC_KEY, c.CKO_PRIVATE_KEY, c.CKO_SECRET_KEY):
        given_type = template.get(c.CKA_KEY_TYPE)
        if key_type is None:
            if given_type is None:
                raise TemplateIncomplete("The template needs CKA_KEY_TYPE.")
            key_type = given_type
        elif given_type is not None and given_type != key_type:
            raise TemplateInconsistent(f"CKA_KEY_TYPE {given_type} does not fit the mechanism.")
        kind = key_type
    elif cls == c.CKO_CERTIFICATE:
        kind = template.get(c.CKA_CERTIFICATE_TYPE)
        if kind is None:
            raise TemplateIncomplete("A certificate needs CKA_CERTIFICATE_TYPE.")
    else:
        kind = None
    shape = shape_of(cls, kind)
    for type_ in template:
        if type_ not in shape.valid:
            raise AttributeTypeInvalid(f"{c.attribute_name(type_)} is not an attribute of this "
                                       "kind of object.")
        if type_ in TOKEN_SET:
            raise AttributeReadOnly(f"{c.attribute_name(type_)} is set by the token.")
    if how is Creation.CREATE:
        missing = shape.required - template.keys()
        if missing:
            raise TemplateIncomplete("The template lacks " + ", ".join(
                sorted(c.attribute_name(a) for a in missing)) + ".")
    else:
        given = shape.material & template.keys()
        if given:
            raise TemplateInconsistent(", ".join(sorted(c.attribute_name(a) for a in given))
                                       + " cannot be given here: the token makes the key.")
    attrs = dict(shape.defaults)
    attrs.update((k, v) for k, v in template.items() if k not in shape.sensitive)
    attrs[c.CKA_CLASS] = cls
    if kind is not None and cls != c.CKO_CERTIFICATE:
        attrs[c.CKA_KEY_TYPE] = kind
    if cls == c.CKO_CERTIFICATE:
        attrs[c.CKA_CERTIFICATE_TYPE] = kind
    attrs[c.CKA_UNIQUE_ID] = os.urandom(16).hex().encode("ascii")
    return attrs, shape


def set_key_origin(attrs: dict[int, Any], *, how: Creation, mechanism: int | None = None,
                   base: P11Object | None = None) -> None:
    """CKA_LOCAL, CKA_KEY_GEN_MECHANISM, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE of a new key."""
    if attrs[c.CKA_CLASS] == c.CKO_PUBLIC_KEY:
        attrs[c.CKA_LOCAL] = how is Creation.GENERATE
        if how is Creation.GENERATE:
            attrs[c.CKA_KEY_GEN_MECHANISM] = mechanism
        return
    sensitive = bool(attrs.get(c.CKA_SENSITIVE))
    extractable = bool(attrs.get(c.CKA_EXTRACTABLE))
    if how is Creation.GENERATE:
        attrs[c.CKA_LOCAL] = True
        attrs[c.CKA_KEY_GEN_MECHANISM] = mechanism
        attrs[c.CKA_ALWAYS_SENSITIVE] = sensitive
        attrs[c.CKA_NEVER_EXTRACTABLE] = not extractable
    elif how is Creation.DERIVE and base is not None:
        attrs[c.CKA_LOCAL] = False
        attrs[c.CKA_ALWAYS_SENSITIVE] = sensitive and base.flag(c.CKA_ALWAYS_SENSITIVE)
        attrs[c.CKA_NEVER_EXTRACTABLE] = (not extractable) and base.flag(c.CKA_NEVER_EXTRACTABLE)
    else:
        attrs[c.CKA_LOCAL] = False
        attrs[c.CKA_ALWAYS_SENSITIVE] = False
        attrs[c.CKA_NEVER_EXTRACTABLE] = False


def check_value(key_type: int, value: bytes) -> bytes:
    """CKA_CHECK_VALUE: AES: the first 3 bytes of E(K, 0^128); other secrets: of SHA-1(K)."""
    if key_type == c.CKK_AES:
        encryptor = Cipher(algorithms.AES(value), modes.ECB()).encryptor()
        return (encryptor.update(bytes(16)) + encryptor.finalize())[:3]
    digest = hashes.Hash(hashes.SHA1())
    digest.update(value)
    return digest.finalize()[:3]


def finish_secret_key(attrs: dict[int, Any], value: bytes) -> None:
    """CKA_VALUE_LEN and CKA_CHECK_VALUE of a secret key whose value is ``value``."""
    length = attrs.get(c.CKA_VALUE_LEN)
    if length is not None and length != len(value):
        raise TemplateInconsistent(f"CKA_VALUE_LEN {length} does not match the key's "
                                   f"{len(value)} bytes.")
    attrs[c.CKA_VALUE_LEN] = len(value)
    attrs.setdefault(c.CKA_CHECK_VALUE, check_value(attrs[c.CKA_KEY_TYPE], value))


def finish_private_key(attrs: dict[int, Any], private_key) -> None:
    """The public attributes of a private key (CKA_MODULUS..., CKA_EC_PARAMS, CKA_PUBLIC_KEY_INFO)."""
    public = private_key.public_key()
    for type_, value in keys.public_attributes(public).items():
        if type_ == c.CKA_EC_PARAMS and type_ in attrs:
            continue  # keep the caller's spelling (OID or curve name)
        attrs[type_] = value
    attrs.setdefault(c.CKA_PUBLIC_KEY_INFO, keys.public_key_info(public))


def finish_public_key(attrs: dict[int, Any], public_key) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        bits = numbers.n.bit_length()
        if attrs.get(c.CKA_MODULUS_BITS, bits) != bits:
            raise TemplateInconsistent("CKA_MODULUS_BITS does not match CKA_MODULUS.")
        attrs[c.CKA_MODULUS] = keys.big(numbers.n)
        attrs[c.CKA_PUBLIC_EXPONENT] = keys.big(numbers.e)
        attrs[c.CKA_MODULUS_BITS] = bits
    else:
        attrs.setdefault(c.CKA_EC_PARAMS, keys.curve_of_key(public_key).oid_der)
        attrs[c.CKA_EC_POINT] = keys.ec_point_attribute(public_key)
    attrs.setdefault(c.CKA_PUBLIC_KEY_INFO, keys.public_key_info(public_key))


def check_change(obj: P11Object, changes: dict[int, Any], *, copying: bool, so: bool) -> None:
    """Refuse what C_SetAttributeValue (or C_CopyObject's template) may not change."""
    if not copying and not obj.flag(c.CKA_MODIFIABLE) and changes:
        raise ActionProhibited("The object is not modifiable (CKA_MODIFIABLE is false).")
    _check_kinds(changes)
    shape = obj.shape
    for type_, value in changes.items():
        if type_ not in shape.valid:
            raise AttributeTypeInvalid(f"{c.attribute_name(type_)} is not an attribute of this "
                                       "kind of object.")
        current = obj.attrs.get(type_)
        if value == current:
            continue
        allowed = type_ in MODIFIABLE or (copying and type_ in COPY_ALSO)
        if not allowed:
            raise AttributeReadOnly(f"{c.attribute_name(type_)} cannot be changed.")
        if type_ in ONE_WAY and value != ONE_WAY[type_] and not (copying and type_ in COPY_ALSO
                                                                  and type_ != c.CKA_MODIFIABLE):
            raise AttributeReadOnly(f"{c.attribute_name(type_)} can only become "
                                    f"{ONE_WAY[type_]}.")
        if type_ == c.CKA_TRUSTED and value and not so:
            raise AttributeReadOnly("Only the Partition SO may set CKA_TRUSTED.")
        if type_ == c.CKA_PRIVATE and copying and current and not value and obj.is_key and \
                obj.cls != c.CKO_PUBLIC_KEY:
            raise AttributeReadOnly("A copy of a private or secret key stays CKA_PRIVATE.")


def matches(obj: P11Object, template: dict[int, Any]) -> bool:
    """C_FindObjects: every attribute of the template is present with an equal value (sensitive
    values never match: they cannot be searched for)."""
    attrs = obj.attrs
    for type_, value in template.items():
        if attrs.get(type_, _MISSING) != value:
            return False
    return True


_MISSING = object()
