"""Recycling against the scripted fake CLI: a process that does not reset exactly as the real CLI does is
retired (ended, never reused), and the reset's ``system/init`` meets the same billing check as a turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llm_claude_max import guard
from llm_claude_max.content import text_block
from llm_claude_max.request import TurnRequest
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.runner.command import CommandSpec
from llm_claude_max.runner.pool import Pool, Start
from llm_claude_max.runner.recycle import Recycling
from llm_claude_max.runner.session import Done, Timeouts

from . import fake_claude as fc
from .conftest import FakeCLI

REQUEST = TurnRequest(CommandSpec(), (), (text_block("hi"),))


async def one(pool: Pool) -> tuple[Start, Done]:
    events: list[Any] = []
    async for event in pool.run(REQUEST, ClaudeCLI(), policy=guard.Policy(), timeouts=Timeouts(start=5)):
        events.append(event)
    assert isinstance(events[0], Start) and isinstance(events[-1], Done)
    return events[0], events[-1]


async def settle(pool: Pool) -> None:
    await asyncio.gather(*pool.recycler._tasks)


def clears(fake_cli: FakeCLI) -> list[dict[str, Any]]:
    return [line for line in fake_cli.stdin_lines() if line.get("message", {}).get("content") == "/clear"]


async def test_a_process_that_answers_clear_like_a_prompt_is_retired(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(turns=[fc.answer("one"), fc.answer("a /clear that went upstream")])
    pool = Pool(recycling=Recycling(spares=1, total=1))
    try:
        first, _ = await one(pool)
        await settle(pool)
        assert pool.recycler.stats["reset_failures"] == 1 and not pool.recycler.ready
        second, _ = await one(pool)
        assert (first.process, second.process) == ("cold", "cold")
        assert len(fake_cli.invocations()) == 2
        [clear] = clears(fake_cli)  # sent once, on purpose, with our uuid
        assert clear["type"] == "user" and clear["uuid"]
    finally:
        await pool.close()


async def test_an_api_key_at_reset_is_refused_and_the_process_retired(
    fake_cli: FakeCLI, caplog: pytest.LogCaptureFixture
) -> None:
    reset = [
        {"emit": {"type": "conversation_reset", "user_message_uuid": "x", "new_conversation_id": "y"}},
        {"emit": fc.init("5e55e55e-0000-4000-8000-000000000002", api_key_source="ANTHROPIC_API_KEY")},
        {"emit": fc.result("", session_id="5e55e55e-0000-4000-8000-000000000002", num_turns=0)},
    ]
    fake_cli.scenario(turns=[fc.answer("one"), reset])
    pool = Pool(recycling=Recycling(spares=1, total=1))
    try:
        await one(pool)
        await settle(pool)
        assert pool.recycler.stats["reset_failures"] == 1 and not pool.recycler.ready
        assert not pool.sessions  # ended
        assert "apiKeySource='ANTHROPIC_API_KEY'" in caplog.text  # the billing check of every system/init
    finally:
        await pool.close()


async def test_without_recycling_nothing_is_sent_after_the_answer(fake_cli: FakeCLI) -> None:
    pool = Pool()
    try:
        await one(pool)
        await one(pool)
    finally:
        await pool.close()
    assert not clears(fake_cli)
    assert len(fake_cli.invocations()) == 2
    controls = [line["request"]["subtype"] for line in fake_cli.stdin_lines() if line["type"] == "control_request"]
    assert controls == ["initialize", "initialize"]
