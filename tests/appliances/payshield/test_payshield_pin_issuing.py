"""Known answers of the PIN issuing and verification commands: EE, DE, BK, BC, BE, CU, DU, JA.

Expected offsets, PINs and PVVs come from psec; keys and PINs under the LMK from the test's
own Thales variant encryption (payshield_inprocess), checked here against a ThalesSim vector.
"""

from __future__ import annotations

import psec
import pytest
from psec import des, pinblock

from payshield_inprocess import (
    Host,
    from_variant_lmk,
    pin_from_variant_lmk,
    pin_under_variant_lmk,
    under_variant_lmk,
)

K = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # psec's example PVK (KCV 08D7)
TPK = bytes.fromhex("3131313131313131C1C1C1C1C1C1C1C1")
ZPK = bytes.fromhex("5151515151515151A1A1A1A1A1A1A1A1")
PAN = "1122334455667788"
ACCOUNT = PAN[-13:-1]
TABLE = "1234567890123456"
VALIDATION_FIELD = "11223344556N"
VALIDATION = "11223344556" + ACCOUNT[-5:]


@pytest.fixture(scope="module")
def hsm() -> Host:
    return Host()


def block(key: bytes, pin: str, pan: str = PAN) -> bytes:
    return des.encrypt_tdes_ecb(key, pinblock.encode_pinblock_iso_0(pin, pan)).hex().upper().encode()


def ibm_tail() -> bytes:
    return ACCOUNT.encode() + TABLE.encode() + VALIDATION_FIELD.encode()


def test_the_test_lmk_helper_reproduces_the_thalessim_cvv_vector():
    """ThalesSim: CVK U9B49...8145 under the test LMK gives CVV 561 for 4123456789012345/8701/101."""
    cvk = from_variant_lmk("U9B4934384B19946B040CD702B4D58145", "402")
    assert psec.cvv.generate_cvv(cvk, "4123456789012345", "8701", "101") == "561"
    assert under_variant_lmk(cvk, "402") == "U9B4934384B19946B040CD702B4D58145"


def test_ee_derives_the_ibm_pin_from_an_offset(hsm):
    pvk = under_variant_lmk(K, "002").encode()
    offset = "5791"
    expected = psec.pin.generate_ibm3624_pin(K, TABLE, offset, VALIDATION, 0, 16, "F")
    lmk_pin = hsm.ok(b"EE" + pvk + offset.ljust(12, "F").encode() + b"04" + ibm_tail())
    assert pin_from_variant_lmk(lmk_pin, ACCOUNT) == expected
    six = psec.pin.generate_ibm3624_pin(K, TABLE, "012345", VALIDATION, 0, 16, "F")
    lmk_pin = hsm.ok(b"EE" + pvk + b"012345FFFFFF" + b"06" + ibm_tail())
    assert pin_from_variant_lmk(lmk_pin, ACCOUNT) == six
    # Offset not F-padded after the check length; check length 03; decimalisation table.
    assert hsm.error(b"EE" + pvk + b"579100000000" + b"04" + ibm_tail()) == "15"
    assert hsm.error(b"EE" + pvk + b"5791FFFFFFFF" + b"03" + ibm_tail()) == "15"
    bad_table = ACCOUNT.encode() + b"123456789012345A" + VALIDATION_FIELD.encode()
    assert hsm.error(b"EE" + pvk + b"5791FFFFFFFF" + b"04" + bad_table) == "25"


def test_de_generates_the_offset_of_a_pin_under_the_lmk(hsm):
    pvk = under_variant_lmk(K, "002").encode()
    for pin in ("4524", "987654", "12345678"):
        expected = psec.pin.generate_ibm3624_offset(K, TABLE, pin, VALIDATION, 0, 16, "F")
        lmk_pin = pin_under_variant_lmk(pin, ACCOUNT).encode()
        assert hsm.ok(b"DE" + pvk + lmk_pin + b"04" + ibm_tail()) == expected.ljust(12, "F")
    # PIN shorter than the check length; a PIN under the LMK of another account.
    short = pin_under_variant_lmk("1234", ACCOUNT).encode()
    assert hsm.error(b"DE" + pvk + short + b"06" + ibm_tail()) == "81"
    other = pin_under_variant_lmk("1234", "999999999999").encode()
    assert hsm.error(b"DE" + pvk + other + b"04" + ibm_tail()) == "14"


def test_psec_published_ibm_vector_through_de_and_ee(hsm):
    """psec's published vector: PVK 0123..3210, table 1234567890123456, PIN 4524, validation
    1122334455667788 (all 16 digits) -> offset 0000."""
    pvk = under_variant_lmk(K, "002").encode()
    # Our validation field is 12 characters; the account supplies the rest via 'N' only, so the
    # published 16-digit form is checked with psec directly and the appliance on 12 digits.
    assert psec.pin.generate_ibm3624_offset(K, TABLE, "4524", PAN, 0, 16, "F") == "0000"
    validation = "112233445566"
    offset = psec.pin.generate_ibm3624_offset(K, TABLE, "4524", validation, 0, 12, "F")
    tail = ACCOUNT.encode() + TABLE.encode() + validation.encode()
    lmk_pin = pin_under_variant_lmk("4524", ACCOUNT).encode()
    assert hsm.ok(b"DE" + pvk + lmk_pin + b"04" + tail) == offset + "F" * 8
    derived = hsm.ok(b"EE" + pvk + (offset + "F" * 8).encode() + b"04" + tail)
    assert pin_from_variant_lmk(derived, ACCOUNT) == "4524"


