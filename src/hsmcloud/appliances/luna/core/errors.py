"""Typed errors of the Luna appliance.

Every refusal the appliance shell gives is one of these classes; the shell turns it into
LunaSH's two-line error form (``Error: ...`` then ``Command Result : <code> (...)``) and an SSH
exec request turns it into a non-zero exit status.
"""

from __future__ import annotations

#: LunaSH reports shell-level failures with this result code and meaning.
SHELL_EXECUTION_RESULT = 65535
SHELL_EXECUTION_MEANING = "Luna Shell execution"


class LunaApplianceError(Exception):
    """Base class of every error raised by the Luna appliance package."""


class StateError(LunaApplianceError):
    """The state directory cannot be used (belongs to another device, newer schema, ...)."""


class ShellError(LunaApplianceError):
    """A LunaSH command was refused; nothing was changed unless the message says so."""

    result_code = SHELL_EXECUTION_RESULT
    result_meaning = SHELL_EXECUTION_MEANING

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCommand(ShellError):
    """The command or subcommand does not exist."""


class InvalidUsage(ShellError):
    """Unknown, missing, repeated or malformed flags or values."""


class PasswordChangeRequired(ShellError):
    """The appliance admin still has the factory password and must change it first."""


class PasswordPolicyViolation(ShellError):
    """A new password does not meet the appliance's or HSM's password rules."""


class AuthenticationFailed(ShellError):
    """A password given to the shell (current admin password, HSM SO password) is wrong."""


class NotLoggedIn(ShellError):
    """The command needs the HSM SO (``hsm login``) in this SSH session."""


class HsmNotInitialized(ShellError):
    """The HSM is zeroized or brand new and must be initialized with ``hsm init`` first."""


class ConfirmationRequired(ShellError):
    """A destructive command ran without a terminal to type 'proceed' on and without -force."""


class CommandAborted(ShellError):
    """The user did not type 'proceed' at a destructive command's prompt."""


class ConsoleOnly(ShellError):
    """The command exists only on the serial console, which tenants cannot reach."""


class PartitionLimitReached(ShellError):
    """The HSM already holds its maximum number of partitions."""


class PartitionExists(ShellError):
    """A partition with that name already exists."""


class PartitionNotFound(ShellError):
    """No partition with that name exists."""


class StateChanged(ShellError):
    """The HSM changed (zeroized, reset) while the command was running; nothing was done."""
