"""`hsmcloud lunacm`: the LunaCM-style client shell over NTLS (interactive, or commands given with -c)."""
from __future__ import annotations

import getpass
import sys
from typing import Annotated, Optional

import typer

from hsmcloud.clients.luna.config import ConfigError


class ConsoleTerminal:
    """The user's terminal; secrets are read without echo."""

    def __init__(self, *, interactive: bool) -> None:
        self._interactive = interactive

    @property
    def interactive(self) -> bool:
        return self._interactive

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def ask(self, prompt: str, *, secret: bool = False) -> str:
        try:
            return getpass.getpass(prompt) if secret else input(prompt)
        except EOFError:
            from hsmcloud.clients.luna.lunacm.shell import LunaCmError
            raise LunaCmError("The input ended. Nothing was changed.", code="ABORTED") from None


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        sys.stdout.write("\n")
        return None
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return ""


def lunacm(command: Annotated[Optional[list[str]], typer.Option(
               "--command", "-c", show_default=False,
               help="Run this LunaCM command (repeatable, in order) instead of an interactive shell.")] = None,
           keep_going: Annotated[bool, typer.Option("--keep-going", help="With -c: run the remaining commands "
                                                                         "after one fails.")] = False):
    """LunaCM: slots, partition init, roles (login, init, changepw, resetpw) and policies over NTLS."""
    from hsmcloud.cli.output import Output
    from hsmcloud.clients.luna.lunacm.backend import NtlsBackend
    from hsmcloud.clients.luna.lunacm.shell import LunaCmShell

    try:
        backend = NtlsBackend()
    except ConfigError as exc:
        Output.error(exc.code, exc.message)
        raise typer.Exit(1) from None
    try:
        if command:
            shell = LunaCmShell(backend, ConsoleTerminal(interactive=sys.stdin.isatty()))
            status = shell.run_lines(list(command), stop_on_error=not keep_going)
        else:
            shell = LunaCmShell(backend, ConsoleTerminal(interactive=True))
            status = shell.interact(_read_line)
    finally:
        backend.close()
    raise typer.Exit(status)
