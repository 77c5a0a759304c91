"""``claude-max usage``: the windows as bars for people, and as a versioned JSON document (docs/usage.md).

The same document is ``GET /v1/usage`` on ``claude-max serve`` and the ``usage`` of ``/health/deep``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import config, guard
from . import store, windows
from .store import Problem, Record

SCHEMA_VERSION = 1
BAR_WIDTH = 20


# -- JSON ------------------------------------------------------------------------------------------


def _window(window: windows.Window, now: float) -> dict[str, Any]:
    return {
        "name": window.name,
        "label": window.label,
        "utilization": window.utilization,
        "percent": window.percent,
        "status": window.status,
        "surpassed_threshold": window.surpassed_threshold,
        "resets_at": windows.iso(window.resets_at),
        "resets_at_epoch": window.resets_at,
        "has_reset": window.has_reset(now),
        "warning": window.is_high(now),
        "observed_at": windows.iso(window.observed_at),
    }


def _account(record: Record, now: float, *, allow_overage: bool, current: str | None) -> dict[str, Any]:
    reading = record.reading()
    block = reading.block(now, allow_overage=allow_overage)
    overage = reading.overage
    return {
        "account": {
            "key": record.account.key,
            "email": record.account.email,
            "organization": record.account.organization,
            "plan": record.account.plan,
            "current_login": None if current is None else record.account.key == current,
        },
        "observed_at": windows.iso(record.observed_at),
        "observed_at_epoch": round(record.observed_at),
        "age_seconds": max(0, round(now - record.observed_at)),
        "source": record.source,
        "status": reading.status,
        "limit": reading.limit,
        "windows": [_window(w, now) for w in reading.windows],
        "overage": {
            "status": overage.status,
            "available": overage.available,
            "in_use": overage.in_use,
            "disabled_reason": overage.disabled_reason,
            "resets_at": windows.iso(overage.resets_at),
            "resets_at_epoch": overage.resets_at,
            "allowed_by_llm_claude_max": allow_overage,
        },
        "blocked": None
        if block is None
        else {
            "limit": block.limit,
            "label": guard.limit_label(block.limit),
            "resets_at": windows.iso(block.resets_at),
            "resets_at_epoch": block.resets_at,
            "retry_after_seconds": max(1, round(block.resets_at - now)),
            "models": block.family or "all",
            "overage_available": block.overage_available,
        },
        "warning": windows.warning(reading, now),
        "rate_limit_info": dict(record.info),
    }


def document(
    records: Sequence[Record],
    problems: Sequence[Problem] = (),
    *,
    now: float,
    allow_overage: bool,
    current: str | None = None,
) -> dict[str, Any]:
    """``current``: the account key of the login on disk (marks that account), when known."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": windows.iso(now),
        "overage_allowed": allow_overage,
        "accounts": [_account(r, now, allow_overage=allow_overage, current=current) for r in records],
        "problems": [{"path": str(p.path), "message": p.message} for p in problems],
    }


# -- people ------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return "under a minute"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(seconds: float) -> str:
    return "just now" if seconds < 60 else f"{duration(seconds)} ago"


def bar(fraction: float | None, *, plain: bool = False) -> str:
    full, empty = ("#", "-") if plain else ("█", "░")
    if fraction is None:
        return empty * BAR_WIDTH
    filled = round(min(max(fraction, 0.0), 1.0) * BAR_WIDTH)
    return full * filled + empty * (BAR_WIDTH - filled)


def _resets(epoch: int | None, now: float) -> str:
    when = guard.format_reset(epoch)
    return "" if epoch is None or when is None else f"resets {when} (in {duration(epoch - now)})"


def _window_line(window: windows.Window, now: float, width: int, plain: bool) -> str:
    label = window.label.ljust(width)
    if window.has_reset(now):
        when = guard.format_reset(window.resets_at)
        return f"  {label}  {bar(None, plain=plain)}     -  reset at {when}; no reading since"
    mark = ("x" if plain else "✗") if window.is_rejected(now) else ("!" if window.is_high(now) else " ")
    percent = f"{window.percent:>4} %" if window.percent is not None else "     -"
    state = {"rejected": "LIMIT REACHED", "allowed_warning": "warning"}.get(window.status or "", "")
    details = " · ".join(part for part in (state, _resets(window.resets_at, now)) if part)
    return f"{mark} {label}  {bar(window.utilization, plain=plain)} {percent}  {details}".rstrip()


