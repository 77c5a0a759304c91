"""The plan's usage windows as one ``rate_limit_event`` reports them: parsing and judgement, no I/O.

The CLI reads Anthropic's ``anthropic-ratelimit-unified-*`` response headers and prints, when they
change (observed with 2.1.328, docs/usage.md)::

    {"status": "allowed", "resetsAt": 1795634921, "rateLimitType": "five_hour", "utilization": 0.93,
     "surpassedThreshold": 0.9, "overageStatus": "rejected", "overageDisabledReason": "out_of_credits",
     "isUsingOverage": false,
     "unifiedWindows": {"five_hour": {"utilization": 0.93, "resetsAt": 1795634921, "status": "allowed_warning",
                                      "surpassedThreshold": 0.9},
                        "seven_day": {"utilization": 0.5, "resetsAt": 1796063380, "status": "allowed"}}}

The top level describes the window that limits now (``status`` says whether requests are refused);
``unifiedWindows`` holds every window the account has (``five_hour``, ``seven_day``,
``seven_day_overage_included``). A model-specific limit (``seven_day_opus``, ``seven_day_sonnet``) has
no entry there: it appears only as the top level's ``rateLimitType``, and becomes a window here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import guard, invocation

ORDER = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet", "seven_day_overage_included")
"""How windows are listed; unknown ones follow, by name."""
WARN_AT = 0.9
"""A window this full (a fraction of its limit) gets a warning, whatever the CLI's status says."""
STATUSES = frozenset({"allowed", "allowed_warning", "rejected"})
SCOPED = {"seven_day_opus": "opus", "seven_day_sonnet": "sonnet"}
"""Limits that apply to one model family only."""


@dataclass(frozen=True)
class Window:
    name: str
    """The CLI's name: ``five_hour``, ``seven_day``, ``seven_day_opus``..."""
    utilization: float | None
    """Fraction of the window used (can pass 1); None when the CLI named the limit without a figure."""
    resets_at: int | None
    """Epoch seconds."""
    status: str | None
    """``allowed``, ``allowed_warning`` or ``rejected``, as the server sent it for this window."""
    surpassed_threshold: float | None
    observed_at: float
    """When the reading that carried this window arrived (epoch seconds)."""

    @property
    def label(self) -> str:
        return guard.limit_label(self.name)

    @property
    def percent(self) -> int | None:
        return None if self.utilization is None else round(self.utilization * 100)

    def has_reset(self, now: float) -> bool:
        """The window has started again since this reading: its figures no longer apply."""
        return self.resets_at is not None and self.resets_at <= now

    def is_rejected(self, now: float) -> bool:
        return self.status == "rejected" and not self.has_reset(now)

    def is_high(self, now: float) -> bool:
        """Worth a warning: the server says so (``allowed_warning``) or it is at least 90 % used."""
        if self.has_reset(now) or self.status == "rejected":
            return False
        return self.status == "allowed_warning" or (self.utilization is not None and self.utilization >= WARN_AT)


@dataclass(frozen=True)
class Overage:
    """Paid extra usage: what serves prompts once a window is used up, if the account has it."""

    status: str | None
    """``allowed``, ``allowed_warning``, ``rejected``, or None when the CLI said nothing about it."""
    resets_at: int | None
    disabled_reason: str | None
    """Why it is unavailable: ``overage_not_provisioned``, ``out_of_credits``, ``org_level_disabled``..."""
    in_use: bool
    """This reading's prompt was served from extra usage."""

    @property
    def available(self) -> bool:
        return self.status in ("allowed", "allowed_warning")


@dataclass(frozen=True)
class Block:
    """The last reading says prompts are refused until ``resets_at``."""

    limit: str
    resets_at: int
    overage_available: bool
    """Extra usage would serve prompts instead (refused without the user's opt-in)."""

    @property
    def family(self) -> str | None:
        """The model family a model-specific limit applies to (``opus``), else None: every model."""
        return SCOPED.get(self.limit)

    def applies_to(self, model: str | None) -> bool:
        family = self.family
        return family is None or (model is not None and family in model.lower())


