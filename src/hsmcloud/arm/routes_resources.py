"""Microsoft.Resources on the ARM surface: resource groups and the generic resources list."""
from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from hsmcloud import resource_ids as ids
from hsmcloud.arm import render
from hsmcloud.arm.api_versions import (HSM_API_VERSIONS, NETWORK_API_VERSIONS, RESOURCES_API_VERSIONS,
                                       require_api_version)
from hsmcloud.arm.auth import for_subscription, principal_of
from hsmcloud.arm.paging import page
from hsmcloud.arm.routes_hsm import json_body, services
from hsmcloud.controlplane import groups, quota, subscriptions
from hsmcloud.controlplane.operations import get_operation, new_operation
from hsmcloud.controlplane.scope import find_group, key, require_group, require_region, utcnow
from hsmcloud.errors import InvalidRequest, NotFound
from hsmcloud.fleet.inventory import regions
from hsmcloud.identity import directory
from hsmcloud.network.service import NetworkService
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


# `$filter` clauses of the generic list (what `az resource list` builds), joined with ' and '.
_CLAUSE = re.compile(r"^\s*(resourceType|resourceGroup|name|location|tagName|tagValue)\s+eq\s+'([^']*)'\s*$",
                     re.IGNORECASE)


def _filters(request: Request) -> dict[str, str]:
    """{field (lower case): value (lower case)} of the request's `$filter`."""
    flt = request.query_params.get("$filter") or ""
    out: dict[str, str] = {}
    for clause in re.split(r"\s+and\s+", flt.strip(), flags=re.IGNORECASE) if flt.strip() else []:
        match = _CLAUSE.match(clause)
        if not match or match.group(1).lower() in out:
            raise InvalidRequest(f"Unsupported $filter clause '{clause}': use \"<field> eq '<value>'\" with "
                                 "resourceType, resourceGroup, name, location, tagName or tagValue, each at most "
                                 "once, joined with 'and'.", code="InvalidFilterInQueryString")
        out[match.group(1).lower()] = match.group(2).lower()
    if "tagvalue" in out and "tagname" not in out:
        raise InvalidRequest("$filter tagValue needs a tagName clause.", code="InvalidFilterInQueryString")
    return out


def _wants_hidden(request: Request, filters: dict[str, str]) -> bool:
    q = request.query_params
    return (q.get("showHiddenTypes", "").lower() == "true" or "showhiddentypes" in (q.get("$expand") or "").lower()
            or filters.get("resourcetype") == HSM_TYPE.lower())


def _matches(item: dict, filters: dict[str, str]) -> bool:
    tags = {k.lower(): (v or "").lower() for k, v in (item.get("tags") or {}).items()}
    checks = {"resourcetype": item["type"], "resourcegroup": item["resourceGroup"], "name": item["name"],
              "location": item["location"]}
    for field, value in filters.items():
        if field in checks and checks[field].lower() != value:
            return False
    if "tagname" in filters and (filters["tagname"] not in tags
                                 or ("tagvalue" in filters and tags[filters["tagname"]] != filters["tagvalue"])):
        return False
    return True


def _generic(s, sub: str, rg_key: str | None) -> list[dict]:
    """Every resource of the subscription (or one group) in the generic list's short form."""
    out = []

    def where(model):
        q = select(model).where(model.subscription_id == sub)
        return q.where(model.rg_key == rg_key) if rg_key else q

    # Resource ids carry each group's own spelling: read the subscription's groups once.
    spelled = {g.name_key: g.name for g in groups.list_groups(s, sub)}

    def item(rid, name, rtype, location, tags, created, changed, state, rg, **extra):
        return {"id": rid, "name": name, "type": rtype, "location": location, "tags": tags or {}, **extra,
                "resourceGroup": rg, "createdTime": created.isoformat(), "changedTime": changed.isoformat(),
                "provisioningState": state}

    for v in s.scalars(where(VirtualNetwork)):
        rg = spelled.get(v.rg_key, v.rg_key)
        out.append(item(ids.network_id(sub, rg, "virtualNetworks", v.name), v.name, "Microsoft.Network/virtualNetworks",
                        v.location, v.tags, v.created_at, v.created_at, "Succeeded", rg))
    for gw in s.scalars(where(VirtualNetworkGateway)):
        rg = spelled.get(gw.rg_key, gw.rg_key)
        out.append(item(ids.network_id(sub, rg, "virtualNetworkGateways", gw.name), gw.name,
                        "Microsoft.Network/virtualNetworkGateways", gw.location, gw.tags, gw.created_at,
                        gw.created_at, NetworkService.gateway_state(gw), rg))
    for n in s.scalars(where(NetworkInterface)):
        out.append(item(ids.network_id(sub, n.rg_name, "networkInterfaces", n.name), n.name,
                        "Microsoft.Network/networkInterfaces", n.location, {}, n.created_at, n.created_at,
                        "Succeeded", n.rg_name))
    for h in s.scalars(where(DedicatedHsm).where(DedicatedHsm.live_key.is_not(None))):
        out.append(item(ids.hsm_id(sub, h.rg_name, h.name), h.name, HSM_TYPE, h.location, h.tags, h.created_at,
                        h.modified_at, h.provisioning_state, h.rg_name, sku={"name": h.sku}))
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
    filters = _filters(request)
    hidden_ok = _wants_hidden(request, filters)
    expand = {x.strip().lower() for x in (request.query_params.get("$expand") or "").split(",")}
    out = []
    for item in items:
        if item["type"] == HSM_TYPE and not hidden_ok:
            continue  # a hidden type, as in the portal without "Show hidden types"
        if not _matches(item, filters):
            continue
        shown = {k: v for k, v in item.items() if k != "resourceGroup"}
        for field in ("createdTime", "changedTime", "provisioningState"):
            if field.lower() not in expand:
                del shown[field]
        out.append(shown)
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


