"""Turn a failed ``result`` event, or an exit without one, into the precise error.

The CLI reports API errors as ``result.subtype == "success"`` with ``is_error: true`` and a human
text; its exact texts were recorded in ``claude-cli.md`` §4.
"""

from __future__ import annotations

import datetime as dt
import signal

from .. import guard
from ..errors import (
    APIError,
    Cancelled,
    ClaudeMaxError,
    CLICrashed,
    NotLoggedIn,
    PaidUsageRefused,
    PromptTooLong,
    ProtocolError,
    SessionNotFound,
    UsageLimitReached,
)
from .protocol import RateLimit, Result

LOGIN_HINT = "Run `claude`, then /login, and try again."


def from_result(result: Result, rate_limit: RateLimit | None, stderr: str) -> ClaudeMaxError:
    text = result.text or "; ".join(result.errors) or f"the CLI reported {result.subtype!r}"
    status = result.api_error_status
    if "extra usage" in text and ("Third-party" in text or "third-party" in text):
        return PaidUsageRefused(
            f"Refused by Anthropic: {text} Nothing was billed for this prompt; llm-claude-max never "
            "switches to paid usage on its own."
        )
    if result.terminal_reason == "prompt_too_long" or text.startswith("Prompt is too long"):
        return PromptTooLong(f"The prompt is too long for the model: {text}")
    if any("No conversation found" in e for e in [text, *result.errors]):
        return SessionNotFound(text)
    if "Not logged in" in text or "/login" in text or "OAuth session expired" in text:
        return NotLoggedIn(f"The Claude Code CLI is not logged in: {text}. {LOGIN_HINT}")
    if status in (401, 403):
        return NotLoggedIn(f"Authentication failed ({status}): {text}. {LOGIN_HINT}")
    if (rate_limit is not None and rate_limit.status == "rejected" and status == 429) or "hit your" in text:
        return usage_limit(text, rate_limit)
    label = {429: "rate limited", 529: "overloaded", 500: "server error"}.get(status or 0, "error")
    where = f"{status} {label}" if status else label
    return APIError(f"Claude API {where}: {text}", status=status, stderr=stderr or None)


def usage_limit(text: str, rate_limit: RateLimit | None) -> UsageLimitReached:
    limit = rate_limit.limit_type if rate_limit else None
    resets = rate_limit.resets_at if rate_limit else None
    when = guard.format_reset(resets)
    message = f"Claude {guard.limit_label(limit)} limit reached" + (f", resets {when}" if when else "")
    return UsageLimitReached(
        f"{message}. ({text})",
        limit=limit,
        resets_at=dt.datetime.fromtimestamp(resets).astimezone() if resets else None,
    )


def from_exit(code: int, stderr: str, *, interrupted: bool, killed: bool = False) -> ClaudeMaxError:
    """The CLI exited without printing a ``result``. ``killed``: llm-claude-max stopped it itself."""
    if "No conversation found" in stderr:
        return SessionNotFound(stderr.strip())
    if "Not logged in" in stderr:
        return NotLoggedIn(f"The Claude Code CLI is not logged in. {LOGIN_HINT}", stderr=stderr)
    if code == 0 and interrupted:
        return Cancelled("The CLI was interrupted before it finished answering.")
    if code == 0:
        return ProtocolError("The CLI exited without a result.", stderr=stderr or None)
    if killed:
        return Cancelled("The CLI was stopped before it finished answering.", stderr=stderr or None)
    if code < 0 or code in (129, 130, 137, 143):  # a signal (as Python reports it, or as a shell would)
        number = -code if code < 0 else code - 128
        return CLICrashed(
            f"The CLI was killed by signal {_signal_name(number)} (not by llm-claude-max) before it finished "
            "answering; nothing was cancelled on purpose.",
            stderr=stderr or None,
        )
    return CLICrashed(f"The CLI exited with code {code} without a result.", stderr=stderr or None)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
