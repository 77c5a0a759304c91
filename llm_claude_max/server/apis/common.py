"""What every HTTP API shares: models, content blocks from data URLs, tool definitions, stop strings,
parameter policy, usage and the ``claude_max`` metadata."""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, ValidationError

from ... import catalog
from ...content import Block, media_block
from ...errors import ClaudeMaxError, InvalidRequest, ModelNotFound, PaidUsageRefused, UsageLimitReached
from ...runner.pool import Start
from ...runner.session import Outcome
from ...tools import ToolSpec

IGNORED_HEADER = "X-Claude-Max-Ignored"
DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.DOTALL)
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
REMOTE = ("http://", "https://")


class StrictModel(BaseModel):
    """The base of every request model: strict, as OpenAI's and Anthropic's APIs are ("yes" is not a
    boolean, true is not a number), and an unknown field is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", strict=True)


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


def invalid(error: ValidationError) -> InvalidRequest:
    """A pydantic validation error as one precise 400: where, and what is wrong. Of the errors of a union's
    branches, the one that went deepest into the input says the most."""
    paths = [_where(e["loc"]) for e in error.errors()]
    deepest = max(range(len(paths)), key=lambda n: (len(paths[n]), -n))
    where = ".".join(paths[deepest])
    message = error.errors()[deepest]["msg"].removeprefix("Value error, ")
    exc = InvalidRequest(f"{where}: {message}" if where else message)
    exc.param = where or None  # type: ignore[attr-defined]
    return exc


def _where(loc: Sequence[int | str]) -> list[str]:
    """A pydantic error location as the request's own path: without the labels of union branches
    (``str``, ``list[...]``, class names) and the tags of tagged unions."""
    parts: list[str] = []
    tag_next = False
    for part in loc:
        text = str(part)
        if tag_next and not isinstance(part, int):
            tag_next = False  # a tagged union's tag, not a field
            continue
        if "tagged-union[" in text:
            tag_next = True
        elif not ("[" in text or text.startswith("function-") or text[:1].isupper() or text in TYPE_LABELS):
            parts.append(text)
    return parts


TYPE_LABELS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def data_url_block(url: str, where: str) -> Block:
    match = DATA_URL.match(url)
    if not match:
        raise InvalidRequest(f"{where}: only base64 data URLs are accepted (data:image/png;base64,...).")
    return media_block(match.group("type").lower(), re.sub(r"\s", "", match.group("data")))


def base64_block(media_type: str, data: str, where: str) -> Block:
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: the data is not valid base64.") from None
    return media_block(media_type, data)


def remote_block(url: str) -> Block:
    """A placeholder for an image to fetch after admission (``--allow-remote-images``)."""
    return {"type": "remote_image", "url": url}


def remote_urls(blocks: Iterable[Block]) -> list[str]:
    return [b["url"] for b in blocks if b.get("type") == "remote_image"]


def check_schema(schema: dict[str, Any], where: str) -> None:
    """A JSON Schema the CLI can be given: valid for its own ``$schema`` (draft 2020-12 when it names none or
    one jsonschema does not know), and not nested too deeply to check."""
    dialect = schema.get("$schema")
    if dialect is not None and not isinstance(dialect, str):
        raise InvalidRequest(f"{where}: `$schema` must be a URI string.")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"{where}: not a valid JSON Schema: {exc.message}") from None
    except RecursionError:
        raise InvalidRequest(f"{where}: the schema is nested too deeply.") from None


def tool_spec(name: Any, description: Any, parameters: Any, where: str) -> ToolSpec:
    """A function tool, checked: an OpenAI-style name and a valid JSON Schema for its arguments."""
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidRequest(f"{where}.name: must be 1 to 64 letters, digits, underscores or dashes.")
    schema = parameters if parameters is not None else {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{where}.parameters: must be a JSON Schema object.")
    check_schema(schema, f"{where}.parameters")
    if schema.get("type", "object") != "object":
        raise InvalidRequest(f"{where}.parameters: the arguments must be an object (`type: object`).")
    return ToolSpec(name, description if isinstance(description, str) else "", schema)


def choice_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The structured output that stands for "call one of these tools" (``tool_choice`` required or named):
    a named tool's arguments themselves; for several, ``{"name": …, "arguments": …}``."""
    if len(tools) == 1:
        return dict(tools[0].input_schema)
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": [t.name for t in tools]}, "arguments": {"type": "object"}},
        "required": ["name", "arguments"],
        "oneOf": [{"properties": {"name": {"const": t.name}, "arguments": dict(t.input_schema)}} for t in tools],
    }


