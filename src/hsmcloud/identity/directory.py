"""The service's directory: the one Entra-style tenant its service principals live in.

Its id is a GUID made on the first start and kept in `<state>/identity/tenant-id` beside the
token-signing key, so every replica that shares the state directory's identity agrees on it."""
from __future__ import annotations

import uuid
from pathlib import Path

from hsmcloud.private_files import make_private, private_dir, write_private_once

TENANT_FILE = "tenant-id"
DISPLAY_NAME = "hsmcloud"
DEFAULT_DOMAIN = "hsmcloud.local"


def tenant_file(state_dir: Path) -> Path:
    return Path(state_dir) / "identity" / TENANT_FILE


def tenant_id(state_dir: Path) -> str:
    """The directory's tenant id, made on first use (the first of two racing replicas wins)."""
    path = tenant_file(state_dir)
    private_dir(path.parent)
    if not path.exists():
        write_private_once(path, str(uuid.uuid4()).encode())
    make_private(path)
    return str(uuid.UUID(path.read_text().strip()))
