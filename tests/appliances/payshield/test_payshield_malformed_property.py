"""Every host command answers unknown or malformed fields with an error code the manual gives it.

Property (hypothesis): take a valid request of each command (payshield_workload) and truncate
it, lengthen it, put a non-hex character, a wrong LMK identifier, a wrong key scheme tag or
random bytes into it. The answer is a well-formed response to that command whose error code is
``00``/``01`` (the change kept it valid) or one of the codes the manual documents for the
command (payshield_oracle.DOCUMENTED_ERRORS): never 41, never an exception. The security
domain is unchanged afterwards. The same mutations sent over a real host connection leave the
connection serving.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsmcloud.appliances.payshield.host_commands import COMMANDS, execute

import payshield_oracle as o
from payshield_helpers import TEST_LMK, allocate, authorize, config, host, load_lmk, running, tenant
from payshield_inprocess import Host
from payshield_workload import Exchange, Workload

NON_HEX = "GHIJKLMNOPQRSTUVWXYZghijklmnopqrstuvwxyz!#%&;=?^_|~ \x00\x19\xff"
SCHEME_TAGS = "ZUTXYSRQ0F"
#: Commands whose valid requests make an RSA key pair: fewer examples keep the run short.
COSTLY = {"EI"}
#: Answered from the host ports' runtime (counters, sockets): checked over a real host port only.
RUNTIME = {"J2", "J4", "J8", "JK", "NI"}


def _base_exchanges(workload: Workload, per_command: int = 3) -> dict[str, list[Exchange]]:
    return {code: [workload.exchange(code) for _ in range(per_command)] for code in workload.commands
            if code not in RUNTIME}


@pytest.fixture(scope="module")
def hsm() -> Host:
    h = Host()
    h.domain.authorised = {0, 1}
    return h


@pytest.fixture(scope="module")
def exchanges(hsm) -> dict[str, list[Exchange]]:
    return _base_exchanges(Workload(random.Random(7), hsm.keyblock_key))


def mutate(request: bytes, exchange: Exchange, kind: str, rnd: random.Random) -> bytes:
    """One malformed variant of ``request`` (the 2-character command code is kept)."""
    body = request[2:]
    if kind == "truncated" and body:
        return request[: 2 + rnd.randrange(len(body))]
    if kind == "over-long":
        return request + bytes(rnd.choice(b"0123456789ABCDEF;%#!") for _ in range(rnd.randint(1, 24)))
    if kind == "non-hex" and body:
        at = rnd.randrange(len(body))
        return request[:2] + body[:at] + rnd.choice(NON_HEX).encode("latin-1") + body[at + 1 :]
    if kind == "lmk-id":
        wrong = rnd.choice(("02", "05", "99", "0A", "X1", "1"))
        if exchange.lmk_id is not None:
            return request.replace(b"%" + exchange.lmk_id.encode(), b"%" + wrong.encode(), 1)
        return request + b"%" + wrong.encode()
    if kind == "scheme-tag" and exchange.keys:
        key = rnd.choice(exchange.keys)
        at = request.find(key)
        tag = rnd.choice([t for t in SCHEME_TAGS if t.encode() != key[:1]])
        return request[:at] + tag.encode() + request[at + 1 :]
    if kind == "random-bytes" and body:
        start = rnd.randrange(len(body))
        end = min(len(body), start + rnd.randint(1, 16))
        return request[:2] + body[:start] + rnd.randbytes(end - start) + body[end:]
    return request[:2] + rnd.randbytes(rnd.randint(0, 64))


KINDS = ("truncated", "over-long", "non-hex", "lmk-id", "scheme-tag", "random-bytes", "garbage")


def snapshot(h: Host) -> tuple:
    domain = h.domain
    lmks = tuple(sorted((slot, lmk.check_value()) for slot, lmk in domain.lmks.items()))
    return lmks, frozenset(domain.authorised), repr(h.settings)


def check_answer(code: str, request: bytes, response: bytes) -> None:
    error = o.well_formed(response, code)
    assert error != "41", (code, request[:120], response[:40])
    allowed = {"00", "01"} | o.documented_errors(code)
    assert error in allowed, (code, error, request[:160])


def test_every_command_has_a_documented_error_set():
    assert set(COMMANDS) <= set(o.DOCUMENTED_ERRORS)


@pytest.mark.parametrize("code", sorted(COMMANDS))
@settings(max_examples=int(os.environ.get("HSMCLOUD_PAYSHIELD_PROPERTY_EXAMPLES", "100")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(data=st.data())
def test_malformed_requests_get_a_documented_error_and_change_nothing(hsm, exchanges, code, data):
    if code in RUNTIME:
        pytest.skip("needs the host ports' runtime: covered by the host-port test below")
    if code in COSTLY and data.draw(st.integers(0, 3)) != 0:
        return
    exchange = data.draw(st.sampled_from(exchanges[code]))
    kind = data.draw(st.sampled_from(KINDS))
    rnd = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    request = mutate(exchange.request, exchange, kind, rnd)
    before = snapshot(hsm)
    outcome = execute(b"HEAD" + request, hsm.domain, hsm.settings)
    assert outcome.response[:4] == b"HEAD"
    check_answer(code, request, outcome.response[4:])
    assert snapshot(hsm) == before


async def appliance_state(appliance) -> tuple:
    """What a tenant sees of the security domain: LMKs (with check values), settings, TLS."""
    async with tenant(appliance) as api:
        return tuple([(await api.get(path)).json() for path in ("/lmk", "/settings", "/host-tls")])


def test_malformed_requests_over_a_host_port_keep_the_connection(tmp_path):
    """Every command, every kind of damage, one connection: each gets an answer, and the
    connection still serves a valid request at the end."""
    keyblock_key = os.urandom(32)
    workload = Workload(random.Random(11), keyblock_key)
    rnd = random.Random(12)

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance, TEST_LMK, slot=0)
            await load_lmk(appliance, keyblock_key, scheme="keyblock", slot=1)
            await authorize(appliance, 0)
            await authorize(appliance, 1)
            before = await appliance_state(appliance)
            client = await host(appliance, 1)
            for code in workload.commands:
                exchange = workload.exchange(code)
                for kind in KINDS:
                    if code in COSTLY and kind in ("over-long", "lmk-id"):
                        continue
                    request = mutate(exchange.request, exchange, kind, rnd)
                    check_answer(code, request, await client.call(request))
            valid = workload.exchange("CW")
            valid.check(await client.call(valid.request))
            await client.close()
            assert await appliance_state(appliance) == before


    asyncio.run(asyncio.wait_for(scenario(), 120))
