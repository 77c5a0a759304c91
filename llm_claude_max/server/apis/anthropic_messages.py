"""``POST /v1/messages``: the Anthropic Messages API (the official ``anthropic`` SDKs and what is built on
them), tool use included; ``POST /v1/messages/count_tokens`` answers 501 (see :func:`count_tokens`).

The same rules as the OpenAI APIs: every parameter is applied, refused with a 400 that says why, or
accepted and named in ``X-Claude-Max-Ignored`` (docs/server.md has the table). Anthropic's server tools
(``web_search_…``, ``bash_…``, ``code_execution_…``...) are refused: only the caller's own tools can run.
``tool_choice`` ``any`` / ``tool`` are applied as for chat completions, through the CLI's structured output.
Thinking: the CLI's models think adaptively; ``output_config.effort`` is the CLI's ``--effort``; a budget
cannot be set (named as ignored); ``thinking: disabled`` leaves thinking out of the answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator
from sse_starlette import ServerSentEvent

from ...content import Block, Turn, replay_block, text_block
from ...errors import ClaudeMaxError, InvalidRequest, PaidUsageRefused, StructuredOutputRetried
from ...request import TurnRequest
from ...runner.command import MAX_OUTPUT_TOKENS, CommandSpec, SystemPlacement
from ...runner.pool import Start
from ...runner.session import (
    Deferred,
    Done,
    Notice,
    Reasoning,
    StructuredDelta,
    Text,
    ToolCallArgs,
    ToolCallStarted,
    TurnEvent,
)
from ...tools import ToolCall, ToolSpec
from ..exchange import Call, Step
from . import common
from .common import StrictModel
from .openai_chat import Extension

# -- request models -----------------------------------------------------------------------------------


class CacheControl(StrictModel):
    """Accepted and dropped: the CLI places its own cache breakpoints."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(StrictModel):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[Any] | None = None


class Base64Source(StrictModel):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(StrictModel):
    type: Literal["url"]
    url: str


