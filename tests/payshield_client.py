"""A real third-party payShield host client for the tests: mszeu's PayShieldPressureTest
(PyPI ``payshield-pressure-test``, tested by its author against a payShield 10K) in a
virtualenv of its own, because it needs Python >= 3.13 and the project runs on 3.11.

`python tests/payshield_client.py` installs it; the test fixture installs it on first use.
The place is HSMCLOUD_PAYSHIELD_CLIENT_VENV, else `.venv-payshield-client/` in the repository
(ignored by git). The interpreter is HSMCLOUD_PAYSHIELD_CLIENT_PYTHON, else the first Python
3.13+ found on PATH or under pyenv; without one the tests that need it are skipped."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

CLIENT = "payshield-pressure-test==1.5.4.5"
#: Its dependencies, pinned (it imports requests for its update check, which the tests switch off).
DEPENDENCIES = ("requests==2.34.2", "packaging==26.3", "urllib3==2.8.0", "idna==3.20",
                "charset-normalizer==3.5.2", "certifi")
REPO = Path(__file__).resolve().parents[1]


class ClientUnavailable(Exception):
    """No Python 3.13 here, or the client would not install: the reason, for a skip."""


def venv_dir() -> Path:
    return Path(os.environ.get("HSMCLOUD_PAYSHIELD_CLIENT_VENV") or REPO / ".venv-payshield-client")


def executable(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "payshield-pressuretest"


def _python313() -> str:
    candidates = [os.environ.get("HSMCLOUD_PAYSHIELD_CLIENT_PYTHON")]
    candidates += [shutil.which(name) for name in ("python3.14", "python3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[3-9]*/bin/python3")), reverse=True)
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 13))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    raise ClientUnavailable("payshield-pressure-test needs Python >= 3.13 and none was found "
                            "(set HSMCLOUD_PAYSHIELD_CLIENT_PYTHON)")


def ensure_installed(venv: Path | None = None) -> Path:
    """The client's command, installed into ``venv`` if it is not there yet."""
    venv = venv or venv_dir()
    marker = venv / f".installed-{CLIENT}"
    if marker.exists() and executable(venv).exists():
        return executable(venv)
    python = _python313()
    try:
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        CLIENT, *DEPENDENCIES], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise ClientUnavailable(f"installing {CLIENT} failed: {(exc.stderr or '')[-500:]}") from exc
    marker.write_text(CLIENT + "\n")
    return executable(venv)


if __name__ == "__main__":
    try:
        print(ensure_installed())
    except ClientUnavailable as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
