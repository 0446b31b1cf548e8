"""EMV commands of the newer generation: KW (ARQC verification / ARPC generation, EMV 4.x
methods including ARPC method 2 with a Card Status Update, as Visa CVN 18/22 use) and PM
(verify a MasterCard CVC3 dynamic card verification code).

Key derivation, cryptograms and CVC3 come from ``pyemv``.
"""

from __future__ import annotations

from psec import cvv as _psec_cvv
from pyemv import ac as _ac
from pyemv import cvv as _cvv
from pyemv import kd as _kd

from ..errors import HostError
from ..fields import Cursor
from ..host_commands import MK_AC, ClearKey, CommandContext, Response, open_key

#: MK-CVC3 / MK-DCVV: variant key type 709; key-block usages E6 (TR-31) and 32 (Thales).
MK_CVC3 = ("709", ("E6", "32"))

#: KW mode -> (verify the ARQC, ARPC method or None).
KW_MODES = {"0": (True, None), "1": (True, 1), "2": (False, 1), "3": (True, 2), "4": (False, 2)}


def _double_length_tdes(key: ClearKey, name: str) -> bytes:
    if key.aes or len(key.value) != 16:
        raise HostError("27", f"{name} must be a double-length TDES key")
    return key.value


def _pan_psn(cur: Cursor) -> tuple[str, str]:
    """PAN/PSN length (2N, bytes 08..11) + PAN||PSN packed BCD, left-padded with F."""
    length = int(cur.take_digits(2))
    if not 8 <= length <= 11:
        raise HostError("15", "PAN/PSN length must be 08..11 bytes")
    digits = cur.take_binary(length).hex().upper().lstrip("F")
    if not digits.isdecimal() or len(digits) < 14:
        raise HostError("15", "PAN/PSN must be packed decimal digits")
    return digits[:-2], digits[-2:]


