"""Text the CLI cannot carry is refused before anything starts, through every front door; a system
prompt that needs a file leaves none behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import llm
import pytest

from llm_claude_max import validation
from llm_claude_max.errors import InvalidRequest
from llm_claude_max.runner import promptfile
from llm_claude_max.runner.client import ClaudeCLI

from . import proctable
from .conftest import FakeCLI
from .fakeapi import FakeAnthropicAPI, Reply
from .llm_command import LLM

SURROGATE = "a\ud800b"


# -- the rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"system": SURROGATE, "messages": []},
        {"system": None, "messages": [SURROGATE]},
        {"system": None, "messages": [[{"type": "text", "text": "ok"}, {"type": "text", "text": "\udcff"}]]},
        {"system": None, "messages": [], "json_schema": {"properties": {"\udc80": {}}}},
        {"system": None, "messages": [], "model": "opus\0"},
    ],
    ids=["system", "message", "block", "schema-key", "model-nul"],
)
def test_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        validation.check_request(**bad)


def test_carried() -> None:
    """What the real CLI passes through unchanged (NUL via a file for a system prompt)."""
    text = "".join(chr(c) for c in range(32)) + "\x7f\x85\ufffe\ufeff\u2028 ok"
    validation.check_request(
        system=text, messages=[text, [{"type": "text", "text": text}]], json_schema={"description": text}
    )


def test_the_error_names_the_character_and_the_likely_cause() -> None:
    with pytest.raises(InvalidRequest) as info:
        validation.check_request(system=None, messages=["ab\udcff"])
    assert str(info.value) == (
        "The prompt is not valid Unicode text: it holds a lone surrogate (U+DCFF) at character 2, which the "
        f"Claude Code CLI would replace with U+FFFD. {validation.BINARY_HINT}"
    )


# -- every front door ------------------------------------------------------------------------------------


def test_python_api(fake_cli: FakeCLI) -> None:
    for kwargs in ({"prompt": SURROGATE}, {"prompt": "hi", "system": SURROGATE}):
        with pytest.raises(llm.ModelError, match="lone surrogate"):
            llm.get_model("claude-max").prompt(**kwargs).text()
    assert fake_cli.invocations() == []


async def test_python_api_async(fake_cli: FakeCLI) -> None:
    with pytest.raises(llm.ModelError, match="lone surrogate"):
        await llm.get_async_model("claude-max").prompt(SURROGATE).text()
    assert fake_cli.invocations() == []


def test_python_api_through_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_MAX_SERVER", "http://127.0.0.1:9")  # never contacted
    with pytest.raises(llm.ModelError, match="lone surrogate"):
        llm.get_model("claude-max").prompt(SURROGATE).text()


@pytest.mark.parametrize("encoding", ["utf-8:surrogateescape", "utf-8:strict"])
def test_binary_on_stdin_to_llm(fake_cli: FakeCLI, encoding: str) -> None:
    """How Python decodes stdin depends on the locale: with surrogateescape (the C locale) the bytes
    reach the plugin as lone surrogates and are refused; with strict decoding llm itself refuses them."""
    done = subprocess.run(
        [LLM, "-m", "claude-max"],
        input=b"describe \xff\xfe\x00\x01",
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": encoding},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert fake_cli.invocations() == []  # no CLI was started
    stderr = done.stderr.decode()
    if encoding.endswith("surrogateescape"):
        assert stderr.startswith("Error: The prompt is not valid Unicode text: it holds a lone surrogate (U+DCFF)")
        assert "Traceback" not in stderr
    else:
        assert "UnicodeDecodeError" in stderr  # llm's own error: the plugin is never called


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": SURROGATE}]},
        {"messages": [{"role": "system", "content": SURROGATE}, {"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": SURROGATE}, {"role": "assistant", "content": "x"},
                      {"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}],
         "response_format": {"type": "json_schema", "json_schema": {"schema": {"title": SURROGATE}}}},
    ],
    ids=["message", "system", "history", "schema"],
)  # fmt: skip
async def test_server(fake_cli: FakeCLI, app_client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    raw = json.dumps({"model": "claude-max", **body})  # ensure_ascii: the surrogate travels as \ud800
    response = await app_client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "lone surrogate" in response.json()["error"]["message"]
    assert fake_cli.invocations() == []


# -- NUL in a system prompt, and the file it travels in -------------------------------------------------


def files_holding(text: str) -> list[Path]:
    """Files anywhere in the state directory that hold ``text``."""
    state = Path(os.environ["CLAUDE_MAX_STATE_DIR"])
    return [p for p in state.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.real_cli
def test_a_nul_in_a_system_prompt_reaches_the_model(real_cli: FakeAnthropicAPI, login: Path) -> None:
    llm.get_model("claude-max").prompt("hi", system="before\0after").text()
    body = real_cli.message_requests[0].body
    assert body is not None and body["system"][-1]["text"] == "before\0after"
    assert files_holding("before\0after") == []


@pytest.mark.real_cli
@pytest.mark.parametrize("placement", ["replace", "append"])
def test_a_system_prompt_file_is_gone_once_the_cli_has_read_it(
    real_cli: FakeAnthropicAPI, login: Path, placement: str
) -> None:
    big = "Follow this rule. " * 12_000
    gate = threading.Event()
    real_cli.enqueue(Reply(text="one two", gate=gate, gate_timeout=30))
    response = llm.get_model("claude-max").prompt("hi", system=big, system_placement=placement)
    chunks = iter(response)
    try:
        assert next(chunks) == "one "
        # The CLI is still answering, and the file is already gone: a SIGKILL now leaves nothing.
        assert files_holding("Follow this rule.") == []
        assert len(proctable.claude_children(os.getpid())) == 1
    finally:
        gate.set()
    assert "".join(chunks) == "two"
    body = real_cli.message_requests[0].body
    assert body is not None and big.strip() in body["system"][-1]["text"]


def test_files_of_killed_processes_are_swept(tmp_path: Path) -> None:
    folder = promptfile.directory()
    folder.mkdir(parents=True)
    with subprocess.Popen(["true"]) as gone:
        pass
    dead = folder / f"{gone.pid}-abc.txt"
    live = folder / f"{os.getpid()}-def.txt"
    for path in (dead, live):
        path.write_text("system prompt")
    ClaudeCLI(cli=sys.executable)  # any start of the runner sweeps
    assert not dead.exists() and live.exists()
