"""Drive the host commands in-process (no sockets) with an LMK the test knows.

Keys are put under the LMK by this module's own, independent implementation of the Thales
variant encryption (checked against the published ThalesSim CW vector in the tests) and of
the documented key-block layout (``S`` + TR-31 version D through psec), so no expected value
and no input key comes from the appliance's code.
"""

from __future__ import annotations

import os

import psec
from psec import des, pinblock

from hsmcloud.appliances.payshield.domain import HostSettings, SecurityDomain
from hsmcloud.appliances.payshield.host_commands import execute
from hsmcloud.appliances.payshield.lmk import KeyBlockLmk, VariantLmk

from payshield_helpers import TEST_LMK

HEADER = b"HEAD"
_VARIANTS = (0xA6, 0x5A, 0x6A, 0xDE, 0x2B, 0x50, 0x74, 0x9C, 0xFA)
#: Key type pair code -> LMK pair (index into the 20 pairs), from the published key type table.
_PAIRS = {"00": 2, "01": 3, "02": 7, "03": 8, "04": 9, "05": 10, "06": 11, "07": 12, "08": 13,
          "09": 14, "0A": 15, "0B": 16, "0C": 17, "0D": 18, "0E": 19}


def _pair(material: bytes, key_type: str) -> bytearray:
    index, size = _PAIRS[key_type[1:]], len(material) // 20  # 16: 2-key LMK, 24: 3-key LMK
    key = bytearray(material[index * size : index * size + size])
    if key_type[0] != "0":
        key[0] ^= _VARIANTS[int(key_type[0]) - 1]
    return key


def under_variant_lmk(clear: bytes, key_type: str, material: bytes = TEST_LMK) -> str:
    """``clear`` as a scheme U (double) or T (triple) key field under the variant LMK."""
    lengths = {16: ("U", (0xA6, 0x5A)), 24: ("T", (0x6A, 0xDE, 0x2B))}
    tag, length_variants = lengths[len(clear)]
    out = b""
    for i, variant in enumerate(length_variants):
        key = _pair(material, key_type)
        key[8] ^= variant
        out += des.encrypt_tdes_ecb(bytes(key), clear[i * 8 : i * 8 + 8])
    return tag + out.hex().upper()


def from_variant_lmk(field: str, key_type: str, material: bytes = TEST_LMK) -> bytes:
    tag, body = field[0], bytes.fromhex(field[1:])
    length_variants = {"U": (0xA6, 0x5A), "T": (0x6A, 0xDE, 0x2B)}[tag]
    out = b""
    for i, variant in enumerate(length_variants):
        key = _pair(material, key_type)
        key[8] ^= variant
        out += des.decrypt_tdes_ecb(bytes(key), body[i * 8 : i * 8 + 8])
    return out


def pin_under_variant_lmk(pin: str, account: str, material: bytes = TEST_LMK) -> str:
    """A PIN under the variant LMK as this emulation keeps it: ISO 0 block, TDES under pair 02-03."""
    block = pinblock.encode_pinblock_iso_0(pin, account + "0")
    return des.encrypt_tdes_ecb(material[16:32], block).hex().upper()


def pin_from_variant_lmk(field: str, account: str, material: bytes = TEST_LMK) -> str:
    clear = des.decrypt_tdes_ecb(material[16:32], bytes.fromhex(field))
    return pinblock.decode_pinblock_iso_0(clear, account + "0")


def under_keyblock_lmk(lmk_key: bytes, clear: bytes, usage: str, algorithm: str = "T", mode: str = "N",
                       exportability: str = "E") -> str:
    """A key block under the key-block LMK in the documented layout: ``S1`` + TR-31 D body."""
    header = f"D0000{usage}{algorithm}{mode}00{exportability}0000"
    return "S1" + psec.tr31.wrap(lmk_key, header, clear)[1:]


class Host:
    """One security domain with a variant LMK in slot 0 (the Thales test LMK) and, optionally,
    an AES key-block LMK in slot 1."""

    def __init__(self, *, keyblock_key: bytes | None = None, variant_material: bytes = TEST_LMK) -> None:
        lmks = {0: VariantLmk(variant_material)}
        self.keyblock_key = keyblock_key or os.urandom(32)
        lmks[1] = KeyBlockLmk(self.keyblock_key, "01")
        self.domain = SecurityDomain(lmk_slots=2, lmks=lmks)
        self.settings = HostSettings()

    def call(self, message: bytes) -> bytes:
        response = execute(HEADER + message, self.domain, self.settings).response
        assert response[:4] == HEADER, response
        return response[4:]

    def ok(self, message: bytes) -> str:
        response = self.call(message)
        expected = message[:1] + bytes([message[1] + 1])
        assert response[:2] == expected and response[2:4] == b"00", response
        return response[4:].decode("latin-1")

    def error(self, message: bytes) -> str:
        response = self.call(message)
        assert response[:2] == message[:1] + bytes([message[1] + 1]), response
        return response[2:4].decode("ascii")
