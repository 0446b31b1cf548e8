"""Host command handlers, one module per family of commands."""
