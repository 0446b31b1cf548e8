"""Hash identifiers of the RSA commands, and GM (hash a block of data).

Identifiers (payShield "Using the RSA cryptosystem"): 01 SHA-1, 02 MD5, 03 ISO 10118-2,
04 no hash (EW/EY: the data already is a DigestInfo), 05 SHA-224, 06 SHA-256, 07 SHA-384,
08 SHA-512. ISO 10118-2 (the DES-based hash) is not offered here: it answers 05.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes

from ..errors import HostError
from ..fields import Cursor

if TYPE_CHECKING:
    from ..host_commands import CommandContext

#: Hash identifier -> the hash algorithm (class) it names.
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "01": hashes.SHA1,
    "02": hashes.MD5,
    "05": hashes.SHA224,
    "06": hashes.SHA256,
    "07": hashes.SHA384,
    "08": hashes.SHA512,
}
NO_HASH = "04"
ISO_10118_2 = "03"


def hash_algorithm(identifier: str) -> hashes.HashAlgorithm:
    """The algorithm of a hash identifier; HostError 05 for an unknown or unsupported one."""
    if identifier == ISO_10118_2:
        raise HostError("05", "hash identifier 03 (ISO 10118-2) is not supported")
    cls = HASHES.get(identifier)
    if cls is None:
        raise HostError("05", f"invalid hash identifier {identifier!r}")
    return cls()


def digest(identifier: str, data: bytes) -> bytes:
    h = hashes.Hash(hash_algorithm(identifier))
    h.update(data)
    return h.finalize()


def cmd_gm(ctx: CommandContext, cur: Cursor) -> str:
    """Hash a block of data: hash identifier (2N), data length (5N), data (binary) -> hash (binary)."""
    identifier = cur.take_digits(2)
    length = int(cur.take_digits(5))
    if cur.remaining < length:
        raise HostError("80", "message data shorter than its length field")
    data = cur.take_binary(length)
    cur.trailing()
    return digest(identifier, data).decode("latin-1")
