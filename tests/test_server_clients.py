"""Agent frameworks people use, running their tools through `claude-max serve`: the real CLI against a
fake API that plays a tool-calling model (tests/test_server_tools.py does the same with the bare
`openai` client).

Each test proves both directions: the tool's result reached the API (``tool_results`` of the request
after the call) and the model's final answer reached the framework. Every client opened here is closed
here (LangChain's and Pydantic AI's own default clients are cached and never closed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pydantic
import pytest

from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, tool_results
from .server_process import Server

pytestmark = pytest.mark.real_cli

PARIS = ToolUse("get_weather", {"city": "Paris"})


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"22C in {city}"


class Weather(pydantic.BaseModel):
    city: str
    temperature_c: int


def last_message(api: FakeAnthropicAPI, n: int) -> dict[str, Any]:
    """The last message of request ``n`` that is not the CLI's own system message (which comes last in a
    resumed session)."""
    return [m for m in api.message_requests[n].body["messages"] if m["role"] != "system"][-1]  # type: ignore[index]


def results(api: FakeAnthropicAPI, n: int) -> list[Any]:
    """The contents of the tool results that request ``n`` carried to the API."""
    return [r["content"] for r in tool_results({"messages": [last_message(api, n)]})]


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def chat_openai(server: Server, http_client: httpx.Client, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="claude-max",
        base_url=server.base,
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        http_client=http_client,
        **options,
    )


# -- Pydantic AI ---------------------------------------------------------------------------------------


def pydantic_ai_model(client: openai.AsyncOpenAI) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("claude-max", provider=OpenAIProvider(openai_client=client))


async def test_pydantic_ai_agent_with_a_tool(server: Server, real_cli: FakeAnthropicAPI) -> None:
    from pydantic_ai import Agent

    real_cli.enqueue(Reply(text="", tool_uses=[PARIS]), Reply(text="Sunny, 22C."))
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        agent = Agent(pydantic_ai_model(client), instructions="Be brief.", tools=[get_weather])
        result = await agent.run("Weather in Paris?")
    assert result.output == "Sunny, 22C."
    assert results(real_cli, 1) == ["22C in Paris"]
    assert len(real_cli.message_requests) == 2  # the paused process took the result: nothing re-sent


async def test_pydantic_ai_structured_output_through_its_output_tool(
    server: Server, real_cli: FakeAnthropicAPI
) -> None:
    """Pydantic AI's default structured output is a `final_result` tool, with `tool_choice: required` (text
    is not an answer): the server forces a call through the CLI's structured output, streamed here."""
    from pydantic_ai import Agent

    real_cli.enqueue(
        Reply(structured={"name": "get_weather", "arguments": {"city": "Paris"}}),
        Reply(structured={"name": "final_result", "arguments": {"city": "Paris", "temperature_c": 22}}),
    )
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        agent = Agent(pydantic_ai_model(client), output_type=Weather, tools=[get_weather])
        async with agent.run_stream("Weather in Paris?") as run:
            output = await run.get_output()
    assert output == Weather(city="Paris", temperature_c=22)
    assert results(real_cli, 1) == ["22C in Paris"]
    offered = [t["name"] for t in real_cli.message_requests[0].body["tools"]]  # type: ignore[index]
    assert "StructuredOutput" in offered and "mcp__tools__final_result" in offered


# -- LangChain and LangGraph -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_react_agent_with_a_structured_response(
    server: Server, real_cli: FakeAnthropicAPI, http_client: httpx.Client
) -> None:
    """The agent's loop, then its structured-response step: the whole conversation, ending with the
    model's answer, with a schema and no tools (the server adds the user message the CLI needs)."""
    from langgraph.prebuilt import create_react_agent

    real_cli.enqueue(
        Reply(text="", tool_uses=[PARIS]),
        Reply(text="Sunny, 22C."),
        Reply(structured={"city": "Paris", "temperature_c": 22}),
    )
    agent = create_react_agent(chat_openai(server, http_client), [get_weather], response_format=Weather)
    state = agent.invoke({"messages": [("user", "Weather in Paris?")]})
    assert state["messages"][-1].content == "Sunny, 22C."
    assert results(real_cli, 1) == ["22C in Paris"]
    assert state["structured_response"] == Weather(city="Paris", temperature_c=22)
    assert "Sunny, 22C." in json.dumps(real_cli.message_requests[2].body)  # the answer is in the context


def test_langchain_create_agent_streaming_parallel_calls(
    server: Server, real_cli: FakeAnthropicAPI, http_client: httpx.Client
) -> None:
    from langchain.agents import create_agent

    rome = ToolUse("get_weather", {"city": "Rome"})
    real_cli.enqueue(Reply(text="", tool_uses=[PARIS, rome]), Reply(text="Both sunny."))
    agent = create_agent(chat_openai(server, http_client, streaming=True), tools=[get_weather])
    chunks = [
        message for message, _ in agent.stream({"messages": [("user", "Paris and Rome?")]}, stream_mode="messages")
    ]
    calls = [c for chunk in chunks for c in getattr(chunk, "tool_call_chunks", [])]
    assert len(calls) > 2  # the calls' arguments arrived in pieces
    assert "".join(str(c.content) for c in chunks if c.type == "AIMessageChunk") == "Both sunny."
    assert results(real_cli, 1) == ["22C in Paris", "22C in Rome"]


