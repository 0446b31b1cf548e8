"""The provider's management API of one appliance (HTTP JSON, bearer token).

This is everything the provider's control plane can see or do on an allocated device:
read health telemetry (unless the tenant disabled monitoring), reset the device to factory
state, and check that it is pristine. It never returns key material or a tenant secret.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class ManagedDevice(Protocol):
    """What the management API needs from an appliance."""

    def health(self) -> dict[str, Any]: ...

    async def provider_reset(self) -> None: ...

    async def pristine_findings(self) -> list[str]: ...


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

    @app.get("/provider/pristine")
    async def pristine() -> dict[str, Any]:
        """Whether any tenant state is left, and which."""
        findings = await device.pristine_findings()
        return {"pristine": not findings, "findings": findings}

    return app
