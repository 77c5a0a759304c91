"""Function calling through `claude-max serve` with the official `openai` client: the real CLI against a
fake API that plays a tool-calling model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest

from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, tool_results
from .server_process import Server
from .test_server import chat

pytestmark = pytest.mark.real_cli

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time in a city", "parameters": {"type": "object"}},
}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def non_system(api: FakeAnthropicAPI, n: int) -> list[dict[str, Any]]:
    return [m for m in api.message_requests[n].body["messages"] if m["role"] != "system"]  # type: ignore[index]


def test_a_tool_round_trip_continues_the_paused_process(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(
        Reply(text="Let me look.", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]), Reply(text="Sunny.")
    )
    client = server.client()
    messages: list[Any] = [user("Weather in Paris?")]
    first = client.chat.completions.create(model="claude-max", messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22C"},
    ]
    second = client.chat.completions.create(model="claude-max", messages=messages, tools=[WEATHER])  # type: ignore[list-item]
    assert second.choices[0].message.content == "Sunny." and second.choices[0].finish_reason == "stop"
    meta = (second.model_extra or {})["claude_max"]
    assert meta["continued"] == "paused" and meta["process"] == "paused"
    assert meta["session_id"] == (first.model_extra or {})["claude_max"]["session_id"]
    assert meta["billing"]["verified"] is True and meta["warnings"] == []
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "22C"
    assert len(real_cli.message_requests) == 2  # nothing re-sent, no other request


def test_streamed_tool_calls(server: Server) -> None:
    stream = server.client().chat.completions.create(
        model="claude-max",
        messages=[user("Weather?")],
        tools=[WEATHER],
        stream=True,  # type: ignore[list-item]
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == {"city": "Oslo"} and len(deltas) > 2  # pieces, as written
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.fixture(autouse=True)
def oslo(real_cli: FakeAnthropicAPI) -> None:
    """By default the model calls get_weather for Oslo, then answers."""
    real_cli.default = Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Oslo"})])


def test_parallel_calls_and_their_results(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(
        Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Paris"}), ToolUse("get_time", {})]),
        Reply(text="Done."),
    )
    client = server.client()
    messages: list[Any] = [user("Weather and time?")]
    first = client.chat.completions.create(model="claude-max", messages=messages, tools=[WEATHER, TIME])  # type: ignore[list-item]
    calls = first.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": c.id, "content": f"result {n}"} for n, c in enumerate(calls)]
    client.chat.completions.create(model="claude-max", messages=messages, tools=[WEATHER, TIME])  # type: ignore[list-item]
    results = tool_results(real_cli.message_requests[1].body)
    assert [(r["tool_use_id"], r["content"]) for r in results] == [(calls[0].id, "result 0"), (calls[1].id, "result 1")]


def test_parallel_tool_calls_false_gives_one_call_at_a_time(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(
        Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Paris"}), ToolUse("get_time", {})]),
        Reply(text="ok"),
    )
    client = server.client()
    messages: list[Any] = [user("q")]
    first = client.chat.completions.create(
        model="claude-max",
        messages=messages,
        tools=[WEATHER, TIME],
        parallel_tool_calls=False,  # type: ignore[list-item]
    )
    [call] = first.choices[0].message.tool_calls or []
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "r"},
    ]
    client.chat.completions.create(
        model="claude-max", messages=messages, tools=[WEATHER, TIME], parallel_tool_calls=False
    )  # type: ignore[list-item]
    results = tool_results(real_cli.message_requests[1].body)
    assert results[0]["content"] == "r"
    assert results[1]["is_error"] is True and "not run" in results[1]["content"]


def test_tool_choice_none_offers_no_tools(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(Reply(text="Just text."))
    answer = server.client().chat.completions.create(
        model="claude-max",
        messages=[user("q")],
        tools=[WEATHER],
        tool_choice="none",  # type: ignore[list-item]
    )
    assert answer.choices[0].message.content == "Just text."
    assert not [t for t in real_cli.message_requests[0].body["tools"] if t["name"].startswith("mcp__")]  # type: ignore[index]


@pytest.mark.parametrize("choice", ["named", "required"])
def test_a_forced_tool_call_is_enforced_by_the_cli(server: Server, real_cli: FakeAnthropicAPI, choice: str) -> None:
    structured = {"city": "Rome"} if choice == "named" else {"name": "get_weather", "arguments": {"city": "Rome"}}
    real_cli.enqueue(Reply(structured=structured))
    tool_choice: Any = {"type": "function", "function": {"name": "get_weather"}} if choice == "named" else "required"
    answer = server.client().chat.completions.create(
        model="claude-max",
        messages=[user("q")],
        tools=[WEATHER, TIME],
        tool_choice=tool_choice,  # type: ignore[list-item]
    )
    [call] = answer.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Rome"}
    assert answer.choices[0].finish_reason == "tool_calls"
    offered = [t["name"] for t in real_cli.message_requests[0].body["tools"]]  # type: ignore[index]
    assert "StructuredOutput" in offered


def test_tool_choice_naming_an_unknown_tool_is_a_400(server: Server) -> None:
    response = chat(server, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})
    assert response.status_code == 400 and "'nope'" in response.json()["error"]["message"]


def test_parse_with_a_pydantic_tool(server: Server, real_cli: FakeAnthropicAPI) -> None:
    class GetWeather(pydantic.BaseModel):
        city: str

    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("GetWeather", {"city": "Lima"})]))
    completion = server.client().chat.completions.parse(
        model="claude-max", messages=[user("Weather in Lima?")], tools=[openai.pydantic_function_tool(GetWeather)]
    )
    [call] = completion.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == GetWeather(city="Lima")


def test_legacy_functions(server: Server) -> None:
    response = chat(server, functions=[WEATHER["function"]])
    message = response.json()["choices"][0]["message"]
    assert response.json()["choices"][0]["finish_reason"] == "function_call"
    assert message["function_call"]["name"] == "get_weather"


async def test_async_client_with_tools(server: Server) -> None:
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        answer = await client.chat.completions.create(model="claude-max", messages=[user("q")], tools=[WEATHER])  # type: ignore[list-item]
        assert (answer.choices[0].message.tool_calls or [])[0].function.name == "get_weather"


def test_max_tokens_is_applied_and_a_cut_answer_says_length(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(Reply(text="partial", stop_reason="max_tokens"))
    answer = chat(server, max_completion_tokens=5).json()
    assert real_cli.message_requests[0].body["max_tokens"] == 5  # type: ignore[index]
    assert answer["choices"][0]["finish_reason"] == "length"


def test_stop_strings_end_the_answer(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(Reply(text="one two STOP three"), Reply(text="one two STOP three"))
    answer = chat(server, stop=["STOP"]).json()["choices"][0]
    assert answer["message"]["content"] == "one two " and answer["finish_reason"] == "stop"
    chunks = server.client().chat.completions.create(model="claude-max", messages=[user("q")], stop="STOP", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two "


def test_structured_output_streams_as_it_is_written(server: Server, real_cli: FakeAnthropicAPI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    real_cli.enqueue(Reply(structured={"name": "Ada Lovelace, the first programmer"}))
    chunks = list(
        server.client().chat.completions.create(
            model="claude-max",
            messages=[user("Name one")],
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
            stream=True,
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 2 and json.loads("".join(pieces)) == {"name": "Ada Lovelace, the first programmer"}


def test_llm_tools_through_the_server(
    server: Server, real_cli: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm

    monkeypatch.setenv("CLAUDE_MAX_SERVER", server.url)
    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 6, "b": 7})]), Reply(text="42."))

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    chain = llm.get_model("claude-max").chain("6*7?", tools=[multiply])
    assert chain.text() == "42."
    assert (chain._responses[1].response_json or {})["continued"] == "paused"
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "42"


def test_an_abandoned_paused_conversation_is_ended_by_the_reaper(
    serve: Callable[..., Server],
    login: Path,
    real_cli: FakeAnthropicAPI,
) -> None:
    import time

    server = serve("--idle-timeout", "10", "--pool-size", "0")
    server.client().chat.completions.create(model="claude-max", messages=[user("q")], tools=[WEATHER])  # type: ignore[list-item]
    assert len(server.children()) == 1  # paused, waiting for the result
    deadline = time.monotonic() + 30
    while server.children() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert server.children() == []
    assert len(real_cli.message_requests) == 1  # ended without another billed request
