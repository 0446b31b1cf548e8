"""Per-HSM initial secrets that the control plane derives instead of storing.

A general-purpose appliance's initial admin password is derived from the HSM resource and the
device it holds, under a key kept in `<state>/identity/` (mode 0600) beside the token-signing
key. The store holds no password, not even a hash, and every replica that shares the state
directory's identity derives the same one. The provider can derive it too: it is only good
for the tenant's first login, which forces the tenant to replace it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from hsmcloud.private_files import make_private, private_dir, write_private_once

KEY_FILE = "initial-secrets-key"
# Upper, lower, digit and other characters whatever the random part holds: the appliance's
# password rules (3 of 4 classes, at least 8 characters) always accept it.
_PREFIX = "Init-1-"


class InitialSecrets:
    def __init__(self, state_dir: Path):
        self.key_path = Path(state_dir) / "identity" / KEY_FILE
        self._key = self._load_or_create()

    def _load_or_create(self) -> bytes:
        private_dir(self.key_path.parent)
        if not self.key_path.exists():
            write_private_once(self.key_path, os.urandom(32).hex().encode())  # first writer wins if replicas race
        make_private(self.key_path)
        key = bytes.fromhex(self.key_path.read_text().strip())
        if len(key) != 32:
            raise ValueError(f"{self.key_path} does not hold a 256-bit key")
        return key

    def admin_password(self, *, hsm_id: str, serial: str) -> str:
        """The initial appliance admin password of HSM `hsm_id` on device `serial`."""
        digest = hmac.new(self._key, f"luna-admin/{hsm_id}/{serial}".encode(), hashlib.sha256).digest()
        return _PREFIX + base64.urlsafe_b64encode(digest[:18]).decode("ascii")
