"""One turn of a CLI process as a state machine: stream-json events in, what the caller sees out.

:class:`TurnState` does no I/O. :meth:`TurnState.feed` takes one parsed event and returns the events
for the caller (text, reasoning, the caller's tool calls as they stream, notices); the turn ends with
:class:`Done` (the model answered) or :class:`Deferred` (the model called the caller's tools: the
process waits, paused, for their results). Billing checks that fail raise here; the session around it
kills the process.

A turn in Claude Code's terms can span several model requests (Claude Code's own tools run in
between); one *step* here ends at every ``result`` event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import guard
from ..errors import PaidUsageRefused, ProtocolError, StructuredOutputMissing
from ..tools import ToolCall, ToolNames, is_caller_tool
from . import failure
from .protocol import (
    JSON,
    ApiRetry,
    Assistant,
    Event,
    Init,
    RateLimit,
    Result,
    StreamOther,
    TextDelta,
    ThinkingDelta,
    ToolInputDelta,
    ToolUseStart,
    User,
)

STRUCTURED_TOOL = "StructuredOutput"
"""The tool the CLI adds for ``--json-schema``; its arguments are the structured output."""

# -- what a turn yields ------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class Notice:
    """Something the user should see on stderr: retries, warnings."""

    message: str


@dataclass(frozen=True)
class ToolCallStarted:
    """The model began a call of one of the caller's tools (``name`` is the caller's name)."""

    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArgs:
    """The next piece of a call's JSON arguments, as the model writes them."""

    id: str
    chunk: str


@dataclass(frozen=True)
class StructuredDelta:
    """The next piece of the structured output (``--json-schema``) as the model writes it. A later
    attempt may replace it: the final value is in :attr:`Outcome.structured_output`."""

    chunk: str


@dataclass(frozen=True)
class ClaudeToolRan:
    """Claude Code ran one of its own tools (only when the user enabled them), with this outcome."""

    name: str
    input: JSON
    error: str | None = None


@dataclass
class Outcome:
    """How one step ended: the answer so far, who was billed, usage."""

    session_id: str
    model: str | None
    text: str
    structured_output: Any
    route: guard.RouteReport
    rate_limit: RateLimit | None
    warnings: list[str]
    result: Result = field(repr=False)
    tool_calls: tuple[ToolCall, ...] = ()
    """The caller's tool calls this step ended with (a :class:`Deferred` step)."""
    verified: bool = False
    """The subscription route was confirmed in-band by a ``rate_limit_event`` of this process."""
    cut: bool = False
    """The answer stopped at the output-token limit the caller set (the process was then stopped: the CLI
    would go on past it by itself)."""

    @property
    def usage(self) -> JSON:
        return self.result.usage

    @property
    def cost_usd(self) -> float | None:
        """The CLI's list-price estimate for this step (not a bill)."""
        per_turn = self.result.raw.get("model_usage_since_last_result")
        if isinstance(per_turn, dict) and per_turn:
            return sum(float(m.get("costUSD") or 0) for m in per_turn.values() if isinstance(m, dict))
        cost = self.result.raw.get("total_cost_usd")
        return float(cost) if isinstance(cost, (int, float)) else None

    def summary(self, continued: str) -> Summary:
        raw = self.result.raw
        return Summary(
            session_id=self.session_id,
            model=self.model,
            usage=self.usage,
            billing={**self.route.as_dict(), "verified": self.verified},
            rate_limit=self.rate_limit.raw if self.rate_limit else None,
            cost_usd=self.cost_usd,
            continued=continued,
            warnings=tuple(self.warnings),
            extra={k: raw.get(k) for k in ("stop_reason", "num_turns", "duration_ms", "duration_api_ms")},
        )


