"""Long-running operations as rows: created by requests, leased, fenced and advanced by workers.

A worker claims an operation with a conditional UPDATE that sets it as the lease owner, the
lease's expiry and a new lease epoch. Everything it writes afterwards starts with `fence`: an
UPDATE that matches only while the row still has that owner and epoch and the lease has not
expired, and that extends the lease. Its row lock (PostgreSQL) or the write lock (SQLite) holds
until the transaction commits, so no other worker can claim the operation in between; a worker
whose lease was taken over matches nothing and writes nothing."""
from __future__ import annotations

import base64
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, not_, or_, select, update
from sqlalchemy.orm import Session

from hsmcloud.controlplane.quota import waiting_in_line
from hsmcloud.controlplane.scope import utcnow
from hsmcloud.errors import NotFound
from hsmcloud.store.models import Operation

# The subscription_id of the provider's own operations (device licence, firmware): never a GUID,
# so no tenant can read them through the tenant routes.
PROVIDER_SCOPE = "provider"


class LeaseLost(Exception):
    """The worker no longer holds the operation's lease: another worker may be running the step."""


@dataclass(frozen=True)
class Lease:
    op_id: str
    owner: str
    epoch: int
    seconds: float


def new_operation(session: Session, *, kind: str, subscription_id: str, location: str, target: str,
                  step: str, params: dict | None = None) -> Operation:
    op_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    now = utcnow()
    op = Operation(id=op_id, kind=kind, subscription_id=subscription_id, location=location, target=target,
                   status="InProgress", step=step, attempts=0, lease_epoch=0, params=params, created_at=now,
                   updated_at=now)
    session.add(op)
    session.flush()
    return op


def get_operation(session: Session, sub: str, op_id: str) -> Operation:
    op = session.get(Operation, op_id)
    if op is None or op.subscription_id != sub:
        raise NotFound(f"Operation '{op_id}' was not found.", code="OperationNotFound")
    return op


def in_progress_for(session: Session, target: str) -> Operation | None:
    return session.scalar(select(Operation).where(Operation.target == target, Operation.status == "InProgress"))


def _claimable(now):
    return or_(Operation.lease_expires_at.is_(None), Operation.lease_expires_at < now)


def claim_next(session: Session, worker_id: str, lease_seconds: float) -> tuple[Operation, Lease] | None:
    """Lease one runnable operation (none leased by a live worker, not waiting in its quota line)."""
    now = utcnow()
    candidates = session.scalars(
        select(Operation.id).where(
            Operation.status == "InProgress", _claimable(now),
            or_(Operation.not_before.is_(None), Operation.not_before <= now),
            not_(waiting_in_line()),
        ).order_by(Operation.created_at, Operation.id).limit(5)).all()
    for op_id in candidates:
        # Conditional update: of two workers racing for an operation, exactly one wins; the new
        # epoch fences whoever held it before.
        res = session.execute(
            update(Operation).where(Operation.id == op_id, Operation.status == "InProgress", _claimable(now))
            .values(lease_owner=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=Operation.attempts + 1, lease_epoch=Operation.lease_epoch + 1))
        if res.rowcount == 1:
            op = session.get(Operation, op_id, populate_existing=True)
            return op, Lease(op_id=op.id, owner=worker_id, epoch=op.lease_epoch, seconds=lease_seconds)
    return None


def fence(session: Session, lease: Lease) -> None:
    """Check that `lease` still holds and extend it, first thing in a transaction that writes.

    Raises LeaseLost (and the caller's transaction rolls back) when another worker took the
    operation over, or the lease expired, or the operation finished."""
    now = utcnow()
    res = session.execute(
        update(Operation).where(Operation.id == lease.op_id, Operation.status == "InProgress",
                                Operation.lease_owner == lease.owner, Operation.lease_epoch == lease.epoch,
                                Operation.lease_expires_at >= now)
        .values(lease_expires_at=now + timedelta(seconds=lease.seconds))
        .execution_options(synchronize_session=False))
    if res.rowcount != 1:
        raise LeaseLost(f"operation {lease.op_id}: lease of {lease.owner} (epoch {lease.epoch}) no longer held")


def release_leases_of_dead_local_workers(session: Session, own_id: str | None = None) -> int:
    """Give back at once the leases of this machine's workers whose process is gone (a crash).

    Worker ids are `<node>:<pid>`; a live process keeps its leases, and workers of other machines
    are left to their leases' expiry. `own_id`, the id of the worker starting now, held leases only
    in an earlier life: those go back too. Returns how many were released."""
    node = os.uname().nodename
    rows = session.execute(select(Operation.id, Operation.lease_owner).where(
        Operation.status == "InProgress", Operation.lease_owner.is_not(None))).all()
    released = 0
    for op_id, owner in rows:
        node_of, _, pid = owner.rpartition(":")
        dead = node_of == node and pid.isdigit() and not _alive(int(pid))
        if owner != own_id and not dead:
            continue
        released += session.execute(update(Operation).where(Operation.id == op_id, Operation.lease_owner == owner)
                                    .values(lease_owner=None, lease_expires_at=None)).rowcount
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def recent(session: Session, *, status: str | None = None, kind: str | None = None, target: str | None = None,
           limit: int = 100) -> list[Operation]:
    q = select(Operation)
    conds = [c for c in (Operation.status == status if status else None, Operation.kind == kind if kind else None,
                         Operation.target == target if target else None) if c is not None]
    if conds:
        q = q.where(and_(*conds))
    return list(session.scalars(q.order_by(Operation.created_at.desc(), Operation.id).limit(limit)))
