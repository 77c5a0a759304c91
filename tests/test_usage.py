"""Usage windows: what the real CLI reports, recorded per account, shown by `claude-max usage`, warned
about in the moment, refused at once by the server, checked by the doctor; the report from llm's logs.db."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import llm
import pytest
import sqlite_utils
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from llm.migrations import migrate

from llm_claude_max import guard, paths
from llm_claude_max.cli import cli
from llm_claude_max.errors import UsageLimitReached
from llm_claude_max.runner.protocol import RateLimit, parse_line
from llm_claude_max.usage import gate, render, report, store, windows

from .fakeapi import FakeAnthropicAPI, Reply, unified_headers
from .server_process import Server, start_server

PACKAGE = Path(store.__file__).parent
SCHEMA = json.loads((PACKAGE / "schema.json").read_text())
REPORT_SCHEMA = json.loads((PACKAGE / "report-schema.json").read_text())
EMAIL, ORG = "ada@example.com", "Ada's Organization"

# Lines the real CLI 2.1.328 printed against the fake API (experiments recorded in docs/usage.md).
WEEKLY_REJECTED = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1795804192,"rateLimitType":'
    '"seven_day","overageStatus":"rejected","overageDisabledReason":"out_of_credits","isUsingOverage":false,'
    '"unifiedWindows":{"five_hour":{"utilization":0.3,"resetsAt":1795634992,"status":"allowed"},"seven_day":'
    '{"utilization":1,"resetsAt":1795804192,"status":"rejected"}}},"session_id":"s"}'
)
OPUS_REJECTED = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1795804194,"rateLimitType":'
    '"seven_day_opus","isUsingOverage":false,"unifiedWindows":{"five_hour":{"utilization":0.3,"resetsAt":'
    '1795634994,"status":"allowed"},"seven_day":{"utilization":0.6,"resetsAt":1795804194,"status":"allowed"}}},'
    '"session_id":"s"}'
)
OVERAGE_IN_USE = (
    '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1795634996,"rateLimitType":'
    '"five_hour","overageStatus":"allowed","overageResetsAt":1797359396,"isUsingOverage":true,"unifiedWindows":'
    '{"five_hour":{"utilization":1,"resetsAt":1795634996,"status":"rejected","surpassedThreshold":1},'
    '"seven_day":{"utilization":0.6,"resetsAt":1795804196,"status":"allowed"}}},"session_id":"s"}'
)
SAMPLE_NOW = 1795630000.0  # before every reset in the samples


def event(line: str) -> RateLimit:
    parsed = parse_line(line)
    assert isinstance(parsed, RateLimit)
    return parsed


def info_event(**info: Any) -> RateLimit:
    return event(json.dumps({"type": "rate_limit_event", "rate_limit_info": info}))


def write_account(home: Path, email: str = EMAIL, organization: str = ORG) -> None:
    """The account `/login` records in ~/.claude.json (the CLI names it in its `initialize` answer)."""
    (home / ".claude.json").write_text(
        json.dumps({"oauthAccount": {"emailAddress": email, "organizationName": organization, "accountUuid": "x"}})
    )


ACCOUNT = {"email": EMAIL, "organization": ORG, "subscriptionType": "Claude Max"}


# -- parsing and judgement (pure) ------------------------------------------------------------------------


def test_parse_every_window_the_cli_reported() -> None:
    reading = windows.parse(event(WEEKLY_REJECTED).raw, SAMPLE_NOW)
    assert [(w.name, w.utilization, w.status) for w in reading.windows] == [
        ("five_hour", 0.3, "allowed"),
        ("seven_day", 1.0, "rejected"),
    ]
    assert (reading.status, reading.limit, reading.resets_at) == ("rejected", "seven_day", 1795804192)
    assert (reading.overage.status, reading.overage.disabled_reason, reading.overage.available) == (
        "rejected",
        "out_of_credits",
        False,
    )
    block = reading.block(SAMPLE_NOW, allow_overage=True)  # no extra usage to fall back on: opting in changes nothing
    assert block is not None and (block.limit, block.resets_at, block.overage_available) == (
        "seven_day",
        1795804192,
        False,
    )


def test_a_model_specific_limit_becomes_a_window_of_its_own_and_blocks_that_family_only() -> None:
    reading = windows.parse(event(OPUS_REJECTED).raw, SAMPLE_NOW)
    opus = reading.window("seven_day_opus")
    assert opus is not None and (opus.status, opus.utilization, opus.resets_at, opus.label) == (
        "rejected",
        None,
        1795804194,
        "7-day Opus",
    )
    assert [w.name for w in reading.windows] == ["five_hour", "seven_day", "seven_day_opus"]
    block = reading.block(SAMPLE_NOW, allow_overage=False)
    assert block is not None
    assert block.applies_to("claude-opus-5-5") and not block.applies_to("claude-sonnet-5-5")
    assert not block.applies_to(None)


def test_overage_in_use_is_not_a_block_for_who_opted_in() -> None:
    reading = windows.parse(event(OVERAGE_IN_USE).raw, SAMPLE_NOW)
    assert reading.overage.in_use and reading.overage.available
    assert reading.block(SAMPLE_NOW, allow_overage=True) is None
    block = reading.block(SAMPLE_NOW, allow_overage=False)
    assert block is not None and block.overage_available


def test_warnings_name_windows_at_90_percent_or_flagged_and_skip_reset_or_rejected_ones() -> None:
    now = 1_800_000_000.0
    info = {
        "status": "allowed",
        "unifiedWindows": {
            "five_hour": {"utilization": 0.95, "resetsAt": int(now) + 600},  # the CLI's own status: none
            "seven_day": {"utilization": 0.8, "resetsAt": int(now) + 86400, "status": "allowed_warning"},
            "seven_day_overage_included": {"utilization": 0.97, "resetsAt": int(now) - 5},  # already reset
        },
    }
    reading = windows.parse(info, now)
    assert [w.name for w in reading.high(now)] == ["five_hour", "seven_day"]
    line = windows.warning(reading, now)
    assert line is not None and line.count("\n") == 0
    assert "5-hour window at 95 %, resets " in line and "7-day window at 80 %" in line
    assert windows.warning(windows.parse({"status": "allowed"}, now), now) is None
    rejected = windows.parse(
        {"status": "rejected", "unifiedWindows": {"five_hour": {"utilization": 1, "resetsAt": int(now) + 60}}}, now
    )
    assert windows.warning(rejected, now) is not None  # 100 % and not marked rejected per window: still a warning
    marked = {"five_hour": {"utilization": 1, "resetsAt": int(now) + 60, "status": "rejected"}}
    assert windows.warning(windows.parse({"status": "rejected", "unifiedWindows": marked}, now), now) is None


def test_mistyped_fields_are_ignored_not_fatal() -> None:
    reading = windows.parse(
        {"status": 3, "resetsAt": "soon", "unifiedWindows": {"five_hour": "x", "seven_day": {"utilization": True}}}, 1.0
    )
    assert reading.status is None and reading.resets_at is None
    assert [(w.name, w.utilization) for w in reading.windows] == [("seven_day", None)]


# -- the record --------------------------------------------------------------------------------------------


def test_observe_keeps_one_record_per_account_named_by_a_hash(home: Path) -> None:
    now = time.time()
    store.observe(
        info_event(status="allowed", unifiedWindows={"five_hour": {"utilization": 0.1, "resetsAt": int(now) + 99}}),
        ACCOUNT,
        now=now,
    )
    store.observe(info_event(status="allowed"), {"email": "bob@example.com"}, now=now + 1)
    files = sorted(p.name for p in store.directory().iterdir())
    assert files == sorted(
        [f"{store.account_key(EMAIL, ORG)}.json", f"{store.account_key('bob@example.com', None)}.json"]
    )
    assert not any("example" in name for name in files)
    records, problems = store.load_all()
    assert problems == [] and [r.account.email for r in records] == ["bob@example.com", EMAIL]
    assert store.account_key(None, None) == store.UNNAMED == store.Account.from_initialize({}).key


def test_an_event_without_windows_keeps_the_earlier_ones_with_their_time(home: Path) -> None:
    now = time.time()
    first = {"five_hour": {"utilization": 0.5, "resetsAt": int(now) + 3600, "status": "allowed"}}
    store.observe(info_event(status="allowed", unifiedWindows=first), ACCOUNT, now=now - 600)
    store.observe(info_event(status="allowed", isUsingOverage=False), ACCOUNT, now=now)
    record = store.load(store.account_key(EMAIL, ORG))
    assert record is not None and record.observed_at == now
    window = record.reading().window("five_hour")
    assert window is not None and window.utilization == 0.5 and window.observed_at == now - 600
    text = render.human([record], now=now, allow_overage=False)
    assert "The windows are from 10 min ago" in text


def test_a_corrupt_or_unwritable_usage_file_never_breaks_a_prompt(home: Path) -> None:
    now = time.time()
    high = info_event(status="allowed", unifiedWindows={"five_hour": {"utilization": 0.95, "resetsAt": int(now) + 60}})
    path = store.path_of(store.account_key(EMAIL, ORG))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    records, problems = store.load_all()
    assert records == [] and len(problems) == 1 and "corrupt" in problems[0].message
    assert store.observe(high, ACCOUNT, now=now) is not None  # still warns, and replaces the file
    assert store.load_all()[1] == []

    path.parent.rename(path.parent.with_name("usage-old"))
    path.parent.write_text("a file where the directory should be")
    assert store.unwritable() is not None
    assert store.observe(high, ACCOUNT, now=now) is not None  # nothing stored, nothing raised


def test_front_door_names_the_program() -> None:
    assert store.front_door(["/usr/bin/llm", "-m", "claude-max"]) == "llm"
    assert store.front_door(["/x/bin/claude-max", "serve", "--port", "0"]) == "claude-max serve"
    assert store.front_door(["/x/bin/claude-max", "--json"]) == "claude-max"
    assert store.front_door(["python", "-m", "pytest"]) is None


def test_a_window_that_has_reset_is_shown_as_reset_not_with_its_old_figure(home: Path) -> None:
    now = time.time()
    info = {
        "status": "allowed",
        "unifiedWindows": {
            "five_hour": {"utilization": 0.77, "resetsAt": int(now) - 60},
            "seven_day": {"utilization": 0.31, "resetsAt": int(now) + 3 * 86400},
        },
    }
    store.observe(info_event(**info), ACCOUNT, now=now - 720)
    records, _ = store.load_all()
    text = render.human(records, now=now, allow_overage=False)
    assert "77" not in text and "reset at " in text and "no reading since" in text
    assert "31 %" in text and "As of 12 min ago" in text
    assert "█" not in render.human(records, now=now, allow_overage=False, plain=True)
    document = render.document(records, now=now, allow_overage=False)
    jsonschema.validate(document, SCHEMA)
    five = document["accounts"][0]["windows"][0]
    assert five["name"] == "five_hour" and five["has_reset"] is True and five["warning"] is False


# -- the server's gate (pure over the record) -----------------------------------------------------------------


def _reject(home: Path, *, limit: str = "five_hour", overage: str | None = None, reset_in: int = 3600) -> int:
    now = time.time()
    reset = int(now) + reset_in
    info: dict[str, Any] = {"status": "rejected", "resetsAt": reset, "rateLimitType": limit, "isUsingOverage": False}
    if overage:
        info["overageStatus"] = overage
    store.observe(info_event(**info), ACCOUNT, now=now)
    return reset


def test_gate_refuses_until_the_reset_and_a_later_allowed_reading_clears_it(home: Path) -> None:
    reset = _reject(home)
    refused = gate.refusal("claude-max", guard.Policy(), dict(os.environ))
    assert isinstance(refused, UsageLimitReached) and refused.resets_at is not None
    assert int(refused.resets_at.timestamp()) == reset and "no prompt was sent" in refused.message
    store.observe(info_event(status="allowed"), ACCOUNT)
    assert gate.refusal("claude-max", guard.Policy(), dict(os.environ)) is None


def test_gate_lets_opted_in_extra_usage_through_only_when_the_account_has_it(home: Path) -> None:
    env = dict(os.environ)
    _reject(home, overage="allowed")
    assert gate.refusal("claude-max", guard.Policy(allow_overage=True), env) is None
    refused = gate.refusal("claude-max", guard.Policy(), env)
    assert refused is not None and "extra usage" in refused.message
    _reject(home, overage="rejected")
    assert gate.refusal("claude-max", guard.Policy(allow_overage=True), env) is not None


def test_gate_applies_a_model_limit_to_that_family_only(home: Path) -> None:
    env = dict(os.environ)
    _reject(home, limit="seven_day_opus")
    assert gate.refusal("claude-opus-5-5", guard.Policy(), env) is not None
    assert gate.refusal("claude-max-sonnet", guard.Policy(), env) is None


def test_gate_follows_the_login_so_a_switched_account_is_not_refused(home: Path) -> None:
    env = dict(os.environ)
    write_account(home)
    _reject(home)
    assert gate.refusal("claude-max", guard.Policy(), env) is not None
    write_account(home, email="other@example.com")  # `/login` with another account
    assert gate.refusal("claude-max", guard.Policy(), env) is None
    assert paths.claude_json(env) == home / ".claude.json"


# -- with the real CLI ------------------------------------------------------------------------------------------------


@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path, home: Path) -> FakeAnthropicAPI:
    write_account(home)
    return real_cli


def everyday_headers(now: int) -> dict[str, str]:
    return unified_headers(
        "allowed",
        claim="five_hour",
        reset=now + 7200,
        windows={"five_hour": (0.42, now + 7200, "allowed"), "seven_day": (0.63, now + 3 * 86400, "allowed")},
        overage="rejected",
        overage_reason="out_of_credits",
    )


@pytest.mark.real_cli
def test_claude_max_usage_shows_what_the_real_cli_reported(api: FakeAnthropicAPI) -> None:
    now = int(time.time())
    api.enqueue(Reply(text="fine", headers=everyday_headers(now)))
    prompt = CliRunner().invoke(llm_cli, ["-m", "claude-max", "hi"])
    assert prompt.exit_code == 0 and prompt.stdout == "fine\n" and "window at" not in prompt.stderr

    shown = CliRunner().invoke(cli, ["usage"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"Claude Max · {EMAIL} ({ORG}) · logged in now"
    assert lines[1].startswith("  5-hour  " + "█" * 8 + "░" * 12 + "   42 %  resets ")
    assert re.search(rf"resets {guard.format_reset(now + 7200)} \(in 1 h 5\d min\)$", lines[1]), lines[1]
    assert lines[2].startswith("  7-day   " + "█" * 13 + "░" * 7 + "   63 %  resets ")
    assert lines[3].startswith("  Extra usage: not available (out_of_credits); llm-claude-max refuses it")
    assert lines[4].startswith("  As of just now (")

    document = json.loads(CliRunner().invoke(cli, ["usage", "--json"]).output)
    jsonschema.validate(document, SCHEMA)
    (account,) = document["accounts"]
    assert account["account"]["current_login"] is True and account["account"]["plan"] == "Claude Max"
    assert [(w["name"], w["utilization"], w["resets_at_epoch"]) for w in account["windows"]] == [
        ("five_hour", 0.42, now + 7200),
        ("seven_day", 0.63, now + 3 * 86400),
    ]
    assert account["blocked"] is None and account["overage"]["disabled_reason"] == "out_of_credits"
    assert account["rate_limit_info"]["unifiedWindows"]["five_hour"]["status"] == "allowed"

    through_llm = CliRunner().invoke(llm_cli, ["claude-max", "usage"])
    assert through_llm.exit_code == 0 and through_llm.output == shown.output


@pytest.mark.real_cli
def test_one_warning_line_when_a_window_is_nearly_used_up(api: FakeAnthropicAPI) -> None:
    now = int(time.time())
    flagged = unified_headers(
        windows={"five_hour": (0.93, now + 3000, "allowed_warning", 0.9), "seven_day": (0.5, now + 5 * 86400)}
    )
    # 95 % with ten minutes left: the CLI itself does not warn (status allowed); llm-claude-max does.
    unflagged = unified_headers(windows={"five_hour": (0.95, now + 600), "seven_day": (0.3, now + 2 * 86400)})
    api.enqueue(Reply(text="a", headers=flagged), Reply(text="b", headers=unflagged))
    first = CliRunner().invoke(llm_cli, ["-m", "claude-max", "hi"])
    second = CliRunner().invoke(llm_cli, ["-m", "claude-max", "hi"])
    assert (first.stdout, second.stdout) == ("a\n", "b\n")
    assert first.stderr.splitlines() == [
        f"claude-max: 5-hour window at 93 %, resets {guard.format_reset(now + 3000)} "
        "(`llm claude-max usage` shows every window)"
    ]
    assert second.stderr.splitlines() == [
        f"claude-max: 5-hour window at 95 %, resets {guard.format_reset(now + 600)} "
        "(`llm claude-max usage` shows every window)"
    ]
    logged = json.loads(CliRunner().invoke(llm_cli, ["logs", "--json", "-n", "1"]).output)
    assert logged[0]["response_json"]["warnings"] == second.stderr.splitlines()


@pytest.fixture
def quiet_server(real_cli: FakeAnthropicAPI, login: Path, home: Path, tmp_path: Path) -> Iterator[Server]:
    write_account(home)
    server = start_server(["--pool-size", "0"], tmp_path / "server.log")
    try:
        assert server.url.startswith("http://"), server.log.read_text()
        yield server
    finally:
        server.stop()


def _chat(server: Server, **body: Any) -> httpx.Response:
    payload = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(server.base + "/chat/completions", json=payload, timeout=60)


@pytest.mark.real_cli
def test_server_answers_429_at_once_while_the_window_is_used_up(
    quiet_server: Server, real_cli: FakeAnthropicAPI
) -> None:
    now = int(time.time())
    rejected = unified_headers(
        "rejected",
        claim="five_hour",
        reset=now + 3600,
        windows={"five_hour": (1.0, now + 3600, "rejected"), "seven_day": (0.5, now + 86400, "allowed")},
    )
    real_cli.enqueue(Reply(status=429, error_type="rate_limit_error", headers=rejected))
    first = _chat(quiet_server)
    assert first.status_code == 429 and "no prompt was sent" not in first.json()["error"]["message"]  # the CLI's
    sent = len(real_cli.message_requests)

    for stream in (False, True):
        fast = _chat(quiet_server, stream=stream)
        assert fast.status_code == 429, fast.text
        assert fast.json()["error"]["code"] == "usage_limit_reached"
        assert "no prompt was sent" in fast.json()["error"]["message"]
        assert 3500 <= int(fast.headers["retry-after"]) <= 3600
    assert len(real_cli.message_requests) == sent
    deep = httpx.get(quiet_server.url + "/health/deep", timeout=60).json()
    assert deep["engine"]["stats"]["cold_starts"] == 1  # only the first request started a CLI
    blocked = deep["usage"]["accounts"][0]["blocked"]
    assert blocked["limit"] == "five_hour" and blocked["resets_at_epoch"] == now + 3600
    usage = httpx.get(quiet_server.base + "/usage", timeout=10).json()
    jsonschema.validate(usage, SCHEMA)
    assert usage["accounts"][0]["account"]["email"] == EMAIL

    # A prompt that goes through (here from llm, straight to the CLI) brings a reading that clears it.
    real_cli.enqueue(Reply(text="back", headers=everyday_headers(now)))
    assert llm.get_model("claude-max").prompt("hi").text() == "back"
    real_cli.enqueue(Reply(text="served again", headers=everyday_headers(now)))
    again = _chat(quiet_server)
    assert again.status_code == 200 and again.json()["choices"][0]["message"]["content"] == "served again"


@pytest.mark.real_cli
def test_server_warning_header_names_the_window_and_its_reset(quiet_server: Server, real_cli: FakeAnthropicAPI) -> None:
    now = int(time.time())
    high = unified_headers(windows={"five_hour": (0.93, now + 3000, "allowed_warning", 0.9)})
    real_cli.enqueue(Reply(text="one", headers=high), Reply(text="two", headers=everyday_headers(now)))
    answered = _chat(quiet_server)
    assert answered.status_code == 200
    # Non-streaming: the headers leave after this answer's own reading.
    assert answered.headers[gate.WARNING_HEADER] == f"five_hour=0.93; resets_at={windows.iso(now + 3000)}"
    assert gate.OBSERVED_HEADER in answered.headers
    assert answered.json()["claude_max"]["warnings"][0].startswith("claude-max: 5-hour window at 93 %")
    # Streaming: the headers leave before the stream's own reading, so they carry the one before it (93 %);
    # this stream's reading (42 %) warns about nothing.
    with httpx.stream(
        "POST",
        quiet_server.base + "/chat/completions",
        json={"model": "claude-max", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=60,
    ) as streamed:
        body = "".join(streamed.iter_text())
        assert streamed.headers[gate.WARNING_HEADER].startswith("five_hour=0.93")
    assert '"content": "two"' in body or '"content":"two"' in body
    assert gate.headers(dict(os.environ)) == {}


def _usage_check(args: list[str] | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["doctor", "--json", *(args or []), "usage"])
    document = json.loads(result.output)
    (check,) = document["checks"]
    assert check["id"] == "usage.windows"
    return check  # type: ignore[no-any-return]


@pytest.mark.real_cli
def test_doctor_fails_on_a_used_up_window_and_warns_near_the_limit(
    api: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _usage_check()["findings"][0]["status"] == "info"  # no reading yet
    now = int(time.time())
    api.enqueue(Reply(status=429, error_type="rate_limit_error", headers=unified_headers(
        "rejected", claim="seven_day", reset=now + 86400,
        windows={"five_hour": (0.2, now + 3600, "allowed"), "seven_day": (1.0, now + 86400, "rejected")},
    )))  # fmt: skip
    with pytest.raises(UsageLimitReached):
        llm.get_model("claude-max").prompt("hi").text()
    check = _usage_check(["--offline"])  # the check reads the record: it needs no CLI
    assert check["status"] == "fail"
    summaries = [f["summary"] for f in check["findings"]]
    assert summaries[0].startswith(f"Claude Max · {EMAIL}")
    assert check["findings"][0]["table"][2][:3] == ["7-day", "100 %", "rejected"]
    assert f"Your 7-day limit is reached until {guard.format_reset(now + 86400)}: prompts are refused" in summaries
    monkeypatch.setenv("CLAUDE_MAX_ALLOW_OVERAGE", "1")
    assert _usage_check()["status"] == "warn"
    monkeypatch.delenv("CLAUDE_MAX_ALLOW_OVERAGE")

    api.enqueue(Reply(text="ok", headers=unified_headers(windows={"five_hour": (0.91, now + 3600)})))
    llm.get_model("claude-max").prompt("hi").text()
    check = _usage_check()
    assert check["status"] == "warn"
    assert check["findings"][-1]["summary"].startswith("Your 5-hour window is at 91 %")

    usage_dir = store.directory()
    store.path_of(store.account_key(EMAIL, ORG)).write_text("garbage")
    check = _usage_check()
    assert check["findings"][0]["status"] == "warn" and "corrupt" in check["findings"][0]["summary"]
    assert check["findings"][0]["fix"].startswith("rm ")
    human = CliRunner().invoke(cli, ["doctor", "usage"]).output
    assert "Usage" in human and "corrupt" in human

    usage_dir.rename(usage_dir.with_name("usage-moved"))
    usage_dir.write_text("a file where the readings' directory should be")
    check = _usage_check()
    assert check["findings"][0]["status"] == "warn"
    assert check["findings"][0]["summary"].startswith("New usage readings cannot be stored")


@pytest.mark.real_cli
def test_the_doctors_live_probe_records_a_reading(api: FakeAnthropicAPI) -> None:
    now = int(time.time())
    api.enqueue(Reply(text="OK", headers=everyday_headers(now)))
    result = CliRunner().invoke(cli, ["doctor", "--json", "--live", "live"])
    assert json.loads(result.output)["checks"][0]["status"] == "ok"
    record = store.load(store.account_key(EMAIL, ORG))
    assert record is not None
    assert [(w.name, w.utilization) for w in record.reading().windows] == [("five_hour", 0.42), ("seven_day", 0.63)]
    assert _usage_check()["findings"][0]["table"][1][:2] == ["5-hour", "42 %"]


# -- the report from llm's logs.db -----------------------------------------------------------------------------


class OtherModel(llm.Model):
    """A model of another plugin: its rows must stay out of the report."""

    model_id = "other-model"

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Iterator[str]:
        response.set_usage(input=1000, output=1000)
        yield "other"


class OtherPlugin:
    @llm.hookimpl
    def register_models(self, register: Any) -> None:
        register(OtherModel())


@pytest.fixture
def other_model() -> Iterator[None]:
    plugin = OtherPlugin()
    llm.plugins.pm.register(plugin, name="other-model-for-tests")
    try:
        yield
    finally:
        llm.plugins.pm.unregister(plugin)


@pytest.mark.real_cli
def test_report_from_a_log_of_known_responses(api: FakeAnthropicAPI, other_model: None, home: Path) -> None:
    database = Path(llm.user_dir()) / "logs.db"
    db = sqlite_utils.Database(database)
    migrate(db)
    utc_now = dt.datetime.now(dt.UTC)
    api.enqueue(
        Reply(
            text="two days ago", input_tokens=100, output_tokens=20, cache_read_tokens=1000, cache_creation_tokens=50
        ),
        Reply(text="today", input_tokens=10, output_tokens=5),
        Reply(text="long ago", input_tokens=7, output_tokens=7),
    )
    logged = []
    for model_id, ago in (("claude-max", 2), ("claude-max-haiku", 0), ("claude-max", 40)):
        response = llm.get_model(model_id).prompt("hi")
        response.text()
        response._start_utcnow = utc_now - dt.timedelta(days=ago)  # when llm would have run it
        response.log_to_db(db)
        logged.append(response)
    db.close()
    api.enqueue(Reply(text="via llm", input_tokens=3, output_tokens=2))
    assert CliRunner().invoke(llm_cli, ["-m", "claude-max-haiku", "hi"]).exit_code == 0  # logged by llm itself
    assert CliRunner().invoke(llm_cli, ["-m", "other-model", "hi"]).stdout == "other\n"

    result = CliRunner().invoke(cli, ["usage", "report", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    jsonschema.validate(document, REPORT_SCHEMA)
    costs = [r.response_json["cost_estimate_usd"]["amount"] for r in logged]
    assert all(isinstance(c, float) and c > 0 for c in costs)
    today = dt.date.today()
    two_days_ago = (utc_now - dt.timedelta(days=2)).astimezone().date()
    assert [d["date"] for d in document["days"]] == [two_days_ago.isoformat(), today.isoformat()]
    first_day = document["days"][0]["models"]
    assert first_day == [
        {
            "model": "claude-max",
            "prompts": 1,
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 50,
            "total_tokens": 1170,
            "cost_estimate_usd": round(costs[0], 6),
            "responses_without_estimate": 0,
        }
    ]
    haiku = document["days"][1]["models"]
    assert [(m["model"], m["prompts"], m["input_tokens"], m["output_tokens"]) for m in haiku] == [
        ("claude-max-haiku", 2, 13, 7)
    ]
    total = document["total"]
    assert (total["prompts"], total["total_tokens"]) == (3, 1170 + 15 + 5)
    assert [m["model"] for m in document["models"]] == ["claude-max", "claude-max-haiku"]

    wider = json.loads(CliRunner().invoke(cli, ["usage", "report", "--json", "--days", "41"]).output)
    assert wider["total"]["prompts"] == 4
    since = (today - dt.timedelta(days=1)).isoformat()
    narrow = json.loads(CliRunner().invoke(cli, ["usage", "report", "--json", "--since", since]).output)
    assert narrow["total"]["prompts"] == 2

    text = CliRunner().invoke(llm_cli, ["claude-max", "usage", "report"]).output
    assert "claude-max-haiku" in text and "other-model" not in text
    assert "daily tokens (input + output + cache)" in text and "█" * 40 in text  # the busiest day fills the bar
    assert report.COST_NOTE in text and "$" in text


def test_report_refuses_bad_options_and_a_missing_database(tmp_path: Path) -> None:
    both = CliRunner().invoke(cli, ["usage", "report", "--days", "3", "--since", "2026-01-01"])
    assert both.exit_code == 2 and "not both" in both.output
    missing = CliRunner().invoke(cli, ["usage", "report", "--database", str(tmp_path / "none.db")])
    assert missing.exit_code == 1 and "There is no llm log database" in missing.output
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("hello")
    broken = CliRunner().invoke(cli, ["usage", "report", "--database", str(not_a_db)])
    assert broken.exit_code == 1 and "Cannot read" in broken.output and "Traceback" not in broken.output
    assert CliRunner().invoke(cli, ["usage", "--json", "report"]).exit_code == 2


def test_usage_without_a_reading_says_how_to_get_one() -> None:
    result = CliRunner().invoke(cli, ["usage"])
    assert result.exit_code == 0 and result.output == render.EMPTY + "\n"
    document = json.loads(CliRunner().invoke(cli, ["usage", "--json"]).output)
    jsonschema.validate(document, SCHEMA)
    assert document["accounts"] == []


def test_the_gate_reads_the_login_only_when_a_reading_would_refuse_or_warn(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reading(env: object = None) -> str:
        raise AssertionError(".claude.json was read although no reading refuses or warns")

    now = int(time.time())
    store.observe(
        info_event(status="allowed", unifiedWindows={"five_hour": {"utilization": 0.2, "resetsAt": now + 60}}), ACCOUNT
    )
    monkeypatch.setattr(store, "login_key", no_reading)
    assert gate.refusal("claude-max", guard.Policy(), dict(os.environ)) is None
    assert gate.headers(dict(os.environ)) == {}
