"""Everything under a state directory is private (0700 directories, 0600 files), whoever made it."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hsmcloud.server import Endpoint, write_endpoint
from tests.conftest import start_cloud
from tests.controlplane.test_rules import PAY, put_hsm, wait_terminal
from tests.helpers import hsm_body, make_network


@pytest.fixture
def permissive_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Mode of every directory and file under root (root included), by path relative to it."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def not_private(root: Path) -> dict[str, str]:
    found = {}
    for rel, mode in modes(root).items():
        want = 0o700 if (root / rel).is_dir() else 0o600
        if mode != want:
            found[rel] = oct(mode)
    return found


def run_cloud_with_devices(state_dir: Path) -> None:
    """Start the service on state_dir, create a Luna and a payment HSM (their devices start), stop it."""
    cloud = start_cloud(state_dir, backend="sqlite")
    try:
        write_endpoint(cloud.settings, Endpoint(url=cloud.url, ca_path=Path(cloud.ca)),
                       int(cloud.url.rsplit(":", 1)[1]))
        sub = cloud.new_subscription()
        with cloud.http(sub) as c:
            subnet = make_network(c, sub)
            for name, sku in (("files-luna", None), ("files-pay", PAY)):
                body = hsm_body(subnet, sku=sku) if sku else hsm_body(subnet)
                r = put_hsm(c, sub, "hsm-rg", name, body)
                assert r.status_code in (200, 201), r.text
            for name in ("files-luna", "files-pay"):
                assert wait_terminal(c, sub, "hsm-rg", name)["properties"]["provisioningState"] == "Succeeded"
        # The store is live here: its -wal and -shm files exist and must be private too.
        assert (state_dir / "hsmcloud.db-wal").exists()
        assert not_private(state_dir) == {}
    finally:
        cloud.stop()
        cloud.services.store.close()


def test_state_dir_made_by_the_user_ends_up_private(tmp_path, permissive_umask):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o755
    run_cloud_with_devices(state_dir)
    tree = modes(state_dir)
    # What the walk covered: the store, keys, certificates, endpoint file and both appliances' states.
    for rel in ("hsmcloud.db", "identity/token-signing-key.pem", "tls/ca-key.pem", "tls/server-key.pem",
                "endpoint.json", "devices"):
        assert rel in tree, rel
    device_files = [rel for rel in tree if rel.startswith("devices/") and rel.count("/") == 2]
    assert any(rel.endswith("/appliance.sqlite3") for rel in device_files)
    assert any(rel.endswith("/payshield.sqlite3") for rel in device_files)
    assert any(rel.endswith("/master.key") for rel in device_files)
    assert not_private(state_dir) == {}


def test_state_left_readable_by_an_older_version_is_narrowed_on_restart(tmp_path, permissive_umask):
    state_dir = tmp_path / "state"
    run_cloud_with_devices(state_dir)
    for rel in modes(state_dir):
        path = state_dir / rel
        path.chmod(0o755 if path.is_dir() else 0o644)
    cloud = start_cloud(state_dir, backend="sqlite")  # restarts the allocated devices on their states
    try:
        with cloud.http(operator=True) as op:
            assert op.get("/operator/devices").status_code == 200
        # endpoint.json is rewritten by 'hsmcloud up' only (start_cloud does not): the rest is narrowed.
        assert not_private(state_dir) == {"endpoint.json": "0o644"}
    finally:
        cloud.stop()
        cloud.services.store.close()
