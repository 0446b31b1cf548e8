"""Mechanism parameter structures.

Structures with pointers (``CK_GCM_PARAMS``, ``CK_RSA_PKCS_OAEP_PARAMS``, ...) travel field by
field ("structured" on the NTLS wire); the rest travel as the application's raw bytes, which
``unpack`` reads in its native layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from .attributes import NativeLayout


class ParamError(ValueError):
    """A mechanism parameter of the wrong size or shape (CKR_MECHANISM_PARAM_INVALID)."""


# -- structured (pointer-carrying) parameters ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class GcmParams:
    iv: bytes
    iv_bits: int
    aad: bytes
    tag_bits: int


@dataclass(frozen=True, slots=True)
class OaepParams:
    hash_alg: int
    mgf: int
    source: int
    source_data: bytes


@dataclass(frozen=True, slots=True)
class Ecdh1DeriveParams:
    kdf: int
    shared_data: bytes
    public_data: bytes


@dataclass(frozen=True, slots=True)
class HkdfParams:
    extract: bool
    expand: bool
    prf_hash_mechanism: int
    salt_type: int
    salt: bytes
    salt_key: int
    info: bytes


@dataclass(frozen=True, slots=True)
class KeyDerivationStringData:
    data: bytes


@dataclass(frozen=True, slots=True)
class AesCbcEncryptDataParams:
    iv: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class EddsaParams:
    ph_flag: bool
    context_data: bytes


@dataclass(frozen=True, slots=True)
class CounterFormat:
    """CK_SP800_108_COUNTER_FORMAT: how the counter is laid out in the PRF input."""

    little_endian: bool
    width_bits: int


@dataclass(frozen=True, slots=True)
class DkmLengthFormat:
    """CK_SP800_108_DKM_LENGTH_FORMAT: how [L], the length of the derived keying material, is."""

    method: int
    little_endian: bool
    width_bits: int


@dataclass(frozen=True, slots=True)
class PrfDataParam:
    """CK_PRF_DATA_PARAM: ``value`` is a CounterFormat (or None: feedback mode's iteration
    variable), a DkmLengthFormat or bytes, by ``type``."""

    type: int
    value: object


@dataclass(frozen=True, slots=True)
class Sp800108CounterParams:
    """CK_SP800_108_KDF_PARAMS; ``additional_keys`` are the templates of the additional keys."""

    prf_type: int
    data_params: tuple
    additional_keys: tuple


@dataclass(frozen=True, slots=True)
class Sp800108FeedbackParams:
    """CK_SP800_108_FEEDBACK_KDF_PARAMS."""

    prf_type: int
    data_params: tuple
    iv: bytes
    additional_keys: tuple


STRUCTURED_TYPES = (
    GcmParams, OaepParams, Ecdh1DeriveParams, HkdfParams, KeyDerivationStringData,
    AesCbcEncryptDataParams, EddsaParams, Sp800108CounterParams, Sp800108FeedbackParams,
)

# -- raw (pointer-free) parameters ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PssParams:
    """CK_RSA_PKCS_PSS_PARAMS: hashAlg, mgf, sLen (three CK_ULONGs)."""

    hash_alg: int
    mgf: int
    salt_length: int

    def pack(self, layout: NativeLayout) -> bytes:
        return layout.pack_ulongs(self.hash_alg, self.mgf, self.salt_length)

    @classmethod
    def unpack(cls, raw: bytes, layout: NativeLayout) -> PssParams:
        if len(raw) != 3 * layout.ulong_size:
            raise ParamError(f"CK_RSA_PKCS_PSS_PARAMS is {3 * layout.ulong_size} bytes, not {len(raw)}")
        return cls(*layout.unpack_ulongs(raw))


@dataclass(frozen=True, slots=True)
class CtrParams:
    """CK_AES_CTR_PARAMS: ulCounterBits (CK_ULONG), then the 16-byte counter block."""

    counter_bits: int
    counter_block: bytes

    def pack(self, layout: NativeLayout) -> bytes:
        return layout.pack_ulongs(self.counter_bits) + self.counter_block

    @classmethod
    def unpack(cls, raw: bytes, layout: NativeLayout) -> CtrParams:
        if len(raw) != layout.ulong_size + 16:
            raise ParamError(f"CK_AES_CTR_PARAMS is {layout.ulong_size + 16} bytes, not {len(raw)}")
        (bits,) = layout.unpack_ulongs(raw[: layout.ulong_size])
        return cls(bits, bytes(raw[layout.ulong_size:]))


@dataclass(frozen=True, slots=True)
class MacGeneralParams:
    """CK_MAC_GENERAL_PARAMS: the MAC length in bytes (one CK_ULONG)."""

    length: int

    def pack(self, layout: NativeLayout) -> bytes:
        return layout.pack_ulongs(self.length)

    @classmethod
    def unpack(cls, raw: bytes, layout: NativeLayout) -> MacGeneralParams:
        if len(raw) != layout.ulong_size:
            raise ParamError(f"CK_MAC_GENERAL_PARAMS is {layout.ulong_size} bytes, not {len(raw)}")
        return cls(layout.unpack_ulongs(raw)[0])


RAW_TYPES = (PssParams, CtrParams, MacGeneralParams)


@dataclass(frozen=True, slots=True)
class Mechanism:
    """A CK_MECHANISM: its type and its parameter (None, raw bytes or a structured value)."""

    type: int
    param: object = None
