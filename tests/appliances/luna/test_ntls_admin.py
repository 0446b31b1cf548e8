"""LunaCM administration over NTLS (the ADMIN opcode), and PKCS#11 against a whole LunaAppliance."""

from __future__ import annotations

import asyncio

import pytest
from luna_helpers import CO_PIN, CU_PIN, PO_PIN, config, initialized, ok
from ntls_harness import RW, Harness, client_certificate

from hsmcloud.appliances.luna.appliance import LunaAppliance
from hsmcloud.clients.luna.ntls_client import NtlsClient, Pkcs11Error
from hsmcloud.protocols.ntls.opcodes import Op
from hsmcloud.protocols.pkcs11 import constants as c


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.close()


@pytest.fixture
def ntls(harness):
    with harness.connect() as client:
        yield client


def test_showinfo_showpolicies_and_role_list(harness, ntls):
    info = ntls.admin("partition.showinfo", partition=harness.serial)
    assert info["ok"] and info["label"] == "app1-label" and info["initialized"]
    assert {r["role"]: r["initialized"] for r in info["roles"]} == {"po": True, "co": True, "cu": True}
    assert info["cloning"]["domain_id"] == ntls.get_cloning_info(harness.serial).domain_id != ""
    assert (info["cloning"]["private_key_cloning"], info["cloning"]["secret_key_cloning"]) == (1, 1)
    policies = ntls.admin("partition.showpolicies", partition=harness.serial)["policies"]
    assert {p["code"]: p["value"] for p in policies}[21] == 0
    assert {p["code"]: p["value"] for p in policies}[20] == 10
    roles = ntls.admin("role.list", partition=harness.serial)["roles"]
    assert [r["role"] for r in roles] == ["po", "co", "cu"]


def test_changepolicy_needs_the_partition_so(harness, ntls):
    s = harness.session(ntls)
    answer = ntls.admin("partition.changepolicy", session=s, policy=20, value=3)
    assert answer == {"ok": False, "code": "CKR_USER_NOT_LOGGED_IN", "rv": c.CKR_USER_NOT_LOGGED_IN,
                      "message": answer["message"]}
    ntls.logout(s)
    ntls.login(s, c.CKU_SO, PO_PIN.encode())
    answer = ntls.admin("partition.changepolicy", session=s, policy=20, value=3)
    assert answer["ok"] and (answer["old"], answer["new"]) == (10, 3)
    assert ntls.admin("partition.changepolicy", session=s, policy=20, value=11)["code"] == \
        "CKR_ARGUMENTS_BAD"
    # three wrong CO PINs now lock the Crypto Officer out
    other = ntls.open_session(harness.serial, RW)
    ntls.logout(s)
    for _ in range(3):
        with pytest.raises(Pkcs11Error):
            ntls.login(other, c.CKU_USER, b"wrong-pin-1")
    status = ntls.admin("role.status", partition=harness.serial, role="co")
    assert status["roles"][0]["locked"] is True


def test_role_init_reset_and_changepw(harness, ntls):
    ntls.init_token(harness.serial, PO_PIN.encode(), "again")  # a fresh partition: CO, CU gone
    s = ntls.open_session(harness.serial, RW)
    ntls.login(s, c.CKU_SO, PO_PIN.encode())
    assert ntls.admin("role.init", session=s, role="cu", pin=CU_PIN)["code"] == \
        "CKR_USER_NOT_LOGGED_IN"  # the CO initializes the CU, not the PO
    assert ntls.admin("role.init", session=s, role="co", pin=CO_PIN)["ok"]
    assert ntls.admin("role.init", session=s, role="co", pin=CO_PIN)["code"] == \
        "CKR_ACTION_PROHIBITED"
    assert ntls.admin("role.resetpw", session=s, role="co", pin="other-co-pin")["code"] == \
        "CKR_ACTION_PROHIBITED"  # HSM policy 15 is 0
    ntls.logout(s)
    ntls.login(s, c.CKU_USER, CO_PIN.encode())
    assert ntls.admin("role.changepw", session=s, role="co", old_pin=CO_PIN,
                      new_pin="changed-co-pin")["ok"]
    assert ntls.admin("role.init", session=s, role="cu", pin=CU_PIN)["ok"]
    assert ntls.admin("role.resetpw", session=s, role="cu", pin="reset-cu-pin")["ok"]
    ntls.generate_key(s, c.CKM_AES_KEY_GEN, [(c.CKA_VALUE_LEN, 16)])  # no PIN change pending
    ntls.logout(s)
    with pytest.raises(Pkcs11Error) as error:
        ntls.login(s, c.CKU_USER, CO_PIN.encode())
    assert error.value.rv == c.CKR_PIN_INCORRECT


def test_partition_init_with_a_domain(harness, ntls):
    answer = ntls.admin("partition.init", partition=harness.serial, label="withdomain",
                        so_pin=PO_PIN, domain="my-domain")
    assert answer == {"ok": True, "serial": harness.serial, "label": "withdomain"}
    assert ntls.admin("partition.init", partition=harness.serial, label="x", so_pin="bad-pin-00")[
        "code"] == "CKR_PIN_INCORRECT"


