"""Recycled CLI processes (runner/recycle.py): a finished conversation's process is reset and serves the
next new conversation of the same caller and flags. The real CLI against the fake API, which records
every request: nothing of an earlier conversation may reach a later one, and no two callers may ever be
in one process at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fakeapi import FakeAnthropicAPI, Recorded, Reply
from .server_process import Server

pytestmark = pytest.mark.real_cli

SECRET = "SECRET-first-conversation-7f3a"
ANSWER_SECRET = "ANSWER-SECRET-of-the-first-9c1d"


def ask(
    server: Server, text: str = "", *, model: str = "claude-max", key: str = "unused", **body: Any
) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": text}])
    response = httpx.post(
        server.base + "/chat/completions",
        json={"model": model, **body},
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def meta(answer: dict[str, Any]) -> dict[str, Any]:
    return answer["claude_max"]  # type: ignore[no-any-return]


def upstream(request: Recorded) -> dict[str, Any]:
    """What the model sees of a request: everything but the session's identity."""
    body = dict(request.body or {})
    body.pop("metadata", None)
    return body


def health(server: Server) -> dict[str, Any]:
    return httpx.get(server.url + "/health/deep", timeout=30).json()["engine"]  # type: ignore[no-any-return]


def wait_for_spare(server: Server) -> None:
    deadline = time.monotonic() + 20
    while health(server)["recycled"]["ready"] < 1:
        assert time.monotonic() < deadline, f"no recycled spare: {health(server)}"
        time.sleep(0.05)


def test_a_recycled_process_sends_nothing_of_the_earlier_conversation(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    server = serve("--pool-size", "1", "--live-sessions", "0")
    real_cli.enqueue(Reply(text=ANSWER_SECRET))
    first = ask(server, f"remember {SECRET}")
    assert first["choices"][0]["message"]["content"] == ANSWER_SECRET
    wait_for_spare(server)

    second = ask(server, "hello", model="claude-max-haiku")
    assert meta(second)["process"] == "recycled" and meta(second)["continued"] == "new"
    assert meta(second)["session_id"] != meta(first)["session_id"]
    assert meta(second)["billing"]["verified"] is True  # by the process's earlier rate_limit_event
    later = real_cli.message_requests[1]
    assert SECRET not in json.dumps(later.body) and ANSWER_SECRET not in json.dumps(later.body)
    assert SECRET not in json.dumps(later.headers)
    assert "local-command" not in json.dumps(later.body) and "/clear" not in json.dumps(later.body)
    assert later.body is not None and later.body["model"] == "claude-haiku-5-5"  # set_model
    assert later.header("X-Claude-Code-Session-Id") == meta(second)["session_id"]

    # Byte for byte what a process started for it sends (the same prompt on a server that never recycles).
    fresh_server = serve("--pool-size", "1", "--live-sessions", "0", "--no-recycle")
    fresh = ask(fresh_server, "hello", model="claude-max-haiku")
    assert meta(fresh)["process"] in ("warm", "cold")
    assert upstream(real_cli.message_requests[2]) == upstream(later)

    # The first conversation continues from its own transcript, without the second one.
    history = [
        {"role": "user", "content": f"remember {SECRET}"},
        {"role": "assistant", "content": ANSWER_SECRET},
        {"role": "user", "content": "and then?"},
    ]
    third = ask(server, messages=history)
    assert meta(third)["continued"] == "resumed" and meta(third)["session_id"] == meta(first)["session_id"]
    resumed = json.dumps(real_cli.message_requests[3].body["messages"])  # type: ignore[index]
    assert SECRET in resumed and "hello" not in resumed and "local-command" not in resumed


def test_callers_never_share_a_process_at_once(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    server = serve("--pool-size", "2", "--live-sessions", "0", "--max-concurrency", "8")
    ask(server, "priming")
    wait_for_spare(server)

    # A is held in the middle of its answer; B, asked meanwhile, gets another process and finishes first.
    gate = threading.Event()
    real_cli.enqueue(Reply(text="held for A", gate=gate, gate_timeout=60))
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(ask, server, "message of A")
        deadline = time.monotonic() + 30
        while not any("message of A" in json.dumps(r.body) for r in real_cli.message_requests):
            assert time.monotonic() < deadline and not held.done(), "A never reached the API"
            time.sleep(0.02)
        b = ask(server, "message of B")
        assert not held.done()
        gate.set()
        a = held.result(timeout=60)
    assert a["choices"][0]["message"]["content"] == "held for A"
    assert meta(a)["session_id"] != meta(b)["session_id"]

    # Many at once, in waves, so that processes are recycled between them: every upstream request carries
    # its own caller's message and nothing else.
    answers = []
    with ThreadPoolExecutor(6) as pool:
        for wave in range(3):
            answers += pool.map(ask, [server] * 6, [f"parallel {wave}-{n}" for n in range(6)])
    assert any(meta(x)["process"] == "recycled" for x in answers), [meta(x)["process"] for x in answers]
    assert len({meta(x)["session_id"] for x in answers}) == len(answers)
    for request in real_cli.message_requests:
        users = [m for m in (request.body or {})["messages"] if m["role"] == "user"]
        text = json.dumps(users)
        assert len(users) == 1, text
        assert len([w for w in ("priming", "message of", "parallel") if w in text]) == 1, text
        assert text.count("parallel") <= 1 and text.count("message of") <= 1, text


def test_processes_are_recycled_within_a_caller_only(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    server = serve("--pool-size", "2", "--live-sessions", "0")
    ask(server, "alice's", key="alice-key-0123456789")
    wait_for_spare(server)
    bob = ask(server, "bob's", key="bob-key-0123456789")
    assert meta(bob)["process"] in ("warm", "cold")
    alice = ask(server, "alice's second", key="alice-key-0123456789")
    assert meta(alice)["process"] == "recycled"


def test_no_recycle_keeps_every_process_to_one_conversation(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    server = serve("--pool-size", "1", "--live-sessions", "0", "--no-recycle")
    kinds = [meta(ask(server, f"conversation {n}"))["process"] for n in range(3)]
    assert "recycled" not in kinds
    assert all("local-command" not in json.dumps(r.body) for r in real_cli.message_requests)
    assert health(server)["recycled"]["ready"] == 0


def test_a_process_is_retired_after_max_conversations(
    serve: Callable[..., Server], login: Path, real_cli: FakeAnthropicAPI
) -> None:
    server = serve("--pool-size", "1", "--live-sessions", "0", "--max-conversations", "2")
    ask(server, "one")
    wait_for_spare(server)
    assert meta(ask(server, "two"))["process"] == "recycled"
    deadline = time.monotonic() + 20
    while health(server)["recycled"].get("retired", 0) < 1:
        assert time.monotonic() < deadline, health(server)
        time.sleep(0.05)
    assert meta(ask(server, "three"))["process"] in ("warm", "cold")
