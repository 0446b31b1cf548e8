"""What operators see of the fleet: fill levels, inventory, orphans and billing."""
from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud import resource_ids as ids
from hsmcloud.controlplane.scope import utcnow
from hsmcloud.store.models import DedicatedHsm, Device, Stamp


def stamps(s: Session) -> list[dict]:
    out = []
    for st in s.scalars(select(Stamp).order_by(Stamp.region, Stamp.index)):
        devices = list(s.scalars(select(Device).where(Device.stamp_id == st.id)))
        for kind in ("luna", "payshield"):
            mine = [d for d in devices if d.kind == kind]
            customer = [d for d in mine if d.role == "customer"]
            allocated = sum(1 for d in customer if d.state == "allocated")
            out.append({
                "region": st.region, "stamp": st.name, "kind": kind,
                "customerDevices": len(customer), "allocated": allocated,
                "free": sum(1 for d in customer if d.state == "free"),
                "failed": sum(1 for d in mine if d.state == "failed"),
                "spares": sum(1 for d in mine if d.role == "spare"),
                "testDevices": sum(1 for d in mine if d.role == "test"),
                "fillPercent": round(100 * allocated / len(customer), 1) if customer else 0.0,
            })
    return out


def devices(s: Session, region: str | None = None) -> list[dict]:
    q = select(Device, Stamp).join(Stamp, Stamp.id == Device.stamp_id).order_by(Stamp.region, Stamp.index,
                                                                                Device.kind, Device.serial)
    if region:
        q = q.where(Stamp.region == region)
    out = []
    for d, st in s.execute(q):
        entry = {"serial": d.serial, "region": st.region, "stamp": st.name, "kind": d.kind, "role": d.role,
                 "state": d.state, "address": d.loopback_address, "sshPort": d.ssh_port, "ntlsPort": d.ntls_port, "hsm": None,
                 "lastCheckedPristineAt": d.last_checked_pristine_at.isoformat() if d.last_checked_pristine_at
                 else None}
        if d.hsm_id:
            h = s.get(DedicatedHsm, d.hsm_id)
            if h is not None:
                entry["hsm"] = ids.hsm_id(h.subscription_id, h.rg_name, h.name)
                entry["subscriptionId"] = h.subscription_id
        out.append(entry)
    return out


def hsm_summary(h: DedicatedHsm) -> dict:
    return {"id": ids.hsm_id(h.subscription_id, h.rg_name, h.name), "subscriptionId": h.subscription_id,
            "resourceGroup": h.rg_name, "name": h.name, "location": h.location, "sku": h.sku,
            "provisioningState": h.provisioning_state,
            "device": None if h.deleted_at else h.device_serial,
            "lastDevice": h.device_serial if h.deleted_at else None, "orphaned": h.orphaned,
            "forceDelete": h.force_delete, "createdAt": h.created_at.isoformat(),
            "deletedAt": h.deleted_at.isoformat() if h.deleted_at else None}


def orphans(s: Session) -> list[dict]:
    return [hsm_summary(h) for h in s.scalars(select(DedicatedHsm).where(
        DedicatedHsm.orphaned.is_(True), DedicatedHsm.live_key.is_not(None)).order_by(DedicatedHsm.created_at))]


def billing(s: Session, subscription_id: str | None = None) -> list[dict]:
    """Hours billed per HSM resource: from the hand-over of its device until deletion (or now),
    orphans included; every started hour counts. A deployment that never got a device is not billed."""
    now = utcnow()
    q = select(DedicatedHsm).order_by(DedicatedHsm.created_at)
    if subscription_id:
        q = q.where(DedicatedHsm.subscription_id == subscription_id)
    out = []
    for h in s.scalars(q):
        if h.billing_started_at is None:
            out.append(dict(hsm_summary(h), hours=0.0, billedHours=0, billing="not billed"))
            continue
        end = h.deleted_at or now
        hours = max((end - h.billing_started_at).total_seconds(), 0) / 3600
        out.append(dict(hsm_summary(h), billingStartedAt=h.billing_started_at.isoformat(), hours=round(hours, 4),
                        billedHours=max(1, math.ceil(hours - 1e-9)),
                        billing="ended" if h.deleted_at else "running"))
    return out


def operation(op, kinds: dict) -> dict:
    """An operation as operators follow it: kind, target, step and the state shown, outcome."""
    kind = kinds.get(op.kind)
    step = kind.steps.get(op.step) if kind else None
    shown = (step.shown if step and step.shown else op.step) if op.status == "InProgress" else op.status
    out = {"id": op.id, "kind": op.kind, "target": op.target, "status": op.status, "step": op.step,
           "provisioningState": shown, "attempts": op.attempts, "startTime": op.created_at.isoformat(),
           "lastUpdateTime": op.updated_at.isoformat()}
    if op.subscription_id != "provider":
        out["subscriptionId"] = op.subscription_id
    if op.status != "InProgress":
        out["endTime"] = op.updated_at.isoformat()
    if op.status == "InProgress" and op.lease_owner:
        out["worker"] = op.lease_owner
    if op.params:
        out["parameters"] = {k: v for k, v in op.params.items() if k != "actor"}
    if op.result:
        out["result"] = op.result
    if op.error:
        out["error"] = op.error
    return out
