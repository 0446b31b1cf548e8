"""A performance licence change on an allocated device (a payment HSM's SKU change): the provider
installs the new calls per second through /provider/licence and the tenant's content stays."""

from __future__ import annotations

from hsmcloud.appliances.payshield.host_server import RateLimiter
from payshield_helpers import allocate, config, guarded, load_lmk, management, running, tenant


def test_provider_installs_another_calls_per_second_licence(tmp_path):
    async def scenario():
        async with running(config(tmp_path, lmk_slots=1, calls_per_second=60)) as appliance:
            await allocate(appliance)
            loaded = await load_lmk(appliance)
            async with management(appliance) as provider:
                for bad in ({"cps": 0}, {"cps": True}, {"cps": "2500"}, {}, {"cps": 250, "colour": "red"}):
                    assert (await provider.put("/provider/licence", json=bad)).status_code == 400, bad
                assert (await provider.get("/health")).json()["licence"]["cps"] == 60
                licence = (await provider.put("/provider/licence", json={"cps": 2500})).json()
                assert (licence["cps"], licence["lmk_slots"], licence["cps_limit_lifted"]) == (2500, 1, False)
            async with tenant(appliance) as client:
                [lmk] = (await client.get("/lmk")).json()["lmks"]
                assert lmk["check_value"] == loaded["check_value"]  # customer content untouched
                audit = (await client.get("/logs/audit")).json()["entries"]
                [change] = [e for e in audit if e["action"] == "licence.cps"]
                assert change["actor"] == "provider" and (change["before"], change["after"]) == (60, 2500)

    guarded(scenario())


def test_a_new_rate_paces_the_next_calls():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for _ in range(60):
        limiter.delay()
    assert abs(limiter.delay() - 1 / 60) < 1e-9
    limiter.rate = 2500  # what PayShieldAppliance.set_calls_per_second does
    now[0] += 1.0
    assert [limiter.delay() for _ in range(2000)] == [0.0] * 2000  # the bucket refills at the new rate
