"""`hsmcloud pkcs11 ...`: the PKCS#11 library that applications load."""
from __future__ import annotations

import typer

from hsmcloud.cli.output import Output
from hsmcloud.clients.pkcs11.module_path import LibraryNotBuilt, module_path

app = typer.Typer(help="The hsmcloud PKCS#11 library (libhsmcloud_pkcs11.so) for applications.",
                  no_args_is_help=True)


@app.command("module-path")
def module_path_command() -> None:
    """Print the absolute path of libhsmcloud_pkcs11.so (for pkcs11-tool --module, openssl, Java...)."""
    try:
        path = module_path()
    except LibraryNotBuilt as exc:
        Output.error(exc.code, exc.message)
        raise typer.Exit(1)
    print(path)
