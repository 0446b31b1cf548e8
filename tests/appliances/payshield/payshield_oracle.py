"""The expected answers of the host commands, computed without the appliance's code.

Every value here comes from psec, pyemv, cryptography or hashlib directly, or from this
module's own implementation of a documented layout (the Thales variant LMK and ZMK variants,
ISO format 1 PIN blocks, TDES DUKPT), each checked against a published vector in
``test_payshield_oracle.py``. The soak client, the property tests and the known-answer tests
share it, so no test takes an expected value from the appliance it checks.

Account numbers are the host commands' 12-digit fields (the PAN's 12 rightmost digits before
the check digit); psec wants a PAN, so ``account + "0"`` stands for one.
"""

from __future__ import annotations

import hashlib
import re

import psec
from cryptography.hazmat.primitives import cmac, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from psec import des, pinblock
from pyemv import ac, kd

from payshield_inprocess import from_variant_lmk, pin_from_variant_lmk, under_keyblock_lmk, under_variant_lmk

__all__ = [
    "from_variant_lmk", "pin_from_variant_lmk", "under_keyblock_lmk", "under_variant_lmk",
]

#: The firmware number NC and NO report for firmware "1.4a 1.8.3" (docs/payshield.md).
FIRMWARE_NUMBER = "1500-1803"

# -- check values ------------------------------------------------------------------------------


def kcv(key: bytes, length: int = 3) -> str:
    """TDES key check value: ``length`` bytes of the encryption of zeros."""
    return des.generate_kcv(key, length).hex().upper()


def aes_kcv(key: bytes, length: int = 3) -> str:
    """AES key check value as payShield gives it: the CMAC of a zero block."""
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:length].hex().upper()


def variant_lmk_check_value(material: bytes) -> str:
    """NC's LMK check value of a variant LMK: KCV of pair 00-01, padded with zeros to 16."""
    return kcv(material[:16]) + "0" * 10


def keyblock_lmk_check_value(key: bytes) -> str:
    return aes_kcv(key) + "0" * 10


def odd_parity(key: bytes) -> bool:
    return all(bin(b).count("1") % 2 == 1 for b in key)


# -- keys under the LMK and under a ZMK --------------------------------------------------------


def from_keyblock_lmk(lmk_key: bytes, field: str) -> tuple[psec.tr31.Header, bytes]:
    """A key block ``S1...`` under the AES key-block LMK: (TR-31 header, clear key)."""
    assert field.startswith("S1"), field[:2]
    return psec.tr31.unwrap(lmk_key, "D" + field[2:])


def _zmk_variant(zmk: bytes, variant: int) -> bytes:
    key = bytearray(zmk)
    key[8] ^= variant
    return bytes(key)


def under_zmk(zmk: bytes, key: bytes, scheme: str) -> str:
    """A key exported under a ZMK: X9.17 (Z/X/Y: ECB per half) or Thales variant (U/T)."""
    parts = [key[i : i + 8] for i in range(0, len(key), 8)]
    if scheme in ("U", "T"):
        variants = (0xA6, 0x5A) if scheme == "U" else (0x6A, 0xDE, 0x2B)
        body = b"".join(des.encrypt_tdes_ecb(_zmk_variant(zmk, v), p) for v, p in zip(variants, parts))
    else:
        body = b"".join(des.encrypt_tdes_ecb(zmk, p) for p in parts)
    return ("" if scheme == "Z" else scheme) + body.hex().upper()


def from_zmk(zmk: bytes, field: str) -> bytes:
    scheme = field[0] if field[0] in "UTXY" else "Z"
    body = bytes.fromhex(field if scheme == "Z" else field[1:])
    parts = [body[i : i + 8] for i in range(0, len(body), 8)]
    if scheme in ("U", "T"):
        variants = (0xA6, 0x5A) if scheme == "U" else (0x6A, 0xDE, 0x2B)
        return b"".join(des.decrypt_tdes_ecb(_zmk_variant(zmk, v), p) for v, p in zip(variants, parts))
    return b"".join(des.decrypt_tdes_ecb(zmk, p) for p in parts)


# -- PIN blocks and PINs -----------------------------------------------------------------------


def encode_pin_block(fmt: str, pin: str, account: str, fill: str = "A5A5A5A5A5A5A5") -> bytes:
    """The clear PIN block in payShield format ``fmt`` (01 ISO 0, 05 ISO 1, 34 ISO 2, 47 ISO 3)."""
    pan = account + "0"
    if fmt == "01":
        return pinblock.encode_pinblock_iso_0(pin, pan)
    if fmt == "47":
        return pinblock.encode_pinblock_iso_3(pin, pan)
    if fmt == "34":
        return pinblock.encode_pinblock_iso_2(pin)
    if fmt == "05":  # ISO 1: 1, length, PIN, transaction-field fill (psec has no ISO 1)
        text = f"1{len(pin):X}{pin}"
        return bytes.fromhex(text + fill[: 16 - len(text)])
    raise ValueError(fmt)


