"""The OpenAI Chat Completions API, mapped onto CLI turns: request validation and response shapes.

Requests are validated here (never trusted): anything malformed is an :class:`InvalidRequest` (HTTP
400), an unknown model a :class:`ModelNotFound` (404). Parameters the CLI cannot apply are never
silently pretended: they are listed in the ``X-Claude-Max-Ignored`` response header.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import catalog
from ..errors import ClaudeMaxError, InvalidRequest, PaidUsageRefused, UsageLimitReached
from ..runner.command import CommandSpec, SystemPlacement
from ..runner.session import Outcome
from ..transcript import Block, Turn, media_block, text_block

if TYPE_CHECKING:
    from .engine import Start

IGNORED_HEADER = "X-Claude-Max-Ignored"
EFFORTS = ("low", "medium", "high", "xhigh", "max")
OPENAI_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}
UNSUPPORTED_ROLES = {"tool", "function"}
HANDLED = {"model", "messages", "stream", "stream_options", "response_format", "reasoning_effort", "user", "n",
           "tools", "functions", "claude_max"}  # fmt: skip
HEADER_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL)


class ModelNotFound(ClaudeMaxError):
    """The requested model is not one the CLI offers."""

    code = "model_not_found"


@dataclass(frozen=True)
class ChatRequest:
    model: str
    """The model id reported in responses: the resolved id when the CLI told us, else as requested."""
    cli_model: str | None
    system: str | None
    placement: SystemPlacement
    history: tuple[Turn, ...]
    current: tuple[Block, ...]
    schema: Mapping[str, Any] | None
    effort: str | None
    stream: bool
    include_usage: bool
    user: str | None
    ignored: tuple[str, ...]
    max_retries: int | None = None
    fingerprint: tuple[Any, ...] = field(default=(), repr=False)
    """A normalised form of every message, for matching a continued conversation."""

    def spec(self) -> CommandSpec:
        extra = {"CLAUDE_CODE_MAX_RETRIES": str(self.max_retries)} if self.max_retries is not None else {}
        return CommandSpec(
            model=self.cli_model,
            system_prompt=self.system if self.placement is not SystemPlacement.USER else None,
            placement=self.placement,
            json_schema=self.schema,
            effort=self.effort,
            extra_env=extra,
        )


def resolve_model(model: Any) -> tuple[str, str | None]:
    """``claude-max`` / ``claude-max-<alias>`` / ``<alias>`` / a ``claude-*`` model id -> (the model id to
    report, the --model value)."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("`model` must be a non-empty string.")
    entries = catalog.load()
    for entry in entries:
        if model in (entry.model_id, entry.alias):
            return entry.resolved or model, None if entry.alias == catalog.DEFAULT_ALIAS else entry.alias
    if model.startswith("claude-") and not model.startswith("claude-max") and re.fullmatch(r"[\w.\-\[\]]+", model):
        return model, model
    available = ", ".join(e.model_id for e in entries)
    raise ModelNotFound(f"The model {model!r} does not exist here. Available: {available}.")


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise InvalidRequest(f"{where}: only text content is allowed here.")
            value = part.get("text", part.get("refusal"))
            if not isinstance(value, str):
                raise InvalidRequest(f"{where}: a text part needs a string `text`.")
            parts.append(value)
        return "\n".join(parts)
    if content is None:
        return ""
    raise InvalidRequest(f"{where}: `content` must be a string or a list of parts.")


def _data_url_block(url: str, where: str) -> Block:
    match = DATA_URL.match(url)
    if not match:
        raise InvalidRequest(f"{where}: only base64 data URLs are accepted (data:image/png;base64,...).")
    return media_block(match.group("type").lower(), re.sub(r"\s", "", match.group("data")))


