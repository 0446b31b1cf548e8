"""Microsoft.HardwareSecurityModules/dedicatedHSMs on the ARM surface."""
from __future__ import annotations

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from hsmcloud.arm import json_text, render
from hsmcloud.arm.api_versions import require_api_version
from hsmcloud.arm.auth import for_subscription, principal_of
from hsmcloud.arm.paging import page
from hsmcloud.controlplane.operations import get_operation, in_progress_for
from hsmcloud.errors import Conflict, InvalidRequest, ServiceUnavailable
from hsmcloud.controlplane.hsms import parse_patch, validate_name
from hsmcloud.controlplane.scope import require_group
from hsmcloud.store.models import Device, NetworkInterface, Stamp

NS = "Microsoft.HardwareSecurityModules"
RG_PATH = "/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/Microsoft.HardwareSecurityModules"
router = APIRouter()


def services(request: Request):
    return request.app.state.services


def api_version(request: Request) -> str:
    return require_api_version(request.query_params.get("api-version"), NS)


async def json_body(request: Request) -> object:
    raw = await request.body()
    if not raw:
        raise InvalidRequest("The request body is empty; send the resource as JSON.", code="InvalidRequestContent")
    try:
        return json_text.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.", code="InvalidRequestContent") from None


def render_hsm(svc, s, h, version: str) -> dict:
    return render.hsm(h, nics=svc.hsms.nics_of(s, h), stamp=svc.hsms.stamp_name(s, h), api_version=version)


def render_list(request: Request, svc, s, hsms: list, version: str) -> dict:
    """One page of HSMs, with their NICs and stamps read in two queries rather than two per HSM."""
    ids_ = [h.id for h in hsms]
    nics: dict[str, list] = {}
    if ids_:
        for n in s.scalars(select(NetworkInterface).where(NetworkInterface.hsm_id.in_(ids_))
                           .order_by(NetworkInterface.id)):
            nics.setdefault(n.hsm_id, []).append(n)
    stamps = {st.id: st.name for st in s.scalars(select(Stamp))}
    return page(request, hsms, lambda h: render.hsm(
        h, nics=nics.get(h.id, []), stamp=stamps.get(h.stamp_id, h.requested_stamp), api_version=version))


@router.put(RG_PATH + "/dedicatedHSMs/{name}")
async def create_or_update(request: Request, subscription_id: str, rg: str, name: str):
    version = api_version(request)
    principal, sub = for_subscription(request, subscription_id)
    body = await json_body(request)
    svc = services(request)

    def work():
        with svc.store.session() as s:
            h, op, created = svc.hsms.create_or_update(s, principal, sub, rg, name, body, version)
            headers = async_operation_headers(request, svc, sub, op.location, op.id, version) if op else {}
            return render_hsm(svc, s, h, version), created, headers

    out, created, headers = await run_in_threadpool(work)
    if headers:
        svc.lifecycle.wake()
    # ARM's asynchronous PUT: 201 for a new resource, 200 for an existing one (its retry or update);
    # Azure-AsyncOperation names the operation whenever one was started.
    return JSONResponse(out, status_code=201 if created else 200, headers=headers)


@router.get(RG_PATH + "/dedicatedHSMs/{name}")
def get(request: Request, subscription_id: str, rg: str, name: str):
    version = api_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return render_hsm(svc, s, svc.hsms.get(s, sub, rg, name), version)


@router.patch(RG_PATH + "/dedicatedHSMs/{name}")
async def update(request: Request, subscription_id: str, rg: str, name: str):
    version = api_version(request)
    principal, sub = for_subscription(request, subscription_id)
    req = parse_patch(await json_body(request))
    svc = services(request)

    def check():
        with svc.store.session() as s:
            return svc.hsms.licence_change(s, sub, rg, name, req)

    change = await run_in_threadpool(check)
    if change:
        # A payment HSM's performance level: the provider installs the new licence on the device
        # (its calls per second) through the management interface; customer content is untouched.
        serial, cps = change
        mgmt = await svc.lifecycle.start_device(serial)
        await mgmt.set_licence(cps=cps)

    def work():
        with svc.store.session() as s:
            return render_hsm(svc, s, svc.hsms.apply_patch(s, principal, sub, rg, name, req), version)

    return await run_in_threadpool(work)