def decode_pin_block(fmt: str, block: bytes, account: str) -> str:
    pan = account + "0"
    if fmt == "01":
        return pinblock.decode_pinblock_iso_0(block, pan)
    if fmt == "47":
        return pinblock.decode_pinblock_iso_3(block, pan)
    if fmt == "34":
        return pinblock.decode_pinblock_iso_2(block)
    if fmt == "05":
        text = block.hex().upper()
        assert text[0] == "1", text
        pin = text[2 : 2 + int(text[1], 16)]
        assert pin.isdigit() and 4 <= len(pin) <= 12, text
        return pin
    raise ValueError(fmt)


def encrypted_pin_block(key: bytes, fmt: str, pin: str, account: str) -> str:
    return des.encrypt_tdes_ecb(key, encode_pin_block(fmt, pin, account)).hex().upper()


def pin_of_block(key: bytes, block_hex: str, fmt: str, account: str) -> str:
    return decode_pin_block(fmt, des.decrypt_tdes_ecb(key, bytes.fromhex(block_hex)), account)


def pin_under_variant_lmk(pin: str, account: str, material: bytes) -> str:
    """The emulation's form of a PIN under a variant LMK: ISO 0 block, TDES under pair 02-03."""
    return des.encrypt_tdes_ecb(material[16:32], pinblock.encode_pinblock_iso_0(pin, account + "0")).hex().upper()


def pin_under_keyblock_lmk(pin: str, account: str, lmk_key: bytes) -> str:
    """A PIN under the AES key-block LMK: AES-ECB of the ISO 0 block and 8 filler bytes."""
    clear = pinblock.encode_pinblock_iso_0(pin, account + "0") + bytes(8)
    encryptor = Cipher(algorithms.AES(lmk_key), modes.ECB()).encryptor()
    return (encryptor.update(clear) + encryptor.finalize()).hex().upper()


def pin_from_keyblock_lmk(field: str, account: str, lmk_key: bytes) -> str:
    decryptor = Cipher(algorithms.AES(lmk_key), modes.ECB()).decryptor()
    clear = decryptor.update(bytes.fromhex(field)) + decryptor.finalize()
    return pinblock.decode_pinblock_iso_0(clear[:8], account + "0")


def pvv(pvk: bytes, pvki: str, pin: str, account: str) -> str:
    return psec.pin.generate_visa_pvv(pvk, pvki, pin[:4], account + "0")


def ibm_validation(field: str, account: str) -> str:
    """The 12-character PIN validation data field with ``N`` replaced by the account's last 5."""
    return field.replace("N", account[-5:], 1) if "N" in field else field


def ibm_offset(pvk: bytes, table: str, pin: str, validation: str, check_length: int) -> str:
    """The 12-character offset field: the offset of ``pin`` (its length), F-padded."""
    offset = psec.pin.generate_ibm3624_offset(pvk, table, pin, validation, 0, len(validation), "F")
    assert len(offset) == len(pin)
    return offset.ljust(12, "F")


def ibm_pin(pvk: bytes, table: str, offset: str, validation: str) -> str:
    return psec.pin.generate_ibm3624_pin(pvk, table, offset, validation, 0, len(validation), "F")


def ibm_verifies(pvk: bytes, table: str, pin: str, validation: str, offset_field: str, check_length: int) -> bool:
    """IBM 3624 verification as the manual defines it: the first ``check_length`` digits."""
    if len(pin) < check_length:
        return False
    expected = ibm_pin(pvk, table, offset_field[:check_length], validation)
    return pin[:check_length] == expected


def cvv(cvk: bytes, pan: str, expiry: str, service_code: str) -> str:
    return psec.cvv.generate_cvv(cvk, pan, expiry, service_code)


# -- data encryption and MACs ------------------------------------------------------------------


def tdes_ecb(key: bytes, data: bytes, *, encrypt: bool = True) -> bytes:
    return des.encrypt_tdes_ecb(key, data) if encrypt else des.decrypt_tdes_ecb(key, data)


def tdes_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool = True) -> bytes:
    return des.encrypt_tdes_cbc(key, iv, data) if encrypt else des.decrypt_tdes_cbc(key, iv, data)


