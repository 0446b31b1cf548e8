"""HOST1 and HOST2 served by several processes: both answer from more than one, the counters the
health commands report add up over all of them, management changes reach every one before the
call returns, and the licence's calls per second hold for the device as a whole.

No test asserts how long anything took: the licence is checked by counting the calls a shared
bucket let through at a frozen time, and the processes by their own counters.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

from payshield_helpers import SERIAL, allocate, config, error, guarded, host, load_lmk, ok, running, tenant

from hsmcloud.appliances.payshield.host_shared import SharedHostState
from hsmcloud.appliances.payshield.product import FIRMWARE_NUMBER, firmware_number

CONNECTIONS_PER_PORT = 16
CALLS = 3


async def spread(appliance, message: bytes, per_port: int = CONNECTIONS_PER_PORT) -> list[bytes]:
    """``message`` once on each of ``per_port`` new connections to each host port."""
    clients = [await host(appliance, which) for which in (1, 2) for _ in range(per_port)]
    try:
        return list(await asyncio.gather(*(client.call(message) for client in clients)))
    finally:
        for client in clients:
            await client.close()


def fields(data: str, *widths: int) -> list[str]:
    out, at = [], 0
    for width in widths:
        out.append(data[at : at + width])
        at += width
    return out + [data[at:]]


def test_both_host_ports_answer_from_several_processes_and_the_counters_add_up(tmp_path):
    async def scenario():
        async with running(config(tmp_path, host_workers=2)) as appliance:
            pids = appliance.host_worker_pids
            assert len(set(pids)) == 2 and os.getpid() not in pids
            await allocate(appliance)
            check_value = (await load_lmk(appliance))["check_value"]
            clients = [await host(appliance, which) for which in (1, 2) for _ in range(CONNECTIONS_PER_PORT)]
            for _ in range(CALLS):
                answers = await asyncio.gather(*(client.call(b"NC") for client in clients))
                assert all(ok(answer, b"NC") == check_value + FIRMWARE_NUMBER for answer in answers)
            for client in clients:
                await client.close()
            per_worker = appliance.host_statistics()["per_worker"]
            for port in ("HOST1", "HOST2"):
                # The kernel spread the connections over both processes' sockets.
                assert sum(per_worker[port]) == CONNECTIONS_PER_PORT * CALLS
                assert all(n > 0 for n in per_worker[port]), per_worker
            # J4 answers with what every process counted, whichever process answers it.
            client = await host(appliance, 2)
            j4 = ok(await client.call(b"J4"), b"J4")
            serial, start, end, current, seconds, volumes = fields(j4, 12, 12, 12, 12, 10)
            assert serial == SERIAL.ljust(12) and end == current and int(seconds) >= 0
            assert volumes == f"NC{2 * CONNECTIONS_PER_PORT * CALLS:012d}"
            assert (await client.call(b"J4XX"))[:4] == b"J515"  # no fields of its own
            await client.close()

    guarded(scenario())


def test_every_process_sees_a_management_change_before_the_call_returns(tmp_path):
    async def scenario():
        async with running(config(tmp_path, host_workers=2)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            before = await spread(appliance, b"JK")
            async with tenant(appliance) as api:
                assert (await api.post("/authorize", json={"slot": 0})).status_code == 200
            after = await spread(appliance, b"JK")
            async with tenant(appliance) as api:
                assert (await api.post("/firmware", json={"version": "1.4a 1.9.0"})).status_code == 200
            patched = await spread(appliance, b"NC")
            assert {ok(answer, b"NC")[16:] for answer in patched} == {firmware_number("1.4a 1.9.0")}
            async with tenant(appliance) as api:
                disabled = await api.put("/settings", json={"disabled_commands": ["NC"]})
                assert disabled.status_code == 200
            refused = await spread(appliance, b"NC")
            for answers, authorised in ((before, "0"), (after, "1")):
                for answer in answers:
                    jk = ok(answer, b"JK")
                    (serial, _, console, manager, host1, host2, _, tamper, loaded, test, old,
                     rest) = fields(jk, 12, 12, 1, 1, 1, 1, 2, 1, 2, 2, 2)
                    assert (serial, console, manager, host1, host2, tamper) == (SERIAL.ljust(12), "2", "1", "1",
                                                                                "1", "1")
                    assert (loaded, test, old) == ("01", "00", "00")
                    # LMK 00: authorised or not, 00 activities, variant, 3DES, live; then the end mark.
                    assert rest == f"00{authorised}00V0L\x1500"
            assert all(error(answer, b"NC") == "68" for answer in refused)

    guarded(scenario())


def test_network_information_and_loading_report_the_connections_and_the_time(tmp_path):
    async def scenario():
        async with running(config(tmp_path, host_workers=2)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            others = [await host(appliance, which) for which in (1, 2, 2)]
            for other in others:
                assert ok(await other.call(b"NC"), b"NC")
            client = await host(appliance, 1)
            ni = ok(await client.call(b"NIH1"), b"NI")
            count = int(ni[:4])
            records = [ni[4 + i * 51 : 4 + (i + 1) * 51] for i in range(count)]
            statistics = ni[4 + count * 51 :]
            assert count == 2 + 4  # two listening ports, the three others and this connection
            listening = sorted(int(r[3:8]) for r in records if r[28:39].strip() == "LISTENING")
            assert listening == sorted([appliance.host1_port, appliance.host2_port])
            established = [r for r in records if r[28:39] == "ESTABLISHED"]
            local_ports = sorted(int(r[3:8]) for r in established)
            assert local_ports == sorted([appliance.host1_port] * 2 + [appliance.host2_port] * 2)
            assert {r[8:23].strip() for r in established} == {"127.0.0.1"}
            frames_in, frames_out, bytes_in, bytes_out, connections, rest = fields(statistics, 10, 10, 12, 12, 10)
            assert (int(frames_in), int(frames_out), int(connections), rest) == (3, 3, 4, "")
            assert int(bytes_in) == 3 * 8 and int(bytes_out) > int(bytes_in)
            management = ok(await client.call(b"NIM0"), b"NI")
            assert management[:4] == "0001" and int(management[7:12]) == appliance.mgmt_port
            assert error(await client.call(b"NIX0"), b"NI") == "81"
            assert error(await client.call(b"NIH2"), b"NI") == "82"
            assert error(await client.call(b"NIH"), b"NI") == "15"
            # J2: ten utilisation bands of one-second samples (the appliance samples every second).
            while True:
                j2 = ok(await client.call(b"J2"), b"J2")
                bands = fields(j2, 12, 12, 12, 12, 10)[-1]
                assert len(bands) == 10 * 17 and bands[:6] == "000010" and bands[-17:-11] == "090100"
                if sum(int(bands[i * 17 + 6 : i * 17 + 16]) for i in range(10)) >= 1:
                    break
                await asyncio.sleep(0.2)
            j8 = ok(await client.call(b"J8"), b"J8")
            reboots, tampers, per_minute, per_hour, attacks, rest = fields(fields(j8, 12, 12, 12, 12, 10)[-1],
                                                                          10, 10, 7, 5, 8)
            assert (int(reboots), int(tampers), int(per_minute), int(per_hour), int(attacks), rest) == (1, 0, 0, 0, 0, "")
            for other in others + [client]:
                await other.close()

    guarded(scenario())


def _taker(shared: SharedHostState, orders) -> None:  # noqa: ANN001
    """A process that takes tokens when told: (frozen time, calls) -> how many needed no wait."""
    while (order := orders.recv()) is not None:
        now, calls = order
        orders.send(sum(1 for _ in range(calls) if shared.take_token(now) == 0.0))


def test_the_licence_holds_for_the_device_across_processes():
    """Two processes take tokens from the shared bucket at a frozen time: exactly one second's
    worth of calls goes through at once, whatever the split; the rest must wait."""
    ctx = multiprocessing.get_context("forkserver")
    shared = SharedHostState(workers=2, commands=("NC",), rate=60)
    shared.reset_bucket(1000.0)
    pipes = [ctx.Pipe() for _ in range(2)]
    takers = [ctx.Process(target=_taker, args=(shared, child)) for _, child in pipes]
    for taker in takers:
        taker.start()

    def burst(now: float, calls: int) -> int:
        for mine, _ in pipes:
            mine.send((now, calls))
        return sum(mine.recv() for mine, _ in pipes)

    try:
        assert burst(1000.0, 100) == 60  # accepted; 140 of 200 were told to wait
        assert burst(1000.0, 50) == 0  # the same instant: nothing left
        # Ten seconds on, the bucket holds one second's calls again (not more: the burst is capped).
        assert burst(1010.0, 100) == 60
        shared.rate = 250  # another licence installed: the bucket refills at its rate, up to its burst
        assert burst(1012.0, 200) == 250
        shared.lifted = True
        assert burst(1012.0, 200) == 400
    finally:
        for mine, _ in pipes:
            mine.send(None)
        for taker in takers:
            taker.join(20)


def test_a_host_worker_that_dies_leaves_the_others_serving(tmp_path):
    async def scenario():
        async with running(config(tmp_path, host_workers=2)) as appliance:
            await allocate(appliance)
            check_value = (await load_lmk(appliance))["check_value"]
            victim, survivor = appliance.host_worker_pids
            os.kill(victim, signal.SIGKILL)
            while appliance.health()["host_workers"] != 1:
                await asyncio.sleep(0.02)
            assert appliance.host_worker_pids == [survivor]
            # The kernel routes new connections to the sockets still open: the survivor's.
            answers = await spread(appliance, b"NC", per_port=4)
            assert all(ok(answer, b"NC") == check_value + FIRMWARE_NUMBER for answer in answers)
            async with tenant(appliance) as api:
                entries = (await api.get("/logs/error")).json()["entries"]
            [gone] = [e for e in entries if e["error_code"] == "worker"]
            assert "host worker" in gone["message"] and "the other workers go on serving" in gone["message"]

    guarded(scenario())


def test_pipelined_frames_are_answered_in_order(tmp_path):
    """A client that sends many frames at once gets every answer, in order, on its connection."""
    async def scenario():
        async with running(config(tmp_path, host_workers=2)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance)
            client = await host(appliance, 1)
            frames = b"".join(len(body).to_bytes(2, "big") + body
                              for body in (b"HEAD" + b"B2" + f"{4:04X}".encode() + f"{i:04d}".encode()
                                           for i in range(1000)))
            await client.send_raw(frames)
            for i in range(1000):
                assert await client.receive() == b"HEADB300" + f"{i:04d}".encode()
            await client.close()

    guarded(scenario())
