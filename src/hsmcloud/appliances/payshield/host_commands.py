"""payShield host commands: parse the fields, do the cryptography, build the response data.

Each handler takes the command's :class:`Cursor` and returns the response data that follows
the ``00`` error code (or ``(code, data)`` for a warning that still carries data, such as 01
on an import with bad key parity). Failures raise :class:`HostError` with the manual's error
code. Payment cryptography comes from ``psec`` and ``pyemv``; this module only decides which
key, which field and which error.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psec.tr31 as tr31
from psec import cvv as _psec_cvv
from psec import mac as _psec_mac
from psec import pin as _pin
from pyemv import ac as _ac
from pyemv import kd as _kd

from . import keycrypto as kc
from . import pinblocks
from .commands import ecc as _ecc
from .commands import hashing as _hashing
from .commands import health
from .commands import random_value as _random_value
from .commands import rsa as _rsa
from .commands import signatures as _signatures
from .domain import HostSettings, SecurityDomain
from .errors import HostError
from .fields import TRAILER_DELIMITER, Cursor, Trailing
from .lmk import (
    DOUBLE_LENGTH_VARIANTS,
    SCHEME_LENGTHS,
    TRIPLE_LENGTH_VARIANTS,
    TYPE_USAGES,
    KeyBlockAttributes,
    KeyBlockLmk,
    Lmk,
    VariantLmk,
    hex_bytes,
    parse_key_type,
    tr31_usage,
)
from .product import TCP_CONNECTIONS_PER_INTERFACE

# Key roles of commands whose key type is implied: (variant key type, key-block usages).
# Key-block usages are TR-31's and Thales' own numeric ones (72 ZPK, 71 TPK, 52 ZMK, 13 CVK...).
ZMK = ("000", ("K0", "K1", "52"))
ZPK = ("001", ("P0", "72"))
TPK = ("002", ("P0", "71"))
PVK = ("002", ("V0", "V1", "V2"))
CVK = ("402", ("C0", "11", "12", "13"))
MK_AC = ("109", ("E0",))
DATA_KEY_TYPES = ("00A", "00B", "30B")
MAC_KEY_TYPES = ("003", "008")
#: The PIN length JA uses when the command gives none.
DEFAULT_PIN_LENGTH = 4


@dataclass(frozen=True, kw_only=True)
class ClearKey:
    """A key taken out of a host field: its value and what it may be used as."""

    value: bytes
    algorithm: str  # "T" (TDES) or "A" (AES)
    scheme: str  # Z/U/T/X/Y under a variant LMK, S under a key-block LMK
    attrs: KeyBlockAttributes | None = None

    @property
    def aes(self) -> bool:
        return self.algorithm == "A"


class CommandContext:
    """What a handler may use: the security domain, the settings, and the LMK it resolved."""

    def __init__(self, domain: SecurityDomain, settings: HostSettings, host: Any = None) -> None:
        self.domain = domain
        self.settings = settings
        self.lmk_slot: int | None = None
        #: The process serving the host ports (its shared counters, for the health commands);
        #: None when ``execute`` is called on its own.
        self.host = host

    def lmk(self, trailing: Trailing | str | None) -> Lmk:
        lmk_id = trailing.lmk_id if isinstance(trailing, Trailing) else trailing
        slot, lmk = self.domain.lmk(lmk_id)
        self.lmk_slot = slot
        return lmk

    def require_authorised(self) -> None:
        if self.lmk_slot not in self.domain.authorised:
            raise HostError("17", "the HSM is not in the authorised state for this LMK")


# -- keys under the LMK ----------------------------------------------------------------------


def open_key(
    lmk: Lmk,
    field: str,
    key_type: str,
    usages: tuple[str, ...] | None = None,
    *,
    parity_error: str = "10",
) -> ClearKey:
    """Decrypt a key field under ``lmk`` as a key of ``key_type`` (or with ``usages``)."""
    if isinstance(lmk, VariantLmk):
        if key_type == "FFF":
            raise HostError("04", "key type FFF needs a key-block LMK")
        value = lmk.decrypt(field, key_type, parity_error=parity_error)
        return ClearKey(value=value, algorithm="T", scheme=field[0] if field[0] in SCHEME_LENGTHS else "Z")
    if not field.startswith("S"):
        raise HostError("26", "a key-block LMK only takes key blocks (scheme S)")
    allowed = usages if usages is not None else TYPE_USAGES.get(key_type)
    attrs, value = lmk.unwrap(field, allowed)
    return ClearKey(value=value, algorithm=attrs.algorithm, scheme="S", attrs=attrs)


def seal_key(
    lmk: Lmk,
    value: bytes,
    key_type: str,
    scheme: str,
    attrs: KeyBlockAttributes | None = None,
) -> str:
    """Encrypt ``value`` under ``lmk``: variant scheme Z/U/T/X/Y, or key block S."""
    if isinstance(lmk, VariantLmk):
        if scheme not in SCHEME_LENGTHS:
            raise HostError("26", f"key scheme {scheme!r} with a variant LMK")
        parse_key_type(key_type)
        if SCHEME_LENGTHS[scheme] != len(value):
            raise HostError("27")
        return lmk.encrypt(value, key_type, scheme)
    if scheme != "S":
        raise HostError("26", "a key-block LMK stores keys as key blocks (scheme S)")
    if attrs is None:
        usages = TYPE_USAGES.get(key_type)
        if usages is None:
            raise HostError("04")
        attrs = KeyBlockAttributes(usage=usages[0], algorithm="T", mode_of_use="N")
    return lmk.wrap(value, attrs)


def default_attributes(key_type: str, algorithm: str) -> KeyBlockAttributes:
    usages = TYPE_USAGES.get(key_type)
    if usages is None:
        raise HostError("04", f"no key usage for key type {key_type}")
    return KeyBlockAttributes(usage=usages[0], algorithm=algorithm, mode_of_use="N")


def key_check_value(key: ClearKey | bytes, length: int = 3) -> str:
    if isinstance(key, ClearKey):
        return kc.kcv(key.value, key.algorithm, length)
    return kc.kcv(key, "T", length)


# -- keys under a ZMK (exchange) -------------------------------------------------------------


def _zmk_variant(zmk: bytes, variant: int) -> bytes:
    if len(zmk) < 16:
        raise HostError("27", "schemes U and T need a double- or triple-length ZMK")
    key = bytearray(zmk)
    key[8] ^= variant
    return bytes(key)


def wrap_under_zmk(
    zmk: ClearKey,
    key: ClearKey,
    scheme: str,
    key_type: str,
    version_id: str | None,
) -> str:
    """Export ``key`` under ``zmk``: ANSI X9.17 (X/Y/Z), Thales variant (U/T) or TR-31 (R)."""
    if scheme == "R":
        attrs = key.attrs or default_attributes(key_type, key.algorithm)
        if attrs.exportability == "N":
            raise HostError("29", "the key is not exportable")
        version = version_id or ("D" if zmk.aes else "B")
        header = (
            f"{version}0000{tr31_usage(attrs.usage)}{attrs.algorithm}{attrs.mode_of_use}{attrs.version}"
            f"{'N' if attrs.exportability == 'S' else 'E'}0000"
        )
        try:
            return "R" + tr31.wrap(zmk.value, header, key.value)
        except (tr31.HeaderError, tr31.KeyBlockError) as exc:
            raise HostError("83", str(exc)) from exc
    if key.attrs is not None and key.attrs.exportability == "N":
        raise HostError("29", "the key is not exportable")
    if scheme not in SCHEME_LENGTHS:
        raise HostError("26", f"export key scheme {scheme!r}")
    if zmk.aes or key.aes:
        raise HostError("26", "variant and X9.17 schemes only carry TDES keys under TDES ZMKs")
    if SCHEME_LENGTHS[scheme] != len(key.value):
        raise HostError("27", "key scheme does not match the key length")
    parts = [key.value[i : i + 8] for i in range(0, len(key.value), 8)]
    if scheme in ("U", "T"):
        variants = DOUBLE_LENGTH_VARIANTS if scheme == "U" else TRIPLE_LENGTH_VARIANTS
        out = b"".join(kc.tdes_encrypt(_zmk_variant(zmk.value, v), p) for v, p in zip(variants, parts))
    else:
        out = b"".join(kc.tdes_encrypt(zmk.value, p) for p in parts)
    return ("" if scheme == "Z" else scheme) + out.hex().upper()


def unwrap_under_zmk(zmk: ClearKey, field: str, key_type: str) -> tuple[bytes, KeyBlockAttributes | None]:
    """Import a key field under ``zmk``; returns the key and, for TR-31, its header attributes."""
    tag = field[0]
    if tag == "R":
        try:
            header, value = tr31.unwrap(zmk.value, field[1:])
        except tr31.KeyBlockError as exc:
            raise HostError("A4" if "MAC" in str(exc) else "83", str(exc)) from exc
        except tr31.HeaderError as exc:
            raise HostError("83", str(exc)) from exc
        if key_type != "FFF" and header.key_usage not in TYPE_USAGES.get(key_type, ()):
            raise HostError("A6", f"TR-31 key usage {header.key_usage} does not fit key type {key_type}")
        attrs = KeyBlockAttributes(
            usage=header.key_usage,
            algorithm=header.algorithm,
            mode_of_use=header.mode_of_use,
            version=header.version_num,
            exportability=header.exportability,
        )
        return value, attrs
    if tag == "S":
        raise HostError("26", "a Thales key block cannot be imported under a ZMK; use TR-31 (R)")
    if zmk.aes:
        raise HostError("26", "an AES ZMK only imports TR-31 key blocks")
    scheme = tag if tag in SCHEME_LENGTHS else "Z"
    body = hex_bytes(field[1:] if tag in SCHEME_LENGTHS else field)
    parts = [body[i : i + 8] for i in range(0, len(body), 8)]
    if scheme in ("U", "T"):
        variants = DOUBLE_LENGTH_VARIANTS if scheme == "U" else TRIPLE_LENGTH_VARIANTS
        value = b"".join(kc.tdes_decrypt(_zmk_variant(zmk.value, v), p) for v, p in zip(variants, parts))
    else:
        value = b"".join(kc.tdes_decrypt(zmk.value, p) for p in parts)
    return value, None


# -- PINs ------------------------------------------------------------------------------------


def _pin_key(key: ClearKey) -> bytes:
    if key.aes:
        raise HostError("27", "PIN block formats 01/05/34/47 need a TDES key")
    return key.value


def decrypt_pin(key: ClearKey, block_hex: str, fmt: str, account: str) -> str:
    pinblocks.check_format(fmt)
    clear = kc.tdes_decrypt(_pin_key(key), hex_bytes(block_hex))
    return pinblocks.decode(fmt, clear, account)


def encrypt_pin(key: ClearKey, pin: str, fmt: str, account: str) -> str:
    return kc.tdes_encrypt(_pin_key(key), pinblocks.encode(fmt, pin, account)).hex().upper()


def pin_to_lmk(lmk: Lmk, pin: str, account: str) -> str:
    return lmk.encrypt_pin_block(pinblocks.encode("01", pin, account))


def pin_from_lmk(lmk: Lmk, field: str, account: str) -> str:
    try:
        return pinblocks.decode("01", lmk.decrypt_pin_block(field), account)
    except HostError as exc:
        raise HostError("14", "PIN under LMK is invalid (or for another account)") from exc


def take_pin_under_lmk(cur: Cursor, lmk: Lmk) -> str:
    return cur.take_hex(lmk.pin_field_length)


def _max_pin_length(cur: Cursor) -> int:
    value = int(cur.take_digits(2))
    if not 4 <= value <= 12:
        raise HostError("15", "maximum PIN length must be 04..12")
    return value


def _check_pin_length(pin: str, maximum: int) -> None:
    if len(pin) > maximum:
        raise HostError("24", "PIN longer than the maximum PIN length")


def _visa_pvv(pvk: ClearKey, pvki: str, pin: str, account: str) -> str:
    if len(pvk.value) != 16 or pvk.aes:
        raise HostError("27", "a Visa PVK pair is a double-length TDES key")
    return _pin.generate_visa_pvv(pvk.value, pvki, pin[:4], account + "0")


def _ibm_pin_prefix(pvk: ClearKey, table: str, validation: str, offset: str, account: str) -> str:
    if pvk.aes:
        raise HostError("27")
    if len(table) != 16 or not table.isdecimal():
        raise HostError("25", "decimalisation table must be 16 decimal digits")
    if "N" in validation:
        validation = validation.replace("N", account[-5:], 1)
    if not validation.isdecimal() or len(validation) > 16:
        raise HostError("15", "PIN validation data must be digits with at most one N")
    return _pin.generate_ibm3624_pin(pvk.value, table, offset, validation, 0, len(validation), "F")


# -- command handlers ------------------------------------------------------------------------

Response = str | tuple[str, str]
Handler = Callable[[CommandContext, Cursor], Response]


def cmd_nc(ctx: CommandContext, cur: Cursor) -> Response:
    """Diagnostics: LMK check value (16) + firmware number (9)."""
    lmk = ctx.lmk(cur.trailing())
    return lmk.check_value() + ctx.settings.firmware_number


def cmd_no(ctx: CommandContext, cur: Cursor) -> Response:
    """HSM status. Mode 00: buffer size, protocol, sockets, firmware, reserved. Mode 01: PCI flag."""
    mode = cur.take_digits(2)
    cur.trailing()
    if mode == "00":
        return "3" + "1" + f"{TCP_CONNECTIONS_PER_INTERFACE:04d}" + ctx.settings.firmware_number + "0" + "0000"
    if mode == "01":
        return "1"
    raise HostError("15", "status mode must be 00 or 01")


def cmd_b2(ctx: CommandContext, cur: Cursor) -> Response:
    """Echo: length (4 hex) + data -> data."""
    length = int(cur.take_hex(4), 16)
    if cur.remaining < length:
        raise HostError("80", "echo data shorter than its length field")
    data = cur.take(length)
    cur.trailing()
    return data


def cmd_a0(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate a key (mode 0), and export it under a ZMK/TMK too (mode 1)."""
    mode = cur.take(1)
    if mode not in ("0", "1"):
        raise HostError("15", "A0 mode must be 0 or 1")
    key_type = cur.take(3).upper()
    scheme = cur.take(1).upper()
    zmk_field = export_scheme = None
    if mode == "1":
        if cur.optional(";"):
            if cur.take(1) not in ("0", "1"):
                raise HostError("15", "ZMK/TMK flag must be 0 or 1")
        zmk_field = cur.key()
        export_scheme = cur.take(1).upper()
    opts = cur.trailing(block_attributes=True, version_id=True)
    lmk = ctx.lmk(opts)
    if isinstance(lmk, VariantLmk):
        parse_key_type(key_type)
        if scheme not in SCHEME_LENGTHS:
            raise HostError("26", f"key scheme {scheme!r}")
        key = ClearKey(value=kc.random_des_key(SCHEME_LENGTHS[scheme]), algorithm="T", scheme=scheme)
        under_lmk = seal_key(lmk, key.value, key_type, scheme)
    else:
        if scheme != "S":
            raise HostError("26", "a key-block LMK generates key blocks (scheme S)")
        if opts.block is not None:
            attrs, length = opts.attributes()
        else:
            if key_type == "FFF":
                raise HostError("15", "key type FFF needs the '#' key-block attributes")
            parse_key_type(key_type)
            attrs, length = default_attributes(key_type, "T"), 16
        value = os.urandom(length) if attrs.algorithm == "A" else kc.random_des_key(length)
        key = ClearKey(value=value, algorithm=attrs.algorithm, scheme="S", attrs=attrs)
        under_lmk = lmk.wrap(value, attrs)
    under_zmk = ""
    if zmk_field is not None:
        zmk = open_key(lmk, zmk_field, *ZMK, parity_error="10")
        under_zmk = wrap_under_zmk(zmk, key, export_scheme or "", key_type, opts.version_id)
    return under_lmk + under_zmk + key_check_value(key)


