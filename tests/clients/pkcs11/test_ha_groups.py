"""HA groups in the PKCS#11 library: two appliances (each in its own process) in a group made with
LunaCM's `hagroup` commands, a C program signing from several threads through the virtual slot,
one appliance killed (SIGKILL) mid-run and started again from its state.

Debian packages: gcc, libssl-dev (the C test program).
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hsmcloud.clients.luna import config as client_config
from hsmcloud.clients.luna.lunacm.backend import NtlsBackend
from hsmcloud.clients.luna.lunacm.shell import LunaCmShell
from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import (APPLIANCE_PYTHON, CO_PIN, HERE, PO_PIN, ServerEntry, _appliance_env, build_program,
                              build_sanitized_library, library_env, run, start_appliance, write_config)

HA_SLOT = "2"  # two physical slots, then the group's virtual slot


class Terminal:
    interactive = False

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def ask(self, prompt: str, *, secret: bool = False) -> str:
        raise AssertionError(f"lunacm asked: {prompt}")


def lunacm(conf: Path, monkeypatch, *lines: str, ok: bool = True) -> str:
    """Runs LunaCM commands as `hsmcloud lunacm -c ...` does (a fresh backend each time)."""
    monkeypatch.setenv("HSMCLOUD_CONF", str(conf))
    backend = NtlsBackend(client_config.load(conf))
    terminal = Terminal()
    try:
        status = LunaCmShell(backend, terminal).run_lines(list(lines))
    finally:
        backend.close()
    assert (status == 0) == ok, terminal.text
    return terminal.text


def restart(tmp: Path, port: int, client, name: str = "app1") -> subprocess.Popen:
    """The killed appliance again, from its state, on its port."""
    spec = {"state_dir": str(tmp / "appliance"), "client_name": "libclient", "client_cert": str(client.cert),
            "partitions": [{"name": name, "ready": True, "assigned": True}], "po_pin": PO_PIN, "co_pin": CO_PIN,
            "cu_pin": "", "resume": True, "ntls_port": port}
    process = subprocess.Popen([APPLIANCE_PYTHON, str(HERE / "ntls_appliance.py"), json.dumps(spec)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_appliance_env())
    line = process.stdout.readline()
    assert line, process.stderr.read()
    assert json.loads(line)["port"] == port
    return process


@pytest.fixture(scope="module")
def p11_ha(tmp_path_factory) -> Path:
    return build_program("p11_ha", tmp_path_factory.mktemp("haprog"))


class Pair:
    """Two appliances (started once for this module: starting one takes seconds) and the
    processes that stand for B after a test killed and restarted it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.first = start_appliance(tmp / "a", partitions=[("app1", True)])
        self.second = start_appliance(tmp / "b", partitions=[("app1", True)], client=self.first.client)
        self.revived: list[subprocess.Popen] = []

    def conf(self, path: Path, receive_timeout: int | None = None) -> Path:
        """A client configuration of its own for a test (its HA groups are its own)."""
        return write_config(path, client=self.first.client, receive_timeout=receive_timeout,
                            servers=[ServerEntry(name="A", address="127.0.0.1", port=self.first.port,
                                                 certificate=self.first.server_pem),
                                     ServerEntry(name="B", address="127.0.0.1", port=self.second.port,
                                                 certificate=self.second.server_pem)],
                            slots=[("A", "app1"), ("B", "app1")])

    def close(self) -> None:
        self.first.stop()
        self.second.stop()
        for process in self.revived:
            if process.poll() is None:
                process.stdin.close()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def appliances(tmp_path_factory):
    pair = Pair(tmp_path_factory.mktemp("ha"))
    yield pair
    pair.close()


@pytest.fixture
def pair(appliances, tmp_path):
    return appliances.first, appliances.second, appliances.conf(tmp_path / "ha.conf")


def make_group(conf, monkeypatch, *extra: str) -> str:
    return lunacm(conf, monkeypatch, f"hagroup creategroup -label grp -slot 0 -password {CO_PIN}",
                  f"hagroup addmember -group grp -slot 1 -password {CO_PIN}", *extra)


def count(p11_ha, conf, slot: str, prefix: str) -> int:
    result = run([p11_ha, module_path(), "count", slot, prefix], library_env(conf=conf, HSMCLOUD_TEST_CO_PIN=CO_PIN))
    assert result.returncode == 0, result.stdout + result.stderr
    return int(result.stdout.split("count=")[1].split()[0])


