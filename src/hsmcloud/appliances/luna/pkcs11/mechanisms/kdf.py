"""HKDF (RFC 5869): CKM_HKDF_DERIVE from a secret key, CKM_HKDF_DATA from a data object, and
CKM_HKDF_KEY_GEN."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import HkdfParams

from ..errors import (
    KeySizeRange,
    KeyTypeInconsistent,
    MechanismParamInvalid,
    TemplateIncomplete,
    TemplateInconsistent,
)
from .base import MechanismSpec, no_param, structured_param
from .digest import HASHES

HKDF_BASE_TYPES = frozenset({c.CKK_HKDF, c.CKK_GENERIC_SECRET})
MAX_OUTPUT = 255  # times the hash length (RFC 5869)


def hkdf(params: HkdfParams, ikm: bytes, salt_key, length: int | None) -> bytes:
    algorithm_class = HASHES.get(params.prf_hash_mechanism)
    if algorithm_class is None:
        raise MechanismParamInvalid("prfHashMechanism must be CKM_SHA_1 or a CKM_SHA-2 digest.")
    size = algorithm_class.digest_size
    if not (params.extract or params.expand):
        raise MechanismParamInvalid("bExtract or bExpand must be true.")
    prk = ikm
    if params.extract:
        if params.salt_type == c.CKF_HKDF_SALT_NULL:
            salt = bytes(size)
        elif params.salt_type == c.CKF_HKDF_SALT_DATA:
            salt = bytes(params.salt)
        elif params.salt_type == c.CKF_HKDF_SALT_KEY:
            salt = salt_key(params.salt_key)
        else:
            raise MechanismParamInvalid("ulSaltType must be CKF_HKDF_SALT_NULL, _DATA or _KEY.")
        mac = crypto_hmac.HMAC(salt, algorithm_class())
        mac.update(bytes(ikm))
        prk = mac.finalize()
    if not params.expand:
        if length not in (None, size):
            raise TemplateInconsistent(f"Extract only gives {size} bytes.")
        return prk
    if length is None:
        length = size
    if not 1 <= length <= MAX_OUTPUT * size:
        raise TemplateInconsistent(f"HKDF gives 1..{MAX_OUTPUT * size} bytes.")
    return HKDFExpand(algorithm_class(), length, bytes(params.info)).derive(prk)


def _derive(from_data: bool):
    def derive(base, mechanism, layout, resolve, attrs) -> bytes:
        params = structured_param(mechanism, HkdfParams)
        if from_data:
            if base.cls != c.CKO_DATA:
                raise KeyTypeInconsistent("CKM_HKDF_DATA derives from a data object.")
            ikm = base.attrs.get(c.CKA_VALUE, b"")
        else:
            if base.key_type not in HKDF_BASE_TYPES:
                raise KeyTypeInconsistent("HKDF derives from a CKK_HKDF or generic secret key.")
            ikm = base.crypto()

        def salt_key(handle: int) -> bytes:
            key = resolve(handle)
            if key.key_type not in HKDF_BASE_TYPES:
                raise MechanismParamInvalid("hSaltKey must be a CKK_HKDF or generic secret key.")
            return key.crypto()

        return hkdf(params, ikm, salt_key, attrs.get(c.CKA_VALUE_LEN))
    return derive


def generate_hkdf_key(attrs: dict, mechanism, layout) -> bytes:
    no_param(mechanism)
    length = attrs.get(c.CKA_VALUE_LEN)
    if length is None:
        raise TemplateIncomplete("An HKDF key needs CKA_VALUE_LEN (bytes).")
    if not 1 <= length <= 512:
        raise KeySizeRange("HKDF keys are 1..512 bytes.")
    return os.urandom(length)


def mechanisms() -> list[MechanismSpec]:
    return [
        MechanismSpec(type=c.CKM_HKDF_DERIVE, derive=_derive(False), min_key=1, max_key=512,
                      key_types=HKDF_BASE_TYPES),
        MechanismSpec(type=c.CKM_HKDF_DATA, derive=_derive(True), min_key=1, max_key=512),
        MechanismSpec(type=c.CKM_HKDF_KEY_GEN, generate=generate_hkdf_key, min_key=1,
                      max_key=512, key_types=frozenset({c.CKK_HKDF})),
    ]