def cmd_a4(ctx: CommandContext, cur: Cursor) -> Response:
    """Form a key from 2-9 components encrypted under the LMK (authorised state)."""
    count = cur.take(1)
    if not count.isdecimal() or not 2 <= int(count) <= 9:
        raise HostError("03", "number of components must be 2..9")
    key_type = cur.take(3).upper()
    scheme = cur.take(1).upper()
    fields = [cur.key() for _ in range(int(count))]
    lmk = ctx.lmk(cur.trailing())
    ctx.require_authorised()
    return _form_from_components(lmk, fields, key_type, scheme)


def _form_from_components(lmk: Lmk, fields: list[str], key_type: str, scheme: str) -> str:
    parts = [open_key(lmk, f, key_type) for f in fields]
    if len({len(p.value) for p in parts}) != 1 or len({p.algorithm for p in parts}) != 1:
        raise HostError("27", "components differ in length or algorithm")
    value = parts[0].value
    for part in parts[1:]:
        value = kc.xor(value, part.value)
    algorithm = parts[0].algorithm
    if algorithm == "T":
        value = kc.adjust_parity(value)
    key = ClearKey(value=value, algorithm=algorithm, scheme=scheme, attrs=parts[0].attrs)
    return seal_key(lmk, value, key_type, scheme, parts[0].attrs) + key_check_value(key)


