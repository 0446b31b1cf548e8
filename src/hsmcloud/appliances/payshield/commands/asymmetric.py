"""RSA and ECC keys in host fields: public keys in DER, private keys under the LMK, public-key MACs.

Public keys travel as DER ``RSAPublicKey`` (SEQUENCE of modulus and exponent). Encoding ``01``
writes the INTEGERs unsigned (no leading zero byte), ``02`` in two's complement (standard DER).

Private keys never leave the HSM in clear:

* **variant LMK**: the key (PKCS#8 DER, after a 10-byte header: the mode of use, the algorithm
  and the first 8 bytes of the DER's SHA-256, which detects a cryptogram that was altered or
  belongs to another LMK) padded with ISO 9797-1 method 2 and encrypted with TDES-CBC (zero IV)
  under LMK pair 34-35.
  The field is the 4-digit byte length followed by the binary cryptogram.
* **key-block LMK**: a key block with usage ``03`` (asymmetric private key), algorithm ``R``
  (RSA) or ``E`` (ECC), the mode of use ``S`` (signature only), ``D`` (key management only) or
  ``N`` (both), exportability ``N`` unless asked otherwise. The field is ``FFFF`` followed by the
  key block (EW's "private key length" field reads ``FFFF`` for a key block).

Public keys are protected under the LMK too: with a variant LMK by a 4-byte MAC over the public
key and the optional authentication data (TDES CBC-MAC, ISO 9797-1 algorithm 1 with padding
method 2, under LMK pair 36-37, leftmost 4 bytes); with a key-block LMK by a key block with usage
``02`` (asymmetric public key). The real device's private-key layout and MAC construction are
its own; these are not byte-compatible with it (see docs/differences.md).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from psec import mac as _psec_mac

from .. import keycrypto as kc
from ..errors import HostError
from ..fields import TRAILER_DELIMITER, Cursor
from ..lmk import KeyBlockAttributes, KeyBlockLmk, Lmk, VariantLmk

PRIVATE_KEY_PAIR = "0C"  # LMK pair 34-35
PUBLIC_KEY_MAC_PAIR = "0D"  # LMK pair 36-37
PRIVATE_KEY_USAGE = "03"
PUBLIC_KEY_USAGE = "02"
KEY_BLOCK_LENGTH = "FFFF"
MAC_LENGTH = 4

#: EI key type indicator -> mode of use of the private key.
KEY_TYPE_MODES = {"0": "S", "1": "D", "2": "N"}
SIGNING_MODES = ("S", "N")
KEY_MANAGEMENT_MODES = ("D", "N")

PUBLIC_KEY_ENCODINGS = ("01", "02")


# -- trailing options of EI / FY ('%' LMK id, '#' key-block fields, '&' exportability) --------


def take_options(cur: Cursor, marks: dict[str, Callable[[Cursor], None]]) -> str | None:
    """Parse the trailing delimited fields; ``marks`` maps a delimiter to the parser of its
    field. Returns the ``%`` LMK identifier; sets ``cur.trailer`` after 0x19; anything else
    left over is error 15."""
    lmk_id = None
    seen: set[str] = set()
    while not cur.done():
        mark = cur.take(1)
        if mark == TRAILER_DELIMITER:
            cur.trailer = cur.text[cur.pos :]
            cur.pos = len(cur.text)
        elif mark in seen:
            raise HostError("15", f"field {mark!r} given twice")
        elif mark == "%":
            lmk_id = cur.take_digits(2)
        elif mark in marks:
            marks[mark](cur)
        else:
            raise HostError("15", f"unexpected data at offset {cur.pos - 1}")
        seen.add(mark)
    return lmk_id


def take_exportability(cur: Cursor) -> str:
    value = cur.take(1)
    if value not in ("E", "N", "S"):
        raise HostError("15", "exportability must be E, N or S")
    return value


def take_key_version(cur: Cursor) -> str:
    """A key block's key version number: 2 ASCII letters or digits (else 15, not a key block error)."""
    kvn = cur.take(2)
    if not (kvn.isascii() and kvn.isalnum()):
        raise HostError("15", "invalid key version number")
    return kvn


def take_version_and_blocks(cur: Cursor) -> str:
    """Key version number (2) and number of optional blocks (2, only 00 here)."""
    kvn = take_key_version(cur)
    if cur.take(2) != "00":
        raise HostError("15", "optional key-block blocks are not supported")
    return kvn


