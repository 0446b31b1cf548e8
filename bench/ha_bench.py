"""HA groups through the hsmcloud PKCS#11 library: throughput of a group of two members as a ratio
to one member in the same run, and how long a member's death holds calls up.

    python bench/ha_bench.py [--seconds 5] [--threads 4,8] [--json]

Two appliances, each in a process of its own (the test suite's tests/clients/pkcs11/
ntls_appliance.py), one client certificate registered on both, a client configuration with both
partitions as slots 0 and 1 and an HA group over them (slot 2). The C client
tests/clients/pkcs11/p11_ha.c (built here with gcc -O2) signs with RSA-2048 (CKM_SHA256_RSA_PKCS,
SignInit + Sign per call) from N threads, each its own session:

- `rate` on slot 0 (one member, directly) and on slot 2 (the group): signatures per second, and
  the group's figure as a ratio to the single member's;
- `failover` on slot 2: the bench kills member B (SIGKILL) at time T while the threads sign, and
  the client reports the calls that were in flight at T: the longest time from T until such a
  call returned (successfully: the library retried it on A), and the count of failed calls.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.clients.pkcs11.library_helpers import (CO_PIN, NATIVE, ServerEntry, library_env,  # noqa: E402
                                                  start_appliance, write_config)

from hsmcloud.clients.pkcs11.module_path import module_path  # noqa: E402

PROGRAM = ROOT / "tests" / "clients" / "pkcs11" / "p11_ha.c"


def build(tmp: Path) -> Path:
    exe = tmp / "p11_ha"
    subprocess.run(["gcc", "-O2", "-Wall", f"-I{NATIVE}", "-o", str(exe), str(PROGRAM), "-ldl", "-lpthread"],
                   check=True)
    return exe


def rate(exe: Path, env: dict, slot: int, threads: int, seconds: int) -> float:
    out = subprocess.run([str(exe), str(module_path()), "rate", str(slot), str(threads), str(seconds)],
                         capture_output=True, text=True, env=env, timeout=seconds + 120)
    if out.returncode != 0 or "rate=" not in out.stdout:
        raise RuntimeError(f"p11_ha rate on slot {slot}: {out.stdout} {out.stderr}")
    return float(out.stdout.split("rate=")[1].split()[0])


def failover(exe: Path, env: dict, victim, threads: int) -> dict:
    proc = subprocess.Popen([str(exe), str(module_path()), "failover", "2", str(threads)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"p11_ha failover: {line} {proc.stderr.read()}")
        t_kill = time.time() * 1000.0
        victim.kill()
        proc.stdin.write(f"killed {t_kill:.3f}\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    fields = dict(part.split("=") for part in out.strip().splitlines()[-1].split()[1:])
    return {k: float(v) for k, v in fields.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--threads", default="4,8")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    results: dict = {"rate": [], "failover": None}
    with tempfile.TemporaryDirectory(prefix="ha-bench-") as tmpdir:
        tmp = Path(tmpdir)
        exe = build(tmp)
        first = start_appliance(tmp / "a", partitions=[("app1", True)])
        second = start_appliance(tmp / "b", partitions=[("app1", True)], client=first.client)
        try:
            conf = write_config(tmp / "ha.conf", client=first.client,
                                servers=[ServerEntry(name="A", address="127.0.0.1", port=first.port,
                                                     certificate=first.server_pem),
                                         ServerEntry(name="B", address="127.0.0.1", port=second.port,
                                                     certificate=second.server_pem)],
                                slots=[("A", "app1"), ("B", "app1")])
            with conf.open("a") as fh:
                fh.write(f"\n[hagroup bench]\nserial = 1{first.serials['app1']}\nmembers = A/app1, B/app1\n")
            env = library_env(conf=conf, HSMCLOUD_TEST_CO_PIN=CO_PIN)
            for n in threads:
                one = rate(exe, env, 0, n, args.seconds)
                group = rate(exe, env, 2, n, args.seconds)
                results["rate"].append({"threads": n, "one_member": one, "group_of_two": group,
                                        "ratio": group / one if one else 0.0})
            results["failover"] = failover(exe, env, second, max(threads))
        finally:
            first.stop()
            second.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("RSA-2048 signatures/s (SignInit + Sign per call), same run:")
    print(f"{'threads':>8} {'one member':>12} {'HA group of 2':>14} {'ratio':>7}")
    for r in results["rate"]:
        print(f"{r['threads']:>8} {r['one_member']:>12.1f} {r['group_of_two']:>14.1f} {r['ratio']:>7.2f}")
    f = results["failover"]
    print(f"\nMember B killed (SIGKILL) under {max(threads)} signing threads: {int(f['in_flight'])} call(s) in flight; "
          f"the last of them returned {f['worst_ms']:.1f} ms after the kill (retried on A); the first call started "
          f"after the kill returned after {f['first_new_ms']:.1f} ms; failed calls: {int(f['failed'])} of "
          f"{int(f['signatures'])}.")


if __name__ == "__main__":
    main()
