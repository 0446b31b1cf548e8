"""Known answers of the DUKPT commands against the published ANSI X9.24 test vectors.

TDES (X9.24-1 Annex A): BDK 0123456789ABCDEFFEDCBA9876543210, KSN FFFF9876543210E0000n, PIN
1234, PAN 4012345678909 -> encrypted PIN blocks 1B9C1845EB993A7A (n=1), 10A01C8D02C69107
(n=2), 18DC07B94797B466 (n=3), PIN key for n=1 042666B49184CF5C68DE9628D0397B36.
AES (X9.24-3-2017): BDK FEDCBA9876543210F1F1F1F1F1F1F1F1, IKID 1234567890123456; counter 1:
PIN key AF8CB133A78F8DC2D1359F18527593FB, MAC generation key A2DC23DE6FDE0824A2BC321E08E4B8B7;
counter 2: PIN key D30BDC73EC9714B000BEC66BDB7B6D09.
"""

from __future__ import annotations

import psec
import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from psec import des, pinblock

from hsmcloud.appliances.payshield import dukpt

from payshield_inprocess import Host, under_keyblock_lmk, under_variant_lmk

BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "4012345678909"
ACCOUNT = PAN[-13:-1]
KSN = "FFFF9876543210E0000{}"
PUBLISHED_BLOCKS = {1: "1B9C1845EB993A7A", 2: "10A01C8D02C69107", 3: "18DC07B94797B466"}
PIN_KEY_1 = bytes.fromhex("042666B49184CF5C68DE9628D0397B36")
ZPK = bytes.fromhex("5151515151515151A1A1A1A1A1A1A1A1")
PVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TABLE = "0123456789012345"
AES_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
AES_KSN = "1234567890123456000000{:02X}"
AES_PIN_KEYS = {1: "AF8CB133A78F8DC2D1359F18527593FB", 2: "D30BDC73EC9714B000BEC66BDB7B6D09"}
AES_MAC_KEY_1 = bytes.fromhex("A2DC23DE6FDE0824A2BC321E08E4B8B7")


@pytest.fixture(scope="module")
def hsm() -> Host:
    return Host()


def test_key_derivation_matches_the_published_vectors():
    assert dukpt.tdes_ipek(BDK, bytes.fromhex(KSN.format(0))).hex().upper() == "6AC292FAA1315B4D858AB3A3D7D5933A"
    assert dukpt.tdes_pin_key(BDK, bytes.fromhex(KSN.format(1))) == PIN_KEY_1
    ksn1 = bytes.fromhex(AES_KSN.format(1))
    assert dukpt.aes_initial_key(AES_BDK, ksn1[:8]).hex().upper() == "1273671EA26AC29AFA4D1084127652A1"
    assert dukpt.aes_transaction_key(AES_BDK, ksn1).hex().upper() == "4F21B565BAD9835E112B6465635EAE44"
    assert dukpt.aes_working_key(AES_BDK, ksn1, dukpt.KEY_USAGE_PIN).hex().upper() == AES_PIN_KEYS[1]
    assert dukpt.aes_working_key(AES_BDK, ksn1, dukpt.KEY_USAGE_MAC_GENERATION) == AES_MAC_KEY_1
    ksn2 = bytes.fromhex(AES_KSN.format(2))
    assert dukpt.aes_working_key(AES_BDK, ksn2, dukpt.KEY_USAGE_PIN).hex().upper() == AES_PIN_KEYS[2]


def test_ci_and_g0_translate_published_dukpt_pin_blocks_to_a_zpk(hsm):
    bdk = under_variant_lmk(BDK, "009").encode()
    zpk = under_variant_lmk(ZPK, "001").encode()
    for counter, published in PUBLISHED_BLOCKS.items():
        ksn = KSN.format(counter).encode()
        data = hsm.ok(b"CI" + bdk + zpk + b"605" + ksn + published.encode() + b"01" + ACCOUNT.encode())
        assert data[:2] == "04" and data[-2:] == "01"
        assert pinblock.decode_pinblock_iso_0(des.decrypt_tdes_ecb(ZPK, bytes.fromhex(data[2:18])), PAN) == "1234"
        data = hsm.ok(b"G0" + bdk + zpk + b"605" + ksn + published.encode() + b"0147" + ACCOUNT.encode())
        assert pinblock.decode_pinblock_iso_3(des.decrypt_tdes_ecb(ZPK, bytes.fromhex(data[2:18])), PAN) == "1234"
    # Another device's KSN decrypts to garbage: not a valid ISO 0 block for this account.
    ksn = b"FFFF9876543211E00001"
    assert hsm.error(b"CI" + bdk + zpk + b"605" + ksn + PUBLISHED_BLOCKS[1].encode() + b"01" + ACCOUNT.encode()) == "20"
    assert hsm.error(b"CI" + bdk + zpk + b"615" + KSN.format(1).encode() + b"1B9C1845EB993A7A01" + ACCOUNT.encode()) == "15"
    assert hsm.error(b"CI" + bdk + zpk + b"605" + KSN.format(1).encode() + b"1B9C1845EB993A7A99" + ACCOUNT.encode()) == "23"
    # A ZPK given as the BDK: wrong key type (the decrypted key has bad parity).
    assert hsm.error(b"CI" + zpk + zpk + b"605" + KSN.format(1).encode() + b"1B9C1845EB993A7A01" + ACCOUNT.encode()) == "10"