def aes_crypt(key: bytes, data: bytes, iv: bytes | None = None, *, encrypt: bool = True) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv) if iv is not None else modes.ECB())
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def mac(key: bytes, data: bytes, algorithm: str, padding: str, size: str, *, aes: bool = False) -> str:
    """M6: ISO 9797-1 algorithm 1 / 3 (retail) or AES-CMAC (6); padding 0 none (1 on aligned data)."""
    length = 4 if size == "0" else 8
    pad = 1 if padding == "0" else int(padding)
    if algorithm == "3":
        value = psec.mac.generate_retail_mac(key[:8], key[8:], data, pad, length)
    elif algorithm == "1":
        value = psec.mac.generate_cbc_mac(key, data, pad, length,
                                          psec.mac.Algorithm.AES if aes else psec.mac.Algorithm.DES)
    else:
        value = aes_cmac(key, data)[:length]
    return value.hex().upper()


# -- EMV ---------------------------------------------------------------------------------------


def kq_session_key(mk: bytes, pan: str, psn: str, scheme: str, atc: bytes, un: bytes) -> tuple[bytes, ac.PaddingType]:
    icc_mk = kd.derive_icc_mk_a(mk, pan, psn)
    if scheme == "0":
        return icc_mk, ac.PaddingType.VISA
    if scheme == "1":
        return kd.derive_common_sk(icc_mk, atc + b"\x00\x00" + un), ac.PaddingType.EMV
    return kd.derive_common_sk(icc_mk, atc + bytes(6)), ac.PaddingType.EMV


# -- TDES DUKPT (ANSI X9.24-1) -----------------------------------------------------------------

_KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
MAC_REQUEST_VARIANT = bytes.fromhex("000000000000FF00000000000000FF00")
MAC_RESPONSE_VARIANT = bytes.fromhex("00000000FF00000000000000FF000000")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _des(key: bytes, block: bytes) -> bytes:
    return des.encrypt_tdes_ecb(key + key, block)  # single DES through two-key TDES K1 = K2


def dukpt_ipek(bdk: bytes, ksn: bytes) -> bytes:
    base = bytearray(ksn[:8])
    base[7] &= 0xE0
    left = des.encrypt_tdes_ecb(bdk, bytes(base))
    right = des.encrypt_tdes_ecb(_xor(bdk, _KEY_MASK), bytes(base))
    return left + right


def dukpt_transaction_key(bdk: bytes, ksn: bytes) -> bytes:
    """The current transaction key of ``ksn`` (10 bytes, 21-bit counter)."""
    key = dukpt_ipek(bdk, ksn)
    counter = int.from_bytes(ksn[-3:], "big") & 0x1FFFFF
    reg = bytearray(ksn[-8:])
    reg[5] &= 0xE0
    reg[6] = reg[7] = 0
    shift = 0x100000
    while shift:
        if counter & shift:
            reg_int = int.from_bytes(reg, "big") | shift
            reg = bytearray(reg_int.to_bytes(8, "big"))
            data = bytes(reg)
            right = _xor(_des(key[:8], _xor(data, key[8:])), key[8:])
            masked = _xor(key, _KEY_MASK)
            left = _xor(_des(masked[:8], _xor(data, masked[8:])), masked[8:])
            key = left + right
        shift >>= 1
    return key


def dukpt_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    return _xor(dukpt_transaction_key(bdk, ksn), PIN_VARIANT)


def dukpt_mac_key(bdk: bytes, ksn: bytes, *, response: bool = False) -> bytes:
    return _xor(dukpt_transaction_key(bdk, ksn), MAC_RESPONSE_VARIANT if response else MAC_REQUEST_VARIANT)


# -- RSA ---------------------------------------------------------------------------------------


def public_key_mac(material: bytes, der: bytes, auth: bytes = b"") -> bytes:
    """The 4-byte MAC a variant LMK puts on a public key: CBC-MAC under pair 36-37, method 2."""
    return psec.mac.generate_cbc_mac(material[18 * 16 : 19 * 16], der + auth, 2, 4, psec.mac.Algorithm.DES)


def private_key_from_variant_lmk(material: bytes, cryptogram: bytes) -> rsa.RSAPrivateKey:
    """An RSA private key under pair 34-35 (TDES-CBC, zero IV): mode, algorithm, SHA-256[:8], PKCS#8."""
    clear = des.decrypt_tdes_cbc(material[17 * 16 : 18 * 16], bytes(8), cryptogram).rstrip(b"\x00")
    assert clear.endswith(b"\x80")
    clear = clear[:-1]
    assert clear[2:10] == hashlib.sha256(clear[10:]).digest()[:8]
    return serialization.load_der_private_key(clear[10:], password=None)


