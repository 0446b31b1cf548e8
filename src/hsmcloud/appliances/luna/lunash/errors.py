"""Errors of the shell itself, and the one place an appliance error becomes a LunaSH result.

Every refusal LunaSH gives is printed in its two-line form (``Error: ...`` then
``Command Result : <code> (...)``); an SSH exec request turns it into a non-zero exit status.
Core errors (``core/errors.py``) are printed the same way.
"""

from __future__ import annotations

from ..core.errors import LunaApplianceError

#: LunaSH reports shell-level failures with this result code and meaning.
SHELL_EXECUTION_RESULT = 65535
SHELL_EXECUTION_MEANING = "Luna Shell execution"


class ShellError(LunaApplianceError):
    """A LunaSH command was refused by the shell; nothing was changed."""


class InvalidCommand(ShellError):
    """The command or subcommand does not exist."""


class PasswordChangeRequired(ShellError):
    """The appliance admin still has the factory password and must change it first."""


class ConfirmationRequired(ShellError):
    """A destructive command ran without a terminal to type 'proceed' on and without -force."""


class CommandAborted(ShellError):
    """The user did not type 'proceed' at a destructive command's prompt."""


class ConsoleOnly(ShellError):
    """The command exists only on the serial console, which tenants cannot reach."""


def result_of(error: LunaApplianceError) -> tuple[int, str]:
    """The LunaSH result code and meaning an error is reported with."""
    return SHELL_EXECUTION_RESULT, SHELL_EXECUTION_MEANING
