"""RSA key management host commands: EI (generate a key pair), EO (MAC a public key), GI / GK
(import / export a DES key under RSA). Key formats are in :mod:`.asymmetric`; EW/EY (signatures)
are in :mod:`.signatures`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .. import keycrypto as kc
from ..errors import HostError
from ..fields import Cursor
from ..lmk import LENGTH_SCHEMES, SCHEME_LENGTHS, KeyBlockAttributes, KeyBlockLmk, VariantLmk
from . import asymmetric as asym

if TYPE_CHECKING:
    from ..host_commands import CommandContext

#: Smallest modulus this emulation generates (``cryptography`` refuses smaller keys; the real
#: device starts at 320 bits), and the largest under a variant / key-block LMK.
MIN_GENERATED_BITS = 1024
MAX_VARIANT_BITS = 2048
MAX_KEYBLOCK_BITS = 4096
#: Public exponents ``cryptography`` generates keys for.
GENERATED_EXPONENTS = (3, 65537)

#: GI/GK "DES key type" (4N): the LMK pair's first number and the variant -> pair code.
PAIR_NUMBERS = {
    "04": "00", "06": "01", "14": "02", "16": "03", "18": "04", "20": "05", "22": "06", "24": "07",
    "26": "08", "28": "09", "30": "0A", "32": "0B", "34": "0C", "36": "0D", "38": "0E",
}
ENCRYPTION_RSA = "01"


def cmd_ei(ctx: CommandContext, cur: Cursor) -> str:
    """Generate an RSA key pair: key type indicator (1), modulus bits (4N), public key encoding
    (2N), [exponent length (4N) + exponent], [%LMK] [#KVN(2) optional blocks(2)] [&exportability]
    -> public key (DER) + private key under the LMK. Authorised state."""
    key_type = cur.take(1)
    if key_type not in asym.KEY_TYPE_MODES:
        raise HostError("05", "key type indicator must be 0 (signature), 1 (key management) or 2 (both)")
    bits_text = cur.take(4)
    if not bits_text.isdecimal():
        raise HostError("04", "modulus length must be 4 decimal digits")
    bits = int(bits_text)
    encoding = cur.take_digits(2)
    if encoding not in asym.PUBLIC_KEY_ENCODINGS:
        raise HostError("03", "public key encoding must be 01 or 02")
    exponent = 65537
    if cur.peek(1).isdecimal():
        exponent = _take_exponent(cur)
    block: dict[str, str] = {}
    lmk_id = asym.take_options(cur, {
        "#": lambda c: block.__setitem__("version", asym.take_version_and_blocks(c)),
        "&": lambda c: block.__setitem__("exportability", asym.take_exportability(c)),
    })
    lmk = ctx.lmk(lmk_id)
    ctx.require_authorised()
    if block and not isinstance(lmk, KeyBlockLmk):
        raise HostError("15", "'#' and '&' key-block fields need a key-block LMK")
    maximum = MAX_KEYBLOCK_BITS if isinstance(lmk, KeyBlockLmk) else MAX_VARIANT_BITS
    if bits % 8 or not MIN_GENERATED_BITS <= bits <= maximum:
        raise HostError("04", f"modulus length must be a multiple of 8 in {MIN_GENERATED_BITS}..{maximum}")
    try:
        private = rsa.generate_private_key(public_exponent=exponent, key_size=bits)
    except ValueError as exc:
        raise HostError("43", str(exc)) from exc
    public = asym.encode_public_key(private.public_key(), encoding)
    sealed = asym.seal_private_key(lmk, private, asym.KEY_TYPE_MODES[key_type], **block)
    return public.decode("latin-1") + sealed


def _take_exponent(cur: Cursor) -> int:
    length = int(cur.take_digits(4))
    if not 2 <= length <= 4096:
        raise HostError("06", "public exponent length must be 2..4096 bits")
    raw = cur.take_binary((length + 7) // 8)
    exponent = int.from_bytes(raw, "big")
    if exponent.bit_length() > length:
        raise HostError("06", "public exponent longer than its length field")
    if exponent % 2 == 0:
        raise HostError("08", "the public exponent must be odd")
    if exponent not in GENERATED_EXPONENTS:
        raise HostError("06", "this emulation generates keys with public exponent 3 or 65537 only")
    return exponent


def cmd_eo(ctx: CommandContext, cur: Cursor) -> str:
    """Import a public key: encoding (2N), public key (DER), [authentication data] -> MAC (4B)
    + public key (variant LMK), or the public key in a key block (key-block LMK). Authorised state."""
    encoding = cur.take_digits(2)
    if encoding not in asym.PUBLIC_KEY_ENCODINGS:
        raise HostError("03", "public key encoding must be 01 or 02")
    public = asym.take_public_key(cur, encoding)
    auth = asym.authentication_data(cur)
    lmk = ctx.lmk(cur.trailing())
    ctx.require_authorised()
    if isinstance(lmk, KeyBlockLmk):
        if auth:
            raise HostError("15", "authentication data is not used with a key-block LMK")
        return asym.seal_public_key(lmk, public.der)
    return (asym.public_key_mac(lmk, public.der, auth) + public.der).decode("latin-1")


# -- DES keys under RSA ---------------------------------------------------------------------------


def _rsa_padding(cur: Cursor) -> padding.AsymmetricPadding:
    """Encryption identifier (01 RSA) and pad mode (01 PKCS#1 v1.5, 02 OAEP + its fields)."""
    if cur.take(2) != ENCRYPTION_RSA:
        raise HostError("15", "encryption identifier must be 01 (RSA)")
    mode = cur.take_digits(2)
    if mode == "01":
        return padding.PKCS1v15()
    if mode != "02":
        raise HostError("07", "pad mode must be 01 (PKCS#1 v1.5) or 02 (OAEP)")
    if cur.take_digits(2) != "01":
        raise HostError("15", "mask generation function must be 01 (MGF1)")
    if cur.take_digits(2) != "01":
        raise HostError("15", "MGF hash function must be 01 (SHA-1)")
    label = cur.take_binary(int(cur.take_digits(2)))
    if not cur.optional(";"):
        raise HostError("15", "';' missing after the OAEP encoding parameters")
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=label or None)


def _des_key_type(code: str) -> str:
    """GI/GK key type: ``FFFF`` (key block), or LMK pair + variant (``0600`` = 06-07 variant 0)."""
    if code == "FFFF":
        return "FFF"
    if len(code) != 4 or code[:2] not in PAIR_NUMBERS or not code[2:].isdecimal() or int(code[2:]) > 9:
        raise HostError("04", f"invalid DES key type {code!r} (LMK pair + variant, e.g. 0600)")
    return str(int(code[2:])) + PAIR_NUMBERS[code[:2]]


def _kcv(value: bytes, kcv_type: str) -> str:
    return kc.kcv(value, "T", 8 if kcv_type == "0" else 3)


def cmd_gk(ctx: CommandContext, cur: Cursor) -> str:
    """Export a DES key under an RSA public key: encryption id, pad mode [OAEP fields], key type
    (4N), key length flag (1N), key under LMK, check value (16H), MAC (4B) + public key (variant
    LMK) or the public key block (key-block LMK), [authentication data] -> length (4N) + key (PK)."""
    from .. import host_commands as hc

    pad = _rsa_padding(cur)
    key_type = _des_key_type(cur.take(4))
    flag = cur.take(1)
    if flag not in ("0", "1", "2"):
        raise HostError("05", "DES key flag must be 0, 1 or 2")
    key_field = cur.key()
    check_value = cur.take_hex(16)
    protected = asym.take_protected_public_key(cur)
    lmk = ctx.lmk(cur.trailing())
    if key_type == "FFF" and isinstance(lmk, VariantLmk):
        raise HostError("04", "key type FFFF needs a key-block LMK")
    public_key = asym.open_protected_public_key(lmk, protected)
    key = hc.open_key(lmk, key_field, key_type, None if key_type != "FFF" else ("K0", "K1", "D0", "P0", "B0"))
    if key.aes or len(key.value) != 8 * (int(flag) + 1):
        raise HostError("27", "DES key flag does not match the key")
    if key.attrs is not None and key.attrs.exportability == "N":
        raise HostError("29", "the key is not exportable")
    if _kcv(key.value, "0") != check_value:
        raise HostError("01", "check value does not match the key")
    try:
        encrypted = public_key.encrypt(key.value, pad)
    except ValueError as exc:
        raise HostError("76", "the public key is too short for this key and padding") from exc
    return f"{len(encrypted):04d}" + encrypted.decode("latin-1")


def cmd_gi(ctx: CommandContext, cur: Cursor) -> str | tuple[str, str]:
    """Import a DES key encrypted under an RSA public key: encryption id, pad mode [OAEP fields],
    key type (4N), encrypted key length (4N), key (PK), ';', private key flag (99), private key
    length + key, [';' 0, key scheme LMK, KCV type] or [#usage mode KVN exportability 00]
    -> key under LMK + check value (16H, or 6H with KCV type 1)."""
    from .. import host_commands as hc

    pad = _rsa_padding(cur)
    key_type = _des_key_type(cur.take(4))
    length = int(cur.take_digits(4))
    if length == 0 or cur.remaining < length:
        raise HostError("76", "encrypted key shorter than its length field")
    encrypted = cur.take_binary(length)
    if not cur.optional(";"):
        raise HostError("15", "';' missing after the encrypted key")
    asym.take_private_key_flag(cur)
    private_field = asym.take_private_key_field(cur)
    scheme, kcv_type = None, "0"
    if cur.optional(";"):
        if cur.take(1) != "0":
            raise HostError("15", "the field after ';' must be 0")
        scheme = cur.take(1).upper()
        kcv_type = cur.take(1)
        if kcv_type not in ("0", "1"):
            raise HostError("15", "KCV type must be 0 or 1")
    attrs: list[KeyBlockAttributes] = []
    lmk_id = asym.take_options(cur, {"#": lambda c: attrs.append(_gi_block_attributes(c))})
    lmk = ctx.lmk(lmk_id)
    private = asym.open_private_key(lmk, private_field)
    asym.require_mode(private, asym.KEY_MANAGEMENT_MODES, lmk)
    if not isinstance(private.key, rsa.RSAPrivateKey):
        raise HostError("A7", "GI needs an RSA private key")
    if length != private.key.key_size // 8:
        raise HostError("76", "encrypted key length is not the modulus length")
    try:
        value = private.key.decrypt(encrypted, pad)
    except ValueError as exc:
        raise HostError("77", "the encrypted key does not decrypt (padding)") from exc
    if len(value) not in (8, 16, 24):
        raise HostError("77", "the decrypted key is not 8, 16 or 24 bytes")
    parity_ok = kc.has_odd_parity(value)
    value = kc.adjust_parity(value)
    if isinstance(lmk, VariantLmk):
        if key_type == "FFF":
            raise HostError("04", "key type FFFF needs a key-block LMK")
        if attrs:
            raise HostError("15", "'#' key-block fields need a key-block LMK")
        scheme = scheme or LENGTH_SCHEMES[len(value)]
        if SCHEME_LENGTHS.get(scheme) != len(value):
            raise HostError("26" if scheme not in SCHEME_LENGTHS else "27", "key scheme does not fit the key")
        under_lmk = hc.seal_key(lmk, value, key_type, scheme)
    else:
        block = attrs[0] if attrs else hc.default_attributes(key_type, "T")
        under_lmk = lmk.wrap(value, block)
    data = under_lmk + _kcv(value, kcv_type)
    return data if parity_ok else ("01", data)


def _gi_block_attributes(cur: Cursor) -> KeyBlockAttributes:
    usage, mode = cur.take(2), cur.take(1)
    kvn = asym.take_key_version(cur)
    exportability = asym.take_exportability(cur)
    if cur.take(2) != "00":
        raise HostError("15", "optional key-block blocks are not supported")
    return KeyBlockAttributes(usage=usage, algorithm="T", mode_of_use=mode, version=kvn, exportability=exportability)
