"""Smaller server fixes: the Host check, /health/deep throttled, no CLI stderr for remote callers,
Retry-After from the queue."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from llm_claude_max.errors import PaidUsageRefused, UsageLimitReached
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.server import hosts
from llm_claude_max.server.apis import openai_chat
from llm_claude_max.server.app import AppConfig, create_app
from llm_claude_max.server.engine import Engine, EngineConfig, ServerBusy, TurnTimes

from . import fake_claude as fc
from .conftest import FakeCLI

BODY = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def app(fake_cli: FakeCLI) -> AsyncIterator[Callable[..., Any]]:
    engines: list[Engine] = []
    clients: list[httpx.AsyncClient] = []

    def make(engine_config: EngineConfig | None = None, **config: Any) -> tuple[httpx.AsyncClient, Engine]:
        engine = Engine(ClaudeCLI(), engine_config or EngineConfig(pool_size=0))
        transport = httpx.ASGITransport(app=create_app(engine, AppConfig(**config)))
        client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765")
        engines.append(engine)
        clients.append(client)
        return client, engine

    yield make
    for client in clients:
        await client.aclose()
    for engine in engines:
        await engine.stop()


# -- Host ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8765", True),
        ("localhost", True),
        ("LocalHost:80", True),
        ("localhost.:80", True),
        ("[::1]", True),
        ("[::1]:8765", True),
        ("[::1].evil.example", False),
        ("[::1]:8765.evil.example", False),
        ("localhost:evil", False),
        ("localhost:", False),
        ("localhost:99999", False),
        ("localhost.evil.example", False),
        ("evil.example:127.0.0.1", False),
        ("127.0.0.1.nip.io", False),
        ("::1", False),  # an IPv6 address must be bracketed
        ("", False),
        ("user@localhost", False),
    ],
)
def test_host_parsing(host: str, loopback: bool) -> None:
    assert hosts.is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["[::1].evil.example", "localhost:evil"])
async def test_the_server_refuses_a_disguised_host(app: Callable[..., Any], host: str) -> None:
    client, _ = app()
    response = await client.get("/v1/models", headers={"host": host})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"


# -- /health/deep ------------------------------------------------------------------------------------------


async def test_deep_health_starts_one_probe_per_interval(app: Callable[..., Any], fake_cli: FakeCLI) -> None:
    client, _ = app()
    answers = await asyncio.gather(*(client.get("/health/deep") for _ in range(5)))
    answers.append(await client.get("/health/deep"))
    assert [a.status_code for a in answers] == [200] * 6
    assert len(fake_cli.invocations()) == 1  # one CLI for six callers
    assert all(a.json()["billing"]["route"] == "subscription" for a in answers)
    assert answers[-1].json()["checked_seconds_ago"] >= 0 and "engine" in answers[-1].json()


# -- the CLI's stderr ----------------------------------------------------------------------------------------

CRASH = [{"emit": fc.init()}, {"stderr": "Error at /home/someone/.claude/secret-path"}, {"exit": 3}]


async def test_remote_callers_do_not_get_the_cli_stderr(
    app: Callable[..., Any], fake_cli: FakeCLI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_cli.scenario(steps=CRASH)
    client, _ = app(loopback=False)
    response = await client.post("/v1/chat/completions", json=BODY)
    message = response.json()["error"]["message"]
    assert response.status_code == 502 and "secret-path" not in message and "details in the server log" in message
    assert "secret-path" in caplog.text  # the server's owner still sees it
    streamed = await client.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert "secret-path" not in streamed.text and "cli_crashed" in streamed.text


async def test_local_callers_get_the_cli_stderr(app: Callable[..., Any], fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=CRASH)
    client, _ = app()
    response = await client.post("/v1/chat/completions", json=BODY)
    assert "secret-path" in response.json()["error"]["message"]


# -- Retry-After --------------------------------------------------------------------------------------------


async def test_retry_after_follows_the_queue(app: Callable[..., Any]) -> None:
    client, engine = app(EngineConfig(pool_size=0, max_concurrency=1, queue=0))
    async with engine.slot():
        first = await client.post("/v1/chat/completions", json=BODY)
    assert first.status_code == 429 and first.json()["error"]["code"] == "server_busy"
    held = int(first.headers["retry-after"])
    engine._turns.average = 2.0  # turns measured shorter: a sooner retry
    async with engine.slot():
        second = await client.post("/v1/chat/completions", json=BODY)
    assert int(second.headers["retry-after"]) < held


def test_retry_after_estimates() -> None:
    times = TurnTimes(average=8.0)
    assert times.retry_after(waiting=0, slots=4) == 2
    assert times.retry_after(waiting=15, slots=4) == 32
    times.add(100.0)
    assert times.retry_after(waiting=0, slots=1) == 27
    assert TurnTimes(average=5000).retry_after(waiting=10, slots=1) == 300


def test_retry_after_headers() -> None:
    busy = ServerBusy("busy")
    busy.retry_after = 7
    assert openai_chat.error(busy)[2] == {"Retry-After": "7"}
    assert openai_chat.error(PaidUsageRefused("blocked"))[2] == {"Retry-After": "60"}  # not 59
    soon = dt.datetime.now().astimezone() + dt.timedelta(seconds=90)
    header = int(openai_chat.error(UsageLimitReached("limit", resets_at=soon))[2]["Retry-After"])
    assert 88 <= header <= 90
