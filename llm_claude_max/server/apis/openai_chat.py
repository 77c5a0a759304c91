"""``POST /v1/chat/completions``: the OpenAI Chat Completions API, function calling included.

Every parameter is applied, refused with a 400 that says why, or (sampling knobs the CLI cannot take
that frameworks send by default) accepted and named in ``X-Claude-Max-Ignored`` (docs/server.md has the
table). ``tool_choice`` ``required`` or a named function is applied through the CLI's structured output
(``--json-schema``, which the CLI enforces): the answer is a call of that tool.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
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

# -- request models -----------------------------------------------------------------------------------


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class RefusalPart(StrictModel):
    type: Literal["refusal"]
    refusal: str


class ImageURL(StrictModel):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(StrictModel):
    type: Literal["image_url"]
    image_url: ImageURL | str


class FileData(StrictModel):
    file_data: str | None = None
    filename: str | None = None
    file_id: str | None = None


class FilePart(StrictModel):
    type: Literal["file"]
    file: FileData


UserPart = Annotated[TextPart | ImagePart | FilePart, Field(discriminator="type")]


class FunctionCall(StrictModel):
    name: str
    arguments: str


class ToolCallIn(StrictModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(StrictModel):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(StrictModel):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(StrictModel):
    role: Literal["assistant"]
    content: str | list[TextPart | RefusalPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None
    name: str | None = None
    reasoning_content: str | None = None


class ToolMessage(StrictModel):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str
    name: str | None = None
    """Not in OpenAI's schema, but its API accepts it and clients send it (instructor's retries)."""


class FunctionMessage(StrictModel):
    role: Literal["function"]
    name: str
    content: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage, Field(discriminator="role")
]


class FunctionDef(StrictModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(StrictModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(StrictModel):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(StrictModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class Extension(StrictModel):
    """``claude_max``: options of this server (what `llm` sends through it)."""

    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    system_placement: Literal["replace", "append", "user"] | None = None
    max_retries: int | None = Field(default=None, ge=0, le=10)


IGNORED = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "metadata", "store",
           "service_tier", "prompt_cache_key", "safety_identifier", "verbosity", "modalities")  # fmt: skip
"""Accepted and named in X-Claude-Max-Ignored: sampling knobs and bookkeeping the CLI cannot apply."""
REFUSED = {
    "logprobs": "log probabilities are not available through the Claude Code CLI",
    "top_logprobs": "log probabilities are not available through the Claude Code CLI",
    "logit_bias": "the Claude Code CLI cannot bias tokens",
    "audio": "audio output is not available",
    "prediction": "predicted outputs are not available",
    "web_search_options": "OpenAI's web search is not available (offer your own search tool instead)",
}


class ChatCompletionRequest(BaseModel):
    """The request body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None
    function_call: Literal["auto", "none"] | NamedFunction | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    user: str | None = None
    claude_max: Extension | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop strings")
        return value


# -- response models (for the OpenAPI document; answers are checked against it in the tests) -----------


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AnswerMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    function_call: FunctionCallOut | None = None


class Choice(BaseModel):
    index: int
    message: AnswerMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length", "tool_calls", "function_call"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int]
    completion_tokens_details: dict[str, int]


