"""Two workers on one store: one is SIGKILLed in the middle of a step, the other takes the step over
once the dead worker's lease has expired. Each step's effect happens once, no device leaks or is
held twice, and every HSM reaches a final state."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter

from sqlalchemy import select

from hsmcloud.store.db import make_engine
from hsmcloud.store.models import DedicatedHsm, Device, Event, Operation
from tests.conftest import start_cloud
from tests.controlplane.test_crash_safety import Service, database_url, wait_for  # noqa: F401 - fixture
from tests.controlplane.test_rules import PAY, hsm_url
from tests.helpers import HSM_API, hsm_body, make_network

LEASE = "2.5"  # seconds: short, so the survivor takes over soon; renewed every third of it while a step runs


def store_url(tmp_path, database_url) -> str:  # noqa: F811 - the fixture's value
    return database_url or f"sqlite:///{tmp_path / 'hsmcloud.db'}"


def test_a_worker_killed_mid_step_is_taken_over_after_its_lease_expires(tmp_path, database_url):  # noqa: F811
    # The survivor runs in this process (it starts in a second); the worker to kill is `hsmcloud up`.
    second = start_cloud(tmp_path, backend="postgres" if database_url else "sqlite", database_url=database_url,
                         operation_lease_seconds=float(LEASE))
    survivor, joined = second.services.lifecycle.engine, threading.Event()
    runs_steps = survivor.run_once

    async def joins_later() -> bool:  # the survivor claims nothing until the first worker is caught mid-step
        return await runs_steps() if joined.is_set() else False

    survivor.run_once = joins_later
    first = Service(tmp_path, database_url, "--step-delay", "0", "--operation-lease-seconds", LEASE)
    first.start()
    engine = make_engine(store_url(tmp_path, database_url))
    try:
        first_worker = f"{os.uname().nodename}:{first.proc.pid}"
        sub = str(uuid.uuid4())
        with first.http(operator=True) as op:
            assert op.put(f"/operator/subscriptions/{sub}/allowlist").status_code == 200
        with first.http(sub) as c:
            subnet = make_network(c, sub)
            for name, sku in (("take1", PAY), ("take2", "SafeNet Luna Network HSM A790")):
                assert c.put(hsm_url(sub, "hsm-rg", name), params={"api-version": HSM_API},
                             json=hsm_body(subnet, sku=sku)).status_code == 201

        def held_by_first():
            with engine.connect() as conn:
                return conn.execute(select(Operation).where(
                    Operation.lease_owner == first_worker, Operation.step == "Provisioning",
                    Operation.status == "InProgress")).first()

        # Freeze the first worker while it holds a Provisioning step; if the step turns out to have
        # committed just before, let it go on and catch it at the next one. Then SIGKILL it there.
        row, deadline = None, time.monotonic() + 60
        while row is None:
            assert time.monotonic() < deadline, "the first worker was never caught in a Provisioning step"
            if held_by_first() is None:
                time.sleep(0.005)
                continue
            first.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.05)  # a commit it had already sent lands now
            row = held_by_first()
            if row is None:
                first.proc.send_signal(signal.SIGCONT)
        first.kill()  # in the middle of the step: its appliance calls and its commit never finish
        joined.set()

        with second.http(sub) as c:
            def final(name: str) -> str:
                return c.get(hsm_url(sub, "hsm-rg", name), params={"api-version": HSM_API}).json()[
                    "properties"]["provisioningState"]
            wait_for(lambda: {final("take1"), final("take2")} <= {"Succeeded", "Failed"}, "both creates to end")
            assert (final("take1"), final("take2")) == ("Succeeded", "Succeeded")
        with engine.connect() as conn:
            taken_over = conn.execute(select(Operation).where(Operation.id == row.id)).first()
            hsms = {h.name: h for h in conn.execute(select(DedicatedHsm).where(DedicatedHsm.subscription_id == sub))}
            allocated = list(conn.execute(select(Device).where(Device.state == "allocated")))
            events = Counter((e.action, e.subject) for e in conn.execute(select(Event)))
        # The second worker claimed it with a new epoch and finished it (had the first one's commit
        # landed, nobody would have claimed it again).
        assert taken_over.status == "Succeeded" and taken_over.lease_epoch > row.lease_epoch
        # One device each, not shared, and nothing else held.
        assert sorted(d.hsm_id for d in allocated) == sorted(h.id for h in hsms.values())
        assert len({h.device_serial for h in hsms.values()}) == 2
        for h in hsms.values():
            assert events[("device.allocate", h.device_serial)] == 1
            hsm_arm = [subject for (action, subject) in events if action == "hsm.provisioned" and
                       subject.endswith(f"/{h.name}")]
            assert [events[("hsm.provisioned", s)] for s in hsm_arm] == [1]

        # The survivor reclaims both devices (the dead worker's appliances went with it).
        with second.http(operator=True) as op:
            for name in ("take1", "take2"):
                r = op.post(f"/operator/subscriptions/{sub}/resourceGroups/hsm-rg/dedicatedHSMs/{name}/forceDelete")
                assert r.status_code == 202, r.text
                loc = r.json()["location"]
                wait_for(lambda: op.get(loc).status_code != 202, f"{name} to be deleted")
                assert op.get(loc).status_code == 200
            devices = {d["serial"]: d for d in op.get("/operator/devices").json()["value"]}
        assert [s for s, d in devices.items() if d["state"] != "free" and d["role"] == "customer"] == []
        assert all(devices[h.device_serial]["lastCheckedPristineAt"] for h in hsms.values())
    finally:
        first.stop()
        second.stop()
        second.services.store.close()
        engine.dispose()
