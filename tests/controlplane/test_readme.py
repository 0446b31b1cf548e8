"""The README's SDK snippet runs as pasted against the service."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import HSM_API, make_network

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_sdk_snippet() -> str:
    found = re.search(r"With the Azure SDK.*?```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert found, "README.md has no SDK snippet"
    return found.group(1)


def test_readme_sdk_snippet_creates_gets_lists_and_deletes(cloud, retry_after):
    sub = cloud.new_subscription()
    with cloud.http(sub) as c:
        make_network(c, sub)  # what 'hsmcloud network create -g hsm-rg' makes
    # The snippet as a user runs it: its own process, `hsmcloud` on PATH, the variables the README sets.
    env = dict(os.environ, HSMCLOUD_SUBSCRIPTION=sub, HSMCLOUD_STATE_DIR=str(cloud.settings.state_dir),
               HSMCLOUD_ENDPOINT=cloud.url, PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                                                 os.environ.get("PATH", "")]))
    run = subprocess.run([sys.executable, "-c", readme_sdk_snippet()], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "sdk1 The Dedicated HSM device is provisioned successfully and ready to use."
    assert lines[1] in ("stamp1", "stamp2")
    assert lines[2] == "['sdk1']"
    with cloud.http(sub) as c:
        r = c.get(f"/subscriptions/{sub}/resourceGroups/hsm-rg/providers/Microsoft.HardwareSecurityModules/"
                  "dedicatedHSMs/sdk1", params={"api-version": HSM_API})
        assert r.status_code == 404
