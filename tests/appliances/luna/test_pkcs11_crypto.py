"""Cryptography through a real NTLS connection, checked against `cryptography` and RFC vectors."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap
from ntls_harness import Harness

from hsmcloud.appliances.luna.pkcs11.keys import CURVES, der_octet_string
from hsmcloud.clients.luna.ntls_client import Pkcs11Error
from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import (
    AesCbcEncryptDataParams,
    CtrParams,
    Ecdh1DeriveParams,
    GcmParams,
    HkdfParams,
    KeyDerivationStringData,
    MacGeneralParams,
    Mechanism,
    OaepParams,
    PssParams,
)

OIDS = {curve.name: curve.oid_der for curve in CURVES}
P256, P384, P521, ED25519 = OIDS["P-256"], OIDS["P-384"], OIDS["P-521"], OIDS["Ed25519"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("crypto"))
    yield h
    h.close()


@pytest.fixture(scope="module")
def ntls(harness):
    with harness.connect() as client:
        yield client


@pytest.fixture(scope="module")
def session(harness, ntls):
    return harness.session(ntls)


def rsa_pair(ntls, session, bits=2048):
    return ntls.generate_key_pair(session, c.CKM_RSA_PKCS_KEY_PAIR_GEN,
                                  [(c.CKA_MODULUS_BITS, bits)], [])


def public_rsa(ntls, session, handle) -> rsa.RSAPublicKey:
    a = ntls.get_attributes(session, handle, c.CKA_MODULUS, c.CKA_PUBLIC_EXPONENT)
    return rsa.RSAPublicNumbers(int.from_bytes(a[c.CKA_PUBLIC_EXPONENT], "big"),
                                int.from_bytes(a[c.CKA_MODULUS], "big")).public_key()


def public_ec(ntls, session, handle, curve):
    point = ntls.get_attributes(session, handle, c.CKA_EC_POINT)[c.CKA_EC_POINT]
    assert point[0] == 0x04  # DER OCTET STRING
    raw = point[2:] if point[1] < 0x80 else point[2 + (point[1] & 0x7F):]
    if curve is None:
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, raw)


def secret(ntls, session, value: bytes, key_type=c.CKK_AES, **flags):
    template = [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, key_type), (c.CKA_VALUE, value)]
    template += [(getattr(c, f"CKA_{name.upper()}"), v) for name, v in flags.items()]
    return ntls.create_object(session, template)


def sign(ntls, session, mechanism, key, data):
    ntls.sign_init(session, mechanism, key)
    return ntls.sign(session, data, capacity=-1)


def verify(ntls, session, mechanism, key, data, signature):
    ntls.verify_init(session, mechanism, key)
    ntls.verify(session, data, signature)


# -- RSA --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rsa_key_pair_generation_sizes(ntls, session, bits):
    pub, priv = rsa_pair(ntls, session, bits)
    assert public_rsa(ntls, session, pub).key_size == bits
    attrs = ntls.get_attributes(session, pub, c.CKA_MODULUS_BITS, c.CKA_LOCAL,
                                c.CKA_KEY_GEN_MECHANISM)
    assert attrs == {c.CKA_MODULUS_BITS: bits, c.CKA_LOCAL: True,
                     c.CKA_KEY_GEN_MECHANISM: c.CKM_RSA_PKCS_KEY_PAIR_GEN}


@pytest.mark.parametrize("mechanism,algorithm", [
    (c.CKM_SHA1_RSA_PKCS, hashes.SHA1()), (c.CKM_SHA224_RSA_PKCS, hashes.SHA224()),
    (c.CKM_SHA256_RSA_PKCS, hashes.SHA256()), (c.CKM_SHA384_RSA_PKCS, hashes.SHA384()),
    (c.CKM_SHA512_RSA_PKCS, hashes.SHA512()),
])
def test_rsa_hash_and_sign_verifies_with_cryptography(ntls, session, mechanism, algorithm):
    pub, priv = rsa_pair(ntls, session)
    data = os.urandom(1000)
    signature = sign(ntls, session, mechanism, priv, data)
    public_rsa(ntls, session, pub).verify(signature, data, padding.PKCS1v15(), algorithm)
    verify(ntls, session, mechanism, pub, data, signature)


def test_rsa_pkcs_over_a_digest_info_and_raw_data(ntls, session):
    pub, priv = rsa_pair(ntls, session)
    public = public_rsa(ntls, session, pub)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"message")
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + digest.finalize()
    signature = sign(ntls, session, c.CKM_RSA_PKCS, priv, digest_info)
    public.verify(signature, b"message", padding.PKCS1v15(), hashes.SHA256())
    # TLS 1.0/1.1 style: an MD5+SHA-1 concatenation that is no DigestInfo
    raw = os.urandom(36)
    signature = sign(ntls, session, c.CKM_RSA_PKCS, priv, raw)
    recovered = pow(int.from_bytes(signature, "big"), public.public_numbers().e,
                    public.public_numbers().n).to_bytes(256, "big")
    assert recovered == b"\x00\x01" + b"\xff" * (256 - 3 - 36) + b"\x00" + raw
    verify(ntls, session, c.CKM_RSA_PKCS, pub, raw, signature)
    with pytest.raises(Pkcs11Error) as error:
        verify(ntls, session, c.CKM_RSA_PKCS, pub, raw[:-1] + b"x", signature)
    assert error.value.rv == c.CKR_SIGNATURE_INVALID
    ntls.sign_init(session, c.CKM_RSA_PKCS, priv)
    with pytest.raises(Pkcs11Error) as error:
        ntls.sign(session, os.urandom(246))
    assert error.value.rv == c.CKR_DATA_LEN_RANGE


@pytest.mark.parametrize("mechanism,hash_mech,algorithm,mgf", [
    (c.CKM_SHA256_RSA_PKCS_PSS, c.CKM_SHA256, hashes.SHA256(), c.CKG_MGF1_SHA256),
    (c.CKM_SHA384_RSA_PKCS_PSS, c.CKM_SHA384, hashes.SHA384(), c.CKG_MGF1_SHA384),
    (c.CKM_SHA512_RSA_PKCS_PSS, c.CKM_SHA512, hashes.SHA512(), c.CKG_MGF1_SHA512),
    (c.CKM_SHA1_RSA_PKCS_PSS, c.CKM_SHA_1, hashes.SHA1(), c.CKG_MGF1_SHA1),
])
def test_rsa_pss(ntls, session, mechanism, hash_mech, algorithm, mgf):
    pub, priv = rsa_pair(ntls, session)
    public = public_rsa(ntls, session, pub)
    params = PssParams(hash_mech, mgf, algorithm.digest_size)
    data = os.urandom(100)
    signature = sign(ntls, session, Mechanism(mechanism, params), priv, data)
    pss = padding.PSS(padding.MGF1(algorithm), algorithm.digest_size)
    public.verify(signature, data, pss, algorithm)
    digest = hashes.Hash(algorithm)
    digest.update(data)
    hashed = digest.finalize()
    signature = sign(ntls, session, Mechanism(c.CKM_RSA_PKCS_PSS, params), priv, hashed)
    public.verify(signature, hashed, pss, utils.Prehashed(algorithm))
    verify(ntls, session, Mechanism(c.CKM_RSA_PKCS_PSS, params), pub, hashed, signature)


def test_rsa_pss_parameter_errors(ntls, session):
    pub, priv = rsa_pair(ntls, session)
    for mechanism in (Mechanism(c.CKM_SHA256_RSA_PKCS_PSS, None),
                      Mechanism(c.CKM_SHA256_RSA_PKCS_PSS,
                                PssParams(c.CKM_SHA384, c.CKG_MGF1_SHA256, 32)),
                      Mechanism(c.CKM_SHA256_RSA_PKCS_PSS, b"\x00" * 5)):
        with pytest.raises(Pkcs11Error) as error:
            ntls.sign_init(session, mechanism, priv)
        assert error.value.rv == c.CKR_MECHANISM_PARAM_INVALID


@pytest.mark.parametrize("hash_mech,algorithm,mgf", [
    (c.CKM_SHA_1, hashes.SHA1(), c.CKG_MGF1_SHA1),
    (c.CKM_SHA256, hashes.SHA256(), c.CKG_MGF1_SHA256),
    (c.CKM_SHA512, hashes.SHA512(), c.CKG_MGF1_SHA512),
])
def test_rsa_oaep_encrypt_and_decrypt(ntls, session, hash_mech, algorithm, mgf):
    pub, priv = rsa_pair(ntls, session)
    public = public_rsa(ntls, session, pub)
    mechanism = Mechanism(c.CKM_RSA_PKCS_OAEP, OaepParams(hash_mech, mgf, c.CKZ_DATA_SPECIFIED,
                                                          b"label"))
    oaep = padding.OAEP(padding.MGF1(algorithm), algorithm, b"label")
    ciphertext = public.encrypt(b"secret message", oaep)
    ntls.decrypt_init(session, mechanism, priv)
    assert ntls.decrypt(session, ciphertext) == b"secret message"
    ntls.encrypt_init(session, mechanism, pub)
    ours = ntls.encrypt(session, b"round trip")
    ntls.decrypt_init(session, mechanism, priv)
    assert ntls.decrypt(session, ours) == b"round trip"
    ntls.decrypt_init(session, mechanism, priv)
    with pytest.raises(Pkcs11Error) as error:
        ntls.decrypt(session, ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]))
    assert error.value.rv == c.CKR_ENCRYPTED_DATA_INVALID
    ntls.decrypt_init(session, mechanism, priv)
    with pytest.raises(Pkcs11Error) as error:
        ntls.decrypt(session, ciphertext[:100])
    assert error.value.rv == c.CKR_ENCRYPTED_DATA_LEN_RANGE


def test_rsa_pkcs_encryption_and_raw_x509(ntls, session):
    pub, priv = rsa_pair(ntls, session)
    public = public_rsa(ntls, session, pub)
    ntls.decrypt_init(session, c.CKM_RSA_PKCS, priv)
    assert ntls.decrypt(session, public.encrypt(b"pkcs1", padding.PKCS1v15())) == b"pkcs1"
    value = os.urandom(255)
    ntls.encrypt_init(session, c.CKM_RSA_X_509, pub)
    ciphertext = ntls.encrypt(session, value)
    numbers = public.public_numbers()
    assert ciphertext == pow(int.from_bytes(value, "big"), numbers.e, numbers.n).to_bytes(256, "big")
    ntls.decrypt_init(session, c.CKM_RSA_X_509, priv)
    assert ntls.decrypt(session, ciphertext) == value.rjust(256, b"\x00")
    signature = sign(ntls, session, c.CKM_RSA_X_509, priv, value)
    verify(ntls, session, c.CKM_RSA_X_509, pub, value, signature)


def test_rsa_imported_private_key_signs_like_cryptography(ntls, session):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = key.private_numbers()
    big = lambda v: v.to_bytes((v.bit_length() + 7) // 8, "big")  # noqa: E731
    handle = ntls.create_object(session, [
        (c.CKA_CLASS, c.CKO_PRIVATE_KEY), (c.CKA_KEY_TYPE, c.CKK_RSA),
        (c.CKA_MODULUS, big(n.public_numbers.n)), (c.CKA_PUBLIC_EXPONENT, big(65537)),
        (c.CKA_PRIVATE_EXPONENT, big(n.d)), (c.CKA_PRIME_1, big(n.p)), (c.CKA_PRIME_2, big(n.q)),
        (c.CKA_EXPONENT_1, big(n.dmp1)), (c.CKA_EXPONENT_2, big(n.dmq1)),
        (c.CKA_COEFFICIENT, big(n.iqmp)), (c.CKA_SIGN, True)])
    signature = sign(ntls, session, c.CKM_SHA256_RSA_PKCS, handle, b"data")
    # PKCS#1 v1.5 is deterministic: the same bytes as cryptography's own signature
    assert signature == key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
    assert ntls.get_attributes(session, handle, c.CKA_ALWAYS_SENSITIVE, c.CKA_NEVER_EXTRACTABLE,
                               c.CKA_LOCAL) == {c.CKA_ALWAYS_SENSITIVE: False,
                                                c.CKA_NEVER_EXTRACTABLE: False, c.CKA_LOCAL: False}


#: A legacy 512-bit RSA key (made with `openssl genrsa 512`; `cryptography` generates none this
#: small), as in the old certificates applications still verify.
LEGACY_RSA_512 = b"""
-----BEGIN RSA PRIVATE KEY-----
MIIBPAIBAAJBALX/KLCnYcFUtoYjIXNT+o71TlItqB+jQ2U/vNSWHkUnlIB9tNH8
to8jZxRTRsgdlNSFpZugQGPPEDQ+TQzjRmsCAwEAAQJAM0wABAqpmvxtldFBFGiP
LswljzQfNwula1xTtPe7AHJ1rVPdTMhoAUZZj5kjOHwMCb5xr3WxQ5UluQQ2cJSf
wQIhAOK8vEuFT00Sl5RWqAZEKwEyLa8LO5PR1NxvSYEGmgf1AiEAzXw5ARKAjdQo
HH+LSED97wWmMLBxhmnA3TR3E81d+N8CIQC6B9aKNA+TkfySNeNYeNe7/HqlExdH
ujLmxdxOI6d/fQIhAMgcdKstqJH2jYWLVEnuOR2gI8OA4V3j+VWy9VAMjLqDAiEA
1qsjc0g/T/8UbDnt3Z77YIAS3bVvZaU7nMfFsI7e2LY=
-----END RSA PRIVATE KEY-----
"""


def test_rsa_legacy_512_bit_keys_are_imported_and_used_but_not_generated(harness, ntls, session):
    key = serialization.load_pem_private_key(LEGACY_RSA_512.strip(), None)
    n = key.private_numbers()
    big = lambda v: v.to_bytes((v.bit_length() + 7) // 8, "big")  # noqa: E731
    modulus = [(c.CKA_KEY_TYPE, c.CKK_RSA), (c.CKA_MODULUS, big(n.public_numbers.n)),
               (c.CKA_PUBLIC_EXPONENT, big(65537))]
    pub = ntls.create_object(session, [(c.CKA_CLASS, c.CKO_PUBLIC_KEY), *modulus])
    priv = ntls.create_object(session, [(c.CKA_CLASS, c.CKO_PRIVATE_KEY), *modulus,
                                        (c.CKA_PRIVATE_EXPONENT, big(n.d))])
    signature = key.sign(b"tbs", padding.PKCS1v15(), hashes.SHA1())
    verify(ntls, session, c.CKM_SHA1_RSA_PKCS, pub, b"tbs", signature)
    assert sign(ntls, session, c.CKM_SHA256_RSA_PKCS, priv, b"tbs") == \
        key.sign(b"tbs", padding.PKCS1v15(), hashes.SHA256())
    # SHA-512's DigestInfo (83 bytes) and 11 bytes of padding do not fit 64 bytes: refused at Init
    for start, handle in ((ntls.sign_init, priv), (ntls.verify_init, pub)):
        with pytest.raises(Pkcs11Error) as error:
            start(session, c.CKM_SHA512_RSA_PKCS, handle)
        assert error.value.rv == c.CKR_KEY_SIZE_RANGE
    with pytest.raises(Pkcs11Error) as error:
        ntls.sign_init(session, Mechanism(c.CKM_SHA512_RSA_PKCS_PSS,
                                          PssParams(c.CKM_SHA512, c.CKG_MGF1_SHA512, 0)), priv)
    assert error.value.rv == c.CKR_KEY_SIZE_RANGE
    assert ntls.get_mechanism_info(harness.serial, c.CKM_SHA1_RSA_PKCS)[:2] == (512, 4096)
    assert ntls.get_mechanism_info(harness.serial, c.CKM_RSA_PKCS_KEY_PAIR_GEN)[:2] == (1024, 4096)
    with pytest.raises(Pkcs11Error) as error:
        rsa_pair(ntls, session, 512)
    assert error.value.rv == c.CKR_KEY_SIZE_RANGE
    smaller = rsa.RSAPublicNumbers(65537, (n.public_numbers.n >> 200) | 1)  # 312 bits
    with pytest.raises(Pkcs11Error) as error:
        ntls.create_object(session, [(c.CKA_CLASS, c.CKO_PUBLIC_KEY), (c.CKA_KEY_TYPE, c.CKK_RSA),
                                     (c.CKA_MODULUS, big(smaller.n)), (c.CKA_PUBLIC_EXPONENT, big(65537))])
    assert error.value.rv == c.CKR_KEY_SIZE_RANGE


# -- EC and EdDSA ---------------------------------------------------------------------------


@pytest.mark.parametrize("params,curve", [(P256, ec.SECP256R1()), (P384, ec.SECP384R1()),
                                          (P521, ec.SECP521R1()),
                                          (OIDS["P-224"], ec.SECP224R1()),
                                          (OIDS["P-192"], ec.SECP192R1())])
def test_ecdsa_on_each_curve(ntls, session, params, curve):
    pub, priv = ntls.generate_key_pair(session, c.CKM_EC_KEY_PAIR_GEN,
                                       [(c.CKA_EC_PARAMS, params)], [])
    public = public_ec(ntls, session, pub, curve)
    size = (curve.key_size + 7) // 8
    for mechanism, algorithm in ((c.CKM_ECDSA_SHA256, hashes.SHA256()),
                                 (c.CKM_ECDSA_SHA384, hashes.SHA384()),
                                 (c.CKM_ECDSA_SHA512, hashes.SHA512()),
                                 (c.CKM_ECDSA_SHA1, hashes.SHA1())):
        signature = sign(ntls, session, mechanism, priv, b"message")
        assert len(signature) == 2 * size
        der = utils.encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                         int.from_bytes(signature[size:], "big"))
        public.verify(der, b"message", ec.ECDSA(algorithm))
        verify(ntls, session, mechanism, pub, b"message", signature)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"raw")
    hashed = digest.finalize()
    signature = sign(ntls, session, c.CKM_ECDSA, priv, hashed)
    der = utils.encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                     int.from_bytes(signature[size:], "big"))
    public.verify(der, hashed, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    ntls.verify_init(session, c.CKM_ECDSA, pub)
    with pytest.raises(Pkcs11Error) as error:
        ntls.verify(session, hashed, signature[:-1])
    assert error.value.rv == c.CKR_SIGNATURE_LEN_RANGE
    ntls.verify_init(session, c.CKM_ECDSA, pub)
    with pytest.raises(Pkcs11Error) as error:
        ntls.verify(session, hashed, bytes(len(signature)))
    assert error.value.rv == c.CKR_SIGNATURE_INVALID


def test_ec_params_as_a_curve_name(ntls, session):
    printable = b"\x13\x0aprime256v1"
    pub, priv = ntls.generate_key_pair(session, c.CKM_EC_KEY_PAIR_GEN,
                                       [(c.CKA_EC_PARAMS, printable)], [])
    assert ntls.get_attributes(session, pub, c.CKA_EC_PARAMS)[c.CKA_EC_PARAMS] == printable
    public_ec(ntls, session, pub, ec.SECP256R1())
    with pytest.raises(Pkcs11Error) as error:
        ntls.generate_key_pair(session, c.CKM_EC_KEY_PAIR_GEN,
                               [(c.CKA_EC_PARAMS, bytes.fromhex("06052b8104000a"))], [])  # secp256k1
    assert error.value.rv == c.CKR_CURVE_NOT_SUPPORTED
    with pytest.raises(Pkcs11Error) as error:
        ntls.generate_key_pair(session, c.CKM_EC_KEY_PAIR_GEN, [], [])
    assert error.value.rv == c.CKR_TEMPLATE_INCOMPLETE


def test_ed448(ntls, session):
    from cryptography.hazmat.primitives.asymmetric import ed448
    from hsmcloud.protocols.pkcs11.params import EddsaParams
    pub, priv = ntls.generate_key_pair(session, c.CKM_EC_EDWARDS_KEY_PAIR_GEN,
                                       [(c.CKA_EC_PARAMS, OIDS["Ed448"])], [])
    point = ntls.get_attributes(session, pub, c.CKA_EC_POINT)[c.CKA_EC_POINT]
    assert point[:2] == b"\x04\x39"
    public = ed448.Ed448PublicKey.from_public_bytes(point[2:])
    mechanism = Mechanism(c.CKM_EDDSA, EddsaParams(False, b""))
    signature = sign(ntls, session, mechanism, priv, b"hello ed448")
    assert len(signature) == 114
    public.verify(signature, b"hello ed448")
    verify(ntls, session, mechanism, pub, b"hello ed448", signature)


def test_eddsa(ntls, session):
    pub, priv = ntls.generate_key_pair(session, c.CKM_EC_EDWARDS_KEY_PAIR_GEN,
                                       [(c.CKA_EC_PARAMS, ED25519)], [])
    public = public_ec(ntls, session, pub, None)
    signature = sign(ntls, session, c.CKM_EDDSA, priv, b"hello ed25519")
    public.verify(signature, b"hello ed25519")
    verify(ntls, session, c.CKM_EDDSA, pub, b"hello ed25519", signature)
    from hsmcloud.protocols.pkcs11.params import EddsaParams
    with pytest.raises(Pkcs11Error) as error:
        ntls.sign_init(session, Mechanism(c.CKM_EDDSA, EddsaParams(True, b"")), priv)
    assert error.value.rv == c.CKR_MECHANISM_PARAM_INVALID


@pytest.mark.parametrize("kdf,algorithm", [(c.CKD_NULL, None), (c.CKD_SHA256_KDF, hashes.SHA256()),
                                           (c.CKD_SHA384_KDF, hashes.SHA384())])
def test_ecdh1_derive_matches_cryptography(ntls, session, kdf, algorithm):
    pub, priv = ntls.generate_key_pair(session, c.CKM_EC_KEY_PAIR_GEN,
                                       [(c.CKA_EC_PARAMS, P256)], [(c.CKA_DERIVE, True)])
    ours = public_ec(ntls, session, pub, ec.SECP256R1())
    peer = ec.generate_private_key(ec.SECP256R1())
    point = peer.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    shared = b"shared info" if algorithm else b""
    derived = ntls.derive_key(session, Mechanism(c.CKM_ECDH1_DERIVE,
                                                 Ecdh1DeriveParams(kdf, shared, point)), priv,
                              [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES),
                               (c.CKA_VALUE_LEN, 32), (c.CKA_SENSITIVE, False)])
    z = peer.exchange(ec.ECDH(), ours)
    expected = z if algorithm is None else X963KDF(algorithm, 32, shared).derive(z)
    assert ntls.get_attributes(session, derived, c.CKA_VALUE)[c.CKA_VALUE] == expected
    # the point as a DER OCTET STRING works too
    again = ntls.derive_key(session, Mechanism(c.CKM_ECDH1_DERIVE, Ecdh1DeriveParams(
        kdf, shared, der_octet_string(point))), priv,
        [(c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE_LEN, 32), (c.CKA_SENSITIVE, False)])
    assert ntls.get_attributes(session, again, c.CKA_VALUE)[c.CKA_VALUE] == expected


# -- AES ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 24, 32])
def test_aes_generate_and_check_value(ntls, session, length):
    key = ntls.generate_key(session, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, length),
                                                        (c.CKA_SENSITIVE, False)])
    value = ntls.get_attributes(session, key, c.CKA_VALUE)[c.CKA_VALUE]
    assert len(value) == length
    encryptor = Cipher(algorithms.AES(value), modes.ECB()).encryptor()
    assert ntls.get_attributes(session, key, c.CKA_CHECK_VALUE)[c.CKA_CHECK_VALUE] == \
        encryptor.update(bytes(16))[:3]


def test_aes_key_size_errors(ntls, session):
    with pytest.raises(Pkcs11Error) as error:
        ntls.generate_key(session, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 20)])
    assert error.value.rv == c.CKR_KEY_SIZE_RANGE
    with pytest.raises(Pkcs11Error) as error:
        ntls.generate_key(session, c.CKM_AES_KEY_GEN, [])
    assert error.value.rv == c.CKR_TEMPLATE_INCOMPLETE


@pytest.mark.parametrize("mechanism,mode", [
    (c.CKM_AES_ECB, lambda iv: modes.ECB()), (c.CKM_AES_CBC, modes.CBC),
])
def test_aes_block_modes_decrypt_with_cryptography(ntls, session, mechanism, mode):
    value = os.urandom(32)
    key = secret(ntls, session, value)
    iv = os.urandom(16)
    mech = Mechanism(mechanism, None if mechanism == c.CKM_AES_ECB else iv)
    data = os.urandom(64)
    ntls.encrypt_init(session, mech, key)
    ciphertext = ntls.encrypt(session, data)
    decryptor = Cipher(algorithms.AES(value), mode(iv)).decryptor()
    assert decryptor.update(ciphertext) + decryptor.finalize() == data
    # multi-part with odd chunks gives the same bytes
    ntls.encrypt_init(session, mech, key)
    parts = [ntls.encrypt_update(session, data[:5]), ntls.encrypt_update(session, data[5:40]),
             ntls.encrypt_update(session, data[40:]), ntls.encrypt_final(session)]
    assert b"".join(parts) == ciphertext
    ntls.encrypt_init(session, mech, key)
    with pytest.raises(Pkcs11Error) as error:
        ntls.encrypt(session, data[:-1])
    assert error.value.rv == c.CKR_DATA_LEN_RANGE


def test_aes_cbc_pad(ntls, session):
    value, iv = os.urandom(16), os.urandom(16)
    key = secret(ntls, session, value)
    mech = Mechanism(c.CKM_AES_CBC_PAD, iv)
    for size in (0, 1, 15, 16, 33):
        data = os.urandom(size)
        ntls.encrypt_init(session, mech, key)
        ciphertext = ntls.encrypt(session, data)
        decryptor = Cipher(algorithms.AES(value), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        assert padded[:size] == data and padded[size:] == bytes([16 - size % 16]) * (16 - size % 16)
        ntls.decrypt_init(session, mech, key)
        out = ntls.decrypt_update(session, ciphertext[:7]) + ntls.decrypt_update(
            session, ciphertext[7:]) + ntls.decrypt_final(session)
        assert out == data
    encryptor = Cipher(algorithms.AES(value), modes.CBC(iv)).encryptor()
    bad = encryptor.update(bytes(16)) + encryptor.finalize()  # a zero last byte: no valid pad
    ntls.decrypt_init(session, mech, key)
    with pytest.raises(Pkcs11Error) as error:
        ntls.decrypt(session, bad)
    assert error.value.rv == c.CKR_ENCRYPTED_DATA_INVALID


def test_aes_ctr(ntls, session):
    value, block = os.urandom(16), os.urandom(16)
    key = secret(ntls, session, value)
    mech = Mechanism(c.CKM_AES_CTR, CtrParams(128, block))
    data = os.urandom(50)
    ntls.encrypt_init(session, mech, key)
    ciphertext = ntls.encrypt_update(session, data[:17]) + ntls.encrypt_update(session, data[17:])
    ciphertext += ntls.encrypt_final(session)
    encryptor = Cipher(algorithms.AES(value), modes.CTR(block)).encryptor()
    assert ciphertext == encryptor.update(data)
    ntls.encrypt_init(session, Mechanism(c.CKM_AES_CTR, CtrParams(8, b"\x00" * 15 + b"\xfe")), key)
    with pytest.raises(Pkcs11Error) as error:
        ntls.encrypt(session, os.urandom(48))  # three blocks from counter 0xFE wrap 8 bits
    assert error.value.rv == c.CKR_DATA_LEN_RANGE


def test_aes_gcm(ntls, session):
    value, iv = os.urandom(32), os.urandom(12)
    key = secret(ntls, session, value)
    mech = Mechanism(c.CKM_AES_GCM, GcmParams(iv, 96, b"header", 128))
    data = os.urandom(4096)
    ntls.encrypt_init(session, mech, key)
    ciphertext = ntls.encrypt(session, data)
    assert AESGCM(value).decrypt(iv, ciphertext, b"header") == data
    ntls.encrypt_init(session, mech, key)
    parts = ntls.encrypt_update(session, data[:1000]) + ntls.encrypt_update(session, data[1000:])
    assert parts + ntls.encrypt_final(session) == ciphertext
    theirs = AESGCM(value).encrypt(iv, b"from outside", b"header")
    ntls.decrypt_init(session, mech, key)
    assert ntls.decrypt(session, theirs) == b"from outside"
    ntls.decrypt_init(session, mech, key)
    with pytest.raises(Pkcs11Error) as error:
        ntls.decrypt(session, theirs[:-1] + bytes([theirs[-1] ^ 1]))
    assert error.value.rv == c.CKR_ENCRYPTED_DATA_INVALID
    short_tag = Mechanism(c.CKM_AES_GCM, GcmParams(iv, 96, b"", 96))
    ntls.encrypt_init(session, short_tag, key)
    assert len(ntls.encrypt(session, b"x" * 10)) == 10 + 12
    with pytest.raises(Pkcs11Error) as error:
        ntls.encrypt_init(session, Mechanism(c.CKM_AES_GCM, GcmParams(iv, 96, b"", 100)), key)
    assert error.value.rv == c.CKR_MECHANISM_PARAM_INVALID
    with pytest.raises(Pkcs11Error) as error:
        ntls.encrypt_init(session, Mechanism(c.CKM_AES_GCM, iv), key)
    assert error.value.rv == c.CKR_MECHANISM_PARAM_INVALID


# RFC 3394 §4.6: 256-bit KEK, 256-bit key data
KW_KEK = bytes.fromhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
KW_DATA = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
KW_OUT = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43B"
                       "FB988B9B7A02DD21")
# RFC 5649 §6: 192-bit KEK, 20-octet and 7-octet keys
KWP_KEK = bytes.fromhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
KWP_20 = (bytes.fromhex("c37b7e6492584340bed12207808941155068f738"),
          bytes.fromhex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"))
KWP_7 = (bytes.fromhex("466f7250617369"), bytes.fromhex("afbeb0f07dfbf5419200f2ccb50bb24f"))


def test_aes_key_wrap_rfc3394_vector(ntls, session):
    kek = secret(ntls, session, KW_KEK)
    ntls.encrypt_init(session, c.CKM_AES_KEY_WRAP, kek)
    assert ntls.encrypt(session, KW_DATA) == KW_OUT
    ntls.decrypt_init(session, c.CKM_AES_KEY_WRAP, kek)
    assert ntls.decrypt(session, KW_OUT) == KW_DATA
    target = secret(ntls, session, KW_DATA, extractable=True)
    assert ntls.wrap_key(session, c.CKM_AES_KEY_WRAP, kek, target) == KW_OUT
    ntls.decrypt_init(session, c.CKM_AES_KEY_WRAP, kek)
    with pytest.raises(Pkcs11Error) as error:
        ntls.decrypt(session, KW_OUT[:-1] + b"\x00")
    assert error.value.rv == c.CKR_ENCRYPTED_DATA_INVALID


def test_aes_key_wrap_kwp_rfc5649_vectors(ntls, session):
    kek = secret(ntls, session, KWP_KEK)
    for plain, wrapped in (KWP_20, KWP_7):
        ntls.encrypt_init(session, c.CKM_AES_KEY_WRAP_KWP, kek)
        assert ntls.encrypt(session, plain) == wrapped
        ntls.decrypt_init(session, c.CKM_AES_KEY_WRAP_KWP, kek)
        assert ntls.decrypt(session, wrapped) == plain
        assert aes_key_unwrap_with_padding(KWP_KEK, wrapped) == plain


def test_aes_key_wrap_pad_is_pkcs7_then_kw(ntls, session):
    """v2.40's CKM_AES_KEY_WRAP_PAD (0x210A): PKCS #7 padding to 8 bytes, then RFC 3394."""
    value = os.urandom(32)
    kek = secret(ntls, session, value)
    data = os.urandom(21)
    ntls.encrypt_init(session, c.CKM_AES_KEY_WRAP_PAD, kek)
    wrapped = ntls.encrypt(session, data)
    assert wrapped == aes_key_wrap(value, data + b"\x03\x03\x03")
    ntls.decrypt_init(session, c.CKM_AES_KEY_WRAP_PAD, kek)
    assert ntls.decrypt(session, wrapped) == data


