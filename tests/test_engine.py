"""Unit tests of the engine's pure parts: the turn state machine, the control dispatcher, tool names,
seeded sessions, the continuation plan, llm messages in neutral terms, and the error tree."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import llm
import pytest
from llm.parts import Message, TextPart, ToolCallPart, ToolResultPart

from llm_claude_max import conversation, errors, guard, paths
from llm_claude_max.content import Turn, text_block
from llm_claude_max.errors import InvalidRequest, PaidUsageRefused, ProtocolError
from llm_claude_max.request import TurnRequest
from llm_claude_max.runner import seed
from llm_claude_max.runner.command import CommandSpec, SystemPlacement
from llm_claude_max.runner.control import Dispatcher
from llm_claude_max.runner.pool import Held, Pool
from llm_claude_max.runner.protocol import ControlRequest, parse_line
from llm_claude_max.runner.turn import (
    UNVERIFIED,
    ClaudeToolRan,
    Deferred,
    Done,
    Notice,
    Text,
    ToolCallArgs,
    ToolCallStarted,
    TurnState,
)
from llm_claude_max.tools import NAME_LIMIT, PREFIX, ToolCall, ToolNames, ToolSpec

from . import fake_claude as fc

WEATHER = ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})
SUBSCRIPTION = guard.RouteReport(guard.Route.SUBSCRIPTION, "claude.ai login", plan="max")


def events(*lines: dict[str, Any]) -> list[Any]:
    return [parse_line(json.dumps(line)) for line in lines]


def run(state: TurnState, *lines: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for event in events(*lines):
        out.extend(state.feed(event))
    return out


def state(**kwargs: Any) -> TurnState:
    kwargs.setdefault("names", ToolNames([WEATHER]))
    return TurnState(route=SUBSCRIPTION, policy=guard.Policy(), **kwargs)


# -- the turn state machine ----------------------------------------------------------------------------


def test_text_streams_and_the_turn_ends_done() -> None:
    out = run(
        state(), fc.init(), fc.delta("Hel"), fc.delta("lo"), fc.assistant("Hello"), fc.rate_limit(), fc.result("Hello")
    )
    assert [e for e in out if isinstance(e, Text)] == [Text("Hel"), Text("lo")]
    done = out[-1]
    assert isinstance(done, Done) and done.outcome.text == "Hello" and done.outcome.verified


def test_the_callers_tool_calls_stream_and_the_turn_ends_deferred() -> None:
    api_name = PREFIX + "get_weather"
    out = run(
        state(),
        fc.init(),
        fc.tool_start(1, "toolu_1", api_name),
        fc.tool_delta(1, '{"city":'),
        fc.tool_delta(1, ' "Paris"}'),
        fc.tool_use("toolu_1", api_name, {"city": "Paris"}),
        fc.tool_use("toolu_2", api_name, {"city": "Oslo"}, message_id="msg_1"),
        fc.rate_limit(),
        fc.result("", stop_reason="tool_deferred"),
    )
    assert out[:3] == [
        ToolCallStarted("toolu_1", "get_weather"),
        ToolCallArgs("toolu_1", '{"city":'),
        ToolCallArgs("toolu_1", ' "Paris"}'),
    ]
    # A call that was not streamed (the CLI's non-streaming fallback) is announced whole.
    assert out[3:5] == [ToolCallStarted("toolu_2", "get_weather"), ToolCallArgs("toolu_2", '{"city": "Oslo"}')]
    deferred = out[-1]
    assert isinstance(deferred, Deferred)
    assert deferred.calls == (
        ToolCall("toolu_1", "get_weather", {"city": "Paris"}),
        ToolCall("toolu_2", "get_weather", {"city": "Oslo"}),
    )


def test_a_deferred_result_without_calls_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        run(state(), fc.init(), fc.rate_limit(), fc.result("", stop_reason="tool_deferred"))


def test_a_resumed_session_reports_its_deferred_call_only_in_the_result() -> None:
    result = fc.result("", stop_reason="tool_deferred")
    result["deferred_tool_use"] = {"id": "toolu_9", "name": PREFIX + "get_weather", "input": {"city": "Rome"}}
    out = run(state(redefer=True), result)
    assert out == [Deferred((ToolCall("toolu_9", "get_weather", {"city": "Rome"}),), out[-1].outcome)]


def test_claude_codes_own_tool_is_reported_only_when_it_ran() -> None:
    out = run(
        state(),
        fc.init(),
        fc.tool_use("toolu_r", "Read", {"file_path": "/x"}),
        fc.tool_result_event("toolu_r", "No such tool available: Read", is_error=True),
        fc.tool_use("toolu_g", "Grep", {"pattern": "a"}),
        fc.tool_result_event("toolu_g", "found"),
        fc.rate_limit(),
        fc.result("ok"),
    )
    ran = [e for e in out if isinstance(e, ClaudeToolRan)]
    assert ran == [
        ClaudeToolRan("Read", {"file_path": "/x"}, "No such tool available: Read"),
        ClaudeToolRan("Grep", {"pattern": "a"}, None),
    ]


def test_verification_is_per_process() -> None:
    unverified = run(state(), fc.init(), fc.delta("a"), fc.result("a"))
    assert Notice(UNVERIFIED) in unverified
    # The CLI sends one rate_limit_event per process: a later step of a verified process stays verified.
    later = run(state(verified=True), fc.init(), fc.delta("b"), fc.result("b"))
    assert Notice(UNVERIFIED) not in later and later[-1].outcome.verified


def test_overage_stops_the_turn_and_keeps_the_paid_text() -> None:
    with pytest.raises(PaidUsageRefused) as info:
        run(state(), fc.init(), fc.delta("paid answer"), fc.rate_limit(overage=True))
    assert info.value.partial_text == "paid answer"


# -- the control dispatcher ----------------------------------------------------------------------------


def control(subtype: str, **request: Any) -> ControlRequest:
    return ControlRequest("r1", subtype, {"subtype": subtype, **request})


def answer(dispatcher: Dispatcher, request: ControlRequest) -> dict[str, Any]:
    return json.loads(dispatcher.answer(request))["response"]  # type: ignore[no-any-return]


def test_the_callers_tools_are_deferred_and_claude_codes_are_left_to_its_rules() -> None:
    dispatcher = Dispatcher([WEATHER])
    ours = control("hook_callback", input={"hook_event_name": "PreToolUse", "tool_name": PREFIX + "get_weather"})
    decision = answer(dispatcher, ours)["response"]["hookSpecificOutput"]
    assert decision["permissionDecision"] == "defer"
    for tool in ("Read", "StructuredOutput"):
        theirs = control("hook_callback", input={"hook_event_name": "PreToolUse", "tool_name": tool})
        assert answer(dispatcher, theirs) == {"subtype": "success", "request_id": "r1", "response": {}}


def mcp(dispatcher: Dispatcher, message: dict[str, Any], server: str = "tools") -> dict[str, Any]:
    return answer(dispatcher, control("mcp_message", server_name=server, message=message))["response"]["mcp_response"]  # type: ignore[no-any-return]


def test_the_mcp_server_lists_the_callers_tools_and_never_runs_one() -> None:
    dispatcher = Dispatcher([WEATHER, ToolSpec("web.search", "Search")])
    init = mcp(dispatcher, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "v"}})
    assert init["result"]["protocolVersion"] == "v" and init["result"]["capabilities"] == {"tools": {}}
    assert mcp(dispatcher, {"jsonrpc": "2.0", "method": "notifications/initialized"}) == {
        "jsonrpc": "2.0",
        "result": {},
    }
    listed = mcp(dispatcher, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})["result"]["tools"]
    assert [t["name"] for t in listed] == ["get_weather", dispatcher.names.exposed["web.search"]]
    assert listed[0]["inputSchema"] == WEATHER.input_schema and listed[0]["description"] == "Weather for a city"
    called = mcp(dispatcher, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_weather"}})
    assert called["result"]["isError"] is True
    assert mcp(dispatcher, {"jsonrpc": "2.0", "id": 3, "method": "resources/list"})["error"]["code"] == -32601
    assert (
        mcp(dispatcher, {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, server="other")["error"]["code"] == -32601
    )


def test_other_control_requests_are_answered_never_ignored() -> None:
    dispatcher = Dispatcher()
    assert answer(dispatcher, control("can_use_tool", tool_name="Bash"))["response"]["behavior"] == "deny"
    unknown = answer(dispatcher, control("elicitation"))
    assert unknown["subtype"] == "error" and "elicitation" in unknown["error"]


# -- tool names ------------------------------------------------------------------------------------------


def test_tool_names_the_api_or_the_cli_would_change_are_mapped_back_exactly() -> None:
    long = "x" * 80
    names = ToolNames([ToolSpec("get-weather.v2"), ToolSpec(long), ToolSpec("get-weather_v2"), ToolSpec("ok_name")])
    for caller in ("get-weather.v2", long, "get-weather_v2", "ok_name"):
        api = names.api_name(caller)
        assert len(api) <= NAME_LIMIT and api.replace("-", "").replace("_", "").isalnum()
        assert names.from_api(api) == caller
    assert names.api_name("ok_name") == PREFIX + "ok_name"
    assert names.from_api("Read") is None
    with pytest.raises(InvalidRequest, match="Two tools"):
        ToolNames([ToolSpec("a"), ToolSpec("a")])


# -- seeded sessions -------------------------------------------------------------------------------------


def call(id: str, city: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": city}}


def result(id: str, text: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id, "content": text}


def test_several_pending_calls_become_consecutive_single_calls() -> None:
    assistant = Turn("assistant", (text_block("Checking."), call("t1", "Paris"), call("t2", "Oslo")))
    turns, last = seed.sequential(assistant, [result("t2", "cold"), result("t1", "warm")])
    assert [t.role for t in turns] == ["assistant", "user", "assistant"]
    assert turns[0].blocks == (text_block("Checking."), call("t1", "Paris"))
    assert turns[1].blocks == (result("t1", "warm"),)
    assert turns[2].blocks == (call("t2", "Oslo"),)
    assert last == result("t2", "cold")


def test_a_seeded_session_is_the_clis_transcript_format(home: Path) -> None:
    cwd = paths.workspace()
    names = ToolNames([WEATHER])
    turns = [Turn("user", (text_block("Weather?"),)), Turn("assistant", (call("t1", "Paris"),))]
    session_id = seed.write(turns, cwd=cwd, names=names, pending=["t1"])
    lines = [json.loads(line) for line in paths.transcript_path(session_id, cwd).read_text().splitlines()]
    assert [line["type"] for line in lines] == ["user", "assistant", "attachment"]
    assert lines[0]["parentUuid"] is None and lines[1]["parentUuid"] == lines[0]["uuid"]
    assert lines[1]["message"]["content"][0]["name"] == PREFIX + "get_weather"
    assert lines[2]["attachment"]["type"] == "hook_deferred_tool" and lines[2]["attachment"]["toolUseID"] == "t1"
    assert {line["sessionId"] for line in lines} == {session_id}


# -- the continuation plan -------------------------------------------------------------------------------


def request(history: tuple[Turn, ...] = (), new: tuple[Any, ...] = (text_block("hi"),), **kwargs: Any) -> TurnRequest:
    return TurnRequest(CommandSpec(caller_tools=(WEATHER,)), history, new, **kwargs)


CLI = SimpleNamespace(env={})


def plans(pool: Pool, req: TurnRequest) -> list[str]:
    return [p.continued for p in pool._plans(req, CLI)]  # type: ignore[arg-type]


def test_plans_for_a_user_message(home: Path) -> None:
    pool = Pool()
    assert plans(pool, request()) == ["new"]
    history = (Turn("user", (text_block("a"),)), Turn("assistant", (text_block("b"),)))
    assert plans(pool, request(history, session="5e55e55e-0000-4000-8000-000000000001")) == ["seeded", "replayed"]
    transcript = paths.transcript_path("5e55e55e-0000-4000-8000-000000000001", paths.workspace())
    transcript.parent.mkdir(parents=True)
    transcript.write_text("{}\n")
    assert plans(pool, request(history, session="5e55e55e-0000-4000-8000-000000000001")) == [
        "resumed",
        "seeded",
        "replayed",
    ]


def test_a_system_prompt_in_the_user_turn_goes_into_a_new_conversation(home: Path) -> None:
    spec = CommandSpec(placement=SystemPlacement.USER)
    req = TurnRequest(spec, (), (text_block("hi"),), system="Be terse.")
    plan = next(Pool()._plans(req, CLI))  # type: ignore[arg-type]
    assert plan.content is not None and "<system_instructions>\nBe terse." in plan.content[0]["text"]


def test_plans_for_tool_results(home: Path) -> None:
    history = (Turn("user", (text_block("Weather?"),)), Turn("assistant", (call("t1", "Paris"),)))
    req = request(history, new=(result("t1", "warm"),))
    pool = Pool()
    assert plans(pool, req) == ["seeded", "replayed"]
    alive = SimpleNamespace(alive=True, spec=req.spec)
    from llm_claude_max.request import spec_key

    pool.paused[("", "t1")] = Held(alive, spec_key(req.spec), "", 0.0)  # type: ignore[arg-type]
    assert plans(pool, req) == ["paused", "seeded", "replayed"]
    assert not pool.paused  # taken: no other request can write to it
    pool.paused[("other caller", "t1")] = Held(alive, spec_key(req.spec), "other caller", 0.0)  # type: ignore[arg-type]
    assert plans(pool, req) == ["seeded", "replayed"]  # never another caller's process
    with pytest.raises(InvalidRequest, match="answer no tool call"):
        plans(pool, request((Turn("user", (text_block("hi"),)),), new=(result("t1", "x"),)))


# -- llm messages in neutral terms ------------------------------------------------------------------------


def test_split_a_tool_chain() -> None:
    messages = [
        llm.system("Sys"),
        llm.user("Weather in Paris?"),
        Message(
            role="assistant",
            parts=[
                TextPart(text="Checking."),
                ToolCallPart(
                    name="get_weather",
                    arguments={"city": "Paris"},
                    tool_call_id="t1",
                    provider_metadata={"claude_max": {"session_id": "S"}},
                ),
            ],
        ),
        Message(role="tool", parts=[ToolResultPart(name="get_weather", output="warm", tool_call_id="t1")]),
    ]
    split = conversation.split(messages)
    assert split.system == "Sys" and split.session == "S"
    assert [t.role for t in split.history] == ["user", "assistant"]
    assert split.history[1].blocks == (text_block("Checking."), call("t1", "Paris"))
    assert split.new == (result("t1", "warm"),)


def test_a_tool_that_raised_is_an_error_result() -> None:
    part = ToolResultPart(name="f", output="", tool_call_id="t1", exception="ValueError: bad")
    block = conversation.tool_result_block(part)
    assert block["is_error"] is True and "ValueError: bad" in block["content"]


def test_split_refuses_an_empty_prompt() -> None:
    with pytest.raises(InvalidRequest, match=r"The prompt is empty\."):
        conversation.split([llm.user("")])


def test_attachments_keep_their_place_and_unreadable_ones_are_invalid(tmp_path: Path) -> None:
    image = llm.Attachment(type="image/png", content=b"\x89PNG fake")
    split = conversation.split([llm.user("look", image)])
    assert [b["type"] for b in split.new] == ["text", "image"]
    missing = llm.Attachment(type="image/png", path=str(tmp_path / "nope.png"))
    with pytest.raises(InvalidRequest, match=r"nope\.png"):
        conversation.split([llm.user("look", missing)])


# -- the error tree --------------------------------------------------------------------------------------


def test_every_error_class_is_registered_by_its_code() -> None:
    for cls in errors.ALL:
        assert errors.by_code(cls.code) is cls
    assert errors.by_code("no such code") is errors.ClaudeMaxError
    assert len({cls.code for cls in errors.ALL}) == len(errors.ALL)
    assert issubclass(errors.ServerBusy, errors.NotSent) and issubclass(errors.Cancelled, errors.TurnFailed)
    assert errors.APIError("x", status=529).http_status == 503 and errors.APIError("x", status=500).http_status == 502
