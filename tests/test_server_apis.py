"""The HTTP APIs in process (httpx.ASGITransport) with the scripted fake CLI: exact event sequences, every
refusal in each API's own error shape, /v1/models in each SDK's shape. Fast: no server process, no real CLI."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.server import openapi
from llm_claude_max.server.app import AppConfig, create_app
from llm_claude_max.server.engine import Engine, EngineConfig

from . import fake_claude as fc
from .conftest import FakeCLI

KEY = "cmx-test-key-0123456789"
ANTHROPIC = {"anthropic-version": "2023-06-01"}
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


NESTED = _nested(400)
"""A schema deeper than jsonschema's recursive check can follow (well within the JSON parser's limit)."""


@pytest.fixture
async def http(fake_cli: FakeCLI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve() as client:
        yield client


APPS: dict[int, Any] = {}
"""The app behind each in-process client (for the anthropic SDK, which needs its own transport)."""


@contextlib.asynccontextmanager
async def serve(config: AppConfig | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, with an engine that keeps no warm spares."""
    engine = Engine(ClaudeCLI(), EngineConfig(pool_size=0))
    app = create_app(engine, config or AppConfig())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            APPS[id(client)] = app
            yield client
    finally:
        APPS.clear()
        await engine.stop()


def anthropic_client(http: httpx.AsyncClient) -> anthropic.AsyncAnthropic:
    """The anthropic SDK (which speaks httpx2, a fork of httpx) on the same app."""
    transport = httpx2.ASGITransport(app=APPS[id(http)])
    return anthropic.AsyncAnthropic(
        base_url="http://127.0.0.1", api_key="x", http_client=httpx2.AsyncClient(transport=transport)
    )