def cmd_gg(ctx: CommandContext, cur: Cursor) -> Response:
    """Form a ZMK from three components encrypted under the LMK (authorised state)."""
    fields = [cur.key() for _ in range(3)]
    lmk = ctx.lmk(cur.trailing())
    ctx.require_authorised()
    scheme = "S" if isinstance(lmk, KeyBlockLmk) else (fields[0][0] if fields[0][0] in SCHEME_LENGTHS else "Z")
    return _form_from_components(lmk, fields, "000", scheme)


def cmd_a6(ctx: CommandContext, cur: Cursor) -> Response:
    """Import a key from under a ZMK (X/Y/Z/U/T, or TR-31 'R') to under the LMK."""
    key_type = cur.take(3).upper()
    zmk_field = cur.key()
    key_field = cur.key()
    scheme = cur.take(1).upper()
    opts = cur.trailing(block_attributes=True)
    lmk = ctx.lmk(opts)
    if isinstance(lmk, VariantLmk):
        parse_key_type(key_type)
    zmk = open_key(lmk, zmk_field, *ZMK)
    value, tr31_attrs = unwrap_under_zmk(zmk, key_field, key_type)
    algorithm = tr31_attrs.algorithm if tr31_attrs else "T"
    attrs = None
    if isinstance(lmk, KeyBlockLmk):
        attrs = opts.attributes()[0] if opts.block is not None else tr31_attrs or default_attributes(key_type, algorithm)
    key = ClearKey(value=value, algorithm=algorithm, scheme=scheme, attrs=attrs)
    if algorithm == "A" and isinstance(lmk, VariantLmk):
        raise HostError("26", "an AES key can only be stored under a key-block LMK")
    under_lmk = seal_key(lmk, value, key_type, scheme, attrs)
    data = under_lmk + key_check_value(key)
    if algorithm == "T" and not kc.has_odd_parity(value):
        return "01", data  # advisory: the imported key does not have odd parity
    return data