# ---- subscriptions, tenants and resource providers (what `az login` and `az resource` read) ------
# Newest first, as ARM lists them; `az resource` takes the first stable one.
PROVIDER_TYPES = {
    ids.HSM_PROVIDER: {"dedicatedHSMs": tuple(reversed(HSM_API_VERSIONS)),
                       "locations": tuple(reversed(HSM_API_VERSIONS)),
                       "locations/operationResults": tuple(reversed(HSM_API_VERSIONS)),
                       "operations": tuple(reversed(HSM_API_VERSIONS))},
    ids.NETWORK_PROVIDER: {t: NETWORK_API_VERSIONS for t in ("virtualNetworks", "virtualNetworks/subnets",
                                                             "virtualNetworkGateways", "networkInterfaces")},
    "Microsoft.Resources": {t: RESOURCES_API_VERSIONS for t in ("subscriptions", "tenants", "resourceGroups",
                                                                "resources", "subscriptions/resourceGroups",
                                                                "subscriptions/providers")},
}


def subscription_json(sub: str, tenant_id: str) -> dict:
    return {"id": f"/subscriptions/{sub}", "authorizationSource": "RoleBased", "managedByTenants": [],
            "subscriptionId": sub, "tenantId": tenant_id, "displayName": f"hsmcloud {sub}", "state": "Enabled",
            "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "hsmcloud",
                                     "spendingLimit": "Off"}}


@router.get("/subscriptions")
def list_subscriptions(request: Request):
    """The subscriptions the caller acts on: a tenant token's one; none for an operator token."""
    _version(request)
    principal = principal_of(request)
    tid = services(request).token_endpoint.tenant_id
    subs = [] if principal.is_operator else [principal.subscription_id]
    return {"value": [subscription_json(sub, tid) for sub in subs]}


@router.get("/subscriptions/{subscription_id}")
def get_subscription(request: Request, subscription_id: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    return subscription_json(sub, services(request).token_endpoint.tenant_id)


@router.get("/tenants")
def list_tenants(request: Request):
    """The one directory of this service, which every valid token belongs to."""
    _version(request)
    principal_of(request)
    tid = services(request).token_endpoint.tenant_id
    return {"value": [{"id": f"/tenants/{tid}", "tenantId": tid, "tenantCategory": "Home", "countryCode": "US",
                       "displayName": directory.DISPLAY_NAME, "defaultDomain": directory.DEFAULT_DOMAIN,
                       "domains": [directory.DEFAULT_DOMAIN], "tenantType": "AAD"}]}


def provider_json(request: Request, sub: str, namespace: str) -> dict:
    svc = services(request)
    with svc.store.session() as s:
        locations = regions(s)
    return {"id": f"/subscriptions/{sub}/providers/{namespace}", "namespace": namespace,
            "registrationState": "Registered", "registrationPolicy": "RegistrationRequired",
            "resourceTypes": [{"resourceType": rtype, "locations": sorted(locations), "apiVersions": list(versions),
                               "capabilities": "None"} for rtype, versions in PROVIDER_TYPES[namespace].items()]}


def _namespace(namespace: str) -> str:
    for known in PROVIDER_TYPES:
        if known.lower() == namespace.lower():
            return known
    raise NotFound(f"The resource provider '{namespace}' is not served here; hsmcloud serves "
                   f"{', '.join(PROVIDER_TYPES)}.", code="InvalidResourceNamespace")


@router.get("/subscriptions/{subscription_id}/providers")
def list_providers(request: Request, subscription_id: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    return {"value": [provider_json(request, sub, ns) for ns in PROVIDER_TYPES]}


@router.get("/subscriptions/{subscription_id}/providers/{namespace}")
def get_provider(request: Request, subscription_id: str, namespace: str):
    """A resource provider with its types and api-versions (`az resource` picks its api-version here)."""
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    return provider_json(request, sub, _namespace(namespace))


@router.post("/subscriptions/{subscription_id}/providers/{namespace}/register")
def register_provider(request: Request, subscription_id: str, namespace: str):
    """Every provider here is registered for every subscription; registering changes nothing."""
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    return provider_json(request, sub, _namespace(namespace))
