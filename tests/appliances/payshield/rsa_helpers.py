"""In-process access to the host-command path for the RSA/ECC/hash tests.

``Hsm.call`` runs one message through ``host_commands.execute`` (the same function the host
ports call) against a security domain holding the published Thales test LMK (variant, slot 00)
and a random AES key-block LMK (slot 01). Expected values never come from the appliance: they
are computed with ``cryptography``, ``hashlib`` and ``psec`` in the tests.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hsmcloud.appliances.payshield.domain import HostSettings, SecurityDomain
from hsmcloud.appliances.payshield.host_commands import execute
from hsmcloud.appliances.payshield.lmk import KeyBlockLmk, VariantLmk

from payshield_helpers import TEST_LMK


class Hsm:
    def __init__(self, *, authorised: bool = True) -> None:
        self.keyblock_material = os.urandom(32)
        self.domain = SecurityDomain(
            lmk_slots=2,
            lmks={0: VariantLmk(TEST_LMK), 1: KeyBlockLmk(self.keyblock_material, "01")},
            authorised={0, 1} if authorised else set(),
        )
        self.settings = HostSettings(header_length=4)

    def call(self, message: bytes) -> bytes:
        """The response without its header."""
        outcome = execute(b"HEAD" + message, self.domain, self.settings)
        assert outcome.response[:4] == b"HEAD"
        return outcome.response[4:]


def load_pkcs1_public_key(der: bytes) -> rsa.RSAPublicKey:
    """A DER RSAPublicKey (two's complement) loaded by cryptography itself."""
    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
    key = load_pem_public_key(pem)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def unsigned_der_public_key(der: bytes) -> rsa.RSAPublicKey:
    """Parse a DER RSAPublicKey whose INTEGERs are unsigned (encoding 01) without our code."""

    def tlv(buf: bytes, pos: int, tag: int) -> tuple[bytes, int]:
        assert buf[pos] == tag
        first = buf[pos + 1]
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
            start = pos + 2 + count
        else:
            length, start = first, pos + 2
        return buf[start : start + length], start + length

    body, end = tlv(der, 0, 0x30)
    assert end == len(der)
    modulus, pos = tlv(body, 0, 0x02)
    exponent, pos = tlv(body, pos, 0x02)
    assert pos == len(body)
    assert modulus[0] != 0, "encoding 01 writes the modulus without a leading zero byte"
    return rsa.RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")).public_key()
