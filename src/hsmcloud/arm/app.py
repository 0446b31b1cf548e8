"""The ARM-compatible HTTP application: routes, error envelope, and the lifecycle worker."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from hsmcloud import __version__
from hsmcloud.arm import errors, openapi, routes_hsm, routes_network, routes_operator, routes_resources
from hsmcloud.arm.paths import CanonicalPathMiddleware
from hsmcloud.service import Services

log = logging.getLogger(__name__)


def create_app(services: Services) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = asyncio.Event()
        worker = None
        if services.settings.run_worker:
            # The replica that runs the worker is also the device host of this machine.
            await services.lifecycle.restart_allocated_devices()
            worker = asyncio.create_task(services.lifecycle.run_forever(stop))
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            await services.host.stop_all()

    app = FastAPI(title="hsmcloud ARM endpoint", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")
    app.state.services = services
    errors.install(app)
    app.include_router(routes_hsm.router)
    app.include_router(routes_network.router)
    app.include_router(routes_resources.router)
    app.include_router(routes_operator.router)

    @app.get("/healthz")
    def healthz():
        """Liveness, and the trivial endpoint benchmarks compare against."""
        return {"status": "ok"}

    openapi.install(app)
    app.add_middleware(CanonicalPathMiddleware)
    return app
