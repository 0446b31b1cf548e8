"""Where the built PKCS#11 library is."""
from __future__ import annotations

from pathlib import Path

from hsmcloud.errors import NotFound

LIBRARY_FILE = "libhsmcloud_pkcs11.so"


class LibraryNotBuilt(NotFound):
    """The package was installed without its PKCS#11 library (the build step did not run)."""

    code = "Pkcs11LibraryNotBuilt"


def module_path() -> Path:
    """The absolute path of libhsmcloud_pkcs11.so inside the installed package."""
    path = Path(__file__).resolve().with_name(LIBRARY_FILE)
    if not path.is_file():
        raise LibraryNotBuilt(
            f"{path} does not exist: the PKCS#11 library is built when the package is installed "
            "('pip install .' or 'pip install -e .', which need gcc and libssl-dev)")
    return path
