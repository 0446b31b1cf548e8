"""The appliance shell over real SSH: asyncssh clients and the OpenSSH client."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat

import asyncssh
import pytest
from hsmcloud.appliances.luna.appliance import LunaAppliance
from luna_helpers import (
    ADMIN_PASSWORD,
    FACTORY_PASSWORD,
    GUARD_SECONDS,
    SO_PASSWORD,
    config,
    connect,
    connect_to,
    guarded,
    run_exec,
    running,
)

PROMPT = "lunash:>"


async def _change_password(appliance) -> None:
    result = await run_exec(
        appliance,
        FACTORY_PASSWORD,
        f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}",
    )
    assert result.exit_status == 0, result.stdout


def test_exec_requests_before_and_after_the_password_change(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            refused = await run_exec(appliance, FACTORY_PASSWORD, "hsm show")
            assert refused.exit_status != 0
            assert "You must change the admin password" in refused.stdout

            await _change_password(appliance)

            with pytest.raises(asyncssh.PermissionDenied):
                await run_exec(appliance, FACTORY_PASSWORD, "hsm show")
            shown = await run_exec(appliance, ADMIN_PASSWORD, "hsm show")
            assert shown.exit_status == 0
            assert "A790" in shown.stdout and "Command Result : 0 (Success)" in shown.stdout

            unknown = await run_exec(appliance, ADMIN_PASSWORD, "foo")
            assert unknown.exit_status != 0
            assert "'foo' is not a valid command" in unknown.stdout

    guarded(scenario())


def test_wrong_ssh_password_and_unknown_user_are_refused(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            with pytest.raises(asyncssh.PermissionDenied):
                await run_exec(appliance, "not-the-password", "hsm show")
            with pytest.raises(asyncssh.PermissionDenied):
                async with connect_to(
                    "127.0.0.1", appliance.ssh_port, FACTORY_PASSWORD, username="root"
                ):
                    pass
            lines = [e.line for e in appliance.state.log_tail(10)]
            assert any("Failed password for admin" in line for line in lines)
            assert any("Failed password for invalid user root" in line for line in lines)

    guarded(scenario())


def test_so_login_holds_for_one_ssh_connection_only(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _change_password(appliance)
            async with connect(appliance, ADMIN_PASSWORD) as conn:
                init = await conn.run(
                    f"hsm init -label myHSM -domain myDomain -password {SO_PASSWORD}"
                )
                assert init.exit_status == 0, init.stdout
                login = await conn.run(f"hsm login -password {SO_PASSWORD}")
                assert login.exit_status == 0, login.stdout
                destructive = await conn.run("hsm init -label again")
                assert destructive.exit_status != 0 and "-force" in destructive.stdout
                create = await conn.run("partition create -partition app1")
                assert create.exit_status == 0, create.stdout

            elsewhere = await run_exec(appliance, ADMIN_PASSWORD, "partition create -partition app2")
            assert elsewhere.exit_status != 0 and "hsm login" in elsewhere.stdout
            listed = await run_exec(appliance, ADMIN_PASSWORD, "partition list")
            assert "app1" in listed.stdout and "app2" not in listed.stdout

    guarded(scenario())


async def _read_until(process, marker: str) -> str:
    return await asyncio.wait_for(process.stdout.readuntil(marker), GUARD_SECONDS)


def test_interactive_session_with_a_pty(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            async with connect(appliance, FACTORY_PASSWORD) as conn:
                process = await conn.create_process(term_type="xterm", term_size=(120, 40))
                # First login: LunaSH asks for the new password straight away.
                await _read_until(process, "Current password: ")
                process.stdin.write(FACTORY_PASSWORD + "\r")
                await _read_until(process, "New password: ")
                process.stdin.write(ADMIN_PASSWORD + "\r")
                await _read_until(process, "Retype new password: ")
                process.stdin.write(ADMIN_PASSWORD + "\r")
                changed = await _read_until(process, PROMPT)
                assert "Password changed" in changed
                assert FACTORY_PASSWORD not in changed and ADMIN_PASSWORD not in changed

                process.stdin.write(f"hsm init -label myHSM -domain d -password {SO_PASSWORD}\r")
                assert "Command Result : 0" in await _read_until(process, PROMPT)

                process.stdin.write("hsm login\r")
                await _read_until(process, "> ")
                process.stdin.write(SO_PASSWORD + "\r")
                logged_in = await _read_until(process, PROMPT)
                assert "'hsm login' successful." in logged_in
                assert SO_PASSWORD not in logged_in  # typed without echo

                process.stdin.write("partition create -partition app1\r")
                assert "Command Result : 0" in await _read_until(process, PROMPT)

                process.stdin.write("hsm zeroize\r")
                await _read_until(process, "quit now -> ")
                process.stdin.write("proceed\r")
                zeroized = await _read_until(process, PROMPT)
                assert "Command Result : 0 (Success)" in zeroized
                assert appliance.state.hsm().zeroized

                process.stdin.write("frobnicate\r")
                assert "not a valid command" in await _read_until(process, PROMPT)

                process.stdin.write("exit\r")
                await asyncio.wait_for(process.wait_closed(), GUARD_SECONDS)
                assert process.exit_status == 0
            assert not appliance.state.device().admin_must_change

    guarded(scenario())


def test_shell_without_a_pty_reads_commands_from_stdin(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _change_password(appliance)
            script = (
                f"hsm init -label myHSM -domain d -password {SO_PASSWORD}\n"
                f"hsm login -password {SO_PASSWORD}\n"
                "partition create -partition app1\n"
                "partition delete -partition app1\n"
                "proceed\n"
                "exit\n"
            )
            async with connect(appliance, ADMIN_PASSWORD) as conn:
                result = await conn.run(input=script, check=False)
            assert result.stdout.count("Command Result : 0 (Success)") == 5, result.stdout
            assert appliance.state.partitions() == []

    guarded(scenario())


def test_several_appliances_on_their_own_loopback_addresses(tmp_path):
    try:
        with socket.socket() as probe:
            probe.bind(("127.1.1.10", 0))
    except OSError:
        pytest.skip("this OS has only 127.0.0.1 (no per-appliance loopback addresses)")

    async def scenario():
        first = config(tmp_path / "one", serial="154700010", address="127.1.1.10")
        second = config(tmp_path / "two", serial="154700011", address="127.1.1.11")
        async with running(first) as one, running(second) as two:
            await _change_password(one)
            a = await run_exec(one, ADMIN_PASSWORD, "hsm show")
            assert "154700010" in a.stdout
            b = await run_exec(two, FACTORY_PASSWORD, "hsm show")
            assert b.exit_status != 0  # the second one still has its factory password

    guarded(scenario())


SSH = shutil.which("ssh") or "/usr/bin/ssh"


@pytest.mark.skipif(not os.path.exists(SSH), reason="the OpenSSH client (ssh) is not installed")
def test_openssh_client(tmp_path):
    askpass = tmp_path / "askpass.sh"

    def openssh(port: int, password: str, command: str):
        askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
        askpass.chmod(askpass.stat().st_mode | stat.S_IXUSR)
        env = dict(
            os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0"
        )
        return asyncio.create_subprocess_exec(
            SSH,
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "PreferredAuthentications=password",
            "-o", "LogLevel=ERROR",
            "-o", "BatchMode=no",
            "-p", str(port),
            "admin@127.0.0.1",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip

    async def run(port: int, password: str, command: str) -> tuple[int, str]:
        process = await openssh(port, password, command)
        out, err = await process.communicate()
        return process.returncode, out.decode() + err.decode()

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            port = appliance.ssh_port
            code, text = await run(port, FACTORY_PASSWORD, "hsm show")
            assert code != 0 and "You must change the admin password" in text
            code, text = await run(
                port,
                FACTORY_PASSWORD,
                f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}",
            )
            assert code == 0, text
            code, text = await run(port, ADMIN_PASSWORD, "hsm show")
            assert code == 0, text
            assert "A790" in text and "Command Result : 0 (Success)" in text

    guarded(scenario())


def test_ctrl_c_at_a_prompt_aborts_the_command(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _change_password(appliance)
            async with connect(appliance, ADMIN_PASSWORD) as conn:
                process = await conn.create_process(term_type="xterm")
                await _read_until(process, PROMPT)
                process.stdin.write(f"hsm init -label myHSM -domain d -password {SO_PASSWORD}\r")
                await _read_until(process, PROMPT)
                process.stdin.write("hsm zeroize\r")
                await _read_until(process, "quit now -> ")
                process.stdin.write("\x03")
                aborted = await _read_until(process, PROMPT)
                assert "Interrupted. Nothing was changed." in aborted
                assert appliance.state.hsm().initialized
                process.stdin.write("exit\r")
                await asyncio.wait_for(process.wait_closed(), GUARD_SECONDS)

    guarded(scenario())


def test_stop_ends_open_sessions(tmp_path):
    async def scenario():
        appliance = await _started(tmp_path)
        async with connect(appliance, FACTORY_PASSWORD) as conn:
            process = await conn.create_process(term_type="xterm")
            await _read_until(process, "Current password: ")  # a session waiting for input
            await asyncio.wait_for(appliance.stop(), GUARD_SECONDS)
            await asyncio.wait_for(process.wait_closed(), GUARD_SECONDS)
        assert not appliance.running

    async def _started(path):
        appliance = LunaAppliance(config(path))
        await appliance.start()
        return appliance

    guarded(scenario())