def test_ck_cm_go_gq_verify_dukpt_pins(hsm):
    bdk = under_variant_lmk(BDK, "009").encode()
    pvk = under_variant_lmk(PVK, "002").encode()
    validation = ACCOUNT
    offset = psec.pin.generate_ibm3624_offset(PVK, TABLE, "1234", validation, 0, 12, "F").ljust(12, "F").encode()
    pvv = psec.pin.generate_visa_pvv(PVK, "1", "1234", PAN).encode()
    ksn, blk = KSN.format(2).encode(), PUBLISHED_BLOCKS[2].encode()
    ibm = b"04" + ACCOUNT.encode() + TABLE.encode() + validation.encode()
    assert hsm.ok(b"CK" + bdk + pvk + b"605" + ksn + blk + ibm + offset) == ""
    bad_offset = b"9999FFFFFFFF" if offset[:4] != b"9999" else b"8888FFFFFFFF"
    assert hsm.error(b"CK" + bdk + pvk + b"605" + ksn + blk + ibm + bad_offset) == "01"
    assert hsm.ok(b"CM" + bdk + pvk + b"605" + ksn + blk + ACCOUNT.encode() + b"1" + pvv) == ""
    assert hsm.error(b"CM" + bdk + pvk + b"605" + ksn + blk + ACCOUNT.encode() + b"2" + pvv) == "01"
    assert hsm.ok(b"GO0" + bdk + pvk + b"605" + ksn + blk + b"01" + ibm + offset) == ""
    assert hsm.ok(b"GQ0" + bdk + pvk + b"605" + ksn + blk + b"01" + ACCOUNT.encode() + b"1" + pvv) == ""
    assert hsm.error(b"GQ2" + bdk + pvk + b"605" + ksn + blk + b"01" + ACCOUNT.encode() + b"1" + pvv) == "15"


def _x919_request_mac(data: bytes) -> str:
    # Transaction key 1 = the published PIN key with the PIN variant removed; MAC request variant.
    pin_variant = bytes.fromhex("00000000000000FF00000000000000FF")
    mac_variant = bytes.fromhex("000000000000FF00000000000000FF00")
    key = bytes(a ^ b ^ c for a, b, c in zip(PIN_KEY_1, pin_variant, mac_variant))
    return psec.mac.generate_retail_mac(key[:8], key[8:], data, 1, 4).hex().upper()


def test_dukpt_mac_verification_in_go_gq_and_gw(hsm):
    bdk = under_variant_lmk(BDK, "009").encode()
    pvk = under_variant_lmk(PVK, "002").encode()
    message = b"0200 4012345678909 000000010000 transaction message"
    mac = _x919_request_mac(message).encode()
    length = b"%04X" % len(message)
    ksn, blk = KSN.format(1).encode(), PUBLISHED_BLOCKS[1].encode()
    pvv = psec.pin.generate_visa_pvv(PVK, "1", "1234", PAN).encode()
    head = b"GQ1" + bdk + pvk + b"605" + ksn + blk + b"01" + ACCOUNT.encode() + b"1" + pvv
    assert hsm.ok(head + mac + length + message) == ""
    assert hsm.error(head + mac + length + message[:-1] + b"?") == "01"
    assert hsm.ok(b"GW1" + bdk + b"605" + ksn + length + message + mac) == ""
    wrong = (b"0" if mac[:1] != b"0" else b"1") + mac[1:]
    assert hsm.error(b"GW1" + bdk + b"605" + ksn + length + message + wrong) == "01"
    # Mode 0: the host's response MAC, under the response variant.
    response_variant = bytes.fromhex("00000000FF00000000000000FF000000")
    pin_variant = bytes.fromhex("00000000000000FF00000000000000FF")
    key = bytes(a ^ b ^ c for a, b, c in zip(PIN_KEY_1, pin_variant, response_variant))
    expected = psec.mac.generate_retail_mac(key[:8], key[8:], message, 1, 4).hex().upper()
    assert hsm.ok(b"GW0" + bdk + b"605" + ksn + length + message) == expected
    assert hsm.error(b"GW0" + bdk + b"605" + ksn + b"0000") == "80"


