"""Throttling of password logins to the appliance shell: delays, never a lockout.

A real Luna appliance limits guessing through its SSH settings: six wrong passwords drop the
session, at most 10 sessions may be logging in at once, and the pace of password checks makes
six attempts take more than 15 seconds. There is no lockout, and there must not be one: losing
the ``admin`` account loses the keys (only a provider reset recovers the device), so a lockout
would hand anyone on the network a way to deny the owner their HSM.

Here, on top of those two limits, each password check waits for its turn: checks run one at a
time; the first ``free_failures`` consecutive failures from one source cost nothing, and each
further one makes the next check wait ``first_delay`` seconds, doubling up to ``max_delay``; the
same holds for failures from all sources together beyond ``overall_free_failures`` (every client
on a loopback address can pick its own source address). With the defaults, three wrong passwords
in a row cost nothing; after the fourth the next check waits 1 s, then 2, 4 and 8 s.
A success resets the count of its source and the overall one; failures that are ``forget_after``
seconds old are forgotten. The wait is derived from the stored time of the last failure, not
from a timer, and ``clock``/``sleep`` are injectable, so tests need not sleep.

The rightful owner always gets in after at most the delays of the checks queued before theirs
(bounded by ``max_unauthenticated`` connections, one pending check each).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class LoginPolicy:
    """The numbers of the throttle; the defaults are the appliance's."""

    #: Consecutive failures from one source that delay nothing.
    free_failures: int = 3
    #: The same for failures from all sources together.
    overall_free_failures: int = 10
    first_delay: float = 1.0
    max_delay: float = 8.0
    #: Seconds after which a source's failures no longer count.
    forget_after: float = 900.0
    #: Wrong passwords on one connection before it is dropped (OpenSSH's MaxAuthTries).
    max_auth_tries: int = 6
    #: Connections allowed to be logging in at the same time (OpenSSH's MaxStartups).
    max_unauthenticated: int = 10

    def __post_init__(self) -> None:
        for name in ("free_failures", "overall_free_failures"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("max_auth_tries", "max_unauthenticated"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError("delays must satisfy 0 < first_delay <= max_delay")
        if self.forget_after <= 0:
            raise ValueError("forget_after must be positive")

    def delay(self, failures: int, free: int) -> float:
        """Seconds a check waits after ``failures`` consecutive failures when ``free`` of them cost nothing."""
        if failures <= free:
            return 0.0
        return min(self.first_delay * 2 ** (failures - free - 1), self.max_delay)


@dataclass(kw_only=True)
class _Failures:
    count: int
    last_at: float


class LoginThrottle:
    """Consecutive failed logins per source and overall, and the wait they impose on the next check."""

    def __init__(
        self,
        policy: LoginPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy or LoginPolicy()
        self._clock = clock
        self._sleep = sleep
        self._sources: dict[str, _Failures] = {}
        self._overall: _Failures | None = None
        self._turn = asyncio.Lock()

    def _current(self, failures: _Failures | None, now: float) -> _Failures | None:
        if failures is None or now - failures.last_at >= self.policy.forget_after:
            return None
        return failures

    def failures(self, source: str) -> int:
        """Consecutive failures from ``source`` that still count."""
        current = self._current(self._sources.get(source), self._clock())
        return current.count if current else 0

    def wait(self, source: str) -> float:
        """Seconds until a check from ``source`` may run, from the times of the last failures."""
        now, policy = self._clock(), self.policy
        waits = [0.0]
        for failures, free in ((self._sources.get(source), policy.free_failures),
                               (self._overall, policy.overall_free_failures)):
            current = self._current(failures, now)
            if current is not None:
                waits.append(current.last_at + policy.delay(current.count, free) - now)
        return max(waits)

    async def check(self, source: str, verify: Callable[[], Awaitable[bool]]) -> bool:
        """Run ``verify`` when it is this source's turn; record and return its verdict."""
        async with self._turn:
            wait = self.wait(source)
            if wait > 0:
                await self._sleep(wait)
            ok = await verify()
            self._record(source, ok)
            return ok

    def _record(self, source: str, ok: bool) -> None:
        now = self._clock()
        if ok:
            self._sources.pop(source, None)
            self._overall = None
            return
        # Forgotten entries are dropped here, so a client cycling through source addresses
        # cannot grow the table beyond what failed within forget_after.
        self._sources = {s: f for s, f in self._sources.items() if self._current(f, now) is not None}
        previous = self._sources.get(source)
        self._sources[source] = _Failures(count=(previous.count if previous else 0) + 1, last_at=now)
        overall = self._current(self._overall, now)
        self._overall = _Failures(count=(overall.count if overall else 0) + 1, last_at=now)
