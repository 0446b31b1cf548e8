"""NTLS benchmark: operations per second through the appliance's NTLS listener and dispatcher.

An appliance core with one partition runs in a child process behind the real NTLS listener on
127.0.0.1; this process drives it with the Python NTLS client (TLS, one connection per thread,
one application) and prints, per operation and thread count, calls/s, p50/p99 latency and the
ratio to the same operation done directly with `cryptography` in this process with as many
threads (the ceiling for a server written on `cryptography`).

    .venv/bin/python bench/ntls_inprocess_bench.py [--seconds 3] [--threads 1,4,16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PO, CO = "bench-po-pin", "bench-co-pin"


def _serve(state_dir: str, ready, stop) -> None:
    """The appliance side: core, partition, client registration, NTLS listener."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    from hsmcloud.appliances.luna.core.appliance_core import ApplianceCore
    from hsmcloud.appliances.luna.core.passwords import domain_digest, hash_password
    from hsmcloud.appliances.luna.core.roles import Role
    from hsmcloud.appliances.luna.ntls.dispatcher import NtlsDispatcher
    from hsmcloud.appliances.luna.ntls.server import NtlsServer

    root = Path(state_dir)
    core = ApplianceCore.open(root / "appliance", "154799999")
    generation = core.state.hard_init(label="bench", domain_digest=domain_digest("bench-domain"),
                                      so_password_hash=hash_password("bench-so-password"))
    serial = core.state.create_partition("bench", generation=generation).serial
    partitions = core.partitions
    partitions.init(serial, so_pin=PO, label="bench")
    po = partitions.login(serial, Role.PARTITION_SO, PO)
    partitions.change_policy(serial, 21, 0, by=po)
    partitions.init_role(serial, Role.CRYPTO_OFFICER, CO, by=po)

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (root / "client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "clientKey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (root / "server.pem").write_text(core.clients.server_certificate().certificate_pem)
    core.clients.register("bench", certificate_pem=(root / "client.pem").read_bytes(),
                          hostname="bench")
    core.clients.assign("bench", serial)
    server = NtlsServer(core, NtlsDispatcher)
    port = server.start("127.0.0.1", 0)
    ready.put((port, serial))
    stop.wait()
    server.stop()
    core.close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _run(threads: int, seconds: float, make_worker) -> tuple[float, float, float]:
    """(calls/s, p50 ms, p99 ms) of ``threads`` workers calling for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    workers = [make_worker(i) for i in range(threads)]
    start_line = threading.Barrier(threads + 1)
    deadline = [0.0]

    def loop(index: int) -> None:
        call = workers[index]
        own = latencies[index]
        start_line.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline[0]:
                return
            call()
            own.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start_line.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = [x for own in latencies for x in own]
    if not flat:
        return 0.0, 0.0, 0.0
    return len(flat) / elapsed, 1000 * statistics.median(flat), 1000 * _percentile(flat, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", default="1,4,16")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]

    from hsmcloud.clients.luna.ntls_client import NtlsClient
    from hsmcloud.protocols.pkcs11 import constants as c
    from hsmcloud.protocols.pkcs11.params import GcmParams, Mechanism

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    with tempfile.TemporaryDirectory() as tmp:
        child = context.Process(target=_serve, args=(tmp, ready, stop), daemon=True)
        child.start()
        port, serial = ready.get(timeout=120)
        root = Path(tmp)

        def connect(app_id: int | None = None) -> NtlsClient:
            return NtlsClient.connect("127.0.0.1", port, certificate=root / "client.pem",
                                      private_key=root / "clientKey.pem",
                                      server_certificate=root / "server.pem",
                                      application_id=app_id)

        main_client = connect()
        session = main_client.open_session(serial)
        main_client.login(session, c.CKU_USER, CO.encode())
        _, rsa_key = main_client.generate_key_pair(
            session, c.CKM_RSA_PKCS_KEY_PAIR_GEN, [(c.CKA_MODULUS_BITS, 2048), (c.CKA_TOKEN, True)],
            [(c.CKA_TOKEN, True)])
        _, ec_key = main_client.generate_key_pair(
            session, c.CKM_EC_KEY_PAIR_GEN,
            [(c.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")), (c.CKA_TOKEN, True)],
            [(c.CKA_TOKEN, True)])
        aes_key = main_client.generate_key(session, c.CKM_AES_KEY_GEN,
                                           [(c.CKA_VALUE_LEN, 32), (c.CKA_TOKEN, True)])
        clients = [main_client] + [connect(main_client.application_id)
                                   for _ in range(max(thread_counts) - 1)]
        sessions = [cl.open_session(serial) for cl in clients]
        block = os.urandom(4096)
        digest = os.urandom(32)

        def ntls_sign(mechanism, key, data):
            def make(i):
                cl, s = clients[i], sessions[i]

                def call():
                    cl.sign_init(s, mechanism, key)
                    cl.sign(s, data, 512)
                return call
            return make

        def ntls_gcm(i):
            cl, s = clients[i], sessions[i]
            counter = [0]

            def call():
                counter[0] += 1
                iv = counter[0].to_bytes(12, "big")
                cl.encrypt_init(s, Mechanism(c.CKM_AES_GCM, GcmParams(iv, 96, b"", 128)), aes_key)
                cl.encrypt(s, block, 8192)
            return call

        local_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        local_ec = ec.generate_private_key(ec.SECP256R1())
        local_aes = AESGCM(os.urandom(32))

        def direct(fn):
            return lambda i: fn

        cases = [
            ("RSA-2048 PKCS#1 v1.5 sign (SHA-256)",
             ntls_sign(c.CKM_SHA256_RSA_PKCS, rsa_key, digest),
             direct(lambda: local_rsa.sign(digest, padding.PKCS1v15(), hashes.SHA256()))),
            ("ECDSA P-256 sign (SHA-256)", ntls_sign(c.CKM_ECDSA_SHA256, ec_key, digest),
             direct(lambda: local_ec.sign(digest, ec.ECDSA(hashes.SHA256())))),
            ("AES-256-GCM encrypt 4 KiB", ntls_gcm,
             direct(lambda: local_aes.encrypt(os.urandom(12), block, None))),
        ]
        print(f"NTLS through the dispatcher (server in a child process), {args.seconds:g} s per run")
        print(f"{'operation':40} {'threads':>7} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'direct/s':>10} {'ratio':>6}")
        for name, ntls_case, direct_case in cases:
            for threads in thread_counts:
                rate, p50, p99 = _run(threads, args.seconds, ntls_case)
                base, _, _ = _run(threads, args.seconds, direct_case)
                print(f"{name:40} {threads:>7} {rate:>10.0f} {p50:>8.2f} {p99:>8.2f} "
                      f"{base:>10.0f} {rate / base if base else 0:>6.2f}")
        for cl in clients:
            cl.close()
        stop.set()
        child.join(timeout=30)


if __name__ == "__main__":
    main()