class PlainTextSource(StrictModel):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class OtherSource(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


ImageSource = Annotated[
    Annotated[Base64Source, Tag("base64")] | Annotated[URLSource, Tag("url")] | Annotated[OtherSource, Tag("other")],
    Discriminator(common.type_tag(("base64", "url"))),
]
DocumentSource = Annotated[
    Annotated[Base64Source, Tag("base64")]
    | Annotated[PlainTextSource, Tag("text")]
    | Annotated[OtherSource, Tag("other")],
    Discriminator(common.type_tag(("base64", "text"))),
]


class ImageBlock(StrictModel):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


class DocumentBlock(StrictModel):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(StrictModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: dict[str, Any] | None = None


ResultPart = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(StrictModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultPart] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(BaseModel):
    """The model's thinking, sent back by clients: dropped (the CLI keeps its own)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["thinking", "redacted_thinking"]


class OtherBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


BLOCKS = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[ThinkingBlock, Tag("redacted_thinking")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(common.type_tag(BLOCKS)),
]


class MessageParam(StrictModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class CustomTool(StrictModel):
    type: Literal["custom"] | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None
    strict: bool | None = None
    input_examples: list[dict[str, Any]] | None = None
    eager_input_streaming: bool | None = None


class ServerTool(BaseModel):
    """One of Anthropic's server tools (``web_search_20250305``, ``bash_20250124``...): refused."""

    model_config = ConfigDict(extra="allow")
    type: str


Tool = Annotated[
    Annotated[CustomTool, Tag("custom")] | Annotated[ServerTool, Tag("other")],
    Discriminator(common.type_tag(("custom",), default="custom")),
]


class ToolChoice(StrictModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(StrictModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    display: Literal["summarized", "omitted"] | None = None


class OutputFormat(StrictModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(StrictModel):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


class Metadata(StrictModel):
    user_id: str | None = None


IGNORED = ("temperature", "top_p", "top_k", "service_tier", "cache_control", "speed", "inference_geo")
"""Accepted and named in X-Claude-Max-Ignored: sampling knobs and settings the CLI decides itself."""
REFUSED = {
    "container": "Anthropic's code-execution containers are not available",
    "mcp_servers": "remote MCP servers are not available (offer their tools as your own)",
    "context_management": "Anthropic's context management is not available (the CLI manages its own context)",
    "diagnostics": "request diagnostics are not available",
}


class MessagesRequest(BaseModel):
    """The request body of ``POST /v1/messages``."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[MessageParam] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None
    metadata: Metadata | None = None
    claude_max: Extension | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, value: list[str] | None) -> list[str] | None:
        if value and any(not s.strip() for s in value):
            raise ValueError("each stop sequence must contain non-whitespace characters")  # as Anthropic's API
        return value


# -- response models (for the OpenAPI document; answers are checked against them in the tests) ---------


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class MessageObject(BaseModel):
    """The answer of ``POST /v1/messages`` without ``stream`` (with it: Anthropic's server-sent events,
    ``message_start`` … ``message_stop``)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: MessageUsage
    claude_max: dict[str, Any] | None = Field(
        default=None, description="What the CLI reported: session, billing route, rate limit"
    )


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error answer of ``/v1/messages``."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# -- parsing ------------------------------------------------------------------------------------------


@dataclass
class Context:
    """How to answer one message."""

    model: str
    stops: tuple[str, ...]
    forced: tuple[ToolSpec, ...] = ()
    single_call: bool = False
    thinking: bool = True
    """Thinking goes in the answer (not with ``thinking`` disabled or its display omitted)."""
    id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")


class Adapter:
    """The Messages API for the exchange."""

    def __init__(self, lock_until: Callable[[], int | None] | None = None) -> None:
        self._lock_until = lock_until

    def parse(self, body: Any, partition: str) -> Call:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        try:
            req = MessagesRequest.model_validate(body)
        except ValidationError as exc:
            raise common.invalid(exc) from None
        _refuse(req)
        model, cli_model = common.resolve_model(req.model)
        specs = _tool_specs(req.tools or [])
        forced, offered = _tool_choice(req.tool_choice, specs)
        output_format = (req.output_config.format if req.output_config else None) or req.output_format
        if forced and output_format is not None:
            raise InvalidRequest("`tool_choice` `any` or `tool` cannot be combined with an output format.")
        turns = _turns(req.messages)
        if not offered:
            turns = [Turn(t.role, tuple(replay_block(b) for b in t.blocks)) for t in turns]
        if not turns or turns[-1].role != "user":
            raise InvalidRequest(
                "The last message must be a user message: the Claude Code CLI cannot continue (prefill) "
                "an assistant message."
            )
        system = _system(req.system)
        extension = req.claude_max or Extension()
        placement = SystemPlacement(extension.system_placement or SystemPlacement.REPLACE)
        extra_env = {MAX_OUTPUT_TOKENS: str(req.max_tokens)}
        if extension.max_retries is not None:
            extra_env["CLAUDE_CODE_MAX_RETRIES"] = str(extension.max_retries)
        effort = req.output_config.effort if req.output_config else None
        spec = CommandSpec(
            model=cli_model,
            system_prompt=system if placement is not SystemPlacement.USER else None,
            placement=placement,
            json_schema=common.choice_schema(forced) if forced else output_format.schema_ if output_format else None,
            effort=effort or extension.effort,
            caller_tools=offered,
            extra_env=extra_env,
        )
        request = TurnRequest(spec, tuple(turns[:-1]), turns[-1].blocks, system=system, partition=partition)
        thinking = req.thinking
        context = Context(
            model=model,
            stops=tuple(req.stop_sequences or ()),
            forced=forced,
            single_call=bool(req.tool_choice and req.tool_choice.disable_parallel_tool_use),
            thinking=not (thinking and (thinking.type == "disabled" or thinking.display == "omitted")),
        )
        ignored = [k for k in IGNORED if body.get(k) not in (None, [], {})]
        if thinking is not None and thinking.type != "adaptive":
            ignored.append("thinking.budget_tokens" if thinking.type == "enabled" else "thinking")
        return Call(request, req.stream, common.ignored_header(ignored), context)

    def render(self, call: Call, step: Step) -> dict[str, Any]:
        context: Context = call.context
        end = step.end
        content: list[dict[str, Any]] = []
        thinking = "".join(e.text for e in step.events if isinstance(e, Reasoning))
        if thinking and context.thinking:
            content.append({"type": "thinking", "thinking": thinking, "signature": ""})
        text, stop = end.outcome.text, None
        if context.forced:
            text = ""
        found = common.find_stop(text, context.stops)
        if found is not None:
            text, stop = text[: found[0]], found[1]
        if text:
            content.append({"type": "text", "text": text})
        calls = [] if stop is not None else _calls_of(context, end)
        content += [_tool_use(c) for c in calls]
        return {
            "id": context.id,
            "type": "message",
            "role": "assistant",
            "model": end.outcome.model or context.model,
            "content": content,
            "stop_reason": _stop_reason(end, stop, calls),
            "stop_sequence": stop,
            "usage": usage(end),
            "claude_max": common.metadata(end.outcome, step.start),
        }

    async def stream(self, call: Call, events: AsyncIterator[Start | TurnEvent]) -> AsyncIterator[ServerSentEvent]:
        context: Context = call.context
        state = _Stream(context)
        yield state.start_event()
        yield _event("ping", {"type": "ping"})
        async for event in events:
            for out in state.feed(event):
                yield out
            if state.finished:
                break

    def error(self, exc: ClaudeMaxError) -> tuple[int, dict[str, Any], dict[str, str]]:
        until = self._lock_until() if isinstance(exc, PaidUsageRefused) and self._lock_until else None
        status, headers = common.error_status(exc, lock_until=until)
        return status, error_body(str(exc), error_type(status, exc.code)), headers

    def stream_error(self, call: Call, exc: ClaudeMaxError) -> list[ServerSentEvent]:
        status, _ = common.error_status(exc)
        return [_event("error", error_body(str(exc), error_type(status, exc.code)))]


def _refuse(req: MessagesRequest) -> None:
    for name, value in (req.model_extra or {}).items():
        if name in IGNORED or value is None:
            continue
        if name in REFUSED:
            raise InvalidRequest(f"`{name}` is not supported: {REFUSED[name]}.")
        raise InvalidRequest(f"{name}: Extra inputs are not permitted")
    for n, tool in enumerate(req.tools or []):
        if isinstance(tool, ServerTool):
            raise InvalidRequest(
                f"tools.{n}: a tool of type `{tool.type}` is not a custom tool (name, description, "
                "input_schema). Anthropic's server tools are not available through claude-max serve: only your "
                "own tools, which run in your program."
            )
    choice = req.tool_choice
    if choice is not None and (choice.type == "tool") != (choice.name is not None):
        raise InvalidRequest("tool_choice.name: required with type `tool`, and only with it.")


def _system(system: str | list[TextBlock] | None) -> str | None:
    if isinstance(system, list):
        system = "\n\n".join(b.text for b in system if b.text)
    return system or None


def _tool_specs(tools: Sequence[Any]) -> tuple[ToolSpec, ...]:
    specs = tuple(common.tool_spec(t.name, t.description, t.input_schema, f"tools.{n}") for n, t in enumerate(tools))
    if len({s.name for s in specs}) < len(specs):
        raise InvalidRequest("Two tools have the same name.")
    return specs


def _tool_choice(
    choice: ToolChoice | None, specs: tuple[ToolSpec, ...]
) -> tuple[tuple[ToolSpec, ...], tuple[ToolSpec, ...]]:
    """(the tools a call is forced among, the tools offered)."""
    if choice is None or choice.type == "auto":
        return (), specs
    if choice.type == "none":
        return (), ()
    if choice.type == "any":
        if not specs:
            raise InvalidRequest("`tool_choice` `any` needs tools.")
        return specs, specs
    named = tuple(s for s in specs if s.name == choice.name)
    if not named:
        raise InvalidRequest(f"`tool_choice` names {choice.name!r}, which is not among the tools.")
    return named, named


def _turns(messages: Sequence[MessageParam]) -> list[Turn]:
    turns: list[Turn] = []
    for n, message in enumerate(messages):
        if isinstance(message.content, str):
            blocks = [text_block(message.content)] if message.content else []
        else:
            blocks = [b for m, block in enumerate(message.content) for b in _block(block, f"messages.{n}.content.{m}")]
        if turns and turns[-1].role == message.role:  # consecutive messages of one role are one turn
            turns[-1] = Turn(message.role, (*turns[-1].blocks, *blocks))
        elif blocks:
            turns.append(Turn(message.role, tuple(blocks)))
    return turns


def _block(block: Any, where: str) -> list[Block]:
    if isinstance(block, TextBlock):
        return [text_block(block.text)] if block.text else []
    if isinstance(block, (ImageBlock, DocumentBlock)):
        return [_media(block, where, allow_remote=True)]
    if isinstance(block, ToolUseBlock):
        return [{"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}]
    if isinstance(block, ToolResultBlock):
        content: str | list[Block] = block.content if isinstance(block.content, str) else []
        if isinstance(block.content, list):
            content = [_result_part(part, f"{where}.content.{n}") for n, part in enumerate(block.content)]
        result: Block = {"type": "tool_result", "tool_use_id": block.tool_use_id, "content": content}
        if block.is_error:
            result["is_error"] = True
        return [result]
    if isinstance(block, ThinkingBlock):
        return []  # the CLI keeps the model's thinking itself
    raise InvalidRequest(
        f"{where}: blocks of type `{block.type}` are not supported (text, image, document, tool_use, "
        "tool_result and thinking are)."
    )


def _result_part(part: Any, where: str) -> Block:
    if isinstance(part, TextBlock):
        return text_block(part.text)
    return _media(part, where, allow_remote=False)


def _media(block: ImageBlock | DocumentBlock, where: str, *, allow_remote: bool) -> Block:
    source = block.source
    if isinstance(source, Base64Source):
        return common.base64_block(source.media_type, source.data, f"{where}.source")
    if isinstance(source, PlainTextSource):
        title = f"{block.title}\n\n" if isinstance(block, DocumentBlock) and block.title else ""
        return text_block(f"<document>\n{title}{source.data}\n</document>")
    if isinstance(source, URLSource) and isinstance(block, ImageBlock) and allow_remote:
        return common.remote_block(source.url)
    raise InvalidRequest(
        f"{where}.source: sources of type `{source.type}` are not supported here: send the data as base64"
        + (" (images may also be URLs with --allow-remote-images)." if allow_remote else ".")
    )


# -- answers ------------------------------------------------------------------------------------------


def _calls_of(context: Context, end: Done | Deferred) -> list[ToolCall]:
    if isinstance(end, Deferred):
        calls = list(end.calls)
    elif context.forced:
        name, arguments = common.chosen_call(context.forced, end.outcome.structured_output)
        calls = [ToolCall(f"toolu_{uuid.uuid4().hex[:24]}", name, arguments)]
    else:
        return []
    return calls[:1] if context.single_call else calls


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}


def _stop_reason(end: Done | Deferred, stop: str | None, calls: Sequence[ToolCall]) -> str:
    if stop is not None:
        return "stop_sequence"
    if calls:
        return "tool_use"
    return "max_tokens" if common.cut_by_limit(end.outcome) else "end_turn"


def usage(end: Done | Deferred) -> dict[str, int]:
    u = common.token_usage(end.outcome)
    return {
        "input_tokens": u["input"],
        "output_tokens": u["output"],
        "cache_creation_input_tokens": u["cache_written"],
        "cache_read_input_tokens": u["cache_read"],
    }


def _event(kind: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(event=kind, data=json.dumps(data, ensure_ascii=False, separators=(",", ":")))


BLOCK_STARTS = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "", "signature": ""}}


@dataclass
class _Stream:
    """Anthropic's event stream of one step: content blocks opened, streamed and stopped in order."""

    context: Context
    index: int = -1
    open: str | None = None
    """The kind of the open block: thinking, text or tool_use."""
    start: Start | None = None
    stops: common.StopFilter = field(init=False)
    calls: dict[str, int] = field(default_factory=dict)
    """Streamed tool calls: id -> block index."""
    forced_id: str | None = None
    streamed_json: list[str] = field(default_factory=list)
    finished: bool = False

    def __post_init__(self) -> None:
        self.stops = common.StopFilter(self.context.stops)

    def start_event(self) -> ServerSentEvent:
        context = self.context
        message: dict[str, Any] = {"id": context.id, "type": "message", "role": "assistant", "model": context.model}
        message |= {"content": [], "stop_reason": None, "stop_sequence": None}
        # Not known before the step ends: the real counts come in message_delta.
        message["usage"] = {"input_tokens": 0, "output_tokens": 0}
        return _event("message_start", {"type": "message_start", "message": message})

    def feed(self, event: Start | TurnEvent) -> list[ServerSentEvent]:
        context = self.context
        if isinstance(event, Start):
            self.start = event
        elif self.stops.stopped and not isinstance(event, (Done, Deferred)):
            return []  # after a stop sequence, nothing more is shown; the step still ends for its usage
        elif isinstance(event, Text) and not context.forced and self.streamed_json:
            _check_final_json(self.streamed_json, event.text)
        elif isinstance(event, Text) and not context.forced:
            shown = self.stops.feed(event.text)
            return self._delta("text", {"type": "text_delta", "text": shown}) if shown else self._closed_if_stopped()
        elif isinstance(event, Reasoning) and event.text and context.thinking:
            return self._delta("thinking", {"type": "thinking_delta", "thinking": event.text})
        elif isinstance(event, ToolCallStarted):
            return self._call_start(event.id, event.name)
        elif isinstance(event, ToolCallArgs) and self.calls.get(event.id) == self.index:
            return self._delta("tool_use", {"type": "input_json_delta", "partial_json": event.chunk})
        elif isinstance(event, StructuredDelta):
            return self._structured(event.chunk)
        elif isinstance(event, Notice):
            return [ServerSentEvent(comment=event.message)]
        elif isinstance(event, (Done, Deferred)):
            return self._end(event)
        return []

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        if self.open != kind and kind == "tool_use":
            return []  # a call not shown (one call at a time)
        if self.open != kind:
            out += self._open(BLOCK_STARTS[kind], kind)
        out.append(_event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}))
        return out + self._closed_if_stopped()

    def _closed_if_stopped(self) -> list[ServerSentEvent]:
        return self._close() if self.stops.stopped else []

    def _open(self, block: dict[str, Any], kind: str) -> list[ServerSentEvent]:
        out = self._close()
        self.index += 1
        self.open = kind
        start = {"type": "content_block_start", "index": self.index, "content_block": block}
        return [*out, _event("content_block_start", start)]

    def _close(self) -> list[ServerSentEvent]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _call_start(self, call_id: str, name: str) -> list[ServerSentEvent]:
        if self.calls and self.context.single_call:
            return []
        out = self._open({"type": "tool_use", "id": call_id, "name": name, "input": {}}, "tool_use")
        self.calls[call_id] = self.index
        return out

    def _structured(self, chunk: str) -> list[ServerSentEvent]:
        forced = self.context.forced
        if not forced:
            self.streamed_json.append(chunk)
            return self._delta("text", {"type": "text_delta", "text": chunk})  # the JSON as it is written
        if len(forced) > 1:
            return []  # {"name", "arguments"}: shown whole at the end
        out: list[ServerSentEvent] = []
        if self.forced_id is None:
            self.forced_id = f"toolu_{uuid.uuid4().hex[:24]}"
            out += self._call_start(self.forced_id, forced[0].name)
        return out + self._delta("tool_use", {"type": "input_json_delta", "partial_json": chunk})

    def _end(self, end: Done | Deferred) -> list[ServerSentEvent]:
        context = self.context
        out: list[ServerSentEvent] = []
        rest = self.stops.flush()
        if rest:
            out += self._delta("text", {"type": "text_delta", "text": rest})
        stop = self.stops.matched
        calls = [] if stop is not None else _calls_of(context, end)
        if context.forced and calls and self.forced_id is not None:
            calls = [ToolCall(self.forced_id, calls[0].name, calls[0].arguments)]
        for call in calls:  # calls that were not streamed (a forced call chosen among several)
            if call.id not in self.calls:
                out += self._call_start(call.id, call.name)
                out += self._delta("tool_use", {"type": "input_json_delta", "partial_json": json.dumps(call.arguments)})
        out += self._close()
        delta = {"stop_reason": _stop_reason(end, stop, calls), "stop_sequence": stop}
        message_delta = {"type": "message_delta", "delta": delta, "usage": usage(end),
                         "claude_max": common.metadata(end.outcome, self.start)}  # fmt: skip
        out += [_event("message_delta", message_delta), _event("message_stop", {"type": "message_stop"})]
        self.finished = True
        return out


def _check_final_json(streamed: list[str], text: str) -> None:
    try:
        same = json.loads("".join(streamed)) == json.loads(text)
    except ValueError:
        same = False
    if not same:
        raise StructuredOutputRetried(
            "The structured output streamed so far was rejected by the CLI's schema check and written again; "
            f"the final value is: {text}"
        )


# -- errors -------------------------------------------------------------------------------------------

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "request_too_large", 415: "invalid_request_error",
         429: "rate_limit_error", 501: "not_supported_error", 504: "timeout_error"}  # fmt: skip


def error_type(status: int, code: str) -> str:
    if status == 503 and code == "api_error":
        return "overloaded_error"  # the API was overloaded after the CLI's retries
    return TYPES.get(status, "api_error")


def error_body(message: str, kind: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


COUNT_TOKENS_REFUSAL = (
    "Token counting is not available through claude-max serve: it needs Anthropic's count_tokens endpoint, "
    "which the Claude Code CLI does not offer, and claude-max never calls Anthropic's API itself. Every "
    "answer's `usage` has the exact counts."
)


def count_tokens_refusal() -> tuple[int, dict[str, Any]]:
    """``POST /v1/messages/count_tokens``: 501, with the reason. An estimate would be a number clients take
    as exact."""
    return 501, error_body(COUNT_TOKENS_REFUSAL, TYPES[501])
