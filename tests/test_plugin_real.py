"""The llm plugin's features through the Python API, with the real CLI against the fake API."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import llm
import pytest

from llm_claude_max import guard
from llm_claude_max.errors import (
    APIError,
    ClaudeTimeout,
    PaidUsageRefused,
    StructuredOutputMissing,
    UsageLimitReached,
)

from .fakeapi import FakeAnthropicAPI, Recorded, Reply, five_hour_limit_headers

pytestmark = pytest.mark.real_cli


@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path) -> FakeAnthropicAPI:
    return real_cli


def model(name: str = "claude-max") -> llm.Model:
    return llm.get_model(name)


def user_texts(request: Recorded) -> list[str]:
    """Every text block of every user message in a request body."""
    assert request.body is not None
    found = []
    for message in request.body["messages"]:
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            found.append(content)
        else:
            found.extend(b.get("text", "") for b in content if b.get("type") == "text")
    return found


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


# -- streaming ---------------------------------------------------------------------------------------
def test_first_delta_arrives_before_the_last_is_sent(api: FakeAnthropicAPI) -> None:
    gate = threading.Event()
    reply = Reply(text="one two three four", gate=gate)
    api.enqueue(reply)
    chunks = []
    for chunk in model().prompt("count"):
        chunks.append(chunk)
        gate.set()
    assert reply.gate_opened is True, "the first words were not shown before the API sent the last one"
    assert "".join(chunks) == "one two three four"
    assert len([c for c in chunks if c]) == 4


async def test_async_model_streams_too(api: FakeAnthropicAPI) -> None:
    gate = threading.Event()
    reply = Reply(text="a b c", gate=gate)
    api.enqueue(reply)
    chunks = []
    async for chunk in llm.get_async_model("claude-max").prompt("count"):
        chunks.append(chunk)
        gate.set()
    assert reply.gate_opened is True
    assert "".join(chunks) == "a b c"


def test_thinking_is_reasoning_and_hidden_with_R(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="Answer.", thinking="Let me think."))
    events = list(model().prompt("q").stream_events())
    assert [e.chunk for e in events if e.type == "reasoning"] == ["Let me think."]
    api.enqueue(Reply(text="Answer.", thinking="Let me think."))
    events = list(model().prompt("q", hide_reasoning=True).stream_events())
    assert not [e for e in events if e.type == "reasoning"]


# -- what is sent ----------------------------------------------------------------------------------
def test_small_isolated_request(api: FakeAnthropicAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CLAUDE.md in the caller's directory must not leak into the prompt.
    (tmp_path / "CLAUDE.md").write_text("SECRET PROJECT INSTRUCTIONS")
    monkeypatch.chdir(tmp_path)
    model().prompt("hi").text()
    request = api.message_requests[0]
    assert request.body is not None
    assert request.body["tools"] == []
    assert "SECRET PROJECT" not in json.dumps(request.body)
    assert request.raw_size < 2500


def test_prompt_starting_with_dashes_is_text(api: FakeAnthropicAPI) -> None:
    model().prompt("--help me").text()
    assert "--help me" in user_texts(api.message_requests[0])


@pytest.mark.parametrize("prompt", ["/model haiku", "/clear", "/cost"])
def test_prompt_starting_with_a_slash_reaches_the_model(api: FakeAnthropicAPI, prompt: str) -> None:
    # The CLI would run these as its own commands (switch the model, wipe the session...).
    assert model().prompt(prompt).text() == "Hello from the fake API."
    assert prompt in " ".join(user_texts(api.message_requests[0]))
    assert api.message_requests[0].body["model"] == "claude-opus-5-5"  # type: ignore[index]


def test_one_megabyte_prompt(api: FakeAnthropicAPI) -> None:
    big = "word " * 200_000
    assert model().prompt(big).text() == "Hello from the fake API."
    assert any(len(t) >= 1_000_000 for t in user_texts(api.message_requests[0]))


def test_model_alias_and_resolved_model(api: FakeAnthropicAPI) -> None:
    response = model("claude-max-sonnet").prompt("hi")
    response.text()
    assert api.message_requests[0].body["model"] == "claude-sonnet-5-5"  # type: ignore[index]
    assert response.resolved_model == "claude-sonnet-5-5"


def test_effort_option(api: FakeAnthropicAPI) -> None:
    model().prompt("hi", effort="high").text()
    assert api.message_requests[0].body["output_config"]["effort"] == "high"  # type: ignore[index]


def test_usage_and_response_json(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(input_tokens=20, output_tokens=9, cache_read_tokens=5))
    response = model().prompt("hi")
    response.text()
    usage = response.usage()
    assert (usage.input, usage.output) == (20, 9)
    assert usage.details == {"cache_read_input_tokens": 5}
    data = response.response_json
    assert data is not None
    assert data["billing"] == {
        "route": "subscription",
        "source": "claude.ai login",
        "plan": "Claude Max",
        "provider": "firstParty",
        "verified": True,
    }
    assert data["cost_estimate_usd"]["amount"] > 0
    assert "not a charge" in data["cost_estimate_usd"]["note"]
    assert data["rate_limit"]["status"] == "allowed"


def test_models_are_learned_from_the_cli(api: FakeAnthropicAPI) -> None:
    from llm_claude_max import catalog

    model().prompt("hi").text()
    aliases = [m.alias for m in catalog.load()]
    assert aliases == ["default", "opus", "fable", "sonnet", "haiku"]


# -- system prompts ----------------------------------------------------------------------------------
def system_texts(request: Recorded) -> list[str]:
    assert request.body is not None
    return [b["text"] for b in request.body["system"]]


def test_system_prompt_replaces_the_agent_prompt(api: FakeAnthropicAPI) -> None:
    model().prompt("hi", system="--Be terse.").text()
    system = system_texts(api.message_requests[0])
    assert system[-1] == "--Be terse."
    assert not any("Claude Code" in s for s in system)


def test_system_prompt_beyond_the_argv_limit(api: FakeAnthropicAPI) -> None:
    big = "Follow this rule. " * 12_000  # 216 KB: one argv value may not exceed 128 KiB
    model().prompt("hi", system=big).text()
    assert system_texts(api.message_requests[0])[-1] == big.strip()
    state = Path(os.environ["CLAUDE_MAX_STATE_DIR"])
    assert not list(state.glob("system-prompts/*"))  # the file lived until the CLI had read it


def test_system_prompt_appended(api: FakeAnthropicAPI) -> None:
    model().prompt("hi", system="Be terse.", system_placement="append").text()
    system = "\n".join(system_texts(api.message_requests[0]))
    assert "You are Claude Code" in system
    assert system.endswith("Be terse.")


def test_system_prompt_in_user_turn(api: FakeAnthropicAPI) -> None:
    model().prompt("hi", system="Be terse.", system_placement="user").text()
    assert "Be terse." not in "\n".join(system_texts(api.message_requests[0]))
    assert any(
        "<system_instructions>\nBe terse.\n</system_instructions>" in t for t in user_texts(api.message_requests[0])
    )


# -- conversations -----------------------------------------------------------------------------------
def test_conversation_resumes_the_cli_session(
    api: FakeAnthropicAPI, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conversation = model().conversation()
    api.enqueue(Reply(text="Reply ONE"), Reply(text="Reply TWO"), Reply(text="Reply THREE"))
    first = conversation.prompt("first prompt", system="Be brief.")
    first.text()
    second = conversation.prompt("second prompt")
    second.text()
    assert first.response_json and second.response_json
    assert second.response_json["session_id"] == first.response_json["session_id"]
    assert second.response_json["continued"] == "resumed"
    body = api.message_requests[1].body
    assert body is not None
    assert [m["role"] for m in body["messages"] if m["role"] != "system"] == ["user", "assistant", "user"]
    assert "Be brief." in system_texts(api.message_requests[1])

    # The CLI's transcripts vanish (another machine, cleanup): the history is given to a new session as real
    # messages (a seeded session), and we say so.
    for transcript in (home / ".claude" / "projects").rglob("*.jsonl"):
        transcript.unlink()
    third = conversation.prompt("third prompt")
    third.text()
    assert third.response_json is not None
    assert third.response_json["continued"] == "seeded"
    assert third.response_json["session_id"] != first.response_json["session_id"]
    messages = [m for m in api.message_requests[2].body["messages"] if m["role"] != "system"]  # type: ignore[index]
    assert [(m["role"], text_of(m)) for m in messages] == [
        ("user", "first prompt"),
        ("assistant", "Reply ONE"),
        ("user", "second prompt"),
        ("assistant", "Reply TWO"),
        ("user", "third prompt"),
    ]
    assert "replaying 4 earlier message(s)" in capsys.readouterr().err
    assert "Be brief." in system_texts(api.message_requests[2])


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(
        b.get("text", "") for b in content if b.get("type") == "text" and "<system-reminder>" not in b["text"]
    )


def test_conversation_is_replayed_as_text_when_it_cannot_be_seeded(
    api: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_claude_max.runner import seed

    def unwritable(*args: Any, **kwargs: Any) -> str:
        raise PermissionError("read-only")

    monkeypatch.setattr(seed, "write", unwritable)
    history = [llm.user("What is 2+2?"), llm.assistant("4, says another model")]
    response = model().prompt("And doubled?", messages=history)
    response.text()
    assert response.response_json is not None and response.response_json["continued"] == "replayed"
    replayed = "\n".join(user_texts(api.message_requests[0]))
    assert "4, says another model" in replayed and "And doubled?" in replayed


def test_conversation_started_with_another_model_is_seeded(api: FakeAnthropicAPI) -> None:
    history = [llm.user("What is 2+2?"), llm.assistant("4, says another model")]
    response = model().prompt("And doubled?", messages=history)
    response.text()
    assert response.response_json is not None and response.response_json["continued"] == "seeded"
    messages = [m for m in api.message_requests[0].body["messages"] if m["role"] != "system"]  # type: ignore[index]
    assert [text_of(m) for m in messages] == ["What is 2+2?", "4, says another model", "And doubled?"]


# -- attachments --------------------------------------------------------------------------------------
def test_image_and_pdf_attachments(api: FakeAnthropicAPI) -> None:
    png = png_bytes()
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    attachments = [llm.Attachment(content=png, type="image/png"), llm.Attachment(content=pdf, type="application/pdf")]
    model().prompt("Describe these", attachments=attachments).text()
    body = api.message_requests[0].body
    assert body is not None
    blocks = [b for m in body["messages"] if m["role"] == "user" for b in m["content"] if isinstance(b, dict)]
    images = [b for b in blocks if b["type"] == "image"]
    documents = [b for b in blocks if b["type"] == "document"]
    assert images and base64.b64decode(images[0]["source"]["data"]) == png
    assert documents and base64.b64decode(documents[0]["source"]["data"]) == pdf


def test_attachment_from_a_file(api: FakeAnthropicAPI, tmp_path: Path) -> None:
    path = tmp_path / "pixel.png"
    path.write_bytes(png_bytes())
    model().prompt("What is this?", attachments=[llm.Attachment(path=str(path))]).text()
    assert '"type": "image"' in json.dumps(api.message_requests[0].body)


# -- schemas -----------------------------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_schema_returns_the_structured_output(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="preamble", structured={"name": "Ada", "age": 36}))
    response = model().prompt("Invent a person", schema=SCHEMA)
    assert json.loads(response.text()) == {"name": "Ada", "age": 36}


def test_schema_not_followed_is_an_error(api: FakeAnthropicAPI) -> None:
    with pytest.raises(StructuredOutputMissing) as info:
        model().prompt("Invent a person", schema=SCHEMA).text()
    assert isinstance(info.value, llm.ModelError)


# -- limits, paid usage, failures ------------------------------------------------------------------
def test_five_hour_limit(api: FakeAnthropicAPI) -> None:
    reset = int(time.time()) + 3 * 3600
    api.enqueue(Reply(status=429, error_type="rate_limit_error", headers=five_hour_limit_headers(reset)))
    with pytest.raises(UsageLimitReached) as info:
        model().prompt("hi").text()
    assert "5-hour limit reached, resets" in str(info.value)
    assert info.value.resets_at is not None and int(info.value.resets_at.timestamp()) == reset
    assert len(api.message_requests) == 1


def test_overage_stops_and_blocks_until_opt_in(api: FakeAnthropicAPI) -> None:
    reset = int(time.time()) + 3600
    api.enqueue(Reply(text="Paid words here", headers=five_hour_limit_headers(reset, overage=True)))
    with pytest.raises(PaidUsageRefused) as info:
        model().prompt("hi").text()
    assert isinstance(info.value, llm.ModelError)
    assert "extra usage" in str(info.value)
    assert "Paid words here" in str(info.value)  # not streamed to anyone: kept in the message
    assert guard.OverageLock().read() is not None
    with pytest.raises(PaidUsageRefused, match="Nothing was sent"):
        model().prompt("again").text()
    assert len(api.message_requests) == 1
    api.enqueue(Reply(text="ok", headers=five_hour_limit_headers(reset, overage=True)))
    assert model().prompt("again", allow_overage=True).text() == "ok"


@pytest.mark.parametrize(("status", "retries", "attempts"), [(529, None, 4), (500, 1, 2)])
def test_server_errors_are_retried_a_bounded_number_of_times(
    api: FakeAnthropicAPI, capsys: pytest.CaptureFixture[str], status: int, retries: int | None, attempts: int
) -> None:
    api.enqueue(*[Reply(status=status) for _ in range(12)])
    options: dict[str, Any] = {} if retries is None else {"max_retries": retries}
    with pytest.raises(APIError) as info:
        model().prompt("hi", **options).text()
    assert info.value.status == status
    assert len(api.message_requests) == attempts  # bounded: no further retries
    err = capsys.readouterr().err
    assert f"retry 1/{attempts - 1}" in err


def test_overloaded_then_ok(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(status=529), Reply(text="Recovered."))
    assert model().prompt("hi").text() == "Recovered."


def test_stalled_stream_is_stopped_by_the_idle_watchdog(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(mode="stall_body", stall_seconds=60))
    start = time.monotonic()
    with pytest.raises(ClaudeTimeout, match="sent nothing for 3 s"):
        model().prompt("hi", idle_timeout=3).text()
    assert time.monotonic() - start < 15


def test_malformed_stream_falls_back_to_the_full_text(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="alpha beta gamma", mode="malformed"), Reply(text="alpha beta gamma"))
    assert model().prompt("hi").text().endswith("alpha beta gamma")


# -- cancellation ------------------------------------------------------------------------------------
def test_stopping_iteration_kills_the_cli(api: FakeAnthropicAPI) -> None:
    gate = threading.Event()  # never opened: the answer is in flight when we stop
    api.enqueue(Reply(text="one two three", gate=gate, gate_timeout=20))
    stream = iter(model().prompt("hi"))
    assert next(stream) == "one "
    stream.close()  # type: ignore[attr-defined]
    gate.set()
    # the orphan check (conftest) fails the test if the CLI is still running


async def test_cancelling_an_async_prompt_kills_the_cli(api: FakeAnthropicAPI) -> None:
    gate = threading.Event()
    api.enqueue(Reply(text="one two three", gate=gate, gate_timeout=20))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in llm.get_async_model("claude-max").prompt("hi"):
            first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), 30)
    finally:
        task.cancel()  # also when the wait failed: a dropped task would strand the CLI
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()


# -- Claude Code tools (opt-in) -----------------------------------------------------------------------
def test_tools_are_off_unless_enabled(
    api: FakeAnthropicAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model().prompt("hi", claude_tools="Read", claude_tools_dir=str(tmp_path)).text()
    body = api.message_requests[0].body
    assert body is not None
    assert "Read" in [t["name"] for t in body["tools"]]
    assert str(tmp_path) in json.dumps(body)  # the tools' working directory is the one given
    assert "they run on this machine" in capsys.readouterr().err


def test_private_working_directory(api: FakeAnthropicAPI) -> None:
    model().prompt("hi").text()
    workspace = Path(os.environ["CLAUDE_MAX_STATE_DIR"]) / "workspace"
    assert workspace.is_dir() and not any(workspace.iterdir())
