"""The operation engine: operation kinds and their steps declared as data, run by workers under leases.

A step has two parts. `act` does the work outside the store (device calls) and must be safe to
repeat; the engine renews the operation's lease while it runs and cancels it as soon as the
lease is lost. `commit` then writes the step's result in ONE transaction that also writes the
next step and the state the target shows, and that starts with the lease check (fencing): a
worker that lost its lease writes nothing, and the worker that took the operation over runs the
step again. A crash before the commit therefore repeats the step; after it, resumes at the next.

Every store access of the engine runs in a thread (`asyncio.to_thread`), never on the event
loop that also serves requests and device connections."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Awaitable, Callable, Mapping

from sqlalchemy.orm import Session

from hsmcloud.controlplane.operations import Lease, LeaseLost, claim_next, fence
from hsmcloud.controlplane.scope import utcnow
from hsmcloud.errors import HsmCloudError, ServiceUnavailable
from hsmcloud.store.db import Store
from hsmcloud.store.models import Operation

log = logging.getLogger(__name__)

MAX_TRANSIENT_ATTEMPTS = 6


class StepFailed(Exception):
    """The step cannot succeed: the operation fails with this error (after its undo step, if any)."""

    def __init__(self, error: HsmCloudError):
        super().__init__(error.message)
        self.error = error


class WaitInLine(Exception):
    """Not this operation's turn yet: give it back uncounted, claim_next hands it out again later."""


def failure_record(error: HsmCloudError) -> dict:
    """A failure as ARM's error detail: the same on the failed resource and on its operation."""
    out = {"code": error.code, "message": error.message}
    if error.target:
        out["target"] = error.target
    out["details"] = error.details or [{"code": error.code, "message": error.message}]
    return out


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step of an operation kind.

    shown:  what the target shows while the operation is at this step (None: leave it as it is).
    next:   the step after this one; None: the operation is done after it.
    act:    async work outside the store (device calls), repeatable; may fill `ctx.carry`.
    commit: the step's writes, in the fenced transaction; may raise StepFailed or WaitInLine."""

    shown: str | None
    next: str | None
    act: Callable[["StepContext"], Awaitable[None]] | None = None
    commit: Callable[["StepContext", Session, Operation], None] | None = None


@dataclass(frozen=True, kw_only=True)
class OperationKind:
    """An operation kind: its steps, the first one, and how its target shows states and failure.

    on_failure names the step that undoes what a failed step left behind (e.g. returns an
    allocated device); the operation then ends Failed with the error that failed it. When
    `undo_needed` says nothing was left behind, the operation fails at once instead."""

    name: str
    first: str
    steps: Mapping[str, Step]
    succeeded: str | None = "Succeeded"
    show: Callable[[Session, Operation, str], None] | None = None
    fail: Callable[[Session, Operation, dict], None] | None = None
    on_failure: str | None = None
    undo_needed: Callable[[Session, Operation], bool] | None = None
    result: Callable[["StepContext", Session, Operation], dict | None] | None = None

    def __post_init__(self):
        names = set(self.steps)
        wanted = {self.first} | {s.next for s in self.steps.values() if s.next} | (
            {self.on_failure} if self.on_failure else set())
        if not wanted <= names:
            raise ValueError(f"operation kind {self.name}: steps {sorted(wanted - names)} are not declared")


@dataclass(kw_only=True)
class StepContext:
    """What a step's act and commit see of their operation, and how they reach the store."""

    engine: "Engine"
    lease: Lease
    op_id: str
    kind: str
    step: str
    target: str
    attempts: int
    params: dict
    carry: dict[str, Any] = field(default_factory=dict)

    async def read(self, fn: Callable[[Session], Any]) -> Any:
        """Run `fn(session)` in a thread, in its own (read) transaction."""
        return await self.engine.in_thread(fn)

    async def checkpoint(self) -> None:
        """Renew the lease now; raise LeaseLost before the next device call if it is gone."""
        await self.engine.renew(self.lease)


