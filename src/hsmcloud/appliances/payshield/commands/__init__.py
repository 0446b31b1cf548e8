"""Host command handlers kept in their own modules; registered in ``host_commands.COMMANDS``."""

from .. import host_commands as _host_commands  # noqa: F401 - loads the helpers and the table first
