"""DUKPT host commands (ANSI X9.24): PIN translation from a BDK to a ZPK, DUKPT PIN
verification and DUKPT MAC verification.

CI/G0 translate a PIN block encrypted under a DUKPT transaction key to a ZPK; CK/CM verify a
DUKPT PIN block with the IBM 3624 offset or the Visa PVV; GO/GQ do the same for the
triple-DES DUKPT family with an explicit PIN block format and, in mode 1, also verify the
DUKPT MAC of the transaction message (TDES or AES DUKPT); GW generates or verifies a DUKPT
MAC on its own.
TDES DUKPT is X9.24-1 (2009); an AES BDK (a key block with algorithm A under a key-block LMK)
selects AES DUKPT (X9.24-3), a 24-hex KSN and ISO format 4 PIN blocks (format code 48).
Key derivation is in ``..dukpt``.
"""

from __future__ import annotations

from psec import mac as _psec_mac
from psec import pinblock as _pb

from .. import dukpt as _dukpt
from .. import keycrypto as kc
from .. import pinblocks
from ..errors import HostError
from ..fields import Cursor
from ..host_commands import (
    PVK,
    ZPK,
    ClearKey,
    CommandContext,
    Response,
    _ibm_pin_prefix,
    _peek_aes,
    _visa_pvv,
    encrypt_pin,
    open_key,
)

#: BDKs: variant key types 009/609/809; key-block usages B0 (TR-31) and 41/42/43 (Thales).
BDK = ("009", ("B0", "41", "42", "43"))
ISO4 = "48"


def _ksn_descriptor(cur: Cursor) -> str:
    descriptor = cur.take_hex(3)
    if descriptor[1] != "0":
        raise HostError("15", "KSN descriptor: the sub-key identifier length must be 0")
    return descriptor


def _ksn(cur: Cursor, aes: bool) -> bytes:
    return cur.take_bytes_hex(24 if aes else 20)


def _open_bdk(lmk, field: str) -> ClearKey:
    bdk = open_key(lmk, field, *BDK)
    if not bdk.aes and len(bdk.value) != 16:
        raise HostError("27", "a TDES DUKPT BDK is double length")
    return bdk


def _pin_key(bdk: ClearKey, ksn: bytes) -> bytes:
    if bdk.aes:
        return _dukpt.aes_working_key(bdk.value, ksn, _dukpt.KEY_USAGE_PIN)
    return _dukpt.tdes_pin_key(bdk.value, ksn)


def _pan(cur: Cursor) -> str:
    """A full PAN for ISO format 4: length (2N, 12..19) then the digits."""
    length = int(cur.take_digits(2))
    if not 12 <= length <= 19:
        raise HostError("15", "PAN length must be 12..19")
    return cur.take_digits(length)


def _decrypt_dukpt_pin(bdk: ClearKey, ksn: bytes, block: bytes, fmt: str, account: str, pan: str | None) -> str:
    key = _pin_key(bdk, ksn)
    if bdk.aes:
        if fmt != ISO4:
            raise HostError("23", "AES DUKPT PIN blocks are ISO format 4 (48)")
        try:
            return _pb.decipher_pinblock_iso_4(key, block, pan or "")
        except ValueError as exc:
            raise HostError("20", str(exc)) from exc
    pinblocks.check_format(fmt)
    return pinblocks.decode(fmt, kc.tdes_decrypt(key, block), account)


def _translate(ctx: CommandContext, cur: Cursor, *, source_format: bool) -> Response:
    bdk_field = cur.key()
    zpk_field = cur.key()
    aes = bdk_field.startswith("S") and _peek_aes(bdk_field)
    _ksn_descriptor(cur)
    ksn = _ksn(cur, aes)
    block = cur.take_bytes_hex(32 if aes else 16)
    src_fmt = cur.take_digits(2) if source_format else "01"
    dst_fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    pan = _pan(cur) if src_fmt == ISO4 or dst_fmt == ISO4 else None
    lmk = ctx.lmk(cur.trailing())
    bdk = _open_bdk(lmk, bdk_field)
    zpk = open_key(lmk, zpk_field, *ZPK, parity_error="11")
    pin = _decrypt_dukpt_pin(bdk, ksn, block, src_fmt, account, pan)
    if dst_fmt == ISO4:
        if not zpk.aes:
            raise HostError("23", "ISO format 4 needs an AES ZPK")
        out = _pb.encipher_pinblock_iso_4(zpk.value, pin, pan or "").hex().upper()
    else:
        pinblocks.check_format(dst_fmt)
        out = encrypt_pin(zpk, pin, dst_fmt, account)
    return f"{len(pin):02d}" + out + dst_fmt


