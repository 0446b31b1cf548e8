"""The calls-per-second licence, driven by a fake clock (no wall-clock assertions)."""

from __future__ import annotations

from hsmcloud.appliances.payshield.host_server import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_beyond_the_licence_waits():
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock)
    waits = [limiter.delay() for _ in range(60)]
    assert waits == [0.0] * 60  # one second's worth of calls as a burst
    assert abs(limiter.delay() - 1 / 60) < 1e-9
    assert abs(limiter.delay() - 2 / 60) < 1e-9


def test_the_bucket_refills_with_time():
    clock = FakeClock()
    limiter = RateLimiter(250, clock=clock)
    for _ in range(250):
        limiter.delay()
    clock.now += 1.0
    assert [limiter.delay() for _ in range(250)] == [0.0] * 250
    assert limiter.delay() > 0


def test_a_lifted_licence_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock)
    limiter.lifted = True
    assert all(limiter.delay() == 0.0 for _ in range(10_000))
