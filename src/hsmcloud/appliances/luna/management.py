"""The provider's management API of one appliance (HTTP JSON, bearer token).

This is everything the provider's control plane can see or do on an allocated device:
read health telemetry (unless the tenant disabled monitoring), reset the device to factory
state, and check that it is pristine. It never returns key material or a tenant secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
from typing import Any, Protocol

import uvicorn
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


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves process signal handling to its host."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


class ManagementServer:
    """Serves a management app on one loopback address, inside the running event loop."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task | None = None

    async def start(self, address: str, port: int) -> int:
        """Listen on (address, port) and return the bound port once requests are served."""
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.setblocking(False)
            bound_port = sock.getsockname()[1]
        except BaseException:
            sock.close()
            raise
        config = uvicorn.Config(
            self._app,
            log_config=None,  # never reconfigure the host process's logging
            log_level=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"luna-mgmt-{address}")
        while not server.started:
            if task.done():
                sock.close()
                task.result()  # raises the startup error
                raise RuntimeError("the management server stopped during startup")
            await asyncio.sleep(0.005)
        self._server, self._task = server, task
        return bound_port

    async def stop(self) -> None:
        """Stop serving; the port is free when this returns."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = self._task = None