@dataclass(frozen=True)
class Reading:
    status: str | None
    """The top level: ``rejected`` means prompts are refused now (unless extra usage serves them)."""
    limit: str | None
    """The window the top level describes (``rateLimitType``)."""
    resets_at: int | None
    utilization: float | None
    windows: tuple[Window, ...]
    overage: Overage
    observed_at: float

    def window(self, name: str) -> Window | None:
        return next((w for w in self.windows if w.name == name), None)

    def block(self, now: float, *, allow_overage: bool) -> Block | None:
        """Whether a prompt sent now would be refused, according to this reading."""
        if self.status != "rejected" or self.resets_at is None or self.resets_at <= now:
            return None
        if self.overage.available and allow_overage:
            return None
        return Block(self.limit or "usage", self.resets_at, self.overage.available)

    def high(self, now: float) -> list[Window]:
        return [w for w in self.windows if w.is_high(now)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _epoch(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else round(number)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _status(value: Any) -> str | None:
    return value if value in STATUSES else None


def _windows(unified: Any, observed_at: float) -> list[Window]:
    if not isinstance(unified, Mapping):
        return []
    return [
        Window(
            name=str(name),
            utilization=_number(entry.get("utilization")),
            resets_at=_epoch(entry.get("resetsAt")),
            status=_status(entry.get("status")),
            surpassed_threshold=_number(entry.get("surpassedThreshold")),
            observed_at=observed_at,
        )
        for name, entry in unified.items()
        if isinstance(entry, Mapping)
    ]


def _sort_key(window: Window) -> tuple[int, str]:
    return (ORDER.index(window.name) if window.name in ORDER else len(ORDER), window.name)


def parse(
    info: Mapping[str, Any], observed_at: float, *, earlier: tuple[Mapping[str, Any], float] | None = None
) -> Reading:
    """A ``rate_limit_info`` object (any shape: unknown or mistyped fields are ignored).

    ``earlier`` is the last ``unifiedWindows`` seen and when: used when this event carries none (the
    API sent no per-window headers), so those windows keep their own, older, time.
    """
    if "unifiedWindows" in info or earlier is None:
        windows = _windows(info.get("unifiedWindows"), observed_at)
    else:
        windows = _windows(earlier[0], earlier[1])
    limit = info.get("rateLimitType") if isinstance(info.get("rateLimitType"), str) else None
    status = _status(info.get("status"))
    resets_at = _epoch(info.get("resetsAt"))
    utilization = _number(info.get("utilization"))
    if limit and limit != "overage" and not any(w.name == limit for w in windows):
        # A model-specific limit, or a claim without per-window headers: the top level is all there is.
        surpassed = _number(info.get("surpassedThreshold"))
        windows.append(Window(limit, utilization, resets_at, status, surpassed, observed_at))
    overage = Overage(
        status=_status(info.get("overageStatus")),
        resets_at=_epoch(info.get("overageResetsAt")),
        disabled_reason=_text(info.get("overageDisabledReason")),
        in_use=info.get("isUsingOverage") is True,
    )
    return Reading(status, limit, resets_at, utilization, tuple(sorted(windows, key=_sort_key)), overage, observed_at)


def warning(reading: Reading, now: float) -> str | None:
    """One line naming each window that is nearly used up and when it resets, or None."""
    parts = []
    for window in reading.high(now):
        amount = f"at {window.percent} %" if window.percent is not None else "near its limit"
        when = guard.format_reset(window.resets_at)
        parts.append(f"{window.label} window {amount}" + (f", resets {when}" if when else ""))
    if not parts:
        return None
    return "claude-max: " + "; ".join(parts) + f" (`{invocation.command('usage')}` shows every window)"


def iso(epoch: float | None) -> str | None:
    """UTC ISO 8601 with a ``Z``, to the second."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
