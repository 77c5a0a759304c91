"""End to end through the real `llm` command: CliRunner in-process and `llm` as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli

from .conftest import FakeCLI
from .fakeapi import FakeAnthropicAPI, Reply

pytestmark = pytest.mark.real_cli

LLM = str(Path(sys.executable).parent / "llm")


@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path) -> FakeAnthropicAPI:
    return real_cli


def llm_run(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLM, *args], capture_output=True, text=True, check=False, input=input, timeout=timeout, env=os.environ.copy()
    )


def test_prompt_continue_and_logs_via_cli_runner(api: FakeAnthropicAPI) -> None:
    runner = CliRunner()
    api.enqueue(Reply(text="First answer."), Reply(text="Second answer."))
    result = runner.invoke(llm_cli, ["-m", "claude-max", "-s", "Be brief.", "first question"])
    assert result.exit_code == 0, result.output
    assert result.output == "First answer.\n"
    result = runner.invoke(llm_cli, ["-c", "second question"])
    assert result.exit_code == 0, result.output
    assert result.output == "Second answer.\n"
    # -c resumed the CLI session: the second request carries the whole conversation
    body = api.message_requests[1].body
    assert body is not None
    assert [m["role"] for m in body["messages"] if m["role"] != "system"] == ["user", "assistant", "user"]

    logs = runner.invoke(llm_cli, ["logs", "--json", "-n", "2"])
    rows = json.loads(logs.output)
    assert [r["response"] for r in rows] == ["First answer.", "Second answer."]
    for row in rows:
        assert row["input_tokens"] == 12 and row["output_tokens"] == 7
        assert row["resolved_model"] == "claude-opus-5-5"
        assert row["response_json"]["billing"]["verified"] is True
    assert rows[0]["response_json"]["session_id"] == rows[1]["response_json"]["session_id"]
    assert rows[1]["response_json"]["continued"] == "resumed"


def test_subprocess_prompt_usage_and_schema(api: FakeAnthropicAPI) -> None:
    done = llm_run("-m", "claude-max", "-u", "Say hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello from the fake API.\n"
    assert "Token usage: 12 input, 7 output" in done.stderr
    api.enqueue(Reply(structured={"name": "Ada", "age": 36}))
    done = llm_run("-m", "claude-max", "--schema", "name, age int", "Invent a person")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "Ada", "age": 36}


def test_prompt_from_stdin_and_attachment(api: FakeAnthropicAPI, tmp_path: Path) -> None:
    from .test_plugin_real import png_bytes

    image = tmp_path / "dot.png"
    image.write_bytes(png_bytes())
    done = llm_run("-m", "claude-max", "-a", str(image), input="--describe this image")
    assert done.returncode == 0, done.stderr
    body = json.dumps(api.message_requests[0].body)
    assert '"type": "image"' in body and "--describe this image" in body


def test_async_flag(api: FakeAnthropicAPI) -> None:
    done = llm_run("-m", "claude-max", "--async", "hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello from the fake API.\n"


def test_refused_route_is_a_clean_error(api: FakeAnthropicAPI, home: Path) -> None:
    (home / ".claude" / ".credentials.json").unlink()
    done = llm_run("-m", "claude-max", "hi")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("Error: The Claude Code CLI is not logged in")
    assert "Traceback" not in done.stderr
    assert api.message_requests == []


def test_errors_never_show_a_traceback(api: FakeAnthropicAPI) -> None:
    api.enqueue(*[Reply(status=529) for _ in range(4)])
    done = llm_run("-m", "claude-max", "-o", "max_retries", "1", "hi")
    assert done.returncode == 1
    assert "Error: Claude API 529 overloaded" in done.stderr
    assert "Claude API overloaded, retry 1/1" in done.stderr
    assert "Traceback" not in done.stderr
    done = llm_run("-m", "claude-max", "-o", "effort", "enormous", "hi")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "effort" in done.stderr


def test_ctrl_c_kills_the_cli(api: FakeAnthropicAPI) -> None:
    gate = threading.Event()
    api.enqueue(Reply(text="one two three", gate=gate, gate_timeout=30))
    with subprocess.Popen(
        [LLM, "-m", "claude-max", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.read(4)
            assert first == "one "
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
            assert proc.returncode != 0
        finally:
            gate.set()
            if proc.poll() is None:
                proc.kill()
    # the orphan check (conftest) fails the test if `claude` survived


def test_models_command(api: FakeAnthropicAPI) -> None:
    runner = CliRunner()
    result = runner.invoke(llm_cli, ["claude-max", "models", "--refresh"])
    assert result.exit_code == 0, result.output
    assert "claude-max-fable (fable -> claude-fable-5-2)" in result.output
    assert api.message_requests == []  # --refresh asks the CLI, not the API
    listed = runner.invoke(llm_cli, ["models", "list"])
    assert "claude-max-fable" in listed.output


def test_registering_models_never_starts_the_cli(fake_cli: FakeCLI) -> None:
    result = CliRunner().invoke(llm_cli, ["models", "list"])
    assert result.exit_code == 0
    assert "claude-max-opus" in result.output
    assert fake_cli.invocations() == []
