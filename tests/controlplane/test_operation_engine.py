"""The operation engine on its own: leases, fencing and renewal with two workers on one store.

A toy operation kind stands in for the HSM lifecycle: its one step's act waits at a gate the
test opens, and its commit writes one audit event, the step's effect. A lease that "expires" is
moved into the past in the store, as time passing would do: no test here depends on timing."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from hsmcloud.controlplane import subscriptions
from hsmcloud.controlplane.engine import Engine, OperationKind, Step, StepContext, StepFailed
from hsmcloud.controlplane.operations import LeaseLost, claim_next, fence, new_operation
from hsmcloud.controlplane.scope import utcnow
from hsmcloud.errors import Conflict
from hsmcloud.store.db import Store
from hsmcloud.store.models import Event, Operation
from tests.conftest import fresh_pg_database


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_store(request, tmp_path_factory):
    if request.param == "sqlite":
        st = Store(f"sqlite:///{tmp_path_factory.mktemp('engine') / 'engine.db'}")
        yield st
        st.close()
        return
    with fresh_pg_database("hsmcloud_engine") as url:
        st = Store(url)
        yield st
        st.close()


@pytest.fixture
def store(shared_store):
    """One store per backend for the module; each test's operations end with it, so no other test claims them."""
    yield shared_store
    with shared_store.session() as s:
        s.execute(update(Operation).where(Operation.status == "InProgress").values(status="Failed"))


def start_toy(store: Store, kind: str = "toy.count") -> str:
    with store.session() as s:
        return new_operation(s, kind=kind, subscription_id="provider", location="lab", target="toy1",
                             step="Counting").id


def effects(store: Store, op_id: str) -> list[dict]:
    with store.session() as s:
        return [e.detail for e in s.scalars(select(Event).where(Event.action == "toy.effect",
                                                                Event.subject == op_id))]


def expire_lease(store: Store, op_id: str) -> None:
    """What the passing of the lease's time does: its expiry lies in the past."""
    with store.session() as s:
        s.execute(update(Operation).where(Operation.id == op_id)
                  .values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def op_row(store: Store, op_id: str) -> Operation:
    with store.session() as s:
        return s.get(Operation, op_id)


class Toy:
    """A one-step kind whose act waits at a gate for chosen workers and counts how it ended."""

    def __init__(self):
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []

    async def act(self, ctx: StepContext) -> None:
        me = ctx.engine.worker_id
        if me in self.entered:
            self.entered[me].set()
        if me in self.gates:
            try:
                await self.gates[me].wait()
            except asyncio.CancelledError:
                self.cancelled.append(me)
                raise

    @staticmethod
    def commit(ctx: StepContext, s, op) -> None:
        if ctx.params.get("refuse"):
            raise StepFailed(Conflict("The toy refuses.", code="ToyRefused"))
        subscriptions.record(s, ctx.engine.worker_id, "toy.effect", op.id, worker=ctx.engine.worker_id,
                             epoch=ctx.lease.epoch)

    def kind(self) -> OperationKind:
        return OperationKind(name="toy.count", first="Counting", succeeded=None, steps={
            "Counting": Step(shown="Counting", next=None, act=self.act, commit=self.commit)})


def engine(store: Store, toy: Toy, worker: str, *, lease: float = 30.0, renew: bool = True,
           renew_every: float | None = None) -> Engine:
    return Engine(store=store, kinds={"toy.count": toy.kind()}, worker_id=worker, lease_seconds=lambda: lease,
                  step_delay=lambda: 0.0, renew_leases=renew, renew_every=renew_every)


async def until(condition, what: str, polls: int = 600) -> None:
    for _ in range(polls):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never saw {what}")


def test_a_fenced_workers_late_write_is_refused(store):
    op_id = start_toy(store)
    with store.session() as s:
        _, lease_a = claim_next(s, "worker-a", 30)
    with store.session() as s:  # held: nobody else can claim it
        assert claim_next(s, "worker-b", 30) is None
    expire_lease(store, op_id)
    # Expired but not yet taken over: the owner may not write either.
    with pytest.raises(LeaseLost):
        with store.session() as s:
            fence(s, lease_a)
    with store.session() as s:
        _, lease_b = claim_next(s, "worker-b", 30)
    assert (lease_b.owner, lease_b.epoch) == ("worker-b", lease_a.epoch + 1)
    # A's late write, with everything it meant to write in the same transaction: refused, none of it kept.
    with pytest.raises(LeaseLost):
        with store.session() as s:
            fence(s, lease_a)
            subscriptions.record(s, "worker-a", "toy.effect", op_id)
    assert effects(store, op_id) == []
    with store.session() as s:
        fence(s, lease_b)
        subscriptions.record(s, "worker-b", "toy.effect", op_id)
    assert len(effects(store, op_id)) == 1
    assert op_row(store, op_id).lease_owner == "worker-b"


def test_step_blocked_past_its_lease_runs_once_and_the_late_worker_writes_nothing(store):
    toy = Toy()
    op_id = start_toy(store)

    async def scenario():
        toy.gates["worker-a"], toy.entered["worker-a"] = asyncio.Event(), asyncio.Event()
        a, b = engine(store, toy, "worker-a", renew=False), engine(store, toy, "worker-b", renew=False)
        a_run = asyncio.create_task(a.run_once())
        await toy.entered["worker-a"].wait()  # A is inside the step, blocked
        assert await b.run_once() is False  # A's lease holds
        expire_lease(store, op_id)  # A stays blocked past its lease (renewal disabled)
        assert await b.run_once() is True  # B takes the step over and finishes it
        toy.gates["worker-a"].set()
        assert await a_run is True  # A finishes its act late: its commit is refused

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))  # a hang is a failure
    assert effects(store, op_id) == [{"worker": "worker-b", "epoch": 2}]
    row = op_row(store, op_id)
    assert (row.status, row.lease_owner, row.lease_epoch) == ("Succeeded", None, 2)