def test_wrap_unwrap_round_trip_of_secret_and_private_keys(harness, ntls, session):
    kek = ntls.generate_key(session, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 32)])
    target = ntls.generate_key(session, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16)])
    wrapped = ntls.wrap_key(session, c.CKM_AES_KEY_WRAP_KWP, kek, target)
    copy = ntls.unwrap_key(session, c.CKM_AES_KEY_WRAP_KWP, kek, wrapped,
                           [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES)])
    ntls.encrypt_init(session, c.CKM_AES_ECB, target)
    a = ntls.encrypt(session, bytes(16))
    ntls.encrypt_init(session, c.CKM_AES_ECB, copy)
    assert ntls.encrypt(session, bytes(16)) == a
    assert ntls.get_attributes(session, copy, c.CKA_LOCAL, c.CKA_ALWAYS_SENSITIVE) == \
        {c.CKA_LOCAL: False, c.CKA_ALWAYS_SENSITIVE: False}
    # RSA-OAEP wrap of an AES key
    pub, priv = rsa_pair(ntls, session)
    oaep = Mechanism(c.CKM_RSA_PKCS_OAEP, OaepParams(c.CKM_SHA256, c.CKG_MGF1_SHA256,
                                                     c.CKZ_DATA_SPECIFIED, b""))
    wrapped = ntls.wrap_key(session, oaep, pub, target)
    again = ntls.unwrap_key(session, oaep, priv, wrapped,
                            [(c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES)])
    ntls.encrypt_init(session, c.CKM_AES_ECB, again)
    assert ntls.encrypt(session, bytes(16)) == a
    # private keys: partition policy 1 (private key wrapping) is 0 by default
    epub, epriv = ntls.generate_key_pair(session, c.CKM_EC_KEY_PAIR_GEN, [(c.CKA_EC_PARAMS, P256)],
                                         [(c.CKA_EXTRACTABLE, True)])
    with pytest.raises(Pkcs11Error) as error:
        ntls.wrap_key(session, c.CKM_AES_KEY_WRAP_PAD, kek, epriv)
    assert error.value.rv == c.CKR_KEY_NOT_WRAPPABLE


