"""The Anthropic Messages API (`POST /v1/messages`) of `claude-max serve`, driven by the official `anthropic`
SDK and Pydantic AI's Anthropic model, with the real CLI against a fake API that plays a tool-calling model."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
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


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def test_a_tool_round_trip_continues_the_paused_process(
    client: anthropic.Anthropic, real_cli: FakeAnthropicAPI
) -> None:
    real_cli.enqueue(
        Reply(text="Let me look.", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]), Reply(text="Sunny.")
    )
    messages: list[Any] = [user("Weather in Paris?")]
    with client.messages.stream(model="claude-max", max_tokens=1024, messages=messages, tools=[WEATHER]) as stream:  # type: ignore[list-item]
        kinds = [event.type for event in stream]
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use" and [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    assert kinds.count("input_json") > 1  # the arguments as they were written
    messages += [
        {"role": "assistant", "content": first.content},
        user([{"type": "tool_result", "tool_use_id": call.id, "content": "22C"}]),
    ]
    second = client.messages.create(model="claude-max", max_tokens=1024, messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert second.content[0].text == "Sunny." and second.stop_reason == "end_turn"  # type: ignore[union-attr]
    meta = (second.model_extra or {})["claude_max"]
    assert meta["continued"] == "paused" and meta["process"] == "paused"
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "22C"
    assert len(real_cli.message_requests) == 2


def test_images_and_documents(client: anthropic.Anthropic, server: Server, real_cli: FakeAnthropicAPI) -> None:
    png = base64.b64encode(png_bytes()).decode()
    pdf = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}},
    ]
    client.messages.create(model="claude-max", max_tokens=100, messages=[user(content)])  # type: ignore[list-item]
    sent = [b for m in real_cli.message_requests[0].body["messages"] for b in m["content"] if isinstance(b, dict)]  # type: ignore[index]
    assert any(b["type"] == "image" and b["source"]["data"] == png for b in sent)
    assert any(b["type"] == "document" and b["source"]["data"] == pdf for b in sent)
    assert any(b["type"] == "text" and "plain notes" in b["text"] for b in sent)
    remote = [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]
    refused = post(server, messages=[user(remote)])
    assert refused.status_code == 400 and "--allow-remote-images" in refused.json()["error"]["message"]


def test_parameters(client: anthropic.Anthropic, server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(
        Reply(text="one two STOP three"),
        Reply(text="one two STOP three"),
        Reply(structured={"city": "Rome"}),
        Reply(structured={"city": "Oslo"}),
        Reply(thinking="Hmm, a greeting.", text="Hi."),
        Reply(thinking="Hmm, a greeting.", text="Hi."),
        Reply(text="partial", stop_reason="max_tokens"),
    )
    stopped = client.messages.create(
        model="claude-max", max_tokens=100, messages=[user("count")], stop_sequences=["STOP"]
    )
    assert stopped.content[0].text == "one two " and stopped.stop_reason == "stop_sequence"  # type: ignore[union-attr]
    assert stopped.stop_sequence == "STOP"
    with client.messages.stream(
        model="claude-max", max_tokens=100, messages=[user("count")], stop_sequences=["STOP"]
    ) as stream:
        assert "".join(stream.text_stream) == "one two "
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "STOP" and final.usage.output_tokens == 7

    forced = client.messages.create(
        model="claude-max",
        max_tokens=100,
        messages=[user("q")],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        output_config={"effort": "low"},
    )
    assert forced.stop_reason == "tool_use" and forced.content[0].input == {"city": "Rome"}  # type: ignore[union-attr]
    with client.messages.stream(
        model="claude-max",
        max_tokens=100,
        messages=[user("q")],
        output_config={"format": {"type": "json_schema", "schema": WEATHER["input_schema"]}},
    ) as stream:
        pieces = list(stream.text_stream)
    assert len(pieces) > 1 and json.loads("".join(pieces)) == {"city": "Oslo"}  # written as it came
    assert real_cli.message_requests[2].body["output_config"]["effort"] == "low"  # type: ignore[index]

    thought = client.messages.create(model="claude-max", max_tokens=100, messages=[user("hi")])
    assert [b.type for b in thought.content] == ["thinking", "text"]
    assert thought.content[0].thinking == "Hmm, a greeting."  # type: ignore[union-attr]
    quiet = post(server, thinking={"type": "disabled"}, temperature=0.5)
    assert [b["type"] for b in quiet.json()["content"]] == ["text"]
    assert quiet.headers["x-claude-max-ignored"] == "temperature, thinking"

    # Last: at the limit the CLI asks the model to go on in one more request, which the server cuts short.
    cut = client.messages.create(model="claude-max", max_tokens=5, messages=[user("long")])
    assert cut.stop_reason == "max_tokens" and real_cli.message_requests[6].body["max_tokens"] == 5  # type: ignore[index]


async def test_pydantic_ai_anthropic_model_with_a_tool(server: Server, real_cli: FakeAnthropicAPI) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("add", {"a": 2, "b": 3})]), Reply(text="It is 5."))
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key="unused", max_retries=0) as sdk:
        provider = AnthropicProvider(anthropic_client=sdk)
        agent = Agent(AnthropicModel("claude-max", provider=provider), instructions="Use the tool.")

        @agent.tool_plain
        def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        result = await agent.run("What is 2 + 3?")
    assert result.output == "It is 5."
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == [{"type": "text", "text": "5"}]


def test_the_documented_example_runs(
    server: Server, real_cli: FakeAnthropicAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    from .test_server_responses import run_documented

    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]), Reply(text="Sunny."))
    run_documented("## The Anthropic Messages API", "http://127.0.0.1:8765", server.url)
    assert capsys.readouterr().out == "Sunny.\nHello from the fake API."
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "22C, sunny"
