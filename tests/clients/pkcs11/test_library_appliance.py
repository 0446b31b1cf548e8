"""The PKCS#11 library against a real appliance (the Luna core behind its NTLS listener, in its
own process): the API end to end from C, 16 threads, fork, the appliance going away, C_InitToken,
and pkcs11-tool.

Debian packages: gcc, libssl-dev (the C test programs), opensc (pkcs11-tool).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import (CO_PIN, CU_PIN, PO_PIN, ServerEntry, build_program, build_sanitized_library,
                              library_env, run, start_appliance, write_config)

NEW_SO_PIN = "fresh-so-pin-1"


@pytest.fixture(scope="module")
def p11_appliance(tmp_path_factory) -> Path:
    return build_program("p11_appliance", tmp_path_factory.mktemp("cprog"))


@pytest.fixture
def appliance(tmp_path):
    a = start_appliance(tmp_path, partitions=[("app1", True), ("blank", False), ("notmine", True, False)])
    yield a
    a.stop()


def check(program: Path, name: str, env: dict, *args: str):
    result = run([program, module_path(), name, *args], env)
    assert result.returncode == 0 and f"ok {name}" in result.stdout, result.stdout + result.stderr
    return result


def test_the_api_end_to_end(p11_appliance, appliance, tmp_path):
    log = tmp_path / "p11.log"
    check(p11_appliance, "basics", library_env(conf=appliance.conf, log=log, HSMCLOUD_TEST_CO_PIN=CO_PIN))
    text = log.read_text()
    assert "connected to appliance" in text
    assert "C_Login -> 0xa0" in text  # the wrong PIN, by its code only
    for secret in (CO_PIN, "wrong-pin-1", PO_PIN, CU_PIN):
        assert secret not in text


def test_no_memory_error_or_leak_under_address_sanitizer_on_the_network_path(appliance, tmp_path):
    lib = build_sanitized_library(tmp_path)
    program = build_program("p11_appliance", tmp_path, sanitize=True)
    env = library_env(conf=appliance.conf, HSMCLOUD_TEST_CO_PIN=CO_PIN, ASAN_OPTIONS="detect_leaks=1")
    for name, args in (("basics", ()), ("fork", ()), ("threads", ("16", "2"))):
        result = run([program, lib, name, *args], env)
        assert result.returncode == 0 and f"ok {name}" in result.stdout, result.stdout + result.stderr
        assert "Sanitizer" not in result.stderr, result.stderr


def test_16_threads_generate_keys_and_sign_in_many_sessions(p11_appliance, appliance):
    result = check(p11_appliance, "threads", library_env(conf=appliance.conf, HSMCLOUD_TEST_CO_PIN=CO_PIN), "16", "8")
    assert "keys=256 signatures=384" in result.stdout


def test_a_forked_child_initializes_again_while_the_parent_keeps_working(p11_appliance, appliance):
    check(p11_appliance, "fork", library_env(conf=appliance.conf, HSMCLOUD_TEST_CO_PIN=CO_PIN))


def test_init_token_and_init_pin_on_an_uninitialized_partition(p11_appliance, appliance):
    check(p11_appliance, "init-token", library_env(conf=appliance.conf, HSMCLOUD_TEST_CO_PIN=CO_PIN,
                                                   HSMCLOUD_TEST_NEW_SO_PIN=NEW_SO_PIN))


def test_the_appliance_going_away_is_a_device_error_then_invalid_sessions(p11_appliance, appliance, tmp_path):
    log = tmp_path / "p11.log"
    proc = subprocess.Popen([str(p11_appliance), str(module_path()), "appliance-lost"],
                            env=library_env(conf=appliance.conf, log=log, HSMCLOUD_TEST_CO_PIN=CO_PIN),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        appliance.kill()
        out, err = proc.communicate("go\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "ok appliance-lost" in out, out + err
    assert "dropped" in log.read_text() or "closed an idle connection" in log.read_text()


def test_a_revoked_assignment_leaves_a_slot_without_a_token(p11_appliance, appliance):
    proc = subprocess.Popen([str(p11_appliance), str(module_path()), "revoked"],
                            env=library_env(conf=appliance.conf, HSMCLOUD_TEST_CO_PIN=CO_PIN),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        appliance.revoke("app1")
        out, err = proc.communicate("go\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "ok revoked" in out, out + err


def test_two_appliances_keep_their_sessions_and_logins_apart(p11_appliance, tmp_path):
    first = start_appliance(tmp_path / "a", partitions=[("app1", True)])
    # one client certificate registered on both appliances, as `hsmcloud client connect` does
    second = start_appliance(tmp_path / "b", partitions=[("app1", True)], client=first.client)
    try:
        conf = write_config(tmp_path / "both.conf", client=first.client,
                            servers=[ServerEntry(name="A", address="127.0.0.1", port=first.port,
                                                 certificate=first.server_pem),
                                     ServerEntry(name="B", address="127.0.0.1", port=second.port,
                                                 certificate=second.server_pem)],
                            slots=[("A", "app1"), ("B", "app1")])
        check(p11_appliance, "two-appliances", library_env(conf=conf, HSMCLOUD_TEST_CO_PIN=CO_PIN))
    finally:
        first.stop()
        second.stop()


def pkcs11_tool() -> str:
    tool = shutil.which("pkcs11-tool")
    if tool is None:
        pytest.skip("pkcs11-tool is not installed (Debian: apt-get install opensc)")
    return tool


def test_pkcs11_tool_test_login_passes_with_keys_in_the_partition(appliance):
    tool = pkcs11_tool()
    env = library_env(conf=appliance.conf)
    base = [tool, "--module", str(module_path()), "--login", "--pin", CO_PIN]
    for args in (["--keypairgen", "--key-type", "rsa:2048", "--id", "01", "--label", "tool-rsa"],
                 ["--keypairgen", "--key-type", "EC:prime256v1", "--id", "02", "--label", "tool-ec"],
                 ["--keygen", "--key-type", "AES:32", "--id", "03", "--label", "tool-aes"]):
        result = run(base + args, env)
        assert result.returncode == 0, result.stdout + result.stderr
    result = run([tool, "--module", str(module_path()), "--test", "--login", "--pin", CO_PIN], env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "No errors" in out
    assert "testing key 0 (tool-rsa)" in out and "SHA256-RSA-PKCS: OK" in out and "RSA-PKCS-OAEP" in out
    listing = run([tool, "--module", str(module_path()), "--list-objects", "--login", "--pin", CO_PIN], env)
    assert "tool-rsa" in listing.stdout and "tool-ec" in listing.stdout and "tool-aes" in listing.stdout
