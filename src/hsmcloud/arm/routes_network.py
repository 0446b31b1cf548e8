"""Microsoft.Network on the ARM surface: the subset dedicated HSMs depend on."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from hsmcloud import resource_ids as ids
from hsmcloud.arm import render
from hsmcloud.arm.api_versions import require_api_version
from hsmcloud.arm.auth import for_subscription
from hsmcloud.arm.routes_hsm import json_body, services
from hsmcloud.controlplane.scope import find_group
from hsmcloud.store.models import DedicatedHsm, NetworkInterface, Subnet, VirtualNetwork

NS = "Microsoft.Network"
P = "/subscriptions/{subscription_id}/resourceGroups/{rg}/providers/Microsoft.Network"
router = APIRouter()


def _version(request: Request) -> str:
    return require_api_version(request.query_params.get("api-version"), NS)


def _nics(s, sub):
    return list(s.scalars(select(NetworkInterface).where(NetworkInterface.subscription_id == sub)))


def _vnet_json(svc, s, sub, rg, v):
    return render.vnet(sub, rg, v, svc.network.list_subnets_of(s, v), _nics(s, sub))


@router.put(P + "/virtualNetworks/{name}")
async def put_vnet(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    body = await json_body(request)
    svc = services(request)

    def work():
        with svc.store.session() as s:
            v, created = svc.network.put_vnet(s, sub, rg, name, body)
            return _vnet_json(svc, s, sub, rg, v), created
    out, created = await run_in_threadpool(work)
    return JSONResponse(out, status_code=201 if created else 200)


@router.get(P + "/virtualNetworks/{name}")
def get_vnet(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return _vnet_json(svc, s, sub, rg, svc.network.get_vnet(s, sub, rg, name))


@router.get(P + "/virtualNetworks")
def list_vnets(request: Request, subscription_id: str, rg: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": [_vnet_json(svc, s, sub, rg, v) for v in svc.network.list_vnets(s, sub, rg)]}


@router.delete(P + "/virtualNetworks/{name}")
def delete_vnet(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        existed = svc.network.delete_vnet(s, sub, rg, name)
    return Response(status_code=200 if existed else 204)


@router.put(P + "/virtualNetworks/{vnet}/subnets/{name}")
async def put_subnet(request: Request, subscription_id: str, rg: str, vnet: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    body = await json_body(request)
    svc = services(request)

    def work():
        with svc.store.session() as s:
            v, sn, created = svc.network.put_subnet(s, sub, rg, vnet, name, body)
            return render.subnet(sub, rg, v, sn, _nics(s, sub)), created
    out, created = await run_in_threadpool(work)
    return JSONResponse(out, status_code=201 if created else 200)


@router.get(P + "/virtualNetworks/{vnet}/subnets/{name}")
def get_subnet(request: Request, subscription_id: str, rg: str, vnet: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        v, sn = svc.network.get_subnet(s, sub, rg, vnet, name)
        return render.subnet(sub, rg, v, sn, _nics(s, sub))


@router.get(P + "/virtualNetworks/{vnet}/subnets")
def list_subnets(request: Request, subscription_id: str, rg: str, vnet: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        v = svc.network.get_vnet(s, sub, rg, vnet)
        nics = _nics(s, sub)
        return {"value": [render.subnet(sub, rg, v, sn, nics) for sn in svc.network.list_subnets_of(s, v)]}


@router.delete(P + "/virtualNetworks/{vnet}/subnets/{name}")
def delete_subnet(request: Request, subscription_id: str, rg: str, vnet: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        existed = svc.network.delete_subnet(s, sub, rg, vnet, name)
    return Response(status_code=200 if existed else 204)


@router.put(P + "/virtualNetworkGateways/{name}")
async def put_gateway(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    body = await json_body(request)
    svc = services(request)

    def work():
        with svc.store.session() as s:
            gw, created = svc.network.put_gateway(s, sub, rg, name, body)
            return render.gateway(sub, rg, gw), created
    out, created = await run_in_threadpool(work)
    return JSONResponse(out, status_code=201 if created else 200)


@router.get(P + "/virtualNetworkGateways/{name}")
def get_gateway(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return render.gateway(sub, rg, svc.network.get_gateway(s, sub, rg, name))


@router.get(P + "/virtualNetworkGateways")
def list_gateways(request: Request, subscription_id: str, rg: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": [render.gateway(sub, rg, gw) for gw in svc.network.list_gateways(s, sub, rg)]}


@router.delete(P + "/virtualNetworkGateways/{name}")
def delete_gateway(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        existed = svc.network.delete_gateway(s, sub, rg, name)
    return Response(status_code=200 if existed else 204)


def nic_json(s, sub: str, n: NetworkInterface) -> dict:
    sn = s.get(Subnet, n.subnet_id)
    v = s.get(VirtualNetwork, sn.vnet_id)
    # The vnet may live in another group than the NIC; find that group's spelling.
    g = find_group(s, sub, v.rg_key)
    subnet_ref = ids.subnet_id(sub, g.name if g else v.rg_key, v.name, sn.name)
    hsm_ref = None
    if n.hsm_id:
        h = s.get(DedicatedHsm, n.hsm_id)
        hsm_ref = ids.hsm_id(sub, h.rg_name, h.name)
    return render.nic(sub, n, subnet_ref, hsm_ref)


@router.get(P + "/networkInterfaces/{name}")
def get_nic(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return nic_json(s, sub, svc.network.get_nic(s, sub, rg, name))


@router.get(P + "/networkInterfaces")
def list_nics(request: Request, subscription_id: str, rg: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": [nic_json(s, sub, n) for n in svc.network.list_nics(s, sub, rg)]}


@router.get("/subscriptions/{subscription_id}/providers/Microsoft.Network/networkInterfaces")
def list_nics_sub(request: Request, subscription_id: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        return {"value": [nic_json(s, sub, n) for n in svc.network.list_nics(s, sub, None)]}


@router.delete(P + "/networkInterfaces/{name}")
def delete_nic(request: Request, subscription_id: str, rg: str, name: str):
    _version(request)
    _, sub = for_subscription(request, subscription_id)
    svc = services(request)
    with svc.store.session() as s:
        existed = svc.network.delete_nic(s, sub, rg, name)
    return Response(status_code=200 if existed else 204)