def cmd_ci(ctx: CommandContext, cur: Cursor) -> Response:
    """Translate a DUKPT PIN block (ISO 0) from a BDK to a ZPK: BDK, ZPK, KSN descriptor, KSN,
    PIN block, destination format, account -> PIN length, PIN block, format."""
    return _translate(ctx, cur, source_format=False)


def cmd_g0(ctx: CommandContext, cur: Cursor) -> Response:
    """Translate a DUKPT PIN block from a BDK to a ZPK (3DES or AES DUKPT), with source and
    destination PIN block formats; format 48 (ISO 4) adds a PAN field after the account."""
    return _translate(ctx, cur, source_format=True)


# -- verification ----------------------------------------------------------------------------


def _check_length(cur: Cursor) -> int:
    value = int(cur.take_digits(2))
    if not 4 <= value <= 12:
        raise HostError("15", "check length must be 04..12")
    return value


def _ibm_check(pvk: ClearKey, pin: str, length: int, account: str, table: str, validation: str, offset: str) -> None:
    digits = offset[:length]
    if not digits.isdecimal():
        raise HostError("15", "offset must be digits, left-justified and padded with F")
    expected = _ibm_pin_prefix(pvk, table, validation, digits, account)
    if len(pin) < length or pin[:length] != expected:
        raise HostError("01", "PIN verification failed")


def _mac_fields(cur: Cursor, aes: bool) -> tuple[bytes, str]:
    mac = cur.take_hex(16 if aes else 8)
    length = int(cur.take_hex(4), 16)
    if cur.remaining < length:
        raise HostError("80", "message shorter than its length field")
    return cur.take_binary(length), mac


def _dukpt_mac(bdk: ClearKey, ksn: bytes, data: bytes, *, response: bool) -> str:
    """ANSI X9.19 (ISO 9797-1 alg 3, padding 1) for TDES; AES-CMAC for AES DUKPT."""
    if not data:
        raise HostError("80", "no message to MAC")
    if bdk.aes:
        usage = _dukpt.KEY_USAGE_MAC_VERIFICATION if response else _dukpt.KEY_USAGE_MAC_GENERATION
        key = _dukpt.aes_working_key(bdk.value, ksn, usage)
        return kc.aes_cmac(key, data)[:8].hex().upper()
    key = _dukpt.tdes_mac_key(bdk.value, ksn, response=response)
    return _psec_mac.generate_retail_mac(key[:8], key[8:], data, 1, 4).hex().upper()


def _mode(cur: Cursor) -> str:
    mode = cur.take(1)
    if mode not in ("0", "1"):
        raise HostError("15", "mode must be 0 (verify PIN) or 1 (verify PIN and MAC)")
    return mode


