"""The expected-value oracle reproduces published vectors, so what it computes for random
inputs can be trusted as the soak and property tests' reference."""

from __future__ import annotations

from psec import des, pinblock

import payshield_oracle as o
from payshield_helpers import TEST_LMK

BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_tdes_dukpt_matches_the_x9_24_1_annex_a_vectors():
    assert o.dukpt_ipek(BDK, bytes.fromhex("FFFF9876543210E00000")).hex().upper() == "6AC292FAA1315B4D858AB3A3D7D5933A"
    assert o.dukpt_pin_key(BDK, bytes.fromhex("FFFF9876543210E00001")).hex().upper() == (
        "042666B49184CF5C68DE9628D0397B36")
    for counter, published in ((1, "1B9C1845EB993A7A"), (2, "10A01C8D02C69107"), (3, "18DC07B94797B466")):
        key = o.dukpt_pin_key(BDK, bytes.fromhex(f"FFFF9876543210E0000{counter}"))
        assert des.encrypt_tdes_ecb(key, pinblock.encode_pinblock_iso_0("1234", "4012345678909")).hex().upper() == published


def test_pin_and_card_values_match_psecs_published_examples():
    assert o.pvv(BDK, "3", "4524", "1122334455667788"[-13:-1]) == "4021"
    assert o.cvv(BDK, "1234567890123456", "9912", "220") == "170"
    assert o.kcv(BDK, 2) == "08D7"
    assert o.ibm_pin(BDK, "1234567890123456", "0000", "1122334455667788") == "4524"


def test_variant_lmk_fields_match_the_thalessim_cvk_vector():
    cvk = o.from_variant_lmk("U9B4934384B19946B040CD702B4D58145", "402", TEST_LMK)
    assert o.cvv(cvk, "4123456789012345", "8701", "101") == "561"


def test_iso_format_1_blocks_round_trip_and_carry_the_length():
    block = o.encode_pin_block("05", "123456", "000000000000")
    assert block.hex().upper().startswith("16123456")
    assert o.decode_pin_block("05", block, "999999999999") == "123456"