class ChatCompletion(BaseModel):
    """The answer of ``POST /v1/chat/completions`` without ``stream`` (with it: ``chat.completion.chunk``
    server-sent events, then ``data: [DONE]``)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage
    claude_max: dict[str, Any] = Field(description="What the CLI reported: session, billing route, rate limit")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorBody(BaseModel):
    """Every error answer of the OpenAI-style endpoints."""

    error: ErrorDetail


# -- parsing ------------------------------------------------------------------------------------------

OPENAI_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}


@dataclass
class Context:
    """How to answer a chat completion."""

    model: str
    include_usage: bool
    stops: tuple[str, ...]
    forced: tuple[ToolSpec, ...] = ()
    """``tool_choice`` required or named: the answer is a call of one of these (through structured output)."""
    single_call: bool = False
    """``parallel_tool_calls: false``: at most one call per answer."""
    legacy_functions: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def parse(body: Any, partition: str) -> Call:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        chat = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise common.invalid(exc) from None
    _refuse(chat)
    model, cli_model = common.resolve_model(chat.model)
    system, turns = _turns(chat.messages)
    specs = _tool_specs(chat)
    forced, offered = _tool_choice(chat, specs)
    if forced and chat.response_format is not None and chat.response_format.type != "text":
        raise InvalidRequest("`tool_choice` that forces a tool call cannot be combined with `response_format`.")
    if not offered:
        turns = [Turn(t.role, tuple(replay_block(b) for b in t.blocks)) for t in turns]
    else:
        turns = _retired_calls(turns, {s.name for s in offered})
    turns = _continued(turns)
    if not turns or turns[-1].role != "user":
        raise InvalidRequest("The last message must be a user or tool message.")
    if not turns[-1].blocks:
        raise InvalidRequest("The last user message is empty.")
    extension = chat.claude_max or Extension()
    placement = SystemPlacement(extension.system_placement or SystemPlacement.REPLACE)
    extra_env = {}
    if extension.max_retries is not None:
        extra_env["CLAUDE_CODE_MAX_RETRIES"] = str(extension.max_retries)
    limit = chat.max_completion_tokens or chat.max_tokens
    if limit is not None:
        extra_env[MAX_OUTPUT_TOKENS] = str(limit)
    schema = common.choice_schema(forced) if forced else _response_schema(chat.response_format)
    spec = CommandSpec(
        model=cli_model,
        system_prompt=system if placement is not SystemPlacement.USER else None,
        placement=placement,
        json_schema=schema,
        effort=extension.effort or (OPENAI_EFFORT[chat.reasoning_effort] if chat.reasoning_effort else None),
        caller_tools=offered,
        extra_env=extra_env,
    )
    request = TurnRequest(spec, tuple(turns[:-1]), turns[-1].blocks, system=system, partition=partition)
    stops = (chat.stop,) if isinstance(chat.stop, str) else tuple(chat.stop or ())
    context = Context(
        model=model,
        include_usage=bool(chat.stream_options and chat.stream_options.include_usage),
        stops=stops,
        forced=forced,
        single_call=chat.parallel_tool_calls is False,
        legacy_functions=bool(chat.functions) and not chat.tools,
    )
    ignored = [k for k in IGNORED if body.get(k) is not None] + _unchecked_strict(chat, forced)
    return Call(request, chat.stream, common.ignored_header(ignored), context)


def _unchecked_strict(chat: ChatCompletionRequest, forced: tuple[ToolSpec, ...]) -> list[str]:
    """``strict`` function schemas, which frameworks send by default: the CLI hands the model's arguments
    over unchecked, so the guarantee is not given (a forced call is checked: it is structured output)."""
    if forced:
        return []
    names = ["tools.function.strict"] if any(t.function.strict for t in chat.tools or []) else []
    return names + (["functions.strict"] if any(f.strict for f in chat.functions or []) else [])


def _refuse(chat: ChatCompletionRequest) -> None:
    extra = chat.model_extra or {}
    for name, value in extra.items():
        if name in IGNORED or value is None or value is False:
            continue
        if name in REFUSED:
            raise InvalidRequest(f"`{name}` is not supported: {REFUSED[name]}.")
        raise InvalidRequest(f"Unrecognized request argument supplied: {name}")
    if chat.n not in (None, 1):
        raise InvalidRequest("`n` must be 1: the CLI returns one answer per request.")
    if chat.tools and chat.functions:
        raise InvalidRequest("Send `tools` or the older `functions`, not both.")


def _text(content: str | list[TextPart] | list[TextPart | RefusalPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(p.text if isinstance(p, TextPart) else p.refusal for p in content)


def _turns(messages: list[Any]) -> tuple[str | None, list[Turn]]:
    systems: list[str] = []
    turns: list[Turn] = []
    last_function_call: str | None = None
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if isinstance(message, SystemMessage):
            if text := _text(message.content):
                systems.append(text)
            continue
        if isinstance(message, UserMessage):
            role, blocks = "user", _user_blocks(message.content, where)
        elif isinstance(message, AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(message, index, where)
            if message.function_call is not None:
                last_function_call = f"call_function_{index}"
        elif isinstance(message, ToolMessage):
            role, blocks = "user", [_result(message.tool_call_id, _text(message.content))]
        else:  # the older `function` role answers the last `function_call`
            if last_function_call is None:
                raise InvalidRequest(f"{where}: a `function` message must follow an assistant `function_call`.")
            role, blocks = "user", [_result(last_function_call, message.content or "")]
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, (*turns[-1].blocks, *blocks))
        else:
            turns.append(Turn(role, tuple(blocks)))
    return "\n\n".join(systems) or None, turns


def _user_blocks(content: str | list[Any], where: str) -> list[Block]:
    if isinstance(content, str):
        return [text_block(content)] if content else []
    blocks: list[Block] = []
    for n, part in enumerate(content):
        here = f"{where}.content.{n}"
        if isinstance(part, TextPart):
            if part.text:
                blocks.append(text_block(part.text))
        elif isinstance(part, ImagePart):
            url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
            blocks.append(
                common.remote_block(url) if url.startswith(common.REMOTE) else common.data_url_block(url, here)
            )
        else:
            if part.file.file_data is None:
                raise InvalidRequest(f"{here}: a file part needs `file.file_data` (a base64 data URL of a PDF).")
            blocks.append(common.data_url_block(part.file.file_data, here))
    return blocks


def _assistant_blocks(message: AssistantMessage, index: int, where: str) -> list[Block]:
    blocks: list[Block] = []
    if text := _text(message.content):
        blocks.append(text_block(text))
    calls = [(c.id, c.function) for c in message.tool_calls or []]
    if message.function_call is not None:
        calls.append((f"call_function_{index}", message.function_call))
    for n, (call_id, function) in enumerate(calls):
        try:
            arguments = json.loads(function.arguments or "{}")
        except (ValueError, RecursionError):
            raise InvalidRequest(f"{where}.tool_calls.{n}.function.arguments: not valid JSON.") from None
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"{where}.tool_calls.{n}.function.arguments: must be a JSON object.")
        blocks.append({"type": "tool_use", "id": call_id, "name": function.name, "input": arguments})
    return blocks


def _result(call_id: str, text: str) -> Block:
    return {"type": "tool_result", "tool_use_id": call_id, "content": text}


CONTINUE = "Continue."
"""The user message after a conversation that ends with an assistant message."""


def _continued(turns: list[Turn]) -> list[Turn]:
    """A conversation that ends with an assistant message (LangGraph's structured-response step sends the
    agent's whole conversation with a schema) asks for the next assistant message; the CLI answers only
    a user message, so one is added. Calls left without results stay an error, as with OpenAI."""
    if len(turns) < 2 or turns[-1].role != "assistant":
        return turns
    if any(b.get("type") == "tool_use" for b in turns[-1].blocks):
        raise InvalidRequest("An assistant message with `tool_calls` must be followed by `tool` messages for them.")
    return [*turns, Turn("user", (text_block(CONTINUE),))]


def _retired_calls(turns: list[Turn], offered: set[str]) -> list[Turn]:
    """Results for calls of tools this request no longer offers (an agent handed off to another one, with
    other tools) are given as text: the CLI cannot take a result for a tool it does not have."""
    if len(turns) < 2 or turns[-2].role != "assistant":
        return turns
    called = {str(b.get("name")) for b in turns[-2].blocks if b.get("type") == "tool_use"}
    if called <= offered:
        return turns
    return [*turns[:-2], *(Turn(t.role, tuple(replay_block(b) for b in t.blocks)) for t in turns[-2:])]


def _tool_specs(chat: ChatCompletionRequest) -> tuple[ToolSpec, ...]:
    definitions = [(f"tools.{n}.function", t.function) for n, t in enumerate(chat.tools or [])]
    definitions += [(f"functions.{n}", f) for n, f in enumerate(chat.functions or [])]
    specs = tuple(common.tool_spec(f.name, f.description, f.parameters, where) for where, f in definitions)
    if len({s.name for s in specs}) < len(specs):
        raise InvalidRequest("Two tools have the same name.")
    return specs


def _tool_choice(
    chat: ChatCompletionRequest, specs: tuple[ToolSpec, ...]
) -> tuple[tuple[ToolSpec, ...], tuple[ToolSpec, ...]]:
    """(the tools a call is forced among, the tools offered)."""
    choice: Any = chat.tool_choice if chat.tools else chat.function_call
    if isinstance(choice, (NamedToolChoice, NamedFunction)):
        name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
        named = tuple(s for s in specs if s.name == name)
        if not named:
            raise InvalidRequest(f"`tool_choice` names {name!r}, which is not among the tools.")
        return named, named
    if choice == "none":
        return (), ()
    if choice == "required":
        if not specs:
            raise InvalidRequest("`tool_choice` is required but no tools were given.")
        return specs, specs
    return (), specs


def _response_schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    if response_format.json_schema is None:
        raise InvalidRequest("`response_format.json_schema` is required for type json_schema.")
    return response_format.json_schema.schema_


# -- answers ------------------------------------------------------------------------------------------


def _tool_calls(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
        for c in calls
    ]


def _forced_call(context: Context, structured: Any) -> ToolCall:
    name, arguments = common.chosen_call(context.forced, structured)
    return ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, arguments)


def _finish(context: Context, end: Done | Deferred, stopped: bool, calls: list[ToolCall]) -> str:
    if calls:
        return "function_call" if context.legacy_functions else "tool_calls"
    if common.cut_by_limit(end.outcome) and not stopped:
        return "length"
    return "stop"


def usage(end: Done | Deferred) -> dict[str, Any]:
    u = common.token_usage(end.outcome)
    prompt = u["input"] + u["cache_read"] + u["cache_written"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": u["output"],
        "total_tokens": prompt + u["output"],
        "prompt_tokens_details": {"cached_tokens": u["cache_read"]},
        "completion_tokens_details": {"reasoning_tokens": u["thinking"]},
    }


def _message(context: Context, text: str | None, calls: list[ToolCall]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls and context.legacy_functions:
        message["function_call"] = _tool_calls(calls[:1])[0]["function"]
    elif calls:
        message["tool_calls"] = _tool_calls(calls)
    return message


def _calls_of(context: Context, end: Done | Deferred) -> list[ToolCall]:
    if isinstance(end, Deferred):
        calls = list(end.calls)
    elif context.forced:
        calls = [_forced_call(context, end.outcome.structured_output)]
    else:
        return []
    return calls[:1] if context.single_call or context.legacy_functions else calls


def render(call: Call, step: Step) -> dict[str, Any]:
    context: Context = call.context
    end = step.end
    calls = _calls_of(context, end)
    text, stopped = common.apply_stops(end.outcome.text, context.stops)
    if context.forced:
        text = ""
    return {
        "id": context.id,
        "object": "chat.completion",
        "created": context.created,
        "model": end.outcome.model or context.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": _message(context, text or (None if calls else ""), calls),
                "logprobs": None,
                "finish_reason": _finish(context, end, stopped, calls),
            }
        ],
        "usage": usage(end),
        "claude_max": common.metadata(end.outcome, step.start),
    }


def _chunk(
    context: Context, delta: dict[str, Any], finish: str | None = None, model: str | None = None
) -> dict[str, Any]:
    return {
        "id": context.id,
        "object": "chat.completion.chunk",
        "created": context.created,
        "model": model or context.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _sse(payload: dict[str, Any] | str) -> ServerSentEvent:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(data=data)


async def stream(call: Call, events: AsyncIterator[Start | TurnEvent]) -> AsyncIterator[ServerSentEvent]:
    context: Context = call.context
    state = _StreamState(context)
    yield _sse(_chunk(context, {"role": "assistant", "content": ""}))
    async for event in events:
        for out in state.feed(event):
            yield out
        if state.finished:
            break
    yield _sse("[DONE]")


@dataclass
class _StreamState:
    context: Context
    start: Start | None = None
    stops: common.StopFilter = field(init=False)
    indexes: dict[str, int] = field(default_factory=dict)
    forced_id: str | None = None
    finished: bool = False
    streamed_json: list[str] = field(default_factory=list)
    """The structured output as streamed while the model wrote it (``response_format``)."""

    def __post_init__(self) -> None:
        self.stops = common.StopFilter(self.context.stops)

    def feed(self, event: Start | TurnEvent) -> list[ServerSentEvent]:
        context = self.context
        if isinstance(event, Start):
            self.start = event
        elif isinstance(event, Text) and not context.forced and self.streamed_json:
            return self._final_json(event.text)
        elif isinstance(event, Text) and not context.forced:
            shown = self.stops.feed(event.text)
            out = [_sse(_chunk(context, {"content": shown}))] if shown else []
            if self.stops.stopped:  # the rest of the answer is not wanted: the step is abandoned
                self.finished = True
                out.append(_sse(_chunk(context, {}, "stop")))
            return out
        elif isinstance(event, Reasoning) and event.text:
            return [_sse(_chunk(context, {"reasoning_content": event.text}))]
        elif isinstance(event, ToolCallStarted):
            return self._call_start(event.id, event.name)
        elif isinstance(event, ToolCallArgs) and event.id in self.indexes:
            return [self._args(event.id, event.chunk)]
        elif isinstance(event, StructuredDelta):
            return self._structured(event.chunk)
        elif isinstance(event, Notice):
            return [ServerSentEvent(comment=event.message)]  # progress; clients ignore comments
        elif isinstance(event, (Done, Deferred)):
            return self._end(event)
        return []

    def _call_start(self, call_id: str, name: str) -> list[ServerSentEvent]:
        if self.indexes and (self.context.single_call or self.context.legacy_functions):
            return []
        self.indexes[call_id] = len(self.indexes)
        if self.context.legacy_functions:
            return [_sse(_chunk(self.context, {"function_call": {"name": name, "arguments": ""}}))]
        delta = {"index": self.indexes[call_id], "id": call_id, "type": "function",
                 "function": {"name": name, "arguments": ""}}  # fmt: skip
        return [_sse(_chunk(self.context, {"tool_calls": [delta]}))]

    def _args(self, call_id: str, chunk: str) -> ServerSentEvent:
        if self.context.legacy_functions:
            return _sse(_chunk(self.context, {"function_call": {"arguments": chunk}}))
        delta = {"index": self.indexes[call_id], "function": {"arguments": chunk}}
        return _sse(_chunk(self.context, {"tool_calls": [delta]}))

    def _structured(self, chunk: str) -> list[ServerSentEvent]:
        context = self.context
        if not context.forced:
            self.streamed_json.append(chunk)
            return [_sse(_chunk(context, {"content": chunk}))]  # response_format: the JSON as it is written
        if len(context.forced) > 1:
            return []  # {"name", "arguments"}: shown whole at the end
        out: list[ServerSentEvent] = []
        if self.forced_id is None:
            self.forced_id = f"call_{uuid.uuid4().hex[:24]}"
            out += self._call_start(self.forced_id, context.forced[0].name)
        out.append(self._args(self.forced_id, chunk))
        return out

    def _final_json(self, text: str) -> list[ServerSentEvent]:
        """The structured output, whole: already streamed, unless the CLI had the model try again."""
        try:
            same = json.loads("".join(self.streamed_json)) == json.loads(text)
        except ValueError:
            same = False
        if same:
            return []
        raise StructuredOutputRetried(
            "The structured output streamed so far was rejected by the CLI's schema check and written again; "
            f"the final value is: {text}"
        )

    def _end(self, end: Done | Deferred) -> list[ServerSentEvent]:
        context = self.context
        out: list[ServerSentEvent] = []
        calls = _calls_of(context, end)
        if context.forced and calls:
            forced = calls[0]
            if self.forced_id is None:
                out += self._call_start(forced.id, forced.name)
                out.append(self._args(forced.id, json.dumps(forced.arguments)))
            else:
                calls = [replace(forced, id=self.forced_id)]
        rest = self.stops.flush()
        if rest:
            out.append(_sse(_chunk(context, {"content": rest})))
        model = end.outcome.model or context.model
        final = _chunk(context, {}, _finish(context, end, False, calls), model)
        final["claude_max"] = common.metadata(end.outcome, self.start)
        out.append(_sse(final))
        if context.include_usage:
            tail = _chunk(context, {}, None, model)
            tail["choices"], tail["usage"] = [], usage(end)
            out.append(_sse(tail))
        self.finished = True
        return out


# -- errors -------------------------------------------------------------------------------------------


TYPE = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
        429: "rate_limit_error"}  # fmt: skip


def error_body(message: str, code: str, status: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPE.get(status, "api_error"), "param": param, "code": code}}


def error(exc: ClaudeMaxError, *, lock_until: int | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    status, headers = common.error_status(exc, lock_until=lock_until)
    return status, error_body(str(exc), exc.code, status, getattr(exc, "param", None)), headers


def stream_error(call: Call, exc: ClaudeMaxError) -> list[ServerSentEvent]:
    status, body, _ = error(exc)
    body["error"]["status"] = status
    return [_sse(body)]


class Adapter:
    """The Chat Completions API for the exchange."""

    parse = staticmethod(parse)
    render = staticmethod(render)
    stream = staticmethod(stream)
    stream_error = staticmethod(stream_error)

    def __init__(self, lock_until: Any = None) -> None:
        self._lock_until = lock_until

    def error(self, exc: ClaudeMaxError) -> tuple[int, dict[str, Any], dict[str, str]]:
        until = self._lock_until() if isinstance(exc, PaidUsageRefused) and self._lock_until else None
        return error(exc, lock_until=until)
