"""Faults that are nobody's request: a CLI that crashes, a prompt too long for the model. Each gets its
own error and HTTP status; "cancelled" (499) is only for a caller that left."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_claude_max import guard
from llm_claude_max.errors import CLICrashed, PromptTooLong
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.runner.command import CommandSpec

from . import fake_claude as fc
from . import proctable
from .conftest import FakeCLI
from .fakeapi import FakeAnthropicAPI, Reply
from .llm_command import llm_mid_answer, llm_run

BODY = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}


async def prompt() -> str:
    cli = ClaudeCLI()
    return "".join([getattr(e, "text", "") async for e in cli.prompt(CommandSpec(), "hi", policy=guard.Policy())])


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ([{"emit": fc.init()}, {"emit": fc.delta("half")}, {"die": "KILL"}], "killed by signal SIGKILL"),
        ([{"emit": fc.init()}, {"emit": fc.delta("half")}, {"die": "TERM"}], "killed by signal SIGTERM"),
        ([{"emit": fc.init()}, {"stderr": "boom"}, {"exit": 3}], "exited with code 3"),
    ],
    ids=["sigkill", "sigterm", "exit-3"],
)
async def test_a_crash_is_not_a_cancellation(fake_cli: FakeCLI, steps: list[Any], match: str) -> None:
    fake_cli.scenario(steps=steps)
    with pytest.raises(CLICrashed, match=match):
        await prompt()


async def test_the_server_answers_a_crash_with_502(fake_cli: FakeCLI, app_client: httpx.AsyncClient) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"die": "KILL"}])
    response = await app_client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "cli_crashed"


async def test_a_crash_mid_stream_ends_the_stream_with_a_502_event(
    fake_cli: FakeCLI, app_client: httpx.AsyncClient
) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"emit": fc.delta("half")}, {"die": "KILL"}])
    response = await app_client.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert response.status_code == 200
    last = [line for line in response.text.splitlines() if line.startswith("data: ")][-1]
    assert '"code":"cli_crashed"' in last.replace(" ", "") and '"status":502' in last.replace(" ", "")


@pytest.mark.real_cli
def test_llm_reports_a_cli_killed_by_something_else(real_cli: FakeAnthropicAPI, login: Path) -> None:
    with llm_mid_answer(real_cli) as proc:
        (cli,) = proctable.claude_children(proc.pid)
        os.kill(cli, signal.SIGKILL)  # the OOM killer, say
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "killed by signal SIGKILL (not by llm-claude-max)" in stderr and "Traceback" not in stderr


@pytest.mark.real_cli
def test_a_prompt_too_long_is_the_callers_400(real_cli: FakeAnthropicAPI, login: Path, tmp_path: Path) -> None:
    too_long = Reply(
        status=400,
        error_type="invalid_request_error",
        error_message="prompt is too long: 208310 tokens > 200000 maximum",
    )
    real_cli.default = too_long
    done = llm_run("-m", "claude-max", "hi")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: The prompt is too long for the model: Prompt is too long")
    assert len(real_cli.message_requests) == 1  # not retried


@pytest.mark.real_cli
async def test_the_server_answers_a_prompt_too_long_with_400(
    real_cli: FakeAnthropicAPI, login: Path, app_client: httpx.AsyncClient
) -> None:
    real_cli.default = Reply(
        status=400,
        error_type="invalid_request_error",
        error_message="prompt is too long: 208310 tokens > 200000 maximum",
    )
    response = await app_client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_errors_map_back_from_their_codes() -> None:
    from llm_claude_max.errors import by_code

    assert by_code("cli_crashed") is CLICrashed and by_code("context_length_exceeded") is PromptTooLong
