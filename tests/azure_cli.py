"""The Azure CLI for the tests that drive it: azure-cli from PyPI in a virtualenv of its own.

`python tests/azure_cli.py` installs it (CI starts that early, while the rest of the suite runs);
the `azure_cli` fixture uses it, installing it first if it is missing. The place is
HSMCLOUD_AZCLI_VENV, else `.venv-azure-cli/` in the repository (ignored by git)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

AZURE_CLI_VERSION = "2.91.0"
REPO = Path(__file__).resolve().parents[1]


def venv_dir() -> Path:
    return Path(os.environ.get("HSMCLOUD_AZCLI_VENV") or REPO / ".venv-azure-cli")


def az_path(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "az"


def ensure_installed(venv: Path | None = None) -> Path:
    """The `az` executable of the pinned azure-cli, installed into `venv` if it is not there yet."""
    venv = venv or venv_dir()
    marker = venv / f".installed-azure-cli-{AZURE_CLI_VERSION}"
    if marker.exists() and az_path(venv).exists():
        return az_path(venv)
    started = time.monotonic()
    python = os.environ.get("HSMCLOUD_AZCLI_PYTHON") or sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    # --no-compile: az compiles what it imports on first use; compiling all of azure-cli takes minutes.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-compile", f"azure-cli=={AZURE_CLI_VERSION}"], check=True)
    marker.write_text(f"installed in {time.monotonic() - started:.0f} s\n")
    return az_path(venv)


if __name__ == "__main__":
    print(ensure_installed())
