"""The management REST API of one payShield appliance (HTTP JSON on the management port).

Two callers, told apart by their bearer token:

* the **provider** (the configured management token): ``GET /health``, ``/provider/*``
  (release out of band, pristine check, licence setting, firmware of an unallocated device,
  and the claim that registers the tenant's credential on an unclaimed device). It never
  sees key material or a tenant credential.
* the **tenant** (the credential registered by the claim): LMK loading from admin cards,
  authorised state, key loading and component export, settings, TLS on the host ports
  (``/host-tls``), firmware, logs, release,
  and rotating its own credential (``POST /tenant/credential``). The provider's token is
  refused on these routes.

The device keeps only the SHA-256 of the tenant's credential. The provider can register one
only while the device is unclaimed (fresh, or after a release): once a tenant holds it, only
that tenant changes it, so the provider's token (which the provider's store holds) never
leads into the security domain.

Every tenant and provider action is written to the audit log (refusals too).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .errors import InvalidRequest, ManagementError

PROVIDER, TENANT = "provider", "tenant"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ManagedDevice(Protocol):
    """What the management API needs from an appliance (see ``PayShieldAppliance``)."""

    def health(self) -> dict[str, Any]: ...
    def tenant_token_hash(self) -> str | None: ...
    def record(self, actor: str, action: str, result: str, **detail: Any) -> None: ...
    async def release(self, actor: str) -> None: ...
    async def pristine_findings(self) -> list[str]: ...
    def set_cps_limit_lifted(self, lifted: bool) -> None: ...
    def claim(self, digest: str) -> bool: ...
    def rotate_tenant_credential(self, digest: str) -> None: ...
    def update_firmware(self, version: str, actor: str) -> str: ...
    def load_lmk(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def lmk_table(self) -> list[dict[str, Any]]: ...
    def authorize(self, slot: int, on: bool) -> dict[str, Any]: ...
    def load_key(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def export_components(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def settings_view(self) -> dict[str, Any]: ...
    async def update_settings(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def audit_entries(self) -> list[dict[str, Any]]: ...
    def error_entries(self) -> list[dict[str, Any]]: ...
    def host_tls_view(self) -> dict[str, Any]: ...
    def host_tls_server_certificate(self) -> str: ...
    async def set_host_tls(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def trust_client_certificates(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def untrust_client_certificate(self, fingerprint: str) -> dict[str, Any]: ...


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}}, headers=headers)


def _unauthorized() -> JSONResponse:
    return _error(
        401,
        "Unauthorized",
        "A valid 'Authorization: Bearer <token>' header is required.",
        {"WWW-Authenticate": "Bearer"},
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _credential_digest(body: dict[str, Any], provider_digest: str, *,
                       may_generate: bool) -> tuple[str, str | None]:
    """(digest to register, clear token to return) from ``{"token_sha256": hex}`` or from nothing.

    A caller that sends the digest keeps the token to itself; otherwise (tenant only) the device
    makes one and returns it, once."""
    given = body.get("token_sha256")
    token = None
    if given is None and may_generate:
        token = secrets.token_urlsafe(32)
        given = token_digest(token)
    elif not isinstance(given, str) or not _SHA256_HEX.fullmatch(given):
        raise InvalidRequest("token_sha256 must be the SHA-256 of the credential: 64 lower-case hex digits")
    if hmac.compare_digest(given, provider_digest):
        raise InvalidRequest("the tenant credential must differ from the provider token")
    return given, token


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest("the request body is not JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _log_export(entries: list[dict[str, Any]], fmt: str | None) -> Response:
    if fmt == "jsonl":
        text = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries)
        return PlainTextResponse(text, media_type="application/x-ndjson")
    if fmt not in (None, "json"):
        raise InvalidRequest("format must be json or jsonl")
    return JSONResponse({"entries": entries})


def create_management_app(device: ManagedDevice, provider_token: str) -> FastAPI:
    """The FastAPI application serving ``device``."""
    app = FastAPI(title="payShield appliance management", docs_url=None, redoc_url=None, openapi_url=None)
    expected = provider_token.encode("utf-8")
    provider_digest = token_digest(provider_token)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):  # type: ignore[no-untyped-def]
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        presented = presented.strip()
        role = None
        if scheme.lower() == "bearer" and presented:
            if hmac.compare_digest(presented.encode("utf-8"), expected):
                role = PROVIDER
            else:
                digest = device.tenant_token_hash()
                if digest is not None and hmac.compare_digest(token_digest(presented), digest):
                    role = TENANT
        if role is None:
            return _unauthorized()
        path = request.url.path
        if path.startswith("/provider/") and role != PROVIDER:
            return _error(403, "Forbidden", "This operation is reserved to the provider.")
        if not path.startswith("/provider/") and path != "/health" and role != TENANT:
            return _error(
                403, "Forbidden", "The provider has no logical access to an allocated device's security domain."
            )
        request.state.role = role
        return await call_next(request)

    @app.exception_handler(ManagementError)
    async def management_error(request: Request, exc: ManagementError) -> JSONResponse:
        role = getattr(request.state, "role", "unknown")
        device.record(role, f"{request.method} {request.url.path}", exc.message)
        return _error(exc.status, exc.code, exc.message)

    # -- provider ----------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Identity, licence, link status, released flag, LMK count; never a secret."""
        return device.health()

    @app.post("/provider/release")
    async def provider_release() -> dict[str, Any]:
        """Out-of-band release (reclaim): erase all customer content."""
        await device.release(PROVIDER)
        findings = await device.pristine_findings()
        return {"released": True, "pristine": not findings, "findings": findings}

    @app.get("/provider/pristine")
    async def pristine() -> dict[str, Any]:
        findings = await device.pristine_findings()
        return {"pristine": not findings, "findings": findings}

    @app.put("/provider/licence")
    async def licence(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        lifted = body.get("cps_limit_lifted")
        if not isinstance(lifted, bool):
            raise InvalidRequest("cps_limit_lifted must be true or false")
        device.set_cps_limit_lifted(lifted)
        return device.health()["licence"]

    @app.post("/provider/claim")
    async def claim(request: Request) -> dict[str, Any]:
        """Hand-over: register the tenant's credential, only while no tenant holds the device."""
        # Only the digest: a clear tenant credential never travels on the provider's channel.
        digest, _ = _credential_digest(await _json_body(request), provider_digest, may_generate=False)
        new = device.claim(digest)
        return {"claimed": True, "repeated": not new}

    @app.post("/provider/firmware")
    async def provider_firmware(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        return {"firmware": device.update_firmware(str(body.get("version", "")), PROVIDER)}

    # -- tenant ------------------------------------------------------------------------

    @app.post("/tenant/credential")
    async def rotate_credential(request: Request) -> dict[str, Any]:
        """A new tenant credential; the one used for this request stops working at once."""
        digest, token = _credential_digest(await _json_body(request), provider_digest, may_generate=True)
        device.rotate_tenant_credential(digest)
        return {"rotated": True, **({"token": token} if token else {})}

    @app.post("/lmk")
    async def load_lmk(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        return await asyncio.to_thread(device.load_lmk, body)  # scrypt: keep the loop free

    @app.get("/lmk")
    async def lmk_table() -> dict[str, Any]:
        return {"lmks": device.lmk_table()}

    @app.post("/authorize")
    async def authorize(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        return device.authorize(_slot(body), True)

    @app.post("/deauthorize")
    async def deauthorize(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        return device.authorize(_slot(body), False)

    @app.post("/keys/load")
    async def load_key(request: Request) -> dict[str, Any]:
        return device.load_key(await _json_body(request))

    @app.post("/keys/export-components")
    async def export_components(request: Request) -> dict[str, Any]:
        return device.export_components(await _json_body(request))

    @app.get("/settings")
    async def get_settings() -> dict[str, Any]:
        return device.settings_view()

    @app.put("/settings")
    async def put_settings(request: Request) -> dict[str, Any]:
        return await device.update_settings(await _json_body(request))

    @app.post("/firmware")
    async def firmware(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        return {"firmware": device.update_firmware(str(body.get("version", "")), TENANT)}

    @app.post("/release")
    async def release() -> dict[str, Any]:
        await device.release(TENANT)
        findings = await device.pristine_findings()
        return {"released": True, "pristine": not findings, "findings": findings}

    @app.get("/logs/audit")
    async def audit_log(format: str | None = None) -> Response:  # noqa: A002 - query name
        return _log_export(device.audit_entries(), format)

    @app.get("/logs/error")
    async def error_log(format: str | None = None) -> Response:  # noqa: A002 - query name
        return _log_export(device.error_entries(), format)

    # -- tenant: TLS on the host ports -------------------------------------------------

    @app.get("/host-tls")
    async def host_tls() -> dict[str, Any]:
        """Mode of each host port, the trusted client certificates, the server certificate."""
        return device.host_tls_view()

    @app.put("/host-tls")
    async def set_host_tls(request: Request) -> dict[str, Any]:
        """``{"host1": "off"|"on"|"mutual", "host2": ...}``."""
        return await device.set_host_tls(await _json_body(request))

    @app.post("/host-tls/trusted")
    async def trust(request: Request) -> dict[str, Any]:
        """``{"certificate": "<PEM: one or more CA or client certificates>"}``."""
        return await device.trust_client_certificates(await _json_body(request))

    @app.delete("/host-tls/trusted/{fingerprint}")
    async def untrust(fingerprint: str) -> dict[str, Any]:
        return await device.untrust_client_certificate(fingerprint)

    @app.get("/host-tls/server-certificate")
    async def server_certificate() -> Response:
        """The certificate the host ports present, to pin in the host application."""
        return PlainTextResponse(device.host_tls_server_certificate(), media_type="application/x-pem-file")

    return app


def _slot(body: dict[str, Any]) -> int:
    slot = body.get("slot", 0)
    if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
        raise InvalidRequest("slot must be a non-negative integer")
    return slot
