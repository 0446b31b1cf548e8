"""HMAC with SHA-1 and SHA-2 (full length and _GENERAL), and generic secret key generation."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import MacGeneralParams

from ..errors import KeySizeRange, MechanismParamInvalid, TemplateIncomplete
from .base import MacVerify, MechanismSpec, SignOperation, no_param, raw_param, require_key_type

#: Secret key types an HMAC accepts: generic secrets and the HMAC key types.
HMAC_KEY_TYPES = frozenset({c.CKK_GENERIC_SECRET, c.CKK_SHA_1_HMAC, c.CKK_SHA224_HMAC,
                            c.CKK_SHA256_HMAC, c.CKK_SHA384_HMAC, c.CKK_SHA512_HMAC})
#: Key sizes in bytes (HMAC) and, for generic secret generation, in bits.
MIN_KEY_BYTES, MAX_KEY_BYTES = 1, 512

_HMACS = {
    c.CKM_SHA_1_HMAC: hashes.SHA1, c.CKM_SHA224_HMAC: hashes.SHA224,
    c.CKM_SHA256_HMAC: hashes.SHA256, c.CKM_SHA384_HMAC: hashes.SHA384,
    c.CKM_SHA512_HMAC: hashes.SHA512,
}
_GENERAL = {
    c.CKM_SHA_1_HMAC_GENERAL: hashes.SHA1, c.CKM_SHA224_HMAC_GENERAL: hashes.SHA224,
    c.CKM_SHA256_HMAC_GENERAL: hashes.SHA256, c.CKM_SHA384_HMAC_GENERAL: hashes.SHA384,
    c.CKM_SHA512_HMAC_GENERAL: hashes.SHA512,
}


class _Hmac(SignOperation):
    __slots__ = ("_hmac", "_length")

    def __init__(self, value: bytes, algorithm, length: int) -> None:
        self._hmac = crypto_hmac.HMAC(value, algorithm)
        self._length = length

    def update(self, data: bytes) -> None:
        self._hmac.update(bytes(data))

    def final(self) -> bytes:
        return self._hmac.finalize()[: self._length]


def _hmac_key(key) -> bytes:
    require_key_type(key, *HMAC_KEY_TYPES)
    value = key.crypto()
    if not MIN_KEY_BYTES <= len(value) <= MAX_KEY_BYTES:
        raise KeySizeRange(f"HMAC keys are {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes.")
    return value


def _length(mechanism_type: int, mechanism, layout, hash_class) -> int:
    if mechanism_type in _HMACS:
        no_param(mechanism)
        return hash_class.digest_size
    length = raw_param(mechanism, MacGeneralParams, layout).length
    if not 1 <= length <= hash_class.digest_size:
        raise MechanismParamInvalid(f"The MAC length must be 1..{hash_class.digest_size} bytes.")
    return length


def _sign(mechanism_type: int, hash_class):
    def start(key, mechanism, layout):
        length = _length(mechanism_type, mechanism, layout, hash_class)
        return _Hmac(_hmac_key(key), hash_class(), length)
    return start


def _verify(mechanism_type: int, hash_class):
    def start(key, mechanism, layout):
        length = _length(mechanism_type, mechanism, layout, hash_class)
        return MacVerify(_Hmac(_hmac_key(key), hash_class(), length), length)
    return start


def generate_generic(attrs: dict, mechanism, layout) -> bytes:
    no_param(mechanism)
    length = attrs.get(c.CKA_VALUE_LEN)
    if length is None:
        raise TemplateIncomplete("A generic secret needs CKA_VALUE_LEN (bytes).")
    if not MIN_KEY_BYTES <= length <= MAX_KEY_BYTES:
        raise KeySizeRange(f"Generic secrets are {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes.")
    return os.urandom(length)


def mechanisms() -> list[MechanismSpec]:
    size = dict(min_key=MIN_KEY_BYTES, max_key=MAX_KEY_BYTES, key_types=HMAC_KEY_TYPES)
    specs = [MechanismSpec(type=c.CKM_GENERIC_SECRET_KEY_GEN, generate=generate_generic,
                           min_key=8 * MIN_KEY_BYTES, max_key=8 * MAX_KEY_BYTES,
                           key_types=frozenset({c.CKK_GENERIC_SECRET}))]
    for table in (_HMACS, _GENERAL):
        for mechanism_type, hash_class in table.items():
            specs.append(MechanismSpec(type=mechanism_type, sign=_sign(mechanism_type, hash_class),
                                       verify=_verify(mechanism_type, hash_class), **size))
    return specs