def test_renewal_keeps_the_lease_while_a_step_runs(store):
    toy = Toy()
    op_id = start_toy(store)

    async def scenario():
        toy.gates["worker-a"], toy.entered["worker-a"] = asyncio.Event(), asyncio.Event()
        # A long lease (nothing here may expire by itself), renewed often.
        a, b = engine(store, toy, "worker-a", renew_every=0.05), engine(store, toy, "worker-b")
        a_run = asyncio.create_task(a.run_once())
        await toy.entered["worker-a"].wait()
        first = op_row(store, op_id).lease_expires_at
        seen = {first}

        def renewed_three_times() -> bool:
            assert not a_run.done(), "the step ended before the test let it (its lease was lost)"
            seen.add(op_row(store, op_id).lease_expires_at)
            return len(seen) >= 4

        await until(renewed_three_times, "three renewals")
        assert max(seen) > first  # pushed past the expiry it was claimed with
        assert await b.run_once() is False  # still A's
        toy.gates["worker-a"].set()
        assert await a_run is True

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))  # a hang is a failure
    assert effects(store, op_id) == [{"worker": "worker-a", "epoch": 1}]
    assert op_row(store, op_id).status == "Succeeded"


def test_a_lost_lease_cancels_the_running_act_before_it_writes(store):
    toy = Toy()
    op_id = start_toy(store)

    async def scenario():
        toy.gates["worker-a"], toy.entered["worker-a"] = asyncio.Event(), asyncio.Event()
        a = engine(store, toy, "worker-a", renew_every=0.05)
        a_run = asyncio.create_task(a.run_once())
        await toy.entered["worker-a"].wait()
        expire_lease(store, op_id)
        with store.session() as s:
            claim_next(s, "worker-b", 30)  # B claims it (and has not run it yet)
        # A's renewal finds the lease gone and stops its act.
        assert await a_run is True

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))  # a hang is a failure
    assert toy.cancelled == ["worker-a"]
    assert effects(store, op_id) == []
    row = op_row(store, op_id)
    assert (row.status, row.lease_owner, row.lease_epoch) == ("InProgress", "worker-b", 2)


def test_a_refused_step_fails_the_operation_in_one_fenced_write(store):
    toy = Toy()
    with store.session() as s:
        op_id = new_operation(s, kind="toy.count", subscription_id="provider", location="lab", target="toy1",
                              step="Counting", params={"refuse": True}).id
    assert asyncio.run(engine(store, toy, "worker-a").run_once()) is True
    row = op_row(store, op_id)
    assert (row.status, row.error["code"], row.lease_owner) == ("Failed", "ToyRefused", None)
    assert effects(store, op_id) == []


def test_unknown_kind_fails_cleanly_and_kinds_must_declare_their_steps(store):
    op_id = start_toy(store, kind="toy.unknown")
    assert asyncio.run(engine(store, Toy(), "worker-a").run_once()) is True
    row = op_row(store, op_id)
    assert (row.status, row.error["code"]) == ("Failed", "UnknownOperationStep")
    with pytest.raises(ValueError, match="Missing"):
        OperationKind(name="bad", first="One", steps={"One": Step(shown="One", next="Missing")})
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Operation).where(Operation.status == "InProgress")) == 0
        assert s.scalar(select(func.count()).select_from(Event).where(Event.subject == op_id)) == 0
