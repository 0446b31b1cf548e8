"""Host command handlers kept in their own modules; registered in ``host_commands.COMMANDS``."""
