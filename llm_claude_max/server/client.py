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
from ..runner.session import Notice, Reasoning, Summary, Text
from ..transcript import Block, Turn


@dataclass(frozen=True)
class Finished:
    summary: Summary


def _content(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]})
        else:
            source = block["source"]
            url = f"data:{source['media_type']};base64,{source['data']}"
            if block["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": url}})
            else:
                parts.append({"type": "file", "file": {"file_data": url}})
    return parts


def openai_messages(system: str | None, turns: Sequence[Turn]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        if turn.role == "assistant":
            messages.append({"role": "assistant", "content": "".join(b.get("text", "") for b in turn.blocks)})
        else:
            messages.append({"role": "user", "content": _content(turn.blocks)})
    return messages


def _raise_for(payload: Any, status: int) -> None:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        raise errors.ProtocolError(f"The claude-max server answered {status} without an error object.")
    cls = errors.by_code(error.get("code"))
    message = str(error.get("message") or f"HTTP {status}")
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
) -> AsyncGenerator[Text | Reasoning | Notice | Finished, None]:
    import httpx

    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "claude_max": dict(extension),
    }
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(schema)}}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=60.0, pool=5.0)
    endpoint = url.rstrip("/") + ("/chat/completions" if url.rstrip("/").endswith("/v1") else "/v1/chat/completions")
    meta: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    model_id: str | None = None
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
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
            extra={**(meta.get("extra") or {}), "process": meta.get("process"), "via": url},
        )
    )
