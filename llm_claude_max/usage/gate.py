"""What `claude-max serve` asks of the usage record: refuse at once, warn in a header, show the document.

- :func:`refusal` runs before admission: when the last reading of the logged-in account says prompts
  are refused (top-level ``rejected``) until a reset still in the future, the request gets a 429 with
  ``Retry-After`` without starting a CLI. A later reading that allows prompts clears it (it replaces
  the record); so does extra usage, when it is available and the server was started with the opt-in.
  A model-specific limit (``seven_day_opus``) refuses only models of that family.
- :func:`headers` names the windows that are nearly used up, as of the latest reading when the
  response headers leave. A non-streaming answer's headers leave after its own reading; a stream's
  leave before its ``rate_limit_event`` (the CLI prints it after the text), so there the header is the
  reading before the request, dated by ``X-Claude-Max-Usage-Observed-At``, and the stream's own
  warning comes in-band (an SSE comment, and ``claude_max.warnings`` in the last chunk).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from .. import catalog, guard
from ..errors import UsageLimitReached
from . import render, store, windows

WARNING_HEADER = "X-Claude-Max-Usage-Warning"
OBSERVED_HEADER = "X-Claude-Max-Usage-Observed-At"


def _model_name(model: str | None, env: Mapping[str, str]) -> str | None:
    """The model a request would use, as precisely as known without the CLI: a catalog entry's resolved
    id (``claude-max`` -> ``claude-opus-5-5``), else the requested id itself."""
    if model is None:
        return None
    for entry in catalog.load(env):
        if model in (entry.model_id, entry.alias):
            return entry.resolved or entry.alias
    return model


def refusal(model: str | None, policy: guard.Policy, env: Mapping[str, str]) -> UsageLimitReached | None:
    """The error to answer with at once, or None to go ahead."""
    now = time.time()
    record = store.current(env, only=lambda r: r.reading().block(now, allow_overage=policy.allow_overage) is not None)
    block = record.reading().block(now, allow_overage=policy.allow_overage) if record is not None else None
    if record is None or block is None or not block.applies_to(_model_name(model, env)):
        return None
    when = guard.format_reset(block.resets_at)
    instead = (
        f" Paid extra usage would serve it, which is refused: {guard.allow_overage_hint()}."
        if block.overage_available
        else ""
    )
    return UsageLimitReached(
        f"Claude {guard.limit_label(block.limit)} limit reached, resets {when} (as the CLI reported "
        f"{render.ago(now - record.observed_at)}); no prompt was sent.{instead}",
        limit=block.limit,
        resets_at=dt.datetime.fromtimestamp(block.resets_at).astimezone(),
    )


def headers(env: Mapping[str, str]) -> dict[str, str]:
    """``X-Claude-Max-Usage-Warning: five_hour=0.93; resets_at=2026-11-25T16:40:00Z, ...`` when a window
    is nearly used up (see the module docstring for which reading that is), else nothing."""
    now = time.time()
    record = store.current(env, only=lambda r: bool(r.reading().high(now)))
    high = record.reading().high(now) if record is not None else []
    if record is None or not high:
        return {}
    value = ", ".join(
        f"{w.name}={w.utilization if w.utilization is not None else 'warning'}"
        + (f"; resets_at={windows.iso(w.resets_at)}" if w.resets_at is not None else "")
        for w in high
    )
    return {WARNING_HEADER: value, OBSERVED_HEADER: windows.iso(record.observed_at) or ""}


def document(env: Mapping[str, str], policy: guard.Policy) -> dict[str, Any]:
    """``GET /v1/usage``: the same document as ``claude-max usage --json``."""
    return render.current_document(env, allow_overage=policy.allow_overage)
