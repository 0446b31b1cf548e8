"""Host commands kept in their own modules; ``host_commands.COMMANDS`` registers them."""

from .. import host_commands as _host_commands  # noqa: F401 - loads the helpers and the table first
