"""Key material: between PKCS#11 attributes, the stored secret and `cryptography` key objects.

Private keys are kept (in the keystore's ``secret``) as PKCS#8 DER; secret keys as their raw
value. Public keys need no secret: their attributes (CKA_MODULUS, CKA_EC_POINT, ...) are the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from hsmcloud.protocols.pkcs11 import constants as c

from .errors import (
    AttributeValueInvalid,
    CurveNotSupported,
    DomainParamsInvalid,
    KeySizeRange,
    TemplateIncomplete,
    WrappedKeyInvalid,
)

# -- DER helpers ------------------------------------------------------------------------------


def der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_octet_string(value: bytes) -> bytes:
    return b"\x04" + der_length(len(value)) + value


def _der_unwrap(tag: int, data: bytes) -> bytes | None:
    """The content of a single DER TLV with ``tag`` spanning all of ``data``, else None."""
    if len(data) < 2 or data[0] != tag:
        return None
    first = data[1]
    if first < 0x80:
        length, offset = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            return None
        length, offset = int.from_bytes(data[2:2 + count], "big"), 2 + count
    if offset + length != len(data):
        return None
    return data[offset:]


# -- curves -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edwards:
    """An Edwards curve's `cryptography` key classes and its public key size."""

    private: type
    public: type
    public_size: int

    @property
    def signature_size(self) -> int:
        return 2 * self.public_size


@dataclass(frozen=True)
class Curve:
    name: str
    key_type: int
    bits: int
    oid_der: bytes
    names: tuple[str, ...]
    crypto: type | None  # the `cryptography` curve class (None for the Edwards curves)
    edwards: Edwards | None = None

    @property
    def field_bytes(self) -> int:
        return (self.bits + 7) // 8


_ED25519 = Edwards(ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey, 32)
_ED448 = Edwards(ed448.Ed448PrivateKey, ed448.Ed448PublicKey, 57)

CURVES = (
    Curve("P-256", c.CKK_EC, 256, bytes.fromhex("06082a8648ce3d030107"),
          ("prime256v1", "secp256r1", "p-256", "nistp256"), ec.SECP256R1),
    Curve("P-384", c.CKK_EC, 384, bytes.fromhex("06052b81040022"),
          ("secp384r1", "p-384", "nistp384"), ec.SECP384R1),
    Curve("P-521", c.CKK_EC, 521, bytes.fromhex("06052b81040023"),
          ("secp521r1", "p-521", "nistp521"), ec.SECP521R1),
    Curve("P-224", c.CKK_EC, 224, bytes.fromhex("06052b81040021"),
          ("secp224r1", "p-224", "nistp224"), ec.SECP224R1),
    Curve("P-192", c.CKK_EC, 192, bytes.fromhex("06082a8648ce3d030101"),
          ("prime192v1", "secp192r1", "p-192", "nistp192"), ec.SECP192R1),
    Curve("Ed25519", c.CKK_EC_EDWARDS, 255, bytes.fromhex("06032b6570"),
          ("edwards25519", "ed25519"), None, _ED25519),
    Curve("Ed448", c.CKK_EC_EDWARDS, 448, bytes.fromhex("06032b6571"),
          ("edwards448", "ed448"), None, _ED448),
)
SUPPORTED = ", ".join(curve.name for curve in CURVES)
_BY_OID = {curve.oid_der: curve for curve in CURVES}
_BY_NAME = {name: curve for curve in CURVES for name in (*curve.names, curve.name.lower())}
_BY_CRYPTO_NAME = {curve.crypto.name: curve for curve in CURVES if curve.crypto}
_BY_EDWARDS_CLASS = {cls: curve for curve in CURVES if curve.edwards
                     for cls in (curve.edwards.private, curve.edwards.public)}
EDWARDS_KEY_CLASSES = tuple(_BY_EDWARDS_CLASS)


