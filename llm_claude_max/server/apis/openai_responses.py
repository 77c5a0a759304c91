"""``POST /v1/responses``: the OpenAI Responses API (the openai SDK's ``responses``, openai-agents' default
model, the Codex CLI), function calling included.

The same rules as :mod:`.openai_chat`: every parameter is applied, refused with a 400 that says why, or
accepted and named in ``X-Claude-Max-Ignored`` (docs/server.md has the table). OpenAI's built-in tools
(``web_search``, ``file_search``...) are refused: only the caller's own function tools can run.

``previous_response_id`` continues a response this server gave the same caller: each response is
remembered (:class:`Memory`, bounded, in memory) with its conversation, so the next request is one more
:class:`~llm_claude_max.request.TurnRequest` of that conversation, and the engine's pool finds the live or
paused process exactly as for a chat completion that resends its messages.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
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
from . import common, openai_chat
from .common import StrictModel
from .openai_chat import Extension

# -- request models -----------------------------------------------------------------------------------


class InputText(StrictModel):
    type: Literal["input_text"]
    text: str


class InputImage(StrictModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


class InputFile(StrictModel):
    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(StrictModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class RefusalContent(StrictModel):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | InputImage | InputFile | OutputText | RefusalContent, Field(discriminator="type")]
InputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


class MessageItem(StrictModel):
    """A message (also OpenAI's "easy" input message without ``type``)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(StrictModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    namespace: str | None = None
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(StrictModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(BaseModel):
    """The model's reasoning, sent back by clients: not needed to continue (the CLI keeps its own)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["reasoning"]


class OtherItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


ITEMS = ("message", "function_call", "function_call_output", "reasoning")
InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(common.type_tag(ITEMS, "message")),
]


class FunctionTool(StrictModel):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamespaceTool(StrictModel):
    """Function tools grouped under a name (the Codex CLI sends its sub-agent tools so)."""

    type: Literal["namespace"]
    name: str
    description: str | None = None
    tools: list[FunctionTool]


class BuiltInTool(BaseModel):
    """One of OpenAI's own tools (web_search, file_search...): refused."""

    model_config = ConfigDict(extra="allow")
    type: str


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[NamespaceTool, Tag("namespace")]
    | Annotated[BuiltInTool, Tag("other")],
    Discriminator(common.type_tag(("function", "namespace"))),
]


class NamedFunctionChoice(StrictModel):
    type: Literal["function"]
    name: str
    namespace: str | None = None


class AllowedTool(StrictModel):
    type: Literal["function"]
    name: str
    namespace: str | None = None


class AllowedTools(StrictModel):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[AllowedTool]


class TextFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(StrictModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(StrictModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


IGNORED = ("temperature", "top_p", "service_tier", "truncation", "prompt_cache_key", "prompt_cache_retention",
           "safety_identifier", "include", "client_metadata", "stream_options")  # fmt: skip
"""Accepted and named in X-Claude-Max-Ignored: sampling knobs and bookkeeping the CLI cannot apply."""
REFUSED = {
    "background": "background responses are not available: the answer comes with the request",
    "conversation": "OpenAI's stored conversations are not available (send `previous_response_id` or the input)",
    "prompt": "OpenAI's stored prompt templates are not available",
    "top_logprobs": "log probabilities are not available through the Claude Code CLI",
    "max_tool_calls": "the number of tool calls cannot be capped (use `parallel_tool_calls: false`)",
    "context_management": "OpenAI's context management is not available",
}


class ResponseRequest(BaseModel):
    """The request body of ``POST /v1/responses``."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedFunctionChoice | AllowedTools | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    stream: bool = False
    user: str | None = None
    claude_max: Extension | None = None


# -- response models (for the OpenAPI document; answers are checked against them in the tests) ---------


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"]
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[dict[str, Any]]


class OutputFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"]
    status: Literal["in_progress", "completed", "incomplete"]
    call_id: str
    name: str
    arguments: str
    namespace: str | None = None


class ReasoningOut(BaseModel):
    id: str
    type: Literal["reasoning"]
    summary: list[dict[str, Any]]


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(BaseModel):
    """The answer of ``POST /v1/responses`` without ``stream`` (with it: the Responses event stream,
    ``response.created`` … ``response.completed``)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputMessage | OutputFunctionCall | ReasoningOut]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: dict[str, Any]
    store: bool
    text: dict[str, Any]
    tool_choice: Any
    tools: list[dict[str, Any]]
    usage: ResponseUsage | None
    metadata: dict[str, str]
    claude_max: dict[str, Any] | None = Field(
        default=None, description="What the CLI reported: session, billing route, rate limit"
    )


# -- remembered responses -----------------------------------------------------------------------------


class PreviousResponseNotFound(InvalidRequest):
    code = "previous_response_not_found"
    http_status = 404


class Memory:
    """Responses this server gave, per caller, with their conversation (the turns up to and including the
    answer): what ``previous_response_id`` continues. Bounded in number and in bytes (each conversation
    counted whole, though conversations share their earlier turns): the least recently used are forgotten."""

    def __init__(self, limit: int = 1000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self._turns: OrderedDict[tuple[str, str], tuple[tuple[Turn, ...], int]] = OrderedDict()
        self._bytes = 0

    def remember(self, partition: str, response_id: str, turns: tuple[Turn, ...]) -> None:
        key = (partition, response_id)
        if key in self._turns:
            self._bytes -= self._turns.pop(key)[1]
        size = sum(len(json.dumps(block, default=str)) for turn in turns for block in turn.blocks)
        self._turns[key] = (turns, size)
        self._bytes += size
        while len(self._turns) > 1 and (len(self._turns) > self.limit or self._bytes > self.max_bytes):
            self._bytes -= self._turns.popitem(last=False)[1][1]

    def recall(self, partition: str, response_id: str) -> tuple[Turn, ...]:
        entry = self._turns.get((partition, response_id))
        if entry is None:
            exc = PreviousResponseNotFound(f"Previous response with id '{response_id}' not found.")
            exc.param = "previous_response_id"  # type: ignore[attr-defined]
            raise exc
        self._turns.move_to_end((partition, response_id))
        return entry[0]


# -- parsing ------------------------------------------------------------------------------------------

EFFORT = {**openai_chat.OPENAI_EFFORT, "none": "low", "xhigh": "xhigh"}
"""OpenAI's reasoning efforts -> the CLI's (whose lowest is ``low``: its models think adaptively)."""
SEPARATOR = "__"
"""Between a namespace and a function name, in the name the model sees."""


@dataclass
class Context:
    """How to answer one response, and what it echoes."""

    model: str
    partition: str
    echo: dict[str, Any]
    """The request's settings, as every response object repeats them."""
    namespaced: dict[str, tuple[str, str]]
    """The model's name of a namespaced function -> (namespace, name)."""
    forced: tuple[ToolSpec, ...] = ()
    single_call: bool = False
    summaries: bool = False
    """Reasoning summaries were asked for: the model's thinking is returned as reasoning items."""
    store: bool = True
    id: str = field(default_factory=lambda: f"resp_{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    stream: _Stream | None = None
    """The stream's state, once streaming (what an error event reports)."""


class Adapter:
    """The Responses API for the exchange, with the responses it remembers."""

    def __init__(self, lock_until: Callable[[], int | None] | None = None, memory: Memory | None = None) -> None:
        self._lock_until = lock_until
        self.memory = memory or Memory()

    # -- the request ---------------------------------------------------------------------------------
    def parse(self, body: Any, partition: str) -> Call:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        try:
            req = ResponseRequest.model_validate(body)
        except ValidationError as exc:
            raise common.invalid(exc) from None
        _refuse(req)
        model, cli_model = common.resolve_model(req.model)
        specs, namespaced = _tool_specs(req.tools or [])
        forced, offered = _tool_choice(req, specs, namespaced)
        text_format = req.text.format if req.text and req.text.format else None
        if forced and text_format is not None and text_format.type != "text":
            raise InvalidRequest("`tool_choice` that forces a tool call cannot be combined with `text.format`.")
        earlier = self.memory.recall(partition, req.previous_response_id) if req.previous_response_id else ()
        systems, turns = _turns(req.input, {v: k for k, v in namespaced.items()})
        turns = _joined(earlier, turns)
        if not offered:
            turns = [Turn(t.role, tuple(replay_block(b) for b in t.blocks)) for t in turns]
        if not turns or turns[-1].role != "user":
            raise InvalidRequest("`input` must end with a user message or function call outputs.")
        system = "\n\n".join(s for s in (req.instructions, *systems) if s) or None
        extension = req.claude_max or Extension()
        placement = SystemPlacement(extension.system_placement or SystemPlacement.REPLACE)
        extra_env = {}
        if extension.max_retries is not None:
            extra_env["CLAUDE_CODE_MAX_RETRIES"] = str(extension.max_retries)
        if req.max_output_tokens is not None:
            extra_env[MAX_OUTPUT_TOKENS] = str(req.max_output_tokens)
        effort = req.reasoning.effort if req.reasoning else None
        spec = CommandSpec(
            model=cli_model,
            system_prompt=system if placement is not SystemPlacement.USER else None,
            placement=placement,
            json_schema=common.choice_schema(forced) if forced else _format_schema(text_format),
            effort=extension.effort or (EFFORT[effort] if effort else None),
            caller_tools=offered,
            extra_env=extra_env,
        )
        request = TurnRequest(spec, tuple(turns[:-1]), turns[-1].blocks, system=system, partition=partition)
        context = Context(
            model=model,
            partition=partition,
            echo=_echo(req, body),
            namespaced=namespaced,
            forced=forced,
            single_call=req.parallel_tool_calls is False,
            summaries=bool(req.reasoning and (req.reasoning.summary or req.reasoning.generate_summary)),
            store=req.store is not False,
        )
        ignored = [k for k in IGNORED if body.get(k) not in (None, [], {})]
        if req.text and req.text.verbosity is not None:
            ignored.append("text.verbosity")
        return Call(request, req.stream, common.ignored_header(ignored), context)

    # -- answers -------------------------------------------------------------------------------------
    def render(self, call: Call, step: Step) -> dict[str, Any]:
        context: Context = call.context
        end = step.end
        output: list[dict[str, Any]] = []
        reasoning = "".join(e.text for e in step.events if isinstance(e, Reasoning))
        if reasoning and context.summaries:
            output.append(_reasoning_item(f"rs_{uuid.uuid4().hex}", reasoning))
        calls = _calls_of(context, end)
        text = "" if context.forced else end.outcome.text
        if text:
            output.append(_message_item(f"msg_{uuid.uuid4().hex}", text, "completed"))
        output += [_call_item(context, f"fc_{uuid.uuid4().hex}", c, json.dumps(c.arguments)) for c in calls]
        self._remember(call, text, calls)
        meta = common.metadata(end.outcome, step.start)
        return _response(context, _status(end), output, usage(end), model=end.outcome.model, meta=meta)

    async def stream(self, call: Call, events: AsyncIterator[Start | TurnEvent]) -> AsyncIterator[ServerSentEvent]:
        context: Context = call.context
        state = context.stream = _Stream(context, self._remember)
        yield state.event("response.created", response=_response(context, "in_progress", [], None))
        yield state.event("response.in_progress", response=_response(context, "in_progress", [], None))
        async for event in events:
            for out in state.feed(call, event):
                yield out
            if state.finished:
                break

    def _remember(self, call: Call, text: str, calls: Sequence[ToolCall]) -> None:
        """The conversation through this answer, for ``previous_response_id`` (unless ``store`` is false)."""
        context: Context = call.context
        if not context.store:
            return
        blocks: list[Block] = [text_block(text)] if text else []
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)} for c in calls]
        request = call.request
        answer = (Turn("assistant", tuple(blocks)),) if blocks else ()
        turns = (*request.history, Turn("user", request.new), *answer)
        self.memory.remember(context.partition, context.id, turns)

    # -- errors --------------------------------------------------------------------------------------
    def error(self, exc: ClaudeMaxError) -> tuple[int, dict[str, Any], dict[str, str]]:
        until = self._lock_until() if isinstance(exc, PaidUsageRefused) and self._lock_until else None
        return openai_chat.error(exc, lock_until=until)

    def stream_error(self, call: Call, exc: ClaudeMaxError) -> list[ServerSentEvent]:
        context: Context = call.context
        state = context.stream or _Stream(context, self._remember)
        failure = {"code": exc.code, "message": str(exc)}
        return [state.event("response.failed", response=_response(context, "failed", state.output, None, failure))]


def _refuse(req: ResponseRequest) -> None:
    for name, value in (req.model_extra or {}).items():
        if name in IGNORED or value is None or value is False:
            continue
        if name in REFUSED:
            raise InvalidRequest(f"`{name}` is not supported: {REFUSED[name]}.")
        raise InvalidRequest(f"Unrecognized request argument supplied: {name}")
    for n, tool in enumerate(req.tools or []):
        if isinstance(tool, BuiltInTool):
            raise InvalidRequest(
                f"tools.{n}: OpenAI's built-in tool `{tool.type}` is not available through claude-max serve: "
                'only function tools, which run in your program. (Codex CLI: set `web_search = "disabled"`.)'
            )


def _echo(req: ResponseRequest, body: dict[str, Any]) -> dict[str, Any]:
    reasoning = req.reasoning or ReasoningConfig()
    text = req.text.model_dump(by_alias=True, exclude_none=True) if req.text else {}
    return {
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary or reasoning.generate_summary},
        "store": req.store is not False,
        "text": {"format": {"type": "text"}, **text},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "metadata": req.metadata or {},
        "user": req.user,
    }


