"""End to end through the real `llm` command: CliRunner in-process and `llm` as a subprocess."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli

from . import proctable
from .conftest import FakeCLI
from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, tool_results
from .llm_command import LLM, llm_mid_answer, llm_run

pytestmark = pytest.mark.real_cli


@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path) -> FakeAnthropicAPI:
    return real_cli


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
    with llm_mid_answer(api) as proc:
        proctable.wait_until_blocked(proc.pid)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode != 0
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


# -- tools ------------------------------------------------------------------------------------------------
FUNCTIONS = "def multiply(a: int, b: int) -> int:\n    'Multiply two integers.'\n    return a * b\n"


def test_functions_through_the_llm_command(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 3, "b": 7})]), Reply(text="3*7 is 21."))
    result = llm_run("-m", "claude-max", "--functions", FUNCTIONS, "--td", "what is 3*7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3*7 is 21."
    assert "multiply" in result.stderr  # --td shows the call
    assert tool_results(api.message_requests[1].body)[0]["content"] == "21"
    logs = json.loads(llm_run("logs", "--json", "-n", "2").stdout)
    assert [r["tool_calls"][0]["name"] if r["tool_calls"] else None for r in logs] == ["multiply", None]
    assert logs[1]["tool_results"][0]["output"] == "21"


def test_llm_chat_with_tools(api: FakeAnthropicAPI) -> None:
    """`llm chat --functions`: a tool step in the first message, and the chat goes on in the same conversation."""
    api.enqueue(
        Reply(text="", tool_uses=[ToolUse("multiply", {"a": 3, "b": 7})]),
        Reply(text="3*7 is 21."),
        Reply(text="And doubled, 42."),
    )
    result = llm_run("chat", "-m", "claude-max", "--functions", FUNCTIONS, input="what is 3*7\nand doubled?\nquit\n")
    assert result.returncode == 0, result.stderr
    assert "3*7 is 21." in result.stdout and "And doubled, 42." in result.stdout
    assert tool_results(api.message_requests[1].body)[0]["content"] == "21"
    # the second chat message continues the conversation: its request carries the tool step too
    third = [m for m in api.message_requests[2].body["messages"] if m["role"] != "system"]
    assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]
    assert tool_results({"messages": third[:3]})[0]["content"] == "21"
    assert third[-1]["content"][-1]["text"] == "and doubled?"


def test_a_tool_plugin_from_pypi(api: FakeAnthropicAPI) -> None:
    """`llm -m claude-max -T simple_eval 'what is 3*7'`, with llm-tools-simpleeval installed."""
    api.enqueue(Reply(text="", tool_uses=[ToolUse("simple_eval", {"expression": "3*7"})]), Reply(text="It is 21."))
    result = llm_run("-m", "claude-max", "-T", "simple_eval", "what is 3*7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "It is 21."
    assert tool_results(api.message_requests[1].body)[0]["content"] == "21"


def test_a_chain_that_hits_its_limit_ends_the_paused_cli_without_a_request(api: FakeAnthropicAPI) -> None:
    api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 1, "b": 2})]), Reply(text="never sent"))
    result = llm_run("-m", "claude-max", "--functions", FUNCTIONS, "--cl", "1", "q")
    assert result.returncode == 1 and "Chain limit of 1 exceeded" in result.stderr
    assert len(api.message_requests) == 1  # llm exited: the paused CLI was ended, not asked again


def approval_prompt(api: FakeAnthropicAPI) -> tuple[subprocess.Popen[bytes], int]:
    """`llm --ta` on a terminal (stdin a pty, as a user has it), stopped at "Approve tool call?"."""
    api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 1, "b": 2})]), Reply(text="never sent"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [LLM, "-m", "claude-max", "--functions", FUNCTIONS, "--ta", "q"],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
    )  # fmt: skip
    os.close(slave)
    assert proc.stdout is not None
    seen = b""
    while b"Approve tool call?" not in seen:
        chunk = proc.stdout.read1(1024)
        assert chunk, f"llm ended before asking: {seen!r}"
        seen += chunk
    return proc, master


def test_a_declined_tool_call_reaches_the_model_as_cancelled(api: FakeAnthropicAPI) -> None:
    """llm 0.36 does not end the chain when a call is declined: the model is told, as with llm-anthropic."""
    proc, master = approval_prompt(api)
    try:
        os.write(master, b"n\n")
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and out.decode().strip().endswith("never sent")
    [result] = tool_results(api.message_requests[1].body)
    assert result["is_error"] is True and "User cancelled tool call" in result["content"]


def test_ctrl_c_while_a_tool_call_waits_for_approval(api: FakeAnthropicAPI) -> None:
    proc, master = approval_prompt(api)
    try:
        proctable.wait_until_blocked(proc.pid)  # reading the answer
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:  # a failed wait must not leave the process, or its pipes, to later tests
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert len(api.message_requests) == 1
