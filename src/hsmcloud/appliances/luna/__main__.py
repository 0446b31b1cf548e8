"""Run one Luna appliance standalone until Ctrl-C or SIGTERM.

    python -m hsmcloud.appliances.luna --state-dir D --serial S --address 127.0.0.1 \\
        --ssh-port 2222 --ntls-port 1792 --mgmt-port 0 --mgmt-token T

Prints one JSON line with the bound ports once it serves. The token may instead come from
the environment variable HSMCLOUD_LUNA_MGMT_TOKEN (keeps it out of the process list).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from ... import logredact
from .appliance import ApplianceConfig, LunaAppliance

TOKEN_ENV = "HSMCLOUD_LUNA_MGMT_TOKEN"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hsmcloud.appliances.luna",
        description="Run one emulated Luna Network HSM 7 (A790) appliance.",
    )
    parser.add_argument("--state-dir", type=Path, required=True, help="the appliance's storage")
    parser.add_argument("--serial", required=True, help="device serial number")
    parser.add_argument("--address", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--ssh-port", type=int, default=0, help="SSH port (0: any free port)")
    parser.add_argument("--ntls-port", type=int, default=1792,
                        help="NTLS port for applications (default 1792; 0: any free port)")
    parser.add_argument("--mgmt-port", type=int, default=0, help="management port (0: any)")
    parser.add_argument(
        "--mgmt-token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (or ${TOKEN_ENV})"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO (secrets are never logged)")
    return parser


async def _serve(config: ApplianceConfig) -> None:
    appliance = LunaAppliance(config)
    await appliance.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        print(
            json.dumps(
                {
                    "serial": config.serial,
                    "address": config.address,
                    "ssh_port": appliance.ssh_port,
                    "ntls_port": appliance.ntls_port,
                    "mgmt_port": appliance.mgmt_port,
                }
            ),
            flush=True,
        )
        print(
            f"Luna appliance {config.serial}: ssh admin@{config.address} -p {appliance.ssh_port}, "
            f"NTLS {config.address}:{appliance.ntls_port}, "
            f"management http://{config.address}:{appliance.mgmt_port}. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await appliance.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logredact.configure(logging.INFO if args.verbose else logging.WARNING)
    if not args.mgmt_token:
        _parser().error(f"--mgmt-token (or ${TOKEN_ENV}) is required")
    try:
        config = ApplianceConfig(
            serial=args.serial,
            state_dir=args.state_dir,
            address=args.address,
            ssh_port=args.ssh_port,
            ntls_port=args.ntls_port,
            mgmt_port=args.mgmt_port,
            mgmt_token=args.mgmt_token,
        )
    except ValueError as exc:
        _parser().error(str(exc))
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
