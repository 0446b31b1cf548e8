"""The provider's operations on one device (licence, firmware): checked when asked, run by a worker.

A request only checks the rules and records an operation (answered 202); the worker that runs
the device's steps reaches the appliance. An API-only replica therefore never starts one."""
from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.orm import Session

from hsmcloud.controlplane import subscriptions
from hsmcloud.controlplane.engine import OperationKind, Step, StepContext, StepFailed
from hsmcloud.controlplane.operations import PROVIDER_SCOPE, in_progress_for, new_operation
from hsmcloud.errors import Conflict, InvalidRequest, NotFound
from hsmcloud.store.models import Device, Operation, Stamp

if TYPE_CHECKING:
    from hsmcloud.controlplane.lifecycle import Lifecycle

LICENCE, FIRMWARE = "device.licence", "device.firmware"


# ---- asking (request side: the store only) ------------------------------------------------------
def _payment_device(s: Session, serial: str) -> Device:
    d = s.get(Device, serial)
    if d is None:
        raise NotFound(f"No device with serial '{serial}'. 'hsmcloud operator devices' lists them.",
                       code="DeviceNotFound")
    if d.kind != "payshield":
        raise InvalidRequest(f"Device {serial} is a {d.kind} device; this applies to payment devices only.",
                             code="NotAPaymentDevice")
    return d


def _not_busy(s: Session, d: Device) -> None:
    for target in (d.serial, d.hsm_id):
        running = in_progress_for(s, target) if target else None
        if running is not None:
            raise Conflict(f"Device {d.serial} has an operation in progress ({running.kind}, operation "
                           f"{running.id}); wait for it to finish and retry.", code="AnotherOperationInProgress")


def _region(s: Session, d: Device) -> str:
    return s.get(Stamp, d.stamp_id).region


def begin_licence(s: Session, *, actor: str, serial: str, cps_limit_lifted: bool) -> Operation:
    """Lift (or restore) an allocated payment device's calls-per-second limit, as an operation."""
    d = _payment_device(s, serial)
    if d.state != "allocated":
        raise InvalidRequest(f"Device {serial} is {d.state}; the licence setting applies to a running (allocated) "
                             "device.", code="DeviceNotAllocated")
    _not_busy(s, d)
    op = new_operation(s, kind=LICENCE, subscription_id=PROVIDER_SCOPE, location=_region(s, d), target=serial,
                       step="ApplyingLicence", params={"cpsLimitLifted": cps_limit_lifted, "actor": actor})
    subscriptions.record(s, actor, "device.licence.requested", serial, cpsLimitLifted=cps_limit_lifted,
                         operation=op.id)
    return op


def begin_firmware(s: Session, *, actor: str, serial: str, version: str) -> Operation:
    """Patch an unallocated payment device, as an operation; the device leaves the free pool meanwhile."""
    d = _payment_device(s, serial)
    if d.state != "free" or d.hsm_id:
        raise InvalidRequest(f"Device {serial} is {d.state}: the provider patches unallocated devices only; the tenant "
                             "patches a device it holds.", code="DeviceAllocated")
    _not_busy(s, d)
    # Out of the pool while it is patched: no create can allocate it in the meantime.
    if s.execute(update(Device).where(Device.serial == serial, Device.state == "free", Device.hsm_id.is_(None))
                 .values(state="maintenance")).rowcount != 1:
        raise Conflict(f"Device {serial} was just allocated; the provider patches unallocated devices only.",
                       code="DeviceAllocated")
    op = new_operation(s, kind=FIRMWARE, subscription_id=PROVIDER_SCOPE, location=_region(s, d), target=serial,
                       step="InstallingFirmware", params={"version": version, "actor": actor})
    subscriptions.record(s, actor, "device.firmware.requested", serial, version=version, operation=op.id)
    return op


# ---- running (worker side) --------------------------------------------------------------------------
def kinds(lifecycle: "Lifecycle") -> list[OperationKind]:
    async def apply_licence(ctx: StepContext) -> None:
        state = await ctx.read(lambda s: s.get(Device, ctx.target).state)
        if state != "allocated":
            raise StepFailed(InvalidRequest(f"Device {ctx.target} is {state} now; the licence setting applies to "
                                            "an allocated device.", code="DeviceNotAllocated"))
        mgmt = await lifecycle.start_device(ctx.target)
        await ctx.checkpoint()
        ctx.carry["licence"] = await mgmt.set_licence(cps_limit_lifted=ctx.params["cpsLimitLifted"])

    def licence_applied(ctx: StepContext, s: Session, op: Operation) -> None:
        subscriptions.record(s, ctx.params.get("actor", "operator"), "device.licence", ctx.target,
                             cpsLimitLifted=ctx.params["cpsLimitLifted"])

    async def install_firmware(ctx: StepContext) -> None:
        mgmt = await lifecycle.start_device(ctx.target)
        try:
            await ctx.checkpoint()
            ctx.carry["firmware"] = await mgmt.update_firmware(ctx.params["version"])
        finally:
            await lifecycle.host.stop(ctx.target)  # free devices do not run

    def back_to_pool(ctx: StepContext, s: Session, op: Operation) -> None:
        s.execute(update(Device).where(Device.serial == ctx.target, Device.state == "maintenance")
                  .values(state="free"))

    def firmware_installed(ctx: StepContext, s: Session, op: Operation) -> None:
        back_to_pool(ctx, s, op)
        subscriptions.record(s, ctx.params.get("actor", "operator"), "device.firmware", ctx.target,
                             version=ctx.params["version"])

    async def stop_device(ctx: StepContext) -> None:
        await lifecycle.host.stop(ctx.target)

    return [
        OperationKind(name=LICENCE, first="ApplyingLicence", steps={
            "ApplyingLicence": Step(shown="ApplyingLicence", next=None, act=apply_licence, commit=licence_applied)},
            result=lambda ctx, s, op: {"serial": ctx.target, "licence": ctx.carry.get("licence")}),
        OperationKind(name=FIRMWARE, first="InstallingFirmware", on_failure="Restoring", steps={
            "InstallingFirmware": Step(shown="InstallingFirmware", next=None, act=install_firmware,
                                       commit=firmware_installed),
            # A refused or failed patch: the device goes back to the pool as it was.
            "Restoring": Step(shown=None, next=None, act=stop_device, commit=back_to_pool)},
            result=lambda ctx, s, op: {"serial": ctx.target, **(ctx.carry.get("firmware") or {})}),
    ]
