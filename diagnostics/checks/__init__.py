"""The built-in checks. Each module is a plugin, registered exactly like a third-party one."""

BUILTIN = ("billing", "credentials", "cli", "login", "crosscheck", "tos", "usage", "live")
"""Module names under this package, in the order their groups are shown."""
