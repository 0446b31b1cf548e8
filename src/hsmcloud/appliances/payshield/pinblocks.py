"""PIN block formats by their payShield format codes.

ISO 9564-1 formats 0, 2 and 3 come from ``psec.pinblock``; format 1 (which psec lacks) is
written here. Account numbers are the host commands' 12-digit fields (the rightmost 12
digits of the PAN excluding the check digit).
"""

from __future__ import annotations

import os

from psec import pinblock as _pb

from .errors import HostError

#: payShield PIN block format code -> ISO 9564-1 format.
FORMAT_CODES = {"01": "ISO-0", "05": "ISO-1", "34": "ISO-2", "47": "ISO-3"}


def check_format(code: str) -> str:
    if code not in FORMAT_CODES:
        raise HostError("23", f"PIN block format {code!r} not supported")
    return code


def check_account(account: str) -> str:
    if len(account) != 12 or not account.isdecimal():
        raise HostError("15", "account number must be 12 digits")
    return account


def _pan(account: str) -> str:
    # psec takes a full PAN and uses its 12 digits before the check digit.
    return account + "0"


def encode_iso1(pin: str) -> bytes:
    """ISO 9564-1 format 1: 1, length, PIN, random fill (transaction-field digits)."""
    if not 4 <= len(pin) <= 12 or not pin.isdecimal():
        raise HostError("24")
    fill = "".join("0123456789ABCDEF"[b % 16] for b in os.urandom(14 - len(pin)))
    return bytes.fromhex(f"1{len(pin):X}{pin}{fill}")


def decode_iso1(block: bytes) -> str:
    text = block.hex().upper()
    if text[0] != "1":
        raise HostError("20")
    length = int(text[1], 16)
    pin = text[2 : 2 + length]
    if not 4 <= length <= 12 or not pin.isdecimal():
        raise HostError("20")
    return pin


def encode(code: str, pin: str, account: str) -> bytes:
    """The clear PIN block of ``pin`` in format ``code``."""
    check_format(code)
    if not 4 <= len(pin) <= 12 or not pin.isdecimal():
        raise HostError("24")
    if code == "05":
        return encode_iso1(pin)
    try:
        if code == "01":
            return _pb.encode_pinblock_iso_0(pin, _pan(check_account(account)))
        if code == "47":
            return _pb.encode_pinblock_iso_3(pin, _pan(check_account(account)))
        return _pb.encode_pinblock_iso_2(pin)
    except ValueError as exc:
        raise HostError("20", str(exc)) from exc


def decode(code: str, block: bytes, account: str) -> str:
    """The PIN in the clear block ``block`` of format ``code``; HostError 20 if invalid."""
    check_format(code)
    if code == "05":
        return decode_iso1(block)
    try:
        if code == "01":
            return _pb.decode_pinblock_iso_0(block, _pan(check_account(account)))
        if code == "47":
            return _pb.decode_pinblock_iso_3(block, _pan(check_account(account)))
        return _pb.decode_pinblock_iso_2(block)
    except ValueError as exc:
        raise HostError("20", str(exc)) from exc
