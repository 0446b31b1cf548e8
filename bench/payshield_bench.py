"""payShield host-command benchmark: calls per second and p50/p99 latency of CA, CW, M6, CI (DUKPT)
and EW (RSA signature) over 1, 8 and 64 TCP connections (licence limit lifted), each as a ratio to
the same operation run in-process in the same run, and to the 2,500 cps top licence (CPS2500) of
the real payShield 10K; then the licence limit switched on again, to show it holds exactly.

    .venv/bin/python bench/payshield_bench.py [--seconds 2.5] [--connections 1,8,64] [--workers N]

A command the appliance does not implement (CI, EW and EI came with issue 10) is skipped with a
printed note, so the benchmark runs on any version.

The appliance runs in a child process (this file with ``--serve``), with its host worker
processes (``--workers``, default one per core), so the load generator does not share their GILs. Everything is set up through the real interfaces: the provider sets the tenant token
and lifts the licence limit (management API), the tenant loads a variant LMK from two fresh admin
cards (``POST /lmk``) and a ZMK from two clear components (``POST /keys/load``); the TPK, ZPK, CVK
and TAK are generated on the appliance with ``A0`` mode 1, exported under that ZMK (scheme X) so
the benchmark knows their clear values and can check every response against psec's answer.

Columns: calls/s and p50/p99 latency of one cell (each connection has one request in flight);
``fail`` responses with an error code other than 00, ``wrong`` 00 but not psec's answer; ``/psec``
calls/s over the in-process psec rate of the same operation (one thread, best of a run before and
one after the cells); ``/2500`` calls/s over the CPS2500 licence; CPU as a share of one core for the
appliance process, the load generator (this process) and everything else on the machine (noise).
The ``execute()`` line is a diagnostic: the appliance's command processing called in-process
(parse, keys out from under the LMK, psec) without the network, with the same LMK.

CI uses the published ANSI X9.24-1 test vectors (BDK 0123456789ABCDEFFEDCBA9876543210, KSN
FFFF9876543210E0000n, PIN 1234, PAN 4012345678909): the expected answer is psec's ISO-0 block of
that PIN under the ZPK. EW signs with an RSA-2048 key pair the appliance generated with EI (after
the tenant authorised the LMK); each distinct request's signature is verified once with the
public key (cryptography), and PKCS#1 v1.5 being deterministic, every later answer must equal it.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

warnings.filterwarnings("ignore", message=".*TripleDES.*")

HEADER = b"BNCH"
TOP_LICENCE_CPS = 2500  # payShield 10K CPS2500, the highest performance licence
COMMANDS = ("CA", "CW", "M6", "CI", "EW")
POOL = 256  # distinct requests per command, cycled through
MAC_DATA = 32  # bytes MACed by M6
RSA_BITS = 2048
EW_POOL = 16  # distinct messages signed by EW
# ANSI X9.24-1 (2009) Annex A: DUKPT test vectors (the PIN blocks for the first three counters).
DUKPT_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
DUKPT_PAN = "4012345678909"
DUKPT_KSN = "FFFF9876543210E0000{}"
DUKPT_BLOCKS = {1: "1B9C1845EB993A7A", 2: "10A01C8D02C69107", 3: "18DC07B94797B466"}
DUKPT_PIN = "1234"


# -- the appliance in its own process ----------------------------------------------------------


def serve(state_dir: Path) -> int:
    """Child mode: start one appliance on 127.0.0.1 (ephemeral ports), print its ports as JSON,
    serve until SIGTERM/SIGINT or until stdin closes (the benchmark died), then stop it cleanly."""
    from hsmcloud.appliances.payshield.appliance import PayShieldAppliance, PayShieldConfig

    async def run() -> None:
        workers = os.environ.get("PS_BENCH_WORKERS")
        cfg = PayShieldConfig(serial="PSBENCH01", state_dir=state_dir, address="127.0.0.1", host1_port=0,
                              host2_port=0, mgmt_port=0, mgmt_token=os.environ["PS_BENCH_PROVIDER_TOKEN"],
                              calls_per_second=TOP_LICENCE_CPS, header_length=len(HEADER),
                              **({"host_workers": int(workers)} if workers else {}))
        app = PayShieldAppliance(cfg)
        await app.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def parent_gone() -> None:
            if not os.read(sys.stdin.fileno(), 4096):
                loop.remove_reader(sys.stdin.fileno())
                stop.set()

        loop.add_reader(sys.stdin.fileno(), parent_gone)
        pids = [p for p in getattr(app, "host_worker_pids", []) if p != os.getpid()]
        print(json.dumps({"host1": app.host1_port, "host2": app.host2_port, "mgmt": app.mgmt_port,
                          "pids": pids}), flush=True)
        await stop.wait()
        await app.stop()

    profile = os.environ.get("PS_BENCH_PROFILE")
    if profile:  # --profile: cProfile of the appliance process (use with --workers 0 to see the host path)
        import cProfile

        cProfile.runctx("asyncio.run(run())", globals(), {"asyncio": asyncio, "run": run}, profile)
    else:
        asyncio.run(run())
    return 0


class Child:
    """The appliance process: started with ``--serve``, stopped with SIGTERM."""

    def __init__(self, state_dir: Path, provider_token: str, workers: int | None, profile: str | None = None) -> None:
        self.log = open(state_dir.parent / "appliance.stderr", "w+b")  # noqa: SIM115 - closed in stop()
        self.stderr_text = ""
        env = dict(os.environ, PS_BENCH_PROVIDER_TOKEN=provider_token)
        if workers is not None:
            env["PS_BENCH_WORKERS"] = str(workers)
        if profile:
            env["PS_BENCH_PROFILE"] = profile
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(state_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"the appliance did not start: {self.stderr_text}")
        self.ports = json.loads(line)

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the appliance process and its host workers so far (Linux /proc)."""
        total = 0
        for pid in [self.proc.pid, *self.ports.get("pids", [])]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.seek(0)
            self.stderr_text = self.log.read().decode(errors="replace")[-2000:]
            self.log.close()
        return self.proc.returncode


