"""Helpers shared by the payShield appliance tests.

Known answers are never computed with the appliance's own code: the expected values come
from psec/pyemv/cryptography directly, or from published vectors (cited where used).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from hsmcloud.appliances.payshield import cards
from hsmcloud.appliances.payshield.appliance import PayShieldAppliance, PayShieldConfig

SERIAL = "PS10K00101"
ADDRESS = "127.1.2.11"
PROVIDER_TOKEN = "provider-secret"
TENANT_TOKEN = "tenant-token-0123456789"
HEADER = b"HEAD"
#: Guards against a hung test; never an assertion about speed.
GUARD_SECONDS = 30

#: The standard Thales test LMK set, pairs 00-01 ... 38-39, as published with ThalesSim
#: (nickntg/thalessimulatorlibrary, LmkStorage GenerateTestLMKs).
TEST_LMK = bytes.fromhex(
    "01010101010101017902CD1FD36EF8BA" "20202020202020203131313131313131"
    "40404040404040405151515151515151" "61616161616161617070707070707070"
    "80808080808080809191919191919191" "A1A1A1A1A1A1A1A1B0B0B0B0B0B0B0B0"
    "C1C1010101010101D0D0010101010101" "E0E0010101010101F1F1010101010101"
    "1C587F1C13924FEF0101010101010101" "01010101010101010101010101010101"
    "02020202020202020404040404040404" "07070707070707071010101010101010"
    "13131313131313131515151515151515" "16161616161616161919191919191919"
    "1A1A1A1A1A1A1A1A1C1C1C1C1C1C1C1C" "23232323232323232525252525252525"
    "26262626262626262929292929292929" "2A2A2A2A2A2A2A2A2C2C2C2C2C2C2C2C"
    "2F2F2F2F2F2F2F2F3131313131313131" "01010101010101010101010101010101"
)


def config(tmp_path: Path, **overrides) -> PayShieldConfig:
    values = dict(
        serial=SERIAL,
        state_dir=tmp_path / "appliance",
        address=ADDRESS,
        host1_port=0,
        host2_port=0,
        mgmt_port=0,
        mgmt_token=PROVIDER_TOKEN,
        lmk_slots=2,
        calls_per_second=2500,
        header_length=4,
    )
    # PS_HOST_WORKERS=0 runs these tests with the host ports in the appliance's own event loop.
    if os.environ.get("PS_HOST_WORKERS"):
        values["host_workers"] = int(os.environ["PS_HOST_WORKERS"])
    values.update(overrides)
    return PayShieldConfig(**values)


def guarded(coro) -> None:
    async def bounded():
        await asyncio.wait_for(coro, GUARD_SECONDS)

    asyncio.run(bounded())


@contextlib.asynccontextmanager
async def running(cfg: PayShieldConfig) -> AsyncIterator[PayShieldAppliance]:
    appliance = PayShieldAppliance(cfg)
    await appliance.start()
    try:
        yield appliance
    finally:
        await appliance.stop()


def management(appliance: PayShieldAppliance, token: str | None = PROVIDER_TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=f"http://{appliance.config.address}:{appliance.mgmt_port}", headers=headers, timeout=20
    )


def tenant(appliance: PayShieldAppliance) -> httpx.AsyncClient:
    return management(appliance, TENANT_TOKEN)


@functools.lru_cache(maxsize=None)
def card_pair_for(material: bytes, scheme: str) -> tuple[tuple[dict, str], tuple[dict, str]]:
    """Two admin cards whose components XOR to ``material`` (so the LMK is known)."""
    mask = os.urandom(len(material))
    other = bytes(a ^ b for a, b in zip(mask, material))
    if scheme == "variant":
        first = cards.new_card("1111", variant_component=mask)
        second = cards.new_card("2222", variant_component=other)
    else:
        first = cards.new_card("1111", keyblock_component=mask)
        second = cards.new_card("2222", keyblock_component=other)
    return (first, "1111"), (second, "2222")


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def allocate(appliance: PayShieldAppliance, token: str = TENANT_TOKEN) -> None:
    """The hand-over: the provider registers the tenant credential's digest on the unclaimed device."""
    async with management(appliance) as client:
        response = await client.post("/provider/claim", json={"token_sha256": sha256_hex(token)})
        assert response.status_code == 200, response.text


async def load_lmk(appliance, material: bytes = TEST_LMK, *, scheme: str = "variant", slot: int = 0) -> dict:
    (c1, p1), (c2, p2) = card_pair_for(material, scheme)
    async with tenant(appliance) as client:
        response = await client.post(
            "/lmk",
            json={"slot": slot, "scheme": scheme, "cards": [{"card": c1, "pin": p1}, {"card": c2, "pin": p2}]},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def authorize(appliance, slot: int = 0) -> None:
    async with tenant(appliance) as client:
        assert (await client.post("/authorize", json={"slot": slot})).status_code == 200


async def load_key(appliance, key_type: str, clear: bytes, *, slot: int = 0, **extra) -> str:
    """Load ``clear`` as two components (clear ^ c, c) through the key-loading-device path."""
    from psec import des

    mask = des.adjust_key_parity(os.urandom(len(clear))) if extra.get("algorithm", "T") == "T" else os.urandom(len(clear))
    other = bytes(a ^ b for a, b in zip(clear, mask))
    if extra.get("algorithm", "T") == "T":
        other = des.adjust_key_parity(other)
    async with tenant(appliance) as client:
        response = await client.post(
            "/keys/load",
            json={"type": key_type, "components": [mask.hex(), other.hex()], "slot": slot, **extra},
        )
    assert response.status_code == 200, response.text
    return response.json()["key"]


class HostClient:
    """A raw-frame client of one host port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: str, port: int, **kwargs) -> HostClient:
        reader, writer = await asyncio.open_connection(address, port, **kwargs)
        return cls(reader, writer)

    async def send_raw(self, frame: bytes) -> None:
        self.writer.write(frame)
        await self.writer.drain()

    async def receive(self) -> bytes:
        length = int.from_bytes(await self.reader.readexactly(2), "big")
        return await self.reader.readexactly(length)

    async def call(self, message: bytes, header: bytes = HEADER) -> bytes:
        """Send header + message framed; return the response without the header."""
        body = header + message
        await self.send_raw(len(body).to_bytes(2, "big") + body)
        response = await self.receive()
        assert response[: len(header)] == header, response
        return response[len(header) :]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def host(appliance, which: int = 1) -> HostClient:
    port = appliance.host1_port if which == 1 else appliance.host2_port
    address = appliance.config.address if which == 1 else appliance.host2_address
    return await HostClient.connect(address, port)


def ok(response: bytes, code: bytes) -> str:
    """Assert a success response to ``code`` and return its data as text."""
    expected = code[:1] + bytes([code[1] + 1])
    assert response[:2] == expected, response
    assert response[2:4] == b"00", response
    return response[4:].decode("latin-1")


def error(response: bytes, code: bytes) -> str:
    expected = code[:1] + bytes([code[1] + 1])
    assert response[:2] == expected, response
    return response[2:4].decode("ascii")
