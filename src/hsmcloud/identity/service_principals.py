"""Service principals: application identities that get tokens from the token endpoint.

A tenant creates them for one of its subscriptions (the tokens act on that subscription only);
an operator creates operator principals (the tokens act on /operator only). A principal's
credential is a client secret, shown once and kept as a scrypt hash, or the public part of an
RSA certificate whose private key signs client assertions and never reaches the service.
Deleting a principal stops its tokens at once: every request that carries one looks it up."""
from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from hsmcloud.controlplane.scope import ensure_subscription, utcnow
from hsmcloud.controlplane.subscriptions import record
from hsmcloud.errors import InvalidRequest, NotFound, Unauthenticated
from hsmcloud.identity import oauth_errors as oauth
from hsmcloud.identity.client_secrets import Secret, hash_secret, new_client_secret, verify_secret
from hsmcloud.identity.tokens import OPERATOR_ROLE, TENANT_ROLE, Principal
from hsmcloud.store.db import Store
from hsmcloud.store.models import ServicePrincipal

MAX_YEARS = 10
MIN_RSA_BITS = 2048
# MSAL signs client assertions with RS256 (SHA-1 thumbprint, x5t) or PS256 (SHA-256, x5t#S256).
ASSERTION_ALGORITHMS = ("RS256", "PS256")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Seconds of clock difference allowed between the client that signed an assertion and the service.
CLOCK_LEEWAY = 300
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,120}$")


@dataclass(frozen=True, kw_only=True)
class Created:
    """A new principal and, for a secret credential, its secret (shown this once)."""

    principal: ServicePrincipal
    secret: Secret | None


def load_certificate(pem: object) -> x509.Certificate:
    """The certificate of a certificate credential: PEM, RSA of 2048 bits or more, valid now."""
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidRequest("'certificate' must be a PEM certificate (-----BEGIN CERTIFICATE-----).",
                             code="InvalidCertificate", target="certificate")
    if "PRIVATE KEY" in pem:
        raise InvalidRequest("Send only the certificate, never its private key: the key stays with you and signs "
                             "the client assertions.", code="InvalidCertificate", target="certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise InvalidRequest(f"The certificate cannot be read: {exc}.", code="InvalidCertificate",
                             target="certificate") from None
    key = cert.public_key()
    if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise InvalidRequest(f"The certificate needs an RSA key of {MIN_RSA_BITS} bits or more: MSAL and "
                             "azure-identity sign client assertions with RS256/PS256.", code="InvalidCertificate",
                             target="certificate")
    now = utcnow()
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise InvalidRequest(f"The certificate is valid from {cert.not_valid_before_utc.isoformat()} to "
                             f"{cert.not_valid_after_utc.isoformat()}, not now.", code="InvalidCertificate",
                             target="certificate")
    return cert


def _thumbprint_hex(value: object) -> str | None:
    """A JWS x5t / x5t#S256 header (base64url of the digest) as lower-case hex."""
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    except (binascii.Error, ValueError):
        return None


def describe(sp: ServicePrincipal, tenant_id: str) -> dict:
    """What the management routes show of a principal: never a credential."""
    return {"appId": sp.app_id, "objectId": sp.id, "displayName": sp.display_name, "tenant": tenant_id,
            "role": sp.role, "subscriptionId": sp.subscription_id,
            "credentialType": "Certificate" if sp.cert_pem else "Password",
            "certificateThumbprint": sp.cert_sha1.upper() if sp.cert_sha1 else None,
            "endDateTime": sp.expires_at.isoformat(), "createdDateTime": sp.created_at.isoformat(),
            "createdBy": sp.created_by}


