"""Host commands kept in their own modules; ``host_commands.COMMANDS`` registers them."""
