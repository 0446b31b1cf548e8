"""Running the all-in-one service: ARM endpoint (HTTPS by default), worker and device host."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from hsmcloud.arm.app import create_app
from hsmcloud.config import Settings
from hsmcloud.identity.tls import ensure_tls
from hsmcloud.private_files import write_private
from hsmcloud.service import build_services

ENDPOINT_FILE = "endpoint.json"


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    url: str
    ca_path: Path | None


def read_endpoint(state_dir: Path) -> dict | None:
    path = state_dir / ENDPOINT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


class ArmServer(uvicorn.Server):
    """uvicorn, except that idle keep-alive connections are dropped at once on shutdown.

    Closing a TLS connection politely waits for the client's close_notify, which an idle
    keep-alive client (the Azure SDK's requests session) never sends, so Ctrl-C would hang for
    the whole graceful-shutdown timeout. Requests in flight still finish."""

    async def shutdown(self, sockets=None) -> None:
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is not None and (cycle is None or getattr(cycle, "response_complete", False)):
                transport.abort()
        await super().shutdown(sockets)


def build_server(settings: Settings) -> tuple[uvicorn.Server, Endpoint]:
    services = build_services(settings)
    app = create_app(services)
    kwargs = {}
    ca = None
    if settings.tls:
        files = ensure_tls(settings.state_dir)
        kwargs = {"ssl_certfile": str(files.server_cert), "ssl_keyfile": str(files.server_key)}
        ca = files.ca_cert
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=5, **kwargs)
    server = ArmServer(config)
    scheme = "https" if settings.tls else "http"
    return server, Endpoint(url=f"{scheme}://{settings.host}:{settings.port}", ca_path=ca)


def write_endpoint(settings: Settings, endpoint: Endpoint, port: int) -> None:
    scheme = "https" if settings.tls else "http"
    data = {"endpoint": f"{scheme}://{settings.host}:{port}", "ca": str(endpoint.ca_path) if endpoint.ca_path else None,
            "pid": os.getpid()}
    write_private(settings.state_dir / ENDPOINT_FILE, json.dumps(data).encode())
