"""PIN issuing and verification commands: IBM 3624 derivation and offsets, comparison
verification, customer-selected PINs and PIN change.

EE derive a PIN from an offset, DE offset of a PIN under the LMK, BK offset of a customer-
selected PIN block, BC/BE verify a PIN block against a PIN under the LMK, CU (Visa PVV) and
DU (IBM offset) verify the current PIN and produce the verification value of a new one.
The IBM 3624 and Visa PVV arithmetic is psec's (through ``host_commands``).
"""

from __future__ import annotations

from psec import pin as _pin

from .. import pinblocks
from ..errors import HostError
from ..fields import Cursor
from ..host_commands import (
    PVK,
    TPK,
    ZPK,
    ClearKey,
    CommandContext,
    Response,
    _check_pin_length,
    _ibm_pin_prefix,
    _max_pin_length,
    _visa_pvv,
    decrypt_pin,
    open_key,
    pin_from_lmk,
    pin_to_lmk,
    take_pin_under_lmk,
)


def _check_length(cur: Cursor) -> int:
    value = int(cur.take_digits(2))
    if not 4 <= value <= 12:
        raise HostError("15", "check length must be 04..12")
    return value


def _ibm_fields(cur: Cursor) -> tuple[str, str, str]:
    account = pinblocks.check_account(cur.take_digits(12))
    table = cur.take(16)
    validation = cur.take(12).upper()
    return account, table, validation


def _validation_data(validation: str, account: str) -> str:
    if "N" in validation:
        validation = validation.replace("N", account[-5:], 1)
    if not validation.isdecimal():
        raise HostError("15", "PIN validation data must be digits with at most one N")
    return validation


def ibm_offset(pvk: ClearKey, table: str, validation: str, pin: str, account: str) -> str:
    """IBM 3624 offset of ``pin`` (as long as the PIN), left-justified and F-padded to 12."""
    if pvk.aes:
        raise HostError("27", "the IBM 3624 method needs a DES/TDES PVK")
    if len(table) != 16 or not table.isdecimal():
        raise HostError("25", "decimalisation table must be 16 decimal digits")
    data = _validation_data(validation, account)
    offset = _pin.generate_ibm3624_offset(pvk.value, table, pin, data, 0, len(data), "F")
    return offset.ljust(12, "F")


def _offset_digits(offset: str, length: int) -> str:
    digits = offset[:length]
    if not digits.isdecimal() or any(c not in "F" for c in offset[length:]):
        raise HostError("15", "offset must be decimal digits, left-justified and padded with F")
    return digits


def cmd_ee(ctx: CommandContext, cur: Cursor) -> Response:
    """Derive a PIN with the IBM 3624 offset method: PVK, offset (12), check length, account,
    decimalisation table, validation data -> PIN under the LMK."""
    pvk_field = cur.key()
    offset = cur.take(12).upper()
    length = _check_length(cur)
    account, table, validation = _ibm_fields(cur)
    lmk = ctx.lmk(cur.trailing())
    digits = _offset_digits(offset, length)
    pvk = open_key(lmk, pvk_field, *PVK)
    pin = _ibm_pin_prefix(pvk, table, validation, digits, account)
    return pin_to_lmk(lmk, pin, account)


