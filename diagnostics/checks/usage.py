"""Your plan's usage windows, as the Claude Code CLI last reported them (no CLI, nothing sent).

Info: each window of the logged-in account. Warning: a window at 90 % or more, or a usage file that
cannot be read or written. Failure: a window is used up (rejected) and paid extra usage is not opted in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from llm_claude_max import config, guard
from llm_claude_max.usage import render, store, windows

from ..context import Context
from ..discovery import short_path
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl

GROUP = "Usage"


@hookimpl
def doctor_checks() -> list[Check]:
    return [Check("usage.windows", "Plan usage windows (as the CLI last reported them)", GROUP, usage_windows)]


def _table(reading: windows.Reading, now: float) -> tuple[tuple[str, ...], ...]:
    rows: list[tuple[str, ...]] = [("window", "used", "status", "resets")]
    for w in reading.windows:
        if w.has_reset(now):
            rows.append((w.label, "-", "reset since", guard.format_reset(w.resets_at) or ""))
            continue
        used = f"{w.percent} %" if w.percent is not None else "-"
        rows.append((w.label, used, w.status or "-", guard.format_reset(w.resets_at) or "-"))
    return tuple(rows)


def _files(ctx: Context) -> Iterator[Finding]:
    _, problems = store.load_all(ctx.env)
    for problem in problems:
        yield Finding(
            Status.WARN,
            f"The usage file {short_path(problem.path, ctx.home)} {problem.message}",
            detail="Prompts are not affected; `claude-max usage` leaves this file out.",
            source=f"file:{problem.path}",
            fix=f"rm {problem.path}",
        )
    blocked = store.unwritable(ctx.env)
    if blocked is not None:
        yield Finding(
            Status.WARN,
            f"New usage readings cannot be stored: {short_path(blocked.path, ctx.home)} {blocked.message}",
            detail="Prompts are not affected, but `claude-max usage` and the server's fast 429 use stale readings.",
            source=f"file:{blocked.path}",
            fix=f"Make {blocked.path} a directory you can write to (see CLAUDE_MAX_STATE_DIR).",
        )


def usage_windows(ctx: Context) -> Iterator[Finding]:
    yield from _files(ctx)
    record = store.current(ctx.env)
    if record is None:
        yield Finding(Status.INFO, f"No usage reading yet for this login. {render.HOW_TO_GET_ONE}")
        return
    now = time.time()
    reading = record.reading()
    allow = ctx.settings.allow_overage
    data: dict[str, str | int | float | bool | None] = {"observed_at": windows.iso(record.observed_at)}
    data.update({w.name: w.utilization for w in reading.windows if not w.has_reset(now)})
    yield Finding(
        Status.INFO,
        f"{record.account.describe()}, as of {render.ago(now - record.observed_at)}",
        table=_table(reading, now) if reading.windows else None,
        detail=None if reading.windows else "The CLI reported no per-window figures (the API sent none).",
        data=data,
    )
    for window in reading.windows:
        when = guard.format_reset(window.resets_at)
        until = f" until {when}" if when else ""
        if window.is_rejected(now) and not allow:
            yield Finding(
                Status.FAIL,
                f"Your {window.label} limit is reached{until}: prompts are refused",
                detail="Paid extra usage could serve prompts meanwhile, if your account has it; "
                "llm-claude-max refuses it unless you opt in.",
                fix=f"Wait until {when or 'the reset'}, or allow paid extra usage: export {config.ALLOW_OVERAGE}=1",
            )
        elif window.is_rejected(now):
            yield Finding(
                Status.WARN,
                f"Your {window.label} limit is reached{until}: prompts are served from paid extra usage "
                f"({config.ALLOW_OVERAGE} is set)",
            )
        elif window.is_high(now):
            yield Finding(Status.WARN, f"Your {window.label} window is at {window.percent} %, resets {when}")
