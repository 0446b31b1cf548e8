"""Attribute arrays and SP 800-108 key derivation through the PKCS#11 library, from C
(p11_arrays_kdf.c), against a real appliance: CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE,
CKA_DERIVE_TEMPLATE and CKA_ALLOWED_MECHANISMS read back with PKCS#11's length protocol and
enforced by C_WrapKey/C_UnwrapKey; CKM_SP800_108_COUNTER_KDF (a NIST CAVP vector, and additional
derived keys checked here with cryptography's KBKDFHMAC) and CKM_SP800_108_FEEDBACK_KDF (checked
with SP 800-108 §5.2 written out with hmac). Also under AddressSanitizer.

Debian packages: gcc, libssl-dev.
"""
from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import CO_PIN, build_program, build_sanitized_library, library_env, run, start_appliance

KI = bytes.fromhex("3edc6b5b8f7aadbd713732b482b8f979286e1ea3b8f8f99c30c884cfe3349b83")


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    a = start_appliance(tmp_path_factory.mktemp("arrays-kdf"), partitions=[("app1", True)])
    yield a
    a.stop()


def values(stdout: str) -> dict[str, bytes]:
    return {line.split()[1]: bytes.fromhex(line.split()[2]) for line in stdout.splitlines()
            if line.startswith("value ")}


def feedback_sha512(key: bytes, iv: bytes, fixed: bytes, length: int) -> bytes:
    """SP 800-108 §5.2 with an 8-bit counter: K(i) = HMAC(K_I, K(i-1) || [i]_8 || fixed)."""
    out, previous = b"", iv
    for i in range(1, 256):
        previous = hmac.new(key, previous + bytes([i]) + fixed, hashlib.sha512).digest()
        out += previous
        if len(out) >= length:
            return out[:length]
    raise AssertionError("too long")


def test_attribute_arrays_and_sp800_108_from_c(appliance, tmp_path):
    program = build_program("p11_arrays_kdf", tmp_path)
    result = run([program, module_path()], library_env(conf=appliance.conf, HSMCLOUD_TEST_CO_PIN=CO_PIN))
    assert result.returncode == 0 and result.stdout.rstrip().endswith("ok"), result.stdout + result.stderr
    got = values(result.stdout)
    # counter mode: primary (32), then the additional keys (24, 40) from one KDF output, [L] = 96 bytes
    expected = KBKDFHMAC(hashes.SHA256(), Mode.CounterMode, 96, 4, 4, CounterLocation.BeforeFixed,
                         b"label", b"context", None).derive(KI)
    assert got["counter-primary"] == expected[:32]
    assert got["counter-more1"] == expected[32:56]
    assert got["counter-more2"] == expected[56:]
    iv = bytes(range(1, 17))
    assert got["feedback"] == feedback_sha512(KI, iv, b"feedback" + (800).to_bytes(4, "big"), 100)


def test_no_memory_error_or_leak_under_address_sanitizer(appliance, tmp_path):
    lib = build_sanitized_library(tmp_path)
    program = build_program("p11_arrays_kdf", tmp_path, sanitize=True)
    result = run([program, lib], library_env(conf=appliance.conf, HSMCLOUD_TEST_CO_PIN=CO_PIN,
                                             ASAN_OPTIONS="detect_leaks=1"))
    assert result.returncode == 0 and result.stdout.rstrip().endswith("ok"), result.stdout + result.stderr
    assert "Sanitizer" not in result.stderr, result.stderr