def _user_blocks(content: Any, where: str, remote: dict[str, Block]) -> list[Block]:
    if isinstance(content, str):
        return [text_block(content)] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: `content` must be a string or a list of parts.")
    blocks: list[Block] = []
    for n, part in enumerate(content):
        here = f"{where}.content[{n}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{here}: a text part needs a string `text`.")
            if part["text"]:
                blocks.append(text_block(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise InvalidRequest(f"{here}: `image_url.url` must be a string.")
            if url.startswith(("http://", "https://")):
                if url not in remote:
                    raise InvalidRequest(
                        f"{here}: remote image URLs are off; send a data URL, or start the server with "
                        "--allow-remote-images."
                    )
                blocks.append(remote[url])
            else:
                blocks.append(_data_url_block(url, here))
        elif kind == "file":
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data, str):
                raise InvalidRequest(f"{here}: a file part needs `file.file_data` (a base64 data URL of a PDF).")
            blocks.append(_data_url_block(data, here))
        else:
            raise InvalidRequest(f"{here}: parts of type {kind!r} are not supported (text, image_url, file).")
    return blocks


def remote_image_urls(body: Any) -> list[str]:
    """http(s) image URLs in a request body (fetched by the app when allowed)."""
    urls = []
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                urls.append(url)
    return urls


def _fingerprint(block: Block) -> Any:
    if block["type"] == "text":
        return block["text"].strip()
    data = block["source"]["data"]
    return (block["type"], hashlib.sha256(data.encode()).hexdigest())


def parse(body: Any, remote: dict[str, Block] | None = None) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    remote = remote or {}
    model, cli_model = resolve_model(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty array.")
    for name in ("tools", "functions"):
        if body.get(name):
            raise InvalidRequest(f"`{name}` is not supported: function calling is not available through this server.")
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("`n` must be 1: the CLI returns one answer per request.")

    systems: list[str] = []
    turns: list[Turn] = []
    fingerprint: list[Any] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object.")
        role = message.get("role")
        if not isinstance(role, str):
            raise InvalidRequest(f"{where}: `role` must be a string (system, developer, user or assistant).")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), where)
            if text:
                systems.append(text)
                fingerprint.append(("system", text.strip()))
        elif role == "user":
            blocks = _user_blocks(message.get("content"), where, remote)
            turns.append(Turn("user", tuple(blocks)))
            fingerprint.append(("user", tuple(_fingerprint(b) for b in blocks)))
        elif role == "assistant":
            if message.get("tool_calls") or message.get("function_call"):
                raise InvalidRequest(f"{where}: tool calls are not supported (function calling is not available).")
            text = _text_of(message.get("content"), where)
            turns.append(Turn("assistant", (text_block(text),) if text else ()))
            fingerprint.append(("assistant", (text.strip(),)))
        elif role in UNSUPPORTED_ROLES:
            raise InvalidRequest(f"{where}: {role!r} messages are not supported (function calling is not available).")
        else:
            raise InvalidRequest(f"{where}: unknown role {role!r} (system, developer, user or assistant).")
    if not turns or turns[-1].role != "user":
        raise InvalidRequest("The last message must be a user message.")
    if not turns[-1].blocks:
        raise InvalidRequest("The last user message is empty.")

    schema: Mapping[str, Any] | None = None
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequest("`response_format.json_schema.schema` must be a JSON Schema object.")
        elif kind == "json_object":
            schema = {"type": "object"}
        elif kind != "text":
            raise InvalidRequest("`response_format.type` must be text, json_object or json_schema.")

    extension = body.get("claude_max") or {}
    if not isinstance(extension, dict):
        raise InvalidRequest("`claude_max` must be an object.")
    effort = extension.get("effort")
    if effort is None and body.get("reasoning_effort") is not None:
        effort = OPENAI_EFFORT.get(str(body["reasoning_effort"]))
        if effort is None:
            raise InvalidRequest("`reasoning_effort` must be minimal, low, medium or high.")
    if effort is not None and effort not in EFFORTS:
        raise InvalidRequest(f"`claude_max.effort` must be one of {', '.join(EFFORTS)}.")
    try:
        placement = SystemPlacement(extension.get("system_placement") or SystemPlacement.REPLACE)
    except ValueError:
        raise InvalidRequest("`claude_max.system_placement` must be replace, append or user.") from None
    max_retries = extension.get("max_retries")
    if max_retries is not None and (
        not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= 10
    ):
        raise InvalidRequest("`claude_max.max_retries` must be an integer from 0 to 10.")

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("`stream` must be a boolean.")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest("`stream_options` must be an object.")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("`user` must be a string.")
    # Named in a response header: only names a header can carry (the rest are counted).
    unknown = [k for k in body if k not in HANDLED and body[k] is not None]
    ignored = tuple(sorted(k for k in unknown if HEADER_SAFE_NAME.fullmatch(k)))
    if len(ignored) < len(unknown):
        ignored += (f"{len(unknown) - len(ignored)} more",)
    return ChatRequest(
        model=model,
        cli_model=cli_model,
        system="\n\n".join(systems) or None,
        placement=placement,
        history=tuple(turns[:-1]),
        current=turns[-1].blocks,
        schema=schema,
        effort=effort,
        stream=stream,
        include_usage=options.get("include_usage") is True,
        user=user,
        ignored=ignored,
        max_retries=max_retries,
        fingerprint=tuple(fingerprint),
    )