def device_reports(svc, serial: str | None) -> tuple[bool | None, bool | None]:
    """(zeroized, released) as the device reports them; None where no device was handed over."""
    if not serial:
        return None, None
    with svc.store.session() as s:
        d = s.get(Device, serial)
        kind, address, port, token = d.kind, d.loopback_address, d.mgmt_port, d.mgmt_token
    if not port:
        raise ServiceUnavailable(f"The HSM's device {serial} is not running, so its zeroized state cannot be read. "
                                 "Retry shortly; the provider has been alerted.", code="DeviceUnreachable")
    try:
        resp = httpx.get(f"http://{address}:{port}/health", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        resp.raise_for_status()
    except httpx.HTTPError:
        raise ServiceUnavailable(f"The HSM's device {serial} does not answer on its management interface. Retry "
                                 "shortly; the provider has been alerted.", code="DeviceUnreachable") from None
    health = resp.json()
    if kind == "payshield":
        return None, bool(health.get("released"))
    return bool(health.get("zeroized")), None


def operation_location(request: Request, sub: str, location: str, op_id: str, version: str,
                       kind: str = "operationResults") -> str:
    base = str(request.base_url).rstrip("/")
    return f"{base}/subscriptions/{sub}/providers/{NS}/locations/{location}/{kind}/{op_id}?api-version={version}"


def async_operation_headers(request: Request, svc, sub: str, location: str, op_id: str, version: str,
                            *, with_location: bool = False) -> dict:
    """Where clients poll an operation: Azure-AsyncOperation (its status), optionally Location (its result)."""
    headers = {"Azure-AsyncOperation": operation_location(request, sub, location, op_id, version,
                                                          "operationStatuses"),
               "Retry-After": str(svc.settings.retry_after_seconds)}
    if with_location:
        headers["Location"] = operation_location(request, sub, location, op_id, version)
    return headers


@router.delete(RG_PATH + "/dedicatedHSMs/{name}")
def delete(request: Request, subscription_id: str, rg: str, name: str):
    version = api_version(request)
    principal, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        validate_name(name)
        require_group(s, sub, rg)
        h = svc.hsms.find(s, sub, rg, name)
        if h is None:
            return Response(status_code=204)
        running = in_progress_for(s, h.id)
        if running is not None and running.kind == "hsm.delete":
            return Response(status_code=202, headers=async_operation_headers(
                request, svc, sub, running.location, running.id, version, with_location=True))
        if running is not None:
            raise Conflict(f"Dedicated HSM '{h.name}' is {h.provisioning_state}: wait for the running operation to "
                           "finish before deleting it.", code="AnotherOperationInProgress")
        serial = h.device_serial if not h.force_delete else None
    zeroized, released = device_reports(svc, serial)
    with svc.store.session() as s:
        h = svc.hsms.find(s, sub, rg, name)
        if h is None:
            return Response(status_code=204)
        op = svc.hsms.begin_delete(s, principal, h, zeroized=zeroized, released=released)
        headers = async_operation_headers(request, svc, sub, op.location, op.id, version, with_location=True)
    svc.lifecycle.wake()
    return Response(status_code=202, headers=headers)


@router.get(RG_PATH + "/dedicatedHSMs")
def list_by_group(request: Request, subscription_id: str, rg: str):
    version = api_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return render_list(request, svc, s, svc.hsms.list(s, sub, rg), version)


@router.get("/subscriptions/{subscription_id}/providers/Microsoft.HardwareSecurityModules/dedicatedHSMs")
def list_by_subscription(request: Request, subscription_id: str):
    version = api_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return render_list(request, svc, s, svc.hsms.list(s, sub, None), version)


@router.get(RG_PATH + "/dedicatedHSMs/{name}/outboundNetworkDependenciesEndpoints")
def outbound_endpoints(request: Request, subscription_id: str, rg: str, name: str):
    version = api_version(request)
    if version == "2018-10-31-preview":
        raise InvalidRequest("outboundNetworkDependenciesEndpoints needs api-version 2021-11-30 or later.",
                             code="InvalidApiVersionParameter")
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        svc.hsms.get(s, sub, rg, name)
    # A dedicated HSM needs no outbound endpoint: it talks only to the customer's virtual network.
    return {"value": []}


@router.get(RG_PATH + "/dedicatedHSMs/{name}/endpoints")
def appliance_endpoints(request: Request, subscription_id: str, rg: str, name: str):
    """hsmcloud extension: where the HSM's virtual private IP is reachable on this machine (tenant only)."""
    api_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        h = svc.hsms.get(s, sub, rg, name)
        if h.provisioning_state != "Succeeded" or not h.device_serial:
            raise InvalidRequest(f"Dedicated HSM '{name}' is {h.provisioning_state}; its appliance has endpoints "
                                 "once it is Succeeded.", code="HsmNotProvisioned")
        d = s.get(Device, h.device_serial)
        nics = svc.hsms.nics_of(s, h)
        out = {"name": h.name, "sku": h.sku, "serial": d.serial, "kind": d.kind, "address": d.loopback_address,
               "privateIpAddresses": [n.private_ip for n in nics]}
        if d.kind == "luna":
            out["ports"] = {"ssh": d.ssh_port, "ntls": d.ntls_port}
            # Good for the first login only, which forces the tenant to change it.
            out["initialAdminPassword"] = svc.credentials.initial_admin_password(h)
        else:
            # HOST1/HOST2 for payment applications; the management port stands in for payShield
            # Manager on the management NIC. Its credential is the tenant's: claimed with
            # POST .../managementCredential, never kept or shown here.
            out["ports"] = {"host1": d.host1_port, "host2": d.host2_port, "management": d.mgmt_port}
            issued = d.tenant_credential_issued_at
            out["managementCredentialIssuedAt"] = issued.isoformat() if issued else None
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


@router.post(RG_PATH + "/dedicatedHSMs/{name}/managementCredential")
async def issue_management_credential(request: Request, subscription_id: str, rg: str, name: str):
    """hsmcloud extension: the tenant claims its payment HSM's management credential, once."""
    api_version(request)
    principal, sub = for_subscription(request, subscription_id)
    body = await json_body(request) if await request.body() else {}
    if not isinstance(body, dict) or set(body) - {"tokenSha256"}:
        raise InvalidRequest("Send no body (a token is made for you and shown once), or {\"tokenSha256\": "
                             "\"<SHA-256 of your own token, 64 hex digits>\"}.", code="InvalidRequestContent")
    out = await services(request).credentials.issue_management_credential(principal, sub, rg, name,
                                                                         body.get("tokenSha256"))
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


@router.get("/providers/Microsoft.HardwareSecurityModules/operations")
def provider_operations(request: Request):
    version = api_version(request)
    if version == "2018-10-31-preview":
        raise InvalidRequest("The operations list needs api-version 2021-11-30 or later.",
                             code="InvalidApiVersionParameter")
    principal_of(request)
    ops = [("read", "View DedicatedHsm", "View the properties of a DedicatedHsm"),
           ("write", "Create or Update DedicatedHsm", "Create or update a DedicatedHsm"),
           ("delete", "Delete DedicatedHsm", "Delete a DedicatedHsm"),
           ]
    value = [{"name": f"{NS}/dedicatedhsms/{verb}", "isDataAction": False, "origin": "system",
              "display": {"provider": "Microsoft Hardware Security Modules", "resource": "DedicatedHsm",
                          "operation": op, "description": desc}} for verb, op, desc in ops]
    value.append({"name": f"{NS}/dedicatedhsms/outboundNetworkDependenciesEndpoints/read", "isDataAction": False,
                  "origin": "system", "display": {"provider": "Microsoft Hardware Security Modules",
                                                  "resource": "DedicatedHsm",
                                                  "operation": "List outbound network dependencies",
                                                  "description": "Lists the outbound endpoints of a DedicatedHsm"}})
    value.append({"name": f"{NS}/locations/operationresults/read", "isDataAction": False, "origin": "system",
                  "display": {"provider": "Microsoft Hardware Security Modules", "resource": "Operation results",
                              "operation": "Read operation result",
                              "description": "Reads the result of an asynchronous operation"}})
    if version in ("2024-06-30-preview", "2025-03-31"):
        for item in value:
            item["actionType"] = "Internal"
    return {"value": value}


@router.get("/subscriptions/{subscription_id}/providers/Microsoft.HardwareSecurityModules/locations/{location}"
            "/operationResults/{op_id}")
def operation_result(request: Request, subscription_id: str, location: str, op_id: str):
    version = api_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        op = get_operation(s, sub, op_id)
        status, error = op.status, op.error
    if status == "InProgress":
        return Response(status_code=202, headers={
            "Location": operation_location(request, sub, location, op_id, version),
            "Retry-After": str(svc.settings.retry_after_seconds)})
    if status == "Failed":
        err = error or {"code": "OperationFailed", "message": "The operation failed."}
        return JSONResponse({"error": {"code": err.get("code"), "message": err.get("message"),
                                       "details": err.get("details", [])}}, status_code=409)
    return Response(status_code=200)


@router.get("/subscriptions/{subscription_id}/providers/Microsoft.HardwareSecurityModules/locations/{location}"
            "/operationStatuses/{op_id}")
def operation_status(request: Request, subscription_id: str, location: str, op_id: str):
    api_version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        out = render.operation_status(get_operation(s, sub, op_id))
    headers = {}
    if out["status"] == "InProgress":
        # Clients wait Retry-After between polls (without it the SDK waits 30 s).
        headers["Retry-After"] = str(svc.settings.retry_after_seconds)
    return JSONResponse(out, headers=headers)
