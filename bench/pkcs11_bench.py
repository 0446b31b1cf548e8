"""PKCS#11 throughput through the hsmcloud library over NTLS, as ratios to references in the same run.

    python bench/pkcs11_bench.py [--seconds 5] [--threads 1,4,16] [--json]

One C client (bench/pkcs11_speed.c, built here with gcc) drives every module the same way:
RSA-2048 PKCS#1 v1.5 signatures (a SHA-256 DigestInfo, what TLS servers sign), ECDSA P-256
signatures and AES-256-GCM encryption of 4 KiB, each call a whole operation (Init + the call),
with 1, 4 and 16 threads, each thread its own session. The modules:

- hsmcloud: the PKCS#11 library against an appliance run standalone in a process of its own
  (`python -m hsmcloud.appliances.luna`), set up through its real interfaces: LunaSH over SSH,
  the client certificate over SFTP, the partition and Crypto Officer over NTLS;
- SoftHSM2 (Debian's softhsm2), a token in a scratch directory, in the client's process.

And the cryptography alone: `openssl speed -multi 2` (this machine has 2 cores) for the same
operations. Every figure is printed with its ratio to OpenSSL and to SoftHSM2 from this run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEED_C = ROOT / "bench" / "pkcs11_speed.c"
SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")
OPERATIONS = ("rsa", "ecdsa", "aesgcm")
LABEL = "bench"
ADMIN_PASSWORD = "Adm1n-Passw0rd"
SO_PASSWORD = "bench-so-secret-1"
PO_PIN, CO_PIN = "bench-po-pin-1", "bench-co-pin-1"


def build_speed(tmp: Path) -> Path:
    exe = tmp / "pkcs11_speed"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(SPEED_C), "-ldl", "-lpthread"], check=True)
    return exe


def run_speed(exe: Path, module: str, pin: str, operation: str, threads: int, seconds: float, env: dict) -> dict:
    out = subprocess.run([str(exe), module, LABEL, pin, operation, str(threads), str(seconds)],
                         capture_output=True, text=True, env=env, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"pkcs11_speed {operation} x{threads} on {module}: {out.stderr.strip() or out.stdout}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- the appliance --------------------------------------------------------------------------------

def start_appliance(tmp: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "hsmcloud.appliances.luna", "--state-dir", str(tmp / "appliance"),
                             "--serial", "154700090", "--address", "127.0.0.1", "--ssh-port", "0",
                             "--ntls-port", "0", "--mgmt-token", secrets.token_urlsafe(16)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the appliance did not start: {proc.stderr.read()}")
    return proc, json.loads(line)


async def _shell(address: str, port: int, password: str, *commands: str) -> None:
    import asyncssh
    async with asyncssh.connect(address, port=port, username="admin", password=password, known_hosts=None,
                                client_keys=None, agent_path=None, preferred_auth="password") as conn:
        for command in commands:
            result = await conn.run(command, check=False)
            if result.exit_status != 0:
                raise RuntimeError(f"'{command.split(' -')[0]}' failed: {result.stdout}")


def set_up_appliance(ports: dict) -> None:
    """As a tenant would: own the appliance, make a partition, connect this client, make a CO."""
    from hsmcloud.clients.luna import certificates, config as client_config, connect
    from hsmcloud.clients.luna.lunacm.backend import NtlsBackend

    address, ssh = ports["address"], ports["ssh_port"]
    asyncio.run(_shell(address, ssh, "PASSWORD", f"my password set -oldpassword PASSWORD -newpassword {ADMIN_PASSWORD}"))
    asyncio.run(_shell(address, ssh, ADMIN_PASSWORD, f"hsm init -label bench -domain benchDomain -password {SO_PASSWORD}",
                       f"hsm login -password {SO_PASSWORD}", "partition create -partition bench"))
    made = certificates.create_client_certificate("benchhost", key_type="ec")
    cfg = client_config.load()
    cfg.client = client_config.ClientIdentity(name=made.name, certificate=made.certificate,
                                              private_key=made.private_key)
    client_config.save(cfg)
    connect.connect(address=address, ssh_port=ssh, ntls_port=ports["ntls_port"], admin_password=ADMIN_PASSWORD,
                    partition="bench", server_name="bench")
    backend = NtlsBackend()
    try:
        backend.init_partition(0, label=LABEL, so_password=PO_PIN, domain=None)
        backend.login(0, "po", PO_PIN)
        backend.change_policy(0, 21, 0)
        backend.init_role(0, "co", CO_PIN)
    finally:
        backend.close()


# ---- SoftHSM2 -------------------------------------------------------------------------------------

def set_up_softhsm(tmp: Path) -> dict:
    tokens = tmp / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--so-pin", PO_PIN,
                    "--pin", CO_PIN], check=True, capture_output=True, env=env)
    return env


# ---- OpenSSL --------------------------------------------------------------------------------------

def openssl_speed(seconds: int) -> dict[str, float]:
    """Operations per second of `openssl speed -multi 2` for the three operations."""
    def run(*args: str) -> str:
        return subprocess.run(["openssl", "speed", "-multi", "2", "-seconds", str(seconds), *args],
                              capture_output=True, text=True, check=True).stdout

    rsa = re.search(r"^rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)", run("rsa2048"), re.M)
    ec = re.search(r"^\s*256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)", run("ecdsap256"), re.M)
    gcm = re.search(r"^aes-256-gcm\s+([\d.]+)k", run("-evp", "aes-256-gcm", "-bytes", "4096"), re.M | re.I)
    if not (rsa and ec and gcm):
        raise RuntimeError("could not read openssl speed's output")
    return {"rsa": float(rsa.group(1)), "ecdsa": float(ec.group(1)), "aesgcm": float(gcm.group(1)) * 1000 / 4096}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", default="1,4,16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    for tool in ("gcc", "openssl", "softhsm2-util"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is needed (Debian: gcc, openssl, softhsm2)", file=sys.stderr)
            return 2
    from hsmcloud.clients.pkcs11.module_path import module_path
    module = str(module_path())
    load = os.getloadavg()[0]
    results: dict = {"load_before": load, "openssl": {}, "hsmcloud": {}, "softhsm2": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["HSMCLOUD_CLIENT_HOME"] = str(tmp / "client")
        os.environ.pop("HSMCLOUD_CONF", None)
        exe = build_speed(tmp)
        results["openssl"] = openssl_speed(max(1, int(args.seconds)))
        proc, ports = start_appliance(tmp)
        try:
            set_up_appliance(ports)
            env = dict(os.environ)
            for op in OPERATIONS:
                for n in threads:
                    results["hsmcloud"][f"{op}/{n}"] = run_speed(exe, module, CO_PIN, op, n, args.seconds, env)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        if SOFTHSM.exists():
            env = set_up_softhsm(tmp)
            for op in OPERATIONS:
                for n in threads:
                    try:
                        results["softhsm2"][f"{op}/{n}"] = run_speed(exe, str(SOFTHSM), CO_PIN, op, n,
                                                                     args.seconds, env)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # SoftHSM2 can crash under threads
                        results["softhsm2"][f"{op}/{n}"] = {"error": str(exc)[:300]}
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    names = {"rsa": "RSA-2048 sign", "ecdsa": "ECDSA P-256 sign", "aesgcm": "AES-256-GCM 4 KiB"}
    print(f"load average before/after: {results['load_before']:.2f} / {results['load_after']:.2f}")
    print(f"{'operation':<20}{'thr':>4}{'hsmcloud/s':>12}{'p50 us':>9}{'p99 us':>9}{'softhsm2/s':>12}"
          f"{'openssl/s':>11}{'vs openssl':>11}{'vs softhsm':>11}")
    for op in OPERATIONS:
        for n in threads:
            ours = results["hsmcloud"][f"{op}/{n}"]
            soft = results["softhsm2"].get(f"{op}/{n}", {})
            ref = results["openssl"][op]
            soft_ops = soft.get("ops_per_second")
            rate = ours["ops_per_second"]
            soft_text = f"{soft_ops:.0f}" if soft_ops else "failed"
            vs_soft = f"{rate / soft_ops:.2f}" if soft_ops else "-"
            print(f"{names[op]:<20}{n:>4}{rate:>12.0f}{ours['p50_us']:>9.0f}{ours['p99_us']:>9.0f}"
                  f"{soft_text:>12}{ref:>11.0f}{rate / ref:>11.2f}{vs_soft:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
