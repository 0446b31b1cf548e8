"""N0: generate a random value."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import HostError
from ..fields import Cursor

if TYPE_CHECKING:
    from ..host_commands import CommandContext


def cmd_n0(ctx: CommandContext, cur: Cursor) -> str:
    """Random value length (3N, bytes, 001..999) -> that many random bytes (binary)."""
    length = int(cur.take_digits(3))
    cur.trailing()
    if length == 0:
        raise HostError("01", "invalid random value length (001..999)")
    return os.urandom(length).decode("latin-1")
