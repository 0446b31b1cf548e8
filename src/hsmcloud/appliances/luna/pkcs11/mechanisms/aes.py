"""AES: key generation, ECB, CBC, CBC-PAD, CTR, GCM, key wrap (KW, KW with PKCS#7 padding, KWP),
CMAC and the ECB/CBC encrypt-data derivations."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.params import (
    AesCbcEncryptDataParams,
    CtrParams,
    GcmParams,
    KeyDerivationStringData,
    MacGeneralParams,
)

from ..errors import (
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    KeySizeRange,
    MechanismParamInvalid,
    TemplateIncomplete,
    TemplateInconsistent,
    WrappedKeyInvalid,
    WrappedKeyLenRange,
)
from . import keywrap
from .base import (
    Accumulating,
    CipherOperation,
    MacVerify,
    MechanismSpec,
    SignOperation,
    bytes_param,
    no_param,
    raw_param,
    require_key_type,
    structured_param,
)

_AES = frozenset({c.CKK_AES})
KEY_SIZES = (16, 24, 32)
BLOCK = 16


def _aes_key(key) -> bytes:
    require_key_type(key, c.CKK_AES)
    value = key.crypto()
    if len(value) not in KEY_SIZES:
        raise KeySizeRange("An AES key is 16, 24 or 32 bytes.")
    return value


def generate(attrs: dict, mechanism, layout) -> bytes:
    no_param(mechanism)
    length = attrs.get(c.CKA_VALUE_LEN)
    if length is None:
        raise TemplateIncomplete("An AES key needs CKA_VALUE_LEN (16, 24 or 32).")
    if length not in KEY_SIZES:
        raise KeySizeRange(f"An AES key is 16, 24 or 32 bytes, not {length}.")
    return os.urandom(length)


# -- block modes --------------------------------------------------------------------------------


class _Blocks(CipherOperation):
    """ECB/CBC without padding: whole blocks only; multi-part input is buffered to block edges."""

    def __init__(self, context, *, decrypting: bool) -> None:
        self._context = context
        self._pending = b""
        self._error = EncryptedDataLenRange if decrypting else DataLenRange

    def update(self, data: bytes) -> bytes:
        data = self._pending + bytes(data)
        cut = len(data) - len(data) % BLOCK
        self._pending = data[cut:]
        return self._context.update(data[:cut]) if cut else b""

    def final(self) -> bytes:
        if self._pending:
            raise self._error("The input is not a multiple of 16 bytes.")
        return self._context.finalize()

    def once(self, data: bytes) -> bytes:
        if len(data) % BLOCK:
            raise self._error("The input is not a multiple of 16 bytes.")
        return self._context.update(bytes(data)) + self._context.finalize()


class _CbcPadEncrypt(CipherOperation):
    def __init__(self, context) -> None:
        self._blocks = _Blocks(context, decrypting=False)

    def update(self, data: bytes) -> bytes:
        return self._blocks.update(data)

    def final(self) -> bytes:
        pad = BLOCK - len(self._blocks._pending) % BLOCK
        return self._blocks.update(bytes([pad]) * pad) + self._blocks.final()


class _CbcPadDecrypt(CipherOperation):
    """Keeps the last block back until C_DecryptFinal, which removes and checks the padding."""

    def __init__(self, context) -> None:
        self._context = context
        self._pending = b""

    def update(self, data: bytes) -> bytes:
        data = self._pending + bytes(data)
        keep = len(data) % BLOCK or BLOCK
        if len(data) <= keep:
            self._pending = data
            return b""
        self._pending = data[-keep:]
        return self._context.update(data[:-keep])

    def final(self) -> bytes:
        if len(self._pending) != BLOCK:
            raise EncryptedDataLenRange("The ciphertext is not a multiple of 16 bytes.")
        block = self._context.update(self._pending) + self._context.finalize()
        return unpad(block, EncryptedDataInvalid)


def unpad(data: bytes, error) -> bytes:
    if not data:
        raise error("The padding is not valid.")
    pad = data[-1]
    if not 1 <= pad <= BLOCK or data[-pad:] != bytes([pad]) * pad:
        raise error("The padding is not valid.")
    return data[:-pad]


def pkcs7(data: bytes, block: int = BLOCK) -> bytes:
    pad = block - len(data) % block
    return bytes(data) + bytes([pad]) * pad


class _Ctr(CipherOperation):
    def __init__(self, context, counter_bits: int, counter_block: bytes) -> None:
        self._context = context
        start = int.from_bytes(counter_block, "big") & ((1 << counter_bits) - 1)
        self._blocks_left = (1 << counter_bits) - start
        self._used = 0

    def update(self, data: bytes) -> bytes:
        self._used += len(data)
        if (self._used + BLOCK - 1) // BLOCK > self._blocks_left:
            raise DataLenRange("The data would wrap the counter.")
        return self._context.update(bytes(data))

    def final(self) -> bytes:
        return self._context.finalize()


class _GcmEncrypt(CipherOperation):
    def __init__(self, context, tag_bytes: int) -> None:
        self._context, self._tag_bytes = context, tag_bytes

    def update(self, data: bytes) -> bytes:
        return self._context.update(bytes(data))

    def final(self) -> bytes:
        return self._context.finalize() + self._context.tag[: self._tag_bytes]


class _GcmDecrypt(Accumulating, CipherOperation):
    """Releases no plaintext before the tag is checked: everything comes out of final."""

    def __init__(self, key: bytes, params: GcmParams, tag_bytes: int) -> None:
        super().__init__()
        self._key, self._params, self._tag_bytes = key, params, tag_bytes

    def update(self, data: bytes) -> bytes:
        Accumulating.update(self, data)
        return b""

    def final(self) -> bytes:
        data = self.message()
        if len(data) < self._tag_bytes:
            raise EncryptedDataLenRange("The ciphertext is shorter than the tag.")
        body, tag = data[: len(data) - self._tag_bytes], data[len(data) - self._tag_bytes:]
        decryptor = Cipher(algorithms.AES(self._key),
                           modes.GCM(self._params.iv, tag, min_tag_length=self._tag_bytes)).decryptor()
        if self._params.aad:
            decryptor.authenticate_additional_data(self._params.aad)
        try:
            return decryptor.update(body) + decryptor.finalize()
        except InvalidTag:
            raise EncryptedDataInvalid("The GCM tag does not verify.") from None


def _gcm_params(mechanism) -> tuple[GcmParams, int]:
    params = structured_param(mechanism, GcmParams)
    if not 1 <= len(params.iv) <= 256 or params.iv_bits not in (0, 8 * len(params.iv)):
        raise MechanismParamInvalid("The GCM IV must be 1..256 bytes and ulIvBits its length.")
    if len(params.iv) < 8:
        raise MechanismParamInvalid("GCM IVs shorter than 8 bytes are not supported.")
    if params.tag_bits not in (32, 64, 96, 104, 112, 120, 128):
        raise MechanismParamInvalid("ulTagBits must be 32, 64 or 96..128 in steps of 8.")
    return params, params.tag_bits // 8


def _mode(mechanism_type: int, mechanism, layout):
    if mechanism_type == c.CKM_AES_ECB:
        no_param(mechanism)
        return modes.ECB()
    if mechanism_type in (c.CKM_AES_CBC, c.CKM_AES_CBC_PAD):
        return modes.CBC(bytes_param(mechanism, 16))
    raise AssertionError(mechanism_type)


def _cipher(mechanism_type: int, *, decrypting: bool):
    def start(key, mechanism, layout):
        value = _aes_key(key)
        if mechanism_type == c.CKM_AES_GCM:
            params, tag_bytes = _gcm_params(mechanism)
            if decrypting:
                return _GcmDecrypt(value, params, tag_bytes)
            encryptor = Cipher(algorithms.AES(value), modes.GCM(params.iv)).encryptor()
            if params.aad:
                encryptor.authenticate_additional_data(params.aad)
            return _GcmEncrypt(encryptor, tag_bytes)
        if mechanism_type == c.CKM_AES_CTR:
            params = raw_param(mechanism, CtrParams, layout)
            if not 1 <= params.counter_bits <= 128:
                raise MechanismParamInvalid("ulCounterBits must be 1..128.")
            cipher = Cipher(algorithms.AES(value), modes.CTR(params.counter_block))
            return _Ctr(cipher.decryptor() if decrypting else cipher.encryptor(),
                        params.counter_bits, params.counter_block)
        if mechanism_type in (c.CKM_AES_KEY_WRAP, c.CKM_AES_KEY_WRAP_PAD, c.CKM_AES_KEY_WRAP_KWP):
            return _WrapCipher(value, mechanism_type, mechanism, decrypting=decrypting)
        cipher = Cipher(algorithms.AES(value), _mode(mechanism_type, mechanism, layout))
        context = cipher.decryptor() if decrypting else cipher.encryptor()
        if mechanism_type == c.CKM_AES_CBC_PAD:
            return _CbcPadDecrypt(context) if decrypting else _CbcPadEncrypt(context)
        return _Blocks(context, decrypting=decrypting)
    return start


# -- key wrap -----------------------------------------------------------------------------------


def _wrap_iv(mechanism_type: int, mechanism) -> bytes:
    if mechanism.param in (None, b""):
        return keywrap.DEFAULT_AIV_PREFIX if mechanism_type == c.CKM_AES_KEY_WRAP_KWP else \
            keywrap.DEFAULT_IV
    return bytes_param(mechanism, 4 if mechanism_type == c.CKM_AES_KEY_WRAP_KWP else 8)


def key_wrap(value: bytes, mechanism_type: int, iv: bytes, plaintext: bytes, error) -> bytes:
    if mechanism_type == c.CKM_AES_KEY_WRAP:
        if len(plaintext) < 16 or len(plaintext) % 8:
            raise error("CKM_AES_KEY_WRAP takes a multiple of 8 bytes, at least 16.")
        return keywrap.kw_wrap(value, plaintext, iv)
    if mechanism_type == c.CKM_AES_KEY_WRAP_PAD:
        return keywrap.kw_wrap(value, pkcs7(plaintext, 8), iv)
    if not plaintext:
        raise error("CKM_AES_KEY_WRAP_KWP takes at least 1 byte.")
    return keywrap.kwp_wrap(value, plaintext, iv)


def key_unwrap(value: bytes, mechanism_type: int, iv: bytes, wrapped: bytes,
               length_error, invalid_error) -> bytes:
    try:
        if mechanism_type == c.CKM_AES_KEY_WRAP:
            return keywrap.kw_unwrap(value, wrapped, iv)
        if mechanism_type == c.CKM_AES_KEY_WRAP_PAD:
            padded = keywrap.kw_unwrap(value, wrapped, iv)
            if not padded or not 1 <= padded[-1] <= 8 or \
                    padded[-padded[-1]:] != bytes([padded[-1]]) * padded[-1]:
                raise keywrap.UnwrapFailed("bad padding")
            return padded[: -padded[-1]]
        return keywrap.kwp_unwrap(value, wrapped, iv)
    except keywrap.UnwrapFailed:
        raise invalid_error("The wrapped data does not unwrap with this key.") from None
    except ValueError as exc:
        raise length_error(str(exc)) from None


class _WrapCipher(Accumulating, CipherOperation):
    """C_Encrypt/C_Decrypt with a key-wrap mechanism: single-part over the whole input."""

    def __init__(self, value: bytes, mechanism_type: int, mechanism, *, decrypting: bool) -> None:
        super().__init__()
        self._value, self._type = value, mechanism_type
        self._iv = _wrap_iv(mechanism_type, mechanism)
        self._decrypting = decrypting

    def update(self, data: bytes) -> bytes:
        Accumulating.update(self, data)
        return b""

    def final(self) -> bytes:
        if self._decrypting:
            return key_unwrap(self._value, self._type, self._iv, self.message(),
                              EncryptedDataLenRange, EncryptedDataInvalid)
        return key_wrap(self._value, self._type, self._iv, self.message(), DataLenRange)


def _wrap(mechanism_type: int):
    def wrap(wrapping_key, mechanism, layout, plaintext: bytes) -> bytes:
        value = _aes_key(wrapping_key)
        if mechanism_type in (c.CKM_AES_KEY_WRAP, c.CKM_AES_KEY_WRAP_PAD, c.CKM_AES_KEY_WRAP_KWP):
            return key_wrap(value, mechanism_type, _wrap_iv(mechanism_type, mechanism), plaintext,
                            WrappedKeyLenRange)
        if mechanism_type in (c.CKM_AES_ECB, c.CKM_AES_CBC):
            plaintext = plaintext + bytes(-len(plaintext) % BLOCK)  # trailing zeros (PKCS#11)
        operation = _cipher(mechanism_type, decrypting=False)(wrapping_key, mechanism, layout)
        return operation.once(plaintext)
    return wrap


def _unwrap(mechanism_type: int):
    def unwrap(unwrapping_key, mechanism, layout, wrapped: bytes) -> bytes:
        value = _aes_key(unwrapping_key)
        if mechanism_type in (c.CKM_AES_KEY_WRAP, c.CKM_AES_KEY_WRAP_PAD, c.CKM_AES_KEY_WRAP_KWP):
            return key_unwrap(value, mechanism_type, _wrap_iv(mechanism_type, mechanism), wrapped,
                              WrappedKeyLenRange, WrappedKeyInvalid)
        operation = _cipher(mechanism_type, decrypting=True)(unwrapping_key, mechanism, layout)
        try:
            return operation.once(wrapped)
        except EncryptedDataLenRange as exc:
            raise WrappedKeyLenRange(exc.message) from None
        except EncryptedDataInvalid as exc:
            raise WrappedKeyInvalid(exc.message) from None
    return unwrap


# -- CMAC -------------------------------------------------------------------------------------


class _Cmac(SignOperation):
    __slots__ = ("_cmac", "_length")

    def __init__(self, value: bytes, length: int) -> None:
        self._cmac = cmac.CMAC(algorithms.AES(value))
        self._length = length

    def update(self, data: bytes) -> None:
        self._cmac.update(bytes(data))

    def final(self) -> bytes:
        return self._cmac.finalize()[: self._length]


def _cmac_length(mechanism_type: int, mechanism, layout) -> int:
    if mechanism_type == c.CKM_AES_CMAC:
        no_param(mechanism)
        return BLOCK
    length = raw_param(mechanism, MacGeneralParams, layout).length
    if not 1 <= length <= BLOCK:
        raise MechanismParamInvalid("The CMAC length must be 1..16 bytes.")
    return length


def _cmac_sign(mechanism_type: int):
    def start(key, mechanism, layout):
        return _Cmac(_aes_key(key), _cmac_length(mechanism_type, mechanism, layout))
    return start


def _cmac_verify(mechanism_type: int):
    def start(key, mechanism, layout):
        length = _cmac_length(mechanism_type, mechanism, layout)
        return MacVerify(_Cmac(_aes_key(key), length), length)
    return start


class _CbcMac(SignOperation):
    """CBC-MAC with a zero IV over the data padded with zero bytes (ISO/IEC 9797-1 method 1)."""

    __slots__ = ("_encryptor", "_pending", "_last", "_length")

    def __init__(self, value: bytes, length: int) -> None:
        self._encryptor = Cipher(algorithms.AES(value), modes.CBC(bytes(BLOCK))).encryptor()
        self._pending = b""
        self._last = b""
        self._length = length

    def update(self, data: bytes) -> None:
        data = self._pending + bytes(data)
        cut = len(data) - len(data) % BLOCK
        if cut:
            self._last = self._encryptor.update(data[:cut])[-BLOCK:]
        self._pending = data[cut:]

    def final(self) -> bytes:
        if self._pending or not self._last:
            self._last = self._encryptor.update(self._pending.ljust(BLOCK, b"\x00"))[-BLOCK:]
        return self._last[: self._length]


def _mac_length(mechanism_type: int, mechanism, layout) -> int:
    if mechanism_type == c.CKM_AES_MAC:
        no_param(mechanism)
        return BLOCK // 2
    length = raw_param(mechanism, MacGeneralParams, layout).length
    if not 1 <= length <= BLOCK:
        raise MechanismParamInvalid("The MAC length must be 1..16 bytes.")
    return length


def _cbc_mac_sign(mechanism_type: int):
    def start(key, mechanism, layout):
        return _CbcMac(_aes_key(key), _mac_length(mechanism_type, mechanism, layout))
    return start


def _cbc_mac_verify(mechanism_type: int):
    def start(key, mechanism, layout):
        length = _mac_length(mechanism_type, mechanism, layout)
        return MacVerify(_CbcMac(_aes_key(key), length), length)
    return start


# -- derivation -------------------------------------------------------------------------------


def _encrypt_data_derive(mechanism_type: int):
    def derive(base_key, mechanism, layout, resolve, attrs) -> bytes:
        value = _aes_key(base_key)
        if mechanism_type == c.CKM_AES_ECB_ENCRYPT_DATA:
            data = structured_param(mechanism, KeyDerivationStringData).data
            mode = modes.ECB()
        else:
            params = structured_param(mechanism, AesCbcEncryptDataParams)
            if len(params.iv) != BLOCK:
                raise MechanismParamInvalid("The IV is 16 bytes.")
            data, mode = params.data, modes.CBC(params.iv)
        if not data or len(data) % BLOCK:
            raise MechanismParamInvalid("The data to encrypt is a non-empty multiple of 16 bytes.")
        encryptor = Cipher(algorithms.AES(value), mode).encryptor()
        out = encryptor.update(bytes(data)) + encryptor.finalize()
        length = attrs.get(c.CKA_VALUE_LEN, len(out))
        if length > len(out):
            raise MechanismParamInvalid(f"{len(data)} bytes of data cannot make a {length}-byte key.")
        if length <= 0:
            raise TemplateInconsistent("CKA_VALUE_LEN must be at least 1.")
        return out[:length]
    return derive


def mechanisms() -> list[MechanismSpec]:
    size = dict(min_key=16, max_key=32, key_types=_AES)
    specs = [MechanismSpec(type=c.CKM_AES_KEY_GEN, generate=generate, **size)]
    for mechanism_type in (c.CKM_AES_ECB, c.CKM_AES_CBC, c.CKM_AES_CBC_PAD, c.CKM_AES_GCM,
                           c.CKM_AES_KEY_WRAP, c.CKM_AES_KEY_WRAP_PAD, c.CKM_AES_KEY_WRAP_KWP):
        specs.append(MechanismSpec(
            type=mechanism_type, encrypt=_cipher(mechanism_type, decrypting=False),
            decrypt=_cipher(mechanism_type, decrypting=True), wrap=_wrap(mechanism_type),
            unwrap=_unwrap(mechanism_type), **size))
    specs.append(MechanismSpec(type=c.CKM_AES_CTR, encrypt=_cipher(c.CKM_AES_CTR, decrypting=False),
                               decrypt=_cipher(c.CKM_AES_CTR, decrypting=True), **size))
    for mechanism_type in (c.CKM_AES_CMAC, c.CKM_AES_CMAC_GENERAL):
        specs.append(MechanismSpec(type=mechanism_type, sign=_cmac_sign(mechanism_type),
                                   verify=_cmac_verify(mechanism_type), **size))
    for mechanism_type in (c.CKM_AES_MAC, c.CKM_AES_MAC_GENERAL):
        specs.append(MechanismSpec(type=mechanism_type, sign=_cbc_mac_sign(mechanism_type),
                                   verify=_cbc_mac_verify(mechanism_type), approved=False,
                                   **size))
    for mechanism_type in (c.CKM_AES_ECB_ENCRYPT_DATA, c.CKM_AES_CBC_ENCRYPT_DATA):
        specs.append(MechanismSpec(type=mechanism_type,
                                   derive=_encrypt_data_derive(mechanism_type), **size))
    return specs
