"""Long-running operations as rows: created by requests, leased and advanced by workers."""
from __future__ import annotations

import base64
import uuid
from datetime import timedelta

from sqlalchemy import not_, or_, select, update
from sqlalchemy.orm import Session

from hsmcloud.controlplane.quota import waiting_in_line
from hsmcloud.controlplane.scope import utcnow
from hsmcloud.errors import NotFound
from hsmcloud.store.models import Operation

LEASE = timedelta(seconds=20)


def new_operation(session: Session, *, kind: str, subscription_id: str, location: str, target: str,
                  step: str) -> Operation:
    op_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    now = utcnow()
    op = Operation(id=op_id, kind=kind, subscription_id=subscription_id, location=location, target=target,
                   status="InProgress", step=step, attempts=0, created_at=now, updated_at=now)
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


def claim_next(session: Session, worker_id: str) -> Operation | None:
    """Lease one runnable operation (none leased by a live worker, not waiting in its quota line)."""
    now = utcnow()
    candidates = session.scalars(
        select(Operation.id).where(
            Operation.status == "InProgress",
            or_(Operation.lease_expires_at.is_(None), Operation.lease_expires_at < now,
                Operation.lease_owner == worker_id),
            or_(Operation.not_before.is_(None), Operation.not_before <= now),
            not_(waiting_in_line()),
        ).order_by(Operation.created_at, Operation.id).limit(5)).all()
    for op_id in candidates:
        # Conditional update: of two workers racing for an operation, exactly one wins.
        res = session.execute(
            update(Operation).where(
                Operation.id == op_id, Operation.status == "InProgress",
                or_(Operation.lease_expires_at.is_(None), Operation.lease_expires_at < now,
                    Operation.lease_owner == worker_id))
            .values(lease_owner=worker_id, lease_expires_at=now + LEASE, attempts=Operation.attempts + 1))
        if res.rowcount == 1:
            return session.get(Operation, op_id)
    return None


def release_all_leases(session: Session) -> None:
    """On start of a single-replica service every lease belongs to a dead process."""
    session.execute(update(Operation).where(Operation.status == "InProgress")
                    .values(lease_owner=None, lease_expires_at=None))
