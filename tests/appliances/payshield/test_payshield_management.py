"""The management API: provider and tenant roles, LMK loading, keys, firmware, release, logs."""

from __future__ import annotations

import json
import os
import stat

from psec import des

from hsmcloud.appliances.payshield import cards
from payshield_helpers import (
    PROVIDER_TOKEN,
    SERIAL,
    TENANT_TOKEN,
    TEST_LMK,
    allocate,
    authorize,
    card_pair_for,
    config,
    error,
    guarded,
    host,
    load_key,
    load_lmk,
    management,
    ok,
    running,
    sha256_hex,
    tenant,
)

K = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_tokens_and_roles(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            for token in (None, "wrong-token", TENANT_TOKEN):  # tenant token not set yet
                async with management(appliance, token) as client:
                    assert (await client.get("/health")).status_code == 401
            await allocate(appliance)
            async with management(appliance) as provider:
                assert (await provider.get("/lmk")).status_code == 403
                assert (await provider.post("/release")).status_code == 403
            async with tenant(appliance) as client:
                assert (await client.get("/provider/pristine")).status_code == 403
                assert (await client.get("/health")).status_code == 200

    guarded(scenario())


def test_provider_cannot_replace_the_credential_of_a_claimed_device(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            async with management(appliance) as provider:
                # The provider holds the device's management token; it must not get into the domain with it.
                taken = await provider.post("/provider/claim", json={"token_sha256": sha256_hex("provider-own-token")})
                assert taken.status_code == 409 and taken.json()["error"]["code"] == "AlreadyClaimed"
                assert (await provider.put("/provider/tenant", json={"token": "provider-own-token"})).status_code == 404
                # The claim takes a digest only: a clear tenant credential never travels on the provider channel.
                assert (await provider.post("/provider/claim", json={})).status_code == 400
                assert (await provider.post("/provider/claim", json={"token_sha256": "ABC"})).status_code == 400
                # Repeating the hand-over with the tenant's own digest (a lost answer) changes nothing.
                assert (await provider.post("/provider/claim",
                                            json={"token_sha256": sha256_hex(TENANT_TOKEN)})).status_code == 200
            async with management(appliance, "provider-own-token") as intruder:
                assert (await intruder.get("/lmk")).status_code == 401
            async with tenant(appliance) as client:
                assert len((await client.get("/lmk")).json()["lmks"]) == 1
                audit = (await client.get("/logs/audit")).json()["entries"]
                assert ("provider", "tenant.credential.claim", "refused: already claimed") in [
                    (e["actor"], e["action"], e["result"]) for e in audit]
            # A release (here out of band) erases the domain, and only then can a new tenant claim it.
            async with management(appliance) as provider:
                assert (await provider.post("/provider/release")).status_code == 200
                assert (await provider.get("/health")).json()["claimed"] is False
            await allocate(appliance, "next-tenant-token-0123")
            async with management(appliance, "next-tenant-token-0123") as client:
                assert (await client.get("/lmk")).json()["lmks"] == []

    guarded(scenario())


def test_tenant_rotates_its_credential(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            async with tenant(appliance) as client:
                rotated = await client.post("/tenant/credential")
                assert rotated.status_code == 200, rotated.text
                new_token = rotated.json()["token"]
                assert len(new_token) >= 32
                assert (await client.get("/lmk")).status_code == 401  # the old one stopped at once
            async with management(appliance, new_token) as client:
                assert (await client.get("/lmk")).status_code == 200
                # The tenant may choose the token itself and send only its digest.
                chosen = "tenant-chosen-token-0123456789"
                r = await client.post("/tenant/credential", json={"token_sha256": sha256_hex(chosen)})
                assert r.status_code == 200 and "token" not in r.json()
                assert (await client.get("/lmk")).status_code == 401
            async with management(appliance, chosen) as client:
                assert (await client.post("/tenant/credential", json={"token_sha256": 7})).status_code == 400
                r = await client.post("/tenant/credential", json={"token_sha256": sha256_hex(PROVIDER_TOKEN)})
                assert r.status_code == 400  # never the provider's token
                assert (await client.get("/lmk")).status_code == 200
                audit = (await client.get("/logs/audit")).json()["entries"]
                assert [e["action"] for e in audit if e["action"].startswith("tenant.credential")] == [
                    "tenant.credential.claim", "tenant.credential.rotate", "tenant.credential.rotate"]
            async with management(appliance) as provider:
                assert (await provider.post("/tenant/credential")).status_code == 403

    guarded(scenario())


def test_health_licence_and_benchmark_setting(tmp_path):
    async def scenario():
        async with running(config(tmp_path, lmk_slots=1, calls_per_second=250)) as appliance:
            async with management(appliance) as provider:
                health = (await provider.get("/health")).json()
                assert health["serial"] == SERIAL and health["model"] == "payShield 10K"
                assert health["firmware"] == "1.4a 1.8.3"
                assert health["licence"]["lmk_slots"] == 1 and health["licence"]["cps"] == 250
                assert "EMV Transaction Processing" in health["licence"]["premium_package"]
                assert len(health["licence"]["premium_package"]) == 8
                assert health["released"] is True and health["lmks_loaded"] == 0
                assert health["links"] == {"host1": "up", "host2": "up", "mgmt": "up"}
                lifted = (await provider.put("/provider/licence", json={"cps_limit_lifted": True})).json()
                assert lifted["cps_limit_lifted"] is True
                assert (await provider.put("/provider/licence", json={"cps_limit_lifted": "yes"})).status_code == 400
                assert (await provider.get("/provider/pristine")).json() == {"pristine": True, "findings": []}

    guarded(scenario())


def test_firmware_below_the_base_version_is_refused(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            async with management(appliance) as provider:
                for old in ("1.4a 1.8.2", "1.3e 1.8.3", "1.4a 1.7.9"):
                    response = await provider.post("/provider/firmware", json={"version": old})
                    assert response.status_code == 409, old
                assert (await provider.post("/provider/firmware", json={"version": "garbage"})).status_code == 400
                response = await provider.post("/provider/firmware", json={"version": "1.4a 1.8.4"})
                assert response.json() == {"firmware": "1.4a 1.8.4"}
            await allocate(appliance)
            async with management(appliance) as provider:
                # Allocated: the tenant patches its own device.
                assert (await provider.post("/provider/firmware", json={"version": "1.5a 1.9.0"})).status_code == 409
            async with tenant(appliance) as client:
                assert (await client.post("/firmware", json={"version": "1.5a 1.9.0"})).status_code == 200
            client = await host(appliance)
            await load_lmk(appliance)
            assert ok(await client.call(b"NC"), b"NC").endswith("1500-1900")
            await client.close()

    guarded(scenario())


def test_lmk_loading_rules(tmp_path):
    async def scenario():
        async with running(config(tmp_path, lmk_slots=1)) as appliance:
            await allocate(appliance)
            (c1, p1), (c2, p2) = card_pair_for(TEST_LMK, "variant")
            async with tenant(appliance) as client:
                async def post(**body):
                    return await client.post("/lmk", json={"scheme": "variant", "slot": 0, **body})

                assert (await post(cards=[{"card": c1, "pin": p1}])).status_code == 400
                response = await post(cards=[{"card": c1, "pin": p1}, {"card": c2, "pin": "9999"}])
                assert response.status_code == 400 and response.json()["error"]["code"] == "CardError"
                response = await post(cards=[{"card": c1, "pin": p1}, {"card": c1, "pin": p1}])
                assert response.status_code == 400
                response = await post(slot=1, cards=[{"card": c1, "pin": p1}, {"card": c2, "pin": p2}])
                assert response.status_code == 400  # licence: 1 LMK
                response = await post(cards=[{"card": c1, "pin": p1}, {"card": c2, "pin": p2}])
                assert response.status_code == 200
                assert response.json()["check_value"] == des.generate_kcv(TEST_LMK[:16], 3).hex().upper() + "0" * 10
                assert (await post(cards=[{"card": c1, "pin": p1}, {"card": c2, "pin": p2}])).status_code == 409
                table = (await client.get("/lmk")).json()["lmks"]
                assert [(e["id"], e["scheme"], e["authorised"]) for e in table] == [("00", "variant", False)]
                assert (await client.post("/authorize", json={"slot": 0})).json()["authorised"] is True
                assert (await client.get("/lmk")).json()["lmks"][0]["authorised"] is True
                assert (await client.post("/deauthorize", json={"slot": 0})).json()["authorised"] is False

    guarded(scenario())


def test_key_load_and_component_export(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            c1, c2 = des.adjust_key_parity(os.urandom(16)), des.adjust_key_parity(os.urandom(16))
            async with tenant(appliance) as client:
                loaded = (await client.post("/keys/load", json={"type": "000", "components": [c1.hex(), c2.hex()]})).json()
                expected = des.adjust_key_parity(bytes(a ^ b for a, b in zip(c1, c2)))
                assert loaded["kcv"] == des.generate_kcv(expected, 3).hex().upper()
                assert loaded["key"].startswith("U")
                bad = bytes([c1[0] ^ 1]) + c1[1:]
                response = await client.post("/keys/load", json={"type": "000", "components": [bad.hex(), c2.hex()]})
                assert response.status_code == 400  # parity
                request = {"key": loaded["key"], "type": "000", "components": 3}
                assert (await client.post("/keys/export-components", json=request)).status_code == 403
                await authorize(appliance)
                exported = (await client.post("/keys/export-components", json=request)).json()
            parts = [bytes.fromhex(p) for p in exported["components"]]
            assert len(parts) == 3 and all(des.adjust_key_parity(p) == p for p in parts)
            combined = bytes(a ^ b ^ c for a, b, c in zip(*parts))
            assert des.adjust_key_parity(combined) == expected
            assert exported["kcv"] == loaded["kcv"]

    guarded(scenario())


def test_state_survives_a_restart_and_is_encrypted_at_rest(tmp_path):
    async def scenario():
        cfg = config(tmp_path)
        async with running(cfg) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
        async with running(cfg) as appliance:
            client = await host(appliance)
            assert ok(await client.call(b"NC"), b"NC").startswith(des.generate_kcv(TEST_LMK[:16], 3).hex().upper())
            await client.close()
        key_file = cfg.state_dir / "master.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        for path in cfg.state_dir.iterdir():
            if path.is_file():
                assert TEST_LMK[16:32] not in path.read_bytes(), path

    guarded(scenario())


def test_tenant_release_erases_everything(tmp_path):
    async def scenario():
        cfg = config(tmp_path)
        async with running(cfg) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            await load_lmk(appliance, os.urandom(32), scheme="keyblock", slot=1)
            await authorize(appliance)
            key = await load_key(appliance, "402", K)
            async with tenant(appliance) as client:
                await client.put("/settings", json={"header_length": 6})
            lingering = await host(appliance, 2)
            async with management(appliance) as provider:
                pristine = (await provider.get("/provider/pristine")).json()
                assert pristine["pristine"] is False and len(pristine["findings"]) >= 4
            old_master = (cfg.state_dir / "master.key").read_text()
            async with tenant(appliance) as client:
                released = (await client.post("/release")).json()
            assert released == {"released": True, "pristine": True, "findings": []}
            assert (cfg.state_dir / "master.key").read_text() != old_master
            assert await lingering.reader.read() == b""  # connections cut
            async with tenant(appliance) as client:
                assert (await client.get("/lmk")).status_code == 401  # tenant credential gone
            async with management(appliance) as provider:
                health = (await provider.get("/health")).json()
                assert health["released"] is True and health["lmks_loaded"] == 0
            client = await host(appliance)
            assert error(await client.call(b"NC"), b"NC") == "13"  # header length back to 4
            assert error(await client.call(b"CW" + key.encode() + b"1234567890123456;9912220"), b"CW") == "13"
            await client.close()
            # Re-allocate: logs start empty (the failed NC/CW above are the only errors).
            await allocate(appliance)
            async with tenant(appliance) as client:
                audit = (await client.get("/logs/audit")).json()["entries"]
                assert [e["action"] for e in audit] == ["tenant.credential.claim"]

    guarded(scenario())


def test_provider_release_out_of_band(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            async with management(appliance) as provider:
                result = (await provider.post("/provider/release")).json()
                assert result == {"released": True, "pristine": True, "findings": []}
                assert (await provider.get("/provider/pristine")).json()["pristine"] is True

    guarded(scenario())


def test_audit_log_records_management_actions_as_jsonl(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            await authorize(appliance)
            await load_key(appliance, "001", K)
            async with tenant(appliance) as client:
                await client.post("/lmk", json={"cards": []})  # refused: recorded too
                text = (await client.get("/logs/audit", params={"format": "jsonl"})).text
            entries = [json.loads(line) for line in text.splitlines()]
            actions = [(e["actor"], e["action"], e["result"]) for e in entries]
            assert actions[:4] == [
                ("provider", "tenant.credential.claim", "ok"),
                ("tenant", "lmk.load", "ok"),
                ("tenant", "authorize", "ok"),
                ("tenant", "keys.load", "ok"),
            ]
            assert actions[4][1] == "POST /lmk" and actions[4][2] != "ok"
            assert K.hex().upper() not in text.upper()

    guarded(scenario())


def test_card_files(tmp_path):
    path = tmp_path / "card1.json"
    card = cards.create_card_file(path, "4321")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cards.read_card_file(path) == card
    unlocked = cards.unlock_card(card, "4321")
    assert len(unlocked.variant) == 320 and len(unlocked.keyblock) == 32
    assert card["variant_check_value"] == des.generate_kcv(unlocked.variant[:16], 3).hex().upper()
    import pytest

    from hsmcloud.appliances.payshield.errors import CardError

    with pytest.raises(CardError):
        cards.unlock_card(card, "0000")
    with pytest.raises(CardError):
        cards.unlock_card(dict(card, card_id="someone-else"), "4321")
    with pytest.raises(FileExistsError):
        cards.create_card_file(path, "4321")
    assert PROVIDER_TOKEN not in path.read_text()