def sse(response: httpx.Response) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of each server-sent event."""
    events = []
    for chunk in response.text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in chunk.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        events.append((name, json.loads(data) if data.startswith(("{", "[")) else data))
    return events


# -- refusals, in each API's shape ----------------------------------------------------------------------

RESPONSES_400 = [
    ({"tools": [{"type": "web_search"}]}, "tools.0: OpenAI's built-in tool `web_search`"),
    ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "`file_search` is not available"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input.0: items of type `web_search_call`"),
    ({"temperature": 0.2, "frobnicate": 1}, "Unrecognized request argument supplied: frobnicate"),
    ({"background": True}, "`background` is not supported"),
    ({"top_logprobs": 2}, "`top_logprobs` is not supported"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "'nope', which is not among"),
    ({"input": [{"role": "assistant", "content": "hi"}]}, "must end with a user message"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "`text.format.schema` is required"),
    ({"stream": "yes"}, "stream: Input should be a valid boolean"),
    ({"max_output_tokens": 0}, "max_output_tokens: Input should be greater than or equal to 1"),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}, "x"]},
        "input.1: Input should be",
    ),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, "file ids are not"),
    ({"tools": [WEATHER], "tool_choice": "required", "text": {"format": {"type": "json_object"}}}, "cannot be"),
    # Schemas and arguments that would break the checks themselves: a 400, never a 500.
    ({"tools": [{**WEATHER, "parameters": {"type": "object", "$schema": 5}}]}, "`$schema` must be a URI string"),
    ({"tools": [{**WEATHER, "parameters": {"type": "object", "$schema": []}}]}, "`$schema` must be a URI string"),
    ({"tools": [{**WEATHER, "parameters": NESTED}]}, "nested too deeply"),
    (
        {
            "input": [
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[" * 100_000},
                {"role": "user", "content": "x"},
            ]
        },
        "input.0.arguments: not valid JSON",
    ),
    (  # a remote image inside a function's output would slip past --allow-remote-images
        {
            "input": [
                {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": "http://169.254.169.254/x.png"}],
                },
            ],
            "tools": [WEATHER],
        },
        "an image in a function call's output must be a data URL",
    ),
]


@pytest.mark.parametrize(("body", "message"), RESPONSES_400, ids=range(len(RESPONSES_400)))
async def test_responses_refusals(http: httpx.AsyncClient, body: dict[str, Any], message: str) -> None:
    response = await http.post("/v1/responses", json={"model": "claude-max", "input": "hi", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


async def test_an_unknown_previous_response_is_404_as_in_openai(http: httpx.AsyncClient) -> None:
    body = {"model": "claude-max", "input": "hi", "previous_response_id": "resp_123"}
    response = await http.post("/v1/responses", json=body)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "Previous response with id 'resp_123' not found.",
        "type": "not_found_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }


MESSAGES_400 = [
    (
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "type `web_search_20250305` is not a custom tool",
    ),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "The "}]}, "prefill"),
    ({"max_tokens": None}, "max_tokens: "),
    ({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s"}]}]}, "`search_result`"),
    ({"container": "c"}, "`container` is not supported"),
    ({"frobnicate": 1}, "frobnicate: Extra inputs are not permitted"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name: required"),
    ({"tools": [{**WEATHER, "input_schema": {"type": "object"}}]}, "type `function` is not a custom tool"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
        "sources of type `file` are not supported",
    ),
    ({"stop_sequences": [""]}, "each stop sequence must contain non-whitespace characters"),
    ({"stop_sequences": ["END", " "]}, "each stop sequence must contain non-whitespace characters"),
    ({"tools": [{"name": "t", "input_schema": {"type": "object", "$schema": 5}}]}, "`$schema` must be a URI string"),
]


@pytest.mark.parametrize(("body", "message"), MESSAGES_400, ids=range(len(MESSAGES_400)))
async def test_messages_refusals(http: httpx.AsyncClient, body: dict[str, Any], message: str) -> None:
    payload = {"model": "claude-max", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    response = await http.post("/v1/messages", json={k: v for k, v in payload.items() if v is not None})
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error"
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


async def test_count_tokens_is_an_honest_501(http: httpx.AsyncClient) -> None:
    body = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}
    async with anthropic_client(http) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.count_tokens(**body)  # type: ignore[arg-type]
    assert caught.value.status_code == 501
    assert "exact counts" in caught.value.message and caught.value.body["error"]["type"] == "not_supported_error"  # type: ignore[index]


async def test_models_in_each_sdks_shape(http: httpx.AsyncClient) -> None:
    async with openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http) as oa:
        assert "claude-max" in [m.id async for m in oa.models.list()]
        assert (await oa.models.retrieve("claude-max")).owned_by.startswith("anthropic")
    async with anthropic_client(http) as an:
        models = [m async for m in an.models.list()]
        assert "claude-max" in [m.id for m in models] and all(m.type == "model" for m in models)
        assert (await an.models.retrieve("claude-max")).display_name
        with pytest.raises(anthropic.NotFoundError) as caught:
            await an.models.retrieve("claude-nope-1")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_the_key_as_x_api_key_and_errors_in_anthropics_shape(fake_cli: FakeCLI) -> None:
    async with serve(AppConfig(key=KEY)) as http:
        headers = {**ANTHROPIC, "x-api-key": "wrong"}
        refused = await http.get("/v1/models", headers=headers)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        assert "x-api-key" in refused.json()["error"]["message"]
        assert (await http.get("/v1/models", headers={**ANTHROPIC, "x-api-key": KEY})).status_code == 200
        body = {"model": "claude-max", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        answered = await http.post("/v1/messages", json=body, headers={"x-api-key": KEY})
        assert answered.status_code == 200 and answered.json()["content"][0]["text"] == "Hello there."
        missing = await http.post("/v1/messages", json=body)
        assert missing.status_code == 401 and missing.json()["type"] == "error"
        nothing = await http.get("/v1/nothing", headers={**ANTHROPIC, "x-api-key": KEY})
        assert nothing.json()["error"]["type"] == "not_found_error"


def test_the_openapi_document_has_both_apis() -> None:
    paths = openapi.document()["paths"]
    assert {"/v1/responses", "/v1/messages", "/v1/messages/count_tokens"} <= set(paths)
    schemas = openapi.document()["components"]["schemas"]
    assert {"ResponseRequest", "ResponseObject", "MessagesRequest", "MessageObject"} <= set(schemas)


# -- streams --------------------------------------------------------------------------------------------

CUT_SHORT = [{"emit": fc.init()}, {"emit": fc.delta("Hel")}, {"stderr": "boom"}, {"exit": 1}]
"""A CLI that dies after the first words: the error arrives in the middle of the stream."""


async def test_an_error_mid_stream_ends_each_stream_in_its_apis_shape(
    http: httpx.AsyncClient, fake_cli: FakeCLI
) -> None:
    fake_cli.scenario(steps=CUT_SHORT)
    chat = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    events = sse(await http.post("/v1/chat/completions", json=chat))
    assert events[-1][1]["error"]["code"] == "cli_crashed" and events[-1][1]["error"]["status"] == 502

    events = sse(await http.post("/v1/responses", json={"model": "claude-max", "input": "hi", "stream": True}))
    name, data = events[-1]
    assert name == "response.failed" and data["response"]["status"] == "failed"
    assert data["response"]["error"]["code"] == "cli_crashed"
    assert data["response"]["id"] == events[0][1]["response"]["id"]

    body = {"model": "claude-max", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    events = sse(await http.post("/v1/messages", json=body))
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": events[-1][1]["error"]["message"]}},
    )
    assert "exited" in events[-1][1]["error"]["message"] or "boom" in events[-1][1]["error"]["message"]


async def test_responses_stream_of_a_function_call(http: httpx.AsyncClient, fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=fc.deferred([("toolu_1", "mcp__tools__get_weather", {"city": "Oslo"})]))
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key="x", http_client=http)
    async with client.responses.stream(model="claude-max", input="weather?", tools=[WEATHER]) as stream:  # type: ignore[list-item]
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call" and call.call_id == "toolu_1" and json.loads(call.arguments) == {"city": "Oslo"}
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
