"""Talking to an appliance's shell over SSH from tests, with the asyncssh client."""
from __future__ import annotations

import asyncio

import asyncssh

ADMIN_PASSWORD = "Adm1n-Passw0rd!"
SO_PASSWORD = "hsm-SO-secret-1"


async def _exec(address: str, port: int, password: str, commands: list[str]) -> list[tuple[int, str]]:
    async with asyncssh.connect(address, port=port, username="admin", password=password, known_hosts=None,
                                client_keys=None, preferred_auth="password") as conn:
        out = []
        for cmd in commands:
            res = await conn.run(cmd, check=False)
            out.append((res.exit_status, (res.stdout or "") + (res.stderr or "")))
        return out


def run(address: str, port: int, password: str, *commands: str) -> list[tuple[int, str]]:
    return asyncio.run(asyncio.wait_for(_exec(address, port, password, list(commands)), timeout=60))


def take_ownership(ep: dict) -> None:
    """First login with the HSM's initial password (from /endpoints): change it, then initialize the HSM."""
    address, port, initial = ep["address"], ep["ports"]["ssh"], ep["initialAdminPassword"]
    [(code, text)] = run(address, port, initial,
                         f"my password set -oldpassword {initial} -newpassword {ADMIN_PASSWORD}")
    assert code == 0, text
    [(code, text)] = run(address, port, ADMIN_PASSWORD,
                         f"hsm init -label tenant -domain tenant-domain -password {SO_PASSWORD} -force")
    assert code == 0, text


def zeroize_by_bad_logins(address: str, port: int) -> str:
    """The documented quickest zeroize: the HSM SO password wrong three times."""
    results = run(address, port, ADMIN_PASSWORD, *["hsm login -password wrong-password"] * 3, "hsm show")
    assert all(code != 0 for code, _ in results[:3])
    return results[3][1]