def cmd_a8(ctx: CommandContext, cur: Cursor) -> Response:
    """Export a key from under the LMK to under a ZMK (X/Y/Z/U/T, or TR-31 'R')."""
    key_type = cur.take(3).upper()
    zmk_field = cur.key()
    key_field = cur.key()
    scheme = cur.take(1).upper()
    opts = cur.trailing(version_id=True)
    lmk = ctx.lmk(opts)
    zmk = open_key(lmk, zmk_field, *ZMK)
    key = open_key(lmk, key_field, key_type, parity_error="11")
    return wrap_under_zmk(zmk, key, scheme, key_type, opts.version_id) + key_check_value(key)


def cmd_bu(ctx: CommandContext, cur: Cursor) -> Response:
    """Key check value of a key under the LMK: 6 digits (KCV type 1, default) or 16 (type 0)."""
    type_code = cur.take(2).upper()
    length_flag = cur.take(1)
    if length_flag not in ("0", "1", "2"):
        raise HostError("05")
    key_field = cur.key()
    key_type = "0" + type_code
    if type_code == "FF":
        if not cur.optional(";"):
            raise HostError("15", "key type FF needs ';' and a 3-character key type")
        key_type = cur.take(3).upper()
    kcv_type = "1"
    if cur.optional(";"):
        kcv_type = cur.take(1)
        if kcv_type not in ("0", "1"):
            raise HostError("15", "KCV type must be 0 or 1")
    lmk = ctx.lmk(cur.trailing())
    if isinstance(lmk, VariantLmk):
        parse_key_type(key_type)
    key = open_key(lmk, key_field, key_type, None if key_type == "FFF" else TYPE_USAGES.get(key_type))
    if key.algorithm == "T" and len(key.value) != 8 * (int(length_flag) + 1):
        raise HostError("27", "key length flag does not match the key")
    return key_check_value(key, 8) if kcv_type == "0" else key_check_value(key)


def _translate_pin(ctx: CommandContext, cur: Cursor, source_role: tuple) -> Response:
    source_field = cur.key()
    dest_field = cur.key()
    maximum = _max_pin_length(cur)
    block = cur.take_hex(16)
    source_format = cur.take_digits(2)
    dest_format = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    lmk = ctx.lmk(cur.trailing())
    source = open_key(lmk, source_field, *source_role)
    dest = open_key(lmk, dest_field, *ZPK, parity_error="11")
    pinblocks.check_format(dest_format)
    pin = decrypt_pin(source, block, source_format, account)
    _check_pin_length(pin, maximum)
    return f"{len(pin):02d}" + encrypt_pin(dest, pin, dest_format, account) + dest_format


def cmd_ca(ctx: CommandContext, cur: Cursor) -> Response:
    """Translate a PIN block from under a TPK to under a ZPK (format may change)."""
    return _translate_pin(ctx, cur, TPK)


def cmd_cc(ctx: CommandContext, cur: Cursor) -> Response:
    """Translate a PIN block from one ZPK to another (format may change)."""
    return _translate_pin(ctx, cur, ZPK)


