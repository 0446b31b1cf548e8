"""python-pkcs11's own test suite (the `tests/` of its source distribution on PyPI, unchanged)
against the library and a fresh appliance, configured only through the environment variables it
documents (PKCS11_MODULE, PKCS11_TOKEN_LABEL, PKCS11_TOKEN_PIN, PKCS11_TOKEN_SO_PIN, OPENSSL_PATH,
PKCS11_MODULE2). No test may fail, and every test it skips must be one of EXPECTED_SKIPS, with the
reason it gives there; docs/pkcs11.md ("python-pkcs11's own test suite") explains each.

The source distribution is fetched once with `pip download` into the virtualenv
(`.venv/hsmcloud-test-cache/`) and checked against PyPI's SHA-256; the test skips only when PyPI
cannot be reached. Debian packages: gcc, libssl-dev (the library), openssl, softhsm2 (the second
module of test_multilib; without it that test skips, as listed below).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hsmcloud.clients.pkcs11.module_path import module_path

from .library_helpers import CO_PIN, GUARD_SECONDS, PO_PIN, library_env, start_appliance

pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install '.[test]')")
pytest.importorskip("parameterized", reason="parameterized (python-pkcs11's tests use it) is not installed "
                                            "(pip install '.[test]')")

VERSION = "0.10.1"
SDIST = f"python_pkcs11-{VERSION}.tar.gz"
#: As PyPI's index lists it (https://pypi.org/simple/python-pkcs11/).
SDIST_SHA256 = "e0d7ccede3b3145a678d7c8c59b3c64dcebeb77c9146ad3394a4b1309c4ab2a2"
#: How many tests the pinned sdist's suite has (parameterized 0.9.0 expands some of them).
SUITE_TESTS = 163
TOKEN_LABEL = "pp11suite"
SOFTHSM = Path("/usr/lib/softhsm/libsofthsm2.so")
DOC = Path(__file__).resolve().parents[3] / "docs" / "pkcs11.md"
DOC_SECTION = "## python-pkcs11's own test suite"

_SOFTHSM_ONLY = "SoftHSMv2 only"
#: Every test of the suite that skips here, with the reason python-pkcs11 prints ("Requires N" is
#: a mechanism number the token does not list). Why each one skips: docs/pkcs11.md.
EXPECTED_SKIPS: dict[str, str] = {
    # DES and 3DES: CKM_DES2_KEY_GEN (0x130), CKM_DES3_KEY_GEN (0x131), CKM_DES3_CBC_PAD (0x136)
    "test_des.DESTests.test_encrypt_des2": "Requires 304, 310",
    "test_des.DESTests.test_encrypt_des3": "Requires 305, 310",
    "test_des.DESTests.test_generate_des2_key": "Requires 304",
    "test_des.DESTests.test_generate_des3_key": "Requires 305",
    # Diffie-Hellman: CKM_DH_PKCS_KEY_PAIR_GEN (0x20), _DERIVE (0x21), _PARAMETER_GEN (0x2001)
    "test_dh.DHTests.test_derive_key": "Requires 32, 33",
    "test_dh.DHTests.test_generate_params": "Requires 32, 8193",
    # DSA: CKM_DSA_KEY_PAIR_GEN (0x10), CKM_DSA_SHA1 (0x12), CKM_DSA_PARAMETER_GEN (0x2000)
    "test_dsa.DSATests.test_generate_keypair_and_sign": "Requires 16, 18",
    "test_dsa.DSATests.test_generate_keypair_directly": "Requires 8192, 16",
    "test_dsa.DSATests.test_generate_params": "Requires 8192",
    "test_x509.X509Tests.test_verify_certificate_dsa": "Requires 18",
    # ML-DSA (PKCS#11 3.2): CKM_ML_DSA_KEY_PAIR_GEN (0x1C), CKM_ML_DSA (0x1D)
    **{f"test_ml_dsa.MLDSATests.{name}": "Requires 28, 29" for name in (
        "test_generate_ml_dsa_44", "test_generate_ml_dsa_65", "test_generate_ml_dsa_87",
        "test_missing_parameter_set_raises", "test_sign_verify", "test_sign_verify_wrong_data")},
    # ML-KEM (PKCS#11 3.2): CKM_ML_KEM_KEY_PAIR_GEN (0x0F), CKM_ML_KEM (0x17)
    **{f"test_ml_kem.MLKEMTests.{name}": "Requires 15, 23" for name in (
        "test_encapsulate_decapsulate_0_AES_256", "test_encapsulate_decapsulate_1_AES_128",
        "test_generate_ml_kem_512", "test_generate_ml_kem_768", "test_generate_ml_kem_1024",
        "test_missing_parameter_set_raises")},
    # decorated @Only.softhsm2: they run only when PKCS11_MODULE's file name is SoftHSM's
    "test_ecc.ECCTests.test_import_key_params": _SOFTHSM_ONLY,
    "test_sessions.SessionTests.test_copy_object": _SOFTHSM_ONLY,
    "test_sessions.SessionTests.test_init_pin": _SOFTHSM_ONLY,
    "test_sessions.SessionTests.test_open_session_and_login_so": _SOFTHSM_ONLY,
    "test_sessions.SessionTests.test_set_pin": _SOFTHSM_ONLY,
    "test_slots_and_tokens.SlotsAndTokensTests.test_get_slots": _SOFTHSM_ONLY,
    "test_slots_and_tokens.SlotsAndTokensTests.test_get_token": _SOFTHSM_ONLY,
    "test_slots_and_tokens.SlotsAndTokensTests.test_get_tokens": _SOFTHSM_ONLY,
}
#: Skips only when Debian's softhsm2 is missing (it is the second module PKCS11_MODULE2 names).
WITHOUT_SOFTHSM = {"test_multilib.MultilibTests.test_double_initialise_different_libs":
                   "Requires an additional PKCS#11 module"}

_NETWORK_FAILURES = ("NewConnectionError", "Could not fetch URL", "Max retries exceeded", "Temporary failure in name resolution",
                     "Network is unreachable", "Name or service not known", "ProxyError", "ConnectTimeout",
                     "ReadTimeoutError", "Connection refused")


def cache_dir(tmp_path_factory) -> Path:
    """Where the source distribution is kept between runs: in the virtualenv when there is one."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "hsmcloud-test-cache"
    return tmp_path_factory.mktemp("sdist-cache")


