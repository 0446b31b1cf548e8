"""Hashing of partition role PINs and the Auditor's password.

Same self-describing scrypt format as ``passwords.py`` (so ``verify_password`` checks them),
with a lower work factor: an application logs in at every start, and online guessing is
already bounded by the failed-login lockouts; the hashes never leave the appliance state.
"""

from __future__ import annotations

import base64
import hashlib
import os

_N = 2**12
_R = 8
_P = 1


def hash_pin(pin: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(
        _N, _R, _P, base64.b64encode(salt).decode("ascii"), base64.b64encode(key).decode("ascii")
    )
