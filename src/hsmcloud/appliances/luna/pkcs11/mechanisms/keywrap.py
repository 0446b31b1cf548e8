"""AES key wrap primitives: RFC 3394 (KW, any 8-byte IV) and RFC 5649 (KWP, any 4-byte AIV prefix).

`cryptography` has both with the default IVs only; PKCS#11 lets the caller choose the IV, so
the algorithms are written out here over AES-ECB (and checked against `cryptography` and the
RFC vectors in the tests).
"""

from __future__ import annotations

import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DEFAULT_IV = bytes.fromhex("A6A6A6A6A6A6A6A6")
DEFAULT_AIV_PREFIX = bytes.fromhex("A65959A6")


class UnwrapFailed(ValueError):
    """The integrity check of an unwrap failed (wrong key, or corrupted data)."""


def _wrap_blocks(key: bytes, iv: bytes, blocks: list[bytes]) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    a = iv
    r = list(blocks)
    n = len(r)
    for j in range(6):
        for i in range(n):
            b = encryptor.update(a + r[i])
            t = n * j + i + 1
            a = (int.from_bytes(b[:8], "big") ^ t).to_bytes(8, "big")
            r[i] = b[8:]
    return a + b"".join(r)


def _unwrap_blocks(key: bytes, wrapped: bytes) -> tuple[bytes, bytes]:
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    n = len(wrapped) // 8 - 1
    a = wrapped[:8]
    r = [wrapped[8 * (i + 1): 8 * (i + 2)] for i in range(n)]
    for j in range(5, -1, -1):
        for i in range(n - 1, -1, -1):
            t = n * j + i + 1
            a_t = (int.from_bytes(a, "big") ^ t).to_bytes(8, "big")
            b = decryptor.update(a_t + r[i])
            a, r[i] = b[:8], b[8:]
    return a, b"".join(r)


def kw_wrap(key: bytes, plaintext: bytes, iv: bytes = DEFAULT_IV) -> bytes:
    """RFC 3394 wrap; ``plaintext`` is a multiple of 8 bytes, at least 16."""
    if len(plaintext) < 16 or len(plaintext) % 8:
        raise ValueError("KW wraps a multiple of 8 bytes, at least 16")
    return _wrap_blocks(key, iv, [plaintext[i:i + 8] for i in range(0, len(plaintext), 8)])


def kw_unwrap(key: bytes, wrapped: bytes, iv: bytes = DEFAULT_IV) -> bytes:
    if len(wrapped) < 24 or len(wrapped) % 8:
        raise ValueError("a KW ciphertext is a multiple of 8 bytes, at least 24")
    a, plaintext = _unwrap_blocks(key, wrapped)
    if not hmac.compare_digest(a, iv):
        raise UnwrapFailed("integrity check failed")
    return plaintext


def kwp_wrap(key: bytes, plaintext: bytes, prefix: bytes = DEFAULT_AIV_PREFIX) -> bytes:
    """RFC 5649 wrap of 1 or more bytes."""
    if not plaintext:
        raise ValueError("KWP wraps at least 1 byte")
    aiv = prefix + struct.pack(">I", len(plaintext))
    padded = plaintext + bytes(-len(plaintext) % 8)
    if len(padded) == 8:
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return encryptor.update(aiv + padded) + encryptor.finalize()
    return _wrap_blocks(key, aiv, [padded[i:i + 8] for i in range(0, len(padded), 8)])


def kwp_unwrap(key: bytes, wrapped: bytes, prefix: bytes = DEFAULT_AIV_PREFIX) -> bytes:
    if len(wrapped) < 16 or len(wrapped) % 8:
        raise ValueError("a KWP ciphertext is a multiple of 8 bytes, at least 16")
    if len(wrapped) == 16:
        decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
        block = decryptor.update(wrapped) + decryptor.finalize()
        a, padded = block[:8], block[8:]
    else:
        a, padded = _unwrap_blocks(key, wrapped)
    length = int.from_bytes(a[4:], "big")
    pad = len(padded) - length
    if not hmac.compare_digest(a[:4], prefix) or not 0 <= pad < 8 or any(padded[length:]):
        raise UnwrapFailed("integrity check failed")
    return padded[:length]