def test_langchain_create_agent_with_a_response_format(
    server: Server, real_cli: FakeAnthropicAPI, http_client: httpx.Client
) -> None:
    """langchain's agent offers the schema as one more tool and requires a call: the model may call the real
    tool first (as here), then answers through the schema's tool."""
    from langchain.agents import create_agent

    weather = {"name": "Weather", "arguments": {"city": "Paris", "temperature_c": 22}}
    real_cli.enqueue(Reply(text="", tool_uses=[PARIS]), Reply(structured=weather))
    agent = create_agent(chat_openai(server, http_client), tools=[get_weather], response_format=Weather)
    state = agent.invoke({"messages": [("user", "Weather in Paris?")]})
    assert state["structured_response"] == Weather(city="Paris", temperature_c=22)
    assert results(real_cli, 1) == ["22C in Paris"]


# -- instructor ----------------------------------------------------------------------------------------


class Reading(pydantic.BaseModel):
    city: str
    temperature_c: int

    @pydantic.field_validator("temperature_c")
    @classmethod
    def celsius(cls, value: int) -> int:
        if value > 60:
            raise ValueError("no city is that hot: give degrees Celsius")
        return value


def test_instructor_tools_mode_with_a_validation_retry(server: Server, real_cli: FakeAnthropicAPI) -> None:
    """instructor's default mode forces a call of a tool named after the model; a value that fails
    validation goes back as a tool message (with a `name`), and the second answer is taken."""
    import instructor

    real_cli.enqueue(
        Reply(structured={"city": "Paris", "temperature_c": 72}),
        Reply(structured={"city": "Paris", "temperature_c": 22}),
    )
    client = instructor.from_openai(server.client(), mode=instructor.Mode.TOOLS)
    reading = client.chat.completions.create(
        model="claude-max",
        response_model=Reading,
        max_retries=2,
        messages=[{"role": "user", "content": "Paris is 72F"}],
    )
    assert (reading.city, reading.temperature_c) == ("Paris", 22)
    [error] = results(real_cli, 1)
    assert "no city is that hot" in error  # the validation error reached the model
    assert len(real_cli.message_requests) == 2


def test_instructor_partial_objects_as_the_call_is_written(server: Server, real_cli: FakeAnthropicAPI) -> None:
    import instructor

    real_cli.enqueue(Reply(structured={"city": "Paris", "temperature_c": 22}))
    client = instructor.from_openai(server.client(), mode=instructor.Mode.TOOLS)
    partials = list(
        client.chat.completions.create_partial(
            model="claude-max", response_model=Reading, messages=[{"role": "user", "content": "Paris is 22C"}]
        )
    )
    seen = [(p.city, p.temperature_c) for p in partials]
    assert ("Paris", None) in seen and seen[-1] == ("Paris", 22)


# -- openai-agents ----------------------------------------------------------------------------------------


async def test_openai_agents_function_tool(server: Server, real_cli: FakeAnthropicAPI) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner, function_tool

    real_cli.enqueue(Reply(text="", tool_uses=[PARIS]), Reply(text="Sunny, 22C."))
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        model = OpenAIChatCompletionsModel("claude-max", client)
        agent = Agent(name="weather", instructions="Be brief.", model=model, tools=[function_tool(get_weather)])
        result = await Runner.run(agent, "Weather in Paris?", run_config=RunConfig(tracing_disabled=True))
    assert result.final_output == "Sunny, 22C."
    assert results(real_cli, 1) == ["22C in Paris"]
    assert len(real_cli.message_requests) == 2


async def test_openai_agents_handoff_to_an_agent_with_other_tools(server: Server, real_cli: FakeAnthropicAPI) -> None:
    """After a handoff the next agent sends the handoff call and its result with its own tools, which do
    not include the handoff tool: the result reaches the model as text, then the new tool runs."""
    from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner, function_tool

    real_cli.enqueue(
        Reply(text="", tool_uses=[ToolUse("transfer_to_weather", {})]),
        Reply(text="", tool_uses=[PARIS]),
        Reply(text="Sunny, 22C."),
    )
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        model = OpenAIChatCompletionsModel("claude-max", client)
        weather = Agent(name="weather", instructions="Answer.", model=model, tools=[function_tool(get_weather)])
        triage = Agent(name="triage", instructions="Hand off.", model=model, handoffs=[weather])
        result = await Runner.run(triage, "Weather in Paris?", run_config=RunConfig(tracing_disabled=True))
    assert result.final_output == "Sunny, 22C."
    [handed] = last_message(real_cli, 1)["content"]
    assert handed["type"] == "text" and '{"assistant": "weather"}' in handed["text"]
    assert results(real_cli, 2) == ["22C in Paris"]
