"""Cipher primitives shared by the LMK, PIN-block and host-command code.

DES and AES come from ``psec``; TDES-ECB with double/triple-length keys, the hot path of every
key under the variant LMK, and AES-CMAC (which ``psec`` does not expose) from ``cryptography``. Kept in one module so the deprecation noise of two-key TDES in
``cryptography`` is silenced in one place.
"""

from __future__ import annotations

import os
import warnings

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from psec import aes as _aes
from psec import des as _des

from .errors import HostError

warnings.filterwarnings("ignore", message=".*TripleDES.*")


def is_aes(key: bytes, algorithm: str | None = None) -> bool:
    """AES when the key-block header says so; otherwise AES only for 32-byte keys."""
    if algorithm is not None:
        return algorithm == "A"
    return len(key) == 32


#: TDES-ECB ciphers by key: building one costs more than the encryption itself (cryptography
#: checks the key and raises its deprecation warning every time). Bounded; emptied by
#: :func:`clear_key_caches` whenever the security domain changes (LMK load, erase, release), so a
#: released tenant's keys do not stay in memory.
_CIPHERS: dict[bytes, Cipher] = {}
_CIPHER_CACHE_SIZE = 1024


#: Other caches of key material derived in this process (e.g. DUKPT initial keys), emptied with
#: the ciphers.
_DERIVED_CACHES: list[dict] = []


def derived_key_cache() -> dict:
    """A dict for derived keys that :func:`clear_key_caches` empties with the ciphers."""
    cache: dict = {}
    _DERIVED_CACHES.append(cache)
    return cache


def clear_key_caches() -> None:
    """Forget every cached working-key cipher and derived key (the security domain changed)."""
    _CIPHERS.clear()
    for cache in _DERIVED_CACHES:
        cache.clear()


def _tdes_ecb(key: bytes):
    """cryptography's TDES for double/triple-length keys (a third of psec's per-call cost);
    anything else goes to psec, which refuses it with its own message."""
    cipher = _CIPHERS.get(key)
    if cipher is not None:
        return cipher
    if len(key) not in (16, 24):
        return None
    if len(_CIPHERS) >= _CIPHER_CACHE_SIZE:
        _CIPHERS.clear()
    cipher = _CIPHERS[key] = Cipher(TripleDES(key), modes.ECB())
    return cipher


def tdes_encrypt(key: bytes, data: bytes) -> bytes:
    cipher = _tdes_ecb(key)
    if cipher is None or len(data) % 8:
        return _des.encrypt_tdes_ecb(key, data)
    enc = cipher.encryptor()
    return enc.update(data) + enc.finalize()


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    cipher = _tdes_ecb(key)
    if cipher is None or len(data) % 8:
        return _des.decrypt_tdes_ecb(key, data)
    dec = cipher.decryptor()
    return dec.update(data) + dec.finalize()


_ODD_PARITY = bytes(1 if bin(b).count("1") % 2 == 1 else 0 for b in range(256))


def has_odd_parity(key: bytes) -> bool:
    return all(_ODD_PARITY[b] for b in key)


def adjust_parity(key: bytes) -> bytes:
    return _des.adjust_key_parity(key)


def random_des_key(length: int) -> bytes:
    """A random DES/TDES key of ``length`` bytes (8, 16, 24) with odd parity, halves distinct."""
    while True:
        key = adjust_parity(os.urandom(length))
        parts = [key[i : i + 8] for i in range(0, length, 8)]
        if len(set(parts)) == len(parts):
            return key


def aes_cmac(key: bytes, data: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def kcv(key: bytes, algorithm: str | None = None, length: int = 3) -> str:
    """Key check value: DES/TDES encryption of zeros, or AES-CMAC of a zero block."""
    if is_aes(key, algorithm) or algorithm == "A":
        return aes_cmac(key, bytes(16))[:length].hex().upper()
    if len(key) not in (8, 16, 24):
        raise HostError("27")
    return _des.generate_kcv(key, length).hex().upper()


def block_encrypt(key: bytes, data: bytes, *, aes: bool, cbc_iv: bytes | None = None) -> bytes:
    if aes:
        return _aes.encrypt_aes_ecb(key, data) if cbc_iv is None else _aes.encrypt_aes_cbc(key, cbc_iv, data)
    return _des.encrypt_tdes_ecb(key, data) if cbc_iv is None else _des.encrypt_tdes_cbc(key, cbc_iv, data)


def block_decrypt(key: bytes, data: bytes, *, aes: bool, cbc_iv: bytes | None = None) -> bytes:
    if aes:
        return _aes.decrypt_aes_ecb(key, data) if cbc_iv is None else _aes.decrypt_aes_cbc(key, cbc_iv, data)
    return _des.decrypt_tdes_ecb(key, data) if cbc_iv is None else _des.decrypt_tdes_cbc(key, cbc_iv, data)


def xor(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise ValueError("xor of byte strings of different lengths")
    # One big-integer XOR: a tenth of the cost of a byte-by-byte generator.
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
