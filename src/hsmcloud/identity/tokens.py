"""Bearer tokens for ARM callers: EdDSA-signed JWTs with a key kept in the state directory."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hsmcloud.errors import InvalidRequest, Unauthenticated
from hsmcloud.private_files import make_private, private_dir, write_private_once

ISSUER = "https://hsmcloud.local/identity"
AUDIENCE = "https://management.azure.com/"
OPERATOR_ROLE = "operator"
TENANT_ROLE = "tenant"


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling: a tenant principal of one subscription, or a provider operator."""

    name: str
    role: str
    subscription_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR_ROLE


class TokenAuthority:
    """Issues and verifies tokens; the private key never leaves `identity/` in the state dir."""

    def __init__(self, state_dir: Path):
        self.key_path = self.key_file(state_dir)
        self._key = self._load_or_create()
        self._public = self._key.public_key()

    @staticmethod
    def key_file(state_dir: Path) -> Path:
        return state_dir / "identity" / "token-signing-key.pem"

    def _load_or_create(self) -> Ed25519PrivateKey:
        private_dir(self.key_path.parent)
        if not self.key_path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            write_private_once(self.key_path, pem)  # first writer wins if two processes race
        make_private(self.key_path)
        return serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)

    def issue(self, *, subscription_id: str | None = None, operator: bool = False,
              name: str | None = None, lifetime: timedelta = timedelta(hours=24)) -> str:
        if operator == (subscription_id is not None):
            raise InvalidRequest("A token is either for one subscription or for an operator.")
        if subscription_id is not None:
            subscription_id = normalize_subscription_id(subscription_id)
        now = datetime.now(timezone.utc)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()) - 5,
            "exp": int((now + lifetime).timestamp()),
            "jti": str(uuid.uuid4()),
            "role": OPERATOR_ROLE if operator else TENANT_ROLE,
            "name": name or ("operator" if operator else f"user@{subscription_id}"),
        }
        if subscription_id:
            claims["sid"] = subscription_id
        return jwt.encode(claims, self._key, algorithm="EdDSA")

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self._public, algorithms=["EdDSA"], audience=AUDIENCE,
                                issuer=ISSUER, options={"require": ["exp", "iat", "role"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The access token has expired. Get a new one with "
                                  "'hsmcloud token'.", code="ExpiredAuthenticationToken")
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"The access token is invalid ({exc}). Get a token with "
                                  "'hsmcloud token'.", code="InvalidAuthenticationToken")
        role = claims.get("role")
        if role == OPERATOR_ROLE:
            return Principal(name=claims.get("name", "operator"), role=role)
        if role == TENANT_ROLE and claims.get("sid"):
            return Principal(name=claims.get("name", ""), role=role, subscription_id=claims["sid"])
        raise Unauthenticated("The access token carries no usable role.", code="InvalidAuthenticationToken")


def normalize_subscription_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequest(f"'{value}' is not a valid subscription id: use a GUID such as "
                             "00000000-0000-0000-0000-000000000000.",
                             code="InvalidSubscriptionId") from None