def curve_of_params(ec_params: bytes, key_type: int) -> Curve:
    """The curve CKA_EC_PARAMS names: a DER OID, or a DER PrintableString curve name."""
    curve = _BY_OID.get(bytes(ec_params))
    if curve is None:
        name = _der_unwrap(0x13, bytes(ec_params))  # PrintableString
        if name is None:
            if _der_unwrap(0x06, bytes(ec_params)) is not None:
                raise CurveNotSupported(f"The curve is not one of {SUPPORTED}.")
            raise DomainParamsInvalid(
                "CKA_EC_PARAMS must be a DER OBJECT IDENTIFIER or PrintableString curve name.")
        curve = _BY_NAME.get(name.decode("ascii", "replace").lower())
        if curve is None:
            raise CurveNotSupported(f"The curve is not one of {SUPPORTED}.")
    if curve.key_type != key_type:
        raise CurveNotSupported(f"{curve.name} is not a curve of this key type.")
    return curve


def curve_of_key(key) -> Curve:
    named = getattr(key, "curve", None)  # EC keys; Edwards keys have none
    if named is not None:
        curve = _BY_CRYPTO_NAME.get(named.name)
        if curve is None:
            raise CurveNotSupported(f"The curve {named.name} is not supported.")
        return curve
    for cls, curve in _BY_EDWARDS_CLASS.items():
        if isinstance(key, cls):
            return curve
    curve = _BY_CRYPTO_NAME.get(key.curve.name)
    if curve is None:
        raise CurveNotSupported(f"The curve {key.curve.name} is not supported.")
    return curve


def ec_point_bytes(public_key) -> bytes:
    """The raw public point: uncompressed X9.62 for EC, the RFC 8032 bytes for Edwards curves."""
    if isinstance(public_key, EDWARDS_KEY_CLASSES):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public_key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)


def ec_point_attribute(public_key) -> bytes:
    """CKA_EC_POINT: the point as a DER OCTET STRING."""
    return der_octet_string(ec_point_bytes(public_key))


def unwrap_ec_point(value: bytes, curve: Curve) -> bytes:
    """The raw point from CKA_EC_POINT (DER OCTET STRING, or the raw point some callers send)."""
    value = bytes(value)
    inner = _der_unwrap(0x04, value)
    if inner is not None and _point_length_ok(inner, curve):
        return inner
    if _point_length_ok(value, curve):
        return value
    raise AttributeValueInvalid(f"CKA_EC_POINT is not a {curve.name} point.")


def _point_length_ok(point: bytes, curve: Curve) -> bool:
    if curve.edwards is not None:
        return len(point) == curve.edwards.public_size
    size = curve.field_bytes
    return (len(point) == 1 + 2 * size and point[0] == 4) or (
        len(point) == 1 + size and point[0] in (2, 3))


def ec_public_key(curve: Curve, point: bytes):
    try:
        if curve.edwards is not None:
            return curve.edwards.public.from_public_bytes(point)
        return ec.EllipticCurvePublicKey.from_encoded_point(curve.crypto(), point)
    except ValueError:
        raise AttributeValueInvalid(f"CKA_EC_POINT is not a point on {curve.name}.") from None


def ec_private_key(curve: Curve, value: bytes):
    try:
        if curve.edwards is not None:
            return curve.edwards.private.from_private_bytes(bytes(value))
        return ec.derive_private_key(int.from_bytes(value, "big"), curve.crypto())
    except ValueError:
        raise AttributeValueInvalid(f"CKA_VALUE is not a {curve.name} private key.") from None


def ec_private_value(key, curve: Curve) -> bytes:
    """CKA_VALUE of an EC/Edwards private key: the scalar (big-endian, field size) or seed."""
    if curve.edwards is not None:
        return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    return key.private_numbers().private_value.to_bytes(curve.field_bytes, "big")


# -- RSA --------------------------------------------------------------------------------------

#: The smallest RSA key the token imports and uses outside FIPS mode: a Luna goes down to 256
#: bits there; 512 is the smallest OpenSSL (under `cryptography`) works with, which is enough
#: for the legacy certificates people still verify.
RSA_MIN_BITS = 512
#: The smallest RSA key the token generates outside FIPS mode (`cryptography` generates none
#: smaller).
RSA_GENERATE_MIN_BITS = 1024
RSA_FIPS_MIN_BITS = 2048
RSA_MAX_BITS = 4096


