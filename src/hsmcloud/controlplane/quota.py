"""Who holds a subscription's HSM quota, and the line in which creates are checked against it.

The quota is checked by two create steps: `CheckingQuota` (per region) and `Allocating` (per
stamp). Creates of one subscription in one region pass those steps in line, ordered by when
their create operation started (a retry starts a new one, at the back). A create waits while
one ahead of it is still in either step, so when it is checked every HSM ahead of it has its
outcome committed and none behind it has one yet: the count is exact, whichever worker (and
however many) runs the steps.
"""
from __future__ import annotations

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session, aliased

from hsmcloud.store.models import DedicatedHsm, Operation

QUOTA_STEPS = ("CheckingQuota", "Allocating")
REFUSED = "QuotaExceeded"


def refused_by_quota(hsm: DedicatedHsm) -> bool:
    """A create the quota check itself refused holds no quota (unlike one failed by a later step)."""
    return hsm.provisioning_state == "Failed" and (hsm.error or {}).get("code") == REFUSED


def holds_quota(hsm: DedicatedHsm) -> bool:
    """Every live HSM counts except one still waiting for its check and one the check refused."""
    return hsm.provisioning_state != "CheckingQuota" and not refused_by_quota(hsm)


def used(s: Session, sub: str, region: str, *, stamp_id: int | None = None, other_than: str | None = None) -> int:
    """How many HSMs of the subscription hold quota in the region (or in one of its stamps)."""
    q = select(DedicatedHsm).where(DedicatedHsm.subscription_id == sub, DedicatedHsm.location == region,
                                   DedicatedHsm.live_key.is_not(None))
    if stamp_id is not None:
        q = q.where(DedicatedHsm.stamp_id == stamp_id)
    if other_than is not None:
        q = q.where(DedicatedHsm.id != other_than)
    return sum(1 for h in s.scalars(q) if holds_quota(h))


def waiting_in_line(op=Operation):
    """SQL condition: `op` is at a quota step while a create ahead of it in its line still is."""
    ahead = aliased(Operation)
    return and_(op.kind == "hsm.create", op.step.in_(QUOTA_STEPS), exists().where(
        ahead.kind == "hsm.create", ahead.status == "InProgress", ahead.step.in_(QUOTA_STEPS),
        ahead.subscription_id == op.subscription_id, ahead.location == op.location,
        or_(ahead.created_at < op.created_at, and_(ahead.created_at == op.created_at, ahead.id < op.id))))


def must_wait(s: Session, op_id: str) -> bool:
    return bool(s.scalar(select(waiting_in_line()).where(Operation.id == op_id)))
