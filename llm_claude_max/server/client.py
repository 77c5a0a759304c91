"""The llm plugin's side of a running `claude-max serve` (``CLAUDE_MAX_SERVER``): the same prompt, sent
over HTTP with httpx, so `llm` gets the server's warm processes and live conversations.

The server answers in the OpenAI chat format plus a ``claude_max`` object (session, billing route,
rate limit); errors carry the ``code`` of the precise error class, raised again here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import errors, invocation
from ..content import Block, Turn
from ..runner.turn import Notice, Reasoning, Summary, Text, ToolCallArgs, ToolCallStarted
from ..tools import ToolCall, ToolSpec


class Unreachable(errors.CLINotFound):
    """The server could not be reached, or stopped before taking the prompt: nothing was sent to it."""


@dataclass(frozen=True)
class Finished:
    """A step ended: with the model's answer, or (``calls``) with calls of the caller's tools."""

    summary: Summary
    calls: tuple[ToolCall, ...] = ()


def _content(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif block["type"] in ("image", "document"):
            source = block["source"]
            url = f"data:{source['media_type']};base64,{source['data']}"
            if block["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": url}})
            else:
                parts.append({"type": "file", "file": {"file_data": url}})
    return parts


def openai_messages(system: str | None, turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Neutral turns as Chat Completions messages: tool calls on the assistant's, results as tool messages."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        if turn.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": "".join(b.get("text", "") for b in turn.blocks)}
            calls = [b for b in turn.blocks if b["type"] == "tool_use"]
            if calls:
                message["tool_calls"] = [
                    {
                        "id": b["id"],
                        "type": "function",
                        "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                    }
                    for b in calls
                ]
            messages.append(message)
            continue
        for block in turn.blocks:
            if block["type"] == "tool_result":
                messages.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": _result_text(block)})
        content = _content(turn.blocks)
        if content:
            messages.append({"role": "user", "content": content})
    return messages


def _result_text(block: Block) -> str:
    content = block.get("content")
    text = content if isinstance(content, str) else "\n".join(str(b.get("text", "")) for b in content or [])
    return f"Error: {text}" if block.get("is_error") and not text.startswith("Error") else text


def openai_tools(specs: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": s.name, "description": s.description, "parameters": dict(s.input_schema)},
        }
        for s in specs
    ]


def _raise_for(payload: Any, status: int) -> None:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        raise errors.ProtocolError(f"The claude-max server answered {status} without an error object.")
    cls = errors.by_code(error.get("code"))
    message = str(error.get("message") or f"HTTP {status}")
    if error.get("code") == "server_stopping":
        raise Unreachable(message)
    if cls is errors.ClaudeMaxError:
        raise errors.APIError(f"The claude-max server answered {status}: {message}", status=status)
    if cls is errors.APIError:
        raise errors.APIError(message, status=status)
    if cls is errors.BillingRouteRefused:
        raise errors.BillingRouteRefused(message, route="unknown")
    raise cls(message)


async def prompt(
    url: str,
    key: str | None,
    *,
    model: str,
    messages: list[dict[str, Any]],
    schema: Mapping[str, Any] | None,
    extension: Mapping[str, Any],
    read_timeout: float,
    connect_timeout: float = 5.0,
    tools: Sequence[ToolSpec] = (),
    uds: str | None = None,
) -> AsyncGenerator[Text | Reasoning | Notice | ToolCallStarted | ToolCallArgs | Finished, None]:
    """The prompt's events from the server at ``url`` (through the Unix socket ``uds`` when given).
    :class:`Unreachable` when it could not be reached: then nothing was sent."""
    httpx = _http()

    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "claude_max": dict(extension),
    }
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(schema)}}
    if tools:
        body["tools"] = openai_tools(tools)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=60.0, pool=5.0)
    endpoint = _base(url) + "/v1/chat/completions"
    meta: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    model_id: str | None = None
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    try:
        # Plain HTTP over a Unix socket: no TLS, so no certificate store to load (about 20 ms).
        transport = httpx.AsyncHTTPTransport(uds=uds, verify=False) if uds else None
        async with (
            httpx.AsyncClient(timeout=timeout, trust_env=False, transport=transport) as client,
            client.stream("POST", endpoint, json=body, headers=headers) as response,
        ):
            if response.status_code != 200:
                payload = await response.aread()
                try:
                    _raise_for(json.loads(payload), response.status_code)
                except ValueError:
                    raise errors.ProtocolError(f"The claude-max server answered {response.status_code}.") from None
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    yield Notice(line[1:].strip())
                    continue
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise errors.ProtocolError(
                        f"The claude-max server sent a line that is not JSON: {data[:200]!r}"
                    ) from None
                if not isinstance(chunk, dict):
                    raise errors.ProtocolError("The claude-max server sent an event that is not an object.")
                if "error" in chunk:
                    error = chunk["error"]
                    _raise_for(chunk, int(error.get("status") or 502) if isinstance(error, dict) else 502)
                model_id = chunk.get("model") or model_id
                meta = chunk.get("claude_max") or meta
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("reasoning_content"):
                        yield Reasoning(delta["reasoning_content"])
                    if delta.get("content"):
                        yield Text(delta["content"])
                    for call in delta.get("tool_calls") or []:
                        for event in _tool_call_delta(calls, call):
                            yield event
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise Unreachable(  # (the warm server's callers run their own CLI instead, and never show this)
            f"The claude-max server at {uds or url} cannot be reached ({exc}). Start it with "
            f"`{invocation.command('serve')}`, or unset CLAUDE_MAX_SERVER to run the CLI directly."
        ) from exc
    except httpx.TimeoutException as exc:
        raise errors.ClaudeTimeout(f"The claude-max server at {url} sent nothing for {read_timeout:g} s.") from exc
    except httpx.HTTPError as exc:
        raise errors.CLINotFound(
            f"The claude-max server at {url} cannot be reached ({exc}). Start it with "
            f"`{invocation.command('serve')}`, or unset CLAUDE_MAX_SERVER to run the CLI directly."
        ) from exc
    yield Finished(
        Summary(
            session_id=meta.get("session_id"),
            model=model_id,
            usage=meta.get("usage") or {},
            billing=meta.get("billing") or {},
            rate_limit=meta.get("rate_limit"),
            cost_usd=meta.get("cost_estimate_usd"),
            continued=str(meta.get("continued") or "new"),
            warnings=tuple(meta.get("warnings") or ()),
            extra={**(meta.get("extra") or {}), "process": meta.get("process"), "via": uds or url},
        ),
        tuple(ToolCall(i, n, json.loads(a or "{}")) for i, n, a in calls.values()),
    )


_paused: dict[tuple[str, str | None, str | None], set[str]] = {}
"""(url, key, socket) -> tool calls a server's process waits at for this process's results."""


def track_calls(url: str, key: str | None, uds: str | None, *, paused: Sequence[str], answered: Sequence[str]) -> None:
    """Remember the tool calls a step through a server ended with (and forget those answered now), so that
    calls nobody will answer are released when this process exits (:func:`release_paused`)."""
    calls = _paused.setdefault((url, key, uds), set())
    calls.difference_update(answered)
    if paused and not _registered:
        import atexit

        atexit.register(release_paused)
        _registered.append(True)
    calls.update(paused)


_registered: list[bool] = []


def release_paused() -> None:
    """At exit: tell each server to end its processes paused at calls of ours that were never answered (a
    chain stopped at its limit, Ctrl-C at an approval prompt), as a CLI of our own would have been ended."""
    httpx = _http()
    for (url, key, uds), calls in list(_paused.items()):
        if not calls:
            continue
        transport = httpx.HTTPTransport(uds=uds, verify=False) if uds else None
        headers = {"authorization": f"Bearer {key}"} if key else {}
        try:
            with httpx.Client(transport=transport, timeout=5.0, trust_env=False) as client:
                client.post(_base(url) + "/v1/claude-max/release", json={"tool_call_ids": sorted(calls)},
                            headers=headers)  # fmt: skip
        except httpx.HTTPError:
            pass  # the server is gone, and its processes with it
        calls.clear()


def _base(url: str) -> str:
    """The server's root: ``CLAUDE_MAX_SERVER`` may name it with or without ``/v1``."""
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def _http() -> Any:
    """httpx, or httpx2 (the same API) when `llm` has imported it already: importing httpx itself would cost
    every prompt through a server about 60 ms."""
    import importlib
    import sys

    return sys.modules.get("httpx2") or importlib.import_module("httpx")


def _tool_call_delta(calls: dict[int, list[str]], delta: Any) -> list[ToolCallStarted | ToolCallArgs]:
    """One ``delta.tool_calls`` item: the start of a call (id and name), then pieces of its arguments."""
    if not isinstance(delta, dict):
        return []
    given = delta.get("index")
    index = given if isinstance(given, int) else len(calls)
    function = delta.get("function") or {}
    out: list[ToolCallStarted | ToolCallArgs] = []
    if index not in calls:
        calls[index] = [str(delta.get("id") or f"call_{index}"), str(function.get("name") or ""), ""]
        out.append(ToolCallStarted(calls[index][0], calls[index][1]))
    if function.get("arguments"):
        calls[index][2] += function["arguments"]
        out.append(ToolCallArgs(calls[index][0], function["arguments"]))
    return out