def test_bad_admin_requests(harness, ntls):
    assert ntls.admin("no.such.action")["code"] == "CKR_ARGUMENTS_BAD"
    assert ntls.admin("partition.showinfo")["code"] == "CKR_ARGUMENTS_BAD"
    assert ntls.admin("partition.showinfo", partition="999")["code"] == "CKR_SLOT_ID_INVALID"
    with pytest.raises(Pkcs11Error) as error:
        ntls.call(Op.ADMIN, "not json")
    assert error.value.rv == c.CKR_ARGUMENTS_BAD


def test_pkcs11_against_a_running_luna_appliance(tmp_path):
    """The whole appliance: its NTLS port, its core; the client registered as an admin would."""

    async def scenario():
        appliance = LunaAppliance(config(tmp_path, ntls_port=0))
        await appliance.start()
        try:
            core = appliance.core
            shell = await asyncio.to_thread(initialized, core)
            await asyncio.to_thread(ok, shell, "partition create -partition p1")
            serial = core.partitions.by_name("p1").serial
            cert, key = client_certificate(tmp_path / "client", "app")
            core.clients.register("app", certificate_pem=cert.read_bytes(), hostname="app")
            core.clients.assign("app", serial)
            server = tmp_path / "client" / "server.pem"
            server.write_text(core.clients.server_certificate().certificate_pem)

            def use() -> bytes:
                with NtlsClient.connect("127.0.0.1", appliance.ntls_port, certificate=cert,
                                        private_key=key, server_certificate=server) as ntls:
                    assert ntls.server.appliance_serial == core.serial
                    ntls.init_token(serial, PO_PIN.encode(), "p1 label")
                    s = ntls.open_session(serial, RW)
                    ntls.login(s, c.CKU_SO, PO_PIN.encode())
                    assert ntls.admin("partition.changepolicy", session=s, policy=21, value=0)["ok"]
                    ntls.init_pin(s, CO_PIN.encode())
                    ntls.logout(s)
                    ntls.login(s, c.CKU_USER, CO_PIN.encode())
                    pub, priv = ntls.generate_key_pair(
                        s, c.CKM_EC_KEY_PAIR_GEN,
                        [(c.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")), (c.CKA_TOKEN, True)],
                        [(c.CKA_TOKEN, True)])
                    ntls.sign_init(s, c.CKM_ECDSA_SHA256, priv)
                    signature = ntls.sign(s, b"through the appliance")
                    ntls.verify_init(s, c.CKM_ECDSA_SHA256, pub)
                    ntls.verify(s, b"through the appliance", signature)
                    return signature

            assert len(await asyncio.to_thread(use)) == 64
            assert core.keystore.count(serial) == 2
        finally:
            await appliance.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_token_keys_survive_an_appliance_restart(tmp_path):
    async def scenario():
        cfg = config(tmp_path, ntls_port=0)
        appliance = LunaAppliance(cfg)
        await appliance.start()
        core = appliance.core
        shell = await asyncio.to_thread(initialized, core)
        await asyncio.to_thread(ok, shell, "partition create -partition p1")
        serial = core.partitions.by_name("p1").serial
        cert, key = client_certificate(tmp_path / "client", "app")
        core.clients.register("app", certificate_pem=cert.read_bytes(), hostname="app")
        core.clients.assign("app", serial)
        server = tmp_path / "client" / "server.pem"
        server.write_text(core.clients.server_certificate().certificate_pem)

        def connect(port):
            return NtlsClient.connect("127.0.0.1", port, certificate=cert, private_key=key,
                                      server_certificate=server)

        def first(port) -> bytes:
            with connect(port) as ntls:
                ntls.init_token(serial, PO_PIN.encode(), "p1")
                s = ntls.open_session(serial, RW)
                ntls.login(s, c.CKU_SO, PO_PIN.encode())
                ntls.admin("partition.changepolicy", session=s, policy=21, value=0)
                ntls.init_pin(s, CO_PIN.encode())
                ntls.logout(s)
                ntls.login(s, c.CKU_USER, CO_PIN.encode())
                _, priv = ntls.generate_key_pair(
                    s, c.CKM_RSA_PKCS_KEY_PAIR_GEN, [(c.CKA_MODULUS_BITS, 2048), (c.CKA_TOKEN, True)],
                    [(c.CKA_TOKEN, True), (c.CKA_LABEL, b"kept")])
                ntls.sign_init(s, c.CKM_SHA256_RSA_PKCS, priv)
                return ntls.sign(s, b"same data")

        def second(port) -> bytes:
            with connect(port) as ntls:
                s = ntls.open_session(serial, RW)
                ntls.login(s, c.CKU_USER, CO_PIN.encode())
                (priv,) = ntls.find_objects(s, [(c.CKA_LABEL, b"kept")])
                ntls.sign_init(s, c.CKM_SHA256_RSA_PKCS, priv)
                return ntls.sign(s, b"same data")

        before = await asyncio.to_thread(first, appliance.ntls_port)
        await appliance.stop()
        appliance = LunaAppliance(cfg)
        await appliance.start()
        try:
            after = await asyncio.to_thread(second, appliance.ntls_port)
        finally:
            await appliance.stop()
        assert after == before  # PKCS#1 v1.5 is deterministic: the same key signed

    asyncio.run(asyncio.wait_for(scenario(), 90))
