"""Known answers of KW (EMV 4.x ARQC/ARPC, Visa CVN 10 / 18 / 22 style) and PM (CVC3), from
pyemv's CVN classes and CVC3 function."""

from __future__ import annotations

import pytest
from pyemv import cvn, cvv, kd

from payshield_inprocess import Host, under_variant_lmk

MK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
OTHER = bytes.fromhex("F1F1F1F1F1F1F1F1E0E0E0E0E0E0E0E0")
PAN, PSN = "1234567890123456", "00"
ATC = bytes.fromhex("0FFF")
# The transaction data of pyemv's CVN 18 example (9F02 9F03 9F1A 95 5F2A 9A 9C 9F37 82 9F36 9F10).
TAGS = dict(
    tag_9f02=bytes.fromhex("000000009999"), tag_9f03=bytes.fromhex("000000000000"),
    tag_9f1a=bytes.fromhex("0840"), tag_95=bytes.fromhex("8000048000"), tag_5f2a=bytes.fromhex("0840"),
    tag_9a=bytes.fromhex("991231"), tag_9c=bytes.fromhex("01"), tag_9f37=bytes.fromhex("52BF4585"),
    tag_82=bytes.fromhex("1800"), tag_9f36=ATC,
)
IAD = bytes.fromhex("06011203A0B800")


@pytest.fixture(scope="module")
def hsm() -> Host:
    return Host()


def pan_psn(pan: str = PAN, psn: str = PSN) -> bytes:
    digits = pan + psn
    if len(digits) % 2:
        digits = "F" + digits
    packed = bytes.fromhex(digits)
    return b"%02d" % len(packed) + packed


def kw(mode: bytes, scheme: bytes, mk: bytes, tx: bytes, arqc: bytes, tail: bytes = b"", pan: str = PAN) -> bytes:
    return b"KW" + mode + scheme + mk + pan_psn(pan) + ATC + b"%02X" % len(tx) + tx + b";" + arqc + tail


def test_kw_cvn18_arqc_and_arpc_method_2(hsm):
    card = cvn.VisaCVN18(MK, OTHER, OTHER, PAN, PSN)
    tx = b"".join(TAGS.values()) + IAD
    arqc = card.generate_ac(**TAGS, tag_9f10=IAD)
    csu = bytes.fromhex("00820000")
    arpc = card.generate_arpc(arqc, ATC, csu)
    mk = under_variant_lmk(MK, "109").encode()
    response = hsm.call(kw(b"3", b"1", mk, tx, arqc, csu + b"0"))
    assert response == b"KX00" + arpc and len(arpc) == 4
    assert hsm.call(kw(b"0", b"1", mk, tx, arqc)) == b"KX00"
    assert hsm.call(kw(b"4", b"1", mk, tx, bytes(8), csu + b"0")) == b"KX00" + card.generate_arpc(bytes(8), ATC, csu)
    prop = bytes.fromhex("0102")
    assert hsm.call(kw(b"3", b"1", mk, tx, arqc, csu + b"2" + prop)) == b"KX00" + card.generate_arpc(arqc, ATC, csu, prop)
    tampered = tx[:-1] + bytes([tx[-1] ^ 1])
    assert hsm.error(kw(b"0", b"1", mk, tampered, arqc)) == "01"


def test_kw_cvn22_and_a_19_digit_pan(hsm):
    pan = "1234567890123456789"
    card = cvn.VisaCVN22(MK, OTHER, OTHER, pan, "01")
    tags = dict(TAGS)
    iad = bytes.fromhex("1F4200000000000000000000000000000000000000000000000000000000000000")
    arqc = card.generate_ac(**tags, tag_9f10=iad)
    mk = under_variant_lmk(MK, "109").encode()
    tx = b"".join(tags.values()) + iad
    message = b"KW" + b"3" + b"1" + mk + pan_psn(pan, "01") + ATC + b"%02X" % len(tx) + tx + b";" + arqc
    csu = bytes.fromhex("00000000")
    assert hsm.call(message + csu + b"0") == b"KX00" + card.generate_arpc(arqc, ATC, csu)


def test_kw_cvn10_arqc_and_arpc_method_1(hsm):
    card = cvn.VisaCVN10(MK, OTHER, OTHER, PAN, PSN)
    cvr = bytes.fromhex("03A0B800")
    arqc = card.generate_ac(**TAGS, cvr=cvr)
    tx = b"".join(TAGS.values()) + cvr
    arc = b"00"
    mk = under_variant_lmk(MK, "109").encode()
    assert hsm.call(kw(b"1", b"0", mk, tx, arqc, arc)) == b"KX00" + card.generate_arpc(arqc, arc)
    assert hsm.error(kw(b"1", b"1", mk, tx, arqc, arc)) == "01"
    assert hsm.error(kw(b"5", b"0", mk, tx, arqc, arc)) == "04"
    assert hsm.error(kw(b"1", b"7", mk, tx, arqc, arc)) == "05"
    cvk = under_variant_lmk(MK, "402").encode()
    assert hsm.error(kw(b"1", b"0", cvk, tx, arqc, arc)) == "10"  # not an MK-AC (key type 109)