def cmd_kw(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify an ARQC and/or generate an ARPC with EMV 4.x methods.

    Mode 0 verify; 1 verify + ARPC method 1; 2 ARPC method 1 only; 3 verify + ARPC method 2;
    4 ARPC method 2 only. Scheme 0: Visa CVN 10 (ICC MK option A, the ICC MK itself, Visa
    padding); scheme 1: EMV common session key (ICC MK option B, session key from ATC||0...0,
    EMV padding: Visa CVN 18/22, MasterCard CVN 20/21); scheme 2: EMV2000 tree (ICC MK option A,
    session key from the tree with the IV-AC, branch factor and height, EMV padding).
    Fields: mode, scheme, MK-AC, [scheme 2: IV-AC (16B)], PAN/PSN length + PAN/PSN, [scheme 2:
    ';' branch factor (1N) height (2N)], ATC (2B), transaction data length
    (2H) + data, ';', ARQC (8B), then ARC (2B) for method 1 or CSU (4B) + proprietary
    authentication data length (1N, 0..8) + data for method 2.
    """
    mode = cur.take(1)
    if mode not in KW_MODES:
        raise HostError("04", "unrecognised KW mode flag (0..4)")
    verify, method = KW_MODES[mode]
    scheme = cur.take(1)
    if scheme not in ("0", "1", "2"):
        raise HostError("05", "KW scheme ID must be 0 (Visa CVN 10), 1 (EMV CSK) or 2 (EMV2000 tree)")
    mk_field = cur.key()
    iv = cur.take_binary(16) if scheme == "2" else None
    pan, psn = _pan_psn(cur)
    branch = height = 0
    if scheme == "2":
        if not cur.optional(";"):
            raise HostError("15", "';' and the branch factor / height missing")
        branch, height = int(cur.take_digits(1)), int(cur.take_digits(2))
    atc = cur.take_binary(2)
    tx_data = cur.take_binary(int(cur.take_hex(2), 16))
    if not cur.optional(";"):
        raise HostError("15", "';' delimiter missing after the transaction data")
    arqc = cur.take_binary(8)
    arc = csu = prop = None
    if method == 1:
        arc = cur.take_binary(2)
    elif method == 2:
        csu = cur.take_binary(4)
        prop_length = int(cur.take_digits(1))
        if prop_length > 8:
            raise HostError("15", "proprietary authentication data is 0..8 bytes")
        prop = cur.take_binary(prop_length)
    lmk = ctx.lmk(cur.trailing())
    iss_mk = _double_length_tdes(open_key(lmk, mk_field, *MK_AC), "MK-AC")
    if scheme == "0":
        session_key = _kd.derive_icc_mk_a(iss_mk, pan, psn)
        padding = _ac.PaddingType.VISA
    elif scheme == "2":
        if branch < 2 or height < 1 or branch**height < 65535:
            raise HostError("52", "branch factor ** height must cover the 16-bit ATC")
        icc_mk = _kd.derive_icc_mk_a(iss_mk, pan, psn)
        session_key = _kd.derive_emv2000_tree_sk(icc_mk, atc, height, branch, iv)
        padding = _ac.PaddingType.EMV
    else:
        icc_mk = _kd.derive_icc_mk_b(iss_mk, pan, psn)
        session_key = _kd.derive_common_sk(icc_mk, atc + bytes(6))
        padding = _ac.PaddingType.EMV
    if verify:
        if not tx_data:
            raise HostError("80", "no transaction data")
        if _ac.generate_ac(session_key, tx_data, padding) != arqc:
            raise HostError("01", "ARQC verification failed")
    if method == 1:
        return _ac.generate_arpc_1(session_key, arqc, arc).decode("latin-1")
    if method == 2:
        return _ac.generate_arpc_2(session_key, arqc, csu, prop or None).decode("latin-1")
    return ""


def cmd_pm(ctx: CommandContext, cur: Cursor) -> Response:
    """Verify a dynamic card verification value. Scheme 0: Visa dCVV (see ``_visa_dcvv``).
    Scheme 1: MasterCard CVC3: scheme ID (1 = MasterCard), version (2 = PAN and track data
    given), MK-CVC3, ICC key derivation method (A/B), PAN ';' PSN (2N), track data length (3N)
    + track data (the track 2 IVCVC3 template as characters: digits, 'D' or '=' as the field
    separator, 'F' pad), UN (8N), ATC (5N, decimal), CVC3 (5: the digits received, left-padded
    with F or X when fewer than 5)."""
    scheme = cur.take(1)
    if scheme == "0":
        return _visa_dcvv(ctx, cur)
    if scheme != "1":
        raise HostError("05", "PM scheme ID must be 0 (Visa dCVV) or 1 (MasterCard CVC3)")
    if cur.take_digits(1) != "2":
        raise HostError("15", "PM version 2 (PAN and track data given) is the one supported")
    mk_field = cur.key()
    method = cur.take(1).upper()
    if method not in ("A", "B"):
        raise HostError("15", "ICC key derivation method must be A or B")
    pan = cur.until(";", max_length=19)
    if not 12 <= len(pan) <= 19 or not pan.isdecimal():
        raise HostError("15", "PAN must be 12..19 digits")
    psn = cur.take_digits(2)
    track_text = cur.take(int(cur.take_digits(3))).upper().replace("=", "D")
    if len(track_text) % 2:
        track_text += "F"
    if not track_text or any(c not in "0123456789DF" for c in track_text):
        raise HostError("15", "track data must be track 2 characters (digits, D or =, F)")
    track = bytes.fromhex(track_text)
    un = bytes.fromhex(cur.take_digits(8))
    atc_value = int(cur.take_digits(5))
    if atc_value > 0xFFFF:
        raise HostError("15", "ATC must be 0..65535")
    presented = cur.take(5).upper().lstrip("FX")
    lmk = ctx.lmk(cur.trailing())
    if not 3 <= len(presented) <= 5 or not presented.isdecimal():
        raise HostError("15", "CVC3 must be 3..5 digits (left-padded with F)")
    mk = _double_length_tdes(open_key(lmk, mk_field, *MK_CVC3), "MK-CVC3")
    derive = _kd.derive_icc_mk_a if method == "A" else _kd.derive_icc_mk_b
    icc_key = derive(mk, pan, psn)
    cvc3 = _cvv.generate_cvc3(icc_key, track, atc_value.to_bytes(2, "big"), un)
    if cvc3[-len(presented):] != presented:
        raise HostError("01", "CVC3 verification failed")
    return ""


def _visa_dcvv(ctx: CommandContext, cur: Cursor) -> Response:
    """Visa dCVV: version (1N), MK-dCVV, ICC key derivation method (A/B), PAN ';' PSN (2N), expiry
    (4N, as on the track), ATC (4H, as on the track), dCVV (3N).

    The dCVV is the CVV algorithm under the card's derived key with the ATC in place of the
    PAN's first four digits and service code 000.
    """
    cur.take_digits(1)  # version
    mk_field = cur.key()
    method = cur.take(1).upper()
    if method not in ("A", "B"):
        raise HostError("15", "ICC key derivation method must be A or B")
    pan = cur.until(";", max_length=19)
    if not 12 <= len(pan) <= 19 or not pan.isdecimal():
        raise HostError("15", "PAN must be 12..19 digits")
    psn = cur.take_digits(2)
    expiry = cur.take_digits(4)
    atc = cur.take_hex(4)
    presented = cur.take_digits(3)
    lmk = ctx.lmk(cur.trailing())
    mk = _double_length_tdes(open_key(lmk, mk_field, *MK_CVC3), "MK-dCVV")
    derive = _kd.derive_icc_mk_a if method == "A" else _kd.derive_icc_mk_b
    udk = derive(mk, pan, psn)
    if _psec_cvv.generate_cvv(udk, atc + pan[4:], expiry, "000") != presented:
        raise HostError("01", "dCVV verification failed")
    return ""
