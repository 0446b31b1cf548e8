"""NIST SP 800-108 key derivation (PKCS#11 v3.0 §2.42): CKM_SP800_108_COUNTER_KDF and
CKM_SP800_108_FEEDBACK_KDF with an HMAC (SHA-1, SHA-2) or AES-CMAC pseudo-random function.

The PRF input of iteration i is the application's data parameters in their order: the
iteration variable (counter mode: i in the counter format; feedback mode: the previous block,
the IV at first), an optional counter (feedback mode), [L] the length of the derived keying
material, and byte arrays. The keying material is split into the primary key and then the
additional derived keys, in order, each CKA_VALUE_LEN bytes long.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import algorithms

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import (
    CounterFormat,
    DkmLengthFormat,
    Sp800108CounterParams,
    Sp800108FeedbackParams,
)

from ..errors import (
    KeySizeRange,
    KeyTypeInconsistent,
    MechanismParamInvalid,
    TemplateIncomplete,
)
from .base import MechanismSpec

#: PRF mechanism → hash (None: AES-CMAC).
PRFS: dict[int, type[hashes.HashAlgorithm] | None] = {
    c.CKM_SHA_1_HMAC: hashes.SHA1,
    c.CKM_SHA224_HMAC: hashes.SHA224,
    c.CKM_SHA256_HMAC: hashes.SHA256,
    c.CKM_SHA384_HMAC: hashes.SHA384,
    c.CKM_SHA512_HMAC: hashes.SHA512,
    c.CKM_AES_CMAC: None,
}
HMAC_KEY_TYPES = frozenset({c.CKK_GENERIC_SECRET, c.CKK_SHA_1_HMAC, c.CKK_SHA224_HMAC,
                            c.CKK_SHA256_HMAC, c.CKK_SHA384_HMAC, c.CKK_SHA512_HMAC})
BASE_KEY_TYPES = HMAC_KEY_TYPES | {c.CKK_AES}
#: The longest key one call derives (bytes), as for HKDF.
MAX_KEY_BYTES = 512
COUNTER_WIDTHS = (8, 16, 24, 32)
DKM_WIDTHS = (8, 16, 24, 32, 40, 48, 56, 64)


def _prf(prf_type: int, base):
    """(the PRF over the base key, its output length in bytes)."""
    if prf_type not in PRFS:
        raise MechanismParamInvalid("prfType must be CKM_SHA_1_HMAC, a CKM_SHA-2 HMAC or "
                                    "CKM_AES_CMAC.")
    algorithm = PRFS[prf_type]
    key = base.crypto()
    if algorithm is None:
        if base.key_type != c.CKK_AES:
            raise KeyTypeInconsistent("CKM_AES_CMAC as the PRF needs an AES base key.")

        def mac(data: bytes) -> bytes:
            m = cmac.CMAC(algorithms.AES(key))
            m.update(data)
            return m.finalize()
        return mac, 16
    if base.key_type not in HMAC_KEY_TYPES:
        raise KeyTypeInconsistent("An HMAC PRF needs a generic secret (or HMAC) base key.")

    def hmac(data: bytes) -> bytes:
        m = crypto_hmac.HMAC(key, algorithm())
        m.update(data)
        return m.finalize()
    return hmac, algorithm.digest_size


def _encode(value: int, width_bits: int, little_endian: bool, what: str) -> bytes:
    if value >= 1 << width_bits:
        raise MechanismParamInvalid(f"{what} {value} does not fit in {width_bits} bits.")
    return value.to_bytes(width_bits // 8, "little" if little_endian else "big")


def _check_params(params, feedback: bool) -> None:
    iteration = [d for d in params.data_params if d.type == c.CK_SP800_108_ITERATION_VARIABLE]
    if len(iteration) != 1:
        raise MechanismParamInvalid("Exactly one CK_SP800_108_ITERATION_VARIABLE is needed.")
    counters = [d for d in params.data_params if d.type == c.CK_SP800_108_OPTIONAL_COUNTER]
    lengths = [d for d in params.data_params if d.type == c.CK_SP800_108_DKM_LENGTH]
    if len(lengths) > 1:
        raise MechanismParamInvalid("At most one CK_SP800_108_DKM_LENGTH.")
    if feedback:
        if iteration[0].value is not None:
            raise MechanismParamInvalid("In feedback mode the iteration variable is the previous "
                                        "block: its pValue is NULL.")
        if len(counters) > 1:
            raise MechanismParamInvalid("At most one CK_SP800_108_OPTIONAL_COUNTER.")
    else:
        if counters:
            raise MechanismParamInvalid("Counter mode has no CK_SP800_108_OPTIONAL_COUNTER.")
        counters = iteration
    for d in counters:
        if not isinstance(d.value, CounterFormat) or d.value.width_bits not in COUNTER_WIDTHS:
            raise MechanismParamInvalid("A counter is a CK_SP800_108_COUNTER_FORMAT of 8, 16, 24 "
                                        "or 32 bits.")
    for d in lengths:
        v = d.value
        if not isinstance(v, DkmLengthFormat) or v.width_bits not in DKM_WIDTHS or v.method not in (
                c.CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, c.CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS):
            raise MechanismParamInvalid("[L] is a CK_SP800_108_DKM_LENGTH_FORMAT of 8..64 bits "
                                        "with method SUM_OF_KEYS or SUM_OF_SEGMENTS.")


def _key_length(attrs: dict) -> int:
    length = attrs.get(c.CKA_VALUE_LEN)
    if length is None:
        raise TemplateIncomplete("A key derived with SP 800-108 needs CKA_VALUE_LEN (bytes).")
    if not 1 <= length <= MAX_KEY_BYTES:
        raise KeySizeRange(f"SP 800-108 derives keys of 1..{MAX_KEY_BYTES} bytes here.")
    return length


def kbkdf(params, feedback: bool, prf, block: int, lengths: list[int]) -> list[bytes]:
    """The keys of ``lengths`` bytes each, from one run of the KDF."""
    _check_params(params, feedback)
    total = sum(lengths)
    blocks = -(-total // block)
    dkm_bits = {c.CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS: total * 8,
                c.CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS: blocks * block * 8}
    previous = bytes(params.iv) if feedback else b""
    output = bytearray()
    for i in range(1, blocks + 1):
        data = bytearray()
        for d in params.data_params:
            if d.type == c.CK_SP800_108_ITERATION_VARIABLE and feedback:
                data += previous
            elif d.type in (c.CK_SP800_108_ITERATION_VARIABLE, c.CK_SP800_108_OPTIONAL_COUNTER):
                data += _encode(i, d.value.width_bits, d.value.little_endian, "The counter")
            elif d.type == c.CK_SP800_108_DKM_LENGTH:
                data += _encode(dkm_bits[d.value.method], d.value.width_bits,
                                d.value.little_endian, "[L]")
            else:
                data += d.value
        previous = prf(bytes(data))
        output += previous
    keys, offset = [], 0
    for length in lengths:
        keys.append(bytes(output[offset:offset + length]))
        offset += length
    return keys


def _derive_keys(feedback: bool):
    cls = Sp800108FeedbackParams if feedback else Sp800108CounterParams

    def derive_keys(base, mechanism, layout, resolve, attrs_list) -> list[bytes]:
        params = mechanism.param
        if not isinstance(params, cls):
            raise MechanismParamInvalid(f"The mechanism needs a CK_SP800_108_"
                                        f"{'FEEDBACK_' if feedback else ''}KDF_PARAMS parameter.")
        lengths = [_key_length(attrs) for attrs in attrs_list]
        prf, block = _prf(params.prf_type, base)
        return kbkdf(params, feedback, prf, block, lengths)

    def derive(base, mechanism, layout, resolve, attrs) -> bytes:
        return derive_keys(base, mechanism, layout, resolve, [attrs])[0]
    return derive, derive_keys


def mechanisms() -> list[MechanismSpec]:
    specs = []
    for mechanism, feedback in ((c.CKM_SP800_108_COUNTER_KDF, False),
                                (c.CKM_SP800_108_FEEDBACK_KDF, True)):
        derive, derive_keys = _derive_keys(feedback)
        specs.append(MechanismSpec(type=mechanism, derive=derive, derive_keys=derive_keys,
                                   min_key=1, max_key=512, key_types=BASE_KEY_TYPES))
    return specs
