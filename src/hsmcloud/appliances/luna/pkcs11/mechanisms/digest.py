"""SHA-1 and SHA-2 digests (CKM_SHA_1, CKM_SHA224 ... CKM_SHA512), and the hash tables others use."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from hsmcloud.protocols.pkcs11 import constants as c

from .base import DigestOperation, MechanismSpec, no_param

#: Digest mechanism → `cryptography` hash class.
HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    c.CKM_SHA_1: hashes.SHA1,
    c.CKM_SHA224: hashes.SHA224,
    c.CKM_SHA256: hashes.SHA256,
    c.CKM_SHA384: hashes.SHA384,
    c.CKM_SHA512: hashes.SHA512,
}
#: CKG_MGF1_* → hash class.
MGF1_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    c.CKG_MGF1_SHA1: hashes.SHA1,
    c.CKG_MGF1_SHA224: hashes.SHA224,
    c.CKG_MGF1_SHA256: hashes.SHA256,
    c.CKG_MGF1_SHA384: hashes.SHA384,
    c.CKG_MGF1_SHA512: hashes.SHA512,
}


class HashDigest(DigestOperation):
    __slots__ = ("_hash",)

    def __init__(self, algorithm: hashes.HashAlgorithm) -> None:
        self._hash = hashes.Hash(algorithm)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def final(self) -> bytes:
        return self._hash.finalize()


def _digest(hash_class):
    def start(mechanism, layout):
        no_param(mechanism)
        return HashDigest(hash_class())
    return start


MECHANISMS = [
    MechanismSpec(type=mechanism, digest=_digest(cls)) for mechanism, cls in HASHES.items()
]