def pkcs1_public_der(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


# -- error codes the manual documents per command ----------------------------------------------

#: Any command: invalid LMK identifier, invalid input data, command disabled, data length.
_ANY = {"13", "15", "68", "80"}
#: A command that takes keys under the LMK: key type, parity, scheme, length, key-block errors.
_KEYS = {"04", "10", "11", "26", "27", "83", "84", "A4", "A6", "A7", "A8"}
#: PIN blocks and PINs under the LMK.
_PINS = {"14", "20", "23", "24"}
_IBM = {"25", "81"}
_RSA = {"03", "04", "05", "06", "07", "12", "49", "74", "76", "77", "78", "A1"}

DOCUMENTED_ERRORS: dict[str, set[str]] = {
    "NC": _ANY, "NO": _ANY, "B2": _ANY,
    "A0": _ANY | _KEYS | {"29", "A1"},
    "A4": _ANY | _KEYS | {"03", "17"},
    "GG": _ANY | _KEYS | {"17"},
    "A6": _ANY | _KEYS | {"01", "A1"},
    "A8": _ANY | _KEYS | {"29"},
    "BU": _ANY | _KEYS | {"05"},
    "CA": _ANY | _KEYS | _PINS, "CC": _ANY | _KEYS | _PINS,
    "JA": _ANY | {"24"},
    "JC": _ANY | _KEYS | _PINS, "JE": _ANY | _KEYS | _PINS, "JG": _ANY | _KEYS | _PINS,
    "DA": _ANY | _KEYS | _PINS | _IBM | {"01"}, "EA": _ANY | _KEYS | _PINS | _IBM | {"01"},
    "DC": _ANY | _KEYS | _PINS | {"01"}, "EC": _ANY | _KEYS | _PINS | {"01"},
    "DG": _ANY | _KEYS | _PINS, "FW": _ANY | _KEYS | _PINS,
    "CW": _ANY | _KEYS, "CY": _ANY | _KEYS | {"01"},
    "M0": _ANY | _KEYS, "M2": _ANY | _KEYS,
    "M6": _ANY | _KEYS, "M8": _ANY | _KEYS | {"01"},
    "KQ": _ANY | _KEYS | {"01"},
    "EE": _ANY | _KEYS | _PINS | _IBM, "DE": _ANY | _KEYS | _PINS | _IBM,
    "BK": _ANY | _KEYS | _PINS | _IBM,
    "BC": _ANY | _KEYS | _PINS | {"01"}, "BE": _ANY | _KEYS | _PINS | {"01"},
    "CU": _ANY | _KEYS | _PINS | {"01"}, "DU": _ANY | _KEYS | _PINS | _IBM | {"01"},
    "CI": _ANY | _KEYS | _PINS, "G0": _ANY | _KEYS | _PINS,
    "CK": _ANY | _KEYS | _PINS | _IBM | {"01"}, "CM": _ANY | _KEYS | _PINS | {"01"},
    "GO": _ANY | _KEYS | _PINS | _IBM | {"01"}, "GQ": _ANY | _KEYS | _PINS | {"01"},
    "GW": _ANY | _KEYS | {"01"},
    "KW": _ANY | _KEYS | {"01", "05", "52"},
    "PM": _ANY | _KEYS | {"01", "05"},
    "EI": _ANY | _RSA | {"08", "17", "43"},
    "EO": _ANY | _RSA | {"17"},
    "EW": _ANY | _RSA | _KEYS,
    "EY": _ANY | _RSA | _KEYS | {"01", "02"},
    "GI": _ANY | _RSA | _KEYS | {"01"},
    "GK": _ANY | _RSA | _KEYS | {"01"},
    "GM": _ANY | {"05"},
    "N0": _ANY | {"01"},
    "FY": _ANY | {"03", "A1", "A8"},
    "J2": _ANY, "J4": _ANY, "J8": _ANY, "JK": _ANY,
    "NI": _ANY | {"81", "82"},
}


def documented_errors(command: str) -> set[str]:
    """The error codes the manual gives ``command`` (any other code is a defect)."""
    return DOCUMENTED_ERRORS.get(command, _ANY)


_RESPONSE = re.compile(rb"^[A-Z0-9]{2}[0-9A-Z]{2}")


def well_formed(response: bytes, command: str) -> str:
    """Check the response code and shape; return the error code."""
    assert _RESPONSE.match(response), response[:8]
    assert response[:2] == (command[0] + chr(ord(command[1]) + 1)).encode(), (command, response[:8])
    return response[2:4].decode("ascii")
