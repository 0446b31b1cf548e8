"""The embedded HTTP server that carries an appliance's management interface.

Many appliances run in one process and one event loop, so the server never touches process
signal handling or logging configuration, and frees its port when stopped."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

import uvicorn
from fastapi import FastAPI


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves process signal handling to its host."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


class ManagementServer:
    """Serves a management app on one loopback address, inside the running event loop."""

    def __init__(self, app: FastAPI, *, name: str = "appliance-mgmt") -> None:
        self._app = app
        self._name = name
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.started

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
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{self._name}-{address}")
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
