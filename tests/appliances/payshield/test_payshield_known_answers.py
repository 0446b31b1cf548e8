"""Known-answer tests of the host commands.

Every expected value is computed here with psec / pyemv / cryptography directly, or taken
from a published vector; the appliance's own code never produces an expected value.
"""

from __future__ import annotations

import os

import psec
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from psec import des, pinblock
from pyemv import ac, kd

from payshield_helpers import (
    TEST_LMK,
    allocate,
    authorize,
    config,
    error,
    guarded,
    host,
    load_key,
    load_lmk,
    ok,
    running,
)

K = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")  # psec's documented example key
ZMK = bytes.fromhex("F1F1F1F1F1F1F1F1E0E0E0E0E0E0E0E0")
TPK = bytes.fromhex("3131313131313131C1C1C1C1C1C1C1C1")
ZPK1 = bytes.fromhex("5151515151515151A1A1A1A1A1A1A1A1")
ZPK2 = bytes.fromhex("7070707070707070B0B0B0B0B0B0B0B0")
# psec docstring vector: PVKI 3, PIN 4524, PAN 1122334455667788 -> PVV 4021.
PAN = "1122334455667788"
ACCOUNT = PAN[-13:-1]


def kcv(key: bytes, n: int = 3) -> str:
    return des.generate_kcv(key, n).hex().upper()


def enc_pin_block(key: bytes, pin: str, pan: str = PAN) -> str:
    return des.encrypt_tdes_ecb(key, pinblock.encode_pinblock_iso_0(pin, pan)).hex().upper()


async def ready(appliance, material: bytes = TEST_LMK) -> None:
    await allocate(appliance)
    await load_lmk(appliance, material)


def test_nc_reports_the_lmk_check_value_and_firmware(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            client = await host(appliance)
            data = ok(await client.call(b"NC"), b"NC")
            await client.close()
        assert data == kcv(TEST_LMK[:16]) + "0" * 10 + "1500-1803"

    guarded(scenario())


def test_variant_lmk_encryption_matches_the_published_vectors(tmp_path):
    """External vector: key 0123..3210 under LMK 0101..01 7902CD1FD36EF8BA, variants 1 and 2.

    Our key types 100 and 200 use LMK pair 04-05, so that pair is set to the vector's LMK.
    """
    material = TEST_LMK[:32] + TEST_LMK[:16] + TEST_LMK[48:]

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance, material)
            client = await host(appliance)
            first = await client.call(b"BUFF1UA12049CC30D20BE0DC6E5E2A98FADE9E;100")
            second = await client.call(b"BUFF1UBD7F64B9F9875B731BAED72101DEA65B;200")
            await client.close()
        assert ok(first, b"BU") == "08D7B4"
        assert ok(second, b"BU") == "08D7B4"

    guarded(scenario())


def test_cw_and_cy_match_the_thalessim_vector(tmp_path):
    """ThalesSim HostCommandTests: CW U9B49...8145 4123456789012345;8701101 -> 561 (test LMK)."""

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            client = await host(appliance)
            cvk = b"U9B4934384B19946B040CD702B4D58145"
            assert ok(await client.call(b"CW" + cvk + b"4123456789012345;8701101"), b"CW") == "561"
            assert ok(await client.call(b"CY" + cvk + b"561" + b"4123456789012345;8701101"), b"CY") == ""
            assert error(await client.call(b"CY" + cvk + b"562" + b"4123456789012345;8701101"), b"CY") == "01"
            await client.close()

    guarded(scenario())