def _tool_specs(tools: Sequence[Any]) -> tuple[tuple[ToolSpec, ...], dict[str, tuple[str, str]]]:
    """The function tools, namespaced ones as ``<namespace>__<name>``; and those names' origin."""
    specs: list[ToolSpec] = []
    namespaced: dict[str, tuple[str, str]] = {}
    for n, tool in enumerate(tools):
        if isinstance(tool, FunctionTool):
            specs.append(common.tool_spec(tool.name, tool.description, tool.parameters, f"tools.{n}"))
            continue
        for m, inner in enumerate(tool.tools):
            spec = common.tool_spec(inner.name, inner.description, inner.parameters, f"tools.{n}.tools.{m}")
            flat = f"{tool.name}{SEPARATOR}{inner.name}"
            namespaced[flat] = (tool.name, inner.name)
            specs.append(ToolSpec(flat, spec.description, spec.input_schema))
    if len({s.name for s in specs}) < len(specs):
        raise InvalidRequest("Two tools have the same name.")
    return tuple(specs), namespaced


def _tool_choice(
    req: ResponseRequest, specs: tuple[ToolSpec, ...], namespaced: dict[str, tuple[str, str]]
) -> tuple[tuple[ToolSpec, ...], tuple[ToolSpec, ...]]:
    """(the tools a call is forced among, the tools offered)."""
    flat = {v: k for k, v in namespaced.items()}

    def named(name: str, namespace: str | None) -> ToolSpec:
        wanted = flat.get((namespace, name), name) if namespace else name
        found = next((s for s in specs if s.name == wanted), None)
        if found is None:
            raise InvalidRequest(f"`tool_choice` names {name!r}, which is not among the tools.")
        return found

    choice = req.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        tool = named(choice.name, choice.namespace)
        return (tool,), (tool,)
    if isinstance(choice, AllowedTools):
        allowed = tuple(named(t.name, t.namespace) for t in choice.tools)
        return (allowed if choice.mode == "required" else ()), allowed
    if choice == "none":
        return (), ()
    if choice == "required":
        if not specs:
            raise InvalidRequest("`tool_choice` is required but no tools were given.")
        return specs, specs
    return (), specs


