"""The doctor's data model: a Check produces Findings."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Context


class Status(enum.StrEnum):
    OK = "ok"
    INFO = "info"
    SKIP = "skip"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    """The check itself crashed (a bug in the check, not in your setup)."""

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Status.OK: 0, Status.INFO: 0, Status.SKIP: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 2}


@dataclass(frozen=True)
class Finding:
    """One fact a check established. Values in it are already masked: it never holds a secret."""

    status: Status
    summary: str
    detail: str | None = None
    source: str | None = None
    """Where the fact comes from, e.g. ``env:ANTHROPIC_API_KEY`` or ``file:~/.claude/.credentials.json``."""
    fix: str | None = None
    """A command (or precise instruction) that fixes the problem, copy-pasteable."""
    links: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] | None = None
    """Rows of cells, the first one a header; always shown."""
    data: Mapping[str, str | int | float | bool | None] | None = None
    """Machine-readable values for --json (already masked)."""


@dataclass(frozen=True)
class Check:
    """A named, individually runnable diagnostic.

    ``run`` receives the shared :class:`~diagnostics.context.Context` and returns findings. A check
    that needs the CLI as a subprocess sets ``needs_cli`` (skipped by ``--offline``); one that spends
    quota sets ``live`` (run only with ``--live``).
    """

    id: str
    title: str
    group: str
    run: Callable[[Context], Iterable[Finding]]
    order: int = 100
    needs_cli: bool = False
    live: bool = False


@dataclass
class CheckResult:
    check: Check
    plugin: str
    findings: list[Finding] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def status(self) -> Status:
        return max((f.status for f in self.findings), key=lambda s: s.rank, default=Status.OK)
