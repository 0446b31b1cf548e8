"""The provider's management API of one appliance (HTTP JSON, bearer token).

This is everything the provider's control plane can see or do on an allocated device:
read health telemetry (unless the tenant disabled monitoring), reset the device to factory
state, check that it is pristine, and give a fresh device its initial admin password (refused
once the admin changed the password). It never returns key material or a tenant secret.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .core.errors import PasswordPolicyViolation


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


class ManagedDevice(Protocol):
    """What the management API needs from an appliance."""

    def health(self) -> dict[str, Any]: ...

    async def provider_reset(self) -> None: ...

    async def pristine_findings(self) -> list[str]: ...

    async def set_initial_admin_password(self, password: str) -> bool: ...


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        status_code=401,
        content={
            "error": {
                "code": "Unauthorized",
                "message": "A valid 'Authorization: Bearer <management token>' header is required.",
            }
        },
        headers={"WWW-Authenticate": "Bearer"},
    )


def create_management_app(device: ManagedDevice, token: str) -> FastAPI:
    """The FastAPI application serving ``device``; every route requires ``token``."""
    app = FastAPI(
        title="Luna appliance management (provider)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    expected = token.encode("utf-8")

    @app.middleware("http")
    async def require_bearer_token(request: Request, call_next):  # type: ignore[no-untyped-def]
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8"), expected
        ):
            return _unauthorized()
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Health telemetry; only identity and zeroized state when monitoring is disabled."""
        return device.health()

    @app.post("/provider/reset")
    async def provider_reset() -> dict[str, Any]:
        """Factory reset on the provider's behalf: every trace of the tenant is erased."""
        await device.provider_reset()
        findings = await device.pristine_findings()
        return {"reset": True, "pristine": not findings, "findings": findings}

    @app.put("/provider/initial-admin-password")
    async def initial_admin_password(request: Request) -> Any:
        """The admin's initial password instead of the factory one; the first login still forces a
        change. Refused once the admin changed the password: from then on it is the tenant's alone."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(password, str):
            return _error(400, "InvalidRequest", 'Send {"password": "<initial admin password>"}.')
        try:
            accepted = await device.set_initial_admin_password(password)
        except PasswordPolicyViolation as exc:
            return _error(400, "PasswordPolicyViolation", exc.message)
        if not accepted:
            return _error(
                409,
                "AdminPasswordChanged",
                "The admin has changed the password: the provider cannot set it. Only a provider "
                "reset (which erases everything) brings back the factory state.",
            )
        return {"initialAdminPasswordSet": True}

    @app.get("/provider/pristine")
    async def pristine() -> dict[str, Any]:
        """Whether any tenant state is left, and which."""
        findings = await device.pristine_findings()
        return {"pristine": not findings, "findings": findings}

    return app