@dataclass(frozen=True)
class Summary:
    """What a finished prompt reports, whether it ran here or through `claude-max serve`."""

    session_id: str | None
    model: str | None
    usage: Mapping[str, Any]
    """Anthropic-style: input_tokens, output_tokens, cache_read/creation_input_tokens, output_tokens_details."""
    billing: Mapping[str, Any]
    rate_limit: Mapping[str, Any] | None
    cost_usd: float | None
    continued: str
    """new, live, paused, resumed or replayed."""
    warnings: Sequence[str] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """The model answered; the process is idle (it can take another user message)."""

    outcome: Outcome


@dataclass(frozen=True)
class Deferred:
    """The model called the caller's tools; the process is paused until their results arrive."""

    calls: tuple[ToolCall, ...]
    outcome: Outcome


TurnEvent = (
    Text | Reasoning | Notice | ToolCallStarted | ToolCallArgs | StructuredDelta | ClaudeToolRan | Done | Deferred
)

RETRY_LABELS = {
    "overloaded": "Claude API overloaded",
    "rate_limit": "Claude API rate limited",
    "server_error": "Claude API server error",
    "authentication_failed": "Claude API authentication failed",
}


def retry_notice(event: ApiRetry) -> str:
    label = RETRY_LABELS.get(event.error or "", "Claude API unreachable")
    if event.error_status and event.error not in RETRY_LABELS:
        label = f"Claude API error {event.error_status}"
    total = f"/{event.max_retries}" if event.max_retries else ""
    delay = f" in {event.delay_ms / 1000:.1f} s" if event.delay_ms is not None else ""
    return f"{label}, retry {event.attempt}{total}{delay}"


UNVERIFIED = (
    "claude-max: the CLI sent no rate_limit_event, so subscription billing of this prompt is unverified "
    "(recorded in the response)"
)

# -- the state machine -------------------------------------------------------------------------


