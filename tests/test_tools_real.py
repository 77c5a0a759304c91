"""Tools through the llm plugin: the real CLI against a fake API that plays a tool-calling model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import llm
import pytest

from llm_claude_max.runner.loop import background
from llm_claude_max.tools import ToolNames, ToolSpec

from .fakeapi import FakeAnthropicAPI, Recorded, Reply, ToolUse, tool_results

pytestmark = pytest.mark.real_cli


@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path) -> FakeAnthropicAPI:
    return real_cli


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def lookup(city: str) -> str:
    """The weather in a city."""
    return {"Paris": "22C sunny", "Oslo": "4C rain"}.get(city, "unknown")


def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot do {reason}")


def messages(request: Recorded) -> list[dict[str, Any]]:
    assert request.body is not None
    return [m for m in request.body["messages"] if m["role"] != "system"]


def tool_names(request: Recorded) -> list[str]:
    assert request.body is not None
    return [t["name"] for t in request.body.get("tools") or []]


def end_paused_processes() -> None:
    """What the idle reaper or a crash does to a paused CLI."""
    loop = background()
    loop.call(loop.pool.end_all)


def test_one_tool_call(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="Let me compute.", tool_uses=[ToolUse("multiply", {"a": 3, "b": 7})]), Reply(text="21."))
    chain = llm.get_model("claude-max").chain("What is 3*7?", tools=[multiply])
    assert chain.text() == "Let me compute. 21."
    first, second = chain._responses
    [call] = first.tool_calls()
    assert (call.name, call.arguments) == ("multiply", {"a": 3, "b": 7}) and call.tool_call_id.startswith("toolu_")
    assert tool_results(api.message_requests[1].body) == [
        {
            "type": "tool_result",
            "tool_use_id": call.tool_call_id,
            "content": "21",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    # The caller's tools are the only tools offered: none of Claude Code's own.
    assert [n for n in tool_names(api.message_requests[0]) if n != "DeferredToolPlaceholder"] == [
        "mcp__tools__multiply"
    ]
    # The paused process took the result: one session, no new process, the step verified by the first.
    assert first.response_json is not None and second.response_json is not None
    assert second.response_json["continued"] == "paused"
    assert second.response_json["session_id"] == first.response_json["session_id"]
    assert second.response_json["billing"]["verified"] is True and not second.response_json["warnings"]
    assert first.usage().input == 12 and second.usage().output == 7
    assert len(api.message_requests) == 2


def test_tool_calls_stream_as_events(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="", tool_uses=[ToolUse("lookup", {"city": "Paris"})]), Reply(text="Sunny."))
    response = llm.get_model("claude-max").prompt("Weather in Paris?", tools=[lookup])
    events = list(response.stream_events())
    names = [e for e in events if e.type == "tool_call_name"]
    arguments = "".join(e.chunk for e in events if e.type == "tool_call_args")
    assert [e.chunk for e in names] == ["lookup"] and json.loads(arguments) == {"city": "Paris"}
    assert len([e for e in events if e.type == "tool_call_args"]) > 2  # pieces, as the model wrote them
    [call] = response.tool_calls()
    assert call.tool_call_id == names[0].tool_call_id


def test_parallel_calls_go_back_together(api: FakeAnthropicAPI) -> None:
    api.enqueue(
        Reply(text="", tool_uses=[ToolUse("lookup", {"city": "Paris"}), ToolUse("lookup", {"city": "Oslo"})]),
        Reply(text="Paris is warmer."),
    )
    chain = llm.get_model("claude-max").chain("Paris or Oslo?", tools=[lookup])
    assert chain.text() == "Paris is warmer."
    calls = chain._responses[0].tool_calls()
    assert [c.arguments["city"] for c in calls] == ["Paris", "Oslo"]
    results = tool_results(api.message_requests[1].body)
    assert [(r["tool_use_id"], r["content"]) for r in results] == [
        (calls[0].tool_call_id, "22C sunny"),
        (calls[1].tool_call_id, "4C rain"),
    ]
    assert len(api.message_requests) == 2


def test_a_chain_of_two_tool_steps_stays_in_one_process(api: FakeAnthropicAPI) -> None:
    api.enqueue(
        Reply(text="", tool_uses=[ToolUse("lookup", {"city": "Paris"})]),
        Reply(text="", tool_uses=[ToolUse("multiply", {"a": 22, "b": 2})]),
        Reply(text="Twice 22 is 44."),
    )
    chain = llm.get_model("claude-max").chain("Double the Paris temperature", tools=[lookup, multiply])
    assert chain.text() == "Twice 22 is 44."
    rows = [r.response_json or {} for r in chain._responses]
    assert [r["continued"] for r in rows] == ["new", "paused", "paused"]
    assert len({r["session_id"] for r in rows}) == 1
    last = messages(api.message_requests[2])
    assert [m["role"] for m in last] == ["user", "assistant", "user", "assistant", "user"]
    assert tool_results(api.message_requests[2].body)[0]["content"] == "44"


def test_a_tool_that_raises_reaches_the_model_as_an_error(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="", tool_uses=[ToolUse("fail", {"reason": "this"})]), Reply(text="It failed."))
    chain = llm.get_model("claude-max").chain("Try it", tools=[fail])
    assert chain.text() == "It failed."
    [result] = tool_results(api.message_requests[1].body)
    assert result["is_error"] is True and "cannot do this" in result["content"]


def test_an_abandoned_chain_sends_no_further_request(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 1, "b": 2})]), Reply(text="never"))
    chain = llm.get_model("claude-max").conversation().chain("q", tools=[multiply], chain_limit=1)
    with pytest.raises(ValueError, match="Chain limit"):
        chain.text()
    end_paused_processes()  # the reaper, or interpreter exit (the e2e tests check exit itself)
    assert len(api.message_requests) == 1


def test_async_chain(api: FakeAnthropicAPI) -> None:
    async def slow_multiply(a: int, b: int) -> int:
        """Multiply, slowly."""
        await asyncio.sleep(0.01)
        return a * b

    api.enqueue(Reply(text="", tool_uses=[ToolUse("slow_multiply", {"a": 6, "b": 7})]), Reply(text="42."))

    async def run() -> str:
        chain = llm.get_async_model("claude-max").chain("6*7?", tools=[slow_multiply])
        return await chain.text()

    assert asyncio.run(run()) == "42."
    assert tool_results(api.message_requests[1].body)[0]["content"] == "42"


def test_a_conversation_continues_after_a_tool_chain(api: FakeAnthropicAPI) -> None:
    api.enqueue(
        Reply(text="", tool_uses=[ToolUse("lookup", {"city": "Oslo"})]),
        Reply(text="Rainy."),
        Reply(text="Take an umbrella."),
    )
    conversation = llm.get_model("claude-max").conversation(tools=[lookup])
    assert conversation.chain("Oslo weather?").text() == "Rainy."
    follow_up = conversation.chain("What should I bring?")
    assert follow_up.text() == "Take an umbrella."
    assert (follow_up._responses[0].response_json or {})["continued"] == "resumed"
    assert [m["role"] for m in messages(api.message_requests[2])] == ["user", "assistant", "user", "assistant", "user"]


@pytest.mark.parametrize("calls", [1, 2])
def test_a_paused_process_that_is_gone_is_continued_from_the_history(api: FakeAnthropicAPI, calls: int) -> None:
    cities = ["Paris", "Oslo"][:calls]
    api.enqueue(
        Reply(text="Checking.", tool_uses=[ToolUse("lookup", {"city": c}) for c in cities]), Reply(text="Done.")
    )
    chain = llm.get_model("claude-max").chain(
        "Weather?", tools=[lookup], before_call=lambda tool, call: end_paused_processes()
    )
    assert chain.text() == "Checking. Done."
    second = chain._responses[1].response_json or {}
    assert second["continued"] == "seeded"
    sent = messages(api.message_requests[1])
    ids = [c.tool_call_id for c in chain._responses[0].tool_calls()]
    # Real tool calls and results; several calls of one step become consecutive single calls.
    expected: list[tuple[str, Any]] = [("user", ["Weather?"])]
    for n, (call_id, city) in enumerate(zip(ids, cities, strict=True)):
        expected.append(("assistant", (["Checking."] if n == 0 else []) + [("tool_use", call_id, city)]))
        expected.append(("user", [("tool_result", call_id, lookup(city))]))
    assert [(m["role"], summary(m["content"])) for m in sent] == expected
    assert len(api.message_requests) == 2


def summary(content: Any) -> list[Any]:
    """Text, tool calls and results of a message, in order (the CLI's own reminders left out)."""
    if isinstance(content, str):
        return [content]
    out: list[Any] = []
    for block in content:
        if block["type"] == "text" and "<system-reminder>" not in block["text"]:
            out.append(block["text"])
        elif block["type"] == "tool_use":
            out.append(("tool_use", block["id"], block["input"]["city"]))
        elif block["type"] == "tool_result":
            out.append(("tool_result", block["tool_use_id"], block["content"]))
    return out


def test_tool_names_the_cli_would_rewrite_are_mapped_back(api: FakeAnthropicAPI) -> None:
    tool = llm.Tool(
        name="weather.lookup", description="Weather", input_schema={"type": "object"}, implementation=lookup
    )
    exposed = ToolNames([ToolSpec("weather.lookup")]).exposed["weather.lookup"]
    assert "." not in exposed
    api.enqueue(Reply(text="", tool_uses=[ToolUse(exposed, {"city": "Paris"})]), Reply(text="Sunny."))
    chain = llm.get_model("claude-max").chain("q", tools=[tool])
    assert chain.text() == "Sunny."
    [call] = chain._responses[0].tool_calls()
    assert call.name == "weather.lookup"
    assert tool_results(api.message_requests[1].body)[0]["content"] == "22C sunny"


def test_a_toolbox(api: FakeAnthropicAPI) -> None:
    class Counter(llm.Toolbox):  # type: ignore[misc]
        def __init__(self) -> None:
            self.count = 0

        def add(self, n: int) -> int:
            """Add n to the counter."""
            self.count += n
            return self.count

    counter = Counter()
    api.enqueue(Reply(text="", tool_uses=[ToolUse("Counter_add", {"n": 5})]), Reply(text="Now 5."))
    assert llm.get_model("claude-max").chain("Add 5", tools=[counter]).text() == "Now 5."
    assert counter.count == 5


def test_schema_together_with_tools(api: FakeAnthropicAPI) -> None:
    schema = {"type": "object", "properties": {"product": {"type": "integer"}}, "required": ["product"]}
    api.enqueue(
        Reply(text="", tool_uses=[ToolUse("multiply", {"a": 6, "b": 7})]),
        Reply(structured={"product": 42}),
    )
    chain = llm.get_model("claude-max").chain("6*7 as JSON", tools=[multiply], schema=schema)
    chain.text()
    assert json.loads(chain._responses[-1].text()) == {"product": 42}
    assert "StructuredOutput" in tool_names(api.message_requests[0]) and "mcp__tools__multiply" in tool_names(
        api.message_requests[0]
    )
