"""The command line against a real (in-process) service: each test module gets its own cloud."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hsmcloud.cli.main import app
from tests.conftest import start_cloud

# Only the variables the CLI reads; None removes them so a developer's own settings never leak in.
_CLEAN_ENV = {"HSMCLOUD_STATE_DIR": None, "HSMCLOUD_SUBSCRIPTION": None, "HSMCLOUD_TOKEN": None,
              "HSMCLOUD_ENDPOINT": None, "HSMCLOUD_CLIENT_HOME": None, "HSMCLOUD_POLL_INTERVAL": "0.05",
              "COLUMNS": "200"}


@dataclass
class Cli:
    """Runs `hsmcloud ...` as a user would, pointed at one service through its state directory."""

    cloud: object
    runner: CliRunner
    client_home: Path  # the tenant's side ($HSMCLOUD_CLIENT_HOME), never the service's state directory

    def __call__(self, *args: str, sub: str | None = None, input: str | None = None,
                 env: dict | None = None) -> Result:
        full_env = dict(_CLEAN_ENV, HSMCLOUD_STATE_DIR=str(self.cloud.settings.state_dir),
                        HSMCLOUD_CLIENT_HOME=str(self.client_home))
        if sub:
            full_env["HSMCLOUD_SUBSCRIPTION"] = sub
        full_env.update(env or {})
        return self.runner.invoke(app, [str(a) for a in args], env=full_env, input=input, catch_exceptions=False)

    def ok(self, *args: str, **kwargs) -> Result:
        result = self(*args, **kwargs)
        assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        return result

    def json(self, *args: str, **kwargs):
        return json.loads(self.ok(*args, "--json", **kwargs).stdout)

    def fails(self, *args: str, code: str | None = None, **kwargs) -> str:
        """Run a command that must fail; returns its single error line."""
        result = self(*args, **kwargs)
        assert result.exit_code == 1, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1, result.stderr
        if code:
            assert lines[0].startswith(f"error: {code}: "), lines[0]
        return lines[0]


@pytest.fixture(scope="module")
def cli_cloud(tmp_path_factory):
    cloud = start_cloud(tmp_path_factory.mktemp("cli-cloud"), backend="sqlite")
    # start_cloud writes no endpoint.json; write what `hsmcloud up` would.
    (cloud.settings.state_dir / "endpoint.json").write_text(
        json.dumps({"endpoint": cloud.url, "ca": cloud.ca, "pid": os.getpid()}))
    yield cloud
    cloud.stop()
    cloud.services.store.close()


@pytest.fixture(scope="module")
def cli(cli_cloud, tmp_path_factory) -> Cli:
    return Cli(cloud=cli_cloud, runner=CliRunner(), client_home=tmp_path_factory.mktemp("client-home") / "home")
