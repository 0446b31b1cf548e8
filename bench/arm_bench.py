"""ARM endpoint benchmark: create->Succeeded latency and GET/list throughput, each as a ratio to a
trivial endpoint (/healthz) of the same server measured in the same run.

    .venv/bin/python bench/arm_bench.py [--database-url postgresql://...] [--requests 400] [--creates 10]
"""
from __future__ import annotations

import argparse
import statistics
import ssl
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from hsmcloud.config import Settings
from hsmcloud.server import build_server

HSM_API, NET_API = "2025-03-31", "2023-09-01"


def start(state_dir: Path, database_url: str | None):
    settings = Settings(state_dir=state_dir, port=0, tls=True, database_url=database_url, regions=("eastus",),
                        gateway_provision_seconds=0, step_delay_seconds=0, retry_after_seconds=1)
    server, endpoint = build_server(settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"https://127.0.0.1:{port}", str(endpoint.ca_path)


def rate(make_client, path: str, params: dict, n: int, workers: int) -> tuple[float, float]:
    """(requests per second, median latency in ms) for n GETs spread over `workers` keep-alive clients."""
    latencies: list[float] = []
    lock = threading.Lock()

    def run(count: int):
        with make_client() as c:
            for _ in range(count):
                t0 = time.perf_counter()
                r = c.get(path, params=params)
                dt = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                with lock:
                    latencies.append(dt)

    per = n // workers
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, [per] * workers))
    elapsed = time.perf_counter() - t0
    return per * workers / elapsed, statistics.median(latencies) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--creates", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hsmcloud-bench-"))
    server, thread, url, ca = start(tmp, args.database_url)
    services = server.config.app.state.services
    sub = str(uuid.uuid4())
    verify = ssl.create_default_context(cafile=ca)

    def client(operator=False):
        tok = services.tokens.issue(subscription_id=None if operator else sub, operator=operator)
        return httpx.Client(base_url=url, verify=verify, timeout=60, headers={"Authorization": f"Bearer {tok}"})

    with client(operator=True) as op:
        op.put(f"/operator/subscriptions/{sub}/allowlist").raise_for_status()
        op.put(f"/operator/subscriptions/{sub}/quotas/eastus", json={"perRegion": 24, "perStamp": 12}
               ).raise_for_status()
    base = f"/subscriptions/{sub}/resourceGroups/rg"
    hsm_base = f"{base}/providers/Microsoft.HardwareSecurityModules/dedicatedHSMs"
    with client() as c:
        c.put(f"/subscriptions/{sub}/resourcegroups/rg", params={"api-version": "2022-09-01"},
              json={"location": "eastus"}).raise_for_status()
        c.put(f"{base}/providers/Microsoft.Network/virtualNetworks/v", params={"api-version": NET_API}, json={
            "location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.2.0.0/16"]}, "subnets": [
                {"name": "s", "properties": {"addressPrefix": "10.2.1.0/24", "delegations": [
                    {"name": "d", "properties": {"serviceName": "Microsoft.HardwareSecurityModules/dedicatedHSMs"}}]}},
                {"name": "GatewaySubnet", "properties": {"addressPrefix": "10.2.255.0/26"}}]}}).raise_for_status()
        subnet = f"{base}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
        c.put(f"{base}/providers/Microsoft.Network/virtualNetworkGateways/gw", params={"api-version": NET_API},
              json={"location": "eastus", "properties": {"gatewayType": "ExpressRoute", "ipConfigurations": [
                  {"name": "i", "properties": {"subnet": {"id": subnet[:-1] + "GatewaySubnet"}}}]}}
              ).raise_for_status()
        body = {"location": "eastus", "sku": {"name": "SafeNet Luna Network HSM A790"},
                "properties": {"networkProfile": {"subnet": {"resourceId": subnet}}}}

        # Trivial endpoint: one request's latency is the unit for the create latency.
        trivial_single = []
        for _ in range(50):
            t0 = time.perf_counter()
            c.get("/healthz").raise_for_status()
            trivial_single.append(time.perf_counter() - t0)
        trivial_ms = statistics.median(trivial_single) * 1000

        create_ms = []
        for i in range(args.creates):
            t0 = time.perf_counter()
            c.put(f"{hsm_base}/b{i:03d}", params={"api-version": HSM_API}, json=body).raise_for_status()
            while True:
                state = c.get(f"{hsm_base}/b{i:03d}", params={"api-version": HSM_API}).json()["properties"][
                    "provisioningState"]
                if state in ("Succeeded", "Failed"):
                    break
                time.sleep(0.005)
            assert state == "Succeeded", state
            create_ms.append((time.perf_counter() - t0) * 1000)

    h_rps, h_ms = rate(client, "/healthz", {}, args.requests, args.workers)
    g_rps, g_ms = rate(client, f"{hsm_base}/b000", {"api-version": HSM_API}, args.requests, args.workers)
    l_rps, l_ms = rate(client, hsm_base, {"api-version": HSM_API}, args.requests, args.workers)

    backend = "postgresql" if args.database_url else "sqlite"
    rows = [
        ("trivial GET /healthz", f"{h_rps:.0f} req/s", f"{h_ms:.2f} ms", "1.00 (reference)"),
        ("ARM GET dedicatedHSM", f"{g_rps:.0f} req/s", f"{g_ms:.2f} ms", f"{g_rps / h_rps:.2f} of trivial req/s"),
        (f"ARM list ({args.creates} HSMs)", f"{l_rps:.0f} req/s", f"{l_ms:.2f} ms",
         f"{l_rps / h_rps:.2f} of trivial req/s"),
        ("create -> Succeeded", "-", f"{statistics.median(create_ms):.1f} ms (median of {args.creates})",
         f"{statistics.median(create_ms) / trivial_ms:.0f}x one trivial request ({trivial_ms:.2f} ms)"),
    ]
    print(f"hsmcloud ARM benchmark ({backend}, HTTPS, {args.workers} client threads, {args.requests} requests per measure)")
    print(f"{'measure':28} {'throughput':>12} {'latency':>34}  ratio")
    for r in rows:
        print(f"{r[0]:28} {r[1]:>12} {r[2]:>34}  {r[3]}")
    with client() as c:
        for i in range(args.creates):
            c.delete(f"{hsm_base}/b{i:03d}", params={"api-version": HSM_API})
    server.should_exit = True
    thread.join(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
