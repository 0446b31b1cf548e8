"""Stalled host connections cannot lock a payment HSM: timeouts, and room made for newcomers.

Timeouts are set small in the test configuration; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio

import pytest
from payshield_helpers import HostClient, allocate, config, guarded, load_lmk, running, tenant

from hsmcloud.appliances.payshield.host_commands import Outcome
from hsmcloud.appliances.payshield.host_server import ConnectionLimits, HostPort
from hsmcloud.appliances.payshield.product import TCP_CONNECTIONS_PER_INTERFACE

#: Half a message: the length says 32 bytes, 4 arrive.
PARTIAL = b"\x00\x20HEAD"


async def stall(address: str, port: int, count: int) -> list[HostClient]:
    clients = []
    for _ in range(count):
        client = await HostClient.connect(address, port)
        await client.send_raw(PARTIAL)
        clients.append(client)
    return clients


async def closed_by_appliance(client: HostClient) -> bool:
    """True once the appliance closed the connection (EOF or reset), with nothing answered."""
    try:
        return await client.reader.read() == b""
    except ConnectionError:
        return True


async def settle(appliance, count: int) -> None:
    """Wait until the appliance has taken in every connection made so far."""
    while appliance.health()["host_connections"] != count:
        await asyncio.sleep(0.01)


async def error_log(appliance) -> list[dict]:
    async with tenant(appliance) as api:
        return (await api.get("/logs/error")).json()["entries"]


def test_seventy_stalled_connections_do_not_lock_out_a_client(tmp_path):
    async def scenario():
        # Timeouts far beyond the test: what frees the slots here is the room made for newcomers.
        async with running(config(tmp_path, host_idle_timeout=600, host_frame_timeout=600)) as appliance:
            await allocate(appliance)
            check_value = (await load_lmk(appliance))["check_value"]
            address = appliance.config.address
            stalled1 = await stall(address, appliance.host1_port, 70)
            stalled2 = await stall(appliance.host2_address, appliance.host2_port, 70)
            await settle(appliance, 2 * TCP_CONNECTIONS_PER_INTERFACE)
            for port in (appliance.host1_port, appliance.host2_port):
                client = await HostClient.connect(address, port)
                assert await client.call(b"NC") == b"ND00" + check_value.encode() + b"1500-1803"
                await client.close()
            # Stalled connections made room (70 - 64 + 1 on each port): the ones that had waited
            # longest since the appliance took them in (with several host worker processes, the
            # order in which the processes took them in, not quite the order they connected)...
            await settle(appliance, 2 * (TCP_CONNECTIONS_PER_INTERFACE - 1))  # the rest are still open
            for stalled in (stalled1, stalled2):
                checks = [asyncio.create_task(closed_by_appliance(client)) for client in stalled]
                done, pending = await asyncio.wait(checks, timeout=1.0)
                for check in pending:
                    check.cancel()
                assert len(done) == 70 - TCP_CONNECTIONS_PER_INTERFACE + 1
                assert all(check.result() for check in done)
                assert sum(checks.index(check) < 20 for check in done) >= 5  # mostly among the oldest
            # ...and the error log says so.
            made_room = [e for e in await error_log(appliance)
                         if e["error_code"] == "connection" and "to make room" in e["message"]]
            assert len(made_room) == 14 and {e["source"] for e in made_room} == {"HOST1", "HOST2"}
            for client in stalled1 + stalled2:
                await client.close()

    guarded(scenario())


def test_a_partial_frame_is_closed_after_the_frame_timeout(tmp_path):
    async def scenario():
        async with running(config(tmp_path, host_idle_timeout=600, host_frame_timeout=0.2)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            [stalled] = await stall(appliance.config.address, appliance.host1_port, 1)
            assert await closed_by_appliance(stalled)
            # Trickling a frame byte by byte does not keep it alive either: the time runs from its first byte.
            trickler = await HostClient.connect(appliance.config.address, appliance.host2_port)
            frame = b"\x00\x06HEADNC"
            with pytest.raises(ConnectionError):
                for byte in frame * 20:
                    await trickler.send_raw(bytes([byte]))
                    await asyncio.sleep(0.05)
                    if trickler.reader.at_eof():
                        raise ConnectionResetError
            await trickler.close()
            # A client that sends whole frames is served as before.
            client = await HostClient.connect(appliance.config.address, appliance.host1_port)
            assert (await client.call(b"NC"))[:4] == b"ND00"
            await client.close()
            timeouts = [e for e in await error_log(appliance)
                        if e["error_code"] == "framing" and "incomplete message" in e["message"]]
            assert {e["source"] for e in timeouts} == {"HOST1", "HOST2"}

    guarded(scenario())


def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path):
    async def scenario():
        async with running(config(tmp_path, host_idle_timeout=0.2, host_frame_timeout=600)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            client = await HostClient.connect(appliance.config.address, appliance.host1_port)
            assert (await client.call(b"NC"))[:4] == b"ND00"
            assert await closed_by_appliance(client)  # then nothing more: closed
            idle = [e for e in await error_log(appliance) if e["error_code"] == "connection"]
            assert len(idle) == 1 and idle[0]["message"].startswith("idle for 0.2 s")

    guarded(scenario())


class Gate:
    """A host-command processor that answers only when the test lets it."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrived = 0

    async def __call__(self, body: bytes, port: str, peer: str) -> Outcome:
        self.arrived += 1
        if body.endswith(b"WAIT"):
            await self.open.wait()
        return Outcome(response=body[:4] + b"ND00", command="NC", error_code="00", message="")