def _overage_lines(reading: windows.Reading, allow_overage: bool) -> list[str]:
    overage = reading.overage
    if overage.in_use:
        state = "IN USE: the last prompt was served from paid extra usage"
    elif overage.available:
        nearly = " (nearly used up)" if overage.status == "allowed_warning" else ""
        state = f"available once a window is used up{nearly}"
    elif overage.status == "rejected":
        state = "not available" + (f" ({overage.disabled_reason})" if overage.disabled_reason else "")
    else:
        state = "not reported by the CLI"
    if allow_overage:
        policy = f"llm-claude-max allows it ({config.ALLOW_OVERAGE}=1)"
    else:
        policy = f"llm-claude-max refuses it (set {config.ALLOW_OVERAGE}=1 to allow)"
    return [f"  Extra usage: {state}; {policy}"]


def _account_lines(record: Record, now: float, *, allow_overage: bool, current: str | None, plain: bool) -> list[str]:
    reading = record.reading()
    title = record.account.describe()
    if record.account.key == current:
        title += " · logged in now"
    lines = [title]
    width = max((len(w.label) for w in reading.windows), default=0)
    lines += [_window_line(w, now, width, plain) for w in reading.windows]
    if not reading.windows:
        status = reading.status or "unknown"
        lines.append(f"  status {status}; the CLI reported no per-window figures (the API sent none)")
    lines += _overage_lines(reading, allow_overage)
    block = reading.block(now, allow_overage=allow_overage)
    if block is not None:
        scope = f" for {block.family.title()} models" if block.family else ""
        lines.append(
            f"  Prompts{scope} are refused until {guard.format_reset(block.resets_at)} "
            f"(in {duration(block.resets_at - now)}): {guard.limit_label(block.limit)} limit reached."
        )
    source = f", from your last prompt ({record.source})" if record.source else ", from your last prompt"
    when = guard.format_reset(round(record.observed_at))
    lines.append(f"  As of {ago(now - record.observed_at)} ({when}){source}.")
    older = [w for w in reading.windows if w.observed_at < record.observed_at - 1]
    if older:
        lines.append(
            f"  The windows are from {ago(now - older[0].observed_at)}: the last prompt's answer carried no "
            "per-window figures."
        )
    return lines


HOW_TO_GET_ONE = (
    "The Claude Code CLI reports your plan's windows with each answer; send one prompt "
    "(for example `llm -m claude-max-haiku hi`) and run this again."
)
EMPTY = f"No usage reading yet. {HOW_TO_GET_ONE}"


def human(
    records: Sequence[Record],
    problems: Sequence[Problem] = (),
    *,
    now: float,
    allow_overage: bool,
    current: str | None = None,
    plain: bool = False,
) -> str:
    """``plain``: ASCII bars, for terminals that cannot show block characters."""
    blocks = [
        "\n".join(_account_lines(r, now, allow_overage=allow_overage, current=current, plain=plain)) for r in records
    ]
    text = "\n\n".join(blocks) if blocks else EMPTY
    for problem in problems:
        text += f"\n! {problem.path} {problem.message}"
    return text + "\n"


# -- from the store ------------------------------------------------------------------------------


def current_document(env: Mapping[str, str], *, allow_overage: bool) -> dict[str, Any]:
    """`claude-max usage --json` and ``GET /v1/usage``."""
    records, problems = store.load_all(env)
    return document(records, problems, now=time.time(), allow_overage=allow_overage, current=store.login_key(env))


def current_text(env: Mapping[str, str], *, allow_overage: bool, plain: bool = False) -> str:
    """`claude-max usage`."""
    records, problems = store.load_all(env)
    return human(
        records, problems, now=time.time(), allow_overage=allow_overage, current=store.login_key(env), plain=plain
    )
