"""Keeping secrets out of the service log, and the log set-up of `hsmcloud up`.

hsmcloud's own code never logs a secret: LunaSH commands reach the appliance log with their
secret flags masked (`appliances/luna/command_line.loggable`), payShield logs carry no PIN or
key material, and no request body or bearer token is ever logged. The libraries it embeds log
what they see, though. asyncssh, which carries the Luna appliance shell, writes

* every exec request's command line at INFO (``Command: my password set -oldpassword …``),
* environment variables a client sends at DEBUG,
* at its debug level 3, a hex dump of every SSH packet: passwords in the authentication
  request, and everything typed into a shell (passwords answered at a prompt).

:func:`install` puts a filter on asyncssh's loggers that replaces those values before any
handler sees the record, whatever level or handler the host process configured. The Luna SSH
server installs it when it starts, so an appliance embedded anywhere is covered; `hsmcloud up`
and the appliance's standalone main install it with the log set-up (:func:`configure`).
"""
from __future__ import annotations

import logging
import re

#: The loggers asyncssh writes to (its SFTP/SCP logger is a child, whose records skip the parent's filters).
ASYNCSSH_LOGGERS = ("asyncssh", "asyncssh.sftp")

NOT_LOGGED = "(not logged: it may hold secrets)"

#: asyncssh messages whose arguments are whatever a client sent: command lines and the like.
_CLIENT_TEXT_MESSAGES = frozenset({
    "  Command: %s",
    "  Subsystem: %s",
    "  Forced command override: %s",
    "  Proxy command: %s",
    "Starting SCP server, args: %s",
    "Starting remote SCP, args: %s",
})
#: asyncssh messages of the form name=value, where the value is the client's.
_CLIENT_VALUE_MESSAGES = frozenset({"  Env: %s=%s"})
#: asyncssh prefixes a connection's context: ``[conn=0, chan=1] ``.
_CONTEXT = re.compile(r"\[[^\]]*\] ")


class AsyncsshRedaction(logging.Filter):
    """Replaces client data in asyncssh records: command lines, environment values, packet dumps."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else str(record.msg)
        context = _CONTEXT.match(message)
        prefix = context.group(0) if context else ""
        template = message[len(prefix):]
        if getattr(record, "packet", None):
            # Debug level 3 appends a hex dump of the packet to the message: keep the one-line summary.
            record.msg = message.split("\n", 1)[0] + " [contents not logged]"
            record.packet = b""
        elif template in _CLIENT_TEXT_MESSAGES and record.args:
            record.args = (NOT_LOGGED,)
        elif template in _CLIENT_VALUE_MESSAGES and isinstance(record.args, tuple) and len(record.args) == 2:
            record.args = (record.args[0], NOT_LOGGED)
        return True


_FILTER = AsyncsshRedaction()


def install() -> None:
    """Put the redaction filter on asyncssh's loggers (idempotent)."""
    for name in ASYNCSSH_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def configure(level: int) -> None:
    """The log set-up of a service process: records at ``level`` and above to stderr, redaction on."""
    install()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