def _format_schema(text_format: TextFormat | None) -> dict[str, Any] | None:
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return {"type": "object"}
    if text_format.schema_ is None:
        raise InvalidRequest("`text.format.schema` is required for type json_schema.")
    return text_format.schema_


def _turns(items: str | list[Any], flat: dict[tuple[str, str], str]) -> tuple[list[str], list[Turn]]:
    """System texts (``system`` / ``developer`` messages) and the conversation's turns."""
    if isinstance(items, str):
        return [], [Turn("user", (text_block(items),))] if items else []
    systems: list[str] = []
    turns: list[Turn] = []
    for n, item in enumerate(items):
        where = f"input.{n}"
        if isinstance(item, MessageItem) and item.role in ("system", "developer"):
            if text := _text(item.content, where):
                systems.append(text)
            continue
        if isinstance(item, MessageItem):
            role, blocks = item.role, _message_blocks(item, where)
        elif isinstance(item, FunctionCallItem):
            name = flat.get((item.namespace, item.name), item.name) if item.namespace else item.name
            role, blocks = "assistant", [{"type": "tool_use", "id": item.call_id, "name": name,
                                          "input": _arguments(item.arguments, where)}]  # fmt: skip
        elif isinstance(item, FunctionCallOutputItem):
            content = item.output if isinstance(item.output, str) else _parts(item.output, where, remote=False)
            role, blocks = "user", [{"type": "tool_result", "tool_use_id": item.call_id, "content": content}]
        elif isinstance(item, ReasoningItem):
            continue
        else:
            raise InvalidRequest(
                f"{where}: items of type `{item.type}` are not supported "
                "(message, function_call, function_call_output and reasoning are)."
            )
        turns = _joined(turns, [Turn(role, tuple(blocks))])
    return systems, turns