class ServicePrincipals:
    def __init__(self, *, store: Store, tenant_id: str):
        self.store = store
        self.tenant_id = tenant_id

    # ---- management -------------------------------------------------------------------------
    def create(self, s: Session, principal: Principal, *, subscription_id: str | None, body: object) -> Created:
        """A new principal for `subscription_id` (None: an operator principal)."""
        if body is None:
            body = {}
        if not isinstance(body, dict) or set(body) - {"displayName", "certificate", "years"}:
            raise InvalidRequest("Send {\"displayName\": \"...\", \"years\": 1} for a secret, or add "
                                 "\"certificate\": \"<PEM certificate>\" for a certificate credential.",
                                 code="InvalidRequestContent")
        now = utcnow()
        name = body.get("displayName") or f"hsmcloud-sp-{now.strftime('%Y-%m-%d-%H-%M-%S')}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest("displayName must be 1-120 characters with no control characters.",
                                 code="InvalidDisplayName", target="displayName")
        years = body.get("years", 1)
        if isinstance(years, bool) or not isinstance(years, int) or not 1 <= years <= MAX_YEARS:
            raise InvalidRequest(f"years is the secret's lifetime: a whole number from 1 to {MAX_YEARS}.",
                                 code="InvalidYears", target="years")
        sp = ServicePrincipal(id=str(uuid.uuid4()), app_id=str(uuid.uuid4()), display_name=name,
                              role=TENANT_ROLE if subscription_id else OPERATOR_ROLE,
                              subscription_id=subscription_id, created_at=now, created_by=principal.name)
        secret = None
        if body.get("certificate") is not None:
            cert = load_certificate(body["certificate"])
            sp.cert_pem = body["certificate"]
            sp.cert_sha1 = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - the x5t thumbprint, not a MAC
            sp.cert_sha256 = cert.fingerprint(hashes.SHA256()).hex()
            sp.expires_at = cert.not_valid_after_utc
        else:
            secret = new_client_secret()
            sp.secret_hash = hash_secret(secret)
            sp.expires_at = now + timedelta(days=365 * years)
        if subscription_id:
            ensure_subscription(s, subscription_id)
        s.add(sp)
        record(s, principal.name, "sp.create", sp.app_id, role=sp.role, subscription=subscription_id,
               credential="certificate" if sp.cert_pem else "secret")
        return Created(principal=sp, secret=secret)

    def list(self, s: Session, *, subscription_id: str | None) -> list[ServicePrincipal]:
        q = select(ServicePrincipal)
        q = (q.where(ServicePrincipal.subscription_id == subscription_id) if subscription_id
             else q.where(ServicePrincipal.role == OPERATOR_ROLE))
        return list(s.scalars(q.order_by(ServicePrincipal.created_at, ServicePrincipal.app_id)))

    def delete(self, s: Session, principal: Principal, *, subscription_id: str | None, app_id: str) -> None:
        sp = self._find(s, app_id)
        mine = sp is not None and (sp.subscription_id == subscription_id if subscription_id
                                   else sp.role == OPERATOR_ROLE)
        if not mine:
            scope = f"subscription '{subscription_id}'" if subscription_id else "the operators"
            raise NotFound(f"Service principal '{app_id}' does not exist for {scope}: 'hsmcloud sp list' shows them.",
                           code="ServicePrincipalNotFound")
        s.delete(sp)
        record(s, principal.name, "sp.delete", sp.app_id, role=sp.role, subscription=subscription_id)

    @staticmethod
    def _find(s: Session, app_id: str) -> ServicePrincipal | None:
        try:
            app_id = str(uuid.UUID(app_id))
        except ValueError:
            return None
        return s.scalar(select(ServicePrincipal).where(ServicePrincipal.app_id == app_id))

    # ---- the token endpoint -----------------------------------------------------------------
    def authenticate(self, *, client_id: str, secret: str | None, assertion: str | None,
                     audiences: list[str]) -> ServicePrincipal:
        """The principal a token request proves to be, or the OAuth error that says why not."""
        with self.store.session() as s:
            sp = self._find(s, client_id)
        if sp is None:
            raise oauth.ApplicationNotFound(f"Application with identifier '{client_id}' was not found in the "
                                            f"directory '{self.tenant_id}'. Check the appId 'hsmcloud sp create' "
                                            "printed, and that the principal was not deleted.")
        if secret is not None:
            if sp.secret_hash is None:
                raise oauth.WrongCredentialType(f"Application '{client_id}' has a certificate credential: sign a "
                                                "client assertion with its private key instead of a secret.")
            if not verify_secret(secret, sp.secret_hash):
                raise oauth.InvalidClientSecret(f"Invalid client secret provided. Ensure the secret being sent in "
                                                f"the request is the client secret value of app '{client_id}'.")
        else:
            if sp.cert_pem is None:
                raise oauth.WrongCredentialType(f"Application '{client_id}' has a client secret credential, not a "
                                                "certificate: send client_secret.")
            self._check_assertion(sp, assertion or "", audiences)
        if utcnow() >= sp.expires_at:
            raise oauth.ClientCredentialExpired(f"The provided client credential of app '{client_id}' expired on "
                                                f"{sp.expires_at.isoformat()}. Create a new service principal.")
        return sp

    @staticmethod
    def _check_assertion(sp: ServicePrincipal, assertion: str, audiences: list[str]) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise oauth.InvalidClientAssertion(f"The client assertion is not a JWT ({exc}).") from None
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise oauth.InvalidClientAssertion(f"Client assertion algorithm '{alg}' is not supported: sign it "
                                               f"with {' or '.join(ASSERTION_ALGORITHMS)}.")
        sha1, sha256 = _thumbprint_hex(header.get("x5t")), _thumbprint_hex(header.get("x5t#S256"))
        if not ((sha1 and sha1 == sp.cert_sha1) or (sha256 and sha256 == sp.cert_sha256)):
            raise oauth.InvalidClientAssertion(f"Client assertion contains an invalid signature: its x5t / "
                                               f"x5t#S256 thumbprint is not the certificate registered for app "
                                               f"'{sp.app_id}' ({sp.cert_sha1.upper()}).")
        key = x509.load_pem_x509_certificate(sp.cert_pem.encode()).public_key()
        try:
            claims = jwt.decode(assertion, key, algorithms=[alg], audience=audiences, leeway=CLOCK_LEEWAY,
                                options={"require": ["exp", "aud", "iss", "sub"]})
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            raise oauth.AssertionOutOfTime(f"Client assertion is not within its valid time range ({exc}).") \
                from None
        except jwt.InvalidAudienceError:
            raise oauth.InvalidClientAssertion(f"The client assertion's audience (aud) must be this token "
                                               f"endpoint: {audiences[0]}.") from None
        except jwt.PyJWTError as exc:
            raise oauth.InvalidClientAssertion(f"Client assertion failed signature validation ({exc}).") from None
        if claims.get("iss") != sp.app_id or claims.get("sub") != sp.app_id:
            raise oauth.AssertionClientMismatch(f"Client assertion application identifier doesn't match "
                                                f"'client_id' parameter: iss and sub must be '{sp.app_id}'.")

    # ---- the ARM surface --------------------------------------------------------------------
    def require_active(self, principal: Principal) -> None:
        """Refuse a token of a principal that was deleted after the token was issued."""
        with self.store.session() as s:
            sp = s.get(ServicePrincipal, principal.object_id) if principal.object_id else None
            active = (sp is not None and sp.app_id == principal.app_id and sp.role == principal.role
                      and sp.subscription_id == principal.subscription_id)
        if not active:
            raise Unauthenticated(f"The access token belongs to service principal '{principal.app_id}', which was "
                                  "deleted: its tokens no longer work. Create another ('hsmcloud sp create').",
                                  code="InvalidAuthenticationToken")

