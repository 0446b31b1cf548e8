"""DUKPT key derivation (ANSI X9.24): TDES DUKPT (part 1, 2009) and AES DUKPT (part 3, 2017).

The server side only: from a Base Derivation Key and a Key Serial Number to the working key of
that transaction. DES/TDES/AES primitives come from ``cryptography`` (via ``keycrypto``);
neither psec nor pyemv computes DUKPT.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import keycrypto as kc
from .errors import HostError

# -- TDES DUKPT (X9.24-1) --------------------------------------------------------------------

TDES_KSN_LENGTH = 10
_COUNTER_BITS = 21
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1
_KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")

#: Variants XORed into the transaction key for each use (X9.24-1 Annex A).
TDES_PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
TDES_MAC_REQUEST_VARIANT = bytes.fromhex("000000000000FF00000000000000FF00")
TDES_MAC_RESPONSE_VARIANT = bytes.fromhex("00000000FF00000000000000FF000000")
TDES_DATA_REQUEST_VARIANT = bytes.fromhex("0000000000FF00000000000000FF0000")


def _des_encrypt(key8: bytes, block: bytes) -> bytes:
    # Single DES as TDES with K1 = K2 = K3.
    enc = Cipher(TripleDES(key8 * 3), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _check_bdk(bdk: bytes) -> None:
    if len(bdk) != 16:
        raise HostError("27", "a TDES DUKPT BDK is a double-length key")


#: Initial keys by (BDK, device part of the KSN): every transaction of a device starts from the
#: same one. Bounded; emptied with the other key caches when the security domain changes.
_IPEKS = kc.derived_key_cache()
_IPEK_CACHE_SIZE = 1024


def tdes_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """Initial PIN Encryption Key of the device that ``ksn`` names."""
    _check_bdk(bdk)
    if len(ksn) != TDES_KSN_LENGTH:
        raise HostError("15", "a TDES DUKPT KSN is 20 hex digits")
    base = (int.from_bytes(ksn, "big") & ~_COUNTER_MASK).to_bytes(TDES_KSN_LENGTH, "big")[:8]
    ipek = _IPEKS.get((bdk, base))
    if ipek is None:
        left = kc.tdes_encrypt(bdk, base)
        right = kc.tdes_encrypt(kc.xor(bdk, _KEY_MASK), base)
        ipek = left + right
        if len(_IPEKS) >= _IPEK_CACHE_SIZE:
            _IPEKS.clear()
        _IPEKS[(bdk, base)] = ipek
    return ipek


def _non_reversible(key: bytes, data: bytes) -> bytes:
    def half(k: bytes) -> bytes:
        left, right = k[:8], k[8:]
        return kc.xor(_des_encrypt(left, kc.xor(data, right)), right)

    return half(kc.xor(key, _KEY_MASK)) + half(key)


def tdes_transaction_key(bdk: bytes, ksn: bytes) -> bytes:
    """The current (future) key of transaction ``ksn`` before its usage variant."""
    key = tdes_ipek(bdk, ksn)
    value = int.from_bytes(ksn, "big")
    counter = value & _COUNTER_MASK
    register = int.from_bytes(ksn[2:], "big") & ~_COUNTER_MASK & ((1 << 64) - 1)
    bit = 1 << (_COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            register |= bit
            key = _non_reversible(key, register.to_bytes(8, "big"))
        bit >>= 1
    return key


def tdes_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    return kc.xor(tdes_transaction_key(bdk, ksn), TDES_PIN_VARIANT)


def tdes_mac_key(bdk: bytes, ksn: bytes, *, response: bool = False) -> bytes:
    variant = TDES_MAC_RESPONSE_VARIANT if response else TDES_MAC_REQUEST_VARIANT
    return kc.xor(tdes_transaction_key(bdk, ksn), variant)


# -- AES DUKPT (X9.24-3) ---------------------------------------------------------------------

AES_KSN_LENGTH = 12
KEY_USAGE_PIN = 0x1000
KEY_USAGE_MAC_GENERATION = 0x2000
KEY_USAGE_MAC_VERIFICATION = 0x2001
KEY_USAGE_MAC_BOTH = 0x2002
KEY_USAGE_DATA_ENCRYPT = 0x3000
KEY_USAGE_DATA_DECRYPT = 0x3001
KEY_USAGE_DATA_BOTH = 0x3002
_KEY_USAGE_DERIVATION = 0x8000
_KEY_USAGE_INITIAL = 0x8001

#: Key type -> (algorithm indicator, length in bits).
_AES_TYPES = {16: (0x0002, 128), 24: (0x0003, 192), 32: (0x0004, 256)}
_TDES_TYPES = {16: (0x0000, 128), 24: (0x0001, 192)}


def _aes_ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _derive(derivation_key: bytes, usage: int, out_type: tuple[int, int], data8: bytes) -> bytes:
    algorithm, bits = out_type
    length = bits // 8
    out = b""
    counter = 1
    while len(out) < length:
        data = (
            bytes([1, counter]) + usage.to_bytes(2, "big") + algorithm.to_bytes(2, "big")
            + bits.to_bytes(2, "big") + data8
        )
        out += _aes_ecb(derivation_key, data)
        counter += 1
    return out[:length]


def _aes_type(key: bytes) -> tuple[int, int]:
    try:
        return _AES_TYPES[len(key)]
    except KeyError:
        raise HostError("27", "an AES DUKPT BDK is an AES-128, -192 or -256 key") from None


def aes_initial_key(bdk: bytes, initial_key_id: bytes) -> bytes:
    if len(initial_key_id) != 8:
        raise HostError("15", "the initial key ID is 16 hex digits")
    return _derive(bdk, _KEY_USAGE_INITIAL, _aes_type(bdk), initial_key_id)


def aes_transaction_key(bdk: bytes, ksn: bytes) -> bytes:
    """The intermediate derivation key of transaction ``ksn`` (96-bit KSN: IKID || counter)."""
    if len(ksn) != AES_KSN_LENGTH:
        raise HostError("15", "an AES DUKPT KSN is 24 hex digits")
    key_type = _aes_type(bdk)
    key = aes_initial_key(bdk, ksn[:8])
    derivation_id = ksn[4:8]
    counter = int.from_bytes(ksn[8:], "big")
    if counter == 0 or bin(counter).count("1") > 16:
        raise HostError("15", "AES DUKPT transaction counter is 0 or has more than 16 one bits")
    working = 0
    bit = 1 << 31
    while bit:
        if counter & bit:
            working |= bit
            key = _derive(key, _KEY_USAGE_DERIVATION, key_type, derivation_id + working.to_bytes(4, "big"))
        bit >>= 1
    return key


def aes_working_key(bdk: bytes, ksn: bytes, usage: int, *, key_length: int | None = None) -> bytes:
    """The working key of ``usage`` (PIN, MAC, data) for transaction ``ksn``; AES of the BDK's length."""
    key = aes_transaction_key(bdk, ksn)
    out_type = _AES_TYPES[key_length or len(bdk)]
    return _derive(key, usage, out_type, ksn[4:12])


__all__ = [
    "AES_KSN_LENGTH",
    "KEY_USAGE_MAC_GENERATION",
    "KEY_USAGE_MAC_VERIFICATION",
    "KEY_USAGE_PIN",
    "TDES_KSN_LENGTH",
    "aes_initial_key",
    "aes_transaction_key",
    "aes_working_key",
    "tdes_ipek",
    "tdes_mac_key",
    "tdes_pin_key",
    "tdes_transaction_key",
]