def big(value: int) -> bytes:
    """A PKCS#11 big integer: unsigned big-endian, no leading zero bytes."""
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def rsa_public_key(modulus: bytes, exponent: bytes) -> rsa.RSAPublicKey:
    n, e = int.from_bytes(modulus, "big"), int.from_bytes(exponent, "big")
    if not RSA_MIN_BITS <= n.bit_length() <= 16384:
        raise KeySizeRange(f"An RSA modulus of {n.bit_length()} bits is not supported.")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise AttributeValueInvalid("The RSA public key is not valid.") from None


def rsa_private_key(attrs: dict[int, bytes]) -> rsa.RSAPrivateKey:
    """An RSA private key from CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT (+ CRT)."""
    try:
        n = int.from_bytes(attrs[c.CKA_MODULUS], "big")
        d = int.from_bytes(attrs[c.CKA_PRIVATE_EXPONENT], "big")
    except KeyError:
        raise TemplateIncomplete(
            "An RSA private key needs CKA_MODULUS and CKA_PRIVATE_EXPONENT.") from None
    e = int.from_bytes(attrs.get(c.CKA_PUBLIC_EXPONENT, b"\x01\x00\x01"), "big")
    if not RSA_MIN_BITS <= n.bit_length() <= RSA_MAX_BITS:
        raise KeySizeRange(f"An RSA key of {n.bit_length()} bits is outside "
                           f"{RSA_MIN_BITS}..{RSA_MAX_BITS}.")
    try:
        if c.CKA_PRIME_1 in attrs and c.CKA_PRIME_2 in attrs:
            p = int.from_bytes(attrs[c.CKA_PRIME_1], "big")
            q = int.from_bytes(attrs[c.CKA_PRIME_2], "big")
        else:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
        numbers = rsa.RSAPrivateNumbers(
            p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
            rsa.RSAPublicNumbers(e, n))
        return numbers.private_key()
    except ValueError:
        raise AttributeValueInvalid("The RSA private key components are not consistent.") from None


def rsa_private_attributes(key: rsa.RSAPrivateKey) -> dict[int, bytes]:
    """The sensitive components of an RSA private key, as attributes."""
    numbers = key.private_numbers()
    return {
        c.CKA_PRIVATE_EXPONENT: big(numbers.d),
        c.CKA_PRIME_1: big(numbers.p),
        c.CKA_PRIME_2: big(numbers.q),
        c.CKA_EXPONENT_1: big(numbers.dmp1),
        c.CKA_EXPONENT_2: big(numbers.dmq1),
        c.CKA_COEFFICIENT: big(numbers.iqmp),
    }


# -- serialization ---------------------------------------------------------------------------


def pkcs8(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_pkcs8(data: bytes):
    """A private key from PKCS#8 DER (an unwrapped key); WrappedKeyInvalid if it is not one."""
    try:
        key = serialization.load_der_private_key(bytes(data), password=None)
    except (ValueError, TypeError):
        raise WrappedKeyInvalid("The unwrapped data is not a PKCS#8 private key.") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise WrappedKeyInvalid("The unwrapped private key's type is not supported.")
    return key


def public_key_info(public_key) -> bytes:
    """CKA_PUBLIC_KEY_INFO: the DER SubjectPublicKeyInfo."""
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def key_type_of(private_key) -> int:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return c.CKK_RSA
    if isinstance(private_key, EDWARDS_KEY_CLASSES):
        return c.CKK_EC_EDWARDS
    return c.CKK_EC


def public_attributes(public_key) -> dict[int, object]:
    """The public attributes (of a public key, and of the private key of the same pair)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {c.CKA_MODULUS: big(numbers.n), c.CKA_PUBLIC_EXPONENT: big(numbers.e)}
    curve = curve_of_key(public_key)
    return {c.CKA_EC_PARAMS: curve.oid_der}
