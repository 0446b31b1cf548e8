"""scp and sftp to the appliance's file area: OpenSSH (SFTP and legacy -O) and asyncssh."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat

import asyncssh
import pytest
from luna_helpers import (
    ADMIN_PASSWORD,
    FACTORY_PASSWORD,
    GUARD_SECONDS,
    config,
    connect,
    guarded,
    make_client_certificate,
    run_exec,
    running,
)

from hsmcloud.appliances.luna.core.files import MAX_FILE_BYTES

SCP = shutil.which("scp") or "/usr/bin/scp"


async def _ready(appliance) -> None:
    result = await run_exec(appliance, FACTORY_PASSWORD,
                            f"my password set -oldpassword {FACTORY_PASSWORD} -newpassword {ADMIN_PASSWORD}")
    assert result.exit_status == 0, result.stdout


def _openssh_scp(tmp_path, port: int, *args: str):
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\necho '{ADMIN_PASSWORD}'\n")
    askpass.chmod(askpass.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    return asyncio.create_subprocess_exec(
        SCP,
        "-P", str(port),
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "PreferredAuthentications=password",
        "-o", "PubkeyAuthentication=no",
        "-o", "LogLevel=ERROR",
        "-o", "BatchMode=no",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip


async def _scp(tmp_path, port, *args) -> tuple[int, str]:
    process = await _openssh_scp(tmp_path, port, *args)
    out, err = await asyncio.wait_for(process.communicate(), GUARD_SECONDS)
    return process.returncode, (out + err).decode()


@pytest.mark.skipif(not os.path.exists(SCP), reason="the OpenSSH scp client is not installed")
@pytest.mark.parametrize("mode", [[], ["-O"]], ids=["sftp", "legacy-scp"])
def test_openssh_scp_uploads_a_certificate_and_downloads_server_pem(tmp_path, mode):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _ready(appliance)
            cert, _ = make_client_certificate(tmp_path / "client", "myclient")
            code, text = await _scp(tmp_path, appliance.ssh_port, *mode, str(cert), "admin@127.0.0.1:")
            assert code == 0, text
            assert appliance.core.files.get("myclient.pem") == cert.read_bytes()
            code, text = await _scp(tmp_path, appliance.ssh_port, *mode, str(cert),
                                    "admin@127.0.0.1:renamed.pem")
            assert code == 0, text
            target = tmp_path / "server.pem"
            code, text = await _scp(tmp_path, appliance.ssh_port, *mode, "admin@127.0.0.1:server.pem",
                                    str(target))
            assert code == 0, text
            assert target.read_text() == appliance.core.clients.server_certificate().certificate_pem

            script = tmp_path / "notes.txt"
            script.write_text("not a certificate")
            code, text = await _scp(tmp_path, appliance.ssh_port, *mode, str(script), "admin@127.0.0.1:")
            assert code != 0
            code, text = await _scp(tmp_path, appliance.ssh_port, *mode, str(cert),
                                    "admin@127.0.0.1:server.pem")
            assert code != 0
            assert appliance.core.files.uploaded_names() == ["myclient.pem", "renamed.pem"]
            listed = await run_exec(appliance, ADMIN_PASSWORD, "my file list")
            assert "server.pem" in listed.stdout and "myclient.pem" in listed.stdout

    guarded(scenario())


def test_asyncssh_sftp_and_scp(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _ready(appliance)
            cert, _ = make_client_certificate(tmp_path / "client", "c1")
            async with connect(appliance, ADMIN_PASSWORD) as conn:
                async with conn.start_sftp_client() as sftp:
                    await sftp.put(str(cert), "c1.pem")
                    assert sorted(await sftp.listdir(".")) == [".", "..", "c1.pem", "server.pem"]
                    assert (await sftp.stat("c1.pem")).size == cert.stat().st_size
                    async with sftp.open("server.pem", "rb") as handle:
                        assert (await handle.read()).startswith(b"-----BEGIN CERTIFICATE-----")
                    await sftp.get("server.pem", str(tmp_path / "got.pem"))
                    assert (tmp_path / "got.pem").read_bytes() == appliance.core.files.get("server.pem")
                    with pytest.raises(asyncssh.SFTPNoSuchFile):
                        await sftp.stat("sub/c1.pem")
                    with pytest.raises(asyncssh.SFTPError):
                        await sftp.mkdir("sub")
                    with pytest.raises(asyncssh.SFTPFailure):
                        async with sftp.open("big.pem", "wb") as handle:
                            await handle.write(b"x" * (MAX_FILE_BYTES + 1))
                    await sftp.remove("c1.pem")
                    with pytest.raises(asyncssh.SFTPPermissionDenied):
                        await sftp.remove("server.pem")
                await asyncssh.scp(str(cert), (conn, "again.pem"))
                await asyncssh.scp((conn, "server.pem"), str(tmp_path / "s.pem"))
            assert appliance.core.files.uploaded_names() == ["again.pem"]
            assert (tmp_path / "s.pem").read_bytes() == appliance.core.files.get("server.pem")
            deleted = await run_exec(appliance, ADMIN_PASSWORD, "my file delete -file again.pem")
            assert deleted.exit_status == 0
            assert appliance.core.files.uploaded_names() == []

    guarded(scenario())


def test_file_transfer_waits_for_the_admin_password_change(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            async with connect(appliance, FACTORY_PASSWORD) as conn:
                async with conn.start_sftp_client() as sftp:
                    with pytest.raises(asyncssh.SFTPPermissionDenied, match="Change the admin password"):
                        await sftp.listdir(".")

    guarded(scenario())


def test_backup_files_travel_by_scp_both_ways(tmp_path):
    """Partition backups (`partition backup` writes <name>.bak) are larger than certificates."""
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await _ready(appliance)
            made = os.urandom(200 * 1024)
            appliance.core.files.put("app1.bak", made)
            fetched = tmp_path / "fetched.bak"
            code, text = await _scp(tmp_path, appliance.ssh_port, "admin@127.0.0.1:app1.bak", str(fetched))
            assert code == 0, text
            assert fetched.read_bytes() == made
            code, text = await _scp(tmp_path, appliance.ssh_port, str(fetched), "admin@127.0.0.1:again.bak")
            assert code == 0, text
            assert appliance.core.files.get("again.bak") == made
            too_big = tmp_path / "big.pem"
            too_big.write_bytes(made)  # a certificate of that size is refused
            code, _ = await _scp(tmp_path, appliance.ssh_port, str(too_big), "admin@127.0.0.1:big.pem")
            assert code != 0 and not appliance.core.files.exists("big.pem")

    guarded(scenario())
