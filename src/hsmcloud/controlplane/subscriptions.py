"""Allowlisting, quotas and quota-increase requests of subscriptions."""
from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud.controlplane.scope import ensure_subscription, utcnow
from hsmcloud.errors import Conflict, Forbidden, InvalidRequest, NotFound
from hsmcloud.store.models import Event, Quota, QuotaRequest

INITIAL_PER_STAMP = 2
INITIAL_PER_REGION = 4


def record(session: Session, actor: str, action: str, subject: str, **detail) -> None:
    session.add(Event(at=utcnow(), actor=actor, action=action, subject=subject, detail=detail))


def require_allowlisted(session: Session, sub: str) -> None:
    if not ensure_subscription(session, sub).allowlisted:
        raise Forbidden(
            f"Subscription '{sub}' is not approved for Dedicated HSM. Dedicated HSM is an allowlisted service: ask "
            f"the provider to approve it ('hsmcloud operator allowlist {sub}').",
            code="SubscriptionNotAllowlisted")


def allowlist(session: Session, sub: str, *, actor: str, allowed: bool = True) -> dict:
    row = ensure_subscription(session, sub)
    row.allowlisted = allowed
    row.allowlisted_at = utcnow() if allowed else None
    record(session, actor, "subscription.allowlist" if allowed else "subscription.unlist", sub)
    return {"subscriptionId": sub, "allowlisted": allowed}


def quota_for(session: Session, sub: str, region: str) -> tuple[int, int]:
    """(per_region, per_stamp) in force for the subscription in the region."""
    row = session.get(Quota, (sub, region))
    if row is None:
        return INITIAL_PER_REGION, INITIAL_PER_STAMP
    return row.per_region, row.per_stamp


def _check_limits(per_region: object, per_stamp: object) -> tuple[int, int]:
    if not isinstance(per_region, int) or not isinstance(per_stamp, int) or per_region < 0 or per_stamp < 0:
        raise InvalidRequest("Quota limits must be non-negative integers.", code="InvalidQuota")
    if per_stamp > per_region:
        raise InvalidRequest(f"The per-stamp quota ({per_stamp}) cannot exceed the per-region quota ({per_region}).",
                             code="InvalidQuota")
    return per_region, per_stamp


def set_quota(session: Session, sub: str, region: str, *, per_region: int | None, per_stamp: int | None,
              actor: str) -> dict:
    ensure_subscription(session, sub)
    cur_region, cur_stamp = quota_for(session, sub, region)
    per_region, per_stamp = _check_limits(cur_region if per_region is None else per_region,
                                          cur_stamp if per_stamp is None else per_stamp)
    row = session.get(Quota, (sub, region))
    if row is None:
        row = Quota(subscription_id=sub, region=region, per_region=per_region, per_stamp=per_stamp)
        session.add(row)
    row.per_region, row.per_stamp = per_region, per_stamp
    record(session, actor, "quota.set", sub, region=region, perRegion=per_region, perStamp=per_stamp)
    return {"subscriptionId": sub, "region": region, "perRegion": per_region, "perStamp": per_stamp}


def request_increase(session: Session, sub: str, region: str, *, per_region: int, per_stamp: int,
                     reason: str, actor: str) -> QuotaRequest:
    ensure_subscription(session, sub)
    _check_limits(per_region, per_stamp)
    cur_region, cur_stamp = quota_for(session, sub, region)
    if per_region <= cur_region and per_stamp <= cur_stamp:
        raise InvalidRequest(f"The quota in {region} is already {cur_region} per region and {cur_stamp} per stamp; "
                             "a request must ask for more.", code="QuotaRequestNotAnIncrease")
    req = QuotaRequest(id=str(uuid.uuid4()), subscription_id=sub, region=region, per_region=per_region,
                       per_stamp=per_stamp, reason=reason or "", status="Pending", created_at=utcnow())
    session.add(req)
    record(session, actor, "quota.request", sub, id=req.id, region=region)
    return req


def decide_request(session: Session, request_id: str, *, grant: bool, actor: str) -> QuotaRequest:
    req = session.get(QuotaRequest, request_id)
    if req is None:
        raise NotFound(f"Quota request '{request_id}' does not exist.", code="QuotaRequestNotFound")
    if req.status != "Pending":
        raise Conflict(f"Quota request '{request_id}' was already {req.status.lower()}.", code="QuotaRequestDecided")
    req.status = "Granted" if grant else "Rejected"
    req.decided_at = utcnow()
    if grant:
        set_quota(session, req.subscription_id, req.region, per_region=req.per_region, per_stamp=req.per_stamp,
                  actor=actor)
    record(session, actor, "quota.grant" if grant else "quota.reject", req.subscription_id, id=req.id)
    return req


def list_requests(session: Session, sub: str | None = None, status: str | None = None) -> list[QuotaRequest]:
    q = select(QuotaRequest).order_by(QuotaRequest.created_at)
    if sub:
        q = q.where(QuotaRequest.subscription_id == sub)
    if status:
        q = q.where(QuotaRequest.status == status)
    return list(session.scalars(q))


def quota_request_json(req: QuotaRequest) -> dict:
    return {"id": req.id, "subscriptionId": req.subscription_id, "region": req.region, "perRegion": req.per_region,
            "perStamp": req.per_stamp, "reason": req.reason, "status": req.status,
            "createdAt": req.created_at.isoformat(), "decidedAt": req.decided_at.isoformat() if req.decided_at else None}
