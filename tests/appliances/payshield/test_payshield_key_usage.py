"""Key usage fidelity: Thales' numeric key-block usages work where their TR-31 equivalents do,
unknown usages and modes are refused at generation, and the variant key type table is the
manual's (other codes are error 04)."""

from __future__ import annotations

import psec
import pytest
from psec import des, pinblock

from payshield_inprocess import Host, under_keyblock_lmk, under_variant_lmk

ZMK = bytes.fromhex("F1F1F1F1F1F1F1F1E0E0E0E0E0E0E0E0")
ZPK = bytes.fromhex("5151515151515151A1A1A1A1A1A1A1A1")
CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "1122334455667788"
ACCOUNT = PAN[-13:-1].encode()


@pytest.fixture(scope="module")
def hsm() -> Host:
    return Host()


def test_a_zpk_generated_with_the_thales_usage_72_works_in_pin_commands(hsm):
    zmk = under_keyblock_lmk(hsm.keyblock_key, ZMK, "52", "T", "B").encode()
    data = hsm.ok(b"A01FFFS" + zmk + b"X" + b"#72T2B00E00%01")
    block_length = int(data[2:6])
    under_lmk, rest = data[: 1 + block_length], data[1 + block_length :]
    assert under_lmk.startswith("S1") and under_lmk[6:8] == "72"
    under_zmk, check = rest[:-6], rest[-6:]
    clear = des.decrypt_tdes_ecb(ZMK, bytes.fromhex(under_zmk[1:]))
    assert check == des.generate_kcv(clear, 3).hex().upper()
    zpk = under_lmk.encode()
    pin_block = des.encrypt_tdes_ecb(clear, pinblock.encode_pinblock_iso_0("4321", PAN)).hex().upper().encode()
    lmk_pin = hsm.ok(b"JE" + zpk + pin_block + b"01" + ACCOUNT + b"%01").encode()
    again = hsm.ok(b"JG" + zpk + b"01" + ACCOUNT + lmk_pin + b"%01")
    assert pinblock.decode_pinblock_iso_0(des.decrypt_tdes_ecb(clear, bytes.fromhex(again)), PAN) == "4321"
    # Exported as TR-31, the numeric usage becomes its TR-31 equivalent P0.
    exported = hsm.ok(b"A8FFF" + zmk + zpk + b"R%01")
    header, key = psec.tr31.unwrap(ZMK, exported[1:-6])
    assert key == clear and header.key_usage == "P0"


def test_numeric_usages_of_tpk_cvk_and_their_refusal_elsewhere(hsm):
    cvk = under_keyblock_lmk(hsm.keyblock_key, CVK, "13").encode()
    assert hsm.ok(b"CW" + cvk + b"1234567890123456;9912220%01") == psec.cvv.generate_cvv(CVK, "1234567890123456", "9912", "220")
    tpk = under_keyblock_lmk(hsm.keyblock_key, ZPK, "71").encode()
    zpk = under_keyblock_lmk(hsm.keyblock_key, ZPK, "72").encode()
    pin_block = des.encrypt_tdes_ecb(ZPK, pinblock.encode_pinblock_iso_0("1234", PAN)).hex().upper().encode()
    assert hsm.ok(b"JC" + tpk + pin_block + b"01" + ACCOUNT + b"%01")
    # A TPK (71) is not a ZPK, a CVK (13) is not a PIN key.
    assert hsm.error(b"JE" + tpk + pin_block + b"01" + ACCOUNT + b"%01") == "A6"
    assert hsm.error(b"JE" + cvk + pin_block + b"01" + ACCOUNT + b"%01") == "A6"
    assert hsm.ok(b"JE" + zpk + pin_block + b"01" + ACCOUNT + b"%01")


def test_a0_refuses_unknown_usages_and_modes_of_use(hsm):
    assert hsm.error(b"A00FFFS#Z9T2N00E00%01") == "A6"
    assert hsm.error(b"A00FFFS#72T2Q00E00%01") == "A8"
    assert hsm.error(b"A00FFFS#72Z9N00E00%01") == "A7"
    assert hsm.ok(b"A00FFFS#41T2X00N00%01").startswith("S1")  # a BDK with Thales usage 41


def test_variant_key_type_table(hsm):
    for key_type in (b"000", b"001", b"002", b"402", b"009", b"609", b"809", b"109", b"709", b"00A", b"00B",
                     b"30B", b"70D", b"80D"):
        assert hsm.ok(b"A00" + key_type + b"U")[0] == "U", key_type
    for key_type in (b"005", b"900", b"00E", b"50A", b"0FF"):
        assert hsm.error(b"A00" + key_type + b"U") == "04", key_type
    # A key made under one key type does not open as another (variant LMKs separate them).
    zpk = under_variant_lmk(ZPK, "001").encode()
    assert hsm.error(b"BU021" + zpk) == "10"  # read as a key type 002 key: parity error
    assert hsm.ok(b"BU011" + zpk) == des.generate_kcv(ZPK, 3).hex().upper()


def test_nc_and_no_report_the_firmware_number_in_the_devices_format(hsm):
    data = hsm.ok(b"NC")
    assert data[-9:] == "1500-1803" and data[:6] == des.generate_kcv(
        bytes.fromhex("01010101010101017902CD1FD36EF8BA"), 3
    ).hex().upper()
    assert hsm.ok(b"NO00")[6:15] == "1500-1803"