def test_cw_matches_psec_cvv(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            cvk = (await load_key(appliance, "402", K)).encode()
            client = await host(appliance)
            cvv = ok(await client.call(b"CW" + cvk + b"1234567890123456;9912220"), b"CW")
            await client.close()
        assert cvv == psec.cvv.generate_cvv(K, "1234567890123456", "9912", "220") == "170"

    guarded(scenario())


def test_a0_generates_and_exports_under_a_zmk(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            zmk = (await load_key(appliance, "000", ZMK)).encode()
            client = await host(appliance)
            data = ok(await client.call(b"A01001U" + zmk + b"X"), b"A0")
            under_lmk, under_zmk, check = data[:33], data[33:66], data[66:]
            assert under_lmk[0] == "U" and under_zmk[0] == "X" and len(check) == 6
            clear = des.decrypt_tdes_ecb(ZMK, bytes.fromhex(under_zmk[1:]))
            assert check == kcv(clear)
            assert ok(await client.call(b"BU011" + under_lmk.encode()), b"BU") == kcv(clear)
            single = ok(await client.call(b"A00002Z"), b"A0")
            assert len(single) == 16 + 6
            await client.close()

    guarded(scenario())


def test_a6_imports_and_a8_exports_under_a_zmk(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            zmk = (await load_key(appliance, "000", ZMK)).encode()
            under_zmk = "X" + des.encrypt_tdes_ecb(ZMK, K).hex().upper()
            client = await host(appliance)
            data = ok(await client.call(b"A6001" + zmk + under_zmk.encode() + b"U"), b"A6")
            assert data[0] == "U" and data[33:] == kcv(K)
            exported = ok(await client.call(b"A8001" + zmk + data[:33].encode() + b"X"), b"A8")
            assert exported == under_zmk + kcv(K)
            await client.close()

    guarded(scenario())


def test_tr31_export_and_import(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            zmk = (await load_key(appliance, "000", ZMK)).encode()
            zpk = (await load_key(appliance, "001", ZPK1)).encode()
            client = await host(appliance)
            exported = ok(await client.call(b"A8001" + zmk + zpk + b"R"), b"A8")
            block, check = exported[:-6], exported[-6:]
            assert block[0] == "R" and check == kcv(ZPK1)
            header, clear = psec.tr31.unwrap(ZMK, block[1:])
            assert clear == ZPK1 and header.key_usage == "P0" and header.version_id == "B"
            incoming = psec.tr31.wrap(ZMK, "B0000P0TE00N0000", ZPK2)
            data = ok(await client.call(b"A6001" + zmk + b"R" + incoming.encode() + b"U"), b"A6")
            assert data[-6:] == kcv(ZPK2)
            wrong_usage = psec.tr31.wrap(ZMK, "B0000C0TE00N0000", ZPK2)
            assert error(await client.call(b"A6001" + zmk + b"R" + wrong_usage.encode() + b"U"), b"A6") == "A6"
            tampered = incoming[:-1] + ("0" if incoming[-1] != "0" else "1")
            assert error(await client.call(b"A6001" + zmk + b"R" + tampered.encode() + b"U"), b"A6") in ("A4", "83")
            await client.close()

    guarded(scenario())


def test_a4_and_gg_form_keys_from_components_only_when_authorised(tmp_path):
    c1, c2, c3 = (des.adjust_key_parity(os.urandom(16)) for _ in range(3))

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            f1, f2, f3 = [(await load_key(appliance, "000", c)).encode() for c in (c1, c2, c3)]
            client = await host(appliance)
            assert error(await client.call(b"A42000U" + f1 + f2), b"A4") == "17"
            assert error(await client.call(b"GG" + f1 + f2 + f3), b"GG") == "17"
            await authorize(appliance)
            formed = ok(await client.call(b"A42000U" + f1 + f2), b"A4")
            expected = des.adjust_key_parity(bytes(a ^ b for a, b in zip(c1, c2)))
            assert formed[33:] == kcv(expected)
            zmk = ok(await client.call(b"GG" + f1 + f2 + f3), b"GG")
            expected3 = des.adjust_key_parity(bytes(a ^ b ^ c for a, b, c in zip(c1, c2, c3)))
            assert zmk[33:] == kcv(expected3)
            assert error(await client.call(b"A41000U" + f1), b"A4") == "03"
            await client.close()

    guarded(scenario())


def _decode_iso1(block: bytes) -> str:
    text = block.hex().upper()
    assert text[0] == "1"
    return text[2 : 2 + int(text[1], 16)]


def test_ca_and_cc_translate_pin_blocks(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            tpk = (await load_key(appliance, "002", TPK)).encode()
            zpk1 = (await load_key(appliance, "001", ZPK1)).encode()
            zpk2 = (await load_key(appliance, "001", ZPK2)).encode()
            client = await host(appliance)
            block = enc_pin_block(TPK, "12345").encode()
            data = ok(await client.call(b"CA" + tpk + zpk1 + b"12" + block + b"0101" + ACCOUNT.encode()), b"CA")
            assert data[:2] == "05" and data[-2:] == "01"
            clear = des.decrypt_tdes_ecb(ZPK1, bytes.fromhex(data[2:18]))
            assert pinblock.decode_pinblock_iso_0(clear, PAN) == "12345"
            data = ok(await client.call(b"CA" + tpk + zpk1 + b"12" + block + b"0147" + ACCOUNT.encode()), b"CA")
            clear = des.decrypt_tdes_ecb(ZPK1, bytes.fromhex(data[2:18]))
            assert pinblock.decode_pinblock_iso_3(clear, PAN) == "12345"
            zblock = enc_pin_block(ZPK1, "987654").encode()
            data = ok(await client.call(b"CC" + zpk1 + zpk2 + b"12" + zblock + b"0105" + ACCOUNT.encode()), b"CC")
            assert _decode_iso1(des.decrypt_tdes_ecb(ZPK2, bytes.fromhex(data[2:18]))) == "987654"
            # PIN longer than the maximum; bad PIN block format code; PIN block of another account.
            assert error(await client.call(b"CC" + zpk1 + zpk2 + b"04" + zblock + b"0101" + ACCOUNT.encode()), b"CC") == "24"
            assert error(await client.call(b"CC" + zpk1 + zpk2 + b"12" + zblock + b"9901" + ACCOUNT.encode()), b"CC") == "23"
            assert error(await client.call(b"CC" + zpk1 + zpk2 + b"12" + zblock + b"0101" + b"999999999999"), b"CC") == "20"
            await client.close()

    guarded(scenario())


def test_visa_pvv_commands_dc_ec_fw_dg_and_lmk_pins(tmp_path):
    expected_pvv = psec.pin.generate_visa_pvv(K, "3", "4524", PAN)
    assert expected_pvv == "4021"  # psec's published example

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            tpk = (await load_key(appliance, "002", TPK)).encode()
            zpk = (await load_key(appliance, "001", ZPK1)).encode()
            pvk = (await load_key(appliance, "002", K)).encode()
            client = await host(appliance)
            acct = ACCOUNT.encode()
            tblock, zblock = enc_pin_block(TPK, "4524").encode(), enc_pin_block(ZPK1, "4524").encode()
            assert ok(await client.call(b"DC" + tpk + pvk + tblock + b"01" + acct + b"34021"), b"DC") == ""
            assert error(await client.call(b"DC" + tpk + pvk + tblock + b"01" + acct + b"34022"), b"DC") == "01"
            assert ok(await client.call(b"EC" + zpk + pvk + zblock + b"01" + acct + b"34021"), b"EC") == ""
            assert error(await client.call(b"EC" + zpk + pvk + zblock + b"01" + acct + b"24021"), b"EC") == "01"
            assert ok(await client.call(b"FW001" + zpk + pvk + zblock + b"01" + acct + b"3"), b"FW") == "4021"
            # PIN block under ZPK -> PIN under LMK -> PVV (DG) and back to a ZPK block (JG).
            lmk_pin = ok(await client.call(b"JE" + zpk + zblock + b"01" + acct), b"JE").encode()
            assert ok(await client.call(b"DG" + pvk + lmk_pin + acct + b"3"), b"DG") == "4021"
            again = ok(await client.call(b"JG" + zpk + b"01" + acct + lmk_pin), b"JG")
            assert pinblock.decode_pinblock_iso_0(des.decrypt_tdes_ecb(ZPK1, bytes.fromhex(again)), PAN) == "4524"
            lmk_pin2 = ok(await client.call(b"JC" + tpk + tblock + b"01" + acct), b"JC").encode()
            assert ok(await client.call(b"DG" + pvk + lmk_pin2 + acct + b"3"), b"DG") == "4021"
            random_pin = ok(await client.call(b"JA" + acct + b"06"), b"JA").encode()
            block = ok(await client.call(b"JG" + zpk + b"01" + acct + random_pin), b"JG")
            pin = pinblock.decode_pinblock_iso_0(des.decrypt_tdes_ecb(ZPK1, bytes.fromhex(block)), PAN)
            assert len(pin) == 6 and pin.isdigit()
            assert error(await client.call(b"DG" + pvk + lmk_pin + b"000000000000" + b"3"), b"DG") == "14"
            await client.close()

    guarded(scenario())


def test_ibm_offset_verification_da_and_ea(tmp_path):
    table = "1234567890123456"
    validation_field = "11223344556N"
    validation = "11223344556" + ACCOUNT[-5:]
    offset = psec.pin.generate_ibm3624_offset(K, table, "4524", validation, 0, 16, "F")

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            tpk = (await load_key(appliance, "002", TPK)).encode()
            zpk = (await load_key(appliance, "001", ZPK1)).encode()
            pvk = (await load_key(appliance, "002", K)).encode()
            client = await host(appliance)
            tail = b"04" + ACCOUNT.encode() + table.encode() + validation_field.encode()
            good, bad = offset.ljust(12, "F").encode(), ("%04d" % ((int(offset) + 1) % 10000)).ljust(12, "F").encode()
            tblock, zblock = enc_pin_block(TPK, "4524").encode(), enc_pin_block(ZPK1, "4524").encode()
            assert ok(await client.call(b"DA" + tpk + pvk + b"12" + tblock + b"01" + tail + good), b"DA") == ""
            assert error(await client.call(b"DA" + tpk + pvk + b"12" + tblock + b"01" + tail + bad), b"DA") == "01"
            assert ok(await client.call(b"EA" + zpk + pvk + b"12" + zblock + b"01" + tail + good), b"EA") == ""
            bad_table = b"04" + ACCOUNT.encode() + b"12345678901234AB" + validation_field.encode()
            assert error(await client.call(b"EA" + zpk + pvk + b"12" + zblock + b"01" + bad_table + good), b"EA") == "25"
            await client.close()

    guarded(scenario())


def test_mac_generation_and_verification_m6_m8(tmp_path):
    data = bytes.fromhex("1234567890ABCDEF")
    retail = psec.mac.generate_retail_mac(K[:8], K[8:], data, 2)
    cbc = psec.mac.generate_cbc_mac(K, data, 2)

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            tak = (await load_key(appliance, "003", K)).encode()
            client = await host(appliance)
            msg = b"0010" + data.hex().upper().encode()
            assert ok(await client.call(b"M60113" + b"2" + b"003" + tak + msg), b"M6") == retail.hex().upper()
            assert ok(await client.call(b"M60111" + b"2" + b"003" + tak + msg), b"M6") == cbc.hex().upper()
            assert ok(await client.call(b"M60103" + b"2" + b"003" + tak + msg), b"M6") == retail[:4].hex().upper()
            binary = b"0008" + data
            assert ok(await client.call(b"M60013" + b"2" + b"003" + tak + binary), b"M6") == retail.hex().upper()
            mac = retail.hex().upper().encode()
            assert ok(await client.call(b"M80113" + b"2" + b"003" + tak + msg + mac), b"M8") == ""
            bad = b"0" + mac[1:] if mac[:1] != b"0" else b"1" + mac[1:]
            assert error(await client.call(b"M80113" + b"2" + b"003" + tak + msg + bad), b"M8") == "01"
            assert error(await client.call(b"M60113" + b"0" + b"003" + tak + b"0006ABCDEF"), b"M6") == "80"
            await client.close()

    guarded(scenario())


def test_data_encryption_m0_m2(tmp_path):
    plain = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    iv = bytes.fromhex("0102030405060708")

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            dek = (await load_key(appliance, "00B", K)).encode()
            client = await host(appliance)
            ecb = ok(await client.call(b"M0" + b"00" + b"11" + b"00B" + dek + b"0020" + plain.hex().upper().encode()), b"M0")
            assert ecb == "0020" + des.encrypt_tdes_ecb(K, plain).hex().upper()
            cbc = ok(
                await client.call(b"M0" + b"01" + b"11" + b"00B" + dek + iv.hex().upper().encode() + b"0020" + plain.hex().upper().encode()),
                b"M0",
            )
            expected = des.encrypt_tdes_cbc(K, iv, plain)
            assert cbc == expected[-8:].hex().upper() + "0020" + expected.hex().upper()
            back = ok(
                await client.call(b"M2" + b"01" + b"10" + b"00B" + dek + iv.hex().upper().encode() + b"0020" + expected.hex().upper().encode()),
                b"M2",
            )
            assert back == expected[-8:].hex().upper() + "0010" + plain.decode("latin-1")
            assert error(await client.call(b"M0" + b"00" + b"11" + b"00B" + dek + b"0006" + b"ABCDEF"), b"M0") == "80"
            await client.close()

    guarded(scenario())


def test_kq_verifies_arqc_and_generates_arpc(tmp_path):
    pan, psn = "9901234567890123", "45"
    pan_psn = bytes.fromhex((pan + psn)[-16:])
    atc, un = bytes.fromhex("0042"), bytes.fromhex("A1B2C3D4")
    tx = bytes.fromhex("0000000010000000000000000840000000000008400901010012345678")
    arc = b"\x30\x30"
    icc_mk = kd.derive_icc_mk_a(K, pan, psn)
    sk_mc = kd.derive_common_sk(icc_mk, atc + b"\x00\x00" + un)
    arqc_mc = ac.generate_ac(sk_mc, tx, ac.PaddingType.EMV)
    arqc_visa = ac.generate_ac(icc_mk, tx, ac.PaddingType.VISA)

    def message(mode: bytes, scheme: bytes, mk: bytes, arqc: bytes, with_arc: bool) -> bytes:
        return (
            b"KQ" + mode + scheme + mk + pan_psn + atc + un + b"%02X" % len(tx) + tx + b";" + arqc
            + (arc if with_arc else b"")
        )

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            mk = (await load_key(appliance, "109", K)).encode()
            client = await host(appliance)
            response = await client.call(message(b"1", b"1", mk, arqc_mc, True))
            assert response[:4] == b"KR00" and response[4:] == ac.generate_arpc_1(sk_mc, arqc_mc, arc)
            assert (await client.call(message(b"0", b"0", mk, arqc_visa, False)))[:4] == b"KR00"
            response = await client.call(message(b"2", b"0", mk, bytes(8), True))
            assert response[4:] == ac.generate_arpc_1(icc_mk, bytes(8), arc)
            assert error(await client.call(message(b"0", b"1", mk, arqc_visa, False)), b"KQ") == "01"
            await client.close()

    guarded(scenario())


def test_keyblock_lmk_commands(tmp_path):
    lmk_key = os.urandom(32)
    aes_zmk = os.urandom(32)

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            loaded = await load_lmk(appliance, lmk_key, scheme="keyblock")
            mac = cmac.CMAC(algorithms.AES(lmk_key))
            mac.update(bytes(16))
            assert loaded["check_value"] == mac.finalize()[:3].hex().upper() + "0" * 10
            client = await host(appliance)
            generated = ok(await client.call(b"A00FFFS#P0T2N00E00"), b"A0")
            assert generated.startswith("S1") and generated[6:8] == "P0"
            cvk = (await load_key(appliance, "402", K)).encode()
            assert cvk.startswith(b"S1")
            assert ok(await client.call(b"CW" + cvk + b"1234567890123456;9912220"), b"CW") == "170"
            zmk = (await load_key(appliance, "000", aes_zmk, algorithm="A")).encode()
            exported = ok(await client.call(b"A8FFF" + zmk + cvk + b"R"), b"A8")
            header, clear = psec.tr31.unwrap(aes_zmk, exported[1:-6])
            assert clear == K and header.key_usage == "C0" and header.version_id == "D"
            assert exported[-6:] == kcv(K)
            # A CVK where a ZPK is expected: key usage error.
            block = enc_pin_block(K, "1234").encode()
            assert error(await client.call(b"JE" + cvk + block + b"01" + ACCOUNT.encode()), b"JE") == "A6"
            # A variant-scheme key under a key-block LMK.
            assert error(await client.call(b"CWU9B4934384B19946B040CD702B4D58145" + b"4123456789012345;8701101"), b"CW") == "26"
            await client.close()

    guarded(scenario())


def test_m0_binary_data_ending_like_an_lmk_identifier(tmp_path):
    """Binary data that happens to end in '%01' is data, not an LMK identifier."""
    data = b"ABCDE%01"

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            dek = (await load_key(appliance, "00B", K)).encode()
            client = await host(appliance)
            out = ok(await client.call(b"M0" + b"00" + b"01" + b"00B" + dek + b"0008" + data), b"M0")
            assert out == "0010" + des.encrypt_tdes_ecb(K, data).hex().upper()
            await client.close()

    guarded(scenario())