def test_aes_dukpt_g0_and_gw_with_the_x9_24_3_vectors():
    hsm = Host()
    bdk = under_keyblock_lmk(hsm.keyblock_key, AES_BDK, "B0", "A", "X").encode()
    zpk = under_keyblock_lmk(hsm.keyblock_key, ZPK, "72", "T", "B").encode()
    pan = "4111111111111111"
    account = pan[-13:-1].encode()
    for counter, key in AES_PIN_KEYS.items():
        encrypted = pinblock.encipher_pinblock_iso_4(bytes.fromhex(key), "123456", pan).hex().upper().encode()
        message = (b"G0" + bdk + zpk + b"A05" + AES_KSN.format(counter).encode() + encrypted + b"4801" + account
                   + b"16" + pan.encode() + b"%01")
        data = hsm.ok(message)
        assert data[:2] == "06" and data[-2:] == "01"
        assert pinblock.decode_pinblock_iso_0(des.decrypt_tdes_ecb(ZPK, bytes.fromhex(data[2:18])), pan) == "123456"
    # To an AES ZPK in ISO format 4.
    aes_zpk = bytes(range(16))
    zpk_aes = under_keyblock_lmk(hsm.keyblock_key, aes_zpk, "P0", "A", "B").encode()
    encrypted = pinblock.encipher_pinblock_iso_4(bytes.fromhex(AES_PIN_KEYS[1]), "98765", pan).hex().upper().encode()
    data = hsm.ok(b"G0" + bdk + zpk_aes + b"A05" + AES_KSN.format(1).encode() + encrypted + b"4848" + account
                  + b"16" + pan.encode() + b"%01")
    assert data[:2] == "05" and data[-2:] == "48" and len(data) == 2 + 32 + 2
    assert pinblock.decipher_pinblock_iso_4(aes_zpk, bytes.fromhex(data[2:34]), pan) == "98765"
    # ISO 4 is the only AES DUKPT PIN block format.
    encrypted = pinblock.encipher_pinblock_iso_4(bytes.fromhex(AES_PIN_KEYS[1]), "1234", pan).hex().upper().encode()
    assert hsm.error(b"G0" + bdk + zpk + b"A05" + AES_KSN.format(1).encode() + encrypted + b"0101" + account + b"%01") == "23"
    message = b"AES DUKPT request message"
    mac = cmac.CMAC(algorithms.AES(AES_MAC_KEY_1))
    mac.update(message)
    expected = mac.finalize()[:8].hex().upper().encode()
    length = b"%04X" % len(message)
    assert hsm.ok(b"GW1" + bdk + b"A05" + AES_KSN.format(1).encode() + length + message + expected + b"%01") == ""
    assert hsm.error(b"GW1" + bdk + b"A05" + AES_KSN.format(2).encode() + length + message + expected + b"%01") == "01"


def test_aes_dukpt_pin_and_mac_verification_in_gq_and_go():
    hsm = Host()
    bdk = under_keyblock_lmk(hsm.keyblock_key, AES_BDK, "41", "A", "X").encode()
    pvk = under_keyblock_lmk(hsm.keyblock_key, PVK, "V2").encode()
    ibm_pvk = under_keyblock_lmk(hsm.keyblock_key, PVK, "V1").encode()
    pan = "4111111111111111"
    account = pan[-13:-1]
    encrypted = pinblock.encipher_pinblock_iso_4(bytes.fromhex(AES_PIN_KEYS[1]), "2468", pan).hex().upper().encode()
    pvv = psec.pin.generate_visa_pvv(PVK, "1", "2468", pan).encode()
    message = b"AES DUKPT authorisation"
    mac = cmac.CMAC(algorithms.AES(AES_MAC_KEY_1))
    mac.update(message)
    tag = mac.finalize()[:8].hex().upper().encode()
    ksn = AES_KSN.format(1).encode()
    gq = b"GQ1" + bdk + pvk + b"A05" + ksn + encrypted + b"48" + account.encode() + b"1" + pvv + b"16" + pan.encode()
    assert hsm.ok(gq + tag + b"%04X" % len(message) + message + b"%01") == ""
    assert hsm.error(gq + tag + b"%04X" % len(message) + message[:-1] + b"!" + b"%01") == "01"
    offset = psec.pin.generate_ibm3624_offset(PVK, TABLE, "2468", account, 0, 12, "F").ljust(12, "F").encode()
    go = (b"GO0" + bdk + ibm_pvk + b"A05" + ksn + encrypted + b"48" + b"04" + account.encode() + TABLE.encode()
          + account.encode() + offset + b"16" + pan.encode() + b"%01")
    assert hsm.ok(go) == ""
