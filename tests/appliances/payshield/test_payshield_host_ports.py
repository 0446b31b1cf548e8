"""Raw-frame clients on HOST1 and HOST2: framing, malformed input, isolation, error log."""

from __future__ import annotations

import asyncio
import ssl

from payshield_helpers import (
    HEADER,
    HostClient,
    allocate,
    config,
    error,
    guarded,
    host,
    load_lmk,
    management,
    ok,
    running,
    tenant,
)

CVK = b"U9B4934384B19946B040CD702B4D58145"  # under the Thales test LMK (ThalesSim vector)
CW = b"CW" + CVK + b"4123456789012345;8701101"


async def ready(appliance) -> None:
    await allocate(appliance)
    await load_lmk(appliance)


def test_framing_header_echo_response_code_and_trailer(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            client = await host(appliance, 2)
            assert await client.call(b"B20005hello") == b"B300hello"
            assert await client.call(b"B20003abc\x19TRAILER") == b"B300abc\x19TRAILER"
            assert await client.call(b"NO00") == b"NP00" + b"3" + b"1" + b"0064" + b"1500-1803" + b"00000"
            assert await client.call(b"NO01") == b"NP001"
            # Unknown command: response code ZZ, error 00 (as the reference simulators answer).
            assert await client.call(b"XX1234") == b"ZZ00"
            # Any header is echoed back.
            assert (await client.call(b"NC", header=b"9999"))[:4] == b"ND00"
            await client.close()

    guarded(scenario())


def test_malformed_fields_get_error_codes(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            client = await host(appliance)
            assert error(await client.call(b"CWU9B49"), b"CW") == "15"  # truncated key
            assert error(await client.call(b"CWUZZ4934384B19946B040CD702B4D58145" + b"4123456789012345;8701101"), b"CW") == "15"
            assert error(await client.call(b"CW" + CVK + b"4123456789012345"), b"CW") == "15"  # no ';'
            assert error(await client.call(b"A00ZZZU"), b"A0") == "04"  # bad key type
            assert error(await client.call(b"A00001Q"), b"A0") == "26"  # bad key scheme
            assert error(await client.call(b"B2000Aab"), b"B2") == "80"
            assert error(await client.call(b"NO07"), b"NO") == "15"
            assert error(await client.call(b"NC%01"), b"NC") == "13"  # no LMK in slot 01
            assert error(await client.call(b"NC%XY"), b"NC") == "15"
            # Key parity: flip the last hex digit of a valid key.
            assert error(await client.call(b"CW" + CVK[:-1] + b"4" + b"4123456789012345;8701101"), b"CW") == "10"
            assert ok(await client.call(CW), b"CW") == "561"  # the connection still works
            await client.close()

    guarded(scenario())


def test_no_lmk_gives_error_13(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            client = await host(appliance)
            assert error(await client.call(b"NC"), b"NC") == "13"
            assert error(await client.call(CW), b"CW") == "13"
            await client.close()

    guarded(scenario())


def test_malformed_frames_close_only_their_own_connection(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            good1, good2 = await host(appliance, 1), await host(appliance, 2)
            for frame in (
                b"\x00\x00",  # zero length
                b"\xff\xff" + b"x" * 10,  # beyond the 32K buffer
                b"\x00\x03HEA",  # shorter than header + command
                b"\x00",  # half a length prefix, then EOF
            ):
                bad = await host(appliance, 1)
                await bad.send_raw(frame)
                if frame == b"\x00":
                    bad.writer.write_eof()
                assert await bad.reader.read() == b""  # closed by the appliance, no reply
                await bad.close()
                assert ok(await good1.call(CW), b"CW") == "561"
                assert ok(await good2.call(b"NC"), b"NC")
            # A client that sends half a message and vanishes.
            gone = await host(appliance, 2)
            await gone.send_raw(b"\x00\x20HEADCW")
            await gone.close()
            assert ok(await good2.call(CW), b"CW") == "561"
            await good1.close()
            await good2.close()
            async with tenant(appliance) as client:
                errors = (await client.get("/logs/error")).json()["entries"]
            framing = [e for e in errors if e["error_code"] == "framing"]
            assert len(framing) >= 4 and {e["source"] for e in framing} == {"HOST1", "HOST2"}

    guarded(scenario())


def test_many_connections_on_both_ports_while_a_client_misbehaves(tmp_path):
    async def worker(appliance, which: int, rounds: int) -> list[str]:
        client = await host(appliance, which)
        results = [ok(await client.call(CW), b"CW") for _ in range(rounds)]
        await client.close()
        return results

    async def vandal(appliance) -> None:
        for _ in range(10):
            client = await host(appliance, 1)
            assert error(await client.call(b"CW" + CVK[:10]), b"CW") == "15"
            await client.send_raw(b"\x00\x00")
            await client.reader.read()
            await client.close()

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            results = await asyncio.gather(
                *(worker(appliance, 1 + i % 2, 10) for i in range(16)), vandal(appliance)
            )
            for result in results[:-1]:
                assert result == ["561"] * 10

    guarded(scenario())


def test_failed_host_commands_are_in_the_error_log(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            client = await host(appliance, 2)
            await client.call(b"CY" + CVK + b"000" + b"4123456789012345;8701101")
            await client.call(b"A4" + b"2000U")
            await client.close()
            async with tenant(appliance) as api:
                text = (await api.get("/logs/error", params={"format": "jsonl"})).text
            import json

            entries = [json.loads(line) for line in text.splitlines()]
            assert [(e["command"], e["error_code"], e["source"]) for e in entries] == [
                ("CY", "01", "HOST2"),
                ("A4", "15", "HOST2"),
            ]
            assert "1234" not in text  # no PAN or key material in the error log

    guarded(scenario())


def test_settings_header_length_disabled_commands_and_tls(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await ready(appliance)
            async with tenant(appliance) as api:
                response = await api.put("/settings", json={"header_length": 0, "disabled_commands": ["CW"]})
                assert response.status_code == 200, response.text
            client = await host(appliance)
            assert await client.call(b"NO01", header=b"") == b"NP001"
            assert error(await client.call(CW, header=b""), b"CW") == "68"
            await client.close()
            async with tenant(appliance) as api:
                settings = (await api.put("/settings", json={"host_tls": True, "disabled_commands": []})).json()
            context = ssl.create_default_context(cadata=settings["host_tls_certificate"])
            context.check_hostname = False
            from payshield_helpers import HostClient

            secure = await HostClient.connect(appliance.config.address, appliance.host1_port, ssl=context)
            assert ok(await secure.call(CW, header=b""), b"CW") == "561"
            await secure.close()
            async with management(appliance) as provider:
                assert (await provider.get("/health")).json()["links"] == {"host1": "up", "host2": "up", "mgmt": "up"}

    guarded(scenario())
