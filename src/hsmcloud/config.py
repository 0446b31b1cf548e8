"""Settings of one hsmcloud service instance."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = Path(os.environ.get("HSMCLOUD_STATE_DIR", "~/.hsmcloud")).expanduser()
DEFAULT_PORT = 8443
DEFAULT_REGIONS = ("eastus", "westus")


@dataclass(kw_only=True)
class Settings:
    """Everything `hsmcloud up` can be told; tests build their own."""

    state_dir: Path = DEFAULT_STATE_DIR
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls: bool = True
    database_url: str | None = None
    regions: tuple[str, ...] = DEFAULT_REGIONS
    # Seconds a new virtual network gateway stays "Updating" before it is "Succeeded".
    gateway_provision_seconds: float = 3.0
    # Pause between provisioning steps so a person can watch the states go by.
    step_delay_seconds: float = 0.3
    # Retry-After (seconds) on long-running operation responses.
    retry_after_seconds: int = 1
    # Appliance ports: 0 means an ephemeral port per device (recorded in the store).
    device_ssh_port: int = 0
    # Luna devices' NTLS port (1792 on the real appliance); 0 means ephemeral.
    device_ntls_port: int = 0
    device_mgmt_port: int = 0
    # Payment devices' HOST1/HOST2 port (1500 on the real device); 0 means ephemeral.
    device_host_port: int = 0
    # Devices get their own loopback address 127.<stamp id>.<kind>.<10+slot> where the OS routes all of
    # 127.0.0.0/8 (Linux); elsewhere (macOS) they share 127.0.0.1 and differ by port.
    loopback_share_single: bool = field(default_factory=lambda: not sys.platform.startswith("linux"))
    # Identifies this replica when it leases long-running operations.
    worker_id: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")
    run_worker: bool = True
    # How long a worker's lease on an operation lasts unless renewed (it renews it every third of
    # that while a step runs). Another worker takes the operation over once it has expired.
    operation_lease_seconds: float = 15.0

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.state_dir / 'hsmcloud.db'}"

    @property
    def devices_dir(self) -> Path:
        return self.state_dir / "devices"
