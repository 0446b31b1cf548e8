"""python-pkcs11 (from PyPI) drives the library end to end against a real appliance; every
result is checked with `cryptography` or hashlib, independently of the appliance.

Debian packages: gcc, libssl-dev (to build the library).
"""
from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import CO_PIN, CU_PIN, start_appliance

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install '.[test]')")
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass  # noqa: E402
from pkcs11.mechanisms import GCMParams  # noqa: E402
from pkcs11.util.ec import encode_ec_public_key, encode_ecdsa_signature, encode_named_curve_parameters  # noqa: E402
from pkcs11.util.rsa import encode_rsa_public_key  # noqa: E402


CKU_CRYPTO_USER = 0x80000001  # Luna's Crypto User


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    """The appliance's partition as python-pkcs11 sees it (one library load per process)."""
    appliance = start_appliance(tmp_path_factory.mktemp("pp11"), partitions=[("app1", True)])
    saved = os.environ.get("HSMCLOUD_CONF")
    os.environ["HSMCLOUD_CONF"] = str(appliance.conf)
    try:
        lib = pkcs11.lib(str(module_path()))
        yield lib.get_token(token_label="app1")
        lib.reinitialize()  # drops the appliance connections before the appliance stops
    finally:
        if saved is None:
            os.environ.pop("HSMCLOUD_CONF", None)
        else:
            os.environ["HSMCLOUD_CONF"] = saved
        appliance.stop()


def test_token_and_mechanisms(token):
    assert token.label == "app1"
    assert token.manufacturer_id.startswith("hsmcloud")
    mechanisms = set(token.slot.get_mechanisms())
    assert {Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.ECDSA, Mechanism.AES_GCM, Mechanism.SHA256} <= mechanisms


def test_rsa_signature_verifies_with_cryptography(token):
    with token.open(user_pin=CO_PIN, rw=True) as session:
        public, private = session.generate_keypair(KeyType.RSA, 2048, store=False, label="pp11-rsa")
        signature = private.sign(b"signed through python-pkcs11", mechanism=Mechanism.SHA256_RSA_PKCS)
        key = serialization.load_der_public_key(_rsa_spki(encode_rsa_public_key(public)))
        key.verify(signature, b"signed through python-pkcs11", padding.PKCS1v15(), hashes.SHA256())
        assert public.verify(b"signed through python-pkcs11", signature, mechanism=Mechanism.SHA256_RSA_PKCS)


def _rsa_spki(pkcs1_der: bytes) -> bytes:
    from asn1crypto import keys
    return keys.PublicKeyInfo({"algorithm": {"algorithm": "rsa"},
                               "public_key": keys.RSAPublicKey.load(pkcs1_der)}).dump()


def test_ecdsa_p256_signature_verifies_with_cryptography(token):
    with token.open(user_pin=CO_PIN, rw=True) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
        public, private = params.generate_keypair(store=False)
        data = b"ecdsa through python-pkcs11"
        raw = private.sign(data, mechanism=Mechanism.ECDSA_SHA256)
        key = serialization.load_der_public_key(encode_ec_public_key(public))
        key.verify(encode_ecdsa_signature(raw), data, ec.ECDSA(hashes.SHA256()))


def test_aes_gcm_matches_cryptography(token):
    with token.open(user_pin=CO_PIN, rw=True) as session:
        template = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
        key = session.generate_key(KeyType.AES, 256, store=False, template=template)
        iv = os.urandom(12)
        plain = os.urandom(4096)
        params = GCMParams(iv, b"aad", 128)
        cipher = key.encrypt(plain, mechanism=Mechanism.AES_GCM, mechanism_param=params)
        assert AESGCM(key[Attribute.VALUE]).decrypt(iv, cipher, b"aad") == plain
        assert key.decrypt(cipher, mechanism=Mechanism.AES_GCM, mechanism_param=params) == plain


def test_digest_random_and_objects(token):
    with token.open(user_pin=CO_PIN, rw=True) as session:
        data = os.urandom(1000)
        assert session.digest(data, mechanism=Mechanism.SHA256) == hashlib.sha256(data).digest()
        assert len(session.generate_random(256)) == 32  # bits
        session.create_object({Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: False,
                               Attribute.LABEL: "pp11-data", Attribute.VALUE: b"payload"})
        found = list(session.get_objects({Attribute.LABEL: "pp11-data"}))
        assert len(found) == 1 and found[0][Attribute.VALUE] == b"payload"


def test_crypto_user_may_not_create_private_objects(token):
    with token.open(user_pin=CU_PIN, rw=True, user_type=CKU_CRYPTO_USER) as session:
        with pytest.raises(pkcs11.PKCS11Error):
            session.generate_key(KeyType.AES, 256, store=True, label="cu-key")
