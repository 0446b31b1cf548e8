"""EW (generate a signature) and EY (validate a signature) with RSA PKCS#1 v1.5.

Identifiers: hash as in :mod:`.hashing` (04 = no hash: the message data is a DER DigestInfo,
signed as it is), signature identifier 01 = RSA, pad mode 01 = PKCS#1 v1.5.

EY answers 00 (valid), 02 (the signature does not verify) or 01 (the public key's MAC, or its
key block, does not verify) — the codes a payShield 10K client library tested against the
device reads (kambizh/payshield-crypto-client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from ..errors import HostError
from ..fields import Cursor
from . import asymmetric as asym
from . import hashing

if TYPE_CHECKING:
    from ..host_commands import CommandContext

SIGNATURE_RSA = "01"
PAD_PKCS1_V15 = "01"

#: DER DigestInfo prefixes (RFC 8017, section 9.2 note 1) -> hash algorithm.
DIGEST_INFO_PREFIXES: dict[bytes, type[hashes.HashAlgorithm]] = {
    bytes.fromhex("3020300c06082a864886f70d020505000410"): hashes.MD5,
    bytes.fromhex("3021300906052b0e03021a05000414"): hashes.SHA1,
    bytes.fromhex("302d300d06096086480165030402040500041c"): hashes.SHA224,
    bytes.fromhex("3031300d060960864801650304020105000420"): hashes.SHA256,
    bytes.fromhex("3041300d060960864801650304020205000430"): hashes.SHA384,
    bytes.fromhex("3051300d060960864801650304020305000440"): hashes.SHA512,
}


def _identifiers(cur: Cursor) -> str:
    hash_id = cur.take_digits(2)
    if hash_id != hashing.NO_HASH:
        hashing.hash_algorithm(hash_id)  # 05 for an unknown one
    if cur.take_digits(2) != SIGNATURE_RSA:
        raise HostError("06", "signature identifier must be 01 (RSA)")
    if cur.take_digits(2) != PAD_PKCS1_V15:
        raise HostError("07", "pad mode identifier must be 01 (PKCS#1 v1.5)")
    return hash_id


def _message(cur: Cursor) -> bytes:
    length = int(cur.take_digits(4))
    if length == 0 or cur.remaining < length:
        raise HostError("80", "message data empty or shorter than its length field")
    data = cur.take_binary(length)
    if not cur.optional(";"):
        raise HostError("15", "';' missing after the message data")
    return data


def _digest_to_sign(hash_id: str, data: bytes) -> tuple[bytes, hashes.HashAlgorithm]:
    """What PKCS#1 v1.5 signs: (data, its hash) or, for no-hash mode, (digest, Prehashed)."""
    if hash_id != hashing.NO_HASH:
        return data, hashing.hash_algorithm(hash_id)
    for prefix, algorithm in DIGEST_INFO_PREFIXES.items():
        if data.startswith(prefix):
            digest = data[len(prefix) :]
            if len(digest) != algorithm.digest_size:
                raise HostError("76", "hash length does not match the DigestInfo's algorithm")
            return digest, utils.Prehashed(algorithm())
    raise HostError("74", "no-hash mode needs a DER DigestInfo of MD5 or SHA-1/224/256/384/512")


def cmd_ew(ctx: CommandContext, cur: Cursor) -> str:
    """Generate a signature: hash id, signature id, pad mode, data length (4N), data, ';',
    private key flag (99), private key length (4N or FFFF) + private key -> length (4N) + signature."""
    hash_id = _identifiers(cur)
    data = _message(cur)
    asym.take_private_key_flag(cur)
    field = asym.take_private_key_field(cur)
    lmk = ctx.lmk(cur.trailing())
    private = asym.open_private_key(lmk, field)
    asym.require_mode(private, asym.SIGNING_MODES, lmk)
    if not isinstance(private.key, rsa.RSAPrivateKey):
        raise HostError("03", "signature identifier 01 needs an RSA private key")
    message, algorithm = _digest_to_sign(hash_id, data)
    signature = private.key.sign(message, padding.PKCS1v15(), algorithm)
    return f"{len(signature):04d}" + signature.decode("latin-1")


def cmd_ey(ctx: CommandContext, cur: Cursor) -> str:
    """Validate a signature: hash id, signature id, pad mode, signature length (4N), signature,
    ';', data length (4N), data, ';', then MAC (4B) + public key (DER) + [authentication data]
    under a variant LMK, or the public key's key block under a key-block LMK."""
    hash_id = _identifiers(cur)
    length = int(cur.take_digits(4))
    if length == 0 or cur.remaining < length:
        raise HostError("76", "signature empty or shorter than its length field")
    signature = cur.take_binary(length)
    if not cur.optional(";"):
        raise HostError("15", "';' missing after the signature")
    data = _message(cur)
    protected = asym.take_protected_public_key(cur)
    lmk = ctx.lmk(cur.trailing())
    public_key = asym.open_protected_public_key(lmk, protected)
    if len(signature) != (public_key.key_size + 7) // 8:
        raise HostError("76", "signature length is not the modulus length")
    message, algorithm = _digest_to_sign(hash_id, data)
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), algorithm)
    except InvalidSignature as exc:
        raise HostError("02", "signature verification failure") from exc
    return ""
