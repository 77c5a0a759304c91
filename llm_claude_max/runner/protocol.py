"""The CLI's stream-json protocol, typed: one parser for every stdout line and encoders for stdin.

Observed on the real CLI 2.1.328 (``claude-cli.md``, "Event samples"). Unknown event types are kept
as :class:`Other`; a line that is not a JSON object is a :class:`~llm_claude_max.errors.ProtocolError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError

JSON = dict[str, Any]


@dataclass(frozen=True)
class Init:
    """``system/init``: printed once the first user message has been read."""

    session_id: str
    model: str
    api_key_source: str
    version: str | None
    socket_path: str | None
    raw: JSON = field(repr=False)


@dataclass(frozen=True)
class TextDelta:
    text: str
    message_id: str | None


@dataclass(frozen=True)
class ThinkingDelta:
    text: str
    message_id: str | None


@dataclass(frozen=True)
class ToolUseStart:
    """``content_block_start`` of a ``tool_use`` block: the model begins a tool call."""

    index: int
    id: str
    name: str
    message_id: str | None


@dataclass(frozen=True)
class ToolInputDelta:
    """``input_json_delta``: the next piece of a tool call's JSON arguments."""

    index: int
    partial_json: str
    message_id: str | None


@dataclass(frozen=True)
class StreamOther:
    """A ``stream_event`` other than a text/thinking delta (message_start, content_block_stop...)."""

    event: JSON


@dataclass(frozen=True)
class Assistant:
    """A complete assistant message (emitted per content block, before its ``content_block_stop``)."""

    message_id: str | None
    model: str | None
    content: list[JSON]
    api_error: str | None
    """``error`` of a synthetic error message (``model == "<synthetic>"``), else None."""


@dataclass(frozen=True)
class User:
    """A user message the CLI adds itself: tool results, schema nudges, interruption notices."""

    content: list[JSON] | str


@dataclass(frozen=True)
class RateLimit:
    """``rate_limit_event``: sent only for claude.ai subscription credentials."""

    status: str | None
    resets_at: int | None
    limit_type: str | None
    is_using_overage: bool
    overage_status: str | None
    raw: JSON = field(repr=False)


@dataclass(frozen=True)
class ApiRetry:
    attempt: int
    max_retries: int | None
    delay_ms: float | None
    error_status: int | None
    error: str | None


@dataclass(frozen=True)
class Result:
    subtype: str
    is_error: bool
    text: str
    session_id: str | None
    api_error_status: int | None
    terminal_reason: str | None
    stop_reason: str | None
    structured_output: Any
    errors: list[str]
    raw: JSON = field(repr=False)

    @property
    def deferred(self) -> bool:
        """The turn stopped at tool calls a PreToolUse hook deferred to the host (they wait for results)."""
        return self.stop_reason == "tool_deferred"

    @property
    def usage(self) -> JSON:
        usage = self.raw.get("usage")
        return usage if isinstance(usage, dict) else {}


@dataclass(frozen=True)
class ControlResponse:
    request_id: str | None
    ok: bool
    response: JSON
    error: str | None


@dataclass(frozen=True)
class ControlRequest:
    """A request from the CLI to the host (tool permission, SDK MCP message, hook callback)."""

    request_id: str
    subtype: str
    request: JSON


@dataclass(frozen=True)
class Other:
    type: str
    raw: JSON = field(repr=False)


