"""The runner against the scripted fake CLI: exact event sequences, faults, watchdogs and cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest

from llm_claude_max import guard
from llm_claude_max.errors import (
    APIError,
    BillingRouteRefused,
    Cancelled,
    ClaudeTimeout,
    NotLoggedIn,
    PaidUsageRefused,
    ProtocolError,
    SessionNotFound,
    StructuredOutputMissing,
    UsageLimitReached,
)
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.runner.command import CommandSpec
from llm_claude_max.runner.session import DEFAULT_TIMEOUTS, Done, Notice, Reasoning, Text, Timeouts, TurnEvent

from . import fake_claude as fc
from .conftest import ORPHAN_MARKER, FakeCLI

POLICY = guard.Policy()


async def run(
    content: Any = "hi",
    *,
    policy: guard.Policy = POLICY,
    spec: CommandSpec | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    structured: bool = False,
) -> list[TurnEvent]:
    events = []
    async for event in ClaudeCLI().prompt(
        spec or CommandSpec(), content, policy=policy, timeouts=timeouts, structured=structured
    ):
        events.append(event)
    return events


def texts(events: list[TurnEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Text))


async def test_streams_text_and_reports_outcome(fake_cli: FakeCLI) -> None:
    events = await run()
    assert texts(events) == "Hello there."
    assert [e.text for e in events if isinstance(e, Text)] == ["Hello ", "there."]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.outcome.session_id == fc.SESSION
    assert done.outcome.verified
    assert done.outcome.usage["input_tokens"] == 12
    assert done.outcome.model == "claude-opus-5-5"


async def test_initialize_is_sent_before_the_prompt(fake_cli: FakeCLI) -> None:
    await run("the prompt")
    lines = fake_cli.stdin_lines()
    assert lines[0]["request"]["subtype"] == "initialize"
    assert lines[1] == {
        "type": "user",
        "message": {"role": "user", "content": "the prompt"},
        "parent_tool_use_id": None,
        "session_id": "",
    }
    argv = fake_cli.invocations()[0]["argv"]
    assert "the prompt" not in " ".join(argv)


@pytest.mark.parametrize(
    ("account", "route"),
    [
        ({"tokenSource": "none", "apiKeySource": "ANTHROPIC_API_KEY", "apiProvider": "firstParty"}, "api_key"),
        ({"tokenSource": "ANTHROPIC_AUTH_TOKEN", "apiProvider": "firstParty"}, "gateway_token"),
        (
            {"tokenSource": "apiKeyHelper", "apiKeySource": "apiKeyHelper", "apiProvider": "firstParty"},
            "api_key_helper",
        ),
        ({"apiProvider": "bedrock"}, "cloud_provider"),
    ],
)
async def test_paid_route_is_refused_before_the_prompt_is_written(
    fake_cli: FakeCLI, account: dict[str, Any], route: str
) -> None:
    fake_cli.scenario(account=account)
    with pytest.raises(BillingRouteRefused) as info:
        await run("secret prompt")
    assert info.value.route == route
    assert "Nothing was sent" in str(info.value)
    assert all(line.get("type") != "user" for line in fake_cli.stdin_lines())


async def test_not_logged_in_is_refused_before_the_prompt(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(account={"tokenSource": "none", "apiProvider": "firstParty"})
    with pytest.raises(NotLoggedIn, match="/login"):
        await run()
    assert all(line.get("type") != "user" for line in fake_cli.stdin_lines())


async def test_api_key_route_allowed_with_opt_in_and_warned(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        account={"tokenSource": "none", "apiKeySource": "ANTHROPIC_API_KEY", "apiProvider": "firstParty"},
        steps=[
            {"emit": fc.init(api_key_source="ANTHROPIC_API_KEY")},
            {"emit": fc.delta("ok")},
            {"emit": fc.result("ok")},
        ],
    )
    events = await run(policy=guard.Policy(allow_api_billing=True))
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("API key from ANTHROPIC_API_KEY" in n for n in notices)
    done = events[-1]
    assert isinstance(done, Done) and not done.outcome.verified


async def test_init_with_api_key_source_is_killed(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init(api_key_source="ANTHROPIC_API_KEY")}, {"sleep": 30}])
    start = time.monotonic()
    with pytest.raises(BillingRouteRefused, match="apiKeySource"):
        await run()
    assert time.monotonic() - start < 10


async def test_missing_rate_limit_event_is_flagged_unverified(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"emit": fc.delta("hi")}, {"emit": fc.result("hi")}])
    events = await run()
    done = events[-1]
    assert isinstance(done, Done)
    assert not done.outcome.verified
    assert any("unverified" in w for w in done.outcome.warnings)
    assert any(isinstance(e, Notice) and "unverified" in e.message for e in events)


async def test_overage_stops_the_cli_and_locks_further_prompts(fake_cli: FakeCLI) -> None:
    reset = int(time.time()) + 3600
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.delta("paid answer")},
            {"emit": fc.rate_limit("rejected", overage=True, resets_at=reset, kind="five_hour")},
            {"sleep": 30},
            {"emit": fc.result("paid answer")},
        ]
    )
    start = time.monotonic()
    with pytest.raises(PaidUsageRefused) as info:
        await run()
    assert time.monotonic() - start < 10
    assert info.value.partial_text == "paid answer"
    assert guard.OverageLock().read() is not None
    # The next prompt is refused before anything is written to a CLI.
    calls = len(fake_cli.invocations())
    with pytest.raises(PaidUsageRefused, match="Nothing was sent"):
        await run()
    assert len(fake_cli.invocations()) == calls
    # ... unless the user opts in.
    fake_cli.scenario()
    events = await run(policy=guard.Policy(allow_overage=True))
    assert texts(events) == "Hello there."


async def test_overage_with_opt_in_warns(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.delta("x")},
            {"emit": fc.rate_limit("rejected", overage=True)},
            {"emit": fc.result("x")},
        ]
    )
    events = await run(policy=guard.Policy(allow_overage=True))
    assert any(isinstance(e, Notice) and "extra usage" in e.message for e in events)


async def test_overage_lock_expires_at_reset(fake_cli: FakeCLI) -> None:
    lock = guard.OverageLock()
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text(json.dumps({"until": int(time.time()) - 1, "limit": "five_hour"}))
    assert texts(await run()) == "Hello there."
    assert not lock.path.exists()


async def test_usage_limit_names_the_window_and_reset(fake_cli: FakeCLI) -> None:
    reset = int(time.time()) + 7200
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.rate_limit("rejected", resets_at=reset, kind="five_hour")},
            {"emit": fc.result("You've hit your 5-hour limit · resets 2:46pm (UTC)", is_error=True, status=429)},
            {"exit": 1},
        ]
    )
    with pytest.raises(UsageLimitReached) as info:
        await run()
    assert "5-hour limit reached, resets" in str(info.value)
    assert info.value.resets_at is not None and int(info.value.resets_at.timestamp()) == reset
    assert info.value.limit == "five_hour"


async def test_error_result_with_success_subtype_is_an_error(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.api_retry(1)},
            {"emit": fc.api_retry(2)},
            {"emit": fc.result("API Error: Repeated 529 Overloaded errors.", is_error=True, status=529)},
            {"exit": 1},
        ]
    )
    events: list[TurnEvent] = []
    with pytest.raises(APIError) as info:
        async for event in ClaudeCLI().prompt(CommandSpec(), "hi", policy=POLICY):
            events.append(event)
    assert info.value.status == 529
    assert "529 overloaded" in str(info.value)
    assert [e.message for e in events if isinstance(e, Notice)] == [
        "Claude API overloaded, retry 1/3 in 1.2 s",
        "Claude API overloaded, retry 2/3 in 1.2 s",
    ]


async def test_not_logged_in_result(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.result("Not logged in · Please run /login", is_error=True)},
            {"exit": 1},
        ]
    )
    with pytest.raises(NotLoggedIn):
        await run()


async def test_third_party_extra_usage_400_is_paid_usage_refused(fake_cli: FakeCLI) -> None:
    text = "API Error: 400 Third-party apps now draw from your extra usage, not your plan limits."
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"emit": fc.result(text, is_error=True, status=400)}, {"exit": 1}])
    with pytest.raises(PaidUsageRefused, match="Third-party apps"):
        await run()


async def test_malformed_line_is_a_protocol_error(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"raw": "this is not json"}, {"sleep": 30}])
    with pytest.raises(ProtocolError, match="not stream-json"):
        await run()


async def test_unknown_event_types_are_tolerated(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": {"type": "brand_new_event", "x": 1}},
            {"emit": {"type": "system", "subtype": "novel"}},
            *fc.answer("ok")[1:],
        ]
    )
    assert texts(await run()) == "ok"


async def test_exit_without_result_is_an_error_with_stderr(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"stderr": "something broke inside"}, {"exit": 3}])
    with pytest.raises(ProtocolError) as info:
        await run()
    assert "code 3" in str(info.value)
    assert "something broke inside" in str(info.value)


async def test_exit_zero_without_result_after_interrupt_is_cancelled(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"signal_self": "INT"}])
    with pytest.raises(Cancelled):
        await run()


async def test_exit_zero_without_result_is_a_protocol_error(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"exit": 0}])
    with pytest.raises(ProtocolError, match="without a result"):
        await run()


async def test_resume_of_unknown_session(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {
                "emit": fc.result(
                    "",
                    is_error=True,
                    subtype="error_during_execution",
                    errors=["No conversation found with session ID: x"],
                )
            },
            {"exit": 1},
        ]
    )
    with pytest.raises(SessionNotFound):
        await run(spec=CommandSpec(resume="11111111-2222-3333-4444-555555555555"))


async def test_schema_output_is_the_structured_json(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.delta("preamble")},
            {"emit": fc.rate_limit()},
            {"emit": fc.result("{}", structured={"name": "Ada"})},
        ]
    )
    events = await run(structured=True, spec=CommandSpec(json_schema={"type": "object"}))
    assert texts(events) == '{"name": "Ada"}'


async def test_schema_without_structured_output_is_an_error(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.delta("I refuse")},
            {"emit": fc.rate_limit()},
            {"emit": fc.result("I refuse")},
        ]
    )
    with pytest.raises(StructuredOutputMissing, match="I refuse"):
        await run(structured=True, spec=CommandSpec(json_schema={"type": "object"}))


async def test_non_streaming_fallback_emits_the_final_text(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.assistant("Whole answer.", "msg_2")},
            {"emit": fc.rate_limit()},
            {"emit": fc.result("Whole answer.")},
        ]
    )
    assert texts(await run()) == "Whole answer."


async def test_interrupted_stream_then_fallback_is_announced(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.delta("Partial ", "msg_1")},
            {"emit": fc.api_retry(1, error="unknown", status=None)},
            {"emit": fc.assistant("Complete answer.", "msg_2")},
            {"emit": fc.rate_limit()},
            {"emit": fc.result("Complete answer.")},
        ]
    )
    events = await run()
    assert texts(events) == "Partial Complete answer."
    assert any(isinstance(e, Notice) and "interrupted" in e.message for e in events)


async def test_streamed_text_is_not_repeated_by_the_assistant_event(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=fc.answer("one two three"))
    assert texts(await run()) == "one two three"


async def test_thinking_becomes_reasoning(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"emit": fc.thinking("hmm")}, *fc.answer("ok")[1:]])
    events = await run()
    assert [e.text for e in events if isinstance(e, Reasoning)] == ["hmm"]


async def test_initialize_not_answered_falls_back_to_auth_status(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        initialize="error", auth_status={"loggedIn": True, "authMethod": "api_key", "apiKeySource": "ANTHROPIC_API_KEY"}
    )
    with pytest.raises(BillingRouteRefused):
        await run()
    assert any(inv["argv"][:2] == ["auth", "status"] for inv in fake_cli.invocations())


async def test_initialize_error_with_subscription_auth_status_proceeds(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        initialize="error", auth_status={"loggedIn": True, "authMethod": "claude.ai", "subscriptionType": "max"}
    )
    assert texts(await run()) == "Hello there."


async def test_start_timeout_kills_a_silent_cli(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(initialize="silent")
    with pytest.raises(ClaudeTimeout, match="did not start within 1 s"):
        await run(timeouts=Timeouts(start=1))


async def test_idle_timeout_kills_a_stalled_cli(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"emit": fc.delta("first")}, {"hang": True}])
    start = time.monotonic()
    with pytest.raises(ClaudeTimeout, match="sent nothing for 1 s"):
        await run(timeouts=Timeouts(idle=1))
    assert time.monotonic() - start < 8


async def test_total_timeout_caps_a_chatty_cli(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[{"emit": fc.init()}, *[x for _ in range(100) for x in ({"emit": fc.delta("x")}, {"sleep": 0.1})]]
    )
    with pytest.raises(ClaudeTimeout, match=r"within 1\.5 s"):
        await run(timeouts=Timeouts(total=1.5))


async def test_kill_reaches_the_whole_process_group(fake_cli: FakeCLI) -> None:
    # The CLI starts a long-lived helper; a timeout must kill it too (the orphan check verifies).
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"spawn": ["sleep", ORPHAN_MARKER]}, {"hang": True}])
    with pytest.raises(ClaudeTimeout):
        await run(timeouts=Timeouts(idle=1))


async def _prompt_streaming() -> asyncio.Task[None]:
    """A prompt consumed in its own task, returned once the first text has arrived."""
    started = asyncio.Event()

    async def consume() -> None:
        async for event in ClaudeCLI().prompt(CommandSpec(), "hi", policy=POLICY):
            if isinstance(event, Text):
                started.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(started.wait(), 30)
    except BaseException:
        task.cancel()  # a dropped task would strand the CLI
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    return task


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_the_task_kills_the_cli(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(
        steps=[{"emit": fc.init()}, {"emit": fc.delta("x")}, {"spawn": ["sleep", ORPHAN_MARKER]}, {"hang": True}]
    )
    await _cancel(await _prompt_streaming())


async def test_cancelling_kills_a_cli_that_ignores_sigterm(fake_cli: FakeCLI) -> None:
    # The kill escalates to SIGKILL after its grace period, even inside a task that is being cancelled
    # (on Python 3.11.0-3.11.2 an expiring asyncio.timeout there raises CancelledError, not TimeoutError).
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"ignore_sigterm": True},
            {"spawn": ["sleep", ORPHAN_MARKER]},
            {"emit": fc.delta("x")},
            {"hang": True},
        ]
    )
    await _cancel(await _prompt_streaming())


async def test_a_second_cancellation_during_the_kill_still_kills_the_cli(fake_cli: FakeCLI) -> None:
    # Impatient callers cancel twice (Ctrl-C, then shutdown); the grace period must not be a way out.
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"ignore_sigterm": True}, {"emit": fc.delta("x")}, {"hang": True}])
    task = await _prompt_streaming()
    try:
        task.cancel()
        await asyncio.sleep(0.5)  # inside the kill's grace period: SIGTERM sent and ignored
        assert not task.done()
    finally:
        await _cancel(task)


async def test_closing_the_iterator_early_kills_the_cli(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"emit": fc.delta("x")}, {"hang": True}])
    stream = ClaudeCLI().prompt(CommandSpec(), "hi", policy=POLICY)
    async for event in stream:
        if isinstance(event, Text):
            break
    await stream.aclose()  # type: ignore[attr-defined]


async def test_a_huge_answer_line_is_read(fake_cli: FakeCLI) -> None:
    big = "x" * (3 * 1024 * 1024)
    fake_cli.scenario(
        steps=[
            {"emit": fc.init()},
            {"emit": fc.assistant(big, "msg_9")},
            {"emit": fc.rate_limit()},
            {"emit": fc.result(big)},
        ]
    )
    assert len(texts(await run())) == len(big)


async def test_missing_cli_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_claude_max.errors import CLINotFound

    monkeypatch.setenv("CLAUDE_MAX_CLI", "/nonexistent/claude")
    with pytest.raises(
        CLINotFound, match=r"^CLAUDE_MAX_CLI is set to /nonexistent/claude, which does not exist"
    ) as info:
        ClaudeCLI()
    assert "unset CLAUDE_MAX_CLI" in str(info.value) and "npm install" not in str(info.value)
    with pytest.raises(CLINotFound, match=r"^The cli option \(-o cli\) is set to /nonexistent/x, which does not exist"):
        ClaudeCLI(cli="/nonexistent/x")
    monkeypatch.delenv("CLAUDE_MAX_CLI")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CLINotFound, match="not on PATH") as info:
        ClaudeCLI()
    assert "npm install -g @anthropic-ai/claude-code" in str(info.value)


# -- the caller's tools --------------------------------------------------------------------------------


async def test_a_deferred_step_pauses_and_takes_the_results(fake_cli: FakeCLI) -> None:
    from llm_claude_max.runner.session import Deferred
    from llm_claude_max.tools import PREFIX, ToolResult, ToolSpec

    name = PREFIX + "lookup"
    fake_cli.scenario(turns=[fc.deferred([("toolu_1", name, {"city": "Paris"})]), fc.answer("Sunny.")])
    spec = CommandSpec(caller_tools=(ToolSpec("lookup", "Weather", {"type": "object"}),))
    async with ClaudeCLI().session(spec, policy=POLICY) as session:
        await session.start()
        first = [e async for e in session.turn("Weather?")]
        deferred = first[-1]
        assert isinstance(deferred, Deferred) and [c.name for c in deferred.calls] == ["lookup"]
        assert session.paused == deferred.calls and session.alive
        with pytest.raises(Exception, match="waiting for the results"):
            await anext(session.turn("something else"))
        second = [e async for e in session.continue_with([ToolResult("toolu_1", "22C")])]
        assert texts(second) == "Sunny." and isinstance(second[-1], Done) and not session.paused
    lines = fake_cli.stdin_lines()
    initialize = lines[0]["request"]
    assert initialize["hooks"]["PreToolUse"][0]["hookCallbackIds"] == ["llm-claude-max-pre-tool-use"]
    hook_answer = next(line for line in lines if line.get("type") == "control_response")
    decision = hook_answer["response"]["response"]["hookSpecificOutput"]["permissionDecision"]
    assert decision == "defer"
    results = [line for line in lines if line.get("type") == "user"][-1]["message"]["content"]
    assert results == [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C"}]
    argv = fake_cli.invocations()[0]["argv"]
    assert any(a.startswith("--mcp-config=") and '"type":"sdk"' in a for a in argv)
