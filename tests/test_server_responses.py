"""The OpenAI Responses API (`POST /v1/responses`) of `claude-max serve`, driven by the real clients: the
official `openai` SDK (`responses.create`, `responses.stream`), openai-agents' default `Agent` and the Codex
CLI, with the real CLI against a fake API that plays a tool-calling model."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest

from llm_claude_max.server.apis import openai_responses

from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, tool_results
from .server_process import Server
from .test_plugin_real import png_bytes

pytestmark = pytest.mark.real_cli
REAL_HOME = Path.home()
"""The user's home before the tests isolate it (where ./dev caches the CLIs)."""

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
    real_cli.enqueue(
        Reply(text="Let me look.", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]), Reply(text="Sunny.")
    )
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


def test_a_function_round_trip_with_the_full_input(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Rome"})]), Reply(text="Warm."))
    client = server.client()
    items: list[Any] = [{"role": "user", "content": "Weather in Rome?"}]
    first = client.responses.create(model="claude-max", input=items, tools=[WEATHER], store=False)  # type: ignore[list-item]
    [call] = first.output
    assert call.type == "function_call"
    items += [item.model_dump(exclude_none=True) for item in first.output]
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "31C"})
    second = client.responses.create(model="claude-max", input=items, tools=[WEATHER], store=False)  # type: ignore[list-item]
    assert second.output_text == "Warm."
    assert (second.model_extra or {})["claude_max"]["continued"] == "paused"
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "31C"
    with pytest.raises(openai.NotFoundError):  # store: false is not remembered, as in OpenAI's API
        client.responses.create(model="claude-max", input="more", previous_response_id=second.id)


def test_streamed_function_calls_reasoning_and_parameters(server: Server, real_cli: FakeAnthropicAPI) -> None:
    real_cli.enqueue(
        Reply(
            thinking="The user wants weather.", text="Checking.", tool_uses=[ToolUse("get_weather", {"city": "Oslo"})]
        ),
        Reply(text="partial", stop_reason="max_tokens"),
    )
    client = server.client()
    with client.responses.stream(
        model="claude-max",
        input="Weather?",
        tools=[WEATHER],
        reasoning={"effort": "high", "summary": "auto"},  # type: ignore[list-item]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].summary[0].text == "The user wants weather."  # type: ignore[union-attr]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "Oslo"} and final.output_text == "Checking."
    assert real_cli.message_requests[0].body["output_config"]["effort"] == "high"  # type: ignore[index]

    cut = post(server, max_output_tokens=5).json()
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert real_cli.message_requests[1].body["max_tokens"] == 5  # type: ignore[index]
    assert post(server, temperature=0.3).headers["x-claude-max-ignored"] == "temperature"


def test_parse_with_a_schema(server: Server, real_cli: FakeAnthropicAPI) -> None:
    class City(pydantic.BaseModel):
        name: str
        population: int

    lima = {"name": "Lima", "population": 10000000}
    real_cli.enqueue(Reply(structured=lima), Reply(structured=lima))
    client = server.client()
    png = base64.b64encode(png_bytes()).decode()
    image = {"type": "input_image", "image_url": f"data:image/png;base64,{png}"}
    question = [{"role": "user", "content": [{"type": "input_text", "text": "This city?"}, image]}]
    parsed = client.responses.parse(model="claude-max", input=question, text_format=City)  # type: ignore[arg-type]
    assert parsed.output_parsed == City(name="Lima", population=10000000)
    assert "StructuredOutput" in [t["name"] for t in real_cli.message_requests[0].body["tools"]]  # type: ignore[index]
    sent = [b for m in real_cli.message_requests[0].body["messages"] for b in m["content"] if isinstance(b, dict)]  # type: ignore[index]
    assert any(b["type"] == "image" and b["source"]["data"] == png for b in sent)

    with client.responses.stream(model="claude-max", input="A big city?", text_format=City) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 2 and final.output_parsed == City(name="Lima", population=10000000)  # written as it came


async def test_openai_agents_default_agent_with_a_function_tool(server: Server, real_cli: FakeAnthropicAPI) -> None:
    import agents

    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("add", {"a": 2, "b": 3})]), Reply(text="2 + 3 = 5."))

    @agents.function_tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agents.set_tracing_disabled(True)
    async with openai.AsyncOpenAI(base_url=server.base, api_key="unused", max_retries=0) as client:
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_default_openai_api("responses")
        agent = agents.Agent(name="calc", instructions="Use the tool.", tools=[add], model="claude-max")
        result = await agents.Runner.run(agent, "What is 2 + 3?")
    assert result.final_output == "2 + 3 = 5."
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "5"


CODEX_VERSION = "0.169.0"
"""The Codex CLI the tests drive (npm ``@openai/codex``), installed by ``./dev test`` like the pinned claude CLI."""


NO_RETRIES = (
    "-c",
    "model_providers.claude-max.request_max_retries=0",
    "-c",
    "model_providers.claude-max.stream_max_retries=0",
)


def documented(marker: str, language: str = "python") -> str:
    """The code block that follows ``marker`` in docs/server.md."""
    text = (Path(__file__).parent.parent / "docs" / "server.md").read_text().split(marker, 1)[1]
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def run_documented(marker: str, documented_url: str, url: str) -> None:
    """Run the example after ``marker`` in docs/server.md against ``url`` (its ``client`` closed after)."""
    code = documented(marker).replace(documented_url, url)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/server.md", "exec"), namespace)
    namespace["client"].close()


def test_the_documented_example_runs(
    server: Server, real_cli: FakeAnthropicAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]), Reply(text="Sunny, 22C."))
    run_documented("## The Responses API", "http://127.0.0.1:8765/v1", server.base)
    assert capsys.readouterr().out == "Sunny, 22C.\n"
    assert tool_results(real_cli.message_requests[1].body)[0]["content"] == "22C, sunny"


def codex_path() -> Path:
    default = REAL_HOME / ".cache" / "llm-claude-max" / "codex-cli" / CODEX_VERSION / "node_modules" / ".bin" / "codex"
    path = Path(os.environ.get("CLAUDE_MAX_TEST_CODEX") or default)
    if not path.exists():
        pytest.fail(f"The Codex CLI {CODEX_VERSION} is not at {path}: run `./dev test`, or set CLAUDE_MAX_TEST_CODEX.")
    return path


def test_codex_cli_reads_a_file_with_its_own_tool(server: Server, real_cli: FakeAnthropicAPI, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("The secret word is periwinkle.\n")
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    config = documented("~/.codex/config.toml`:", "toml").replace("http://127.0.0.1:8765/v1", server.base)
    (codex_home / "config.toml").write_text(config)
    real_cli.enqueue(
        Reply(text="", tool_uses=[ToolUse("exec_command", {"cmd": "cat notes.txt"})]),
        Reply(text="The note says the secret word is periwinkle."),
    )
    done = subprocess.run(
        [str(codex_path()), "exec", *NO_RETRIES, "--skip-git-repo-check", "What does notes.txt say?"],
        check=False,
        cwd=work,
        env={**os.environ, "CODEX_HOME": str(codex_home)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "The note says the secret word is periwinkle." in done.stdout
    [result] = tool_results(real_cli.message_requests[1].body)
    assert "periwinkle" in json.dumps(result["content"])  # Codex ran its own tool in its working directory
    stats = httpx.get(server.url + "/health/deep", timeout=60).json()["engine"]["stats"]
    assert stats["paused_hits"] == 1  # the call's result went to the process paused on it