def chain_key(partition: str, fingerprint: Sequence[Any]) -> str:
    """The identity of a conversation so far, within one caller's partition."""
    return hashlib.sha256(json.dumps([partition, list(fingerprint)], default=list).encode()).hexdigest()


# -- responses -------------------------------------------------------------------------------------


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def finish_reason(outcome: Outcome) -> str:
    return "length" if outcome.result.stop_reason == "max_tokens" else "stop"


def usage(outcome: Outcome) -> dict[str, Any]:
    raw = outcome.usage
    cached = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    prompt = int(raw.get("input_tokens") or 0) + cached + written
    completion = int(raw.get("output_tokens") or 0)
    thinking = int((raw.get("output_tokens_details") or {}).get("thinking_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": thinking},
    }


def metadata(outcome: Outcome, start: Start) -> dict[str, Any]:
    """Non-standard ``claude_max`` field: what the CLI reported (clients that do not know it ignore it)."""
    summary = outcome.summary(start.continued)
    return {
        "session_id": summary.session_id,
        "continued": summary.continued,
        "process": start.process,
        "billing": dict(summary.billing),
        "rate_limit": summary.rate_limit,
        "cost_estimate_usd": summary.cost_usd,
        "usage": dict(summary.usage),
        "warnings": list(summary.warnings),
        "extra": dict(summary.extra),
    }


def completion(request_id: str, created: int, model: str, outcome: Outcome, start: Start) -> dict[str, Any]:
    """``model``: the requested id, reported when the CLI did not say which model answered."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": outcome.model or model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(outcome),
            }
        ],
        "usage": usage(outcome),
        "claude_max": metadata(outcome, start),
    }


def chunk(
    request_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def sse(payload: Mapping[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


# -- errors ------------------------------------------------------------------------------------------

STATUS = {
    "invalid_request": 400,
    "model_not_found": 404,
    "usage_limit_reached": 429,
    "paid_usage_refused": 429,
    "server_busy": 429,
    "not_logged_in": 503,
    "billing_route_refused": 503,
    "cli_not_found": 503,
    "state_dir_unusable": 503,
    "api_error": 502,
    "structured_output_missing": 502,
    "protocol_error": 502,
    "session_not_found": 502,
    "timeout": 504,
    "cancelled": 499,
}
TYPE = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


def error_body(message: str, code: str, status: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPE.get(status, "api_error"), "param": param, "code": code}}


def error_for(exc: ClaudeMaxError, *, lock_until: int | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """HTTP status, OpenAI-shaped body and headers for an error."""
    status = STATUS.get(exc.code, 500)
    if exc.code == "api_error" and getattr(exc, "status", None) in (529, 503):
        status = 503
    headers: dict[str, str] = {}
    retry_at: float | None = None
    if isinstance(exc, UsageLimitReached) and exc.resets_at is not None:
        retry_at = exc.resets_at.timestamp()
    elif isinstance(exc, PaidUsageRefused) and lock_until:
        retry_at = lock_until
    if status == 429:
        headers["Retry-After"] = str(max(1, int((retry_at or time.time() + 60) - time.time())))
    elif status == 503 and exc.code == "api_error":
        headers["Retry-After"] = "5"
    return status, error_body(str(exc), exc.code, status), headers
