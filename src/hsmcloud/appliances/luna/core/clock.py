"""Time as the core sees it: an injectable clock, and the stored (ISO 8601, UTC) form of an instant.

Lockouts are derived from stored timestamps and the clock's "now", never from timers, so a
test moves time by giving the core another clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


def stored(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def parse_stored(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
