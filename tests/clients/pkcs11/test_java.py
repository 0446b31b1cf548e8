"""Java's SunPKCS11 provider loads the library unchanged: keytool lists and generates keys in the
appliance, jarsigner signs a jar with an appliance key (and `jarsigner -verify` passes, and fails
on a tampered jar), and a small Java program (HsmJavaCheck.java, compiled here with javac)
generates RSA and EC key pairs with KeyPairGenerator, signs from 8 threads, verifies with Java's
default providers, runs AES-256-GCM through the appliance, agrees an ECDH secret with a SunEC
peer and computes HMAC-SHA256 as SunJCE does; its signature and ciphertext are
checked again here with `cryptography`.

Marked `java` (10-35 s of JVM start-ups and key generation, by load): `.ci/run` runs them with
`-m java`. Debian: default-jdk-headless (javac, keytool, jarsigner); a test skips, naming the
package, when a tool is missing.
"""
from __future__ import annotations

import base64
import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import CO_PIN, HERE, library_env, run, start_appliance

pytestmark = pytest.mark.java


def jdk_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install default-jdk-headless)")
    return path


def sunpkcs11_config(directory: Path) -> Path:
    """The provider configuration an application writes (docs/pkcs11-library.md)."""
    cfg = directory / "hsmcloud-java.cfg"
    cfg.write_text(f"name = hsmcloud\nlibrary = {module_path()}\nslot = 0\n"
                   # ECDH: derive-capable EC keys, and the agreed secret readable by the provider
                   "attributes(generate, CKO_PRIVATE_KEY, CKK_EC) = {\n  CKA_DERIVE = true\n}\n"
                   "attributes(generate, CKO_SECRET_KEY, CKK_GENERIC_SECRET) = {\n"
                   "  CKA_SENSITIVE = false\n  CKA_EXTRACTABLE = true\n}\n")
    return cfg


@pytest.fixture(scope="module")
def java_appliance(tmp_path_factory):
    jdk_tool("java")
    directory = tmp_path_factory.mktemp("java")
    appliance = start_appliance(directory, partitions=[("app1", True)])
    try:
        yield appliance, sunpkcs11_config(directory), directory
    finally:
        appliance.stop()


def keystore_args(cfg: Path) -> list[str]:
    return ["-storetype", "PKCS11", "-providerClass", "sun.security.pkcs11.SunPKCS11", "-providerArg", str(cfg),
            "-storepass", CO_PIN]


def test_keytool_generates_and_lists_keys_and_jarsigner_signs_with_an_appliance_key(java_appliance):
    appliance, cfg, directory = java_appliance
    keytool, jarsigner, jar = jdk_tool("keytool"), jdk_tool("jarsigner"), jdk_tool("jar")
    log = directory / "keytool-p11.log"
    env = library_env(conf=appliance.conf, log=log)

    empty = run([keytool, "-list", *keystore_args(cfg)], env)
    assert empty.returncode == 0, empty.stdout + empty.stderr
    assert "Keystore provider: SunPKCS11-hsmcloud" in empty.stdout
    assert "Your keystore contains 0 entries" in empty.stdout

    for alias, key in (("codesign-rsa", ["-keyalg", "RSA", "-keysize", "2048"]),
                       ("codesign-ec", ["-keyalg", "EC", "-groupname", "secp256r1"])):
        made = run([keytool, "-genkeypair", *keystore_args(cfg), "-alias", alias, *key,
                    "-dname", f"CN={alias}", "-validity", "30"], env)
        assert made.returncode == 0, made.stdout + made.stderr
    listed = run([keytool, "-list", *keystore_args(cfg)], env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "Your keystore contains 2 entries" in listed.stdout
    assert "codesign-rsa, PrivateKeyEntry" in listed.stdout and "codesign-ec, PrivateKeyEntry" in listed.stdout

    (directory / "hello.txt").write_text("hello from a jar\n")
    unsigned, signed = directory / "app.jar", directory / "app-signed.jar"
    packed = run([jar, "cf", unsigned, "-C", directory, "hello.txt"], env)
    assert packed.returncode == 0, packed.stderr
    signing = run([jarsigner, "-keystore", "NONE", *keystore_args(cfg), "-signedjar", signed, unsigned,
                   "codesign-rsa"], env)
    assert signing.returncode == 0 and "jar signed." in signing.stdout, signing.stdout + signing.stderr
    verified = run([jarsigner, "-verify", signed], library_env())
    assert verified.returncode == 0 and "jar verified." in verified.stdout, verified.stdout + verified.stderr
    with zipfile.ZipFile(signed) as z:
        names = z.namelist()
        assert "META-INF/CODESIGN.RSA" in names  # the PKCS#7 signature block by the appliance key

    # the same jar with its content changed no longer verifies
    tampered = directory / "app-tampered.jar"
    with zipfile.ZipFile(signed) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, b"hello from someone else\n" if name == "hello.txt" else data)
    refused = run([jarsigner, "-verify", tampered], library_env())
    assert "jar verified." not in refused.stdout
    assert "digest error" in refused.stdout + refused.stderr

    # nothing the provider asked for got an unexpected error code
    errors = [line for line in log.read_text().splitlines() if " -> 0x" in line]
    assert errors == [], errors


