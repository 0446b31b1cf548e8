"""Shared fixtures: a running hsmcloud service per storage backend, and clients for it."""
from __future__ import annotations

import contextlib
import os
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hsmcloud.config import Settings
from hsmcloud.server import build_server

PG_ADMIN_URL = os.environ.get("HSMCLOUD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REGIONS = ("eastus", "westus", "capacitylab")


def postgres_available() -> str | None:
    """None if PostgreSQL can be used, else the reason it cannot."""
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        return f"PostgreSQL at {PG_ADMIN_URL} not usable: {exc.__class__.__name__}: {exc}"


@contextlib.contextmanager
def fresh_pg_database(prefix: str):
    """A new, empty PostgreSQL database for one test (skips the test when PostgreSQL is not usable)."""
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    import psycopg
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Cloud:
    """One running service: its endpoint, CA, settings and helpers to call it."""

    settings: Settings
    url: str
    ca: str | None
    server: object
    thread: threading.Thread
    backend: str

    @property
    def services(self):
        return self.server.config.app.state.services

    def token(self, sub: str | None = None, operator: bool = False) -> str:
        return self.services.tokens.issue(subscription_id=sub, operator=operator)

    def http(self, sub: str | None = None, operator: bool = False, token: str | None = None) -> httpx.Client:
        headers = {}
        tok = token or (self.token(sub, operator) if (sub or operator) else None)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        verify = ssl.create_default_context(cafile=self.ca) if self.ca else False
        return httpx.Client(base_url=self.url, verify=verify, headers=headers, timeout=30)

    def new_subscription(self, allowlist: bool = True) -> str:
        sub = str(uuid.uuid4())
        if allowlist:
            with self.http(operator=True) as c:
                r = c.put(f"/operator/subscriptions/{sub}/allowlist")
                assert r.status_code == 200, r.text
        return sub

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_cloud(tmp: Path, *, backend: str, database_url: str | None = None, tls: bool = True,
                **overrides) -> Cloud:
    # Retry-After: 0 is "no advice" to the SDK, so tests poll at their own polling_interval=0; the tests
    # of Retry-After itself set it (retry_after fixture).
    settings = Settings(state_dir=tmp, port=0, tls=tls, database_url=database_url, regions=TEST_REGIONS,
                        gateway_provision_seconds=0.0, step_delay_seconds=0.0, retry_after_seconds=0,
                        **overrides)
    server, endpoint = build_server(settings)
    thread = threading.Thread(target=server.run, name=f"hsmcloud-{backend}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("hsmcloud did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    return Cloud(settings=settings, url=f"{scheme}://127.0.0.1:{port}",
                 ca=str(endpoint.ca_path) if endpoint.ca_path else None, server=server,
                 thread=thread, backend=backend)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def cloud(request, tmp_path_factory):
    """The service on each backend; tests isolate themselves with fresh subscriptions."""
    backend = request.param
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_pg_database("hsmcloud_test")) if backend == "postgres" else None
        c = start_cloud(tmp_path_factory.mktemp(f"cloud-{backend}"), backend=backend, database_url=url)
        yield c
        c.stop()
        c.services.store.close()


@pytest.fixture
def retry_after(cloud):
    """The service's default Retry-After (1 s) for one test, as users get it."""
    before = cloud.settings.retry_after_seconds
    cloud.settings.retry_after_seconds = Settings().retry_after_seconds
    yield cloud.settings.retry_after_seconds
    cloud.settings.retry_after_seconds = before
