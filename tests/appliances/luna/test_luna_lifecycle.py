"""Starting, stopping and restarting an appliance; running one standalone."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

import pytest
from luna_helpers import (
    ADMIN_PASSWORD,
    FACTORY_PASSWORD,
    GUARD_SECONDS,
    SO_PASSWORD,
    TOKEN,
    config,
    connect,
    connect_to,
    guarded,
    management,
    run_exec,
)

from hsmcloud.appliances.luna.appliance import ApplianceConfig, LunaAppliance
from hsmcloud.appliances.luna.core.errors import StateError


def test_restart_keeps_password_partitions_counter_and_host_key(tmp_path):
    async def scenario():
        appliance = LunaAppliance(config(tmp_path))
        await appliance.start()
        try:
            await run_exec(
                appliance,
                FACTORY_PASSWORD,
                f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}",
            )
            async with connect(appliance, ADMIN_PASSWORD) as conn:
                key_before = conn.get_server_host_key().public_data
                for command in (
                    f"hsm init -label keep -domain d -password {SO_PASSWORD}",
                    f"hsm login -password {SO_PASSWORD}",
                    "partition create -partition app1",
                    "hsm login -password wrong-password",
                ):
                    await conn.run(command)
        finally:
            await appliance.stop()

        await appliance.start()
        try:
            async with connect(appliance, ADMIN_PASSWORD) as conn:
                assert conn.get_server_host_key().public_data == key_before
                listed = await conn.run("partition list")
                assert "app1" in listed.stdout
                shown = await conn.run("hsm show")
                assert "2 before HSM zeroization" in shown.stdout
                assert "Not Logged In" in shown.stdout  # SO logins do not survive a restart
            async with management(appliance) as client:
                health = (await client.get("/health")).json()
            assert health["admin_password_changed"] and health["partitions"] == 1
        finally:
            await appliance.stop()

    guarded(scenario())


def test_stop_frees_both_ports(tmp_path):
    async def scenario():
        appliance = LunaAppliance(config(tmp_path))
        await appliance.start()
        ports = (appliance.ssh_port, appliance.mgmt_port)
        await appliance.stop()
        for port in ports:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", port))
                probe.listen()
        # The same fixed ports serve again after a restart.
        again = LunaAppliance(config(tmp_path, ssh_port=ports[0], mgmt_port=ports[1]))
        await again.start()
        try:
            assert (again.ssh_port, again.mgmt_port) == ports
        finally:
            await again.stop()
        with pytest.raises(RuntimeError):
            again.ssh_port  # noqa: B018

    guarded(scenario())


def test_state_dir_of_another_device_is_refused(tmp_path):
    async def scenario():
        appliance = LunaAppliance(config(tmp_path))
        await appliance.start()
        await appliance.stop()
        with pytest.raises(StateError):
            await LunaAppliance(config(tmp_path, serial="999999999")).start()

    guarded(scenario())


def test_config_rejects_non_loopback_addresses_and_empty_tokens(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        ApplianceConfig(serial="1", state_dir=tmp_path, address="10.0.0.5", mgmt_token="t")
    with pytest.raises(ValueError, match="loopback"):
        ApplianceConfig(serial="1", state_dir=tmp_path, address="0.0.0.0", mgmt_token="t")
    with pytest.raises(ValueError, match="mgmt_token"):
        ApplianceConfig(serial="1", state_dir=tmp_path, address="127.0.0.1", mgmt_token="")
    with pytest.raises(TypeError):
        ApplianceConfig("1", tmp_path, mgmt_token="t")  # keyword-only


def test_standalone_appliance_prints_its_ports_and_stops_on_sigterm(tmp_path):
    async def scenario():
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hsmcloud.appliances.luna",
            "--state-dir", str(tmp_path / "standalone"),
            "--serial", "154700099",
            "--address", "127.0.0.1",
            "--ssh-port", "0",
            "--ntls-port", "0",
            "--mgmt-port", "0",
            "--mgmt-token", TOKEN,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            ports = json.loads(await process.stdout.readline())
            shown = await run_exec_at(ports["ssh_port"], "hsm show")
            assert "You must change the admin password" in shown
            assert ports["ntls_port"] not in (0, ports["ssh_port"], ports["mgmt_port"])
            with socket.create_connection(("127.0.0.1", ports["ntls_port"]), timeout=GUARD_SECONDS):
                pass  # the NTLS listener accepts
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), GUARD_SECONDS) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def run_exec_at(port: int, command: str) -> str:
        async with connect_to("127.0.0.1", port, FACTORY_PASSWORD) as conn:
            return (await conn.run(command)).stdout

    guarded(scenario())
