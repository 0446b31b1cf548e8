"""A real third-party payShield client, unchanged: PayShieldPressureTest (PyPI
``payshield-pressure-test`` 1.5.4.5, by Marco S. Zuppone, tested by its author on a payShield
10K) drives the appliance over HOST1 (TCP) and HOST2 (mutual TLS with a client certificate the
tenant trusts), and its own decoders' output is checked against independently computed values.

It needs Python >= 3.13 (tests/payshield_client.py installs it into a virtualenv of its own);
without one the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from cryptography.x509.oid import NameOID

from hsmcloud.appliances.payshield.host_commands import COMMANDS

import payshield_oracle as o
from payshield_helpers import allocate, authorize, config, load_lmk, running, tenant

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import payshield_client  # noqa: E402  (tests/payshield_client.py)

HEALTH = ("j2", "j4", "j8", "jk", "ni")


@pytest.fixture(scope="module")
def client_exe() -> Path:
    try:
        return payshield_client.ensure_installed()
    except payshield_client.ClientUnavailable as exc:
        pytest.skip(str(exc))


def client_identity(directory: Path) -> tuple[Path, Path, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pressure-test client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = directory / "client.crt", directory / "client.key"
    cert_file.write_text(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_file, 0o600)
    return cert_file, key_file, pem


async def run_client(exe: Path, home: Path, address: str, port: int, *args: str) -> str:
    """One run of the client's command line; returns what it printed."""
    process = await asyncio.create_subprocess_exec(
        str(exe), address, "--port", str(port), "--times", "2", "--decode", "--no-upd-check", *args,
        cwd=home, env={"HOME": str(home), "PATH": os.environ.get("PATH", "")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode(errors="replace")
    assert process.returncode == 0, text[-2000:]
    return text


def return_codes(output: str) -> list[str]:
    return re.findall(r"^Return code: (\S+)", output, re.M)


def printed(output: str, label: str) -> str:
    found = re.findall(rf"^{re.escape(label)}\s*(\S*)", output, re.M)
    assert found, (label, output[-1500:])
    return found[-1]


def test_payshield_pressure_test_drives_the_appliance_unchanged(tmp_path, client_exe):
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    keyblock_key = os.urandom(32)
    cert_file, key_file, cert_pem = client_identity(home)
    echo = "hsmcloud echo " + os.urandom(4).hex()

    async def scenario():
        async with running(config(tmp_path)) as appliance:
            await allocate(appliance)
            await load_lmk(appliance, keyblock_key, scheme="keyblock", slot=0)  # --pingen needs one
            await authorize(appliance, 0)  # EI (--key)
            async with tenant(appliance) as api:
                assert (await api.post("/host-tls/trusted", json={"certificate": cert_pem})).status_code == 200
                assert (await api.put("/host-tls", json={"host2": "mutual"})).status_code == 200
            h1 = (appliance.config.address, appliance.host1_port)
            h2 = (appliance.host2_address, appliance.host2_port)

            async def run(*args: str, port=h1) -> str:
                return await run_client(client_exe, home, port[0], port[1], *args)

            out = await run("--nc")
            assert return_codes(out) == ["00", "00"], out[-1500:]
            assert printed(out, "LMK CRC:") == o.keyblock_lmk_check_value(keyblock_key)
            assert printed(out, "Firmware number:") == o.FIRMWARE_NUMBER

            out = await run("--nc", "--proto", "tls", "--crtfile", str(cert_file), "--keyfile", str(key_file), port=h2)
            assert return_codes(out) == ["00", "00"], out[-1500:]
            assert printed(out, "LMK CRC:") == o.keyblock_lmk_check_value(keyblock_key)

            for flag in ("--no", "--pci", "--randgen"):
                out = await run(flag)
                assert return_codes(out) == ["00", "00"], (flag, out[-1500:])
            assert o.FIRMWARE_NUMBER in (await run("--no"))

            out = await run("--b2", "--echo", echo)
            assert return_codes(out) == ["00", "00"] and echo in out.split("received data (ASCII):")[-1], out[-1500:]

            out = await run("--pingen")  # JA1234567890128;05: the whole PAN, a 5-digit PIN
            assert return_codes(out) == ["00", "00"], out[-1500:]
            pin = o.pin_from_keyblock_lmk(printed(out, "Pin under the LMK:")[:32], "123456789012", keyblock_key)
            assert len(pin) == 5 and pin.isdigit()

            for curve, name in (("0", "secp256r1"), ("2", "secp521r1")):
                out = await run("--ecc", "--ecc-curve", curve)
                assert return_codes(out) == ["00", "00"], out[-1500:]
                public = load_der_public_key(bytes.fromhex(printed(out, "ECC Public Key")))
                assert public.curve.name == name

            out = await run("--key", "1024")  # EI2102401#0000: RSA pair under the key-block LMK
            assert return_codes(out) == ["00", "00"], out[-1500:]

            for flag in HEALTH:  # the health and utilisation commands, once the appliance has them
                if flag.upper() in COMMANDS:
                    out = await run("--" + flag)
                    assert return_codes(out) == ["00", "00"], (flag, out[-1500:])

    asyncio.run(asyncio.wait_for(scenario(), 240))
