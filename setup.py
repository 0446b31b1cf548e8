"""Builds the PKCS#11 library, a plain C shared library that lives inside the package.

Everything else about the project is in pyproject.toml. `pip install .` and `pip install -e .`
compile src/hsmcloud/clients/pkcs11/native/*.c into
src/hsmcloud/clients/pkcs11/libhsmcloud_pkcs11.so; it needs a C compiler (gcc) and the OpenSSL
headers (Debian: `apt-get install gcc libssl-dev`), nothing else.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

NATIVE = Path("src/hsmcloud/clients/pkcs11/native")
LIBRARY = "hsmcloud.clients.pkcs11.libhsmcloud_pkcs11"
LIBRARY_FILE = "libhsmcloud_pkcs11.so"
NEEDS = ("building the hsmcloud PKCS#11 library needs a C compiler and the OpenSSL headers "
         "(Debian/Ubuntu: apt-get install gcc libssl-dev)")


class BuildPkcs11Library(build_ext):
    """build_ext for a library that C programs load with dlopen, not a Python extension module."""

    def get_ext_filename(self, fullname: str) -> str:
        # called with the dotted name and, by get_ext_fullpath, with its last part alone
        if fullname == LIBRARY or fullname == LIBRARY.rsplit(".", 1)[1]:
            return os.path.join(*fullname.split(".")[:-1], LIBRARY_FILE)
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext):
        return [] if ext.name == LIBRARY else super().get_export_symbols(ext)

    def build_extension(self, ext) -> None:
        if ext.name != LIBRARY:
            return super().build_extension(ext)
        compiler = self.compiler.compiler_so[0] if getattr(self.compiler, "compiler_so", None) else None
        if compiler is not None and shutil.which(compiler) is None:
            raise CompileError(f"{NEEDS}; the C compiler '{compiler}' was not found")
        # Link like any C library: without Python's LDFLAGS, library folders and run paths, so
        # that libssl and libcrypto are the system's, found the usual way.
        saved = (self.compiler.linker_so, self.compiler.library_dirs, self.compiler.runtime_library_dirs)
        linker = list(self.compiler.linker_so)
        self.compiler.linker_so = [linker[0], "-shared"]
        self.compiler.library_dirs, self.compiler.runtime_library_dirs = [], []
        try:
            super().build_extension(ext)
        except (CompileError, LinkError) as exc:
            raise CompileError(f"{NEEDS} ({exc}); the compiler's output is above") from exc
        finally:
            self.compiler.linker_so, self.compiler.library_dirs, self.compiler.runtime_library_dirs = saved


setup(
    ext_modules=[
        Extension(
            LIBRARY,
            sources=sorted(str(p) for p in NATIVE.glob("*.c")),
            depends=sorted(str(p) for p in NATIVE.glob("*.h")),
            libraries=["ssl", "crypto", "pthread"],
            extra_compile_args=["-Wall", "-Wextra", "-O2", "-fPIC", "-fvisibility=hidden", "-std=gnu11"],
        )
    ],
    cmdclass={"build_ext": BuildPkcs11Library},
)