Event = (
    Init
    | TextDelta
    | ThinkingDelta
    | ToolUseStart
    | ToolInputDelta
    | StreamOther
    | Assistant
    | User
    | RateLimit
    | ApiRetry
    | Result
    | ControlResponse
    | ControlRequest
    | Other
)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_line(line: bytes | str) -> Event:
    """Parse one stdout line. Raises :class:`ProtocolError` when it is not a JSON object."""
    try:
        data = json.loads(line)
    except ValueError:
        text = line.decode(errors="replace") if isinstance(line, bytes) else line
        raise ProtocolError(f"The CLI printed a line that is not stream-json: {text[:200]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError(f"The CLI printed JSON that is not an event: {str(data)[:200]!r}")
    return _parse_event(data)


def _parse_event(d: JSON) -> Event:
    kind = d["type"]
    if kind == "stream_event":
        event = d.get("event") or {}
        delta = event.get("delta") or {}
        message_id = d.get("api_message_id")
        if event.get("type") == "content_block_delta":
            if delta.get("type") == "text_delta":
                return TextDelta(str(delta.get("text", "")), message_id)
            if delta.get("type") == "thinking_delta":
                return ThinkingDelta(str(delta.get("thinking", "")), message_id)
            if delta.get("type") == "input_json_delta":
                return ToolInputDelta(_int(event.get("index")) or 0, str(delta.get("partial_json", "")), message_id)
        block = event.get("content_block") or {}
        if event.get("type") == "content_block_start" and block.get("type") == "tool_use":
            index = _int(event.get("index")) or 0
            return ToolUseStart(index, str(block.get("id", "")), str(block.get("name", "")), message_id)
        return StreamOther(event)
    if kind == "system":
        subtype = d.get("subtype")
        if subtype == "init":
            return Init(
                session_id=str(d.get("session_id", "")),
                model=str(d.get("model", "")),
                api_key_source=str(d.get("apiKeySource", "")),
                version=d.get("claude_code_version"),
                socket_path=d.get("messaging_socket_path"),
                raw=d,
            )
        if subtype == "api_retry":
            return ApiRetry(
                attempt=_int(d.get("attempt")) or 0,
                max_retries=_int(d.get("max_retries")),
                delay_ms=d.get("retry_delay_ms") if isinstance(d.get("retry_delay_ms"), (int, float)) else None,
                error_status=_int(d.get("error_status")),
                error=d.get("error"),
            )
        return Other(f"system/{subtype}", d)
    if kind == "assistant":
        message = d.get("message") or {}
        content = message.get("content")
        return Assistant(
            message_id=message.get("id"),
            model=message.get("model"),
            content=[b for b in content if isinstance(b, dict)] if isinstance(content, list) else [],
            api_error=d.get("error")
            if d.get("is_api_error_message") or message.get("model") == "<synthetic>"
            else None,
        )
    if kind == "user":
        message = d.get("message") or {}
        content = message.get("content", "")
        return User(content if isinstance(content, (list, str)) else "")
    if kind == "rate_limit_event":
        info = d.get("rate_limit_info") or {}
        return RateLimit(
            status=info.get("status"),
            resets_at=_int(info.get("resetsAt")),
            limit_type=info.get("rateLimitType"),
            is_using_overage=info.get("isUsingOverage") is True,
            overage_status=info.get("overageStatus"),
            raw=info,
        )
    if kind == "result":
        errors = d.get("errors")
        text = d.get("result")
        return Result(
            subtype=str(d.get("subtype", "")),
            is_error=d.get("is_error") is True,
            text=text if isinstance(text, str) else "",
            session_id=d.get("session_id"),
            api_error_status=_int(d.get("api_error_status")),
            terminal_reason=d.get("terminal_reason"),
            stop_reason=d.get("stop_reason"),
            structured_output=d.get("structured_output"),
            errors=[str(e) for e in errors] if isinstance(errors, list) else [],
            raw=d,
        )
    if kind == "control_response":
        response = d.get("response") or {}
        return ControlResponse(
            request_id=response.get("request_id"),
            ok=response.get("subtype") == "success",
            response=response.get("response") or {},
            error=response.get("error"),
        )
    if kind == "control_request":
        request = d.get("request") or {}
        return ControlRequest(str(d.get("request_id", "")), str(request.get("subtype", "")), request)
    return Other(kind, d)


def _line(obj: JSON) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


DEFER_HOOK = "llm-claude-max-pre-tool-use"
"""The callback id of our PreToolUse hook (answered by :mod:`llm_claude_max.runner.control`)."""


def encode_initialize(request_id: str, *, hooks: bool = False) -> bytes:
    """The SDK ``initialize`` control request: the CLI answers with its account and models and makes
    no API call (``claude-cli.md`` §3.3). With ``hooks``, every tool call first asks us (PreToolUse), so
    the caller's tool calls can be deferred to the caller (``tool-calling.md`` §5a)."""
    request: JSON = {"subtype": "initialize"}
    if hooks:
        request["hooks"] = {"PreToolUse": [{"matcher": None, "hookCallbackIds": [DEFER_HOOK]}]}
    return _line({"type": "control_request", "request_id": request_id, "request": request})


def _not_a_command(text: str) -> str:
    """The CLI runs a text block that starts with ``/`` as one of its own commands (``/model haiku``
    switches the model, ``/clear`` wipes the session) instead of sending it; a leading space makes it
    plain text, sent unchanged otherwise."""
    return " " + text if text.startswith("/") else text


def encode_user_message(content: str | list[JSON]) -> bytes:
    """A user message; its text always reaches the model (never read as a Claude Code command)."""
    if isinstance(content, str):
        content = _not_a_command(content)
    else:
        content = [
            {**block, "text": _not_a_command(block["text"])}
            if block.get("type") == "text" and isinstance(block.get("text"), str)
            else block
            for block in content
        ]
    message = {"role": "user", "content": content}
    return _line({"type": "user", "message": message, "parent_tool_use_id": None, "session_id": ""})


def encode_clear(uuid: str) -> bytes:
    """The one Claude Code command we ever send on purpose: ``/clear`` starts a new, empty conversation in
    the same process (:mod:`.recycle`). ``uuid`` names the message, so the reset can be checked and its
    record cut away afterwards. A caller's text never becomes a command (:func:`encode_user_message`)."""
    message = {"role": "user", "content": "/clear"}
    return _line({"type": "user", "message": message, "parent_tool_use_id": None, "session_id": "", "uuid": uuid})


def encode_tool_results(results: list[JSON]) -> bytes:
    """One user message carrying ``tool_result`` blocks: how a paused turn is given its results."""
    message = {"role": "user", "content": results}
    return _line({"type": "user", "message": message, "parent_tool_use_id": None, "session_id": ""})


def encode_control_success(request_id: str, response: JSON | None = None) -> bytes:
    body: JSON = {"subtype": "success", "request_id": request_id}
    if response is not None:
        body["response"] = response
    return _line({"type": "control_response", "response": body})


def encode_control_request(request_id: str, request: JSON) -> bytes:
    return _line({"type": "control_request", "request_id": request_id, "request": request})


def encode_control_error(request_id: str, error: str) -> bytes:
    return _line(
        {"type": "control_response", "response": {"subtype": "error", "request_id": request_id, "error": error}}
    )
