"""The warm server (llm_claude_max/warm.py): `llm -m claude-max` prompts through a private background
`claude-max serve`, through the real `llm` command, the real CLI and the fake API."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_claude_max import warm
from llm_claude_max.server import records

from . import proctable
from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, five_hour_limit_headers, tool_results
from .llm_command import llm_mid_answer, llm_run

pytestmark = pytest.mark.real_cli

FUNCTIONS = "def multiply(a: int, b: int) -> int:\n    'Multiply two integers.'\n    return a * b\n"


@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path) -> Iterator[FakeAnthropicAPI]:
    yield real_cli
    warm.stop(os.environ, every=True)  # whatever a test started ends with it (and its CLI processes)


def last_log() -> dict[str, Any]:
    rows = json.loads(llm_run("logs", "--json", "-n", "1").stdout)
    return rows[0]  # type: ignore[no-any-return]


def start_warm(*options: str) -> warm.Endpoint:
    done = llm_run("claude-max", "warm", "start", *options)
    assert done.returncode == 0, done.stderr
    found = warm.find(os.environ)
    assert found is not None
    return found


def test_prompts_go_through_the_warm_server_while_it_runs(api: FakeAnthropicAPI) -> None:
    direct = llm_run("-m", "claude-max", "hi")
    assert direct.returncode == 0 and direct.stdout == "Hello from the fake API.\n", direct.stderr
    direct_record = last_log()
    assert "via" not in direct_record["response_json"]

    endpoint = start_warm("--idle-timeout", "120")
    assert "this environment" in llm_run("claude-max", "warm", "status").stdout
    mode = os.stat(endpoint.socket).st_mode & 0o777
    assert mode == 0o600 and os.stat(Path(endpoint.socket).parent).st_mode & 0o777 == 0o700
    done = llm_run("-m", "claude-max", "-u", "hi")
    assert done.returncode == 0 and done.stdout == "Hello from the fake API.\n", done.stderr
    assert "Token usage: 12 input, 7 output" in done.stderr
    record = last_log()
    assert record["response_json"]["via"] == endpoint.socket
    assert record["response_json"]["billing"] == direct_record["response_json"]["billing"]
    assert set(direct_record["response_json"]) <= set(record["response_json"])  # the same record, and the route
    assert (record["input_tokens"], record["output_tokens"], record["resolved_model"]) == (12, 7, "claude-opus-5-5")

    # `llm -c` continues on the conversation's live process in the server.
    done = llm_run("-c", "and then?")
    assert done.returncode == 0, done.stderr
    assert last_log()["response_json"]["continued"] == "live"
    assert [m["role"] for m in api.message_requests[-1].body["messages"] if m["role"] != "system"] == [  # type: ignore[index]
        "user",
        "assistant",
        "user",
    ]

    # A tool chain: the paused CLI waits in the server between llm's steps.
    api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 3, "b": 7})]), Reply(text="3*7 is 21."))
    done = llm_run("-m", "claude-max", "--functions", FUNCTIONS, "what is 3*7")
    assert done.returncode == 0 and done.stdout.strip() == "3*7 is 21.", done.stderr
    assert tool_results(api.message_requests[-1].body)[0]["content"] == "21"
    assert last_log()["response_json"]["continued"] == "paused"

    assert "Stopped 1" in llm_run("claude-max", "warm", "stop").stdout
    assert warm.find(os.environ) is None
    done = llm_run("-m", "claude-max", "hi")
    assert done.returncode == 0 and "via" not in last_log()["response_json"]


def test_only_the_same_environment_and_options_use_it(api: FakeAnthropicAPI) -> None:
    endpoint = start_warm()
    other = {**os.environ, "CLAUDE_MAX_ALLOW_OVERAGE": "1"}  # another billing policy: not this server's
    assert llm_run("-m", "claude-max", "hi", env=other).returncode == 0
    assert "via" not in last_log()["response_json"]
    assert llm_run("-m", "claude-max", "-o", "allow_overage", "1", "hi").returncode == 0
    assert "via" not in last_log()["response_json"]
    shell = {**os.environ, "PWD": "/somewhere/else", "OLDPWD": "/tmp"}  # only the shell's directory changed
    assert llm_run("-m", "claude-max", "hi", env=shell).returncode == 0
    assert last_log()["response_json"]["via"] == endpoint.socket


def test_the_socket_wants_the_key(api: FakeAnthropicAPI) -> None:
    endpoint = start_warm()
    transport = httpx.HTTPTransport(uds=endpoint.socket)
    with httpx.Client(transport=transport, base_url="http://localhost") as client:
        body = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 401
        wrong = client.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer cmx-wrong-key-0000"})
        assert wrong.status_code == 401
    assert api.message_requests == []


def test_its_messages_speak_to_llm_users(api: FakeAnthropicAPI) -> None:
    """The warm server answers llm prompts: an opt-in it refuses names llm's option, not a server's environment."""
    start_warm()
    reset = int(time.time()) + 3600
    api.enqueue(Reply(text="Paid words here", headers=five_hour_limit_headers(reset, overage=True)))
    done = llm_run("-m", "claude-max", "hi")
    assert done.returncode != 0
    assert "pass -o allow_overage 1" in done.stderr, done.stderr
    assert "in its environment" not in done.stderr and "Traceback" not in done.stderr


def test_a_server_that_cannot_be_reached_means_the_prompt_runs_here(api: FakeAnthropicAPI) -> None:
    # A state that names a running process (this one) but a socket nobody listens on.
    where = warm.directory(os.environ)
    where.mkdir(parents=True, mode=0o700)
    pid = os.getpid()
    state = {"pid": pid, "start": records.process_start(pid), "url": "http://localhost", "socket": str(where / "s")}
    (where / "server.json").write_text(json.dumps(state))
    (where / "key").write_text("cmx-0123456789abcdef\n")
    done = llm_run("-m", "claude-max", "hi")
    assert done.returncode == 0 and done.stdout == "Hello from the fake API.\n", done.stderr
    assert "via" not in last_log()["response_json"]
    assert len(api.message_requests) == 1


def test_on_demand_it_starts_after_a_prompt_and_stops_when_idle(api: FakeAnthropicAPI) -> None:
    env = {**os.environ, "CLAUDE_MAX_WARM": "1"}
    done = llm_run("-m", "claude-max", "hi", env=env)
    assert done.returncode == 0, done.stderr
    assert "via" not in last_log()["response_json"]  # this one ran its own CLI, and started the server
    deadline = time.monotonic() + 60
    while (found := warm.find(env)) is None:
        assert time.monotonic() < deadline, (warm.directory(env) / "server.log").read_text()
        time.sleep(0.1)
    assert llm_run("-m", "claude-max", "hi", env=env).returncode == 0
    assert last_log()["response_json"]["via"] == found.socket
    # It stops by itself once idle (started with the default timeout here: ask it to stop sooner).
    warm.stop(env)
    done = llm_run("claude-max", "warm", "start", "--idle-timeout", "5", env=env)
    assert done.returncode == 0, done.stderr
    found = warm.find(env)
    assert found is not None
    deadline = time.monotonic() + 60
    while records.alive(found.pid, None):
        assert time.monotonic() < deadline, "the idle warm server did not stop"
        time.sleep(0.2)
    assert not Path(found.socket).exists() and warm.find(env) is None


def test_ctrl_c_through_the_warm_server_ends_the_prompt_and_its_cli(api: FakeAnthropicAPI) -> None:
    start_warm()
    with llm_mid_answer(api) as proc:
        proctable.wait_until_blocked(proc.pid)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode != 0
    # The server stopped that prompt's CLI (it did not finish: never reused); its spare was replaced.
    server = warm.find(os.environ)
    assert server is not None
    deadline = time.monotonic() + 30
    while len(proctable.claude_children(server.pid)) != 1:
        assert time.monotonic() < deadline, proctable.claude_children(server.pid)
        time.sleep(0.05)
    done = llm_run("-m", "claude-max", "hi")
    assert done.returncode == 0 and last_log()["response_json"]["process"] == "warm"
    assert len(api.message_requests) == 2


def test_a_chain_given_up_ends_its_paused_cli_in_the_server(api: FakeAnthropicAPI) -> None:
    server = start_warm()
    api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 1, "b": 2})]), Reply(text="never sent"))
    done = llm_run("-m", "claude-max", "--functions", FUNCTIONS, "--cl", "1", "q")
    assert done.returncode == 1 and "Chain limit of 1 exceeded" in done.stderr
    # llm exited: as its own CLI would have been, the process paused at the call in the server is ended
    # (only the warm spare is left), without another request.
    deadline = time.monotonic() + 30
    while len(proctable.claude_children(server.pid)) != 1:
        assert time.monotonic() < deadline, proctable.claude_children(server.pid)
        time.sleep(0.05)
    assert len(api.message_requests) == 1
