"""What a mechanism is to the token: its C_GetMechanismInfo facts and its operations.

Each mechanism module declares :class:`MechanismSpec` entries; an operation (one
C_SignInit..C_Sign, C_EncryptInit..C_EncryptFinal, ...) is an object with ``update`` and
``final`` (and a one-shot shortcut). Keys arrive as :class:`~..objects.P11Object`; their
`cryptography` objects are cached on them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hsmcloud.protocols.pkcs11 import constants as c
from hsmcloud.protocols.pkcs11.attributes import NativeLayout
from hsmcloud.protocols.pkcs11.params import Mechanism, ParamError

from ..errors import (
    DataLenRange,
    KeyTypeInconsistent,
    MechanismParamInvalid,
    SignatureInvalid,
    SignatureLenRange,
)
from ..objects import P11Object

#: Multi-part input kept for mechanisms that work on the whole message at once.
MAX_ACCUMULATED = 16 * 1024 * 1024


class SignOperation:
    def update(self, data: bytes) -> None:
        raise NotImplementedError

    def final(self) -> bytes:
        raise NotImplementedError

    def sign(self, data: bytes) -> bytes:
        self.update(data)
        return self.final()


class VerifyOperation:
    def update(self, data: bytes) -> None:
        raise NotImplementedError

    def final(self, signature: bytes) -> None:
        """Raise SignatureInvalid / SignatureLenRange if the signature does not verify."""
        raise NotImplementedError

    def verify(self, data: bytes, signature: bytes) -> None:
        self.update(data)
        self.final(signature)


class CipherOperation:
    """Encryption or decryption: ``update`` returns what it can, ``final`` the rest."""

    def update(self, data: bytes) -> bytes:
        raise NotImplementedError

    def final(self) -> bytes:
        raise NotImplementedError

    def once(self, data: bytes) -> bytes:
        return self.update(data) + self.final()


class DigestOperation:
    def update(self, data: bytes) -> None:
        raise NotImplementedError

    def final(self) -> bytes:
        raise NotImplementedError


class Accumulating:
    """Collects multi-part input for an operation that needs the whole message."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def update(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_ACCUMULATED:
            raise DataLenRange(f"More than {MAX_ACCUMULATED} bytes for a single-part mechanism.")
        self._parts.append(bytes(data))

    def message(self) -> bytes:
        return b"".join(self._parts)


class MacVerify(VerifyOperation):
    """Verification by recomputing a MAC (HMAC, CMAC) and comparing in constant time."""

    def __init__(self, signer: SignOperation, length: int) -> None:
        self._signer, self._length = signer, length

    def update(self, data: bytes) -> None:
        self._signer.update(data)

    def final(self, signature: bytes) -> None:
        if len(signature) != self._length:
            raise SignatureLenRange(f"The MAC is {self._length} bytes, not {len(signature)}.")
        if not hmac.compare_digest(self._signer.final(), bytes(signature)):
            raise SignatureInvalid()


Factory = Callable[..., Any]


@dataclass(frozen=True, kw_only=True)
class MechanismSpec:
    """One mechanism: what C_GetMechanismInfo says and which functions it serves."""

    type: int
    min_key: int = 0
    max_key: int = 0
    #: The key types the mechanism works with (empty: no key, as for digests).
    key_types: frozenset[int] = frozenset()
    #: False: refused when HSM policy 12 (allow non-FIPS algorithms) is 0.
    approved: bool = True
    #: (key, mechanism, layout) -> operation
    sign: Factory | None = None
    verify: Factory | None = None
    encrypt: Factory | None = None
    decrypt: Factory | None = None
    #: (mechanism, layout) -> DigestOperation
    digest: Factory | None = None
    #: (attrs, mechanism, layout) -> secret value (bytes), for C_GenerateKey
    generate: Factory | None = None
    #: (public attrs, private attrs, mechanism, layout) -> private key object
    generate_pair: Factory | None = None
    #: (wrapping key, mechanism, layout, plaintext key bytes) -> wrapped bytes
    wrap: Factory | None = None
    #: (unwrapping key, mechanism, layout, wrapped bytes) -> plaintext key bytes
    unwrap: Factory | None = None
    #: (base key, mechanism, layout, resolve_object, new attrs) -> derived secret bytes
    derive: Factory | None = None
    #: (base key, mechanism, layout, resolve_object, [attrs of each new key]) -> [secret bytes],
    #: for mechanisms that derive several keys at once (SP 800-108); ``derive`` must be set too
    derive_keys: Factory | None = None
    extra_flags: int = 0

    @property
    def flags(self) -> int:
        flags = c.CKF_HW | self.extra_flags
        for attr, flag in ((self.sign, c.CKF_SIGN), (self.verify, c.CKF_VERIFY),
                           (self.encrypt, c.CKF_ENCRYPT), (self.decrypt, c.CKF_DECRYPT),
                           (self.digest, c.CKF_DIGEST), (self.generate, c.CKF_GENERATE),
                           (self.generate_pair, c.CKF_GENERATE_KEY_PAIR),
                           (self.wrap, c.CKF_WRAP), (self.unwrap, c.CKF_UNWRAP),
                           (self.derive, c.CKF_DERIVE)):
            if attr is not None:
                flags |= flag
        return flags


def require_key_type(key: P11Object, *types: int) -> None:
    if key.key_type not in types:
        raise KeyTypeInconsistent()


def no_param(mechanism: Mechanism) -> None:
    if mechanism.param not in (None, b""):
        raise MechanismParamInvalid("This mechanism takes no parameter.")


def raw_param(mechanism: Mechanism, cls, layout: NativeLayout):
    """A pointer-free parameter structure read from the application's raw bytes."""
    if not isinstance(mechanism.param, (bytes, bytearray)):
        raise MechanismParamInvalid(f"The mechanism needs a {cls.__name__[:-6]} parameter.")
    try:
        return cls.unpack(bytes(mechanism.param), layout)
    except ParamError as exc:
        raise MechanismParamInvalid(str(exc)) from None


def structured_param(mechanism: Mechanism, cls):
    if not isinstance(mechanism.param, cls):
        raise MechanismParamInvalid(f"The mechanism needs a {cls.__name__} parameter.")
    return mechanism.param


def bytes_param(mechanism: Mechanism, *lengths: int) -> bytes:
    param = mechanism.param
    if not isinstance(param, (bytes, bytearray)) or (lengths and len(param) not in lengths):
        raise MechanismParamInvalid(
            f"The mechanism needs a parameter of {' or '.join(map(str, lengths))} bytes.")
    return bytes(param)