def cmd_ja(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate a random PIN, returned under the LMK.

    The account is the usual 12 digits, the 18-digit full-account form (the PAN's 18
    rightmost digits excluding the check digit; the PIN is bound to its last 12), or the whole
    PAN (13..19 digits) ended by ``;`` (the PIN is bound to the 12 digits before its check
    digit). The PIN length (2N) is optional: without it the PIN has the default length of 4.
    """
    if ";" in cur.text[cur.pos : cur.pos + 20]:
        pan = cur.until(";", max_length=19)
        if not 13 <= len(pan) <= 19 or not pan.isdecimal():
            raise HostError("15", "JA takes a PAN of 13..19 digits before ';'")
        account = pinblocks.check_account(pan[-13:-1])
        has_length = len(cur.peek(2)) == 2 and cur.peek(2).isdecimal()
    else:
        digits = 0
        while cur.peek(1).isdecimal():
            digits += 1
            cur.pos += 1
        cur.pos -= digits
        if digits not in (12, 14, 18, 20):
            raise HostError("15", "JA takes a 12- or 18-digit account number and an optional 2-digit PIN length")
        account = pinblocks.check_account(cur.take_digits(18 if digits >= 18 else 12)[-12:])
        has_length = digits in (14, 20)
    length = int(cur.take_digits(2)) if has_length else DEFAULT_PIN_LENGTH
    if not 4 <= length <= 12:
        raise HostError("24")
    lmk = ctx.lmk(cur.trailing())
    pin = "".join(secrets.choice("0123456789") for _ in range(length))
    return pin_to_lmk(lmk, pin, account)


def _pin_to_lmk(ctx: CommandContext, cur: Cursor, role: tuple) -> Response:
    key_field = cur.key()
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    lmk = ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, *role)
    return pin_to_lmk(lmk, decrypt_pin(key, block, fmt, account), account)


def cmd_jc(ctx: CommandContext, cur: Cursor) -> Response:
    """Translate a PIN block under a TPK to a PIN under the LMK."""
    return _pin_to_lmk(ctx, cur, TPK)


def cmd_je(ctx: CommandContext, cur: Cursor) -> Response:
    """Translate a PIN block under a ZPK to a PIN under the LMK."""
    return _pin_to_lmk(ctx, cur, ZPK)


def cmd_jg(ctx: CommandContext, cur: Cursor) -> Response:
    """Translate a PIN under the LMK to a PIN block under a ZPK."""
    key_field = cur.key()
    fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    lmk = ctx.lmk(cur.lmk_id_hint())
    pin_field = take_pin_under_lmk(cur, lmk)
    ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, *ZPK)
    pinblocks.check_format(fmt)
    return encrypt_pin(key, pin_from_lmk(lmk, pin_field, account), fmt, account)


def _verify_ibm(ctx: CommandContext, cur: Cursor, role: tuple) -> Response:
    key_field = cur.key()
    pvk_field = cur.key()
    maximum = _max_pin_length(cur)
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    check_length = int(cur.take_digits(2))
    account = pinblocks.check_account(cur.take_digits(12))
    table = cur.take(16)
    validation = cur.take(12).upper()
    offset = cur.take(12).upper()
    lmk = ctx.lmk(cur.trailing())
    if not 4 <= check_length <= 12:
        raise HostError("15", "check length must be 04..12")
    if not offset[:check_length].isdecimal():
        raise HostError("15", "offset must be digits (padded with F)")
    key = open_key(lmk, key_field, *role)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    pin = decrypt_pin(key, block, fmt, account)
    _check_pin_length(pin, maximum)
    expected = _ibm_pin_prefix(pvk, table, validation, offset[:check_length], account)
    if len(pin) < check_length or pin[:check_length] != expected:
        raise HostError("01", "PIN verification failed")
    return ""


def cmd_da(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a terminal PIN (under a TPK) with the IBM 3624 offset method."""
    return _verify_ibm(ctx, cur, TPK)


def cmd_ea(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify an interchange PIN (under a ZPK) with the IBM 3624 offset method."""
    return _verify_ibm(ctx, cur, ZPK)


def _verify_pvv(ctx: CommandContext, cur: Cursor, role: tuple) -> Response:
    key_field = cur.key()
    pvk_field = cur.key()
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    pvki = cur.take_digits(1)
    pvv = cur.take_digits(4)
    lmk = ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, *role)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    pin = decrypt_pin(key, block, fmt, account)
    if _visa_pvv(pvk, pvki, pin, account) != pvv:
        raise HostError("01", "PVV verification failed")
    return ""


def cmd_dc(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a terminal PIN (under a TPK) with the Visa PVV method."""
    return _verify_pvv(ctx, cur, TPK)


def cmd_ec(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify an interchange PIN (under a ZPK) with the Visa PVV method."""
    return _verify_pvv(ctx, cur, ZPK)


def cmd_dg(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate a Visa PVV for a PIN under the LMK."""
    pvk_field = cur.key()
    lmk = ctx.lmk(cur.lmk_id_hint())
    pin_field = take_pin_under_lmk(cur, lmk)
    account = pinblocks.check_account(cur.take_digits(12))
    pvki = cur.take_digits(1)
    ctx.lmk(cur.trailing())
    pvk = open_key(lmk, pvk_field, *PVK)
    return _visa_pvv(pvk, pvki, pin_from_lmk(lmk, pin_field, account), account)


def cmd_fw(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate a Visa PVV for a customer-selected PIN (PIN block under a TPK 002 or ZPK 001)."""
    key_type = cur.take(3)
    if key_type not in ("001", "002"):
        raise HostError("04", "FW key type must be 001 (ZPK) or 002 (TPK)")
    key_field = cur.key()
    pvk_field = cur.key()
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    pvki = cur.take_digits(1)
    lmk = ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, *(ZPK if key_type == "001" else TPK))
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    return _visa_pvv(pvk, pvki, decrypt_pin(key, block, fmt, account), account)


def _card_fields(cur: Cursor) -> tuple[str, str, str]:
    pan = cur.until(";", max_length=19)
    if not 12 <= len(pan) <= 19 or not pan.isdecimal():
        raise HostError("15", "PAN must be 12..19 digits")
    expiry = cur.take_digits(4)
    service_code = cur.take_digits(3)
    return pan, expiry, service_code


def _cvv(cvk: ClearKey, pan: str, expiry: str, service_code: str) -> str:
    if cvk.aes or len(cvk.value) != 16:
        raise HostError("27", "a CVK pair is a double-length TDES key")
    return _psec_cvv.generate_cvv(cvk.value, pan, expiry, service_code)


def cmd_cw(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate a CVV/CVC: CVK pair, PAN ';' expiry, service code -> CVV (3)."""
    cvk_field = cur.key()
    pan, expiry, service_code = _card_fields(cur)
    lmk = ctx.lmk(cur.trailing())
    return _cvv(open_key(lmk, cvk_field, *CVK), pan, expiry, service_code)


def cmd_cy(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a CVV/CVC: CVK pair, CVV (3), PAN ';' expiry, service code."""
    cvk_field = cur.key()
    cvv = cur.take_digits(3)
    pan, expiry, service_code = _card_fields(cur)
    lmk = ctx.lmk(cur.trailing())
    if _cvv(open_key(lmk, cvk_field, *CVK), pan, expiry, service_code) != cvv:
        raise HostError("01", "CVV verification failed")
    return ""


def _data_in(cur: Cursor, fmt: str) -> bytes:
    length = int(cur.take_hex(4), 16)
    if cur.remaining < length:
        raise HostError("80", "message shorter than its length field")
    raw = cur.take(length)
    if fmt == "1":
        if length % 2:
            raise HostError("80", "hex-encoded message of odd length")
        return hex_bytes(raw)
    return raw.encode("latin-1")


def _data_out(data: bytes, fmt: str) -> str:
    text = data.hex().upper() if fmt == "1" else data.decode("latin-1")
    return f"{len(text):04X}" + text


def _crypt_data(ctx: CommandContext, cur: Cursor, *, encrypt: bool) -> Response:
    mode = cur.take_digits(2)
    if mode not in ("00", "01"):
        raise HostError("15", "mode must be 00 (ECB) or 01 (CBC)")
    in_fmt, out_fmt = cur.take(1), cur.take(1)
    if in_fmt not in ("0", "1") or out_fmt not in ("0", "1"):
        raise HostError("15", "message formats are 0 (binary) or 1 (hex)")
    key_type = cur.take(3).upper()
    if key_type not in DATA_KEY_TYPES + ("FFF",):
        raise HostError("04", "data keys are 00A (ZEK), 00B (DEK), 30B (TEK) or FFF")
    key_field = cur.key()
    iv = None
    if mode == "01":
        # The IV's size follows from the key field alone (an AES key block says so in its header),
        # so the data can be read before the LMK identifier that follows it.
        block = 16 if key_field.startswith("S") and _peek_aes(key_field) else 8
        iv = cur.take_bytes_hex(block * 2)
    data = _data_in(cur, in_fmt)
    lmk = ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, key_type, ("D0", "21", "22", "23") if key_type == "FFF" else None)
    size = 16 if key.aes else 8
    if iv is not None and len(iv) != size:
        raise HostError("15", "IV length does not match the key's block size")
    if not data or len(data) % size:
        raise HostError("80", f"data must be a non-empty multiple of {size} bytes")
    op = kc.block_encrypt if encrypt else kc.block_decrypt
    out = op(key.value, data, aes=key.aes, cbc_iv=iv)
    prefix = ""
    if iv is not None:
        prefix = (out if encrypt else data)[-size:].hex().upper()
    return prefix + _data_out(out, out_fmt)


def _peek_aes(field: str) -> bool:
    # Header algorithm character of an S block: 'S' + version + length(4) + usage(2) + alg.
    return len(field) > 8 and field[8] == "A"


def cmd_m0(ctx: CommandContext, cur: Cursor) -> Response:
    """Encrypt data (ECB/CBC) under a ZEK/DEK/TEK."""
    return _crypt_data(ctx, cur, encrypt=True)


def cmd_m2(ctx: CommandContext, cur: Cursor) -> Response:
    """Decrypt data (ECB/CBC) under a ZEK/DEK/TEK."""
    return _crypt_data(ctx, cur, encrypt=False)


def _mac(ctx: CommandContext, cur: Cursor, *, verify: bool) -> Response:
    mode = cur.take(1)
    if mode != "0":
        raise HostError("15", "only MAC mode 0 (whole message in one command) is supported")
    in_fmt = cur.take(1)
    if in_fmt not in ("0", "1", "2"):
        raise HostError("15", "message format is 0 (binary), 1 (hex) or 2 (text)")
    size = cur.take(1)
    if size not in ("0", "1"):
        raise HostError("15", "MAC size is 0 (8 hex) or 1 (16 hex)")
    algorithm = cur.take(1)
    if algorithm not in ("1", "3", "6"):
        raise HostError("15", "MAC algorithm is 1 (ISO 9797-1 alg 1), 3 (alg 3) or 6 (CMAC)")
    padding = cur.take(1)
    if padding not in ("0", "1", "2", "3"):
        raise HostError("15", "padding is 0 (none) or ISO 9797-1 method 1, 2 or 3")
    key_type = cur.take(3).upper()
    if key_type not in MAC_KEY_TYPES + ("FFF",):
        raise HostError("04", "MAC keys are 003 (TAK), 008 (ZAK) or FFF")
    key_field = cur.key()
    data = _data_in(cur, "1" if in_fmt == "1" else "0")
    mac_length = 4 if size == "0" else 8
    presented = cur.take_hex(mac_length * 2) if verify else None
    lmk = ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, key_type, ("M0", "M1", "M3", "M6") if key_type == "FFF" else None)
    block = 16 if key.aes else 8
    if padding == "0" and (not data or len(data) % block):
        raise HostError("80", f"unpadded data must be a multiple of {block} bytes")
    pad = 1 if padding == "0" else int(padding)
    if algorithm == "3":
        if key.aes or len(key.value) != 16:
            raise HostError("27", "ISO 9797-1 algorithm 3 needs a double-length DES key")
        mac = _psec_mac.generate_retail_mac(key.value[:8], key.value[8:], data, pad, mac_length)
    elif algorithm == "1":
        mac = _psec_mac.generate_cbc_mac(
            key.value, data, pad, mac_length, _psec_mac.Algorithm.AES if key.aes else _psec_mac.Algorithm.DES
        )
    else:
        if not key.aes:
            raise HostError("27", "CMAC (algorithm 6) is for AES keys")
        mac = kc.aes_cmac(key.value, data)[:mac_length]
    if verify:
        if mac.hex().upper() != presented:
            raise HostError("01", "MAC verification failed")
        return ""
    return mac.hex().upper()


def cmd_m6(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate a MAC over a message."""
    return _mac(ctx, cur, verify=False)


def cmd_m8(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a MAC over a message."""
    return _mac(ctx, cur, verify=True)


def cmd_kq(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify an ARQC and/or generate an ARPC (EMV 4.x, ARPC method 1).

    Scheme 0: Visa (ICC master key used directly, Visa padding); scheme 1: MasterCard SKD
    (session key with R = ATC || 0000 || UN, EMV padding); scheme 2: EMV common session key
    (R = ATC || 00...00, EMV padding). ICC master keys are derived with EMV option A.
    """
    mode = cur.take(1)
    if mode not in ("0", "1", "2"):
        raise HostError("15", "KQ mode is 0 (verify), 1 (verify + ARPC) or 2 (ARPC only)")
    scheme = cur.take(1)
    if scheme not in ("0", "1", "2"):
        raise HostError("15", "KQ scheme ID is 0, 1 or 2")
    mk_field = cur.key()
    pan_psn = cur.take_binary(8)
    atc = cur.take_binary(2)
    un = cur.take_binary(4)
    data_length = int(cur.take_hex(2), 16)
    tx_data = cur.take_binary(data_length)
    if not cur.optional(";"):
        raise HostError("15", "';' delimiter missing after the transaction data")
    arqc = cur.take_binary(8)
    arc = cur.take_binary(2) if mode in ("1", "2") else None
    lmk = ctx.lmk(cur.trailing())
    mk = open_key(lmk, mk_field, *MK_AC)
    if mk.aes or len(mk.value) != 16:
        raise HostError("27", "MK-AC must be a double-length TDES key")
    digits = pan_psn.hex().upper()
    if not digits.isdecimal():
        raise HostError("15", "PAN/PSN must be packed decimal")
    icc_mk = _kd.derive_icc_mk_a(mk.value, digits[:14], digits[14:])
    if scheme == "0":
        session_key, padding = icc_mk, _ac.PaddingType.VISA
    elif scheme == "1":
        session_key, padding = _kd.derive_common_sk(icc_mk, atc + b"\x00\x00" + un), _ac.PaddingType.EMV
    else:
        session_key, padding = _kd.derive_common_sk(icc_mk, atc + bytes(6)), _ac.PaddingType.EMV
    if mode in ("0", "1"):
        if _ac.generate_ac(session_key, tx_data, padding) != arqc:
            raise HostError("01", "ARQC verification failed")
    if arc is None:
        return ""
    return _ac.generate_arpc_1(session_key, arqc, arc).decode("latin-1")


@dataclass(frozen=True, kw_only=True)
class CommandSpec:
    handler: Handler
    sensitive: bool = False  # needs the authorised state (checked inside the handler)


COMMANDS: dict[str, CommandSpec] = {
    "NC": CommandSpec(handler=cmd_nc),
    "NO": CommandSpec(handler=cmd_no),
    "B2": CommandSpec(handler=cmd_b2),
    "A0": CommandSpec(handler=cmd_a0),
    "A4": CommandSpec(handler=cmd_a4, sensitive=True),
    "A6": CommandSpec(handler=cmd_a6),
    "A8": CommandSpec(handler=cmd_a8),
    "BU": CommandSpec(handler=cmd_bu),
    "GG": CommandSpec(handler=cmd_gg, sensitive=True),
    "CA": CommandSpec(handler=cmd_ca),
    "CC": CommandSpec(handler=cmd_cc),
    "JA": CommandSpec(handler=cmd_ja),
    "JC": CommandSpec(handler=cmd_jc),
    "JE": CommandSpec(handler=cmd_je),
    "JG": CommandSpec(handler=cmd_jg),
    "DA": CommandSpec(handler=cmd_da),
    "EA": CommandSpec(handler=cmd_ea),
    "DC": CommandSpec(handler=cmd_dc),
    "EC": CommandSpec(handler=cmd_ec),
    "DG": CommandSpec(handler=cmd_dg),
    "FW": CommandSpec(handler=cmd_fw),
    "CW": CommandSpec(handler=cmd_cw),
    "CY": CommandSpec(handler=cmd_cy),
    "M0": CommandSpec(handler=cmd_m0),
    "M2": CommandSpec(handler=cmd_m2),
    "M6": CommandSpec(handler=cmd_m6),
    "M8": CommandSpec(handler=cmd_m8),
    "KQ": CommandSpec(handler=cmd_kq),
    "EI": CommandSpec(handler=_rsa.cmd_ei, sensitive=True),
    "EO": CommandSpec(handler=_rsa.cmd_eo, sensitive=True),
    "EW": CommandSpec(handler=_signatures.cmd_ew),
    "EY": CommandSpec(handler=_signatures.cmd_ey),
    "GI": CommandSpec(handler=_rsa.cmd_gi),
    "GK": CommandSpec(handler=_rsa.cmd_gk),
    "GM": CommandSpec(handler=_hashing.cmd_gm),
    "N0": CommandSpec(handler=_random_value.cmd_n0),
    "FY": CommandSpec(handler=_ecc.cmd_fy),
    "J2": CommandSpec(handler=health.cmd_j2),
    "J4": CommandSpec(handler=health.cmd_j4),
    "J8": CommandSpec(handler=health.cmd_j8),
    "JK": CommandSpec(handler=health.cmd_jk),
    "NI": CommandSpec(handler=health.cmd_ni),
}

from .commands import dukpt as _dukpt_commands  # noqa: E402 - handlers use the helpers above
from .commands import emv as _emv_commands  # noqa: E402
from .commands import pins as _pin_commands  # noqa: E402

COMMANDS["EE"] = CommandSpec(handler=_pin_commands.cmd_ee)
COMMANDS["DE"] = CommandSpec(handler=_pin_commands.cmd_de)
COMMANDS["BK"] = CommandSpec(handler=_pin_commands.cmd_bk)
COMMANDS["BC"] = CommandSpec(handler=_pin_commands.cmd_bc)
COMMANDS["BE"] = CommandSpec(handler=_pin_commands.cmd_be)
COMMANDS["CU"] = CommandSpec(handler=_pin_commands.cmd_cu)
COMMANDS["DU"] = CommandSpec(handler=_pin_commands.cmd_du)
COMMANDS["CI"] = CommandSpec(handler=_dukpt_commands.cmd_ci)
COMMANDS["G0"] = CommandSpec(handler=_dukpt_commands.cmd_g0)
COMMANDS["CK"] = CommandSpec(handler=_dukpt_commands.cmd_ck)
COMMANDS["CM"] = CommandSpec(handler=_dukpt_commands.cmd_cm)
COMMANDS["GO"] = CommandSpec(handler=_dukpt_commands.cmd_go)
COMMANDS["GQ"] = CommandSpec(handler=_dukpt_commands.cmd_gq)
COMMANDS["GW"] = CommandSpec(handler=_dukpt_commands.cmd_gw)
COMMANDS["KW"] = CommandSpec(handler=_emv_commands.cmd_kw)
COMMANDS["PM"] = CommandSpec(handler=_emv_commands.cmd_pm)

UNKNOWN_COMMAND_RESPONSE = "ZZ"


def response_code(command: str) -> str:
    """The command code with its second character incremented (A0 -> A1, NC -> ND)."""
    return command[0] + chr(ord(command[1]) + 1)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One processed command: the response body and what to log about it."""

    response: bytes
    command: str
    error_code: str
    message: str = ""


def execute(body: bytes, domain: SecurityDomain, settings: HostSettings, host: Any = None) -> Outcome:
    """Process one host message (without the 2-byte length); never raises for bad input.

    ``host`` is the runtime serving the host ports (counters for the health commands)."""
    text = body.decode("latin-1")
    header_length = settings.header_length
    header = text[:header_length]
    command = text[header_length : header_length + 2]
    cur = Cursor(text[header_length + 2 :])
    spec = COMMANDS.get(command)
    if spec is None:
        trailer = _raw_trailer(cur.text)
        response = header + UNKNOWN_COMMAND_RESPONSE + "00" + trailer
        return Outcome(
            response=response.encode("latin-1"), command=command, error_code="ZZ",
            message="unknown command",
        )
    reply = response_code(command)
    ctx = CommandContext(domain, settings, host)
    message = ""
    try:
        if command in settings.disabled_commands:
            raise HostError("68", f"command {command} is disabled")
        result = spec.handler(ctx, cur)
        code, data = ("00", result) if isinstance(result, str) else result
        trailer = TRAILER_DELIMITER + cur.trailer if cur.trailer is not None else ""
    except HostError as exc:
        code, data, message = exc.code, "", exc.message
        trailer = _error_trailer(cur)
    except Exception as exc:  # noqa: BLE001 - a bug must not cost the connection
        code, data, message = "41", "", f"internal error: {exc.__class__.__name__}"
        trailer = _error_trailer(cur)
    response = header + reply + code + data + trailer
    return Outcome(response=response.encode("latin-1"), command=command, error_code=code, message=message)


def _error_trailer(cur: Cursor) -> str:
    """The trailer to echo with an error: the one the fields were parsed up to, else a 0x19 in
    the part not yet parsed (a 0x19 inside binary fields already read is data, not a trailer)."""
    if cur.trailer is not None:
        return TRAILER_DELIMITER + cur.trailer
    return _raw_trailer(cur.text[cur.pos :])


def _raw_trailer(text: str) -> str:
    at = text.rfind(TRAILER_DELIMITER)
    return text[at:] if at >= 0 else ""