def test_java_program_generates_signs_from_8_threads_and_runs_aes_gcm(java_appliance, tmp_path):
    appliance, cfg, _ = java_appliance
    javac, java = jdk_tool("javac"), jdk_tool("java")
    compiled = run([javac, "-d", tmp_path, HERE / "HsmJavaCheck.java"], library_env())
    assert compiled.returncode == 0, compiled.stderr
    log = tmp_path / "java-p11.log"
    ran = run([java, "-cp", tmp_path, "HsmJavaCheck", cfg, CO_PIN], library_env(conf=appliance.conf, log=log))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = dict(line.split(": ", 1) for line in ran.stdout.splitlines() if ": " in line)
    assert out["provider"] == "SunPKCS11-hsmcloud"
    assert out["ecdh"] == "agreed" and out["hmac"] == "equal"
    assert out["rsa-verified"] == "48" and out["ec-verified"] == "48"  # 8 threads x 6 each
    assert ran.stdout.rstrip().endswith("all checks passed")

    # the appliance's signature and ciphertext, checked outside Java
    rsa_public = serialization.load_der_public_key(base64.b64decode(out["rsa-public"]))
    assert rsa_public.key_size == 2048
    rsa_public.verify(base64.b64decode(out["rsa-signature"]), b"signed by the appliance", padding.PKCS1v15(),
                      hashes.SHA256())
    ec_public = serialization.load_der_public_key(base64.b64decode(out["ec-public"]))
    assert isinstance(ec_public, ec.EllipticCurvePublicKey) and ec_public.curve.name == "secp256r1"
    plaintext = AESGCM(bytes.fromhex(out["gcm-key"])).decrypt(
        bytes.fromhex(out["gcm-iv"]), base64.b64decode(out["gcm-ciphertext"]), bytes.fromhex(out["gcm-aad"]))
    assert hashlib.sha256(plaintext).hexdigest() == out["gcm-plaintext-sha256"] and len(plaintext) == 4096

    # the only errors are the ones SunPKCS11 provokes on purpose: the tampered tag
    # (CKR_ENCRYPTED_DATA_INVALID) and its way of cancelling a decryption (C_Decrypt of nothing:
    # CKR_ENCRYPTED_DATA_LEN_RANGE, which ends the operation)
    errors = {line.split(" ", 3)[3] for line in log.read_text().splitlines() if " -> 0x" in line}
    assert errors <= {"C_Decrypt -> 0x40", "C_Decrypt -> 0x41"}, errors
    assert "C_Decrypt -> 0x40" in errors