class TurnState:
    """Feeds on the events of one step of one process; see the module docstring.

    ``verified``: a ``rate_limit_event`` already confirmed this process's route (the CLI sends one per
    process, on its first request), so later steps need not see another.
    """

    def __init__(
        self,
        *,
        route: guard.RouteReport,
        policy: guard.Policy,
        names: ToolNames,
        structured: bool = False,
        verified: bool = False,
        session_id: str | None = None,
        redefer: bool = False,
        cut_at_limit: bool = False,
    ) -> None:
        self.route = route
        self.policy = policy
        self.names = names
        self.structured = structured
        self.verified = verified
        self.session_id = session_id
        self.redefer = redefer
        """A resumed session's start-up: the CLI asks our hook again about the call it had deferred, and
        reports it only in ``result.deferred_tool_use`` (no request is made)."""
        self.cut_at_limit = cut_at_limit
        """End the step when the model hits the output-token limit: the CLI would otherwise ask it to go on
        (``Output token limit hit. Resume directly…``), in further billed requests."""
        self.usage: JSON = {}
        self.rate_limit: RateLimit | None = None
        self.warnings: list[str] = []
        self.texts: list[str] = []
        self.interrupted = False
        self.finished: Done | Deferred | None = None
        self._streamed: set[tuple[str | None, str]] = set()  # (message id, "text"/"thinking") with deltas
        self._completed: set[str | None] = set()  # message ids whose assistant event arrived
        self._blocks: dict[tuple[str | None, int], str] = {}  # (message id, index) -> tool_use id
        self._started: set[str] = set()  # tool_use ids announced to the caller
        self._calls: dict[str, ToolCall] = {}  # the caller's calls of this step, in order
        self._structured_ids: set[str] = set()
        self._own_tools: dict[str, tuple[str, JSON]] = {}  # Claude Code's own tool calls, by id

    @property
    def partial_text(self) -> str:
        return "".join(self.texts)

    def feed(self, event: Event) -> list[TurnEvent]:
        """The caller's events for one CLI event. Raises the turn's error."""
        if isinstance(event, Init):
            guard.check_init(event, self.route, self.policy)
            self.session_id = event.session_id
        elif isinstance(event, TextDelta):
            return self._text_delta(event)
        elif isinstance(event, ThinkingDelta):
            self._streamed.add((event.message_id, "thinking"))
            return [Reasoning(event.text)]
        elif isinstance(event, ToolUseStart):
            return self._tool_start(event)
        elif isinstance(event, ToolInputDelta):
            return self._tool_delta(event)
        elif isinstance(event, Assistant):
            return self._assistant(event)
        elif isinstance(event, User):
            return self._user(event)
        elif isinstance(event, RateLimit):
            return self._rate_limit(event)
        elif isinstance(event, ApiRetry):
            return [Notice(retry_notice(event))]
        elif isinstance(event, Result):
            return self._result(event)
        elif isinstance(event, StreamOther):
            return self._message_event(event.event)
        return []

    def _message_event(self, event: JSON) -> list[TurnEvent]:
        """``message_start`` / ``message_delta``: usage, and whether the output limit cut the answer."""
        if event.get("type") == "message_start":
            usage = (event.get("message") or {}).get("usage")
            self.usage = dict(usage) if isinstance(usage, dict) else {}
        elif event.get("type") == "message_delta":
            self.usage.update(event.get("usage") or {})
            if self.cut_at_limit and (event.get("delta") or {}).get("stop_reason") == "max_tokens":
                raw = {"type": "result", "subtype": "success", "stop_reason": "max_tokens", "usage": self.usage,
                       "session_id": self.session_id}  # fmt: skip
                result = Result("success", False, self.partial_text, self.session_id, None, "max_tokens",
                                "max_tokens", None, [], raw)  # fmt: skip
                return self._result(result, cut=True)
        return []

    # -- streaming -----------------------------------------------------------------------------
    def _text_delta(self, event: TextDelta) -> list[TurnEvent]:
        self._streamed.add((event.message_id, "text"))
        if self.structured:
            return []
        self.texts.append(event.text)
        return [Text(event.text)]

    def _tool_start(self, event: ToolUseStart) -> list[TurnEvent]:
        self._blocks[(event.message_id, event.index)] = event.id
        if event.name == STRUCTURED_TOOL:
            self._structured_ids.add(event.id)
            return []
        name = self.names.from_api(event.name)
        if name is None:
            return []
        self._started.add(event.id)
        return [ToolCallStarted(event.id, name)]

    def _tool_delta(self, event: ToolInputDelta) -> list[TurnEvent]:
        tool_id = self._blocks.get((event.message_id, event.index))
        if tool_id is None or not event.partial_json:
            return []
        if tool_id in self._structured_ids:
            return [StructuredDelta(event.partial_json)] if self.structured else []
        if tool_id in self._started:
            return [ToolCallArgs(tool_id, event.partial_json)]
        return []

    # -- whole messages ------------------------------------------------------------------------
    def _assistant(self, event: Assistant) -> list[TurnEvent]:
        if event.api_error is not None:
            return []
        out: list[TurnEvent] = []
        incomplete = {mid for mid, _ in self._streamed if mid not in self._completed and mid != event.message_id}
        self._completed.add(event.message_id)
        for block in event.content:
            kind = block.get("type")
            if kind == "text" and (event.message_id, "text") not in self._streamed and not self.structured:
                # The CLI fell back to a non-streaming request: the whole text arrives here.
                if incomplete and self.texts:
                    out.append(
                        Notice(
                            "claude-max: the stream was interrupted; the CLI asked again without streaming, "
                            "the full answer follows"
                        )
                    )
                self.texts.append(str(block.get("text", "")))
                out.append(Text(str(block.get("text", ""))))
            elif kind == "thinking" and (event.message_id, "thinking") not in self._streamed:
                out.append(Reasoning(str(block.get("thinking", ""))))
            elif kind == "tool_use":
                out.extend(self._tool_use(block))
        return out

    def _tool_use(self, block: JSON) -> list[TurnEvent]:
        tool_id, api_name = str(block.get("id", "")), str(block.get("name", ""))
        arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
        assert isinstance(arguments, dict)
        if api_name == STRUCTURED_TOOL:
            return []
        name = self.names.from_api(api_name)
        if name is None:
            if not is_caller_tool(api_name):
                self._own_tools[tool_id] = (api_name, arguments)
            return []
        self._calls[tool_id] = ToolCall(tool_id, name, arguments)
        if tool_id in self._started:
            return []
        # Not streamed (a non-streaming fallback request): announce the whole call now.
        self._started.add(tool_id)
        return [ToolCallStarted(tool_id, name), ToolCallArgs(tool_id, json.dumps(arguments))]

    def _user(self, event: User) -> list[TurnEvent]:
        """A user message the CLI added itself: results of Claude Code's own tools, interruptions."""
        content = event.content
        if "[Request interrupted by user" in json.dumps(content):
            self.interrupted = True
        out: list[TurnEvent] = []
        for block in content if isinstance(content, list) else []:
            own = (
                self._own_tools.pop(str(block.get("tool_use_id")), None) if block.get("type") == "tool_result" else None
            )
            if own is not None:
                error = _result_text(block.get("content"))[:300] if block.get("is_error") else None
                out.append(ClaudeToolRan(own[0], own[1], error))
        return out

    def _rate_limit(self, event: RateLimit) -> list[TurnEvent]:
        self.rate_limit = event
        try:
            warning = guard.check_rate_limit(event, self.policy)
        except PaidUsageRefused as exc:
            exc.partial_text = self.partial_text  # paid for: never lost
            raise
        self.verified = True
        if warning:
            self.warnings.append(warning)
            return [Notice(warning)]
        return []

    def _result(self, event: Result, *, cut: bool = False) -> list[TurnEvent]:
        if event.is_error or event.subtype != "success":
            raise failure.from_result(event, self.rate_limit, "")
        self.session_id = event.session_id or self.session_id
        out: list[TurnEvent] = []
        if self.structured and not event.deferred:
            if event.structured_output is None:
                raise StructuredOutputMissing(
                    "The model did not return output matching the schema (the CLI's structured_output "
                    f"is null). Its last text was: {event.text[:500]!r}"
                )
            text = json.dumps(event.structured_output, ensure_ascii=False)
            self.texts = [text]
            out.append(Text(text))
        if self.route.route is guard.Route.SUBSCRIPTION and not self.verified and not self.redefer:
            self.warnings.append(UNVERIFIED)
            out.append(Notice(UNVERIFIED))
        calls = tuple(self._calls.values())
        if self.redefer and event.deferred and not calls:
            calls = self._redeferred(event)
        outcome = Outcome(
            session_id=self.session_id or "",
            model=_model_of(event),
            text=self.partial_text,
            structured_output=event.structured_output,
            route=self.route,
            rate_limit=self.rate_limit,
            warnings=self.warnings,
            result=event,
            tool_calls=calls,
            verified=self.verified,
            cut=cut,
        )
        if event.deferred:
            if not calls:
                raise ProtocolError("The CLI paused for a tool call the caller never saw.")
            self.finished = Deferred(calls, outcome)
        else:
            self.finished = Done(outcome)
        out.append(self.finished)
        return out

    def _redeferred(self, event: Result) -> tuple[ToolCall, ...]:
        deferred = event.raw.get("deferred_tool_use")
        if not isinstance(deferred, dict):
            return ()
        name = self.names.from_api(str(deferred.get("name", "")))
        arguments = deferred.get("input") if isinstance(deferred.get("input"), dict) else {}
        if name is None or not isinstance(arguments, dict):
            return ()
        return (ToolCall(str(deferred.get("id", "")), name, arguments),)


def _model_of(result: Result) -> str | None:
    usage = result.raw.get("model_usage_since_last_result") or result.raw.get("modelUsage")
    if isinstance(usage, dict) and usage:
        return str(next(iter(usage)))
    return None


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""
