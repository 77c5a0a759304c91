"""The llm models: Claude through the user's own Claude Code CLI, billed to their plan.

``ClaudeMax`` and ``AsyncClaudeMax`` share one core (``_Shared._stream``, an async generator). Every CLI
runs on the plugin's background loop (:mod:`llm_claude_max.runner.loop`), so a CLI paused at a tool call
outlives the ``execute()`` that started it and the next ``execute()`` (with the tool results) finds it.
The sync model runs the core there; the async model runs it on its own loop and reaches the CLI there.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import llm
from llm.parts import StreamEvent
from pydantic import Field, field_validator

from . import catalog, config, content, conversation, progress, terminal, validation, warm
from .catalog import CatalogModel
from .content import Turn
from .errors import ClaudeMaxError, ClaudeTimeout, InvalidRequest
from .runner import builtin_tools, children
from .runner.command import CommandSpec, SystemPlacement
from .runner.loop import background
from .runner.turn import (
    ClaudeToolRan,
    Deferred,
    Done,
    Notice,
    Reasoning,
    Summary,
    Text,
    ToolCallArgs,
    ToolCallStarted,
    TurnEvent,
)
from .server.client import Finished
from .tools import ToolSpec

# The runner (processes, the pool, the billing guard) is imported when a prompt runs its own CLI: a prompt
# through a server does not need it.


class ClaudeMaxOptions(llm.Model.Options):
    effort: str | None = Field(
        default=None,
        description=f"Reasoning effort: {', '.join(catalog.EFFORTS)} (default: the CLI's, medium)",
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
        "MACHINE without asking: file tools (Read, Write, Edit, Grep, Glob) only inside claude_tools_dir; Bash and "
        "web tools are not confined, this is no sandbox (default: none)",
    )
    claude_tools_dir: str | None = Field(
        default=None, description="Working directory for Claude Code tools (default: the current directory)"
    )
    cli: str | None = Field(
        default=None, description="Path of the claude executable (default: $CLAUDE_MAX_CLI or PATH)"
    )

    @field_validator("effort")
    @classmethod
    def _effort(cls, value: str | None) -> str | None:
        if value is not None and value not in catalog.EFFORTS:
            raise ValueError(f"must be one of {', '.join(catalog.EFFORTS)}")
        return value

    @field_validator("claude_tools")
    @classmethod
    def _tool_names(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return ",".join(builtin_tools.parse(value)) or None

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
    supports_tools = True
    attachment_types: set[str] | frozenset[str] = content.ATTACHMENT_TYPES
    Options = ClaudeMaxOptions
    kind = ""

    def __init__(self, entry: CatalogModel) -> None:
        self.entry = entry
        self.model_id = entry.model_id
        self.cli_model = None if entry.alias == "default" else entry.alias

    def __str__(self) -> str:
        return f"Claude Max via Claude Code CLI{self.kind}: {self.model_id}"

    async def _stream(self, prompt: llm.Prompt, response: Any) -> AsyncIterator[StreamEvent]:
        options: ClaudeMaxOptions = prompt.options  # type: ignore[assignment]
        try:
            settings = config.Settings.from_env()
            server = os.environ.get(config.SERVER)
            if server:
                source = self._via_server(prompt, options, server, os.environ.get(config.SERVER_KEY))
                first = f"waiting for the claude-max server at {server}"
            else:
                source = warm.route(
                    os.environ,
                    options,
                    via=lambda found: self._via_server(prompt, options, found.url, found.key, uds=found.socket),
                    local=lambda: self._local(prompt, options, settings),
                )
                first = progress.STARTING
            events = progress.watch(source, first=first)
            async for event in events:
                for out in self._translate(event, prompt, response):
                    yield out
        except ClaudeMaxError as exc:
            raise as_llm_error(exc) from None

    def _translate(self, event: Any, prompt: llm.Prompt, response: Any) -> Iterator[StreamEvent]:
        """One engine event as llm stream events (and the response's tool calls, usage and metadata)."""
        if isinstance(event, Text):
            yield StreamEvent("text", event.text)
        elif isinstance(event, Reasoning):
            if not prompt.hide_reasoning:
                yield StreamEvent("reasoning", event.text)
        elif isinstance(event, ToolCallStarted):
            yield StreamEvent("tool_call_name", event.name, tool_call_id=event.id)
        elif isinstance(event, ToolCallArgs):
            yield StreamEvent("tool_call_args", event.chunk, tool_call_id=event.id)
        elif isinstance(event, Notice):
            notify(event.message)
        elif isinstance(event, ClaudeToolRan):
            outcome = f" and it failed: {event.error}" if event.error else ""
            notify(f"claude-max: Claude Code ran {event.name}({_short(event.input)}){outcome}")
        elif isinstance(event, Finished):
            self._record(response, event.summary)
            # The session id rides on the response's parts, for `llm -c` and for tool results.
            meta = {conversation.META: {"session_id": event.summary.session_id}}
            for call in event.calls:
                response.add_tool_call(
                    llm.ToolCall(name=call.name, arguments=dict(call.arguments), tool_call_id=call.id)
                )
            if event.calls:
                yield StreamEvent("tool_call_args", "", tool_call_id=event.calls[0].id, provider_metadata=meta)
            else:
                yield StreamEvent("text", "", provider_metadata=meta)

    async def _local(
        self, prompt: llm.Prompt, options: ClaudeMaxOptions, settings: config.Settings
    ) -> AsyncIterator[Any]:
        """The prompt through the user's CLI, on the background loop that keeps paused processes."""
        from . import guard
        from .request import TurnRequest
        from .runner.client import ClaudeCLI
        from .runner.pool import Start
        from .runner.session import Timeouts

        placement = options.system_placement or SystemPlacement.REPLACE
        policy = guard.Policy.from_settings(
            settings, allow_api_billing=options.allow_api_billing, allow_overage=options.allow_overage
        )
        cli = ClaudeCLI(cli=options.cli, settings=settings)
        claude_tools = tuple(options.claude_tools.split(",")) if options.claude_tools else ()
        cwd = Path(options.claude_tools_dir or os.getcwd()).expanduser().resolve() if claude_tools else None
        if claude_tools:
            notify(
                f"claude-max: Claude Code tools enabled ({', '.join(claude_tools)}); they run on this machine in {cwd}"
            )
        timeouts = Timeouts(
            start=options.start_timeout or Timeouts.start,
            idle=options.idle_timeout or Timeouts.idle,
            total=options.timeout or Timeouts.total,
        )
        split = conversation.split(prompt.messages)
        spec = CommandSpec(
            model=self.cli_model,
            system_prompt=(split.system or None) if placement is not SystemPlacement.USER else None,
            placement=placement,
            json_schema=prompt.schema,  # type: ignore[arg-type]
            effort=self._effort(options.effort),
            claude_tools=claude_tools,
            caller_tools=tool_specs(prompt.tools),
            extra_env={"CLAUDE_CODE_MAX_RETRIES": str(options.max_retries)} if options.max_retries is not None else {},
        )
        request = TurnRequest(
            spec, split.history, split.new, system=split.system or None, session=split.session, cwd=cwd
        )
        loop = background()
        start: Start | None = None
        async for event in loop.aiterate(lambda: loop.pool.run(request, cli, policy=policy, timeouts=timeouts)):
            if isinstance(event, Start):
                start = event
                if event.continued in ("seeded", "replayed"):
                    why = (
                        f"the Claude Code session {split.session} is not on this machine"
                        if split.session
                        else "this conversation has no Claude Code session yet"
                    )
                    notify(f"claude-max: {why}; replaying {len(split.history)} earlier message(s).")
            elif isinstance(event, (Done, Deferred)):
                continued = start.continued if start is not None else "new"
                calls = event.calls if isinstance(event, Deferred) else ()
                yield Finished(event.outcome.summary(continued), calls)
            else:
                yield event

    async def _via_server(
        self, prompt: llm.Prompt, options: ClaudeMaxOptions, url: str, key: str | None, *, uds: str | None = None
    ) -> AsyncIterator[TurnEvent | Finished]:
        """The prompt through a running `claude-max serve` (``CLAUDE_MAX_SERVER``, or the warm server)."""
        from .runner.timeouts import DEFAULT_TIMEOUTS
        from .server import client

        local_only = {"allow_api_billing", "allow_overage", "claude_tools", "claude_tools_dir", "cli"}
        given = sorted(name for name in local_only if getattr(options, name) is not None)
        if given:
            raise InvalidRequest(
                f"{', '.join(given)} cannot apply through claude-max serve (the server's own settings decide); "
                "unset CLAUDE_MAX_SERVER to run the CLI here."
            )
        split = conversation.split(prompt.messages)
        turns = [*split.history, Turn("user", split.new)]
        # Checked here too: text the CLI cannot carry cannot even be encoded for the server.
        validation.check_request(system=split.system, messages=[t.blocks for t in turns], json_schema=prompt.schema)  # type: ignore[arg-type]
        extension: dict[str, Any] = {"system_placement": (options.system_placement or SystemPlacement.REPLACE).value}
        if options.effort:
            extension["effort"] = self._effort(options.effort)
        if options.max_retries is not None:
            extension["max_retries"] = options.max_retries
        events = client.prompt(
            url,
            key,
            model=self.model_id,
            messages=client.openai_messages(split.system or None, turns),
            schema=prompt.schema,  # type: ignore[arg-type]
            extension=extension,
            tools=tool_specs(prompt.tools),
            read_timeout=(options.idle_timeout or DEFAULT_TIMEOUTS.idle) + 30,
            connect_timeout=options.start_timeout or 5.0,
            uds=uds,
        )
        total = options.timeout or DEFAULT_TIMEOUTS.total
        # The deadline bounds each read, never the caller's own work between two events.
        deadline = None if total is None else asyncio.get_running_loop().time() + total
        answered = [str(b.get("tool_use_id")) for b in split.new if b.get("type") == "tool_result"]
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ClaudeTimeout(f"No complete answer from the claude-max server within {total:g} s.") from None
                if isinstance(event, Finished):
                    paused = [call.id for call in event.calls]
                    client.track_calls(url, key, uds, paused=paused, answered=answered)
                yield event
        finally:
            await events.aclose()

    def _effort(self, effort: str | None) -> str | None:
        """The effort, if this model takes it (the CLI lists each model's levels)."""
        if effort is not None and self.entry.efforts and effort not in self.entry.efforts:
            raise InvalidRequest(f"{self.model_id} takes the efforts {', '.join(self.entry.efforts)}, not {effort!r}.")
        return effort

    def _record(self, response: Any, summary: Summary) -> None:
        usage = summary.usage
        details: dict[str, int] = {}
        for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            if usage.get(key):
                details[key] = int(usage[key])
        thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
        if thinking:
            details["thinking_tokens"] = int(thinking)
        response.set_usage(input=usage.get("input_tokens"), output=usage.get("output_tokens"), details=details or None)
        if summary.model:
            response.set_resolved_model(summary.model)
        response.response_json = {
            "session_id": summary.session_id,
            "model": summary.model,
            "continued": summary.continued,
            "billing": dict(summary.billing),
            "rate_limit": summary.rate_limit,
            "cost_estimate_usd": {
                "amount": summary.cost_usd,
                "note": "the CLI's list-price estimate, not a charge to your subscription",
            },
            **summary.extra,
            "warnings": list(summary.warnings),
        }


def _short(value: Any, limit: int = 80) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in value.items()) if isinstance(value, dict) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tool_specs(tools: Any) -> tuple[ToolSpec, ...]:
    """llm's function tools (``-T``, ``--functions``, Toolboxes) as neutral specs."""
    specs = []
    for tool in tools or ():
        if isinstance(tool, llm.Tool):
            schema = tool.input_schema or {"type": "object", "properties": {}}
            specs.append(ToolSpec(tool.name, tool.description or "", schema))
    return tuple(specs)


class ClaudeMax(_Shared, llm.Model):
    def execute(
        self, prompt: llm.Prompt, stream: bool, response: llm.Response, conversation: llm.Conversation | None
    ) -> Iterator[StreamEvent]:
        children.install()  # SIGTERM/SIGHUP end the CLIs too: handlers need the caller's (main) thread
        yield from terminal.relay(background().iterate(lambda: self._stream(prompt, response)), stream=stream)


class AsyncClaudeMax(_Shared, llm.AsyncModel):
    kind = " (async)"

    async def execute(  # type: ignore[override]
        self, prompt: llm.Prompt, stream: bool, response: llm.AsyncResponse, conversation: llm.AsyncConversation | None
    ) -> AsyncIterator[StreamEvent]:
        children.install()  # SIGTERM/SIGHUP end the CLIs too: handlers need the caller's (main) thread
        async for event in terminal.arelay(self._stream(prompt, response), stream=stream):
            yield event
