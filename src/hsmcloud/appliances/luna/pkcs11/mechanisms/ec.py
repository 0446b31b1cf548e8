"""Elliptic curves: P-192/224/256/384/521 key pairs, ECDSA (raw and hash-and-sign), ECDH1
derive; Ed25519 and Ed448 key pairs and EdDSA."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import Ecdh1DeriveParams, EddsaParams

from .. import keys
from ..errors import (
    DataLenRange,
    KeySizeRange,
    MechanismParamInvalid,
    SignatureInvalid,
    SignatureLenRange,
    TemplateIncomplete,
    TemplateInconsistent,
)
from .base import (
    Accumulating,
    MechanismSpec,
    SignOperation,
    VerifyOperation,
    no_param,
    require_key_type,
    structured_param,
)

_EC = frozenset({c.CKK_EC})
_EDWARDS = frozenset({c.CKK_EC_EDWARDS})

_ECDSA_HASHES = {
    c.CKM_ECDSA_SHA1: hashes.SHA1,
    c.CKM_ECDSA_SHA224: hashes.SHA224,
    c.CKM_ECDSA_SHA256: hashes.SHA256,
    c.CKM_ECDSA_SHA384: hashes.SHA384,
    c.CKM_ECDSA_SHA512: hashes.SHA512,
}
#: A raw CKM_ECDSA input is a hash; `cryptography` wants to know which by its size.
_BY_SIZE = {cls.digest_size: cls for cls in (hashes.SHA1, hashes.SHA224, hashes.SHA256,
                                             hashes.SHA384, hashes.SHA512)}
_KDF_HASHES = {
    c.CKD_SHA1_KDF: hashes.SHA1,
    c.CKD_SHA224_KDF: hashes.SHA224,
    c.CKD_SHA256_KDF: hashes.SHA256,
    c.CKD_SHA384_KDF: hashes.SHA384,
    c.CKD_SHA512_KDF: hashes.SHA512,
}


def _ec_params(public_attrs: dict, private_attrs: dict) -> bytes:
    params = public_attrs.get(c.CKA_EC_PARAMS, private_attrs.get(c.CKA_EC_PARAMS))
    if params is None:
        raise TemplateIncomplete("An EC key pair needs CKA_EC_PARAMS (the curve).")
    other = private_attrs.get(c.CKA_EC_PARAMS)
    if other is not None and other != params:
        raise TemplateInconsistent("The two templates name different curves.")
    return params


def _generate_ec(min_bits: int):
    def generate(public_attrs, private_attrs, mechanism, layout):
        no_param(mechanism)
        curve = keys.curve_of_params(_ec_params(public_attrs, private_attrs), c.CKK_EC)
        if curve.bits < min_bits:
            raise KeySizeRange(f"{curve.name} is below {min_bits} bits (FIPS mode).")
        return ec.generate_private_key(curve.crypto())
    return generate


def _generate_edwards(public_attrs, private_attrs, mechanism, layout):
    no_param(mechanism)
    curve = keys.curve_of_params(_ec_params(public_attrs, private_attrs), c.CKK_EC_EDWARDS)
    return curve.edwards.private.generate()


# -- ECDSA ------------------------------------------------------------------------------------


def _prehashed(data: bytes, order_bits: int) -> tuple[bytes, hashes.HashAlgorithm]:
    """A raw ECDSA input as a hash `cryptography` accepts, standing for the same integer.

    FIPS 186-4 takes the leftmost ``order_bits`` bits of the input; left zeros do not change
    the integer while the padded input still fits in ``order_bits``."""
    size = len(data)
    if size in _BY_SIZE:
        return data, _BY_SIZE[size]()
    if size * 8 > order_bits:
        if order_bits % 8:
            raise DataLenRange(f"A raw ECDSA input of {size} bytes is not supported on this curve.")
        data = data[: order_bits // 8]
        size = len(data)
        if size in _BY_SIZE:
            return data, _BY_SIZE[size]()
    for target in sorted(_BY_SIZE):
        if target >= size and target * 8 <= order_bits:
            return bytes(target - size) + data, _BY_SIZE[target]()
    raise DataLenRange(f"A raw ECDSA input of {size} bytes is not supported on this curve.")


class _EcdsaRawSign(Accumulating, SignOperation):
    def __init__(self, key) -> None:
        super().__init__()
        self._key = key
        self._curve = keys.curve_of_key(key)

    def final(self) -> bytes:
        data, algorithm = _prehashed(self.message(), self._key.curve.key_size)
        return _raw_signature(self._key.sign(data, ec.ECDSA(utils.Prehashed(algorithm))),
                              self._curve)


#: One ECDSA signature algorithm object per hash (they are immutable; making one per call costs).
_ECDSA_ALGORITHMS = {cls: ec.ECDSA(cls()) for cls in _ECDSA_HASHES.values()}


class _EcdsaHashSign(SignOperation):
    __slots__ = ("_key", "_curve", "_algorithm", "_hash")

    def __init__(self, key, algorithm) -> None:
        self._key, self._algorithm = key, algorithm
        self._curve = keys.curve_of_key(key)
        self._hash = None  # made on the first C_SignUpdate; a one-shot C_Sign needs none

    def update(self, data: bytes) -> None:
        if self._hash is None:
            self._hash = hashes.Hash(self._algorithm)
        self._hash.update(data)

    def final(self) -> bytes:
        if self._hash is None:
            return self.sign(b"")
        der = self._key.sign(self._hash.finalize(), ec.ECDSA(utils.Prehashed(self._algorithm)))
        return _raw_signature(der, self._curve)

    def sign(self, data: bytes) -> bytes:
        der = self._key.sign(bytes(data), _ECDSA_ALGORITHMS[type(self._algorithm)])
        return _raw_signature(der, self._curve)


def _raw_signature(der: bytes, curve: keys.Curve) -> bytes:
    r, s = utils.decode_dss_signature(der)
    size = curve.field_bytes
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _der_signature(raw: bytes, curve: keys.Curve) -> bytes:
    size = curve.field_bytes
    if len(raw) != 2 * size:
        raise SignatureLenRange(f"An ECDSA signature on {curve.name} is {2 * size} bytes (r||s).")
    return utils.encode_dss_signature(int.from_bytes(raw[:size], "big"),
                                      int.from_bytes(raw[size:], "big"))


class _EcdsaVerify(VerifyOperation):
    def __init__(self, key, algorithm) -> None:
        self._key, self._algorithm = key, algorithm
        self._curve = keys.curve_of_key(key)
        self._hash = hashes.Hash(algorithm) if algorithm is not None else None
        self._raw = Accumulating() if algorithm is None else None

    def update(self, data: bytes) -> None:
        if self._hash is not None:
            self._hash.update(data)
        else:
            self._raw.update(data)

    def final(self, signature: bytes) -> None:
        der = _der_signature(bytes(signature), self._curve)
        if self._hash is not None:
            data, algorithm = self._hash.finalize(), self._algorithm
        else:
            data, algorithm = _prehashed(self._raw.message(), self._key.curve.key_size)
        try:
            self._key.verify(der, data, ec.ECDSA(utils.Prehashed(algorithm)))
        except InvalidSignature:
            raise SignatureInvalid() from None


def _ecdsa_sign(mechanism_type: int):
    def start(key, mechanism, layout):
        require_key_type(key, c.CKK_EC)
        no_param(mechanism)
        if mechanism_type == c.CKM_ECDSA:
            return _EcdsaRawSign(key.crypto())
        return _EcdsaHashSign(key.crypto(), _ECDSA_HASHES[mechanism_type]())
    return start


def _ecdsa_verify(mechanism_type: int):
    def start(key, mechanism, layout):
        require_key_type(key, c.CKK_EC)
        no_param(mechanism)
        algorithm = None if mechanism_type == c.CKM_ECDSA else _ECDSA_HASHES[mechanism_type]()
        return _EcdsaVerify(key.crypto(), algorithm)
    return start


# -- ECDH -------------------------------------------------------------------------------------


def ecdh_derive(base_key, mechanism, layout, resolve, attrs) -> bytes:
    require_key_type(base_key, c.CKK_EC)
    params = structured_param(mechanism, Ecdh1DeriveParams)
    private = base_key.crypto()
    curve = keys.curve_of_key(private)
    try:
        point = keys.unwrap_ec_point(params.public_data, curve)
    except Exception:
        raise MechanismParamInvalid("pPublicData is not a point of the base key's curve.") from None
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve.crypto(), point)
    except ValueError:
        raise MechanismParamInvalid("pPublicData is not a point on the curve.") from None
    shared = private.exchange(ec.ECDH(), peer)
    length = attrs.get(c.CKA_VALUE_LEN)
    if params.kdf == c.CKD_NULL:
        if params.shared_data:
            raise MechanismParamInvalid("CKD_NULL takes no shared data.")
        if length is None:
            return shared
        if not 0 < length <= len(shared):
            raise TemplateInconsistent(f"CKA_VALUE_LEN must be 1..{len(shared)} with CKD_NULL.")
        return shared[:length]
    algorithm = _KDF_HASHES.get(params.kdf)
    if algorithm is None:
        raise MechanismParamInvalid(f"KDF {params.kdf} is not supported.")
    if length is None:
        length = algorithm.digest_size
    if not 0 < length <= 1024:
        raise TemplateInconsistent("CKA_VALUE_LEN must be 1..1024 bytes.")
    return X963KDF(algorithm=algorithm(), length=length,
                   sharedinfo=bytes(params.shared_data) or None).derive(shared)


# -- EdDSA ------------------------------------------------------------------------------------


def _eddsa_params(mechanism) -> None:
    if mechanism.param in (None, b""):
        return
    params = structured_param(mechanism, EddsaParams)
    if params.ph_flag or params.context_data:
        raise MechanismParamInvalid("Only pure EdDSA (no prehash, no context) is supported.")


class _EddsaSign(Accumulating, SignOperation):
    def __init__(self, key) -> None:
        super().__init__()
        self._key = key

    def final(self) -> bytes:
        return self._key.sign(self.message())


class _EddsaVerify(Accumulating, VerifyOperation):
    def __init__(self, key) -> None:
        super().__init__()
        self._key = key

    def final(self, signature: bytes) -> None:
        size = keys.curve_of_key(self._key).edwards.signature_size
        if len(signature) != size:
            raise SignatureLenRange(f"The EdDSA signature of this curve is {size} bytes.")
        try:
            self._key.verify(bytes(signature), self.message())
        except InvalidSignature:
            raise SignatureInvalid() from None


def _eddsa_sign(key, mechanism, layout):
    require_key_type(key, c.CKK_EC_EDWARDS)
    _eddsa_params(mechanism)
    return _EddsaSign(key.crypto())


def _eddsa_verify(key, mechanism, layout):
    require_key_type(key, c.CKK_EC_EDWARDS)
    _eddsa_params(mechanism)
    return _EddsaVerify(key.crypto())


def mechanisms(*, min_bits: int) -> list[MechanismSpec]:
    """The EC mechanisms; ``min_bits`` is 224 in FIPS mode (no P-192), else 192."""
    size = dict(min_key=min_bits, max_key=521, key_types=_EC)
    curves = c.CKF_EC_F_P | c.CKF_EC_OID | c.CKF_EC_UNCOMPRESS
    specs = [
        MechanismSpec(type=c.CKM_EC_KEY_PAIR_GEN, generate_pair=_generate_ec(min_bits),
                      extra_flags=curves, **size),
        MechanismSpec(type=c.CKM_ECDSA, sign=_ecdsa_sign(c.CKM_ECDSA),
                      verify=_ecdsa_verify(c.CKM_ECDSA), extra_flags=curves, **size),
        MechanismSpec(type=c.CKM_ECDH1_DERIVE, derive=ecdh_derive, extra_flags=curves, **size),
        MechanismSpec(type=c.CKM_EC_EDWARDS_KEY_PAIR_GEN, generate_pair=_generate_edwards,
                      min_key=255, max_key=448, key_types=_EDWARDS, approved=False,
                      extra_flags=c.CKF_EC_OID),
        MechanismSpec(type=c.CKM_EDDSA, sign=_eddsa_sign, verify=_eddsa_verify, min_key=255,
                      max_key=448, key_types=_EDWARDS, approved=False, extra_flags=c.CKF_EC_OID),
    ]
    for mechanism_type in _ECDSA_HASHES:
        specs.append(MechanismSpec(type=mechanism_type, sign=_ecdsa_sign(mechanism_type),
                                   verify=_ecdsa_verify(mechanism_type),
                                   approved=mechanism_type != c.CKM_ECDSA_SHA1,
                                   extra_flags=curves, **size))
    return specs