def test_pm_verifies_the_pyemv_cvc3_example(hsm):
    """pyemv's published example: MK-CVC3 0123456789987654 3210012345678998 (option A), PAN
    5123456789012345, PSN 00, track 2 template, ATC 005E, UN 00000899 -> CVC3 29488."""
    iss = bytes.fromhex("01234567899876543210012345678998")
    track = bytes.fromhex("5123456789012345D35121010000000000000F")
    icc = kd.derive_icc_mk_a(iss, "5123456789012345", "00")
    assert cvv.generate_cvc3(icc, track, bytes.fromhex("005E"), bytes.fromhex("00000899")) == "29488"
    # The published key has even-parity bytes; a payShield keeps only odd-parity keys, so the
    # appliance gets the parity-adjusted key and the expected value is recomputed with pyemv.
    from psec import des

    odd = des.adjust_key_parity(iss)
    expected = cvv.generate_cvc3(kd.derive_icc_mk_a(odd, "5123456789012345", "00"), track,
                                 bytes.fromhex("005E"), bytes.fromhex("00000899"))
    mk = under_variant_lmk(odd, "709").encode()
    track_text = b"5123456789012345=35121010000000000000"  # the same template as track 2 characters
    head = b"PM" + b"1" + b"2" + mk + b"A" + b"5123456789012345;00" + b"%03d" % len(track_text) + track_text
    assert hsm.ok(head + b"00000899" + b"00094" + expected.encode()) == ""
    assert hsm.ok(head + b"00000899" + b"00094" + b"FF" + expected[-3:].encode()) == ""
    wrong = "%05d" % ((int(expected) + 1) % 100000)
    assert hsm.error(head + b"00000899" + b"00094" + wrong.encode()) == "01"
    assert hsm.error(head + b"00000899" + b"00095" + expected.encode()) == "01"
    assert hsm.ok(head + b"00000899" + b"00094" + b"XX" + expected[-3:].encode()) == ""
    assert hsm.error(b"PM" + b"7" + head[3:] + b"00000899" + b"00094" + expected.encode()) == "05"
    assert hsm.error(b"PM1" + b"0" + head[4:] + b"00000899" + b"00094" + expected.encode()) == "15"


def test_pm_verifies_a_visa_dcvv(hsm):
    """Visa dCVV: CVV algorithm under the option-A card key with ATC || PAN[4:] and service code 000."""
    pan, psn, expiry, atc = "4761739001010010", "00", "2212", "0042"
    udk = kd.derive_icc_mk_a(MK, pan, psn)
    import psec

    expected = psec.cvv.generate_cvv(udk, atc + pan[4:], expiry, "000")
    mk = under_variant_lmk(MK, "709").encode()
    head = b"PM00" + mk + b"A" + pan.encode() + b";" + psn.encode() + expiry.encode() + atc.encode()
    assert hsm.ok(head + expected.encode()) == ""
    assert hsm.error(head + ("%03d" % ((int(expected) + 1) % 1000)).encode()) == "01"
    # The next transaction (ATC 0043) has its own dCVV.
    next_dcvv = psec.cvv.generate_cvv(udk, "0043" + pan[4:], expiry, "000")
    other_atc = b"PM00" + mk + b"A" + pan.encode() + b";" + psn.encode() + expiry.encode() + b"0043"
    assert hsm.ok(other_atc + next_dcvv.encode()) == ""
    if next_dcvv != expected:
        assert hsm.error(other_atc + expected.encode()) == "01"


def test_kw_emv2000_tree_session_key(hsm):
    iv = bytes(range(16))
    icc_mk = kd.derive_icc_mk_a(MK, PAN, PSN)
    from pyemv import ac

    sk = kd.derive_emv2000_tree_sk(icc_mk, ATC, 8, 4, iv)
    tx = b"".join(TAGS.values())
    arqc = ac.generate_ac(sk, tx, ac.PaddingType.EMV)
    mk = under_variant_lmk(MK, "109").encode()
    head = b"KW1" + b"2" + mk + iv + pan_psn() + b";" + b"4" + b"08"
    tail = ATC + b"%02X" % len(tx) + tx + b";" + arqc + b"00"
    assert hsm.call(head + tail) == b"KX00" + ac.generate_arpc_1(sk, arqc, b"00")
    assert hsm.error(b"KW1" + b"2" + mk + iv + pan_psn() + b";" + b"2" + b"08" + tail) == "52"
    assert hsm.error(b"KW1" + b"2" + mk + iv + pan_psn() + b";" + b"4" + b"16" + tail) == "01"