def test_bk_offset_of_a_customer_selected_pin(hsm):
    pvk = under_variant_lmk(K, "002").encode()
    zpk = under_variant_lmk(ZPK, "001").encode()
    tpk = under_variant_lmk(TPK, "002").encode()
    expected = psec.pin.generate_ibm3624_offset(K, TABLE, "80808", VALIDATION, 0, 16, "F").ljust(12, "F")
    assert hsm.ok(b"BK001" + zpk + pvk + block(ZPK, "80808") + b"01" + b"04" + ibm_tail()) == expected
    assert hsm.ok(b"BK002" + tpk + pvk + block(TPK, "80808") + b"01" + b"04" + ibm_tail()) == expected
    assert hsm.error(b"BK003" + zpk + pvk + block(ZPK, "80808") + b"01" + b"04" + ibm_tail()) == "04"


def test_bc_and_be_verify_by_comparison(hsm):
    tpk = under_variant_lmk(TPK, "002").encode()
    zpk = under_variant_lmk(ZPK, "001").encode()
    acct = ACCOUNT.encode()
    stored = pin_under_variant_lmk("246810", ACCOUNT).encode()
    assert hsm.ok(b"BC" + tpk + block(TPK, "246810") + b"01" + acct + stored) == ""
    assert hsm.error(b"BC" + tpk + block(TPK, "246811") + b"01" + acct + stored) == "01"
    assert hsm.ok(b"BE" + zpk + block(ZPK, "246810") + b"01" + acct + stored) == ""
    assert hsm.error(b"BE" + zpk + block(ZPK, "2468") + b"01" + acct + stored) == "01"
    # ISO 3 PIN block; a ZPK where BC expects a TPK (wrong key type: parity error under 002).
    iso3 = des.encrypt_tdes_ecb(ZPK, pinblock.encode_pinblock_iso_3("246810", PAN)).hex().upper().encode()
    assert hsm.ok(b"BE" + zpk + iso3 + b"47" + acct + stored) == ""
    assert hsm.error(b"BE" + zpk + block(ZPK, "246810") + b"02" + acct + stored) == "23"
    assert hsm.error(b"BE" + zpk + block(ZPK, "246810") + b"01" + acct + stored[:-1]) == "15"


def test_cu_pin_change_with_the_visa_pvv(hsm):
    pvk = under_variant_lmk(K, "002").encode()
    zpk = under_variant_lmk(ZPK, "001").encode()
    current = psec.pin.generate_visa_pvv(K, "3", "4524", PAN)
    assert current == "4021"  # psec's published example
    new_pvv = psec.pin.generate_visa_pvv(K, "3", "9137", PAN)
    message = b"CU001" + zpk + pvk + block(ZPK, "4524") + b"01" + ACCOUNT.encode() + b"3" + b"4021"
    assert hsm.ok(message + block(ZPK, "9137")) == new_pvv
    wrong = b"CU001" + zpk + pvk + block(ZPK, "4525") + b"01" + ACCOUNT.encode() + b"3" + b"4021"
    assert hsm.error(wrong + block(ZPK, "9137")) == "01"
    assert hsm.error(message) == "15"  # new PIN block missing


def test_du_pin_change_with_the_ibm_offset(hsm):
    pvk = under_variant_lmk(K, "002").encode()
    tpk = under_variant_lmk(TPK, "002").encode()
    offset = psec.pin.generate_ibm3624_offset(K, TABLE, "4524", VALIDATION, 0, 16, "F").ljust(12, "F")
    new_offset = psec.pin.generate_ibm3624_offset(K, TABLE, "777111", VALIDATION, 0, 16, "F").ljust(12, "F")
    head = b"DU002" + tpk + pvk + b"12"
    tail = b"01" + b"04" + ibm_tail() + offset.encode()
    assert hsm.ok(head + block(TPK, "4524") + tail + block(TPK, "777111")) == new_offset
    assert hsm.error(head + block(TPK, "4599") + tail + block(TPK, "777111")) == "01"
    assert hsm.error(b"DU002" + tpk + pvk + b"05" + block(TPK, "4524") + tail + block(TPK, "777111")) == "24"


def test_ja_account_forms_and_optional_pin_length(hsm):
    acct = ACCOUNT.encode()
    full = ("000000" + ACCOUNT).encode()  # 18-digit full-account form
    for message, length in ((b"JA" + acct + b"06", 6), (b"JA" + acct, 4), (b"JA" + full + b"08", 8),
                            (b"JA" + full, 4), (b"JA" + acct + b"12%00", 12)):
        pin = pin_from_variant_lmk(hsm.ok(message), ACCOUNT)
        assert len(pin) == length and pin.isdigit(), message
    assert hsm.error(b"JA" + acct[:-1]) == "15"
    assert hsm.error(b"JA" + acct + b"03") == "24"
    assert hsm.error(b"JA" + acct + b"13") == "24"
