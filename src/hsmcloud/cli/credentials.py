"""Where the tenant keeps its payment HSMs' management credentials: its own home, not the provider's.

`$HSMCLOUD_CLIENT_HOME` (default `~/.hsmcloud-client`, mode 0700) holds one file per payment HSM
and device: `credentials/<subscription>/<group>+<name>+<serial>.json` (mode 0600; the parts
percent-encoded, the group and name in lower case as ARM compares them). The provider's state
directory (`~/.hsmcloud`) never holds them: the provider has no access to a tenant's device.

A file is written before the service or the device is asked to take its token, so an answer
lost on the way can be repeated with the same token: `issuedAt` is empty until the claim is
confirmed, and `nextToken` is set while a rotation is not confirmed yet.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import quote

from hsmcloud.cli.client import CliError

CLIENT_HOME_ENV = "HSMCLOUD_CLIENT_HOME"
DEFAULT_CLIENT_HOME = "~/.hsmcloud-client"


def client_home() -> Path:
    return Path(os.environ.get(CLIENT_HOME_ENV) or DEFAULT_CLIENT_HOME).expanduser()


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class SavedCredential:
    subscription: str
    resource_group: str
    name: str
    serial: str
    token: str
    issued_at: str | None = None  # None: the claim is not confirmed yet
    next_token: str | None = None  # set while a rotation is not confirmed yet

    @property
    def fingerprint(self) -> str:
        """Names the token without showing it (the first 16 hex digits of its SHA-256)."""
        return "sha256:" + token_sha256(self.token)[:16]

    def claimed(self, issued_at: str) -> SavedCredential:
        return replace(self, issued_at=issued_at)

    def rotating(self, next_token: str) -> SavedCredential:
        return replace(self, next_token=next_token)

    def rotated(self) -> SavedCredential:
        assert self.next_token is not None
        return replace(self, token=self.next_token, next_token=None)

    def rotation_dropped(self) -> SavedCredential:
        return replace(self, next_token=None)


class CredentialStore:
    def __init__(self, home: Path | None = None):
        self.home = home or client_home()

    def path_for(self, *, subscription: str, resource_group: str, name: str, serial: str) -> Path:
        part = "+".join(quote(p, safe="") for p in (resource_group.lower(), name.lower(), serial))
        return self.home / "credentials" / quote(subscription.lower(), safe="") / f"{part}.json"

    def path_of(self, cred: SavedCredential) -> Path:
        return self.path_for(subscription=cred.subscription, resource_group=cred.resource_group, name=cred.name,
                             serial=cred.serial)

    def load(self, *, subscription: str, resource_group: str, name: str, serial: str) -> SavedCredential | None:
        path = self.path_for(subscription=subscription, resource_group=resource_group, name=name, serial=serial)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return SavedCredential(subscription=data["subscription"], resource_group=data["resourceGroup"],
                                   name=data["name"], serial=data["serial"], token=data["token"],
                                   issued_at=data.get("issuedAt"), next_token=data.get("nextToken"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError("CredentialFileUnreadable", f"Cannot read the saved management credential {path} "
                                                       f"({exc.__class__.__name__}); fix or remove the file.") from None

    def save(self, cred: SavedCredential) -> Path:
        """Write the file atomically, 0600, in 0700 directories (whoever made them)."""
        path = self.path_of(cred)
        data = {k: v for k, v in asdict(cred).items() if v is not None}
        keys = {"resource_group": "resourceGroup", "issued_at": "issuedAt", "next_token": "nextToken"}
        text = json.dumps({keys.get(k, k): v for k, v in data.items()}, indent=2) + "\n"
        try:
            for directory in (self.home, self.home / "credentials", path.parent):
                directory.mkdir(mode=0o700, exist_ok=True)
                os.chmod(directory, 0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise CliError("CannotSaveCredential", f"Cannot save the management credential in {path.parent} "
                                                   f"({exc.strerror or exc}); set {CLIENT_HOME_ENV} to a "
                                                   "directory you can write.") from None
        return path

    def delete(self, cred: SavedCredential) -> None:
        self.path_of(cred).unlink(missing_ok=True)
