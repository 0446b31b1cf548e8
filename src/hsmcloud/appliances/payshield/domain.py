"""The security domain as host commands see it: loaded LMKs, authorised state, settings.

Kept in memory (the LMKs decrypted from the sealed state at start and on load) so a host
command never touches the database; the management API changes it only through the
appliance, which writes the state first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import HostError
from .lmk import Lmk
from .product import FIRMWARE_NUMBER


@dataclass(kw_only=True)
class HostSettings:
    """Customer settings of the host interface (``PUT /settings``)."""

    header_length: int = 4
    disabled_commands: frozenset[str] = frozenset()
    firmware_number: str = FIRMWARE_NUMBER
    #: The device's serial number (J2/J4/J8/JK report it).
    serial: str = ""
    #: How many times the appliance has been started (J8's "reboots").
    starts: int = 0


@dataclass(kw_only=True)
class SecurityDomain:
    lmk_slots: int
    lmks: dict[int, Lmk] = field(default_factory=dict)
    authorised: set[int] = field(default_factory=set)

    def lmk(self, lmk_id: str | None) -> tuple[int, Lmk]:
        """The LMK a command names with '%nn' (default 00); error 13 if none is loaded there."""
        slot = 0 if lmk_id is None else int(lmk_id)
        if slot >= self.lmk_slots or slot not in self.lmks:
            raise HostError("13", f"no LMK loaded with identifier {slot:02d}")
        return slot, self.lmks[slot]

    def clear(self) -> None:
        self.lmks.clear()
        self.authorised.clear()