def test_cmac_rfc4493_vectors(ntls, session):
    key = secret(ntls, session, bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    ntls.sign_init(session, c.CKM_AES_CMAC, key)
    assert ntls.sign(session, message) == bytes.fromhex("070a16b46b4d4144f79bdd9dd04a287c")
    ntls.sign_init(session, c.CKM_AES_CMAC, key)
    assert ntls.sign(session, b"") == bytes.fromhex("bb1d6929e95937287fa37d129b756746")
    ntls.sign_init(session, Mechanism(c.CKM_AES_CMAC_GENERAL, MacGeneralParams(8)), key)
    assert ntls.sign(session, message) == bytes.fromhex("070a16b46b4d4144")
    verify(ntls, session, c.CKM_AES_CMAC, key, message,
           bytes.fromhex("070a16b46b4d4144f79bdd9dd04a287c"))
    with pytest.raises(Pkcs11Error) as error:
        verify(ntls, session, c.CKM_AES_CMAC, key, message, bytes(16))
    assert error.value.rv == c.CKR_SIGNATURE_INVALID


def test_aes_cbc_mac(ntls, session):
    value = os.urandom(16)
    key = secret(ntls, session, value)
    data = os.urandom(74)  # not a whole number of blocks: zero padding
    encryptor = Cipher(algorithms.AES(value), modes.CBC(bytes(16))).encryptor()
    expected = (encryptor.update(data + bytes(6)) + encryptor.finalize())[-16:]
    assert sign(ntls, session, c.CKM_AES_MAC, key, data) == expected[:8]
    ntls.sign_init(session, Mechanism(c.CKM_AES_MAC_GENERAL, MacGeneralParams(16)), key)
    ntls.sign_update(session, data[:20])
    ntls.sign_update(session, data[20:])
    assert ntls.sign_final(session) == expected
    verify(ntls, session, c.CKM_AES_MAC, key, data, expected[:8])
    with pytest.raises(Pkcs11Error) as error:
        verify(ntls, session, c.CKM_AES_MAC, key, data, bytes(8))
    assert error.value.rv == c.CKR_SIGNATURE_INVALID


def test_hmac_rfc4231_case_2(ntls, session):
    key = secret(ntls, session, b"Jefe", c.CKK_GENERIC_SECRET)
    data = b"what do ya want for nothing?"
    expected = {
        c.CKM_SHA224_HMAC: "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44",
        c.CKM_SHA256_HMAC: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        c.CKM_SHA384_HMAC: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
                           "8e2240ca5e69e2c78b3239ecfab21649",
        c.CKM_SHA512_HMAC: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                           "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    }
    for mechanism, mac in expected.items():
        assert sign(ntls, session, mechanism, key, data) == bytes.fromhex(mac)
        verify(ntls, session, mechanism, key, data, bytes.fromhex(mac))
    ntls.sign_init(session, Mechanism(c.CKM_SHA256_HMAC_GENERAL, MacGeneralParams(16)), key)
    assert ntls.sign(session, data) == bytes.fromhex(expected[c.CKM_SHA256_HMAC])[:16]
    h = hmac.HMAC(b"Jefe", hashes.SHA1())
    h.update(data)
    assert sign(ntls, session, c.CKM_SHA_1_HMAC, key, data) == h.finalize()


def test_generic_secret_generation_and_hmac(ntls, session):
    key = ntls.generate_key(session, c.CKM_GENERIC_SECRET_KEY_GEN,
                            [(c.CKA_VALUE_LEN, 48), (c.CKA_SENSITIVE, False)])
    value = ntls.get_attributes(session, key, c.CKA_VALUE)[c.CKA_VALUE]
    assert len(value) == 48
    h = hmac.HMAC(value, hashes.SHA384())
    h.update(b"x")
    assert sign(ntls, session, c.CKM_SHA384_HMAC, key, b"x") == h.finalize()


@pytest.mark.parametrize("mechanism,algorithm", [
    (c.CKM_SHA_1, hashes.SHA1()), (c.CKM_SHA224, hashes.SHA224()), (c.CKM_SHA256, hashes.SHA256()),
    (c.CKM_SHA384, hashes.SHA384()), (c.CKM_SHA512, hashes.SHA512()),
])
def test_digests(ntls, session, mechanism, algorithm):
    data = os.urandom(300)
    expected = hashes.Hash(algorithm)
    expected.update(data)
    want = expected.finalize()
    ntls.digest_init(session, mechanism)
    assert ntls.digest(session, data) == want
    ntls.digest_init(session, mechanism)
    ntls.digest_update(session, data[:100])
    ntls.digest_update(session, data[100:])
    assert ntls.digest_final(session) == want


def test_digest_key(ntls, session):
    value = os.urandom(32)
    key = secret(ntls, session, value)
    ntls.digest_init(session, c.CKM_SHA256)
    ntls.digest_update(session, b"prefix")
    ntls.digest_key(session, key)
    expected = hashes.Hash(hashes.SHA256())
    expected.update(b"prefix" + value)
    assert ntls.digest_final(session) == expected.finalize()


def test_hkdf_rfc5869_case_1(ntls, session):
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = bytes.fromhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                        "34007208d5b887185865")
    base = secret(ntls, session, ikm, c.CKK_GENERIC_SECRET, derive=True)
    params = HkdfParams(True, True, c.CKM_SHA256, c.CKF_HKDF_SALT_DATA, salt, 0, info)
    derived = ntls.derive_key(session, Mechanism(c.CKM_HKDF_DERIVE, params), base,
                              [(c.CKA_KEY_TYPE, c.CKK_GENERIC_SECRET), (c.CKA_VALUE_LEN, 42),
                               (c.CKA_SENSITIVE, False)])
    assert ntls.get_attributes(session, derived, c.CKA_VALUE)[c.CKA_VALUE] == okm
    assert HKDF(hashes.SHA256(), 42, salt, info).derive(ikm) == okm
    data = ntls.create_object(session, [(c.CKA_CLASS, c.CKO_DATA), (c.CKA_VALUE, ikm)])
    out = ntls.derive_key(session, Mechanism(c.CKM_HKDF_DATA, params), data,
                          [(c.CKA_CLASS, c.CKO_DATA), (c.CKA_VALUE_LEN, 42)])
    assert ntls.get_attributes(session, out, c.CKA_VALUE)[c.CKA_VALUE] == okm


def test_aes_encrypt_data_derivation(ntls, session):
    value = os.urandom(16)
    base = secret(ntls, session, value, derive=True)
    data = os.urandom(32)
    key = ntls.derive_key(session, Mechanism(c.CKM_AES_ECB_ENCRYPT_DATA,
                                             KeyDerivationStringData(data)), base,
                          [(c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_SENSITIVE, False)])
    encryptor = Cipher(algorithms.AES(value), modes.ECB()).encryptor()
    assert ntls.get_attributes(session, key, c.CKA_VALUE)[c.CKA_VALUE] == encryptor.update(data)
    with pytest.raises(Pkcs11Error) as error:  # 16 bytes of data cannot make a 32-byte key
        ntls.derive_key(session, Mechanism(c.CKM_AES_ECB_ENCRYPT_DATA,
                                           KeyDerivationStringData(data[:16])), base,
                        [(c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE_LEN, 32)])
    assert error.value.rv == c.CKR_MECHANISM_PARAM_INVALID
    iv = os.urandom(16)
    key = ntls.derive_key(session, Mechanism(c.CKM_AES_CBC_ENCRYPT_DATA,
                                             AesCbcEncryptDataParams(iv, data)), base,
                          [(c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE_LEN, 16),
                           (c.CKA_SENSITIVE, False)])
    encryptor = Cipher(algorithms.AES(value), modes.CBC(iv)).encryptor()
    assert ntls.get_attributes(session, key, c.CKA_VALUE)[c.CKA_VALUE] == encryptor.update(data)[:16]


def test_random(ntls, session):
    a, b = ntls.generate_random(session, 64), ntls.generate_random(session, 64)
    assert len(a) == len(b) == 64 and a != b


def test_seed_random_is_mixed_into_the_generator_without_a_login(harness, ntls):
    public = harness.session(ntls, user=None, flags=c.CKF_SERIAL_SESSION)
    ntls.seed_random(public, b"12345678")
    ntls.seed_random(public, b"")
    # seeding adds to the pool; the same seed twice still gives different random data
    ntls.seed_random(public, b"k" * 1024)
    first = ntls.generate_random(public, 32)
    ntls.seed_random(public, b"k" * 1024)
    assert ntls.generate_random(public, 32) != first
    with pytest.raises(Pkcs11Error) as error:
        ntls.seed_random(public + 1000, b"seed")
    assert error.value.rv == c.CKR_SESSION_HANDLE_INVALID
    ntls.close_session(public)


def test_seed_random_where_the_system_generator_takes_no_seed(ntls, session, monkeypatch, tmp_path):
    from hsmcloud.appliances.luna.pkcs11 import token
    monkeypatch.setattr(token, "RANDOM_POOL", str(tmp_path))  # a directory cannot be written
    with pytest.raises(Pkcs11Error) as error:
        ntls.seed_random(session, b"seed")
    assert error.value.rv == c.CKR_RANDOM_SEED_NOT_SUPPORTED


# -- mechanism lists, info and refusals ---------------------------------------------------------


def test_mechanism_info_is_true(harness, ntls, session):
    mechanisms = ntls.get_mechanism_list(harness.serial)
    assert {c.CKM_RSA_PKCS_PSS, c.CKM_ECDSA, c.CKM_AES_GCM, c.CKM_AES_KEY_WRAP_KWP,
            c.CKM_HKDF_DERIVE, c.CKM_EDDSA} <= set(mechanisms)
    assert c.CKM_SP800_108_DOUBLE_PIPELINE_KDF not in mechanisms
    low, high, flags = ntls.get_mechanism_info(harness.serial, c.CKM_RSA_PKCS_KEY_PAIR_GEN)
    assert (low, high) == (1024, 4096) and flags & c.CKF_GENERATE_KEY_PAIR
    assert ntls.get_mechanism_info(harness.serial, c.CKM_EC_KEY_PAIR_GEN)[:2] == (192, 521)
    assert ntls.get_mechanism_info(harness.serial, c.CKM_EDDSA)[:2] == (255, 448)
    low, high, flags = ntls.get_mechanism_info(harness.serial, c.CKM_AES_GCM)
    assert (low, high) == (16, 32)
    assert flags & (c.CKF_ENCRYPT | c.CKF_DECRYPT | c.CKF_WRAP | c.CKF_UNWRAP) == \
        c.CKF_ENCRYPT | c.CKF_DECRYPT | c.CKF_WRAP | c.CKF_UNWRAP
    assert not flags & c.CKF_SIGN
    with pytest.raises(Pkcs11Error) as error:
        ntls.get_mechanism_info(harness.serial, c.CKM_SP800_108_DOUBLE_PIPELINE_KDF)
    assert error.value.rv == c.CKR_MECHANISM_INVALID
    # the sizes are enforced: a 4096-bit limit refuses 4097..., the minimum refuses 512
    with pytest.raises(Pkcs11Error) as error:
        ntls.generate_key_pair(session, c.CKM_RSA_PKCS_KEY_PAIR_GEN, [(c.CKA_MODULUS_BITS, 512)], [])
    assert error.value.rv == c.CKR_KEY_SIZE_RANGE


def test_wrong_mechanism_for_the_key_or_function(ntls, session):
    aes = secret(ntls, session, os.urandom(16))
    pub, priv = rsa_pair(ntls, session)
    with pytest.raises(Pkcs11Error) as error:
        ntls.sign_init(session, c.CKM_SHA256_RSA_PKCS, aes)
    assert error.value.rv == c.CKR_KEY_TYPE_INCONSISTENT
    with pytest.raises(Pkcs11Error) as error:
        ntls.encrypt_init(session, c.CKM_SHA256_RSA_PKCS, pub)
    assert error.value.rv == c.CKR_MECHANISM_INVALID
    with pytest.raises(Pkcs11Error) as error:
        ntls.sign_init(session, 0x7777, priv)
    assert error.value.rv == c.CKR_MECHANISM_INVALID
    with pytest.raises(Pkcs11Error) as error:
        ntls.sign_init(session, c.CKM_SHA256_RSA_PKCS, pub)  # a public key cannot sign
    assert error.value.rv == c.CKR_KEY_FUNCTION_NOT_PERMITTED
    no_encrypt = secret(ntls, session, os.urandom(16), encrypt=False)
    with pytest.raises(Pkcs11Error) as error:
        ntls.encrypt_init(session, c.CKM_AES_ECB, no_encrypt)
    assert error.value.rv == c.CKR_KEY_FUNCTION_NOT_PERMITTED
    only_gcm = ntls.create_object(session, [
        (c.CKA_CLASS, c.CKO_SECRET_KEY), (c.CKA_KEY_TYPE, c.CKK_AES), (c.CKA_VALUE, bytes(16)),
        (c.CKA_ALLOWED_MECHANISMS, (c.CKM_AES_GCM,))])
    with pytest.raises(Pkcs11Error) as error:
        ntls.encrypt_init(session, c.CKM_AES_ECB, only_gcm)
    assert error.value.rv == c.CKR_MECHANISM_INVALID


def test_fips_mode_refuses_non_approved_mechanisms(tmp_path):
    from luna_helpers import ok
    h = Harness(tmp_path)
    try:
        # HSM policy 12 is destructive: the partitions go; make and assign one again
        h.core.hsm.change_policy(12, 0, so_generation=h.core.hsm.record().generation)
        ok(h.shell, "partition create -partition fips1")
        h.serial = h.core.partitions.by_name("fips1").serial
        h.prepare_partition(h.serial, label="fips")
        h.core.clients.assign("client1", h.serial)
        with h.connect() as ntls:
            mechanisms = ntls.get_mechanism_list(h.serial)
            assert c.CKM_EDDSA not in mechanisms and c.CKM_RSA_X_509 not in mechanisms
            assert c.CKM_SHA1_RSA_PKCS not in mechanisms and c.CKM_SHA256_RSA_PKCS in mechanisms
            assert ntls.get_mechanism_info(h.serial, c.CKM_RSA_PKCS_KEY_PAIR_GEN)[0] == 2048
            assert ntls.get_mechanism_info(h.serial, c.CKM_SHA256_RSA_PKCS)[0] == 2048
            assert ntls.get_mechanism_info(h.serial, c.CKM_EC_KEY_PAIR_GEN)[0] == 224
            session = h.session(ntls)
            with pytest.raises(Pkcs11Error) as error:
                ntls.generate_key_pair(session, c.CKM_EC_EDWARDS_KEY_PAIR_GEN,
                                       [(c.CKA_EC_PARAMS, ED25519)], [])
            assert error.value.rv == c.CKR_MECHANISM_INVALID
            with pytest.raises(Pkcs11Error) as error:
                ntls.generate_key_pair(session, c.CKM_RSA_PKCS_KEY_PAIR_GEN,
                                       [(c.CKA_MODULUS_BITS, 1024)], [])
            assert error.value.rv == c.CKR_KEY_SIZE_RANGE
            with pytest.raises(Pkcs11Error) as error:
                ntls.generate_key_pair(session, c.CKM_EC_KEY_PAIR_GEN,
                                       [(c.CKA_EC_PARAMS, OIDS["P-192"])], [])
            assert error.value.rv == c.CKR_KEY_SIZE_RANGE
    finally:
        h.close()
