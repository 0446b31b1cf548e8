"""The fleet's layout: regions, two stamps each, fifteen devices of each kind per stamp."""
from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud.store.models import Device, Stamp

STAMPS_PER_REGION = 2
CUSTOMER_DEVICES_PER_STAMP = 12
SPARE_DEVICES_PER_STAMP = 2
TEST_DEVICES_PER_STAMP = 1
DEVICE_KINDS = ("luna", "payshield")


def device_roles() -> list[str]:
    return (["customer"] * CUSTOMER_DEVICES_PER_STAMP + ["spare"] * SPARE_DEVICES_PER_STAMP
            + ["test"] * TEST_DEVICES_PER_STAMP)


def loopback_address(stamp_id: int, kind: str, slot: int, *, share_single: bool) -> str:
    """Each device's own loopback address, 127.<stamp>.<kind>.<10+slot>.

    Linux routes all of 127.0.0.0/8 to the loopback interface; where only 127.0.0.1
    exists (macOS), devices share it and differ by port."""
    if share_single:
        return "127.0.0.1"
    return f"127.{stamp_id}.{1 if kind == 'luna' else 2}.{10 + slot}"


def serial_for(stamp_id: int, kind: str, slot: int) -> str:
    if kind == "luna":
        return f"15{stamp_id:03d}{slot:02d}"  # Luna serials are numeric
    return f"PS10K{stamp_id:03d}{slot:02d}"


def regions(session: Session) -> set[str]:
    """The regions the fleet has stamps in."""
    return set(session.scalars(select(Stamp.region).distinct()))


def seed_fleet(session: Session, regions: tuple[str, ...], *, share_single_loopback: bool) -> int:
    """Add whatever of the standard layout is missing; returns how many devices were added."""
    added = 0
    for region in regions:
        for stamp_index in range(1, STAMPS_PER_REGION + 1):
            stamp = session.scalar(select(Stamp).where(Stamp.region == region, Stamp.index == stamp_index))
            if stamp is None:
                stamp = Stamp(region=region, name=f"stamp{stamp_index}", index=stamp_index)
                session.add(stamp)
                session.flush()
            for kind in DEVICE_KINDS:
                for slot, role in enumerate(device_roles(), start=1):
                    serial = serial_for(stamp.id, kind, slot)
                    if session.get(Device, serial) is not None:
                        continue
                    session.add(Device(
                        serial=serial, stamp_id=stamp.id, kind=kind, role=role, state="free",
                        loopback_address=loopback_address(stamp.id, kind, slot,
                                                          share_single=share_single_loopback),
                        mgmt_token=secrets.token_urlsafe(32),
                    ))
                    added += 1
    return added
