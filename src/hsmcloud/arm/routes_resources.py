"""Microsoft.Resources on the ARM surface: resource groups and the generic resources list."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from hsmcloud import resource_ids as ids
from hsmcloud.arm import render
from hsmcloud.arm.api_versions import HSM_API_VERSIONS, require_api_version
from hsmcloud.arm.auth import for_subscription
from hsmcloud.arm.paging import page
from hsmcloud.arm.routes_hsm import json_body, services
from hsmcloud.controlplane import groups, quota, subscriptions
from hsmcloud.controlplane.operations import get_operation, new_operation
from hsmcloud.controlplane.scope import find_group, key, require_group, require_region, utcnow
from hsmcloud.errors import InvalidRequest
from hsmcloud.store.models import DedicatedHsm, NetworkInterface, Subscription, VirtualNetwork, VirtualNetworkGateway

router = APIRouter()
G = "/subscriptions/{subscription_id}/resourceGroups/{rg}"
HSM_TYPE = f"{ids.HSM_PROVIDER}/{ids.HSM_TYPE}"


def _version(request: Request) -> str:
    return require_api_version(request.query_params.get("api-version"), "Microsoft.Resources")


@router.put(G)
async def put_group(request: Request, subscription_id: str, rg: str):
    _version(request)
    principal, sub = for_subscription(request, subscription_id)
    body = await json_body(request)
    svc = services(request)

    def work():
        with svc.store.session() as s:
            g, created = groups.put_group(s, principal, sub, rg, body)
            return render.group(g), created
    out, created = await run_in_threadpool(work)
    return JSONResponse(out, status_code=201 if created else 200)


@router.get(G)
def get_group(request: Request, subscription_id: str, rg: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return render.group(require_group(s, sub, rg))


@router.head(G)
def group_exists(request: Request, subscription_id: str, rg: str):
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return Response(status_code=204 if find_group(s, sub, rg) else 404)


@router.get("/subscriptions/{subscription_id}/resourceGroups")
def list_groups(request: Request, subscription_id: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return page(request, groups.list_groups(s, sub), render.group)


@router.delete(G)
def delete_group(request: Request, subscription_id: str, rg: str):
    version = _version(request)
    principal, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        g = require_group(s, sub, rg)
        orphaned = groups.delete_group(s, principal, sub, rg)
        op = new_operation(s, kind="group.delete", subscription_id=sub, location=g.location, target=g.name,
                           step="Done")
        op.status, op.updated_at = "Succeeded", utcnow()
        if orphaned:
            op.error = {"code": "DedicatedHsmsOrphaned",
                        "message": f"The dedicated HSM(s) {', '.join(orphaned)} were not deleted with the group: they "
                                   "are orphaned and still billed. Recreate the group, zeroize and delete them, or "
                                   "contact the provider."}
    base = str(request.base_url).rstrip("/")
    return Response(status_code=202, headers={
        "Location": f"{base}/subscriptions/{sub}/operationresults/{op.id}?api-version={version}",
        "Retry-After": str(svc.settings.retry_after_seconds)})


@router.get("/subscriptions/{subscription_id}/operationResults/{op_id}")
def group_operation_result(request: Request, subscription_id: str, op_id: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        op = get_operation(s, sub, op_id)
        if op.status == "InProgress":
            return Response(status_code=202)
        warnings = [op.error] if op.error else []
        return JSONResponse({"status": op.status, "warnings": warnings}, status_code=200)


def _wants_hidden(request: Request) -> bool:
    q = request.query_params
    flt = (q.get("$filter") or "").lower()
    return (q.get("showHiddenTypes", "").lower() == "true" or "showhiddentypes" in (q.get("$expand") or "").lower()
            or HSM_TYPE.lower() in flt)


def _type_filter(request: Request) -> str | None:
    flt = request.query_params.get("$filter") or ""
    low = flt.lower()
    if not flt:
        return None
    if low.startswith("resourcetype eq "):
        return flt[len("resourcetype eq "):].strip().strip("'").lower()
    raise InvalidRequest("Only $filter=resourceType eq '<type>' is supported on this list.",
                         code="InvalidFilterInQueryString")


def _generic(s, sub: str, rg_key: str | None) -> list[dict]:
    out = []

    def where(model):
        q = select(model).where(model.subscription_id == sub)
        return q.where(model.rg_key == rg_key) if rg_key else q

    # Resource ids carry each group's own spelling: read the subscription's groups once.
    spelled = {g.name_key: g.name for g in groups.list_groups(s, sub)}

    def gname(k):
        return spelled.get(k, k)
    for v in s.scalars(where(VirtualNetwork)):
        out.append({"id": ids.network_id(sub, gname(v.rg_key), "virtualNetworks", v.name), "name": v.name,
                    "type": "Microsoft.Network/virtualNetworks", "location": v.location, "tags": v.tags or {}})
    for gw in s.scalars(where(VirtualNetworkGateway)):
        out.append({"id": ids.network_id(sub, gname(gw.rg_key), "virtualNetworkGateways", gw.name), "name": gw.name,
                    "type": "Microsoft.Network/virtualNetworkGateways", "location": gw.location,
                    "tags": gw.tags or {}})
    for n in s.scalars(where(NetworkInterface)):
        out.append({"id": ids.network_id(sub, n.rg_name, "networkInterfaces", n.name), "name": n.name,
                    "type": "Microsoft.Network/networkInterfaces", "location": n.location, "tags": {}})
    for h in s.scalars(where(DedicatedHsm).where(DedicatedHsm.live_key.is_not(None))):
        out.append({"id": ids.hsm_id(sub, h.rg_name, h.name), "name": h.name, "type": HSM_TYPE,
                    "location": h.location, "sku": {"name": h.sku}, "tags": h.tags or {}})
    return out


@router.get(G + "/resources")
def group_resources(request: Request, subscription_id: str, rg: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        require_group(s, sub, rg)
        items = _generic(s, sub, key(rg))
    return page(request, _visible(request, items), lambda x: x)


@router.get("/subscriptions/{subscription_id}/resources")
def subscription_resources(request: Request, subscription_id: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        items = _generic(s, sub, None)
    return page(request, _visible(request, items), lambda x: x)


def _visible(request: Request, items: list[dict]) -> list[dict]:
    wanted = _type_filter(request)
    hidden_ok = _wants_hidden(request)
    out = []
    for item in items:
        if item["type"] == HSM_TYPE and not hidden_ok:
            continue  # a hidden type, as in the portal without "Show hidden types"
        if wanted and item["type"].lower() != wanted:
            continue
        out.append(item)
    return out


# ---- quota (hsmcloud's form of the support ticket that asks for more HSMs) ----------------------
Q = "/subscriptions/{subscription_id}/providers/Microsoft.HardwareSecurityModules/locations/{location}"


def _hsm_version(request: Request) -> str | None:
    """The quota routes are hsmcloud's own: api-version is optional, but one that is given must be valid."""
    value = request.query_params.get("api-version")
    if value is None:
        return None
    if not value:
        raise InvalidRequest(f"api-version is empty: omit it on this route, or give one of "
                             f"{', '.join(HSM_API_VERSIONS)}.", code="InvalidApiVersionParameter")
    return require_api_version(value, ids.HSM_PROVIDER)


