"""The long-running client: every implemented host command, mixed over HOST1 (plain TCP) and
HOST2 (TLS), many connections at once, against an appliance set up as a tenant gets it (cards,
LMKs, authorised state, TLS through the management API). Every answer is checked against
values computed by psec / pyemv / cryptography / hashlib (payshield_oracle, payshield_workload).

The default run sends a few hundred commands; the ``soak`` run (``-m soak``) sends
HSMCLOUD_PAYSHIELD_SOAK_COMMANDS (default 20,000) over HSMCLOUD_PAYSHIELD_SOAK_CONNECTIONS
(default 64) connections.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import ssl
import time

import pytest

from hsmcloud.appliances.payshield.host_commands import COMMANDS

from payshield_helpers import (
    TEST_LMK,
    HostClient,
    allocate,
    authorize,
    config,
    load_lmk,
    management,
    running,
    tenant,
)
from payshield_workload import Workload

#: Commands whose generation costs the appliance an RSA key pair: sent less often.
RARE = {"EI": 0.2}


def schedule(rng: random.Random, commands: list[str], total: int, each: int) -> list[str]:
    """Every command ``each`` times, the rest drawn at random (RARE ones less often), shuffled."""
    weights = [RARE.get(c, 1.0) for c in commands]
    plan = [c for c in commands for _ in range(each)]
    plan += rng.choices(commands, weights=weights, k=max(0, total - len(plan)))
    rng.shuffle(plan)
    return plan


async def prepared(appliance) -> tuple[bytes, ssl.SSLContext]:
    """Claim, load both LMKs from cards, authorise them, lift the licence, TLS on HOST2."""
    keyblock_key = os.urandom(32)
    await allocate(appliance)
    await load_lmk(appliance, TEST_LMK, slot=0)
    await load_lmk(appliance, keyblock_key, scheme="keyblock", slot=1)
    await authorize(appliance, 0)
    await authorize(appliance, 1)
    async with management(appliance) as provider:
        assert (await provider.put("/provider/licence", json={"cps_limit_lifted": True})).status_code == 200
    async with tenant(appliance) as api:
        assert (await api.put("/host-tls", json={"host2": "on"})).status_code == 200
        pem = (await api.get("/host-tls/server-certificate")).text
    return keyblock_key, ssl.create_default_context(cadata=pem)


async def run_mix(appliance, keyblock_key: bytes, context: ssl.SSLContext, *, total: int, connections: int,
                  seed: int) -> collections.Counter:
    rng = random.Random(seed)
    workload = Workload(rng, keyblock_key)
    plan = schedule(rng, workload.commands, total, each=2)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for code in plan:
        queue.put_nowait(code)
    sent: collections.Counter = collections.Counter()
    failures: list[str] = []

    async def client(index: int) -> None:
        if index % 2 == 0:
            conn = await HostClient.connect(appliance.config.address, appliance.host1_port)
        else:
            conn = await HostClient.connect(appliance.host2_address, appliance.host2_port, ssl=context)
        try:
            while True:
                try:
                    code = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                exchange = workload.exchange(code)
                header = b"%04d" % rng.randrange(10000)
                response = await conn.call(exchange.request, header=header)
                sent[code] += 1
                try:
                    exchange.check(response)
                except AssertionError as exc:
                    failures.append(f"{code} on HOST{1 + index % 2}: {exc!r}"[:400])
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(connections)))
    assert not failures, f"seed {seed}: {len(failures)} wrong answers, first: {failures[:5]}"
    assert sum(sent.values()) == len(plan)
    return sent


async def error_log_codes(appliance) -> collections.Counter:
    async with tenant(appliance) as api:
        entries = (await api.get("/logs/error")).json()["entries"]
    return collections.Counter(e["error_code"] for e in entries)


def test_the_workload_covers_every_implemented_command():
    workload = Workload(random.Random(0), os.urandom(32))
    assert set(workload.commands) == set(COMMANDS), "a host command has no soak exchange (or one is gone)"


def _soak(tmp_path, *, total: int, connections: int, seed: int, budget: float) -> None:
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            keyblock_key, context = await prepared(appliance)
            started = time.monotonic()
            sent = await run_mix(appliance, keyblock_key, context, total=total, connections=connections, seed=seed)
            elapsed = time.monotonic() - started
            # Only the deliberate verification failures (01/02) reach the error log: no 41, no framing.
            logged = await error_log_codes(appliance)
            assert set(logged) <= {"01", "02"}, logged
            print(f"\nsoak: {sum(sent.values())} commands, {len(sent)} kinds, {connections} connections, "
                  f"{elapsed:.1f} s, {sum(sent.values()) / elapsed:.0f} commands/s")

    asyncio.run(asyncio.wait_for(scenario(), budget))


def test_a_mixed_client_on_both_host_ports_gets_every_answer_right(tmp_path):
    _soak(tmp_path, total=600, connections=16, seed=int.from_bytes(os.urandom(4), "big"), budget=120)


@pytest.mark.soak
def test_soak_every_command_over_many_connections(tmp_path):
    total = int(os.environ.get("HSMCLOUD_PAYSHIELD_SOAK_COMMANDS", "20000"))
    connections = int(os.environ.get("HSMCLOUD_PAYSHIELD_SOAK_CONNECTIONS", "64"))
    _soak(tmp_path, total=total, connections=connections, seed=int.from_bytes(os.urandom(4), "big"),
          budget=max(600, total / 20))