def outage_run(p11_ha, conf, log, appliances, *, wait_for_recovery, library=None, **env):
    """The signing program across the death and return of B."""
    second = appliances.second
    proc = subprocess.Popen([str(p11_ha), str(library or module_path()), "outage", HA_SLOT, "4"],
                            env=library_env(conf=conf, log=log, HSMCLOUD_TEST_CO_PIN=CO_PIN, **env),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    revived = None
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        second.kill()  # SIGKILL mid-run
        proc.stdin.write("killed\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "outage-done"
        revived = restart(appliances.tmp / "b", second.port, second.client)
        appliances.revived.append(revived)
        proc.stdin.write("restarted\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "signing"
        wait_for_recovery(proc)
        proc.stdin.write("recovered\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_hagroup_settings_are_kept_in_the_client_configuration_and_bad_input_changes_nothing(p11_ha, pair,
                                                                                           monkeypatch):
    _, _, conf = pair
    make_group(conf, monkeypatch, "hagroup retry -group grp -count 5", "hagroup interval -group grp -interval 120",
               "hagroup haonly -enable")
    cfg = client_config.load(conf)
    group = cfg.hagroup("grp")
    assert (group.retry_count, group.interval_seconds, cfg.ha_only, len(group.members)) == (5, 120, True, 2)
    # HA only: the library shows the group's virtual slot alone, as slot 0
    listed = run([p11_ha, module_path(), "slots"], library_env(conf=conf)).stdout
    assert listed.startswith("slot 0 label=grp") and listed.count("slot ") == 1, listed
    before = conf.read_text()
    for bad in ("hagroup interval -group grp -interval 10", "hagroup retry -group grp -count many",
                "hagroup addmember -group nosuch -slot 1", "hagroup addstandby -group grp -slot 7"):
        lunacm(conf, monkeypatch, bad, ok=False)
    assert conf.read_text() == before
    lunacm(conf, monkeypatch, "hagroup addstandby -group grp -slot 1")
    assert client_config.load(conf).hagroup("grp").standby == ["B/app1"]
    listing = lunacm(conf, monkeypatch, "hagroup listgroups", "slot list")
    assert "HA Virtual Card Slot" in listing and "HA Virtual Slot Id ->   0" in listing, listing
    assert "HA auto recovery: enabled" in listing and "Maximum auto recovery retry: 5" in listing
    assert "Auto recovery poll interval: 120 seconds" in listing and "Only Show HA Slots: yes" in listing
    lunacm(conf, monkeypatch, "hagroup deletegroup -label grp")
    assert client_config.load(conf).hagroups == {}


def test_signing_goes_on_through_a_member_death_and_hagroup_recover_brings_it_back(p11_ha, appliances, pair,
                                                                                  tmp_path, monkeypatch):
    first, second, conf = pair
    made = make_group(conf, monkeypatch)
    assert "created with group number 1" in made and "successfully added to group grp" in made
    slots = run([p11_ha, module_path(), "slots"], library_env(conf=conf))
    assert "slot 2 label=grp" in slots.stdout and "HA Virtual Card Slot" in slots.stdout, slots.stdout
    log = tmp_path / "p11.log"

    def before_recover(proc):
        # no retry count: the member that came back stays down until hagroup recover
        text = log.read_text()
        assert "dropped" in text and "(server B) recovered" not in text
        assert count(p11_ha, conf, "1", "outage-") == 0  # not replicated yet
        listing = lunacm(conf, monkeypatch, "hagroup listgroups")
        assert "HA auto recovery: disabled" in listing and "Maximum auto recovery retry: 0" in listing
        lunacm(conf, monkeypatch, "hagroup recover -group grp")

    rc, out, err = outage_run(p11_ha, conf, log, appliances, wait_for_recovery=before_recover)
    assert rc == 0 and "failed=0" in out and "FAIL" not in out, out + err
    text = log.read_text()
    assert "member app1 (server B) dropped" in text
    assert "member app1 (server B) recovered (hagroup recover)" in text, text
    # the keys generated while B was down: on the survivor, and now on B too
    assert count(p11_ha, conf, "0", "outage-") == 3
    assert count(p11_ha, conf, "1", "outage-") == 3
    listing = lunacm(conf, monkeypatch, f"role login -name co -password {CO_PIN}", "slot set -slot 1",
                     f"role login -name co -password {CO_PIN}", "hagroup listgroups")
    assert listing.count("alive") == 2 and "Needs sync:  no" in listing, listing
    # another application finds a key and signs: both members serve it (matched on the second)
    log2 = tmp_path / "p11-2.log"
    signed = run([p11_ha, module_path(), "find-sign", HA_SLOT, "outage-0", "12"],
                 library_env(conf=conf, log=log2, HSMCLOUD_TEST_CO_PIN=CO_PIN))
    assert signed.returncode == 0 and "signed=12 failed=0" in signed.stdout, signed.stdout + signed.stderr
    assert "an object found on member app1 matched on member app1" in log2.read_text()


def test_a_standby_member_does_no_cryptography_while_an_active_member_is_alive(p11_ha, appliances, tmp_path,
                                                                              monkeypatch):
    second = appliances.second
    conf = appliances.conf(tmp_path / "ha.conf", receive_timeout=2)
    make_group(conf, monkeypatch, "hagroup addstandby -group grp -slot 1")
    log = tmp_path / "p11.log"
    proc = subprocess.Popen([str(p11_ha), str(module_path()), "failover", HA_SLOT, "4"],
                            env=library_env(conf=conf, log=log, HSMCLOUD_TEST_CO_PIN=CO_PIN),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process = appliances.revived[-1] if appliances.revived else second.process
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        # the standby freezes while the threads sign: a call sent there would get no answer within
        # the 2-second receive timeout, and the member would be dropped
        process.send_signal(signal.SIGSTOP)
        try:
            proc.stdin.write(f"killed {time.time() * 1000:.3f}\n")
            proc.stdin.flush()
            time.sleep(3)
        finally:
            process.send_signal(signal.SIGCONT)  # before the sessions close (that reaches every member)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "failed=0" in out, out + err
    assert int(out.split("signatures=")[1].split()[0]) > 0
    assert "dropped" not in log.read_text()


@pytest.mark.soak
def test_no_memory_error_or_leak_under_address_sanitizer_through_a_failover(appliances, pair, tmp_path,
                                                                            monkeypatch):
    _, _, conf = pair
    make_group(conf, monkeypatch)
    lib = build_sanitized_library(tmp_path)
    program = build_program("p11_ha", tmp_path, sanitize=True)
    log = tmp_path / "p11.log"

    def recover(proc):
        lunacm(conf, monkeypatch, "hagroup recover -group grp")

    rc, out, err = outage_run(program, conf, log, appliances, wait_for_recovery=recover, library=lib,
                              ASAN_OPTIONS="detect_leaks=1")
    assert rc == 0 and "failed=0" in out, out + err
    assert "Sanitizer" not in err, err
    assert "(server B) recovered" in log.read_text()


@pytest.mark.soak
def test_auto_recovery_with_a_retry_count_brings_the_member_back_on_application_calls(p11_ha, appliances, pair,
                                                                                     tmp_path, monkeypatch):
    """Slow (the shortest poll interval is 60 s, as on the real device): run with -m soak."""
    first, second, conf = pair
    make_group(conf, monkeypatch, "hagroup retry -group grp -count -1", "hagroup interval -group grp -interval 60")
    log = tmp_path / "p11.log"

    def until_recovered(proc):
        deadline = time.monotonic() + 150
        while "(server B) recovered" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(1)

    rc, out, err = outage_run(p11_ha, conf, log, appliances, wait_for_recovery=until_recovered)
    assert rc == 0 and "failed=0" in out, out + err
    assert "member app1 (server B) recovered" in log.read_text()
    assert count(p11_ha, conf, "1", "outage-") >= 3


def test_synchronize_copies_what_a_member_lacks_and_refuses_conflicting_cloning_settings(p11_ha, pair,
                                                                                        monkeypatch):
    first, second, conf = pair
    make_group(conf, monkeypatch)
    env = library_env(conf=conf, HSMCLOUD_TEST_CO_PIN=CO_PIN)
    made = run([p11_ha, module_path(), "gen", "0", "only-on-a"], env)  # physical slot: not replicated
    assert "gen rv=0x0" in made.stdout, made.stdout + made.stderr
    assert count(p11_ha, conf, "1", "only-on-a") == 0
    synced = lunacm(conf, monkeypatch, f"hagroup synchronize -group grp -password {CO_PIN}")
    assert "Synchronization completed: 2 object(s) copied" in synced, synced
    assert count(p11_ha, conf, "1", "only-on-a") == 1
    lunacm(conf, monkeypatch, "slot set -slot 1", f"role login -name po -password {PO_PIN}",
           "partition changepolicy -policy 0 -value 0")
    out = lunacm(conf, monkeypatch, f"hagroup synchronize -group grp -password {CO_PIN}", ok=False)
    assert ("Warning: Synchronize may fail.  The members in slot 0 and slot 1 have conflicting settings for "
            "private key cloning.") in out
