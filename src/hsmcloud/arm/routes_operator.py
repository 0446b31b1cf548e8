"""The provider's operator surface (REST under /operator), for platform teams."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from hsmcloud.arm.auth import operator
from hsmcloud.arm.routes_hsm import json_body, services
from hsmcloud.controlplane.hsms import arm_id
from hsmcloud.controlplane import device_operations, fleet_view, subscriptions
from hsmcloud.controlplane.operations import recent
from hsmcloud.controlplane.hsms import live_key, validate_name
from hsmcloud.controlplane.scope import check_group_name, require_region, utcnow
from hsmcloud.errors import InvalidRequest, NotFound
from hsmcloud.identity.tokens import normalize_subscription_id
from hsmcloud.store.models import DedicatedHsm, Event, Operation, Subscription

router = APIRouter(prefix="/operator")


@router.get("/subscriptions")
def list_subscriptions(request: Request):
    operator(request)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": [{"subscriptionId": x.id, "allowlisted": x.allowlisted,
                           "allowlistedAt": x.allowlisted_at.isoformat() if x.allowlisted_at else None}
                          for x in s.scalars(select(Subscription).order_by(Subscription.created_at))]}


@router.put("/subscriptions/{sub}/allowlist")
async def allowlist(request: Request, sub: str):
    who = operator(request)
    sub = normalize_subscription_id(sub)
    raw = await request.body()
    allowed = True
    if raw:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("allowlisted", True), bool):
            raise InvalidRequest("Send {\"allowlisted\": true} or {\"allowlisted\": false} (a JSON boolean).",
                                 code="InvalidRequestContent")
        allowed = body.get("allowlisted", True)
    svc = services(request)
    with svc.store.session() as s:
        return subscriptions.allowlist(s, sub, actor=who.name, allowed=allowed)


@router.get("/subscriptions/{sub}/quotas/{region}")
def get_quota(request: Request, sub: str, region: str):
    operator(request)
    sub = normalize_subscription_id(sub)
    svc = services(request)
    with svc.store.session() as s:
        per_region, per_stamp = subscriptions.quota_for(s, sub, region)
    return {"subscriptionId": sub, "region": region, "perRegion": per_region, "perStamp": per_stamp}


@router.put("/subscriptions/{sub}/quotas/{region}")
async def set_quota(request: Request, sub: str, region: str):
    who = operator(request)
    sub = normalize_subscription_id(sub)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequest("Send {\"perRegion\": N, \"perStamp\": M}.")
    svc = services(request)
    with svc.store.session() as s:
        region = require_region(s, region, code="UnknownRegion")
        return subscriptions.set_quota(s, sub, region, per_region=body.get("perRegion"),
                                       per_stamp=body.get("perStamp"), actor=who.name)


@router.get("/quotaRequests")
def quota_requests(request: Request):
    operator(request)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": [subscriptions.quota_request_json(r) for r in
                          subscriptions.list_requests(s, status=request.query_params.get("status"))]}


@router.post("/quotaRequests/{request_id}/{decision}")
def decide(request: Request, request_id: str, decision: str):
    who = operator(request)
    if decision not in ("grant", "reject"):
        raise NotFound("Use /grant or /reject.")
    svc = services(request)
    with svc.store.session() as s:
        return subscriptions.quota_request_json(
            subscriptions.decide_request(s, request_id, grant=decision == "grant", actor=who.name))


@router.get("/stamps")
def stamps(request: Request):
    operator(request)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": fleet_view.stamps(s)}


@router.get("/devices")
def devices(request: Request):
    operator(request)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": fleet_view.devices(s, request.query_params.get("region"))}


@router.get("/orphans")
def orphans(request: Request):
    operator(request)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": fleet_view.orphans(s)}


@router.get("/billing")
def billing(request: Request):
    operator(request)
    svc = services(request)
    sub = request.query_params.get("subscription")
    with svc.store.session() as s:
        return {"value": fleet_view.billing(s, normalize_subscription_id(sub) if sub else None)}


@router.get("/events")
def events(request: Request):
    operator(request)
    svc = services(request)
    raw = request.query_params.get("limit", "200")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest(f"limit must be a whole number from 1 to 1000, not '{raw}'.", code="InvalidLimit")
    limit = int(raw)
    with svc.store.session() as s:
        rows = s.scalars(select(Event).order_by(Event.id.desc()).limit(limit))
        return {"value": [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "subject": e.subject,
                           "detail": e.detail} for e in rows]}


@router.post("/subscriptions/{sub}/resourceGroups/{rg}/dedicatedHSMs/{name}/forceDelete")
def force_delete(request: Request, sub: str, rg: str, name: str):
    """Set the force-delete flag and reclaim the device out of band (works on orphans too)."""
    who = operator(request)
    sub = normalize_subscription_id(sub)
    check_group_name(rg)
    validate_name(name)
    svc = services(request)
    with svc.store.session() as s:
        h = s.scalar(select(DedicatedHsm).where(DedicatedHsm.live_key == live_key(sub, rg, name)))
        if h is None:
            raise NotFound(f"No dedicated HSM '{name}' in resource group '{rg}' of subscription {sub}.")
        h.force_delete = True
        h.modified_at = utcnow()
        subscriptions.record(s, who.name, "hsm.force-delete", arm_id(h))
        op = svc.hsms.begin_delete(s, who, h, zeroized=None)
        out = {"operationId": op.id, "hsm": fleet_view.hsm_summary(h), "location": _operation_url(request, op.id)}
    svc.lifecycle.wake()
    return JSONResponse(out, status_code=202)


def _operation_url(request: Request, op_id: str) -> str:
    # Operators follow their operations here: the tenant's operationResults route is the tenant's.
    return f"{str(request.base_url).rstrip('/')}/operator/operations/{op_id}"


@router.get("/operations")
def operations(request: Request):
    """Operations, newest first: ?status=InProgress|Succeeded|Failed, ?kind=…, ?target=…, ?limit=N."""
    operator(request)
    svc = services(request)
    q = request.query_params
    raw = q.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest(f"limit must be a whole number from 1 to 1000, not '{raw}'.", code="InvalidLimit")
    status = q.get("status")
    if status is not None and status not in ("InProgress", "Succeeded", "Failed"):
        raise InvalidRequest(f"status must be InProgress, Succeeded or Failed, not '{status}'.",
                             code="InvalidOperationStatus")
    with svc.store.session() as s:
        rows = recent(s, status=status, kind=q.get("kind"), target=q.get("target"), limit=int(raw))
        return {"value": [fleet_view.operation(op, svc.lifecycle.kinds) for op in rows]}


@router.get("/operations/{op_id}")
def operation(request: Request, op_id: str):
    """An operation an operator started (force delete, licence, firmware): 202 while it runs, then its outcome."""
    operator(request)
    svc = services(request)
    with svc.store.session() as s:
        op = s.get(Operation, op_id)
        if op is None:
            raise NotFound(f"Operation '{op_id}' was not found.", code="OperationNotFound")
        out = fleet_view.operation(op, svc.lifecycle.kinds)
    if out["status"] == "InProgress":
        return JSONResponse(out, status_code=202, headers={"Location": _operation_url(request, op_id),
                                                           "Retry-After": str(svc.settings.retry_after_seconds)})
    if out["status"] == "Failed":
        err = out.get("error") or {"code": "OperationFailed", "message": "The operation failed."}
        return JSONResponse({"error": {"code": err.get("code"), "message": err.get("message"),
                                       "details": err.get("details", [])}}, status_code=409)
    return out


def _accepted(request: Request, svc, op) -> JSONResponse:
    svc.lifecycle.wake()
    url = _operation_url(request, op.id)
    return JSONResponse({"operationId": op.id, "serial": op.target, "status": op.status, "step": op.step,
                         "location": url}, status_code=202,
                        headers={"Location": url, "Retry-After": str(svc.settings.retry_after_seconds)})


@router.put("/devices/{serial}/licence")
async def device_licence(request: Request, serial: str):
    """Lift (or restore) a payment device's calls-per-second licence limit, e.g. for benchmarks (an operation)."""
    who = operator(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("cpsLimitLifted"), bool):
        raise InvalidRequest("Send {\"cpsLimitLifted\": true|false}.", code="InvalidRequestContent")
    svc = services(request)

    def begin():
        with svc.store.session() as s:
            return device_operations.begin_licence(s, actor=who.name, serial=serial,
                                                   cps_limit_lifted=body["cpsLimitLifted"])

    return _accepted(request, svc, await run_in_threadpool(begin))


@router.post("/devices/{serial}/firmware")
async def device_firmware(request: Request, serial: str):
    """Patch an unallocated payment device (tenants patch their own), as an operation."""
    who = operator(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("version"), str) or not body["version"].strip():
        raise InvalidRequest("Send {\"version\": \"1.4a 1.8.3\"}.", code="InvalidRequestContent")
    svc = services(request)

    def begin():
        with svc.store.session() as s:
            return device_operations.begin_firmware(s, actor=who.name, serial=serial, version=body["version"])

    return _accepted(request, svc, await run_in_threadpool(begin))