def cmd_ck(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a DUKPT PIN (ISO 0) with the IBM 3624 offset: BDK, PVK, KSN descriptor, KSN, PIN
    block, check length, account, decimalisation table, validation data, offset."""
    bdk_field, pvk_field = cur.key(), cur.key()
    _ksn_descriptor(cur)
    ksn = _ksn(cur, False)
    block = cur.take_bytes_hex(16)
    length = _check_length(cur)
    account = pinblocks.check_account(cur.take_digits(12))
    table, validation, offset = cur.take(16), cur.take(12).upper(), cur.take(12).upper()
    lmk = ctx.lmk(cur.trailing())
    bdk = _open_bdk(lmk, bdk_field)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    pin = _decrypt_dukpt_pin(bdk, ksn, block, "01", account, None)
    _ibm_check(pvk, pin, length, account, table, validation, offset)
    return ""


def cmd_cm(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a DUKPT PIN (ISO 0) with the Visa PVV: BDK, PVK pair, KSN descriptor, KSN, PIN
    block, account, PVKI, PVV."""
    bdk_field, pvk_field = cur.key(), cur.key()
    _ksn_descriptor(cur)
    ksn = _ksn(cur, False)
    block = cur.take_bytes_hex(16)
    account = pinblocks.check_account(cur.take_digits(12))
    pvki, pvv = cur.take_digits(1), cur.take_digits(4)
    lmk = ctx.lmk(cur.trailing())
    bdk = _open_bdk(lmk, bdk_field)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    pin = _decrypt_dukpt_pin(bdk, ksn, block, "01", account, None)
    if _visa_pvv(pvk, pvki, pin, account) != pvv:
        raise HostError("01", "PVV verification failed")
    return ""


def cmd_go(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a DUKPT PIN with the IBM 3624 offset, and in mode 1 the message's DUKPT MAC:
    mode, BDK, PVK, KSN descriptor, KSN, PIN block, format, check length, account,
    decimalisation table, validation data, offset, [PAN length + PAN for format 48],
    [MAC (8H; 16H AES), length (4H), message]."""
    mode = _mode(cur)
    bdk_field, pvk_field = cur.key(), cur.key()
    aes = bdk_field.startswith("S") and _peek_aes(bdk_field)
    _ksn_descriptor(cur)
    ksn = _ksn(cur, aes)
    block = cur.take_bytes_hex(32 if aes else 16)
    fmt = cur.take_digits(2)
    length = _check_length(cur)
    account = pinblocks.check_account(cur.take_digits(12))
    table, validation, offset = cur.take(16), cur.take(12).upper(), cur.take(12).upper()
    pan = _pan(cur) if fmt == ISO4 else None
    message, mac = _mac_fields(cur, aes) if mode == "1" else (b"", "")
    lmk = ctx.lmk(cur.trailing())
    bdk = _open_bdk(lmk, bdk_field)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    pin = _decrypt_dukpt_pin(bdk, ksn, block, fmt, account, pan)
    _ibm_check(pvk, pin, length, account, table, validation, offset)
    if mode == "1" and _dukpt_mac(bdk, ksn, message, response=False) != mac:
        raise HostError("01", "MAC verification failed")
    return ""


def cmd_gq(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a DUKPT PIN with the Visa PVV, and in mode 1 the message's DUKPT MAC:
    mode, BDK, PVK pair, KSN descriptor, KSN, PIN block, format, account, PVKI, PVV,
    [PAN length + PAN for format 48], [MAC (8H; 16H AES), length (4H), message]."""
    mode = _mode(cur)
    bdk_field, pvk_field = cur.key(), cur.key()
    aes = bdk_field.startswith("S") and _peek_aes(bdk_field)
    _ksn_descriptor(cur)
    ksn = _ksn(cur, aes)
    block = cur.take_bytes_hex(32 if aes else 16)
    fmt = cur.take_digits(2)
    account = pinblocks.check_account(cur.take_digits(12))
    pvki, pvv = cur.take_digits(1), cur.take_digits(4)
    pan = _pan(cur) if fmt == ISO4 else None
    message, mac = _mac_fields(cur, aes) if mode == "1" else (b"", "")
    lmk = ctx.lmk(cur.trailing())
    bdk = _open_bdk(lmk, bdk_field)
    pvk = open_key(lmk, pvk_field, *PVK, parity_error="11")
    pin = _decrypt_dukpt_pin(bdk, ksn, block, fmt, account, pan)
    if _visa_pvv(pvk, pvki, pin, account) != pvv:
        raise HostError("01", "PVV verification failed")
    if mode == "1" and _dukpt_mac(bdk, ksn, message, response=False) != mac:
        raise HostError("01", "MAC verification failed")
    return ""


def cmd_gw(ctx: CommandContext, cur: Cursor) -> Response:
    """Generate (mode 0, a response MAC) or verify (mode 1, the device's request MAC) a DUKPT
    MAC: mode, BDK, KSN descriptor, KSN, length (4H), message, [MAC for mode 1].
    TDES: ANSI X9.19, 8 hex; AES: AES-CMAC, 16 hex."""
    mode = cur.take(1)
    if mode not in ("0", "1"):
        raise HostError("15", "mode must be 0 (generate) or 1 (verify)")
    bdk_field = cur.key()
    aes = bdk_field.startswith("S") and _peek_aes(bdk_field)
    _ksn_descriptor(cur)
    ksn = _ksn(cur, aes)
    length = int(cur.take_hex(4), 16)
    if cur.remaining < length:
        raise HostError("80", "message shorter than its length field")
    message = cur.take_binary(length)
    presented = cur.take_hex(16 if aes else 8) if mode == "1" else None
    lmk = ctx.lmk(cur.trailing())
    bdk = _open_bdk(lmk, bdk_field)
    if bdk.aes != aes:
        raise HostError("15", "KSN length does not match the BDK's algorithm")
    if presented is None:
        return _dukpt_mac(bdk, ksn, message, response=True)
    if _dukpt_mac(bdk, ksn, message, response=False) != presented:
        raise HostError("01", "MAC verification failed")
    return ""


__all__ = ["cmd_ci", "cmd_ck", "cmd_cm", "cmd_g0", "cmd_go", "cmd_gq", "cmd_gw"]