class Events:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str]] = []

    def __call__(self, port: str, peer: str, kind: str, message: str) -> None:
        self.entries.append((peer, kind, message))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_busy_client_is_never_closed_in_favour_of_an_idle_one():
    async def scenario():
        gate, events, clock = Gate(), Events(), FakeClock()
        port = HostPort("HOST1", gate, events, limits=ConnectionLimits(max_connections=4, idle_timeout=600,
                                                                       frame_timeout=600), clock=clock)
        await port.start("127.0.0.1", 0)
        try:
            # The busy client connects first, so it is the oldest connection.
            busy = await HostClient.connect("127.0.0.1", port.port)
            assert await busy.call(b"NC") == b"ND00"
            clock.now = 10.0
            idle = [await HostClient.connect("127.0.0.1", port.port) for _ in range(3)]
            while port.connections < 4:
                await asyncio.sleep(0.01)
            # Its next command is being executed: a newcomer takes an idle one's slot, not its.
            clock.now = 20.0
            await busy.send_raw(b"\x00\x08HEADWAIT")
            while gate.arrived < 2:
                await asyncio.sleep(0.01)
            newcomer = await HostClient.connect("127.0.0.1", port.port)
            assert await closed_by_appliance(idle[0])
            gate.open.set()
            assert await busy.receive() == b"HEADND00"
            # Answered at t=20, it is now fresher than the idle ones, which go first.
            clock.now = 30.0
            later = []
            for victim in idle[1:]:
                later.append(await HostClient.connect("127.0.0.1", port.port))
                assert await closed_by_appliance(victim)
            for client in [busy, newcomer] + later:
                assert await client.call(b"NC") == b"ND00"
            assert [kind for _, kind, _ in events.entries] == ["connection"] * 3
            assert all("to make room" in message for _, _, message in events.entries)
        finally:
            await port.stop()

    guarded(scenario())


def test_a_newcomer_is_refused_only_when_every_connection_is_executing():
    async def scenario():
        gate, events = Gate(), Events()
        port = HostPort("HOST2", gate, events, limits=ConnectionLimits(max_connections=2))
        await port.start("127.0.0.1", 0)
        try:
            working = [await HostClient.connect("127.0.0.1", port.port) for _ in range(2)]
            for client in working:
                await client.send_raw(b"\x00\x08HEADWAIT")
            while gate.arrived < 2:
                await asyncio.sleep(0.01)
            refused = await HostClient.connect("127.0.0.1", port.port)
            assert await closed_by_appliance(refused)
            gate.open.set()
            for client in working:
                assert await client.receive() == b"HEADND00"
            [(_, kind, message)] = events.entries
            assert kind == "connection" and "all 2 connections are executing commands" in message
        finally:
            await port.stop()

    guarded(scenario())


def test_connection_limits_are_checked():
    for bad in (dict(idle_timeout=0), dict(frame_timeout=-1), dict(max_connections=0)):
        with pytest.raises(ValueError):
            ConnectionLimits(**bad)
