"""Resource groups, and what deleting one does to the HSMs inside it (they are orphaned)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud.controlplane.hsms import arm_id
from hsmcloud.controlplane import subscriptions
from hsmcloud.controlplane.scope import check_group_name, ensure_subscription, find_group, key, require_group, utcnow
from hsmcloud.errors import InvalidRequest
from hsmcloud.identity.tokens import Principal
from hsmcloud.store.models import (DedicatedHsm, NetworkInterface, ResourceGroup, Subnet, VirtualNetwork,
                                   VirtualNetworkGateway)

def put_group(s: Session, principal: Principal, sub: str, name: str, body: object) -> tuple[ResourceGroup, bool]:
    check_group_name(name)
    if not isinstance(body, dict) or not isinstance(body.get("location"), str) or not body["location"]:
        raise InvalidRequest("A resource group needs a 'location', e.g. {\"location\": \"eastus\"}.",
                             code="LocationRequired", target="location")
    tags = body.get("tags") or {}
    if not isinstance(tags, dict):
        raise InvalidRequest("'tags' must be an object of string values.", code="InvalidTags", target="tags")
    ensure_subscription(s, sub)
    group = find_group(s, sub, name)
    created = group is None
    if created:
        group = ResourceGroup(subscription_id=sub, name=name, name_key=key(name),
                              location=body["location"].replace(" ", "").lower(), tags=tags, created_at=utcnow())
        s.add(group)
        s.flush()
        # HSMs orphaned under an earlier group of this name become reachable again.
        for h in s.scalars(select(DedicatedHsm).where(DedicatedHsm.subscription_id == sub,
                                                      DedicatedHsm.rg_key == key(name),
                                                      DedicatedHsm.live_key.is_not(None))):
            h.orphaned = False
    else:
        group.tags = tags
    return group, created


def list_groups(s: Session, sub: str) -> list[ResourceGroup]:
    return list(s.scalars(select(ResourceGroup).where(ResourceGroup.subscription_id == sub)
                          .order_by(ResourceGroup.id)))


def delete_group(s: Session, principal: Principal, sub: str, name: str) -> list[str]:
    """Delete a group and its network resources; HSMs in it are NOT deleted but orphaned.

    Returns the names of the HSMs that were orphaned."""
    group = require_group(s, sub, name)
    rk = key(name)
    orphaned = []
    for h in s.scalars(select(DedicatedHsm).where(DedicatedHsm.subscription_id == sub, DedicatedHsm.rg_key == rk,
                                                  DedicatedHsm.live_key.is_not(None))):
        h.orphaned = True
        orphaned.append(h.name)
        subscriptions.record(s, principal.name, "hsm.orphaned", arm_id(h), group=name)
    hsm_nic_subnets = set(s.scalars(select(NetworkInterface.subnet_id).where(NetworkInterface.hsm_id.is_not(None))))
    for gw in s.scalars(select(VirtualNetworkGateway).where(VirtualNetworkGateway.subscription_id == sub,
                                                            VirtualNetworkGateway.rg_key == rk)):
        s.delete(gw)
    for nic in s.scalars(select(NetworkInterface).where(NetworkInterface.subscription_id == sub,
                                                        NetworkInterface.rg_key == rk,
                                                        NetworkInterface.hsm_id.is_(None))):
        s.delete(nic)
    for vnet in s.scalars(select(VirtualNetwork).where(VirtualNetwork.subscription_id == sub,
                                                       VirtualNetwork.rg_key == rk)):
        subnets = list(s.scalars(select(Subnet).where(Subnet.vnet_id == vnet.id)))
        if any(sn.id in hsm_nic_subnets for sn in subnets):
            continue  # still carries an orphaned HSM's NIC: it stays with the orphan
        for sn in subnets:
            s.delete(sn)
        s.delete(vnet)
    s.flush()
    s.delete(group)
    subscriptions.record(s, principal.name, "group.delete", f"/subscriptions/{sub}/resourceGroups/{name}",
                         orphaned=orphaned)
    return orphaned
