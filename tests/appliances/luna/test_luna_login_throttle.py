"""Password guessing on the appliance shell is throttled, and the owner is never locked out.

Delays are measured through an injected clock and sleep: nothing here waits for real.
"""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
from luna_helpers import FACTORY_PASSWORD, config, connect, guarded

from hsmcloud.appliances.luna.appliance import LunaAppliance
from hsmcloud.appliances.luna.lunash.login_throttle import LoginPolicy, LoginThrottle


class FakeTime:
    """A clock that only moves when the throttle sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def throttle(time: FakeTime, **policy) -> LoginThrottle:
    return LoginThrottle(LoginPolicy(**policy), clock=time.clock, sleep=time.sleep)


async def attempt(limiter: LoginThrottle, source: str, ok: bool) -> bool:
    async def verify() -> bool:
        return ok

    return await limiter.check(source, verify)


def test_each_further_failure_waits_longer_up_to_the_cap_and_a_success_resets():
    async def scenario():
        time = FakeTime()
        limiter = throttle(time)
        waits = []
        for _ in range(10):
            waits.append(limiter.wait("127.0.0.1"))
            assert not await attempt(limiter, "127.0.0.1", False)
        assert waits == [0, 0, 0, 0, 1, 2, 4, 8, 8, 8]  # three typos cost nothing, then doubling to 8 s
        assert time.sleeps == [1, 2, 4, 8, 8, 8]
        assert limiter.failures("127.0.0.1") == 10
        # The right password still works: after the delay, never refused.
        assert await attempt(limiter, "127.0.0.1", True)
        assert time.sleeps[-1] == 8
        assert limiter.failures("127.0.0.1") == 0 and limiter.wait("127.0.0.1") == 0

    asyncio.run(scenario())


def test_failures_from_many_sources_are_throttled_together():
    async def scenario():
        time = FakeTime()
        limiter = throttle(time)
        for i in range(12):
            assert not await attempt(limiter, f"127.0.0.{i + 2}", False)
        # No source failed more than once, but the twelve together passed the overall allowance of 10.
        assert time.sleeps == [1]
        assert limiter.wait("127.9.9.9") == 2
        assert await attempt(limiter, "127.9.9.9", True)
        assert limiter.wait("127.0.0.2") == 0

    asyncio.run(scenario())


def test_old_failures_are_forgotten():
    async def scenario():
        time = FakeTime()
        limiter = throttle(time, forget_after=900)
        for _ in range(6):
            await attempt(limiter, "127.0.0.1", False)
        assert limiter.wait("127.0.0.1") > 0
        time.now += 900
        assert limiter.wait("127.0.0.1") == 0 and limiter.failures("127.0.0.1") == 0

    asyncio.run(scenario())


def test_checks_take_turns_so_parallel_guesses_are_no_faster():
    async def scenario():
        time = FakeTime()
        limiter = throttle(time, free_failures=0, overall_free_failures=0)
        results = await asyncio.gather(*(attempt(limiter, "127.0.0.1", False) for _ in range(4)))
        assert results == [False] * 4
        assert time.sleeps == [1, 2, 4]  # each waited for the failures before it

    asyncio.run(scenario())


class Guesser(asyncssh.SSHClient):
    """Offers the passwords of a list one after the other on one connection."""

    def __init__(self, passwords: list[str]) -> None:
        self.passwords = list(passwords)

    def password_auth_requested(self) -> str | None:
        return self.passwords.pop(0) if self.passwords else None


async def guess(appliance: LunaAppliance, passwords: list[str]) -> asyncssh.PermissionDenied:
    with pytest.raises(asyncssh.PermissionDenied) as refused:
        async with asyncssh.connect(appliance.config.address, appliance.ssh_port, username="admin",
                                    known_hosts=None, client_keys=None, agent_path=None,
                                    preferred_auth="password", client_factory=lambda: Guesser(passwords)):
            pass
    return refused.value


def test_guessing_over_ssh_is_delayed_and_cut_off_but_the_right_password_works(tmp_path):
    async def scenario():
        time = FakeTime()
        appliance = LunaAppliance(config(tmp_path), login_throttle=throttle(time))
        await appliance.start()
        try:
            # Six wrong passwords on one connection: the fifth and sixth wait, then the connection is dropped.
            dropped = await guess(appliance, [f"wrong-{i}" for i in range(10)])
            assert "Too many authentication failures" in dropped.reason
            assert time.sleeps == [1, 2]
            # A new connection goes on where the last one stopped.
            await guess(appliance, ["wrong-a", "wrong-b"])
            assert time.sleeps == [1, 2, 4, 8]
            # The right password, after its wait, logs in.
            async with connect(appliance, FACTORY_PASSWORD) as conn:
                assert "You must change the admin password" in (await conn.run("hsm show")).stdout
            assert time.sleeps == [1, 2, 4, 8, 8]
            # And the count starts again: a typo now is not delayed.
            await guess(appliance, ["typo"])
            assert time.sleeps == [1, 2, 4, 8, 8]
            lines = [e.line for e in appliance.state.log_tail(100)]
            assert sum("Failed password for admin" in line for line in lines) == 9
            assert sum("Accepted password for admin" in line for line in lines) == 1
            assert sum("Too many authentication failures for admin" in line for line in lines) == 1
            assert any("7 failed logins in a row from 127.0.0.1: the next password check waits 8 s" in line
                       for line in lines)
        finally:
            await appliance.stop()

    guarded(scenario())


def test_connections_that_never_log_in_are_capped(tmp_path):
    async def scenario():
        time = FakeTime()
        appliance = LunaAppliance(config(tmp_path), login_throttle=throttle(time, max_unauthenticated=2))
        await appliance.start()
        try:
            lurkers = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection(appliance.config.address, appliance.ssh_port)
                assert (await reader.readline()).startswith(b"SSH-2.0-")
                lurkers.append(writer)
            with pytest.raises((asyncssh.Error, ConnectionError)):
                async with connect(appliance, FACTORY_PASSWORD):
                    pass
            lines = [e.line for e in appliance.state.log_tail(10)]
            assert any("drop connection from 127.0.0.1" in line and "2 connections are already logging in" in line
                       for line in lines)
            lurkers.pop().close()
            while True:  # as soon as the appliance has seen the lurker go, the owner gets in
                try:
                    async with connect(appliance, FACTORY_PASSWORD) as conn:
                        assert (await conn.run("hsm show")).exit_status == 1  # must change the password first
                    break
                except (asyncssh.Error, ConnectionError):
                    await asyncio.sleep(0.01)
            for writer in lurkers:
                writer.close()
        finally:
            await appliance.stop()

    guarded(scenario())


def test_login_policy_is_checked():
    for bad in (dict(first_delay=0), dict(first_delay=9, max_delay=8), dict(max_auth_tries=0),
                dict(max_unauthenticated=0), dict(free_failures=-1), dict(forget_after=0)):
        with pytest.raises(ValueError):
            LoginPolicy(**bad)