@router.get(Q + "/quota")
def get_quota(request: Request, subscription_id: str, location: str):
    _hsm_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        location = require_region(s, location)
        per_region, per_stamp = subscriptions.quota_for(s, sub, location)
        used = quota.used(s, sub, location)
        row = s.get(Subscription, sub)
        allowlisted = bool(row and row.allowlisted)
    return {"subscriptionId": sub, "region": location, "perRegion": per_region, "perStamp": per_stamp,
            "used": used, "allowlisted": allowlisted}


@router.post(Q + "/quotaRequests")
async def request_quota(request: Request, subscription_id: str, location: str):
    _hsm_version(request)
    principal, sub = for_subscription(request, subscription_id)
    body = await json_body(request)
    svc = services(request)
    if not isinstance(body, dict):
        raise InvalidRequest("Send {\"perRegion\": N, \"perStamp\": M, \"reason\": \"...\"}.")

    def work():
        with svc.store.session() as s:
            loc = require_region(s, location)
            cur_region, cur_stamp = subscriptions.quota_for(s, sub, loc)
            req = subscriptions.request_increase(
                s, sub, loc, per_region=body.get("perRegion", cur_region),
                per_stamp=body.get("perStamp", cur_stamp), reason=str(body.get("reason", "")), actor=principal.name)
            return subscriptions.quota_request_json(req)
    return JSONResponse(await run_in_threadpool(work), status_code=201)


@router.get(Q + "/quotaRequests")
def list_quota_requests(request: Request, subscription_id: str, location: str):
    _hsm_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        location = require_region(s, location)
        return {"value": [subscriptions.quota_request_json(r) for r in subscriptions.list_requests(s, sub)
                          if r.region == location]}
