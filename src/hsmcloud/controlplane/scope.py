"""Lookups every service needs: the subscription record and the resource group of a request."""
from __future__ import annotations

import re
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud.errors import InvalidRequest, NotFound
from hsmcloud.store.models import ResourceGroup, Subscription

# ARM's rule for resource group names (\w: Unicode letters and digits, and underscores).
GROUP_NAME_RE = re.compile(r"^[-\w._()]{1,90}$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def key(name: str) -> str:
    """ARM names are case-insensitive; the store compares them by this key."""
    return name.lower()


def ensure_subscription(session: Session, sub: str) -> Subscription:
    row = session.get(Subscription, sub)
    if row is None:
        row = Subscription(id=sub, allowlisted=False, created_at=utcnow())
        session.add(row)
        session.flush()
    return row


def require_region(session: Session, location: str, *, code: str = "LocationNotAvailableForResourceType",
                   target: str | None = None) -> str:
    """The normalized region name, if the fleet has it."""
    from hsmcloud.fleet.inventory import regions

    known = regions(session)
    location = location.replace(" ", "").lower()
    if location not in known:
        raise InvalidRequest(f"The location '{location}' is not available for resource type "
                             f"'Microsoft.HardwareSecurityModules/dedicatedHSMs'. List of available regions is "
                             f"'{', '.join(sorted(known))}'.", code=code, target=target)
    return location


def check_group_name(name: str) -> None:
    """Refuse a name no resource group can have ('rg?x=1', control characters, a trailing period)."""
    if not GROUP_NAME_RE.match(name) or name.endswith("."):
        raise InvalidRequest(f"Resource group name '{name}' is invalid: 1-90 letters, digits, underscores, "
                             "hyphens, periods and parentheses, not ending in a period.",
                             code="InvalidResourceGroupName")


def find_group(session: Session, sub: str, rg: str) -> ResourceGroup | None:
    return session.scalar(select(ResourceGroup).where(
        ResourceGroup.subscription_id == sub, ResourceGroup.name_key == key(rg)))


def require_group(session: Session, sub: str, rg: str) -> ResourceGroup:
    check_group_name(rg)
    group = find_group(session, sub, rg)
    if group is None or group.state == "Deleting":
        raise NotFound(f"Resource group '{rg}' could not be found. Create it first "
                       f"(PUT /subscriptions/{sub}/resourcegroups/{rg} or 'hsmcloud network create').",
                       code="ResourceGroupNotFound")
    return group
