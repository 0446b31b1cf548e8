"""The type of every PKCS#11 attribute, and its values in an application's native layout.

An application lays out a ``CK_ULONG`` attribute in its own ``sizeof(CK_ULONG)`` and byte
order; ``NativeLayout`` (declared in NTLS ``HELLO``) turns those bytes into Python values and
back. Values in Python: ``int`` (CK_ULONG), ``bool`` (CK_BBOOL), ``bytes`` (byte arrays, big
integers, UTF-8 strings, CK_DATE), ``tuple[int, ...]`` (CK_MECHANISM_TYPE arrays) and
``tuple[tuple[int, value], ...]`` (attribute arrays such as CKA_WRAP_TEMPLATE).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from . import constants as c


class Kind(enum.Enum):
    ULONG = "ulong"
    BOOL = "bool"
    BYTES = "bytes"
    DATE = "date"
    MECHANISMS = "mechanisms"       # CK_MECHANISM_TYPE_PTR (CKA_ALLOWED_MECHANISMS)
    TEMPLATE = "template"           # CK_ATTRIBUTE_PTR (CKA_WRAP_TEMPLATE, ...)


_ULONG = (
    c.CKA_CLASS, c.CKA_CERTIFICATE_TYPE, c.CKA_CERTIFICATE_CATEGORY,
    c.CKA_JAVA_MIDP_SECURITY_DOMAIN, c.CKA_NAME_HASH_ALGORITHM, c.CKA_KEY_TYPE,
    c.CKA_MODULUS_BITS, c.CKA_PRIME_BITS, c.CKA_SUBPRIME_BITS, c.CKA_VALUE_BITS, c.CKA_VALUE_LEN,
    c.CKA_KEY_GEN_MECHANISM, c.CKA_HW_FEATURE_TYPE,
)
_BOOL = (
    c.CKA_TOKEN, c.CKA_PRIVATE, c.CKA_TRUSTED, c.CKA_SENSITIVE, c.CKA_ENCRYPT, c.CKA_DECRYPT,
    c.CKA_WRAP, c.CKA_UNWRAP, c.CKA_SIGN, c.CKA_SIGN_RECOVER, c.CKA_VERIFY, c.CKA_VERIFY_RECOVER,
    c.CKA_DERIVE, c.CKA_EXTRACTABLE, c.CKA_LOCAL, c.CKA_NEVER_EXTRACTABLE, c.CKA_ALWAYS_SENSITIVE,
    c.CKA_MODIFIABLE, c.CKA_COPYABLE, c.CKA_DESTROYABLE, c.CKA_ALWAYS_AUTHENTICATE,
    c.CKA_WRAP_WITH_TRUSTED, c.CKA_RESET_ON_INIT, c.CKA_HAS_RESET,
)
_BYTES = (
    c.CKA_LABEL, c.CKA_UNIQUE_ID, c.CKA_APPLICATION, c.CKA_VALUE, c.CKA_OBJECT_ID, c.CKA_ISSUER,
    c.CKA_SERIAL_NUMBER, c.CKA_AC_ISSUER, c.CKA_OWNER, c.CKA_ATTR_TYPES, c.CKA_URL,
    c.CKA_HASH_OF_SUBJECT_PUBLIC_KEY, c.CKA_HASH_OF_ISSUER_PUBLIC_KEY, c.CKA_CHECK_VALUE,
    c.CKA_SUBJECT, c.CKA_ID, c.CKA_MODULUS, c.CKA_PUBLIC_EXPONENT, c.CKA_PRIVATE_EXPONENT,
    c.CKA_PRIME_1, c.CKA_PRIME_2, c.CKA_EXPONENT_1, c.CKA_EXPONENT_2, c.CKA_COEFFICIENT,
    c.CKA_PUBLIC_KEY_INFO, c.CKA_PRIME, c.CKA_SUBPRIME, c.CKA_BASE, c.CKA_EC_PARAMS, c.CKA_EC_POINT,
)

#: Every attribute type this implementation knows, and the kind of its value.
ATTRIBUTE_KINDS: dict[int, Kind] = {
    **{a: Kind.ULONG for a in _ULONG},
    **{a: Kind.BOOL for a in _BOOL},
    **{a: Kind.BYTES for a in _BYTES},
    c.CKA_START_DATE: Kind.DATE,
    c.CKA_END_DATE: Kind.DATE,
    c.CKA_ALLOWED_MECHANISMS: Kind.MECHANISMS,
    c.CKA_WRAP_TEMPLATE: Kind.TEMPLATE,
    c.CKA_UNWRAP_TEMPLATE: Kind.TEMPLATE,
    c.CKA_DERIVE_TEMPLATE: Kind.TEMPLATE,
}


class AttributeValueInvalid(ValueError):
    """A value of the wrong size or shape for its attribute type (CKR_ATTRIBUTE_VALUE_INVALID)."""

    def __init__(self, attribute: int, reason: str) -> None:
        super().__init__(f"{c.attribute_name(attribute)}: {reason}")
        self.attribute = attribute


@dataclass(frozen=True, slots=True)
class NativeLayout:
    """An application's ``sizeof(CK_ULONG)`` (4 or 8) and byte order ('little' or 'big')."""

    ulong_size: int
    byte_order: str

    def __post_init__(self) -> None:
        if self.ulong_size not in (4, 8):
            raise ValueError(f"ulong_size must be 4 or 8, not {self.ulong_size}")
        if self.byte_order not in ("little", "big"):
            raise ValueError(f"byte_order must be 'little' or 'big', not {self.byte_order!r}")

    @property
    def max_ulong(self) -> int:
        return (1 << (8 * self.ulong_size)) - 1

    def _format(self, count: int) -> str:
        return ("<" if self.byte_order == "little" else ">") + ("I" if self.ulong_size == 4 else "Q") * count

    def pack_ulongs(self, *values: int) -> bytes:
        return struct.pack(self._format(len(values)), *values)

    def unpack_ulongs(self, raw: bytes) -> tuple[int, ...]:
        if len(raw) % self.ulong_size:
            raise ValueError(f"{len(raw)} bytes is not a whole number of {self.ulong_size}-byte CK_ULONGs")
        return struct.unpack(self._format(len(raw) // self.ulong_size), raw)

    def unavailable(self) -> int:
        """CK_UNAVAILABLE_INFORMATION ((CK_ULONG)-1) as this application sees it."""
        return self.max_ulong

    # -- attribute values ---------------------------------------------------------------

    def decode_value(self, attribute: int, raw: bytes):
        """The Python value of ``raw`` (the application's bytes); raises AttributeValueInvalid."""
        kind = ATTRIBUTE_KINDS.get(attribute)
        if kind is None or kind is Kind.BYTES:
            return bytes(raw)
        if kind is Kind.BOOL:
            if len(raw) != 1:
                raise AttributeValueInvalid(attribute, f"a CK_BBOOL is 1 byte, not {len(raw)}")
            return raw[0] != 0
        if kind is Kind.ULONG:
            if len(raw) != self.ulong_size:
                raise AttributeValueInvalid(
                    attribute, f"a CK_ULONG is {self.ulong_size} bytes here, not {len(raw)}")
            return int.from_bytes(raw, self.byte_order)
        if kind is Kind.DATE:
            if len(raw) not in (0, 8) or (raw and not bytes(raw).isdigit()):
                raise AttributeValueInvalid(attribute, "a CK_DATE is 8 digits YYYYMMDD (or empty)")
            return bytes(raw)
        if kind is Kind.MECHANISMS:
            try:
                return self.unpack_ulongs(bytes(raw))
            except ValueError as exc:
                raise AttributeValueInvalid(attribute, str(exc)) from None
        raise AttributeValueInvalid(attribute, "an attribute array cannot be given as a value")

    def encode_value(self, attribute: int, value) -> bytes:
        """The application's bytes of a Python value (the inverse of decode_value)."""
        kind = ATTRIBUTE_KINDS.get(attribute)
        if kind is Kind.BOOL:
            return b"\x01" if value else b"\x00"
        if kind is Kind.ULONG:
            if value == c.CK_UNAVAILABLE_INFORMATION:
                value = self.max_ulong
            return int(value).to_bytes(self.ulong_size, self.byte_order)
        if kind is Kind.MECHANISMS:
            return self.pack_ulongs(*value)
        if kind is Kind.TEMPLATE:
            raise TypeError("attribute arrays are encoded as nested templates")
        return bytes(value)