def _joined(earlier: Sequence[Turn], later: Sequence[Turn]) -> list[Turn]:
    """Two runs of turns as one, a message that follows one of the same role joined to it."""
    turns = list(earlier)
    for turn in later:
        if turns and turns[-1].role == turn.role:
            turns[-1] = Turn(turn.role, (*turns[-1].blocks, *turn.blocks))
        elif turn.blocks:
            turns.append(turn)
    return turns


def _text(content: str | list[Any], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for n, part in enumerate(content):
        if isinstance(part, (InputText, OutputText)):
            texts.append(part.text)
        elif isinstance(part, RefusalContent):
            texts.append(part.refusal)
        else:
            raise InvalidRequest(f"{where}.content.{n}: only text can stand here.")
    return "\n".join(texts)


def _message_blocks(item: MessageItem, where: str) -> list[Block]:
    if isinstance(item.content, str):
        return [text_block(item.content)] if item.content else []
    if item.role == "assistant":
        text = _text(item.content, where)
        return [text_block(text)] if text else []
    return _parts(item.content, where)


def _parts(parts: Sequence[Any], where: str, *, remote: bool = True) -> list[Block]:
    """Content parts as blocks; ``remote``: an image may be an http(s) URL (fetched later, when allowed)."""
    blocks: list[Block] = []
    for n, part in enumerate(parts):
        here = f"{where}.content.{n}"
        if isinstance(part, (InputText, OutputText)):
            if part.text:
                blocks.append(text_block(part.text))
        elif isinstance(part, InputImage):
            if part.image_url is None:
                raise InvalidRequest(f"{here}: an image needs `image_url` (a data URL); file ids are not available.")
            url = part.image_url
            if url.startswith(common.REMOTE) and not remote:
                raise InvalidRequest(f"{here}: an image in a function call's output must be a data URL.")
            blocks.append(
                common.remote_block(url) if url.startswith(common.REMOTE) else common.data_url_block(url, here)
            )
        elif isinstance(part, InputFile):
            if part.file_data is None:
                raise InvalidRequest(f"{here}: a file needs `file_data` (a base64 data URL of a PDF).")
            data = part.file_data
            if not data.startswith("data:"):
                data = f"data:application/pdf;base64,{data}"  # OpenAI takes bare base64 with a filename too
            blocks.append(common.data_url_block(data, here))
        else:
            blocks.append(text_block(part.refusal))
    return blocks


def _arguments(arguments: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except (ValueError, RecursionError):
        raise InvalidRequest(f"{where}.arguments: not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}.arguments: must be a JSON object.")
    return value


# -- answers ------------------------------------------------------------------------------------------


def _calls_of(context: Context, end: Done | Deferred) -> list[ToolCall]:
    if isinstance(end, Deferred):
        calls = list(end.calls)
    elif context.forced:
        name, arguments = common.chosen_call(context.forced, end.outcome.structured_output)
        calls = [ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, arguments)]
    else:
        return []
    return calls[:1] if context.single_call else calls


def _status(end: Done | Deferred) -> str:
    return "incomplete" if isinstance(end, Done) and common.cut_by_limit(end.outcome) else "completed"


def usage(end: Done | Deferred) -> dict[str, Any]:
    u = common.token_usage(end.outcome)
    prompt = u["input"] + u["cache_read"] + u["cache_written"]
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": u["cache_read"], "cache_write_tokens": u["cache_written"]},
        "output_tokens": u["output"],
        "output_tokens_details": {"reasoning_tokens": u["thinking"]},
        "total_tokens": prompt + u["output"],
    }