def chosen_call(tools: Sequence[ToolSpec], structured: Any) -> tuple[str, dict[str, Any]]:
    """The tool call a ``choice_schema`` answer stands for."""
    if len(tools) == 1:
        return tools[0].name, structured if isinstance(structured, dict) else {}
    if isinstance(structured, dict):
        arguments = structured.get("arguments")
        return str(structured.get("name")), arguments if isinstance(arguments, dict) else {}
    return tools[0].name, {}


@dataclass
class StopFilter:
    """Applies stop strings to streamed text: what may be shown now, and whether a stop string was met.

    Text is held back only while it could be the start of a stop string."""

    stops: tuple[str, ...]
    held: str = ""
    stopped: bool = False
    matched: str | None = None
    """The stop string that ended the text (the Anthropic API reports it)."""
    shown: list[str] = field(default_factory=list)

    def feed(self, text: str) -> str:
        if self.stopped or not self.stops:
            if not self.stopped:
                self.shown.append(text)
            return "" if self.stopped else text
        self.held += text
        found = find_stop(self.held, self.stops)
        if found is not None:
            cut, self.matched = found
            out, self.held, self.stopped = self.held[:cut], "", True
            self.shown.append(out)
            return out
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.held.endswith(s[:n])), default=0)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        self.shown.append(out)
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        self.shown.append(out)
        return out

    @property
    def text(self) -> str:
        return "".join(self.shown)


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Where the first stop string in ``text`` starts, and which one it is."""
    return min(((i, s) for s in stops if (i := text.find(s)) >= 0), default=None)


def apply_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    found = find_stop(text, stops)
    return (text[: found[0]], True) if found is not None else (text, False)


def ignored_header(names: Iterable[str]) -> dict[str, str]:
    """``X-Claude-Max-Ignored``: parameters accepted but not applied (names a header can carry; others counted)."""
    names = sorted(set(names))
    if not names:
        return {}
    safe = [n for n in names if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", n)]
    if len(safe) < len(names):
        safe.append(f"{len(names) - len(safe)} more")
    return {IGNORED_HEADER: ", ".join(safe)}


def token_usage(outcome: Outcome) -> dict[str, int]:
    """Anthropic-style counts of one step: input (with cache), output, cache read/written, thinking."""
    raw = outcome.usage
    cached = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    return {
        "input": int(raw.get("input_tokens") or 0),
        "cache_read": cached,
        "cache_written": written,
        "output": int(raw.get("output_tokens") or 0),
        "thinking": int((raw.get("output_tokens_details") or {}).get("thinking_tokens") or 0),
    }


def metadata(outcome: Outcome, start: Start | None) -> dict[str, Any]:
    """Non-standard ``claude_max`` field: what the CLI reported (clients that do not know it ignore it)."""
    summary = outcome.summary(start.continued if start else "new")
    return {
        "session_id": summary.session_id,
        "continued": summary.continued,
        "process": start.process if start else None,
        "billing": dict(summary.billing),
        "rate_limit": summary.rate_limit,
        "cost_estimate_usd": summary.cost_usd,
        "usage": dict(summary.usage),
        "warnings": list(summary.warnings),
        "extra": dict(summary.extra),
    }


def error_status(exc: ClaudeMaxError, *, lock_until: int | None = None) -> tuple[int, dict[str, str]]:
    """The HTTP status of an error and its headers (``Retry-After`` until a window resets, or a few seconds
    after an overload), whatever the API's error body."""
    status = exc.http_status
    headers: dict[str, str] = {}
    retry_at: float | None = None
    if isinstance(exc, UsageLimitReached) and exc.resets_at is not None:
        retry_at = exc.resets_at.timestamp()
    elif isinstance(exc, PaidUsageRefused) and lock_until:
        retry_at = lock_until
    retry_after = getattr(exc, "retry_after", None)  # the server's own estimate (ServerBusy)
    if retry_at is not None:
        retry_after = retry_at - time.time()
    if status == 429:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after if retry_after is not None else 60)))
    elif status == 503 and exc.code == "api_error":
        headers["Retry-After"] = "5"
    return status, headers


def cut_by_limit(outcome: Outcome) -> bool:
    """The answer stopped at the output-token limit."""
    return outcome.cut or outcome.result.stop_reason == "max_tokens"


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def type_tag(known: Sequence[str], default: str = "") -> Callable[[Any], str]:
    """A pydantic discriminator on ``type`` that tolerates its absence (``default``) and tags every other
    value ``other``, so that an unsupported item is refused by name instead of by a union error."""

    def tag(value: Any) -> str:
        kind = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)
        return kind if kind in known else "other"

    return tag