def cmd_de(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate the IBM 3624 offset of a PIN under the LMK: PVK, PIN, check length, account,
    decimalisation table, validation data -> offset (12)."""
    pvk_field = cur.key()
    lmk = ctx.lmk(cur.lmk_id_hint())
    pin_field = take_pin_under_lmk(cur, lmk)
    length = _check_length(cur)
    account, table, validation = _ibm_fields(cur)
    ctx.lmk(cur.trailing())
    pvk = open_key(lmk, pvk_field, *PVK)
    pin = pin_from_lmk(lmk, pin_field, account)
    if len(pin) < length:
        raise HostError("81", "the PIN is shorter than the check length")
    return ibm_offset(pvk, table, validation, pin, account)


def _pin_key_role(key_type: str) -> tuple:
    if key_type == "001":
        return ZPK
    if key_type == "002":
        return TPK
    raise HostError("04", "the PIN block key type must be 001 (ZPK) or 002 (TPK)")


def cmd_bk(ctx: CommandContext, cur: Cursor) -> Response:
    """IBM 3624 offset of a customer-selected PIN: key type (001/002), ZPK/TPK, PVK, PIN block,
    format, check length, account, decimalisation table, validation data -> offset (12)."""
    role = _pin_key_role(cur.take(3))
    key_field = cur.key()
    pvk_field = cur.key()
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    length = _check_length(cur)
    account, table, validation = _ibm_fields(cur)
    lmk = ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, *role)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    pin = decrypt_pin(key, block, fmt, account)
    if len(pin) < length:
        raise HostError("81", "the PIN is shorter than the check length")
    return ibm_offset(pvk, table, validation, pin, account)


def _verify_by_comparison(ctx: CommandContext, cur: Cursor, role: tuple) -> Response:
    key_field = cur.key()
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    lmk = ctx.lmk(cur.lmk_id_hint())
    pin_field = take_pin_under_lmk(cur, lmk)
    ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, *role)
    presented = decrypt_pin(key, block, fmt, account)
    if presented != pin_from_lmk(lmk, pin_field, account):
        raise HostError("01", "PIN verification failed")
    return ""


def cmd_bc(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a terminal PIN (under a TPK) by comparison with the PIN under the LMK."""
    return _verify_by_comparison(ctx, cur, TPK)


def cmd_be(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify an interchange PIN (under a ZPK) by comparison with the PIN under the LMK."""
    return _verify_by_comparison(ctx, cur, ZPK)


def cmd_cu(ctx: CommandContext, cur: Cursor) -> Response:
    """PIN change, Visa PVV: key type, ZPK/TPK, PVK pair, current PIN block, format, account,
    PVKI, current PVV, new PIN block -> PVV of the new PIN (4); 01 if the current PIN fails."""
    role = _pin_key_role(cur.take(3))
    key_field = cur.key()
    pvk_field = cur.key()
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    pvki = cur.take_digits(1)
    pvv = cur.take_digits(4)
    new_block = cur.take_hex(16)
    lmk = ctx.lmk(cur.trailing())
    key = open_key(lmk, key_field, *role)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    current = decrypt_pin(key, block, fmt, account)
    if _visa_pvv(pvk, pvki, current, account) != pvv:
        raise HostError("01", "current PIN verification failed")
    new_pin = decrypt_pin(key, new_block, fmt, account)
    return _visa_pvv(pvk, pvki, new_pin, account)


def cmd_du(ctx: CommandContext, cur: Cursor) -> Response:
    """PIN change, IBM 3624: key type, ZPK/TPK, PVK, max PIN length, current PIN block, format,
    check length, account, decimalisation table, validation data, current offset (12), new PIN
    block -> offset of the new PIN (12); 01 if the current PIN fails."""
    role = _pin_key_role(cur.take(3))
    key_field = cur.key()
    pvk_field = cur.key()
    maximum = _max_pin_length(cur)
    block = cur.take_hex(16)
    fmt = cur.take_digits(2)
    length = _check_length(cur)
    account, table, validation = _ibm_fields(cur)
    offset = cur.take(12).upper()
    new_block = cur.take_hex(16)
    lmk = ctx.lmk(cur.trailing())
    digits = offset[:length]  # the current offset may be as long as the PIN (DE gives that): as DA/EA
    if not digits.isdecimal() or any(c not in "0123456789F" for c in offset[length:]):
        raise HostError("15", "offset must be decimal digits, left-justified and padded with F")
    key = open_key(lmk, key_field, *role)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    current = decrypt_pin(key, block, fmt, account)
    _check_pin_length(current, maximum)
    expected = _ibm_pin_prefix(pvk, table, validation, digits, account)
    if current[:length] != expected:
        raise HostError("01", "current PIN verification failed")
    new_pin = decrypt_pin(key, new_block, fmt, account)
    _check_pin_length(new_pin, maximum)
    if len(new_pin) < length:
        raise HostError("81", "the new PIN is shorter than the check length")
    return ibm_offset(pvk, table, validation, new_pin, account)
