"""The watchdogs' defaults: in a module of their own, so that a prompt through a server imports no runner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeouts:
    """Watchdogs, in seconds. On expiry the whole process group is killed."""

    start: float = 30.0
    """From spawn until the CLI has answered ``initialize``."""
    idle: float = 180.0
    """Longest silence (no event at all) while a turn runs."""
    total: float | None = 1800.0
    """Hard cap for one turn."""


DEFAULT_TIMEOUTS = Timeouts()
