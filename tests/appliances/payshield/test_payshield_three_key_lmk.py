"""Triple-length (3-key) variant LMKs: formed from admin cards, used by the host commands with
the Thales variant scheme on 24-byte LMK pairs."""

from __future__ import annotations

import os

import psec
from psec import des, pinblock

from hsmcloud.appliances.payshield import cards

from payshield_helpers import allocate, config, guarded, host, ok, running, tenant
from payshield_inprocess import Host, under_variant_lmk

CVK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
ZPK = bytes.fromhex("5151515151515151A1A1A1A1A1A1A1A1")
PAN = "1122334455667788"


def three_key_lmk() -> bytes:
    return des.adjust_key_parity(os.urandom(20 * 24))


def test_host_commands_under_a_three_key_variant_lmk():
    material = three_key_lmk()
    hsm = Host(variant_material=material)
    cvk = under_variant_lmk(CVK, "402", material).encode()
    assert hsm.ok(b"CW" + cvk + b"1234567890123456;9912220") == "170"  # psec's published CVV
    # NC: 6 KCV digits of pair 00-01 (a triple-length key) and zeros.
    assert hsm.ok(b"NC")[:16] == des.generate_kcv(material[:24], 3).hex().upper() + "0" * 10
    zpk = under_variant_lmk(ZPK, "001", material).encode()
    block = des.encrypt_tdes_ecb(ZPK, pinblock.encode_pinblock_iso_0("8642", PAN)).hex().upper().encode()
    lmk_pin = hsm.ok(b"JE" + zpk + block + b"01" + PAN[-13:-1].encode())
    # The PIN under the LMK is under pair 02-03, here a 3-key TDES key.
    clear = des.decrypt_tdes_ecb(material[24:48], bytes.fromhex(lmk_pin))
    assert pinblock.decode_pinblock_iso_0(clear, PAN) == "8642"
    # A key made under the 2-key test LMK does not open under this one.
    assert hsm.error(b"CWU9B4934384B19946B040CD702B4D58145" + b"4123456789012345;8701101") == "10"


def test_three_key_lmk_from_admin_cards(tmp_path):
    material = three_key_lmk()
    mask = os.urandom(len(material))
    other = bytes(a ^ b for a, b in zip(mask, material))
    first = cards.new_card("1111", variant3_component=mask)
    second = cards.new_card("2222", variant3_component=other)

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            async with tenant(appliance) as client:
                body = {"slot": 0, "scheme": "variant3",
                        "cards": [{"card": first, "pin": "1111"}, {"card": second, "pin": "2222"}]}
                response = await client.post("/lmk", json=body)
                assert response.status_code == 200, response.text
                loaded = response.json()
                assert loaded["algorithm"] == "3DES (20 triple-length pairs)"
                assert loaded["check_value"] == des.generate_kcv(material[:24], 3).hex().upper() + "0" * 10
                bad = {"slot": 1, "scheme": "variant4", "cards": body["cards"]}
                assert (await client.post("/lmk", json=bad)).status_code == 400
            connection = await host(appliance)
            cvk = under_variant_lmk(CVK, "402", material).encode()
            assert ok(await connection.call(b"CW" + cvk + b"1234567890123456;9912220"), b"CW") == \
                psec.cvv.generate_cvv(CVK, "1234567890123456", "9912", "220")
            await connection.close()
        # After a restart the 3-key LMK is read back from the sealed state.
        async with running(config(tmp_path)) as appliance:
            connection = await host(appliance)
            nc = ok(await connection.call(b"NC"), b"NC")
            await connection.close()
            assert nc[:6] == des.generate_kcv(material[:24], 3).hex().upper()

    guarded(scenario())