def machine_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (Linux /proc/stat: all but idle and iowait)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


# -- host-port client --------------------------------------------------------------------------


class HostConnection(asyncio.Protocol):
    """One host-port connection with one request in flight (2-byte length framing)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None

    @classmethod
    async def open(cls, port: int) -> HostConnection:
        _, conn = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 2:
            end = 2 + int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) >= end and self.waiter is not None:
                message = bytes(self.buffer[2:end])
                del self.buffer[:end]
                waiter, self.waiter = self.waiter, None
                waiter.set_result(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("host connection closed"))

    def call(self, framed: bytes) -> asyncio.Future[bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(framed)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def frame(message: bytes) -> bytes:
    body = HEADER + message
    return len(body).to_bytes(2, "big") + body


async def host_call(port: int, message: bytes) -> bytes:
    conn = await HostConnection.open(port)
    try:
        return await conn.call(frame(message))
    finally:
        conn.close()


def ok_data(response: bytes, command: bytes) -> str:
    expected = HEADER + command[:1] + bytes([command[1] + 1])
    if response[: len(expected)] != expected or response[len(expected): len(expected) + 2] != b"00":
        raise RuntimeError(f"{command.decode()} failed: {response!r}")
    return response[len(expected) + 2:].decode("latin-1")


# -- set-up through the management API and host commands ---------------------------------------


@dataclass
class Keys:
    tpk: bytes
    zpk: bytes
    cvk: bytes
    tak: bytes
    tpk_lmk: str
    zpk_lmk: str
    cvk_lmk: str
    tak_lmk: str
    bdk_lmk: str = ""
    rsa_public_der: bytes = b""
    rsa_private_field: bytes = b""


def set_up(ports: dict, provider_token: str, work: Path) -> tuple[Keys, list[dict]]:
    import httpx
    from psec import des

    from hsmcloud.appliances.payshield import cards

    tenant_token = secrets.token_urlsafe(24)
    base = f"http://127.0.0.1:{ports['mgmt']}"
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {provider_token}"}) as p:
        digest = hashlib.sha256(tenant_token.encode()).hexdigest()
        p.post("/provider/claim", json={"token_sha256": digest}).raise_for_status()
        licence = p.put("/provider/licence", json={"cps_limit_lifted": True})
        licence.raise_for_status()
        assert licence.json()["cps_limit_lifted"] is True, licence.text
    presented = []
    for n in (1, 2):
        pin = f"{secrets.randbelow(10**6):06d}"
        presented.append({"card": cards.create_card_file(work / f"card{n}.json", pin), "pin": pin})
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {tenant_token}"}) as t:
        lmk = t.post("/lmk", json={"slot": 0, "scheme": "variant", "cards": presented})
        lmk.raise_for_status()
        components = [des.adjust_key_parity(os.urandom(16)) for _ in range(2)]
        loaded = t.post("/keys/load", json={"type": "000", "components": [c.hex().upper() for c in components]})
        loaded.raise_for_status()
        # The DUKPT BDK of the published test vectors, as two components (BDK ^ mask, mask).
        mask = des.adjust_key_parity(os.urandom(16))
        bdk = t.post("/keys/load", json={"type": "009", "components": [
            mask.hex().upper(), des.adjust_key_parity(bytes(a ^ b for a, b in zip(DUKPT_BDK, mask))).hex().upper()]})
        bdk.raise_for_status()
        # EI (RSA key generation) needs the authorised state.
        t.post("/authorize", json={"slot": 0}).raise_for_status()
    zmk = des.adjust_key_parity(bytes(a ^ b for a, b in zip(*components)))
    assert loaded.json()["kcv"] == des.generate_kcv(zmk, 3).hex().upper()
    zmk_lmk = loaded.json()["key"]

    async def generate() -> dict[str, tuple[bytes, str]]:
        nc = ok_data(await host_call(ports["host1"], b"NC"), b"NC")
        assert nc[:6] == lmk.json()["check_value"][:6], (nc, lmk.json())
        out = {}
        for name, key_type in (("tpk", "002"), ("zpk", "001"), ("cvk", "402"), ("tak", "003")):
            data = ok_data(await host_call(ports["host2"], b"A01" + key_type.encode() + b"U" + zmk_lmk.encode() + b"X"),
                           b"A0")
            under_lmk, under_zmk, check = data[:33], data[33:66], data[66:]
            clear = des.decrypt_tdes_ecb(zmk, bytes.fromhex(under_zmk[1:]))
            assert check == des.generate_kcv(clear, 3).hex().upper(), (name, data)
            out[name] = (clear, under_lmk)
        ei = await host_call(ports["host1"], b"EI0" + f"{RSA_BITS:04d}".encode() + b"02")
        if ei[len(HEADER): len(HEADER) + 4] == b"EJ00":
            body = ei[len(HEADER) + 4:]
            der_length = _der_length(body)
            out["rsa"] = (body[:der_length], body[der_length:])
        return out

    g = asyncio.run(generate())
    keys = Keys(tpk=g["tpk"][0], zpk=g["zpk"][0], cvk=g["cvk"][0], tak=g["tak"][0], tpk_lmk=g["tpk"][1],
                zpk_lmk=g["zpk"][1], cvk_lmk=g["cvk"][1], tak_lmk=g["tak"][1], bdk_lmk=bdk.json()["key"],
                rsa_public_der=g.get("rsa", (b"", b""))[0], rsa_private_field=g.get("rsa", (b"", b""))[1])
    return keys, presented


def _der_length(body: bytes) -> int:
    """Length of the DER SEQUENCE at the start of ``body`` (EI's public key)."""
    if body[:1] != b"\x30":
        raise RuntimeError(f"EI did not return a DER public key: {body[:8]!r}")
    first = body[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    return 2 + n + int.from_bytes(body[2: 2 + n], "big")


# -- requests, expected answers and the in-process reference -----------------------------------


@dataclass
class Workload:
    requests: list[tuple[bytes, bytes]]  # (framed request, expected response body)
    reference: Callable[[], None]  # one in-process operation (cycling through the same inputs)
    verify: tuple | None = None  # EW: (messages, public key DER) to check the answers with


def random_pan() -> str:
    return "4" + "".join(str(secrets.randbelow(10)) for _ in range(15))


def workloads(keys: Keys) -> dict[str, Workload]:
    from psec import cvv, des, mac, pinblock

    tpk, zpk, cvk, tak = keys.tpk, keys.zpk, keys.cvk, keys.tak

    # CA: PIN block ISO-0 under the TPK -> ISO-0 under the ZPK.
    ca_inputs = []
    ca_requests = []
    for _ in range(POOL):
        pan = random_pan()
        pin = "".join(str(secrets.randbelow(10)) for _ in range(4 + secrets.randbelow(3)))
        block = des.encrypt_tdes_ecb(tpk, pinblock.encode_pinblock_iso_0(pin, pan))
        out = des.encrypt_tdes_ecb(zpk, pinblock.encode_pinblock_iso_0(pin, pan)).hex().upper()
        message = (f"CA{keys.tpk_lmk}{keys.zpk_lmk}12{block.hex().upper()}0101{pan[-13:-1]}").encode()
        ca_requests.append((frame(message), HEADER + f"CB00{len(pin):02d}{out}01".encode()))
        ca_inputs.append((block, pan))

    def ca_reference(state=[0]) -> None:  # noqa: B006 - a cheap cycling counter
        block, pan = ca_inputs[state[0] % POOL]
        state[0] += 1
        pin = pinblock.decode_pinblock_iso_0(des.decrypt_tdes_ecb(tpk, block), pan)
        des.encrypt_tdes_ecb(zpk, pinblock.encode_pinblock_iso_0(pin, pan))

    # CW: CVV from PAN, expiry, service code.
    cw_inputs = []
    cw_requests = []
    for _ in range(POOL):
        pan, expiry, code = random_pan(), f"{26 + secrets.randbelow(5)}{1 + secrets.randbelow(12):02d}", "101"
        message = f"CW{keys.cvk_lmk}{pan};{expiry}{code}".encode()
        cw_requests.append((frame(message), HEADER + b"CX00" + cvv.generate_cvv(cvk, pan, expiry, code).encode()))
        cw_inputs.append((pan, expiry, code))

    def cw_reference(state=[0]) -> None:  # noqa: B006
        pan, expiry, code = cw_inputs[state[0] % POOL]
        state[0] += 1
        cvv.generate_cvv(cvk, pan, expiry, code)

    # M6: ISO 9797-1 algorithm 3 (retail MAC), padding method 1, 4-byte MAC over 32 binary bytes.
    m6_inputs = []
    m6_requests = []
    for _ in range(POOL):
        data = os.urandom(MAC_DATA)
        expected = mac.generate_retail_mac(tak[:8], tak[8:], data, 1, 4).hex().upper()
        # mode 0, binary message, 8-hex MAC, algorithm 3, padding 1, key type 003 (TAK), key, length, data
        message = b"M6" + b"00031" + b"003" + keys.tak_lmk.encode() + f"{MAC_DATA:04X}".encode() + data
        m6_requests.append((frame(message), HEADER + b"M700" + expected.encode()))
        m6_inputs.append(data)

    def m6_reference(state=[0]) -> None:  # noqa: B006
        data = m6_inputs[state[0] % POOL]
        state[0] += 1
        mac.generate_retail_mac(tak[:8], tak[8:], data, 1, 4)

    loads = {"CA": Workload(ca_requests, ca_reference), "CW": Workload(cw_requests, cw_reference),
             "M6": Workload(m6_requests, m6_reference)}

    # CI: the published DUKPT PIN blocks (BDK + KSN) -> ISO-0 under the ZPK.
    account = DUKPT_PAN[-13:-1]
    ci_out = des.encrypt_tdes_ecb(zpk, pinblock.encode_pinblock_iso_0(DUKPT_PIN, DUKPT_PAN)).hex().upper()
    ci_requests = []
    for counter, block in sorted(DUKPT_BLOCKS.items()):
        message = (f"CI{keys.bdk_lmk}{keys.zpk_lmk}605{DUKPT_KSN.format(counter)}{block}01{account}").encode()
        ci_requests.append((frame(message), HEADER + f"CJ00{len(DUKPT_PIN):02d}{ci_out}01".encode()))
    try:  # the in-process reference needs a DUKPT key derivation: the appliance's, where it has one
        from hsmcloud.appliances.payshield import dukpt as _dukpt
    except ImportError:
        _dukpt = None
    ci_inputs = [(bytes.fromhex(DUKPT_KSN.format(c)), bytes.fromhex(b)) for c, b in sorted(DUKPT_BLOCKS.items())]

    def ci_reference(state=[0]) -> None:  # noqa: B006
        ksn, block = ci_inputs[state[0] % len(ci_inputs)]
        state[0] += 1
        key = _dukpt.tdes_pin_key(DUKPT_BDK, ksn)
        pin = pinblock.decode_pinblock_iso_0(des.decrypt_tdes_ecb(key, block), DUKPT_PAN)
        des.encrypt_tdes_ecb(zpk, pinblock.encode_pinblock_iso_0(pin, DUKPT_PAN))

    if keys.bdk_lmk and _dukpt is not None and hasattr(_dukpt, "tdes_pin_key"):
        loads["CI"] = Workload(ci_requests, ci_reference)

    # EW: RSA-2048 PKCS#1 v1.5 signature (SHA-256) with the key pair EI made; the expected answers
    # are filled in by ew_expectations() once each is verified with the public key.
    if keys.rsa_private_field:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        ew_requests = []
        ew_data = [os.urandom(64) for _ in range(EW_POOL)]
        for data in ew_data:
            message = b"EW" + b"06" + b"01" + b"01" + f"{len(data):04d}".encode() + data + b";99" + keys.rsa_private_field
            ew_requests.append((frame(message), b""))
        local_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)

        def ew_reference(state=[0]) -> None:  # noqa: B006
            data = ew_data[state[0] % EW_POOL]
            state[0] += 1
            local_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

        loads["EW"] = Workload(ew_requests, ew_reference, verify=(ew_data, keys.rsa_public_der))
    return loads


def ew_expectations(ports: dict, load: Workload) -> None:
    """Ask the appliance once per EW request, verify the signature with EI's public key, and make
    that answer the expected one (PKCS#1 v1.5 signatures are deterministic)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    data_list, public_der = load.verify
    public = serialization.load_der_public_key(public_der)  # PKCS#1 RSAPublicKey or SubjectPublicKeyInfo

    async def ask() -> list[bytes]:
        return [await host_call(ports["host1"], request[2 + len(HEADER):]) for request, _ in load.requests]

    answers = asyncio.run(ask())
    for i, (answer, data) in enumerate(zip(answers, data_list, strict=True)):
        signature = ok_data(answer, b"EW").encode("latin-1")[4:]
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        load.requests[i] = (load.requests[i][0], answer)


def ops_per_second(op: Callable[[], None], seconds: float) -> float:
    """Single-threaded rate of ``op`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(200):
        op()
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(200):
            op()
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def execute_rates(presented: list[dict], loads: dict[str, Workload], seconds: float) -> dict[str, float]:
    """Diagnostic: the appliance's own command processing (``execute``: parse, keys from under the
    LMK, psec) in this process, no network, with the same LMK formed from the same cards."""
    from hsmcloud.appliances.payshield import cards
    from hsmcloud.appliances.payshield.domain import HostSettings, SecurityDomain
    from hsmcloud.appliances.payshield.host_commands import execute
    from hsmcloud.appliances.payshield.lmk import lmk_from_components

    components = [cards.unlock_card(c["card"], c["pin"]).variant for c in presented]
    domain = SecurityDomain(lmk_slots=1, lmks={0: lmk_from_components("variant", components, "00")})
    settings = HostSettings(header_length=len(HEADER))
    rates = {}
    for command, load in loads.items():
        bodies = [(req[2:], exp) for req, exp in load.requests]
        for body, expected in bodies[:4]:
            assert execute(body, domain, settings).response == expected, command

        def op(state=[0], bodies=bodies) -> None:  # noqa: B006
            execute(bodies[state[0] % len(bodies)][0], domain, settings)
            state[0] += 1

        rates[command] = ops_per_second(op, seconds)
    return rates


# -- the load generator ------------------------------------------------------------------------


@dataclass
class Cell:
    command: str
    connections: int
    calls: int
    seconds: float
    latencies: list[float]
    failures: int  # error code other than 00, or a lost connection
    wrong: int  # 00 but not the answer psec gives
    server_cpu: float | None  # appliance process, share of one core
    client_cpu: float  # this process (the load generator)
    other_cpu: float | None  # every other process on the machine: noise

    @property
    def cps(self) -> float:
        return self.calls / self.seconds

    def quantile(self, q: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q * 100) - 1]


async def drive(conns: list[HostConnection], requests: list[tuple[bytes, bytes]], seconds: float,
                latencies: list[float] | None) -> tuple[int, int, int, float]:
    """Every connection sends one request at a time until ``seconds`` have passed."""
    clock = time.perf_counter
    error_offset = len(HEADER) + 2
    calls = failures = wrong = 0

    async def worker(conn: HostConnection, index: int) -> None:
        nonlocal calls, failures, wrong
        n = len(requests)
        while True:
            request, expected = requests[index % n]
            index += 1
            t0 = clock()
            if t0 >= deadline:
                return
            try:
                response = await conn.call(request)
            except ConnectionError:
                failures += 1
                return
            if latencies is not None:
                latencies.append(clock() - t0)
            calls += 1
            if response != expected:
                if response[error_offset: error_offset + 2] != b"00":
                    failures += 1
                else:
                    wrong += 1

    start = clock()
    deadline = start + seconds
    await asyncio.gather(*(worker(c, i * 37) for i, c in enumerate(conns)))
    return calls, failures, wrong, clock() - start


async def measure(ports: dict, command: str, requests: list[tuple[bytes, bytes]], connections: int, seconds: float,
                  child: Child) -> Cell:
    # Connections alternate between HOST1 and HOST2 (one connection: HOST1).
    conns = await asyncio.gather(*(HostConnection.open(ports["host1" if i % 2 == 0 else "host2"])
                                   for i in range(connections)))
    try:
        await drive(conns, requests, min(0.4, seconds / 4), None)  # warm-up, not counted
        latencies: list[float] = []
        cpu0, pcpu0, mcpu0 = child.cpu_seconds(), time.process_time(), machine_cpu_seconds()
        calls, failures, wrong, elapsed = await drive(conns, requests, seconds, latencies)
        cpu1, pcpu1, mcpu1 = child.cpu_seconds(), time.process_time(), machine_cpu_seconds()
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0.05)
    server_cpu = (cpu1 - cpu0) / elapsed if cpu0 is not None and cpu1 is not None else None
    client_cpu = (pcpu1 - pcpu0) / elapsed
    other_cpu = None
    if server_cpu is not None and mcpu0 is not None and mcpu1 is not None:
        other_cpu = max(0.0, (mcpu1 - mcpu0) / elapsed - server_cpu - client_cpu)
    return Cell(command, connections, calls, elapsed, latencies, failures, wrong, server_cpu, client_cpu, other_cpu)


# -- main --------------------------------------------------------------------------------------


def licence_check(ports: dict, provider_token: str, loads: dict[str, Workload], seconds: float,
                  cps: int) -> tuple[int, float, int]:
    """CW over 64 connections with the licence limit switched on again at ``cps``: (calls answered,
    seconds, failures). The bucket starts full (one second's burst), so at most ``cps`` + ``cps`` per
    second may be answered; (calls - cps) / seconds is the sustained rate."""
    import httpx

    async def run() -> tuple[int, float, int]:
        conns = await asyncio.gather(*(HostConnection.open(ports["host1" if i % 2 == 0 else "host2"])
                                       for i in range(64)))
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{ports['mgmt']}", timeout=30,
                              headers={"Authorization": f"Bearer {provider_token}"}) as p:
                p.put("/provider/licence", json={"cps_limit_lifted": False, "cps": cps}).raise_for_status()
            await asyncio.sleep(1.2)  # the bucket fills up to its one-second burst (it never holds more)
            calls, failures, wrong, elapsed = await drive(conns, loads["CW"].requests, seconds, None)
        finally:
            for c in conns:
                c.close()
        return calls, elapsed, failures + wrong

    return asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.5, help="measured seconds per (command, connections) cell")
    ap.add_argument("--connections", default="1,8,64", help="comma-separated connection counts")
    ap.add_argument("--reference-seconds", type=float, default=1.5)
    ap.add_argument("--workers", type=int, default=None,
                    help="host worker processes of the appliance (default: one per core; 0: in its event loop)")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated commands to measure")
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the appliance process to FILE "
                                                      "(with --workers 0 it covers the host-command path)")
    ap.add_argument("--serve", metavar="STATE_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(Path(args.serve))
    counts = [int(c) for c in args.connections.split(",")]
    wanted = [c for c in args.commands.split(",") if c]
    started = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="hsmcloud-psbench-"))
    provider_token = secrets.token_urlsafe(24)
    cells: list[Cell] = []
    notes: list[str] = []
    licence_runs: list[tuple[int, int, float, int]] = []
    try:
        child = Child(work / "appliance", provider_token, args.workers, args.profile)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        keys, presented = set_up(child.ports, provider_token, work)
        loads = workloads(keys)
        # A command this appliance does not implement answers ZZ: skip it, say so.
        for command in wanted:
            load = loads.get(command)
            if load is None:
                notes.append(f"{command}: skipped (the appliance or this checkout lacks what it needs: "
                             f"{'EI key generation' if command == 'EW' else 'the command or its set-up'})")
                continue
            probe = asyncio.run(host_call(child.ports["host1"], load.requests[0][0][2 + len(HEADER):]))
            if probe[len(HEADER):len(HEADER) + 2] == b"ZZ":
                notes.append(f"{command}: skipped (the appliance does not implement it: ZZ)")
                loads.pop(command)
        loads = {c: loads[c] for c in wanted if c in loads}
        if "EW" in loads:
            ew_expectations(child.ports, loads["EW"])
        reference = {c: ops_per_second(loads[c].reference, args.reference_seconds) for c in loads}
        in_process = execute_rates(presented, loads, args.reference_seconds / 2)

        async def run_all() -> None:
            for command in loads:
                for n in counts:
                    cells.append(await measure(child.ports, command, loads[command].requests, n, args.seconds, child))

        asyncio.run(run_all())
        # The reference again after the network cells (the appliance idle): the better of the two
        # counts, so a disturbance of the machine during one of them does not flatter the ratios.
        for c in loads:
            reference[c] = max(reference[c], ops_per_second(loads[c].reference, args.reference_seconds))
        if "CW" in loads:
            licence_runs = [(cps, *licence_check(child.ports, provider_token, loads, max(args.seconds, 5.0), cps))
                            for cps in (TOP_LICENCE_CPS, 250)]
    finally:
        rc = child.stop()
        shutil.rmtree(work, ignore_errors=True)  # card files, sealed LMK, state
    if rc != 0:
        print(f"warning: the appliance exited with {rc}: {child.stderr_text}", file=sys.stderr)

    workers = len(child.ports.get("pids", []))
    print(f"hsmcloud payShield host-command benchmark (variant LMK, licence lifted, {args.seconds:g} s per cell, "
          f"connections split over HOST1/HOST2, {workers or 'no'} host worker process(es); {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]})")
    for note in notes:
        print("note:", note)
    print("reference, the same operation in-process, 1 thread, best of 2: "
          + ", ".join(f"{c} {reference[c]:,.0f} ops/s" for c in loads))
    print("diagnostic, the appliance's execute() in-process, no network: "
          + ", ".join(f"{c} {in_process[c]:,.0f} ops/s" for c in loads))
    head = (f"{'cmd':3} {'conns':>5} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'calls':>7} {'fail':>4} "
            f"{'wrong':>5} {'/inproc':>7} {'/2500':>6} {'srv CPU':>7} {'cli CPU':>7} {'other':>6}")
    print(head)
    failed = 0
    for cell in cells:
        srv = f"{cell.server_cpu * 100:.0f}%" if cell.server_cpu is not None else "-"
        other = f"{cell.other_cpu * 100:.0f}%" if cell.other_cpu is not None else "-"
        print(f"{cell.command:3} {cell.connections:>5} {cell.cps:>8,.0f} {cell.quantile(0.5) * 1000:>7.2f} "
              f"{cell.quantile(0.99) * 1000:>7.2f} {cell.calls:>7} {cell.failures:>4} {cell.wrong:>5} "
              f"{cell.cps / reference[cell.command]:>7.3f} {cell.cps / TOP_LICENCE_CPS:>6.2f} {srv:>7} "
              f"{cell.client_cpu * 100:>6.0f}% {other:>6}")
        failed += cell.failures + cell.wrong
    for cps, calls, elapsed, bad in licence_runs:
        sustained = (calls - cps) / elapsed
        print(f"licence on again at {cps} cps, CW over 64 connections for {elapsed:.1f} s: {calls} calls answered "
              f"(allowed: {cps} burst + {cps}/s = {cps + cps * elapsed:,.0f}); sustained (calls - burst) / s = "
              f"{sustained:,.1f} = {sustained / cps:.3f} of the licence; {bad} failed")
        failed += bad
    print(f"total {time.perf_counter() - started:.0f} s; appliance stopped with exit code {rc}")
    return 1 if failed or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