class Engine:
    """Claims runnable operations one at a time and runs their steps (one worker)."""

    def __init__(self, *, store: Store, kinds: Mapping[str, OperationKind], worker_id: str,
                 lease_seconds: Callable[[], float], step_delay: Callable[[], float], renew_leases: bool = True,
                 renew_every: float | None = None):
        self.store = store
        self.kinds = dict(kinds)
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.step_delay = step_delay
        self.renew_leases = renew_leases
        self.renew_every = renew_every  # default: a third of the lease
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- the loop ---------------------------------------------------------------------------
    def wake(self) -> None:
        """Called from request threads after they create an operation."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run_forever(self, stop: asyncio.Event, *, idle_poll: float = 0.25) -> None:
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                did = await self.run_once()
            except Exception:  # a bug in one step must not stop the worker for every other operation
                log.exception("operation step crashed")
                did = False
            if not did:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=idle_poll)

    async def in_thread(self, fn: Callable[[Session], Any]) -> Any:
        def work():
            with self.store.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)

    async def renew(self, lease: Lease) -> None:
        await self.in_thread(lambda s: fence(s, lease))

    async def run_once(self) -> bool:
        """Claim one operation and run its current step; False when nothing was runnable."""
        lease_seconds = float(self.lease_seconds())

        def claim(s: Session):
            got = claim_next(s, self.worker_id, lease_seconds)
            if got is None:
                return None
            op, lease = got
            return lease, op.kind, op.step, op.target, op.attempts, dict(op.params or {})

        claimed = await self.in_thread(claim)
        if claimed is None:
            return False
        lease, kind_name, step_name, target, attempts, params = claimed
        ctx = StepContext(engine=self, lease=lease, op_id=lease.op_id, kind=kind_name, step=step_name,
                          target=target, attempts=attempts, params=params)
        try:
            await self._run_step(ctx)
        except LeaseLost as lost:
            # Another worker has (or will have) the operation: it runs the step again. Nothing of
            # this attempt was written.
            log.warning("%s; step %s of %s abandoned without writing", lost, step_name, kind_name)
        return True

    async def _run_step(self, ctx: StepContext) -> None:
        kind = self.kinds.get(ctx.kind)
        step = kind.steps.get(ctx.step) if kind else None
        if kind is None or step is None:
            await self._fail(ctx, kind, ServiceUnavailable(f"Unknown operation step {ctx.kind}/{ctx.step}.",
                                                           code="UnknownOperationStep"))
            return
        in_undo = ctx.step == kind.on_failure
        try:
            if step.act is not None:
                await self._with_renewal(ctx, step.act(ctx))
            await self.in_thread(lambda s: self._commit(ctx, kind, step, s))
        except (LeaseLost, asyncio.CancelledError):
            raise
        except WaitInLine:
            await self._give_back(ctx)
        except StepFailed as failed:
            await (self._retry_later(ctx, failed.error, keep_error=True) if in_undo else
                   self._fail(ctx, kind, failed.error))
        except ServiceUnavailable as transient:
            if in_undo or ctx.attempts < MAX_TRANSIENT_ATTEMPTS:
                await self._retry_later(ctx, transient, keep_error=in_undo)
            else:
                await self._fail(ctx, kind, transient)
        except HsmCloudError as rule:  # a rule broken mid-operation (e.g. the subnet filled up)
            await (self._retry_later(ctx, rule, keep_error=True) if in_undo else self._fail(ctx, kind, rule))
        except Exception:
            log.exception("step %s of operation %s (%s) crashed", ctx.step, ctx.op_id, ctx.kind)
            crash = ServiceUnavailable("The step failed unexpectedly; it is retried.", code="InternalServerError")
            if in_undo or ctx.attempts < MAX_TRANSIENT_ATTEMPTS:
                await self._retry_later(ctx, crash, keep_error=in_undo)
            else:
                await self._fail(ctx, kind, crash)

    async def _with_renewal(self, ctx: StepContext, work: Awaitable[None]) -> None:
        """Run the step's act while renewing the lease; cancel it as soon as the lease is lost."""
        task = asyncio.ensure_future(work)
        lost: list[LeaseLost] = []

        async def renew_loop():
            interval = self.renew_every or max(ctx.lease.seconds / 3, 0.05)
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.renew(ctx.lease)
                except LeaseLost as exc:
                    lost.append(exc)
                    task.cancel()
                    return

        renewer = asyncio.create_task(renew_loop()) if self.renew_leases else None
        try:
            await task
        except asyncio.CancelledError:
            if lost:
                raise lost[0] from None
            raise
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
        if lost:  # lost right as the act finished: its commit would be refused anyway
            raise lost[0]

    # ---- the writes (each one fenced transaction) -------------------------------------------
    def _commit(self, ctx: StepContext, kind: OperationKind, step: Step, s: Session) -> None:
        fence(s, ctx.lease)
        op = s.get(Operation, ctx.op_id, populate_existing=True)
        if step.commit is not None:
            step.commit(ctx, s, op)
        now = utcnow()
        op.updated_at, op.attempts = now, 0
        op.lease_owner = op.lease_expires_at = None
        if step.next is not None:
            op.step = step.next
            op.not_before = now + timedelta(seconds=self.step_delay())
            shown = kind.steps[step.next].shown
            if shown is not None and kind.show is not None:
                kind.show(s, op, shown)
            return
        if ctx.step == kind.on_failure:  # the undo step is done: the operation ends with its error
            if kind.fail is not None:
                kind.fail(s, op, op.error or {})
            op.status = "Failed"
            return
        if kind.result is not None:
            op.result = kind.result(ctx, s, op)
        if kind.succeeded is not None and kind.show is not None:
            kind.show(s, op, kind.succeeded)
        op.status, op.error = "Succeeded", None

    async def _fail(self, ctx: StepContext, kind: OperationKind | None, error: HsmCloudError) -> None:
        record = failure_record(error)

        def write(s: Session):
            fence(s, ctx.lease)
            op = s.get(Operation, ctx.op_id, populate_existing=True)
            now = utcnow()
            op.updated_at, op.error = now, record
            op.lease_owner = op.lease_expires_at = None
            if (kind is not None and kind.on_failure and op.step != kind.on_failure
                    and (kind.undo_needed is None or kind.undo_needed(s, op))):
                op.step, op.attempts, op.not_before = kind.on_failure, 0, now
                return
            if kind is not None and kind.fail is not None:
                kind.fail(s, op, record)
            op.status = "Failed"

        await self.in_thread(write)

    async def _give_back(self, ctx: StepContext) -> None:
        def write(s: Session):
            fence(s, ctx.lease)
            op = s.get(Operation, ctx.op_id, populate_existing=True)
            op.lease_owner = op.lease_expires_at = None
            op.attempts = max(op.attempts - 1, 0)

        await self.in_thread(write)

    async def _retry_later(self, ctx: StepContext, error: HsmCloudError, *, keep_error: bool) -> None:
        def write(s: Session):
            fence(s, ctx.lease)
            op = s.get(Operation, ctx.op_id, populate_existing=True)
            op.lease_owner = op.lease_expires_at = None
            op.not_before = utcnow() + timedelta(seconds=min(0.5 * 2 ** op.attempts, 10))
            if not keep_error:
                op.error = error.to_dict()

        await self.in_thread(write)
