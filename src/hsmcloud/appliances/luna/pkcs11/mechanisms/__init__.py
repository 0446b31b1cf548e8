"""The mechanisms this token supports, by CKM_* number, built once per FIPS setting."""

from __future__ import annotations

from functools import cache

from .. import keys
from . import aes, digest, ec, hmac, kdf, rsa, sp800_108
from .base import MechanismSpec


@cache
def registry(*, fips: bool) -> dict[int, MechanismSpec]:
    """Every mechanism; in FIPS mode (HSM policy 12 = 0) only the approved ones, RSA from 2048."""
    specs = [
        *rsa.mechanisms(min_bits=keys.RSA_FIPS_MIN_BITS if fips else keys.RSA_MIN_BITS,
                        generate_min_bits=keys.RSA_FIPS_MIN_BITS if fips else keys.RSA_GENERATE_MIN_BITS),
        *ec.mechanisms(min_bits=224 if fips else 192), *aes.mechanisms(), *hmac.mechanisms(), *digest.MECHANISMS,
        *kdf.mechanisms(), *sp800_108.mechanisms(),
    ]
    return {spec.type: spec for spec in specs if spec.approved or not fips}
