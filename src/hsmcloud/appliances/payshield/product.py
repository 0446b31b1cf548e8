"""Fixed facts of the emulated product: a payShield 10K as Azure Payment HSM delivers it."""

from __future__ import annotations

import re

MODEL = "payShield 10K"
#: Base software 1.4a, firmware 1.8.3 (Azure support guide: versions below are not supported).
FIRMWARE_VERSION = "1.4a 1.8.3"
#: Part-number prefix of payShield 10K firmware numbers (a real fw 3.0a device answers NC
#: with firmware number ``1500-0023``).
FIRMWARE_PART = "1500"

PREMIUM_PACKAGE_FEATURES = (
    "Premium Key Management",
    "Magnetic Stripe Issuing",
    "Magnetic Stripe Transaction Processing",
    "EMV Chip, Contactless & Mobile Issuing",
    "EMV Transaction Processing",
    "Premium Data Protection",
    "Remote payShield Manager",
    "Hosted HSM",
)

#: Performance licences of the SKUs (calls per second) and LMK licences.
CPS_TIERS = (60, 250, 2500)
LMK_SLOT_CHOICES = (1, 2)

DEFAULT_HOST_PORT = 1500
#: Largest host message accepted (the NO "buffer size" of 32K).
MAX_MESSAGE_LENGTH = 32 * 1024
#: TCP connections per host interface that NO reports.
TCP_CONNECTIONS_PER_INTERFACE = 64
HEADER_LENGTHS = range(0, 256)

_FIRMWARE = re.compile(r"(\d+)\.(\d+)([a-z]?) (\d+)\.(\d+)\.(\d+)")


def firmware_key(version: str) -> tuple:
    """Sortable form of a firmware version such as ``1.4a 1.8.3``; ValueError if malformed."""
    match = _FIRMWARE.fullmatch(version.strip())
    if match is None:
        raise ValueError(f"firmware version {version!r} is not of the form '1.4a 1.8.3'")
    major, minor, letter, f1, f2, f3 = match.groups()
    return (int(f1), int(f2), int(f3), int(major), int(minor), letter)


MINIMUM_FIRMWARE = FIRMWARE_VERSION


def firmware_number(version: str) -> str:
    """The 9-character firmware number that NC and NO return, ``NNNN-NNNN`` as on the real
    device: the part prefix 1500, then the firmware release digits (1.8.3 -> 1803)."""
    f1, f2, f3 = firmware_key(version)[:3]
    return f"{FIRMWARE_PART}-{(f1 * 1000 + f2 * 100 + f3) % 10000:04d}"


#: The firmware number of the delivered firmware (``1500-1803``).
FIRMWARE_NUMBER = firmware_number(FIRMWARE_VERSION)
