"""The llm models: Claude through the user's own Claude Code CLI, billed to their plan.

``ClaudeMax`` and ``AsyncClaudeMax`` share one core (``_Shared._stream``, an async generator); the
sync model drives it through :func:`~llm_claude_max.runner.bridge.iterate_sync`.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import llm
from llm.parts import StreamEvent
from pydantic import Field, field_validator

from . import config, conversation, guard, paths, transcript
from .catalog import CatalogModel
from .errors import ClaudeMaxError, PaidUsageRefused, SessionNotFound
from .runner.bridge import iterate_sync
from .runner.client import ClaudeCLI
from .runner.command import CommandSpec, SystemPlacement
from .runner.session import Done, Notice, Outcome, Reasoning, Text, Timeouts, ToolUse


class Effort(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    xhigh = "xhigh"
    max = "max"


class ClaudeMaxOptions(llm.Model.Options):
    effort: Effort | None = Field(
        default=None, description="Reasoning effort: low, medium, high, xhigh or max (default: the CLI's, medium)"
    )
    system_placement: SystemPlacement | None = Field(
        default=None,
        description="Where -s goes: replace (default; instead of Claude Code's agent prompt), append (after it) "
        "or user (inside the first user message, leaving Claude Code's prompt alone)",
    )
    timeout: float | None = Field(default=None, gt=0, description="Hard cap for one prompt, in seconds (default 1800)")
    idle_timeout: float | None = Field(
        default=None, gt=0, description="Stop when the CLI sends nothing for this many seconds (default 180)"
    )
    start_timeout: float | None = Field(
        default=None, gt=0, description="Stop when the CLI has not started within this many seconds (default 30)"
    )
    max_retries: int | None = Field(
        default=None, ge=0, le=10, description="API retries the CLI may make on overload/server errors (default 3)"
    )
    allow_api_billing: bool | None = Field(
        default=None,
        description="Allow pay-as-you-go API-key billing when the CLI would use ANTHROPIC_API_KEY (warned on every "
        "prompt; default: refused)",
    )
    allow_overage: bool | None = Field(
        default=None,
        description="Allow prompts served from paid extra usage when your plan's window is used up (default: refused)",
    )
    claude_tools: str | None = Field(
        default=None,
        description="Comma-separated Claude Code tools to enable, e.g. Read,Grep,WebSearch. They run ON THIS "
        "MACHINE in claude_tools_dir, without asking (default: none)",
    )
    claude_tools_dir: str | None = Field(
        default=None, description="Working directory for Claude Code tools (default: the current directory)"
    )
    cli: str | None = Field(
        default=None, description="Path of the claude executable (default: $CLAUDE_MAX_CLI or PATH)"
    )

    @field_validator("claude_tools")
    @classmethod
    def _tool_names(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [n.strip() for n in value.split(",") if n.strip()]
        for name in names:
            if not name.replace("_", "").replace("(", "").replace(")", "").replace("*", "").replace(":", "").isalnum():
                raise ValueError(f"not a tool name: {name!r}")
        return ",".join(names) or None

    @field_validator("claude_tools_dir")
    @classmethod
    def _existing_dir(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_dir():
            raise ValueError(f"not a directory: {value}")
        return value


_LLM_ERROR_TYPES: dict[type[ClaudeMaxError], type[ClaudeMaxError]] = {}


def _llm_error_type(cls: type[ClaudeMaxError]) -> type[ClaudeMaxError]:
    """``cls`` mixed with ``llm.ModelError``, so llm shows it as a model error and callers can catch either."""
    if cls in _LLM_ERROR_TYPES.values():
        return cls
    if cls not in _LLM_ERROR_TYPES:
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
        _LLM_ERROR_TYPES[cls] = type(cls.__name__, (cls, llm.ModelError), namespace)
    return _LLM_ERROR_TYPES[cls]


def as_llm_error(exc: ClaudeMaxError) -> ClaudeMaxError:
    exc.__class__ = _llm_error_type(type(exc))
    return exc


def notify(message: str) -> None:
    """Progress and billing warnings go to stderr, where llm shows them beside the answer."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class _Shared:
    """Capability flags, prompt planning and response accounting shared by the sync and async models."""

    model_id: str
    can_stream = True
    supports_schema = True
    supports_tools = False
    attachment_types: set[str] | frozenset[str] = transcript.ATTACHMENT_TYPES
    Options = ClaudeMaxOptions
    kind = ""

    def __init__(self, entry: CatalogModel) -> None:
        self.entry = entry
        self.model_id = entry.model_id
        self.cli_model = None if entry.alias == "default" else entry.alias

    def __str__(self) -> str:
        return f"Claude Max via Claude Code CLI{self.kind}: {self.model_id}"

    async def _stream(self, prompt: llm.Prompt, stream: bool, response: Any) -> AsyncIterator[StreamEvent]:
        options: ClaudeMaxOptions = prompt.options  # type: ignore[assignment]
        placement = options.system_placement or SystemPlacement.REPLACE
        try:
            settings = config.Settings.from_env()
            policy = guard.Policy.from_settings(
                settings, allow_api_billing=options.allow_api_billing, allow_overage=options.allow_overage
            )
            cli = ClaudeCLI(cli=options.cli, settings=settings)
            tools = tuple(options.claude_tools.split(",")) if options.claude_tools else ()
            cwd = Path(options.claude_tools_dir or os.getcwd()).expanduser().resolve() if tools else paths.workspace()
            plan = conversation.plan(
                prompt.messages,
                placement=placement,
                transcript_exists=lambda sid: paths.transcript_exists(sid, cwd),
            )
            if tools:
                notify(f"claude-max: Claude Code tools enabled ({', '.join(tools)}); they run on this machine in {cwd}")
            timeouts = Timeouts(
                start=options.start_timeout or Timeouts.start,
                idle=options.idle_timeout or Timeouts.idle,
                total=options.timeout or Timeouts.total,
            )
            extra_env = {"CLAUDE_CODE_MAX_RETRIES": str(options.max_retries)} if options.max_retries is not None else {}
            for attempt in (1, 2):
                spec = CommandSpec(
                    model=self.cli_model,
                    system_prompt=plan.system,
                    placement=placement,
                    resume=plan.resume,
                    json_schema=prompt.schema,  # type: ignore[arg-type]
                    effort=options.effort.value if options.effort else None,
                    tools=tools,
                    extra_env=extra_env,
                )
                if plan.notice:
                    notify(plan.notice)
                produced = False
                try:
                    async for event in cli.prompt(
                        spec, plan.content, policy=policy, timeouts=timeouts, structured=bool(prompt.schema), cwd=cwd
                    ):
                        if isinstance(event, Text):
                            produced = True
                            yield StreamEvent("text", event.text)
                        elif isinstance(event, Reasoning):
                            if not prompt.hide_reasoning:
                                yield StreamEvent("reasoning", event.text)
                        elif isinstance(event, Notice):
                            notify(event.message)
                        elif isinstance(event, ToolUse):
                            notify(f"claude-max: Claude Code ran {event.name}({_short(event.input)})")
                        elif isinstance(event, Done):
                            self._record(response, event.outcome, plan)
                            # Carries the session id onto the response's text for `llm -c`.
                            yield StreamEvent(
                                "text",
                                "",
                                provider_metadata={conversation.META: {"session_id": event.outcome.session_id}},
                            )
                    return
                except SessionNotFound:
                    if attempt == 2 or produced or plan.resume is None:
                        raise
                    plan = conversation.plan(prompt.messages, placement=placement, transcript_exists=lambda sid: False)
        except PaidUsageRefused as exc:
            if exc.partial_text:
                # Already paid for; a caller of .text() never saw the streamed part, so keep it here.
                exc.message += f"\n\nThe answer served from extra usage was:\n{exc.partial_text}"
                exc.args = (exc.message,)
            raise as_llm_error(exc) from None
        except ClaudeMaxError as exc:
            raise as_llm_error(exc) from None

    def _record(self, response: Any, outcome: Outcome, plan: conversation.TurnPlan) -> None:
        usage = outcome.usage
        details: dict[str, int] = {}
        for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            if usage.get(key):
                details[key] = int(usage[key])
        thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
        if thinking:
            details["thinking_tokens"] = int(thinking)
        response.set_usage(input=usage.get("input_tokens"), output=usage.get("output_tokens"), details=details or None)
        if outcome.model:
            response.set_resolved_model(outcome.model)
        raw = outcome.result.raw
        response.response_json = {
            "session_id": outcome.session_id,
            "model": outcome.model,
            "continued": "resumed" if plan.resume else ("replayed" if plan.replayed else "new"),
            "billing": {**outcome.route.as_dict(), "verified": outcome.verified},
            "rate_limit": outcome.rate_limit.raw if outcome.rate_limit else None,
            "cost_estimate_usd": {
                "amount": outcome.cost_usd,
                "note": "the CLI's list-price estimate, not a charge to your subscription",
            },
            "stop_reason": outcome.result.stop_reason,
            "num_turns": raw.get("num_turns"),
            "duration_ms": raw.get("duration_ms"),
            "duration_api_ms": raw.get("duration_api_ms"),
            "warnings": outcome.warnings,
        }


def _short(value: Any, limit: int = 80) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in value.items()) if isinstance(value, dict) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ClaudeMax(_Shared, llm.Model):
    def execute(
        self, prompt: llm.Prompt, stream: bool, response: llm.Response, conversation: llm.Conversation | None
    ) -> Iterator[StreamEvent]:
        yield from iterate_sync(lambda: self._stream(prompt, stream, response))


class AsyncClaudeMax(_Shared, llm.AsyncModel):
    kind = " (async)"

    async def execute(  # type: ignore[override]
        self, prompt: llm.Prompt, stream: bool, response: llm.AsyncResponse, conversation: llm.AsyncConversation | None
    ) -> AsyncIterator[StreamEvent]:
        async for event in self._stream(prompt, stream, response):
            yield event
