"""The OpenAI Responses API (`POST /v1/responses`) of `claude-max serve`, driven by the real clients: the
official `openai` SDK (`responses.create`, `responses.stream`), openai-agents' default `Agent` and the Codex
CLI, with the real CLI against a fake API that plays a tool-calling model."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from llm_claude_max.server.apis import openai_responses

from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, tool_results
from .server_process import Server

pytestmark = pytest.mark.real_cli

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def post(server: Server, **body: Any) -> httpx.Response:
    payload = {"model": "claude-max", "input": "hi", **body}
    return httpx.post(server.base + "/responses", json=payload, timeout=60)


def test_create_and_stream_plain_text(server: Server, real_cli: FakeAnthropicAPI) -> None:
    client = server.client()
    response = client.responses.create(model="claude-max", instructions="Be brief.", input="hi")
    assert response.output_text == "Hello from the fake API."
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (12, 7)
    openai_responses.ResponseObject.model_validate(post(server).json())
    assert "Be brief." in json.dumps(real_cli.message_requests[0].body["system"])  # type: ignore[index]

    with client.responses.stream(model="claude-max", input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello from the fake API." and len(deltas) > 1
    assert final.output_text == "Hello from the fake API." and final.usage is not None
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_function_round_trip_with_previous_response_id(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(Reply(text="Let me look.", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]), Reply(text="Sunny."))
    client = server.client()
    first = client.responses.create(model="claude-max", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert first.output_text == "Let me look."
    second = client.responses.create(
        model="claude-max",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22C"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text == "Sunny." and second.previous_response_id == first.id
    meta = (second.model_extra or {})["claude_max"]
    assert meta["continued"] == "paused" and meta["process"] == "paused"
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "22C"
    assert len(real_cli.message_requests) == 2


def test_unknown_previous_response_is_404(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        server.client().responses.create(model="claude-max", input="hi", previous_response_id="resp_nope")
    assert caught.value.code == "previous_response_not_found"
