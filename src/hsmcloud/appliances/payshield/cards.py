"""Admin cards: files that each hold one LMK component, protected by a PIN.

A card is a JSON document. Its secret part (one variant-LMK component of 20 pairs and one
AES key-block-LMK component) is sealed with AES-256-GCM under a key derived from the PIN
with scrypt; the card id and the file header are the GCM associated data, so a card cannot
be spliced with another's ciphertext. An LMK is the XOR of the components of two or more
different cards (``lmk.lmk_from_components``).

The management API takes the card document and its PIN (``POST /lmk``) and unlocks it on
the device, the way a card inserted in a reader and its PIN typed on the PIN pad reach the
real HSM; :func:`unlock_card` is the same operation for local tools.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import keycrypto as kc
from .errors import CardError
from .lmk import KEYBLOCK_LMK_LENGTH, VARIANT3_LMK_LENGTH, VARIANT_LMK_LENGTH

CARD_FORMAT = "hsmcloud-payshield-admin-card"
CARD_VERSION = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PIN_MIN, PIN_MAX = 4, 64


@dataclass(frozen=True, kw_only=True)
class CardComponents:
    """An unlocked card."""

    card_id: str
    variant: bytes  # 320 bytes: one component of the 20 LMK pairs
    keyblock: bytes  # 32 bytes: one component of the AES-256 key-block LMK
    #: 480 bytes: one component of a triple-length (3-key) variant LMK; None on cards made
    #: before 3-key variant LMKs were offered.
    variant3: bytes | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise CardError("malformed card: expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise CardError("malformed card: bad base64") from exc


def _check_pin(pin: Any) -> str:
    if not isinstance(pin, str) or not PIN_MIN <= len(pin) <= PIN_MAX:
        raise CardError(f"a card PIN has {PIN_MIN} to {PIN_MAX} characters")
    return pin


def _derive(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        pin.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32,
        maxmem=64 * 1024 * 1024,
    )


def _associated_data(card_id: str) -> bytes:
    return f"{CARD_FORMAT}:{CARD_VERSION}:{card_id}".encode("ascii")


def new_card(
    pin: str,
    *,
    variant_component: bytes | None = None,
    keyblock_component: bytes | None = None,
    variant3_component: bytes | None = None,
) -> dict[str, Any]:
    """A new card document holding a fresh random component (or the given ones)."""
    _check_pin(pin)
    if variant_component is None:
        variant = kc.adjust_parity(os.urandom(VARIANT_LMK_LENGTH))
    else:
        variant = variant_component
    keyblock = keyblock_component if keyblock_component is not None else os.urandom(KEYBLOCK_LMK_LENGTH)
    if variant3_component is None:
        variant3 = kc.adjust_parity(os.urandom(VARIANT3_LMK_LENGTH))
    else:
        variant3 = variant3_component
    if (len(variant), len(keyblock), len(variant3)) != (VARIANT_LMK_LENGTH, KEYBLOCK_LMK_LENGTH, VARIANT3_LMK_LENGTH):
        raise CardError("component lengths: 320 bytes (variant), 32 bytes (key block), 480 bytes (3-key variant)")
    card_id = str(uuid.uuid4())
    salt, nonce = os.urandom(16), os.urandom(12)
    secret = json.dumps(
        {"variant": variant.hex(), "keyblock": keyblock.hex(), "variant3": variant3.hex()}
    ).encode("ascii")
    sealed = AESGCM(_derive(pin, salt)).encrypt(nonce, secret, _associated_data(card_id))
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "card_id": card_id,
        # Component check values are public on real cards too; they identify, not reveal.
        "variant_check_value": kc.kcv(variant[:16]),
        "keyblock_check_value": kc.kcv(keyblock, "A"),
        "kdf": {"name": "scrypt", "salt": _b64(salt), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
        "cipher": {"name": "AES-256-GCM", "nonce": _b64(nonce), "ciphertext": _b64(sealed)},
    }


def create_card_file(path: Path, pin: str, **components: bytes | None) -> dict[str, Any]:
    """Write a new card to ``path`` (mode 0600, never overwriting); returns the document."""
    card = new_card(pin, **components)
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(card, handle, indent=2)
        handle.write("\n")
    return card


def read_card_file(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardError(f"cannot read card file {path}: {exc}") from exc
    validate_card(card)
    return card


def validate_card(card: Any) -> None:
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CardError("not an admin card document")
    if card.get("version") != CARD_VERSION:
        raise CardError(f"unsupported card version {card.get('version')!r}")
    for field, parts in (("kdf", ("salt", "n", "r", "p")), ("cipher", ("nonce", "ciphertext"))):
        section = card.get(field)
        if not isinstance(section, dict) or any(p not in section for p in parts):
            raise CardError(f"malformed card: {field}")
    if not isinstance(card.get("card_id"), str):
        raise CardError("malformed card: card_id")
    if (card["kdf"]["n"], card["kdf"]["r"], card["kdf"]["p"]) != (SCRYPT_N, SCRYPT_R, SCRYPT_P):
        raise CardError("unsupported card key-derivation parameters")


def unlock_card(card: Any, pin: str) -> CardComponents:
    """The components on ``card``; CardError if the document is malformed or the PIN wrong."""
    validate_card(card)
    _check_pin(pin)
    key = _derive(pin, _unb64(card["kdf"]["salt"]))
    try:
        secret = AESGCM(key).decrypt(
            _unb64(card["cipher"]["nonce"]),
            _unb64(card["cipher"]["ciphertext"]),
            _associated_data(card["card_id"]),
        )
    except (InvalidTag, ValueError) as exc:
        raise CardError(f"card {card['card_id']}: wrong PIN or damaged card") from exc
    parts = json.loads(secret)
    return CardComponents(
        card_id=card["card_id"],
        variant=bytes.fromhex(parts["variant"]),
        keyblock=bytes.fromhex(parts["keyblock"]),
        variant3=bytes.fromhex(parts["variant3"]) if "variant3" in parts else None,
    )
