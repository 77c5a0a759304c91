"""The Anthropic Messages API (`POST /v1/messages`) of `claude-max serve`, driven by the official `anthropic`
SDK and Pydantic AI's Anthropic model, with the real CLI against a fake API that plays a tool-calling model."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from llm_claude_max.server.apis import anthropic_messages

from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, tool_results
from .server_process import Server
from .test_plugin_real import png_bytes

pytestmark = pytest.mark.real_cli

KEY = "cmx-test-key-0123456789"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(server: Server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as client:
        yield client


def post(server: Server, **body: Any) -> httpx.Response:
    payload = {"model": "claude-max", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(server.url + "/v1/messages", json=payload, timeout=60)


def test_create_and_stream(client: anthropic.Anthropic, server: Server, real_cli: FakeAnthropicAPI) -> None:
    message = client.messages.create(
        model="claude-max", max_tokens=1024, system="Be brief.", messages=[{"role": "user", "content": "hi"}]
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello from the fake API."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.usage.input_tokens == 12
    assert message.usage.output_tokens == 7
    anthropic_messages.MessageObject.model_validate(post(server).json())
    body = real_cli.message_requests[0].body or {}
    assert "Be brief." in json.dumps(body["system"]) and body["max_tokens"] == 1024

    with client.messages.stream(model="claude-max", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]) as s:
        texts = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(texts) == "Hello from the fake API." and len(texts) > 1
    assert final.stop_reason == "end_turn" and final.usage.input_tokens == 12 and final.usage.output_tokens == 7