def _response(
    context: Context,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    *,
    model: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    answer = {
        "id": context.id,
        "object": "response",
        "created_at": context.created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": model or context.model,
        "output": output,
        "usage": usage,
        **context.echo,
    }
    if meta is not None:
        answer["claude_max"] = meta
    return answer


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(
    context: Context, item_id: str, call: ToolCall, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    item = {"id": item_id, "type": "function_call", "status": status}
    item |= {"call_id": call.id, "name": call.name, "arguments": arguments}
    if call.name in context.namespaced:
        item["namespace"], item["name"] = context.namespaced[call.name]
    return item


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


@dataclass
class _Open:
    """The output item being streamed."""

    kind: str
    """message, reasoning or function_call"""
    index: int
    id: str
    text: list[str] = field(default_factory=list)
    call: ToolCall | None = None


@dataclass
class _Stream:
    """The Responses event stream of one step: output items opened, streamed and closed in order."""

    context: Context
    remember: Callable[[Call, str, Sequence[ToolCall]], None]
    sequence: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)
    open: _Open | None = None
    start: Start | None = None
    calls: dict[str, _Open] = field(default_factory=dict)
    """Streamed function calls by call id."""
    streamed_json: list[str] = field(default_factory=list)
    forced_id: str | None = None
    finished: bool = False

    def event(self, kind: str, **fields: Any) -> ServerSentEvent:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return ServerSentEvent(event=kind, data=json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    def feed(self, call: Call, event: Start | TurnEvent) -> list[ServerSentEvent]:
        context = self.context
        if isinstance(event, Start):
            self.start = event
        elif isinstance(event, Text) and not context.forced and self.streamed_json:
            _check_final_json(self.streamed_json, event.text)
        elif isinstance(event, Text) and not context.forced and event.text:
            return self._text(event.text)
        elif isinstance(event, Reasoning) and event.text and context.summaries:
            return self._reasoning(event.text)
        elif isinstance(event, ToolCallStarted):
            return self._call_start(ToolCall(event.id, event.name, {}))
        elif isinstance(event, ToolCallArgs) and event.id in self.calls:
            return self._call_args(self.calls[event.id], event.chunk)
        elif isinstance(event, StructuredDelta):
            return self._structured(event.chunk)
        elif isinstance(event, Notice):
            return [ServerSentEvent(comment=event.message)]
        elif isinstance(event, (Done, Deferred)):
            return self._end(call, event)
        return []

    # -- items -----------------------------------------------------------------------------------
    def _opened(self, kind: str, prefix: str, item: dict[str, Any]) -> tuple[_Open, ServerSentEvent]:
        opened = _Open(kind, len(self.output), f"{prefix}_{uuid.uuid4().hex}")
        item = {**item, "id": opened.id}
        return opened, self.event("response.output_item.added", output_index=opened.index, item=item)

    def _text(self, text: str) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        if self.open is None or self.open.kind != "message":
            out += self._close()
            self.open, added = self._opened("message", "msg", _message_item("", "", "in_progress") | {"content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += [added, self.event("response.content_part.added", **self._where(), content_index=0, part=part)]
        self.open.text.append(text)
        out.append(self.event("response.output_text.delta", **self._where(), content_index=0, delta=text, logprobs=[]))
        return out

    def _reasoning(self, text: str) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        if self.open is None or self.open.kind != "reasoning":
            out += self._close()
            self.open, added = self._opened("reasoning", "rs", {"type": "reasoning", "summary": []})
            part = {"type": "summary_text", "text": ""}
            out += [
                added,
                self.event("response.reasoning_summary_part.added", **self._where(), summary_index=0, part=part),
            ]
        self.open.text.append(text)
        out.append(self.event("response.reasoning_summary_text.delta", **self._where(), summary_index=0, delta=text))
        return out

    def _call_start(self, call: ToolCall) -> list[ServerSentEvent]:
        if self.calls and self.context.single_call:
            return []
        out = self._close()
        self.open, added = self._opened("function_call", "fc", _call_item(self.context, "", call, "", "in_progress"))
        self.open.call = call
        self.calls[call.id] = self.open
        return [*out, added]

    def _call_args(self, opened: _Open, chunk: str) -> list[ServerSentEvent]:
        if opened is not self.open:
            return []
        opened.text.append(chunk)
        return [self.event("response.function_call_arguments.delta", **self._where(), delta=chunk)]

    def _structured(self, chunk: str) -> list[ServerSentEvent]:
        forced = self.context.forced
        if not forced:
            self.streamed_json.append(chunk)
            return self._text(chunk)  # text.format: the JSON as it is written
        if len(forced) > 1:
            return []  # {"name", "arguments"}: shown whole at the end
        out: list[ServerSentEvent] = []
        if self.forced_id is None:
            self.forced_id = f"call_{uuid.uuid4().hex[:24]}"
            out += self._call_start(ToolCall(self.forced_id, forced[0].name, {}))
        opened = self.calls.get(self.forced_id)
        return out + (self._call_args(opened, chunk) if opened is not None else [])

    def _where(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open.id, "output_index": self.open.index}

    def _close(self, final: ToolCall | None = None) -> list[ServerSentEvent]:
        """Close the open item (a function call with its final arguments, when known)."""
        opened, where = self.open, self._where() if self.open else {}
        if opened is None:
            return []
        text = "".join(opened.text)
        out: list[ServerSentEvent] = []
        if opened.kind == "message":
            item = _message_item(opened.id, text, "completed")
            part = item["content"][0]
            out.append(self.event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]))
            out.append(self.event("response.content_part.done", **where, content_index=0, part=part))
        elif opened.kind == "reasoning":
            item = _reasoning_item(opened.id, text)
            part = item["summary"][0]
            out.append(self.event("response.reasoning_summary_text.done", **where, summary_index=0, text=text))
            out.append(self.event("response.reasoning_summary_part.done", **where, summary_index=0, part=part))
        else:
            assert opened.call is not None
            call = final or opened.call
            arguments = _same_json(text, call.arguments) if final else text
            item = _call_item(self.context, opened.id, call, arguments)
            out.append(
                self.event("response.function_call_arguments.done", **where, name=item["name"], arguments=arguments)
            )
        out.append(self.event("response.output_item.done", output_index=opened.index, item=item))
        self.output.append(item)
        self.open = None
        return out

    def _end(self, call: Call, end: Done | Deferred) -> list[ServerSentEvent]:
        context = self.context
        calls = _calls_of(context, end)
        if context.forced and calls and self.forced_id is not None:
            calls = [ToolCall(self.forced_id, calls[0].name, calls[0].arguments)]
        final = {c.id: c for c in calls}
        out: list[ServerSentEvent] = []
        if self.open is not None and self.open.call is not None and self.open.call.id in final:
            out += self._close(final[self.open.call.id])
        out += self._close()
        for c in calls:  # calls that were not streamed (a forced call chosen among several)
            if c.id not in self.calls:
                out += self._call_start(c)
                if c.id not in self.calls:  # one call per answer, and another was streamed already
                    continue
                out += self._call_args(self.calls[c.id], json.dumps(c.arguments))
                out += self._close(c)
        text = "".join(o["content"][0]["text"] for o in self.output if o["type"] == "message")
        self.remember(call, "" if context.forced else text, calls)
        status = _status(end)
        meta = common.metadata(end.outcome, self.start)
        response = _response(context, status, self.output, usage(end), model=end.outcome.model, meta=meta)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self.event(kind, response=response))
        self.finished = True
        return out


def _same_json(streamed: str, arguments: Any) -> str:
    """The arguments as streamed, if they are the call's final arguments; else the final ones."""
    try:
        if json.loads(streamed) == arguments:
            return streamed
    except ValueError:
        pass
    return json.dumps(arguments)


def _check_final_json(streamed: list[str], text: str) -> None:
    """The structured output, whole: already streamed, unless the CLI had the model try again."""
    try:
        same = json.loads("".join(streamed)) == json.loads(text)
    except ValueError:
        same = False
    if not same:
        raise StructuredOutputRetried(
            "The structured output streamed so far was rejected by the CLI's schema check and written again; "
            f"the final value is: {text}"
        )
