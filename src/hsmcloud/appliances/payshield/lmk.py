"""Local Master Keys: the Thales variant LMK and the AES key-block LMK.

Variant LMK (20 double-length TDES "pairs", 00-01 ... 38-39). A key of type ``VPP`` (variant
digit V, LMK-pair code PP) is encrypted under the pair PP with the key-type variant V XORed
into the first byte of the pair (variants A6 5A 6A DE 2B 50 74 9C FA for 1..9). Double- and
triple-length keys under schemes U and T additionally XOR the length variant into the first
byte of the pair's right half for each 8-byte part (A6 5A; 6A DE 2B); schemes X and Y
(ANSI X9.17) encrypt each part in ECB without the length variant. This layout reproduces the
ThalesSim known answers and the independently published ``UA12049CC...`` vector.

Key-block LMK (AES-256). Keys are wrapped as ``S`` + a 16-character header with the Thales
layout (version ``1``, length, usage, algorithm, mode of use, key version, exportability,
optional-block count, LMK identifier) + encrypted key + MAC. The cryptography is TR-31
version D key derivation (``psec.tr31``) under the LMK: Thales' own key-block cryptography is
proprietary, so these blocks are not byte-compatible with a real payShield's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psec.tr31 as tr31

from . import keycrypto as kc
from .errors import HostError

LMK_PAIRS = 20
#: Keys taken out from under one LMK that it remembers (per process), so a command that names
#: the same key field again (every transaction of a terminal or zone) skips the decryption.
OPENED_KEY_CACHE_SIZE = 4096
VARIANT_LMK_LENGTH = LMK_PAIRS * 16
#: A triple-length (3-key 3DES) variant LMK: 20 pairs of 24 bytes.
VARIANT3_LMK_LENGTH = LMK_PAIRS * 24
VARIANT_SCHEMES = ("variant", "variant3")
KEYBLOCK_LMK_LENGTH = 32

KEY_TYPE_VARIANTS = (0xA6, 0x5A, 0x6A, 0xDE, 0x2B, 0x50, 0x74, 0x9C, 0xFA)
DOUBLE_LENGTH_VARIANTS = (0xA6, 0x5A)
TRIPLE_LENGTH_VARIANTS = (0x6A, 0xDE, 0x2B)

#: Key-type pair code -> LMK pair index (0 = pair 00-01, 1 = 02-03, ...).
PAIR_CODES = {
    "00": 2, "01": 3, "02": 7, "03": 8, "04": 9, "05": 10, "06": 11, "07": 12,
    "08": 13, "09": 14, "0A": 15, "0B": 16, "0C": 17, "0D": 18, "0E": 19,
}
#: LMK pair 02-03 encrypts PINs.
PIN_PAIR = 1

#: Key scheme tag -> key length in bytes (variant LMK).
SCHEME_LENGTHS = {"Z": 8, "U": 16, "T": 24, "X": 16, "Y": 24}
LENGTH_SCHEMES = {8: "Z", 16: "U", 24: "T"}

#: Key-block key usages a key of a variant key type may have, first one used when creating.
#: Each lists the TR-31 usage(s) and Thales' own numeric usage(s) for that kind of key.
TYPE_USAGES: dict[str, tuple[str, ...]] = {
    "000": ("K0", "K1", "52"),
    "001": ("P0", "72"),
    "002": ("P0", "V2", "V1", "V0", "K0", "71", "51"),
    "70D": ("P0", "71"),
    "80D": ("K0", "51"),
    "402": ("C0", "11", "12", "13"),
    "003": ("M3", "M1", "M0", "M6"),
    "008": ("M3", "M1", "M0", "M6"),
    "006": ("01",),
    "00A": ("D0", "22"),
    "00B": ("D0", "21"),
    "30B": ("D0", "23"),
    "009": ("B0", "41", "42", "43"),
    "609": ("B0", "41", "42", "43"),
    "809": ("B0", "41", "42", "43"),
    "109": ("E0",),
    "209": ("E2",),
    "309": ("E1",),
    "409": ("E3",),
    "509": ("E4",),
    "709": ("E6", "32"),
}

#: TR-31 key usages (ANSI X9.143 / ASC X9 TR 31-2018) a key block may carry.
TR31_USAGES = frozenset(
    "B0 B1 B2 B3 C0 D0 D1 D2 E0 E1 E2 E3 E4 E5 E6 I0 K0 K1 K2 K3 M0 M1 M2 M3 M4 M5 M6 M7 M8 "
    "P0 P1 S0 S1 S2 V0 V1 V2 V3 V4".split()
)
#: Thales' numeric key usages -> the TR-31 usage a TR-31 export carries instead (None: no
#: TR-31 equivalent, the key cannot leave as TR-31).
THALES_USAGES: dict[str, str | None] = {
    "01": None,  # WatchWord key (WWK)
    "02": "S0", "03": "S0", "04": "S0", "05": "S0", "06": "S0",  # RSA public / private keys
    "11": "C0", "12": "C0", "13": "C0",  # CVK: American Express CSC, MasterCard CVC, Visa CVV
    "21": "D0", "22": "D0", "23": "D0",  # DEK, ZEK, TEK
    "31": None,  # Visa Cash master load key (KML)
    "32": "E6",  # dynamic CVV master key (MK-CVC3)
    "41": "B0", "42": "B0", "43": "B0",  # DUKPT base derivation keys BDK-2/3/4
    "51": "K0", "52": "K0",  # TMK, ZMK
    "53": None, "54": None, "55": None,  # ZKA keys
    "61": None, "62": None, "63": None, "64": None, "65": None,  # HMAC keys (SHA-1 ... SHA-512)
    "71": "P0", "72": "P0",  # TPK, ZPK
    "73": None,  # transaction key scheme terminal key register (TKR)
}
KEY_USAGES = TR31_USAGES | frozenset(THALES_USAGES)
#: Modes of use of a key-block header.
MODES_OF_USE = frozenset("BCDEGNSTVXY")


def tr31_usage(usage: str) -> str:
    """The usage a TR-31 block carries for ``usage`` (Thales numeric usages map to TR-31's)."""
    if usage in TR31_USAGES:
        return usage
    mapped = THALES_USAGES.get(usage)
    if mapped is None:
        raise HostError("A6", f"key usage {usage} has no TR-31 equivalent")
    return mapped


#: Variant-LMK key type codes the host commands accept: code -> (key, LMK pair); the name is
#: left empty where no source we have names the key. Code = variant digit + pair code. Other
#: codes are error 04, as on the real HSM.
KEY_TYPES: dict[str, tuple[str, str]] = {
    "000": ("ZMK", "04-05"), "100": ("", "04-05"), "200": ("KML (Visa Cash)", "04-05"),
    "001": ("ZPK", "06-07"),
    "002": ("PVK / TPK / TMK", "14-15"), "402": ("CVK / CSCK", "14-15"),
    "003": ("TAK", "16-17"),
    "104": ("", "18-19"), "204": ("", "18-19"),
    "105": ("", "20-21"), "205": ("", "20-21"), "305": ("", "20-21"),
    "405": ("", "20-21"), "505": ("", "20-21"), "605": ("", "20-21"),
    "705": ("", "20-21"), "805": ("", "20-21"), "905": ("", "20-21"),
    "006": ("WWK", "22-23"), "106": ("", "22-23"), "206": ("", "22-23"),
    "306": ("", "22-23"), "406": ("", "22-23"), "506": ("", "22-23"),
    "606": ("", "22-23"),
    "008": ("ZAK", "26-27"),
    "009": ("BDK-1", "28-29"), "109": ("MK-AC", "28-29"), "209": ("MK-SMI", "28-29"),
    "309": ("MK-SMC", "28-29"), "409": ("MK-DAC", "28-29"), "509": ("MK-DN", "28-29"),
    "609": ("BDK-2", "28-29"), "709": ("MK-CVC3 / MK-dCVV", "28-29"), "809": ("BDK-3", "28-29"),
    "00A": ("ZEK", "30-31"),
    "00B": ("DEK", "32-33"), "30B": ("TEK", "32-33"),
    "00C": ("", "34-35"), "10C": ("", "34-35"),
    "00D": ("", "36-37"), "70D": ("TPK (key type 002 separation)", "36-37"),
    "80D": ("TMK (key type 002 separation)", "36-37"),
}


@dataclass(frozen=True, kw_only=True)
class KeyType:
    code: str
    variant: int
    pair: int


def parse_key_type(code: str) -> KeyType:
    """``000``, ``402``, ``00A``... -> KeyType; HostError 04 if not a key type code."""
    code = code.upper()
    if code not in KEY_TYPES:
        raise HostError("04", f"invalid key type code {code!r}")
    return KeyType(code=code, variant=int(code[0]), pair=PAIR_CODES[code[1:]])


@dataclass(frozen=True, kw_only=True)
class KeyBlockAttributes:
    """The header fields of a key block (Thales ``S`` or TR-31 ``R``)."""

    usage: str
    algorithm: str  # "T" TDES, "A" AES
    mode_of_use: str
    version: str = "00"
    exportability: str = "E"


def check_des_key(key: bytes, error: str) -> bytes:
    if len(key) not in (8, 16, 24) or not kc.has_odd_parity(key):
        raise HostError(error)
    return key


class VariantLmk:
    """A variant LMK: 20 TDES "pairs", double-length (2-key) or triple-length (3-key).

    In a 3-key LMK every pair is a triple-length key; the key-type variant goes into its first
    byte and the U/T length variant into the first byte of its second key, as for 2-key LMKs.
    """

    def __init__(self, material: bytes) -> None:
        if len(material) not in (VARIANT_LMK_LENGTH, VARIANT3_LMK_LENGTH):
            raise ValueError("a variant LMK is 20 pairs of 16 (2-key) or 24 (3-key) bytes")
        size = len(material) // LMK_PAIRS
        self._pairs = [material[i * size : (i + 1) * size] for i in range(LMK_PAIRS)]
        self.scheme = "variant" if size == 16 else "variant3"
        # Keys already taken out from under this LMK: (field, key type, parity error) -> clear key.
        # Decryption is deterministic, so a hit answers exactly as a fresh decryption would; only
        # successes are kept. It lives and dies with this LMK object (replaced on load, erase, release).
        self._opened: dict[tuple[str, str, str], bytes] = {}

    def check_value(self) -> str:
        """16-character LMK check value: 6 KCV digits of pair 00-01, then zeros (as ND shows)."""
        return kc.kcv(self._pairs[0]) + "0" * 10

    def _pair(self, pair: int, variant: int, length_variant: int | None) -> bytes:
        key = bytearray(self._pairs[pair])
        if variant:
            key[0] ^= KEY_TYPE_VARIANTS[variant - 1]
        if length_variant is not None:
            key[8] ^= length_variant
        return bytes(key)

    def encrypt(self, clear: bytes, key_type: str, scheme: str | None = None) -> str:
        """The key under this LMK as a host field, e.g. ``U`` + 32 hex."""
        kt = parse_key_type(key_type)
        scheme = scheme or LENGTH_SCHEMES[len(clear)]
        if SCHEME_LENGTHS.get(scheme) != len(clear):
            raise HostError("26")
        cryptogram = self._crypt(clear, kt, scheme, encrypt=True)
        return ("" if scheme == "Z" else scheme) + cryptogram.hex().upper()

    def decrypt(self, field: str, key_type: str, *, parity_error: str = "10") -> bytes:
        """Clear key from a host key field under this LMK; HostError on scheme/parity."""
        cache_key = (field, key_type, parity_error)
        key = self._opened.get(cache_key)
        if key is not None:
            return key
        kt = parse_key_type(key_type)
        scheme, cryptogram = split_variant_field(field)
        key = check_des_key(self._crypt(cryptogram, kt, scheme, encrypt=False), parity_error)
        if len(self._opened) >= OPENED_KEY_CACHE_SIZE:
            self._opened.clear()
        self._opened[cache_key] = key
        return key

    def _crypt(self, data: bytes, kt: KeyType, scheme: str, *, encrypt: bool) -> bytes:
        op = kc.tdes_encrypt if encrypt else kc.tdes_decrypt
        parts = [data[i : i + 8] for i in range(0, len(data), 8)]
        if scheme in ("U", "T"):
            variants = DOUBLE_LENGTH_VARIANTS if scheme == "U" else TRIPLE_LENGTH_VARIANTS
            return b"".join(
                op(self._pair(kt.pair, kt.variant, lv), part) for lv, part in zip(variants, parts)
            )
        lmk = self._pair(kt.pair, kt.variant, None)
        return b"".join(op(lmk, part) for part in parts)

    # PINs under LMK pair 02-03: an ISO format 0 block bound to the account, TDES-ECB.
    def encrypt_pin_block(self, block: bytes) -> str:
        return kc.tdes_encrypt(self._pairs[PIN_PAIR], block).hex().upper()

    def decrypt_pin_block(self, field: str) -> bytes:
        if len(field) != 16:
            raise HostError("15")
        return kc.tdes_decrypt(self._pairs[PIN_PAIR], _hex(field))

    pin_field_length = 16

    def pair_key(self, pair_code: str) -> bytes:
        """The clear key of one LMK pair (pair code as in key types: ``0C`` = 34-35, ``0D`` = 36-37),
        for data the HSM protects under a whole pair: RSA/ECC private keys, public-key MACs."""
        return self._pairs[PAIR_CODES[pair_code]]


class KeyBlockLmk:
    """An AES-256 key-block LMK."""

    scheme = "keyblock"
    pin_field_length = 32

    def __init__(self, material: bytes, lmk_id: str = "00") -> None:
        if len(material) != KEYBLOCK_LMK_LENGTH:
            raise ValueError("a key-block LMK is one AES-256 key")
        self._key = material
        self.lmk_id = lmk_id
        # Key blocks already unwrapped under this LMK (successes only; the usage is checked per call).
        self._opened: dict[str, tuple[KeyBlockAttributes, bytes]] = {}

    def check_value(self) -> str:
        return kc.kcv(self._key, "A") + "0" * 10

    def wrap(self, clear: bytes, attrs: KeyBlockAttributes) -> str:
        header = (
            "D0000" + attrs.usage + attrs.algorithm + attrs.mode_of_use + attrs.version
            + attrs.exportability + "00" + self.lmk_id
        )
        try:
            block = tr31.wrap(self._key, header, clear)
        except (tr31.HeaderError, tr31.KeyBlockError) as exc:
            raise HostError("83", str(exc)) from exc
        return "S1" + block[1:]

    def unwrap(self, field: str, usages: tuple[str, ...] | None) -> tuple[KeyBlockAttributes, bytes]:
        opened = self._opened.get(field)
        if opened is not None:
            if usages is not None and opened[0].usage not in usages:
                raise HostError("A6", f"key usage {opened[0].usage} not allowed here")
            return opened
        if not field.startswith("S1") or len(field) < 17:
            raise HostError("26" if not field.startswith("S") else "83")
        try:
            header, key = tr31.unwrap(self._key, "D" + field[2:])
        except tr31.KeyBlockError as exc:
            message = str(exc)
            raise HostError("A4" if "MAC" in message else "83", message) from exc
        except tr31.HeaderError as exc:
            raise HostError("83", str(exc)) from exc
        attrs = KeyBlockAttributes(
            usage=header.key_usage,
            algorithm=header.algorithm,
            mode_of_use=header.mode_of_use,
            version=header.version_num,
            exportability=header.exportability,
        )
        if usages is not None and attrs.usage not in usages:
            raise HostError("A6", f"key usage {attrs.usage} not allowed here")
        if attrs.algorithm == "T":
            check_des_key(key, "10")
        if len(self._opened) >= OPENED_KEY_CACHE_SIZE:
            self._opened.clear()
        self._opened[field] = (attrs, key)
        return attrs, key

    def encrypt_pin_block(self, block: bytes) -> str:
        return kc.block_encrypt(self._key, block + os.urandom(8), aes=True).hex().upper()

    def decrypt_pin_block(self, field: str) -> bytes:
        if len(field) != 32:
            raise HostError("15")
        return kc.block_decrypt(self._key, _hex(field), aes=True)[:8]


Lmk = VariantLmk | KeyBlockLmk


def split_variant_field(field: str) -> tuple[str, bytes]:
    """``U0123...`` -> ("U", bytes); a bare 16-hex field is single length (scheme Z)."""
    if not field:
        raise HostError("15")
    tag = field[0].upper()
    if tag in SCHEME_LENGTHS:
        body = field[1:]
        if len(body) != SCHEME_LENGTHS[tag] * 2:
            raise HostError("15")
        return tag, _hex(body)
    if tag in ("S", "R"):
        raise HostError("26", "a key block cannot be used with a variant LMK")
    if len(field) != 16:
        raise HostError("15")
    return "Z", _hex(field)


_HEX_DIGITS = frozenset("0123456789ABCDEFabcdef")


def _hex(text: str) -> bytes:
    if len(text) % 2 or not _HEX_DIGITS.issuperset(text):
        raise HostError("15", "not hexadecimal")
    return bytes.fromhex(text)


hex_bytes = _hex


def lmk_from_components(scheme: str, components: list[bytes], lmk_id: str) -> Lmk:
    """XOR the card components into an LMK (DES pairs forced to odd parity)."""
    combined = components[0]
    for component in components[1:]:
        combined = kc.xor(combined, component)
    if scheme in VARIANT_SCHEMES:
        return VariantLmk(kc.adjust_parity(combined))
    return KeyBlockLmk(combined, lmk_id)


def material_of(lmk: Lmk) -> bytes:
    """The secret material (only for encrypted persistence)."""
    if isinstance(lmk, VariantLmk):
        return b"".join(lmk._pairs)
    return lmk._key