def authentication_data(cur: Cursor) -> bytes:
    """The optional authentication data that ends a public-key command: everything up to a
    trailing ``%nn`` LMK identifier or the 0x19 trailer (it may not contain ``;``)."""
    end = cur.text.find(TRAILER_DELIMITER, cur.pos)
    end = len(cur.text) if end < 0 else end
    if end - cur.pos >= 3 and cur.text[end - 3] == "%" and cur.text[end - 2 : end].isdecimal():
        end -= 3
    data = cur.take(end - cur.pos)
    if ";" in data:
        raise HostError("15", "authentication data must not contain ';'")
    return data.encode("latin-1")


# -- DER RSAPublicKey ---------------------------------------------------------------------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_integer(value: int, unsigned: bool) -> bytes:
    length = max(1, (value.bit_length() + 7) // 8)
    body = value.to_bytes(length, "big")
    if not unsigned and body[0] & 0x80:
        body = b"\x00" + body
    return b"\x02" + _der_length(len(body)) + body


def encode_public_key(key: rsa.RSAPublicKey, encoding: str) -> bytes:
    """DER RSAPublicKey with unsigned (01) or two's-complement (02) INTEGERs."""
    numbers = key.public_numbers()
    unsigned = encoding == "01"
    body = _der_integer(numbers.n, unsigned) + _der_integer(numbers.e, unsigned)
    return b"\x30" + _der_length(len(body)) + body


def _read_tlv(buf: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf) or buf[pos] != tag:
        raise HostError("04", "public key does not conform to the encoding rules")
    first = buf[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 3 or pos + count > len(buf):
            raise HostError("04", "public key does not conform to the encoding rules")
        length = int.from_bytes(buf[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(buf):
        raise HostError("04", "public key shorter than its DER length")
    return buf[pos : pos + length], pos + length


def _integer(content: bytes, encoding: str | None) -> int:
    if not content:
        raise HostError("04", "empty INTEGER in the public key")
    if encoding == "02" and content[0] & 0x80:
        raise HostError("04", "negative INTEGER: the public key is not in two's-complement DER")
    if encoding == "01" and len(content) > 1 and content[0] == 0:
        raise HostError("04", "leading zero byte: the public key is not in unsigned encoding")
    return int.from_bytes(content, "big")


@dataclass(frozen=True)
class PublicKeyField:
    der: bytes  # the bytes as sent (what the MAC covers)
    key: rsa.RSAPublicKey


def take_public_key(cur: Cursor, encoding: str | None = None) -> PublicKeyField:
    """Read a DER RSAPublicKey from the cursor (its length follows from the DER header).
    ``encoding`` 01/02 enforces that encoding; None accepts either."""
    head = cur.text[cur.pos : cur.pos + 6].encode("latin-1")
    if len(head) < 2 or head[0] != 0x30:
        raise HostError("04", "public key does not start with a DER SEQUENCE")
    first = head[1]
    header = 2 + (first & 0x7F if first & 0x80 else 0)
    if len(head) < header:
        raise HostError("04", "public key DER header cut off")
    length = int.from_bytes(head[2:header], "big") if first & 0x80 else first
    if cur.remaining < header + length:
        raise HostError("04", "public key shorter than its DER length")
    der = cur.take_binary(header + length)
    return PublicKeyField(der=der, key=parse_public_key(der, encoding))


def parse_public_key(der: bytes, encoding: str | None = None) -> rsa.RSAPublicKey:
    """An RSA public key from DER RSAPublicKey (HostError 04 when it does not conform)."""
    body, end = _read_tlv(der, 0, 0x30)
    modulus_bytes, pos = _read_tlv(body, 0, 0x02)
    exponent_bytes, pos = _read_tlv(body, pos, 0x02)
    if pos != len(body) or end != len(der):
        raise HostError("04", "public key has data after the modulus and exponent")
    n, e = _integer(modulus_bytes, encoding), _integer(exponent_bytes, encoding)
    if not 320 <= n.bit_length() <= 4096 or e < 3 or e % 2 == 0 or e >= n:
        raise HostError("04", "not a usable RSA public key (modulus 320..4096 bits, odd exponent)")
    return rsa.RSAPublicNumbers(e, n).public_key()


def public_key_mac(lmk: VariantLmk, der: bytes, auth: bytes) -> bytes:
    """4-byte MAC on a public key and its authentication data under LMK pair 36-37."""
    key = lmk.pair_key(PUBLIC_KEY_MAC_PAIR)
    return _psec_mac.generate_cbc_mac(key, der + auth, 2, MAC_LENGTH, _psec_mac.Algorithm.DES)


def check_public_key_mac(lmk: VariantLmk, mac: bytes, der: bytes, auth: bytes) -> None:
    if not hmac.compare_digest(public_key_mac(lmk, der, auth), mac):
        raise HostError("01", "MAC verification failure on the public key")


def seal_public_key(lmk: KeyBlockLmk, der: bytes, algorithm: str = "R") -> str:
    return lmk.wrap(der, KeyBlockAttributes(usage=PUBLIC_KEY_USAGE, algorithm=algorithm, mode_of_use="V"))


def open_public_key_block(lmk: KeyBlockLmk, field: str) -> rsa.RSAPublicKey:
    attrs, der = lmk.unwrap(field, (PUBLIC_KEY_USAGE,))
    if attrs.algorithm != "R":
        raise HostError("A7", "the public key block does not hold an RSA key")
    return parse_public_key(der)


@dataclass(frozen=True)
class ProtectedPublicKey:
    """A public key as EY/GK receive it: MAC + DER + authentication data, or a key block."""

    block: str | None = None
    mac: bytes = b""
    public: PublicKeyField | None = None
    auth: bytes = b""


def take_protected_public_key(cur: Cursor) -> ProtectedPublicKey:
    """Read the public key field by its shape, before the LMK is known (binary fields may
    contain any byte, so the trailing ``%nn`` cannot be found by searching): a key block is
    ``S`` + version + 4 digits; MAC (4B) + DER has the DER's length byte where the 4th digit
    would be."""
    head = cur.peek(6)
    if len(head) == 6 and head[0] == "S" and head[1:].isdecimal():
        return ProtectedPublicKey(block=cur.key())
    mac = cur.take_binary(MAC_LENGTH)
    public = take_public_key(cur)
    return ProtectedPublicKey(mac=mac, public=public, auth=authentication_data(cur))


def open_protected_public_key(lmk: Lmk, protected: ProtectedPublicKey) -> rsa.RSAPublicKey:
    """Check the MAC (variant LMK) or open the key block (key-block LMK); 01 / A4 on failure."""
    if protected.block is not None:
        if not isinstance(lmk, KeyBlockLmk):
            raise HostError("26", "a public key block needs a key-block LMK; a variant LMK takes MAC + key")
        return open_public_key_block(lmk, protected.block)
    if not isinstance(lmk, VariantLmk):
        raise HostError("26", "a key-block LMK takes the public key as a key block (from EO)")
    assert protected.public is not None
    check_public_key_mac(lmk, protected.mac, protected.public.der, protected.auth)
    return protected.public.key


# -- private keys under the LMK -----------------------------------------------------------------

PrivateKeyObject = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class PrivateKey:
    key: PrivateKeyObject
    mode_of_use: str  # S / D / N (ECC: S / X / N)

    @property
    def algorithm(self) -> str:
        return "R" if isinstance(self.key, rsa.RSAPrivateKey) else "E"


def _pkcs8(key: PrivateKeyObject) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pad(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 8)


def _unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80"):
        raise HostError("49", "private key does not decrypt under this LMK")
    return stripped[:-1]


def seal_private_key(
    lmk: Lmk, key: PrivateKeyObject, mode_of_use: str, *, version: str = "00", exportability: str = "N"
) -> str:
    """The private key as the host field EJ/FZ return: length (4N) + cryptogram, or FFFF + block."""
    algorithm = "R" if isinstance(key, rsa.RSAPrivateKey) else "E"
    if isinstance(lmk, VariantLmk):
        der = _pkcs8(key)
        clear = _pad(mode_of_use.encode() + algorithm.encode() + hashlib.sha256(der).digest()[:8] + der)
        cryptogram = kc.block_encrypt(lmk.pair_key(PRIVATE_KEY_PAIR), clear, aes=False, cbc_iv=bytes(8))
        if len(cryptogram) > 9999:
            raise HostError("78", "private key too long for its length field")
        return f"{len(cryptogram):04d}" + cryptogram.decode("latin-1")
    attrs = KeyBlockAttributes(
        usage=PRIVATE_KEY_USAGE, algorithm=algorithm, mode_of_use=mode_of_use,
        version=version, exportability=exportability,
    )
    return KEY_BLOCK_LENGTH + lmk.wrap(_pkcs8(key), attrs)


def take_private_key_field(cur: Cursor) -> str:
    """The private key length (4N, or FFFF) and the key that follows, as one raw field."""
    length = cur.take(4)
    if length.upper() == KEY_BLOCK_LENGTH:
        if cur.peek(1) != "S":
            raise HostError("26", "private key length FFFF needs a key block (S)")
        return KEY_BLOCK_LENGTH + cur.key()
    if not length.isdecimal() or int(length) == 0 or int(length) % 8:
        raise HostError("78", "private key length must be a non-zero multiple of 8 bytes")
    if cur.remaining < int(length):
        raise HostError("78", "private key shorter than its length field")
    return length + cur.take(int(length))


# Private keys opened recently, per LMK object (they die with it): EW with the same key in a
# loop must not pay the DER parse and key validation of every call.
_OPENED: weakref.WeakKeyDictionary[Lmk, OrderedDict[str, PrivateKey]] = weakref.WeakKeyDictionary()
_OPENED_PER_LMK = 64
_OPENED_LOCK = threading.Lock()


def open_private_key(lmk: Lmk, field: str) -> PrivateKey:
    """Decrypt a private key field from :func:`take_private_key_field` under ``lmk``."""
    with _OPENED_LOCK:
        cache = _OPENED.setdefault(lmk, OrderedDict())
        opened = cache.get(field)
        if opened is not None:
            cache.move_to_end(field)
            return opened
    opened = _open_private_key(lmk, field)
    with _OPENED_LOCK:
        cache[field] = opened
        if len(cache) > _OPENED_PER_LMK:
            cache.popitem(last=False)
    return opened


def _open_private_key(lmk: Lmk, field: str) -> PrivateKey:
    if field.startswith(KEY_BLOCK_LENGTH):
        if not isinstance(lmk, KeyBlockLmk):
            raise HostError("26", "a key block cannot be used with a variant LMK")
        attrs, der = lmk.unwrap(field[4:], (PRIVATE_KEY_USAGE,))
        return PrivateKey(key=_load_private_key(der, attrs.algorithm), mode_of_use=attrs.mode_of_use)
    if not isinstance(lmk, VariantLmk):
        raise HostError("26", "a key-block LMK only takes private keys as key blocks (FFFF)")
    cryptogram = field[4:].encode("latin-1")
    clear = _unpad(kc.block_decrypt(lmk.pair_key(PRIVATE_KEY_PAIR), cryptogram, aes=False, cbc_iv=bytes(8)))
    mode, algorithm = clear[:1].decode("latin-1"), clear[1:2].decode("latin-1")
    check, der = clear[2:10], clear[10:]
    intact = hmac.compare_digest(hashlib.sha256(der).digest()[:8], check)
    if mode not in ("S", "D", "N", "X") or algorithm not in ("R", "E") or not intact:
        raise HostError("49", "private key does not decrypt under this LMK")
    return PrivateKey(key=_load_private_key(der, algorithm), mode_of_use=mode)


def _load_private_key(der: bytes, algorithm: str) -> PrivateKeyObject:
    try:
        # Both layouts authenticate the key (key-block MAC, or the digest inside the cryptogram),
        # so the expensive RSA consistency check (primality of p and q) is not repeated here.
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise HostError("49", "private key does not decrypt under this LMK") from exc
    expected = rsa.RSAPrivateKey if algorithm == "R" else ec.EllipticCurvePrivateKey
    if not isinstance(key, expected):
        raise HostError("49", "private key algorithm does not match its header")
    return key


def take_private_key_flag(cur: Cursor) -> None:
    """The private key flag: 99 = the key follows in the command; 00..20 name user storage."""
    flag = cur.take_digits(2)
    if flag == "99":
        return
    if int(flag) <= 20:
        raise HostError("12", "user storage is not available: give the private key in the command (flag 99)")
    raise HostError("04", "private key flag must be 99 (key in the command) or a storage index 00..20")


def require_mode(private: PrivateKey, modes: tuple[str, ...], lmk: Lmk) -> None:
    """The private key's mode of use must allow the operation (03 variant LMK, A8 key block)."""
    if private.mode_of_use not in modes:
        if isinstance(lmk, KeyBlockLmk):
            raise HostError("A8", f"the private key's mode of use {private.mode_of_use} does not allow this")
        raise HostError("03", "invalid private key type for this command")
