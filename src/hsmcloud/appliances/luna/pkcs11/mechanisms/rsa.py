"""RSA: key pair generation, PKCS#1 v1.5, PSS, OAEP, raw (X.509) and the hash-and-sign variants."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import OaepParams, PssParams

from .. import keys
from ..errors import (
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    KeySizeRange,
    MechanismParamInvalid,
    SignatureInvalid,
    SignatureLenRange,
    TemplateIncomplete,
    TemplateInconsistent,
    WrappedKeyLenRange,
)
from .base import (
    Accumulating,
    CipherOperation,
    MechanismSpec,
    SignOperation,
    VerifyOperation,
    no_param,
    raw_param,
    require_key_type,
    structured_param,
)
from .digest import HASHES, MGF1_HASHES

_RSA = frozenset({c.CKK_RSA})

#: DER DigestInfo prefixes (RFC 8017 §9.2 note 1): a CKM_RSA_PKCS signature over one of these
#: is the PKCS#1 v1.5 signature of the digest that follows.
_DIGEST_INFO = {
    bytes.fromhex("3021300906052b0e03021a05000414"): hashes.SHA1,
    bytes.fromhex("302d300d06096086480165030402040500041c"): hashes.SHA224,
    bytes.fromhex("3031300d060960864801650304020105000420"): hashes.SHA256,
    bytes.fromhex("3041300d060960864801650304020205000430"): hashes.SHA384,
    bytes.fromhex("3051300d060960864801650304020305000440"): hashes.SHA512,
}

_HASH_AND_SIGN = {
    c.CKM_SHA1_RSA_PKCS: hashes.SHA1,
    c.CKM_SHA224_RSA_PKCS: hashes.SHA224,
    c.CKM_SHA256_RSA_PKCS: hashes.SHA256,
    c.CKM_SHA384_RSA_PKCS: hashes.SHA384,
    c.CKM_SHA512_RSA_PKCS: hashes.SHA512,
}
_HASH_AND_SIGN_PSS = {
    c.CKM_SHA1_RSA_PKCS_PSS: c.CKM_SHA_1,
    c.CKM_SHA224_RSA_PKCS_PSS: c.CKM_SHA224,
    c.CKM_SHA256_RSA_PKCS_PSS: c.CKM_SHA256,
    c.CKM_SHA384_RSA_PKCS_PSS: c.CKM_SHA384,
    c.CKM_SHA512_RSA_PKCS_PSS: c.CKM_SHA512,
}


def modulus_bytes(key) -> int:
    return (key.key_size + 7) // 8


# -- key pair generation -----------------------------------------------------------------------


def generate_pair(public_attrs: dict, private_attrs: dict, mechanism, layout, *, min_bits: int):
    no_param(mechanism)
    bits = public_attrs.get(c.CKA_MODULUS_BITS)
    if bits is None:
        raise TemplateIncomplete("An RSA key pair needs CKA_MODULUS_BITS in the public template.")
    if not min_bits <= bits <= keys.RSA_MAX_BITS:
        raise KeySizeRange(f"RSA keys of {min_bits}..{keys.RSA_MAX_BITS} bits are supported, "
                           f"not {bits}.")
    exponent = int.from_bytes(public_attrs.get(c.CKA_PUBLIC_EXPONENT, b"\x01\x00\x01"), "big")
    if exponent not in (3, 65537):
        raise TemplateInconsistent("CKA_PUBLIC_EXPONENT must be 3 or 65537 (0x010001).")
    return rsa.generate_private_key(public_exponent=exponent, key_size=bits)


# -- raw RSA (the primitive) --------------------------------------------------------------------


def _private_op(key: rsa.RSAPrivateKey, value: int) -> int:
    """m^d mod n with the CRT (cryptography has no unpadded private operation)."""
    numbers = key.private_numbers()
    m1 = pow(value, numbers.dmp1, numbers.p)
    m2 = pow(value, numbers.dmq1, numbers.q)
    h = (numbers.iqmp * (m1 - m2)) % numbers.p
    return m2 + h * numbers.q


def _public_op(key: rsa.RSAPublicKey, value: int) -> int:
    numbers = key.public_numbers()
    return pow(value, numbers.e, numbers.n)


def _to_int(data: bytes, key, error) -> int:
    k = modulus_bytes(key)
    if len(data) > k:
        raise error(f"At most {k} bytes for this key.")
    value = int.from_bytes(data, "big")
    n = (key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key).public_numbers().n
    if value >= n:
        raise error("The value is not less than the modulus.")
    return value


def _emsa_pkcs1_v15(data: bytes, k: int) -> bytes:
    if len(data) > k - 11:
        raise DataLenRange(f"At most {k - 11} bytes for CKM_RSA_PKCS with this key.")
    return b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data


# -- signatures ---------------------------------------------------------------------------------


class _SingleSign(Accumulating, SignOperation):
    def __init__(self, key, fn) -> None:
        super().__init__()
        self._key, self._fn = key, fn

    def final(self) -> bytes:
        return self._fn(self._key, self.message())


class _SingleVerify(Accumulating, VerifyOperation):
    def __init__(self, key, fn) -> None:
        super().__init__()
        self._key, self._fn = key, fn

    def final(self, signature: bytes) -> None:
        k = modulus_bytes(self._key)
        if len(signature) != k:
            raise SignatureLenRange(f"An RSA signature with this key is {k} bytes.")
        self._fn(self._key, self.message(), bytes(signature))


class _HashSign(SignOperation):
    __slots__ = ("_key", "_hash", "_padding", "_algorithm")

    def __init__(self, key, algorithm, pad) -> None:
        self._key, self._algorithm, self._padding = key, algorithm, pad
        self._hash = None  # made on the first C_SignUpdate; a one-shot C_Sign needs none

    def update(self, data: bytes) -> None:
        if self._hash is None:
            self._hash = hashes.Hash(self._algorithm)
        self._hash.update(data)

    def final(self) -> bytes:
        if self._hash is None:
            return self.sign(b"")
        return self._key.sign(self._hash.finalize(), self._padding, utils.Prehashed(self._algorithm))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data), self._padding, self._algorithm)


class _HashVerify(VerifyOperation):
    __slots__ = ("_key", "_hash", "_padding", "_algorithm")

    def __init__(self, key, algorithm, pad) -> None:
        self._key, self._algorithm, self._padding = key, algorithm, pad
        self._hash = hashes.Hash(algorithm)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def final(self, signature: bytes) -> None:
        self._check(signature, self._hash.finalize(), utils.Prehashed(self._algorithm))

    def verify(self, data: bytes, signature: bytes) -> None:
        self._check(signature, bytes(data), self._algorithm)

    def _check(self, signature, data, algorithm) -> None:
        k = modulus_bytes(self._key)
        if len(signature) != k:
            raise SignatureLenRange(f"An RSA signature with this key is {k} bytes.")
        try:
            self._key.verify(bytes(signature), data, self._padding, algorithm)
        except InvalidSignature:
            raise SignatureInvalid() from None


def _pkcs1_sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    k = modulus_bytes(key)
    for prefix, algorithm in _DIGEST_INFO.items():
        if data.startswith(prefix) and len(data) == len(prefix) + algorithm.digest_size:
            return key.sign(data[len(prefix):], padding.PKCS1v15(),
                            utils.Prehashed(algorithm()))
    encoded = _emsa_pkcs1_v15(data, k)
    return _private_op(key, int.from_bytes(encoded, "big")).to_bytes(k, "big")


def _pkcs1_verify(key: rsa.RSAPublicKey, data: bytes, signature: bytes) -> None:
    k = modulus_bytes(key)
    value = _to_int(signature, key, SignatureInvalid)
    if _public_op(key, value).to_bytes(k, "big") != _emsa_pkcs1_v15(data, k):
        raise SignatureInvalid()


def _x509_sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    k = modulus_bytes(key)
    return _private_op(key, _to_int(data, key, DataLenRange)).to_bytes(k, "big")


def _x509_verify(key: rsa.RSAPublicKey, data: bytes, signature: bytes) -> None:
    k = modulus_bytes(key)
    value = _to_int(signature, key, SignatureInvalid)
    if len(data) > k:
        raise DataLenRange(f"At most {k} bytes for this key.")
    if _public_op(key, value).to_bytes(k, "big") != bytes(data).rjust(k, b"\x00"):
        raise SignatureInvalid()


def _pkcs1_hash_padding(key, algorithm) -> padding.PKCS1v15:
    """PKCS#1 v1.5 for a hash-and-sign mechanism, once the key is known to be large enough:
    the encoded DigestInfo and 11 bytes of padding must fit the modulus (RFC 8017 §9.2; a
    legacy 512-bit key is too small for SHA-384 and SHA-512), else CKR_KEY_SIZE_RANGE at Init."""
    prefix = next(p for p, a in _DIGEST_INFO.items() if a is type(algorithm))
    needed = len(prefix) + algorithm.digest_size + 11
    if modulus_bytes(key) < needed:
        raise KeySizeRange(f"{algorithm.name.upper()} with PKCS #1 v1.5 needs a modulus of at least "
                           f"{needed * 8} bits.")
    return padding.PKCS1v15()


def _pss_padding(params: PssParams, hash_mechanism: int | None, key) -> tuple:
    if hash_mechanism is not None and params.hash_alg != hash_mechanism:
        raise MechanismParamInvalid("hashAlg must be the mechanism's own hash.")
    algorithm = HASHES.get(params.hash_alg)
    mgf = MGF1_HASHES.get(params.mgf)
    if algorithm is None or mgf is None:
        raise MechanismParamInvalid("Unsupported hashAlg or MGF in CK_RSA_PKCS_PSS_PARAMS.")
    max_salt = modulus_bytes(key) - algorithm.digest_size - 2  # RFC 8017 §9.1.1: emLen >= hLen + sLen + 2
    if max_salt < 0:
        raise KeySizeRange(f"PSS with {algorithm.name.upper()} needs a larger key.")
    if params.salt_length > max_salt:
        raise MechanismParamInvalid(f"sLen {params.salt_length} is too long for this key.")
    return padding.PSS(mgf=padding.MGF1(mgf()), salt_length=params.salt_length), algorithm()


def _pss_sign_raw(pad, algorithm):
    def sign(key, data):
        if len(data) != algorithm.digest_size:
            raise DataLenRange(f"CKM_RSA_PKCS_PSS signs a {algorithm.digest_size}-byte hash.")
        return key.sign(data, pad, utils.Prehashed(algorithm))
    return sign


def _pss_verify_raw(pad, algorithm):
    def verify(key, data, signature):
        if len(data) != algorithm.digest_size:
            raise DataLenRange(f"CKM_RSA_PKCS_PSS verifies a {algorithm.digest_size}-byte hash.")
        try:
            key.verify(signature, data, pad, utils.Prehashed(algorithm))
        except InvalidSignature:
            raise SignatureInvalid() from None
    return verify


def _sign_factory(mechanism_type: int):
    def start(key, mechanism, layout):
        require_key_type(key, c.CKK_RSA)
        private = key.crypto()
        if mechanism_type == c.CKM_RSA_PKCS:
            no_param(mechanism)
            return _SingleSign(private, _pkcs1_sign)
        if mechanism_type == c.CKM_RSA_X_509:
            no_param(mechanism)
            return _SingleSign(private, _x509_sign)
        if mechanism_type in _HASH_AND_SIGN:
            no_param(mechanism)
            algorithm = _HASH_AND_SIGN[mechanism_type]()
            return _HashSign(private, algorithm, _pkcs1_hash_padding(private, algorithm))
        params = raw_param(mechanism, PssParams, layout)
        if mechanism_type == c.CKM_RSA_PKCS_PSS:
            pad, algorithm = _pss_padding(params, None, private)
            return _SingleSign(private, _pss_sign_raw(pad, algorithm))
        pad, algorithm = _pss_padding(params, _HASH_AND_SIGN_PSS[mechanism_type], private)
        return _HashSign(private, algorithm, pad)
    return start


def _verify_factory(mechanism_type: int):
    def start(key, mechanism, layout):
        require_key_type(key, c.CKK_RSA)
        public = key.crypto()
        if mechanism_type == c.CKM_RSA_PKCS:
            no_param(mechanism)
            return _SingleVerify(public, _pkcs1_verify)
        if mechanism_type == c.CKM_RSA_X_509:
            no_param(mechanism)
            return _SingleVerify(public, _x509_verify)
        if mechanism_type in _HASH_AND_SIGN:
            no_param(mechanism)
            algorithm = _HASH_AND_SIGN[mechanism_type]()
            return _HashVerify(public, algorithm, _pkcs1_hash_padding(public, algorithm))
        params = raw_param(mechanism, PssParams, layout)
        if mechanism_type == c.CKM_RSA_PKCS_PSS:
            pad, algorithm = _pss_padding(params, None, public)
            return _SingleVerify(public, _pss_verify_raw(pad, algorithm))
        pad, algorithm = _pss_padding(params, _HASH_AND_SIGN_PSS[mechanism_type], public)
        return _HashVerify(public, algorithm, pad)
    return start


# -- encryption -------------------------------------------------------------------------------


class _RsaCipher(Accumulating, CipherOperation):
    def __init__(self, fn) -> None:
        super().__init__()
        self._fn = fn

    def update(self, data: bytes) -> bytes:
        Accumulating.update(self, data)
        return b""

    def final(self) -> bytes:
        return self._fn(self.message())


def _oaep(mechanism) -> padding.OAEP:
    params = structured_param(mechanism, OaepParams)
    algorithm = HASHES.get(params.hash_alg)
    mgf = MGF1_HASHES.get(params.mgf)
    if algorithm is None or mgf is None:
        raise MechanismParamInvalid("Unsupported hashAlg or MGF in CK_RSA_PKCS_OAEP_PARAMS.")
    if params.source not in (0, c.CKZ_DATA_SPECIFIED):
        raise MechanismParamInvalid("The OAEP source must be CKZ_DATA_SPECIFIED.")
    return padding.OAEP(mgf=padding.MGF1(mgf()), algorithm=algorithm(),
                        label=bytes(params.source_data) or None)


def _encryptor(mechanism_type: int, public: rsa.RSAPublicKey, mechanism):
    k = modulus_bytes(public)
    if mechanism_type == c.CKM_RSA_PKCS:
        no_param(mechanism)

        def encrypt(data: bytes) -> bytes:
            if len(data) > k - 11:
                raise DataLenRange(f"At most {k - 11} bytes for CKM_RSA_PKCS with this key.")
            return public.encrypt(data, padding.PKCS1v15())
        return encrypt
    if mechanism_type == c.CKM_RSA_PKCS_OAEP:
        pad = _oaep(mechanism)
        limit = k - 2 * pad.algorithm.digest_size - 2

        def encrypt(data: bytes) -> bytes:
            if len(data) > limit:
                raise DataLenRange(f"At most {limit} bytes for this OAEP key and hash.")
            return public.encrypt(data, pad)
        return encrypt
    no_param(mechanism)
    return lambda data: _public_op(public, _to_int(data, public, DataLenRange)).to_bytes(k, "big")


def _decryptor(mechanism_type: int, private: rsa.RSAPrivateKey, mechanism, length_error):
    k = modulus_bytes(private)
    if mechanism_type == c.CKM_RSA_X_509:
        no_param(mechanism)

        def decrypt_raw(data: bytes) -> bytes:
            if len(data) != k:
                raise length_error(f"An RSA ciphertext with this key is {k} bytes.")
            return _private_op(private, _to_int(data, private, EncryptedDataInvalid)).to_bytes(k, "big")
        return decrypt_raw
    if mechanism_type == c.CKM_RSA_PKCS:
        no_param(mechanism)
        pad = padding.PKCS1v15()
    else:
        pad = _oaep(mechanism)

    def decrypt(data: bytes) -> bytes:
        if len(data) != k:
            raise length_error(f"An RSA ciphertext with this key is {k} bytes.")
        try:
            return private.decrypt(bytes(data), pad)
        except ValueError:
            raise EncryptedDataInvalid() from None
    return decrypt


def _encrypt_factory(mechanism_type: int):
    def start(key, mechanism, layout):
        require_key_type(key, c.CKK_RSA)
        return _RsaCipher(_encryptor(mechanism_type, key.crypto(), mechanism))
    return start


def _decrypt_factory(mechanism_type: int):
    def start(key, mechanism, layout):
        require_key_type(key, c.CKK_RSA)
        return _RsaCipher(_decryptor(mechanism_type, key.crypto(), mechanism, EncryptedDataLenRange))
    return start


def _wrap_factory(mechanism_type: int):
    def wrap(wrapping_key, mechanism, layout, plaintext: bytes) -> bytes:
        require_key_type(wrapping_key, c.CKK_RSA)
        return _encryptor(mechanism_type, wrapping_key.crypto(), mechanism)(plaintext)
    return wrap


def _unwrap_factory(mechanism_type: int):
    def unwrap(unwrapping_key, mechanism, layout, wrapped: bytes) -> bytes:
        require_key_type(unwrapping_key, c.CKK_RSA)
        return _decryptor(mechanism_type, unwrapping_key.crypto(), mechanism,
                          WrappedKeyLenRange)(wrapped)
    return unwrap


def mechanisms(*, min_bits: int, generate_min_bits: int) -> list[MechanismSpec]:
    """The RSA mechanisms: keys of ``min_bits`` and up are used, of ``generate_min_bits`` and up
    generated (both 2048 in FIPS mode, HSM policy 12 = 0)."""
    size = dict(min_key=min_bits, max_key=keys.RSA_MAX_BITS, key_types=_RSA)

    def pair(public_attrs, private_attrs, mechanism, layout):
        return generate_pair(public_attrs, private_attrs, mechanism, layout,
                             min_bits=generate_min_bits)

    specs = [
        MechanismSpec(type=c.CKM_RSA_PKCS_KEY_PAIR_GEN, generate_pair=pair,
                      **{**size, "min_key": generate_min_bits}),
        MechanismSpec(type=c.CKM_RSA_PKCS, sign=_sign_factory(c.CKM_RSA_PKCS),
                      verify=_verify_factory(c.CKM_RSA_PKCS),
                      encrypt=_encrypt_factory(c.CKM_RSA_PKCS),
                      decrypt=_decrypt_factory(c.CKM_RSA_PKCS),
                      wrap=_wrap_factory(c.CKM_RSA_PKCS), unwrap=_unwrap_factory(c.CKM_RSA_PKCS),
                      **size),
        MechanismSpec(type=c.CKM_RSA_X_509, sign=_sign_factory(c.CKM_RSA_X_509),
                      verify=_verify_factory(c.CKM_RSA_X_509),
                      encrypt=_encrypt_factory(c.CKM_RSA_X_509),
                      decrypt=_decrypt_factory(c.CKM_RSA_X_509), approved=False, **size),
        MechanismSpec(type=c.CKM_RSA_PKCS_OAEP, encrypt=_encrypt_factory(c.CKM_RSA_PKCS_OAEP),
                      decrypt=_decrypt_factory(c.CKM_RSA_PKCS_OAEP),
                      wrap=_wrap_factory(c.CKM_RSA_PKCS_OAEP),
                      unwrap=_unwrap_factory(c.CKM_RSA_PKCS_OAEP), **size),
        MechanismSpec(type=c.CKM_RSA_PKCS_PSS, sign=_sign_factory(c.CKM_RSA_PKCS_PSS),
                      verify=_verify_factory(c.CKM_RSA_PKCS_PSS), **size),
    ]
    for mechanism_type in (*_HASH_AND_SIGN, *_HASH_AND_SIGN_PSS):
        approved = mechanism_type not in (c.CKM_SHA1_RSA_PKCS, c.CKM_SHA1_RSA_PKCS_PSS)
        specs.append(MechanismSpec(type=mechanism_type, sign=_sign_factory(mechanism_type),
                                   verify=_verify_factory(mechanism_type), approved=approved,
                                   **size))
    return specs
