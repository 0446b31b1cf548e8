"""The provider's management API: health, factory reset, pristine check."""

from __future__ import annotations

import asyncssh
import pytest
from luna_helpers import (
    ADMIN_PASSWORD,
    FACTORY_PASSWORD,
    SERIAL,
    SO_PASSWORD,
    config,
    connect,
    guarded,
    management,
    run_exec,
    running,
)

async def _tenant_setup(appliance) -> None:
    """What a tenant does: change the password, initialize, create two partitions."""
    result = await run_exec(
        appliance,
        FACTORY_PASSWORD,
        f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}",
    )
    assert result.exit_status == 0, result.stdout
    async with connect(appliance, ADMIN_PASSWORD) as conn:
        for command in (
            f"hsm init -label tenantHSM -domain tenantDomain -password {SO_PASSWORD}",
            f"hsm login -password {SO_PASSWORD}",
            "partition create -partition app1",
            "partition create -partition app2",
        ):
            result = await conn.run(command)
            assert result.exit_status == 0, result.stdout


def test_requests_without_the_token_get_401(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            for token in (None, "wrong-token"):
                async with management(appliance, token=token) as client:
                    for method, path in (
                        ("GET", "/health"),
                        ("POST", "/provider/reset"),
                        ("GET", "/provider/pristine"),
                    ):
                        response = await client.request(method, path)
                        assert response.status_code == 401
                        assert response.json()["error"]["code"] == "Unauthorized"

    guarded(scenario())


def test_health_of_a_new_device(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            async with management(appliance) as client:
                health = (await client.get("/health")).json()
            assert health == {
                "serial": SERIAL,
                "model": "A790",
                "firmware": "7.0.3",
                "software": "7.2",
                "initialized": False,
                "zeroized": True,
                "partitions": 0,
                "monitoring": True,
                "admin_password_changed": False,
                "ntls": {"up": True, "port": appliance.ntls_port},
            }

    guarded(scenario())


def test_health_reflects_init_and_zeroize_by_bad_so_logins(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _tenant_setup(appliance)
            async with management(appliance) as client:
                health = (await client.get("/health")).json()
                assert health["initialized"] and not health["zeroized"]
                assert health["partitions"] == 2 and health["admin_password_changed"]

                async with connect(appliance, ADMIN_PASSWORD) as conn:
                    for _ in range(3):
                        await conn.run("hsm login -password wrong-password")

                health = (await client.get("/health")).json()
                assert health["zeroized"] and not health["initialized"]
                assert health["partitions"] == 0

    guarded(scenario())


def test_health_is_restricted_when_the_tenant_disables_monitoring(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _tenant_setup(appliance)
            result = await run_exec(appliance, ADMIN_PASSWORD, "sysconf monitor disable")
            assert result.exit_status == 0
            async with management(appliance) as client:
                health = (await client.get("/health")).json()
        assert health == {
            "serial": SERIAL,
            "model": "A790",
            "firmware": "7.0.3",
            "software": "7.2",
            "zeroized": False,
            "monitoring": False,
        }

    guarded(scenario())


def test_pristine_lists_tenant_state_and_reset_erases_it(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            async with management(appliance) as client:
                assert (await client.get("/provider/pristine")).json() == {
                    "pristine": True,
                    "findings": [],
                }
                await _tenant_setup(appliance)
                await run_exec(appliance, ADMIN_PASSWORD, "sysconf monitor disable")
                old_key = appliance.state.device().ssh_host_key

                async with connect(appliance, ADMIN_PASSWORD) as tenant:
                    report = (await client.get("/provider/pristine")).json()
                    assert report["pristine"] is False
                    findings = report["findings"]
                    assert "2 partitions present" in findings
                    assert "HSM is initialized" in findings
                    assert "appliance admin password is not the factory default" in findings
                    assert "provider monitoring is disabled (factory default: enabled)" in findings
                    assert any("log line" in f for f in findings)
                    assert "1 logged-in SSH session open" in findings
                    text = str(report)
                    assert SO_PASSWORD not in text and ADMIN_PASSWORD not in text

                    reset = await client.post("/provider/reset")
                    assert reset.status_code == 200
                    assert reset.json()["pristine"] is True
                    # The tenant's open session was cut by the reset.
                    with pytest.raises((asyncssh.Error, OSError)):
                        await tenant.run("hsm show", check=True)

                assert (await client.get("/provider/pristine")).json()["pristine"] is True
                assert appliance.state.device().ssh_host_key != old_key
                assert (await client.post("/provider/reset")).json()["pristine"] is True

            # Factory password again, with the forced change; the tenant's password is gone.
            with pytest.raises(asyncssh.PermissionDenied):
                await run_exec(appliance, ADMIN_PASSWORD, "hsm show")
            refused = await run_exec(appliance, FACTORY_PASSWORD, "hsm show")
            assert "You must change the admin password" in refused.stdout

    guarded(scenario())


def test_reset_presents_a_new_ssh_host_key(tmp_path):
    async def host_key_of(appliance) -> bytes:
        async with connect(appliance, FACTORY_PASSWORD) as conn:
            return conn.get_server_host_key().public_data

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            before = await host_key_of(appliance)
            async with management(appliance) as client:
                await client.post("/provider/reset")
            after = await host_key_of(appliance)
            assert before != after

    guarded(scenario())


INITIAL_PASSWORD = "Init-1-per-HSM-secret"


def test_initial_admin_password_replaces_the_factory_one_until_the_first_change(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            async with management(appliance) as client:
                # Someone who logged in with the factory password before the hand-over is cut off.
                early = await connect(appliance, FACTORY_PASSWORD)
                assert (await client.put("/provider/initial-admin-password",
                                         json={"password": INITIAL_PASSWORD})).status_code == 200
                with pytest.raises((asyncssh.Error, OSError)):
                    await early.run("hsm show", check=True)
                early.close()
                with pytest.raises(asyncssh.PermissionDenied):
                    await run_exec(appliance, FACTORY_PASSWORD, "hsm show")
                # The documented first login: the initial password, then a forced change.
                refused = await run_exec(appliance, INITIAL_PASSWORD, "hsm show")
                assert "You must change the admin password" in refused.stdout
                changed = await run_exec(
                    appliance,
                    INITIAL_PASSWORD,
                    f"my password set -oldpassword {INITIAL_PASSWORD} -newpassword {ADMIN_PASSWORD}",
                )
                assert changed.exit_status == 0, changed.stdout
                # From now on the password is the tenant's: the provider cannot set it again.
                again = await client.put("/provider/initial-admin-password", json={"password": "Init-1-other-one"})
                assert again.status_code == 409 and again.json()["error"]["code"] == "AdminPasswordChanged"
                with pytest.raises(asyncssh.PermissionDenied):
                    await run_exec(appliance, "Init-1-other-one", "hsm show")
                with pytest.raises(asyncssh.PermissionDenied):
                    await run_exec(appliance, INITIAL_PASSWORD, "hsm show")
                assert (await run_exec(appliance, ADMIN_PASSWORD, "hsm show")).exit_status == 0
                # A provider reset brings the factory password back, and the device is pristine.
                assert (await client.post("/provider/reset")).json()["pristine"] is True
            refused = await run_exec(appliance, FACTORY_PASSWORD, "hsm show")
            assert "You must change the admin password" in refused.stdout

    guarded(scenario())


def test_initial_admin_password_needs_the_token_and_a_valid_password(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            async with management(appliance, token="wrong-token") as client:
                r = await client.put("/provider/initial-admin-password", json={"password": INITIAL_PASSWORD})
                assert r.status_code == 401
            async with management(appliance) as client:
                for body in ({"password": "short"}, {"password": "alllowercaseletters"}):
                    r = await client.put("/provider/initial-admin-password", json=body)
                    assert r.status_code == 400 and r.json()["error"]["code"] == "PasswordPolicyViolation"
                for body in ({}, {"password": 12345678}, [INITIAL_PASSWORD]):
                    r = await client.put("/provider/initial-admin-password", json=body)
                    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequest"
                r = await client.put("/provider/initial-admin-password", content=b"not json")
                assert r.status_code == 400
            # Nothing was changed: the factory password still opens the first login.
            refused = await run_exec(appliance, FACTORY_PASSWORD, "hsm show")
            assert "You must change the admin password" in refused.stdout

    guarded(scenario())