def sdist(tmp_path_factory) -> Path:
    """python-pkcs11's source distribution, downloaded once, checked against PyPI's hash."""
    directory = cache_dir(tmp_path_factory)
    path = directory / SDIST
    if not path.exists():
        download = tmp_path_factory.mktemp("sdist-download")
        # with retries, pip names the connection failure (without, it only says no version was found);
        # only python-pkcs11 itself as source: with ":all:" pip also builds its build requirements
        # (Cython, setuptools) from source to read the metadata, minutes on a busy 2-core machine
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "python-pkcs11",
                                 "--retries", "3", f"python-pkcs11=={VERSION}", "--dest", str(download)],
                                capture_output=True, text=True, timeout=GUARD_SECONDS)
        if result.returncode != 0 or not (download / SDIST).exists():
            output = result.stdout + result.stderr
            if any(sign in output for sign in _NETWORK_FAILURES):
                pytest.skip(f"PyPI is unreachable, so python-pkcs11 {VERSION}'s source distribution cannot be "
                            f"downloaded: {output.strip().splitlines()[-1]}")
            raise AssertionError(f"pip download of python-pkcs11 {VERSION} failed:\n{output}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(str(download / SDIST), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == SDIST_SHA256, f"{path} is not PyPI's {SDIST} (sha256 {digest}); delete it to download again"
    return path


def extract_tests(archive: Path, directory: Path) -> Path:
    """The sdist's tests/ alone (its pkcs11/ source package must not shadow the installed one), in a
    directory of its own that is its own pytest root."""
    prefix = f"python_pkcs11-{VERSION}/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix + "tests/")]
        for member in members:
            member.name = member.name[len(prefix):]
        tar.extractall(directory, members=members, filter="data")
    (directory / "pytest.ini").write_text("[pytest]\n")
    return directory


def test_python_pkcs11_own_suite_passes_with_every_skip_explained(tmp_path, tmp_path_factory):
    installed = importlib.metadata.version("python-pkcs11")
    assert installed == VERSION, f"python-pkcs11 {installed} is installed; its {VERSION} tests need {VERSION}"
    suite = extract_tests(sdist(tmp_path_factory), tmp_path / "suite")
    expected = dict(EXPECTED_SKIPS)
    extra = {}
    if SOFTHSM.exists():
        softhsm_conf = tmp_path / "softhsm2.conf"
        (tmp_path / "softhsm-tokens").mkdir()
        softhsm_conf.write_text(f"directories.tokendir = {tmp_path / 'softhsm-tokens'}\n"
                                "objectstore.backend = file\nlog.level = ERROR\n")
        extra = {"PKCS11_MODULE2": str(SOFTHSM), "SOFTHSM2_CONF": str(softhsm_conf)}
    else:
        expected.update(WITHOUT_SOFTHSM)
    openssl = shutil.which("openssl")
    if openssl is not None:
        extra["OPENSSL_PATH"] = str(Path(openssl).parent)

    appliance = start_appliance(tmp_path, partitions=[(TOKEN_LABEL, True)])
    try:
        env = library_env(conf=appliance.conf, PKCS11_MODULE=str(module_path()), PKCS11_TOKEN_LABEL=TOKEN_LABEL,
                          PKCS11_TOKEN_PIN=CO_PIN, PKCS11_TOKEN_SO_PIN=PO_PIN, **extra)
        junit = tmp_path / "junit.xml"
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 f"--junitxml={junit}", "tests"], cwd=suite, env=env, capture_output=True,
                                text=True, timeout=GUARD_SECONDS)
    finally:
        appliance.stop()
    output = result.stdout[-8000:] + result.stderr[-2000:]
    assert junit.exists(), output
    passed, failed, skipped = read_junit(junit)
    assert not failed, ("python-pkcs11's tests failed:\n" + "\n".join(f"{t}: {why}" for t, why in failed.items())
                        + "\n" + output)
    assert result.returncode == 0, output
    unexpected = {t: why for t, why in skipped.items() if expected.get(t) != why}
    assert not unexpected, f"skips that EXPECTED_SKIPS does not list (or with another reason): {unexpected}"
    assert set(skipped) == set(expected), f"listed skips that now run: {sorted(set(expected) - set(skipped))}"
    assert len(passed) + len(skipped) == SUITE_TESTS, f"{len(passed) + len(skipped)} tests ran, not {SUITE_TESTS}"
    print(f"python-pkcs11 {VERSION}'s suite: {len(passed)} passed, {len(skipped)} skipped")


def read_junit(path: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The passed test ids, and the failed and skipped ones with their messages."""
    passed, failed, skipped = [], {}, {}
    for case in ET.parse(path).iter("testcase"):
        test = f"{case.get('classname').removeprefix('tests.')}.{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if problem is not None:
            failed[test] = (problem.get("message") or "").strip()
        elif skip is not None:
            skipped[test] = (skip.get("message") or "").strip()
        else:
            passed.append(test)
    return passed, failed, skipped


def test_the_expected_skips_are_documented():
    text = DOC.read_text()
    assert DOC_SECTION in text, f"{DOC} has no section '{DOC_SECTION}'"
    section = text.split(DOC_SECTION, 1)[1].split("\n## ", 1)[0]
    missing = [t for t in {**EXPECTED_SKIPS, **WITHOUT_SOFTHSM} if t.rsplit(".", 1)[1] not in section]
    assert not missing, f"docs/pkcs11.md does not explain why these skip: {missing}"
