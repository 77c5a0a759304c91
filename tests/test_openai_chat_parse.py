"""The Chat Completions adapter's parsing, without a server: what reaches the engine for requests the
agent frameworks send (tests/test_server_clients.py runs the same clients end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from llm_claude_max.errors import InvalidRequest
from llm_claude_max.server.apis import openai_chat

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def call(name: str) -> dict[str, Any]:
    """An assistant message with one call, ``call_1``, of the tool ``name``."""
    function = {"name": name, "arguments": "{}"}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": function}],
    }


def parse(**body: Any) -> Any:
    return openai_chat.parse({"model": "claude-max", **body}, "caller:").request


def test_a_tool_message_may_name_its_function() -> None:
    """instructor's validation retry sends ``name`` on the tool message, as OpenAI's API accepts."""
    request = parse(
        messages=[
            {"role": "user", "content": "q"},
            call("get_weather"),
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "Validation error"},
        ],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert [(r.call_id, r.content) for r in request.tool_results] == [("call_1", "Validation error")]


def test_results_for_a_tool_no_longer_offered_are_text() -> None:
    """After a handoff the next agent sends the call and its result with other tools: the CLI has no
    such tool to take a result for, so the call and the result reach the model as text."""
    request = parse(
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            call("transfer_to_weather"),
            {"role": "tool", "tool_call_id": "call_1", "content": '{"assistant": "weather"}'},
        ],
        tools=[WEATHER],
    )
    assert request.tool_results == ()
    assert [b["type"] for b in request.history[-1].blocks] == ["text"]
    assert "transfer_to_weather" in request.history[-1].blocks[0]["text"]
    assert request.new[0]["type"] == "text" and '{"assistant": "weather"}' in request.new[0]["text"]


def test_results_for_offered_tools_stay_tool_results() -> None:
    request = parse(
        messages=[
            {"role": "user", "content": "q"},
            call("get_weather"),
            {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
        ],
        tools=[WEATHER],
    )
    assert [(r.call_id, r.content) for r in request.tool_results] == [("call_1", "22C")]
    assert request.history[-1].blocks[0]["type"] == "tool_use"


def test_strict_tool_schemas_are_named_as_not_enforced() -> None:
    """The CLI hands a tool call's arguments over as the model wrote them: `strict` is not a guarantee
    here, and frameworks send it by default (openai-agents, Pydantic AI), so it is named, not refused."""
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    messages = [{"role": "user", "content": "q"}]
    call = openai_chat.parse({"model": "claude-max", "messages": messages, "tools": [strict]}, "caller:")
    assert call.headers == {"X-Claude-Max-Ignored": "tools.function.strict"}
    forced = {"type": "function", "function": {"name": "get_weather"}}
    body = {"model": "claude-max", "messages": messages, "tools": [strict], "tool_choice": forced}
    assert openai_chat.parse(body, "caller:").headers == {}  # structured output: the CLI checks it
    plain = openai_chat.parse({"model": "claude-max", "messages": messages, "tools": [WEATHER]}, "caller:")
    assert plain.headers == {}


def test_a_conversation_ending_with_an_assistant_message_asks_for_the_next_one() -> None:
    """LangGraph's create_react_agent(response_format=...) sends the agent's conversation, which ends with
    the model's answer, with a schema: the CLI answers a user message, so one is added."""
    request = parse(
        messages=[{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "Sunny, 22C."}],
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    )
    assert request.history[-1].blocks == ({"type": "text", "text": "Sunny, 22C."},)
    assert request.new == ({"type": "text", "text": openai_chat.CONTINUE},)


def test_calls_without_results_at_the_end_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="must be followed by `tool` messages"):
        parse(messages=[{"role": "user", "content": "q"}, call("get_weather")], tools=[WEATHER])
