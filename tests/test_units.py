"""Unit tests of the pure parts: routes, argv/env, protocol, guard, catalog, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import llm
import pytest

from llm_claude_max import catalog, guard, routes
from llm_claude_max.errors import (
    BillingRouteRefused,
    ClaudeMaxError,
    NotLoggedIn,
    PaidUsageRefused,
    UsageLimitReached,
)
from llm_claude_max.models import as_llm_error
from llm_claude_max.runner import failure, protocol
from llm_claude_max.runner.command import CommandSpec, SystemPlacement, build_argv, build_env
from llm_claude_max.runner.locate import TESTED_VERSION, version_tuple

# -- routes and the child environment --------------------------------------------------------------


def test_every_removed_variable_is_scrubbed() -> None:
    parent = {v.name: "value" for v in routes.VARIABLES} | {"PATH": "/bin", "HOME": "/home/u"}
    child = build_env(parent)
    for variable in routes.VARIABLES:
        assert (variable.name in child) is (not variable.removed), variable.name
    assert child["PATH"] == "/bin"
    assert set(parent) - set(child) == routes.REMOVED


def test_subscription_and_locator_variables_are_kept() -> None:
    env = build_env({"CLAUDE_CODE_OAUTH_TOKEN": "t", "CLAUDE_CONFIG_DIR": "/c", "HTTPS_PROXY": "http://p"})
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == "t"
    assert env["CLAUDE_CONFIG_DIR"] == "/c"
    assert env["HTTPS_PROXY"] == "http://p"


def test_api_key_kept_only_with_opt_in_and_nothing_else() -> None:
    parent = {"ANTHROPIC_API_KEY": "k", "ANTHROPIC_AUTH_TOKEN": "g", "CLAUDE_CODE_USE_BEDROCK": "1"}
    assert "ANTHROPIC_API_KEY" not in build_env(parent)
    opted = build_env(parent, allow_api_billing=True)
    assert opted["ANTHROPIC_API_KEY"] == "k"
    assert "ANTHROPIC_AUTH_TOKEN" not in opted and "CLAUDE_CODE_USE_BEDROCK" not in opted


def test_overrides_never_bring_a_credential_back() -> None:
    env = build_env({}, overrides={"ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_MAX_RETRIES": "1"})
    assert "ANTHROPIC_API_KEY" not in env
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "1"


def test_quiet_defaults_respect_the_user() -> None:
    env = build_env({"API_TIMEOUT_MS": "5000"})
    assert env["API_TIMEOUT_MS"] == "5000"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "3"


def test_base_url_only_from_our_own_variable() -> None:
    assert "ANTHROPIC_BASE_URL" not in build_env({"ANTHROPIC_BASE_URL": "http://evil"})
    assert build_env({"ANTHROPIC_BASE_URL": "http://evil"}, base_url="http://gw")["ANTHROPIC_BASE_URL"] == "http://gw"


# -- argv ------------------------------------------------------------------------------------------


def test_argv_is_deliberate() -> None:
    argv = build_argv(Path("/bin/claude"), CommandSpec())
    assert argv[:2] == ["/bin/claude", "-p"]
    for flag in (
        "--input-format=stream-json",
        "--output-format=stream-json",
        "--verbose",
        "--include-partial-messages",
        "--setting-sources=",
        "--strict-mcp-config",
        "--tools=",
        "--system-prompt=",
    ):
        assert flag in argv
    assert not any(a.startswith("--model") for a in argv)
    assert not any(a.startswith("--session-id") for a in argv)


def test_argv_values_cannot_become_flags() -> None:
    argv = build_argv(
        Path("c"),
        CommandSpec(
            model="sonnet", system_prompt="--be terse", effort="high", resume="abc", json_schema={"type": "object"}
        ),
    )
    assert "--system-prompt=--be terse" in argv
    assert "--model=sonnet" in argv and "--effort=high" in argv and "--resume=abc" in argv
    assert '--json-schema={"type":"object"}' in argv


def test_argv_system_prompt_file() -> None:
    replace = build_argv(Path("c"), CommandSpec(system_prompt="S"), system_prompt_file=Path("/s.txt"))
    assert "--system-prompt-file=/s.txt" in replace and "--system-prompt=S" not in replace
    append = build_argv(
        Path("c"), CommandSpec(system_prompt="S", placement=SystemPlacement.APPEND), system_prompt_file=Path("/s")
    )
    assert "--append-system-prompt-file=/s" in append


def test_argv_placements_and_tools() -> None:
    append = build_argv(Path("c"), CommandSpec(system_prompt="S", placement=SystemPlacement.APPEND))
    assert "--append-system-prompt=S" in append and not any(a.startswith("--system-prompt=") for a in append)
    user = build_argv(Path("c"), CommandSpec(system_prompt="S", placement=SystemPlacement.USER))
    assert not any("=S" in a for a in user)
    tools = build_argv(Path("c"), CommandSpec(claude_tools=("Read", "Grep")))
    assert "--tools=Read,Grep" in tools and "--permission-mode=acceptEdits" in tools
    assert not any(a.startswith("--allowedTools") for a in tools)  # file tools stay in their directory
    mixed = build_argv(Path("c"), CommandSpec(claude_tools=("Read", "Bash(git:*)", "WebSearch")))
    assert "--tools=Read,Bash,WebSearch" in mixed and "--allowedTools=Bash(git:*),WebSearch" in mixed
    assert not any(a.startswith("--system-prompt=") for a in tools)  # tools keep Claude Code's prompt


# -- protocol (lines as printed by the real CLI 2.1.328) ------------------------------------------------

REAL_LINES = {
    "init": '{"type":"system","subtype":"init","cwd":"/tmp/w","session_id":"42343d59-322d-4366-8841-774545f7db2b","tools":[],"mcp_servers":[],"model":"claude-opus-5-5","permissionMode":"default","apiKeySource":"none","claude_code_version":"2.1.328","messaging_socket_path":"/tmp/cc-socks/3155.sock"}',
    "delta": '{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello "}},"session_id":"4","parent_tool_use_id":null,"uuid":"9","api_message_id":"msg_fake0001"}',
    "rate": '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1795367965,"rateLimitType":"five_hour","overageStatus":"allowed","overageResetsAt":1795367965,"isUsingOverage":true},"session_id":"x"}',
    "retry": '{"type":"system","subtype":"api_retry","attempt":2,"max_retries":10,"retry_delay_ms":1100.5,"error_status":529,"error":"overloaded"}',
    "result": '{"duration_api_ms":32,"stop_reason":"end_turn","session_id":"s","total_cost_usd":0.000188,"usage":{"input_tokens":12,"output_tokens":7},"is_error":false,"num_turns":1,"subtype":"success","api_error_status":null,"result":"Hello.","type":"result"}',
    "error_result": '{"type":"result","subtype":"success","is_error":true,"terminal_reason":"api_error","api_error_status":529,"result":"API Error: Repeated 529 Overloaded errors."}',
    "synthetic": '{"type":"assistant","message":{"id":"m","model":"<synthetic>","content":[{"type":"text","text":"Not logged in · Please run /login"}]},"error":"authentication_failed","is_api_error_message":true}',
}


def test_parse_real_lines() -> None:
    init = protocol.parse_line(REAL_LINES["init"])
    assert isinstance(init, protocol.Init)
    assert (init.session_id, init.api_key_source, init.version, init.socket_path) == (
        "42343d59-322d-4366-8841-774545f7db2b",
        "none",
        "2.1.328",
        "/tmp/cc-socks/3155.sock",
    )
    delta = protocol.parse_line(REAL_LINES["delta"].encode())
    assert delta == protocol.TextDelta("Hello ", "msg_fake0001")
    rate = protocol.parse_line(REAL_LINES["rate"])
    assert isinstance(rate, protocol.RateLimit)
    assert rate.is_using_overage and rate.resets_at == 1795367965 and rate.limit_type == "five_hour"
    retry = protocol.parse_line(REAL_LINES["retry"])
    assert retry == protocol.ApiRetry(2, 10, 1100.5, 529, "overloaded")
    result = protocol.parse_line(REAL_LINES["result"])
    assert isinstance(result, protocol.Result) and result.text == "Hello." and not result.is_error
    assert result.usage == {"input_tokens": 12, "output_tokens": 7}
    error = protocol.parse_line(REAL_LINES["error_result"])
    assert (
        isinstance(error, protocol.Result)
        and error.is_error
        and error.subtype == "success"
        and error.api_error_status == 529
    )
    synthetic = protocol.parse_line(REAL_LINES["synthetic"])
    assert isinstance(synthetic, protocol.Assistant) and synthetic.api_error == "authentication_failed"


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '{"no": "type"}', '"text"', "{"])
def test_malformed_lines(line: str) -> None:
    with pytest.raises(ClaudeMaxError, match="not"):
        protocol.parse_line(line)


def test_unknown_types_are_kept() -> None:
    event = protocol.parse_line('{"type":"future_thing","a":1}')
    assert isinstance(event, protocol.Other) and event.type == "future_thing"


def test_encoders_are_single_json_lines() -> None:
    line = protocol.encode_user_message("two\nlines")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["message"]["content"] == "two\nlines"
    assert json.loads(protocol.encode_initialize("r1"))["request"] == {"subtype": "initialize"}


# -- the guard (account objects as answered by the real CLI, see claude-cli.md §3.3) ---------------------

ACCOUNTS = [
    ({"subscriptionType": "Claude Max", "apiProvider": "firstParty"}, guard.Route.SUBSCRIPTION),
    ({"subscriptionType": "Claude Pro", "apiProvider": "firstParty"}, guard.Route.SUBSCRIPTION),
    ({"tokenSource": "CLAUDE_CODE_OAUTH_TOKEN", "apiProvider": "firstParty"}, guard.Route.SUBSCRIPTION),
    ({"tokenSource": "none", "apiKeySource": "ANTHROPIC_API_KEY", "apiProvider": "firstParty"}, guard.Route.API_KEY),
    (
        {"tokenSource": "claude.ai", "apiKeySource": "ANTHROPIC_API_KEY", "apiProvider": "firstParty"},
        guard.Route.API_KEY,
    ),
    ({"tokenSource": "ANTHROPIC_AUTH_TOKEN", "apiProvider": "firstParty"}, guard.Route.GATEWAY),
    (
        {"tokenSource": "apiKeyHelper", "apiKeySource": "apiKeyHelper", "apiProvider": "firstParty"},
        guard.Route.API_KEY_HELPER,
    ),
    ({"tokenSource": "none", "apiProvider": "firstParty"}, guard.Route.NONE),
    ({"apiProvider": "bedrock"}, guard.Route.CLOUD),
    (
        {"tokenSource": "/login managed key", "apiKeySource": "/login managed key", "apiProvider": "firstParty"},
        guard.Route.API_KEY,
    ),
]


@pytest.mark.parametrize(("account", "route"), ACCOUNTS)
def test_route_from_account(account: dict[str, str], route: guard.Route) -> None:
    assert guard.route_from_account(account).route is route


def test_only_the_subscription_passes_by_default() -> None:
    for account, route in ACCOUNTS:
        report = guard.route_from_account(account)
        if route is guard.Route.SUBSCRIPTION:
            assert guard.check_route(report, guard.Policy()) is None
        else:
            with pytest.raises((BillingRouteRefused, NotLoggedIn)):
                guard.check_route(report, guard.Policy())


def test_api_billing_opt_in_covers_api_keys_only() -> None:
    policy = guard.Policy(allow_api_billing=True)
    key = guard.route_from_account({"apiKeySource": "ANTHROPIC_API_KEY"})
    assert "pay-as-you-go" in (guard.check_route(key, policy) or "")
    for account in ({"tokenSource": "ANTHROPIC_AUTH_TOKEN"}, {"apiProvider": "vertex"}):
        with pytest.raises(BillingRouteRefused):
            guard.check_route(guard.route_from_account(account), policy)


def test_conflict_is_explained() -> None:
    report = guard.route_from_account(
        {"tokenSource": "claude.ai", "apiKeySource": "ANTHROPIC_API_KEY"},
        {"token_source": "claude.ai", "api_key_source": "ANTHROPIC_API_KEY"},
    )
    with pytest.raises(BillingRouteRefused, match="A subscription login exists, but the API credential would win"):
        guard.check_route(report, guard.Policy())


@pytest.mark.parametrize(
    ("status", "route"),
    [
        ({"loggedIn": True, "authMethod": "claude.ai", "subscriptionType": "max"}, guard.Route.SUBSCRIPTION),
        ({"loggedIn": True, "authMethod": "api_key", "apiKeySource": "ANTHROPIC_API_KEY"}, guard.Route.API_KEY),
        (
            {"loggedIn": True, "authMethod": "api_key_helper", "apiKeySource": "apiKeyHelper"},
            guard.Route.API_KEY_HELPER,
        ),
        ({"loggedIn": True, "authMethod": "oauth_token", "apiKeySource": "ANTHROPIC_API_KEY"}, guard.Route.API_KEY),
        ({"loggedIn": False, "authMethod": "none"}, guard.Route.NONE),
    ],
)
def test_route_from_auth_status(status: dict[str, object], route: guard.Route) -> None:
    assert guard.route_from_auth_status(status, oauth_token_set=False).route is route


def test_auth_status_oauth_token_is_the_subscription_only_when_we_passed_one() -> None:
    status = {"loggedIn": True, "authMethod": "oauth_token"}
    assert guard.route_from_auth_status(status, oauth_token_set=True).route is guard.Route.SUBSCRIPTION
    ambiguous = guard.route_from_auth_status(status, oauth_token_set=False)  # could be ANTHROPIC_AUTH_TOKEN
    with pytest.raises(BillingRouteRefused, match="cannot confirm"):
        guard.check_route(ambiguous, guard.Policy())


def test_user_text_is_never_a_claude_code_command() -> None:
    line = json.loads(
        protocol.encode_user_message([{"type": "text", "text": "/model haiku"}, {"type": "image", "x": 1}])
    )
    assert line["message"]["content"] == [{"type": "text", "text": " /model haiku"}, {"type": "image", "x": 1}]
    assert json.loads(protocol.encode_user_message("/clear"))["message"]["content"] == " /clear"
    assert json.loads(protocol.encode_user_message("a /b"))["message"]["content"] == "a /b"


def test_init_api_key_source_must_be_none() -> None:
    report = guard.route_from_account({"subscriptionType": "Claude Max"})
    init = protocol.Init("s", "m", "ANTHROPIC_API_KEY", None, None, {})
    with pytest.raises(BillingRouteRefused):
        guard.check_init(init, report, guard.Policy(allow_api_billing=True))
    guard.check_init(protocol.Init("s", "m", "none", None, None, {}), report, guard.Policy())


def test_overage_lock_round_trip() -> None:
    lock = guard.OverageLock()
    lock.check(guard.Policy())
    rate = protocol.RateLimit(
        "rejected", int(time.time()) + 60, "five_hour", True, "allowed", {"overageResetsAt": int(time.time()) + 60}
    )
    lock.set(rate, "sid")
    with pytest.raises(PaidUsageRefused, match="5-hour limit resets"):
        lock.check(guard.Policy())
    lock.check(guard.Policy(allow_overage=True))
    lock.clear()
    lock.check(guard.Policy())


def test_usage_limit_error_text() -> None:
    reset = int(time.time()) + 600
    rate = protocol.RateLimit("rejected", reset, "seven_day", False, None, {})
    result = protocol.Result("success", True, "You've hit your weekly limit", "s", 429, "api_error", None, None, [], {})
    error = failure.from_result(result, rate, "")
    assert isinstance(error, UsageLimitReached)
    assert str(error).startswith("Claude 7-day limit reached, resets ")


# -- catalog, versions, the error mixin --------------------------------------------------------------------


def test_catalog_falls_back_then_learns() -> None:
    assert [m.model_id for m in catalog.load()] == [
        "claude-max",
        "claude-max-opus",
        "claude-max-sonnet",
        "claude-max-haiku",
    ]
    assert catalog.remember([{"value": "default"}, {"value": "fable", "resolvedModel": "claude-fable-5-2"}])
    assert [m.model_id for m in catalog.load()] == ["claude-max", "claude-max-fable"]
    assert not catalog.remember([{"value": "default"}, {"value": "fable", "resolvedModel": "claude-fable-5-2"}])
    catalog.cache_path().write_text("{broken")
    assert catalog.load() == catalog.FALLBACK


def test_version_comparison() -> None:
    assert version_tuple("2.1.328 (Claude Code)") == (2, 1, 328)
    assert version_tuple("2.1.9") < version_tuple(TESTED_VERSION) <= version_tuple("2.10.0")


def test_errors_become_llm_model_errors_and_stay_precise() -> None:
    error = as_llm_error(UsageLimitReached("limit", limit="five_hour"))
    assert isinstance(error, llm.ModelError) and isinstance(error, UsageLimitReached)
    assert error.limit == "five_hour" and str(error) == "limit"
    assert type(error).__name__ == "UsageLimitReached"


# -- claude-max server-key ----------------------------------------------------------------------------------


def test_server_key_is_created_once_kept_private_and_rotated(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from llm_claude_max import paths
    from llm_claude_max.cli import cli

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")  # no keyring: the file
    first = CliRunner().invoke(cli, ["server-key"])
    assert first.exit_code == 0 and first.stdout.startswith("cmx-")
    path = paths.state_dir() / "server-key"
    assert f"(kept in {path})" in first.stderr and path.stat().st_mode & 0o777 == 0o600
    assert CliRunner().invoke(cli, ["server-key"]).stdout == first.stdout
    rotated = CliRunner().invoke(cli, ["server-key", "--rotate"])
    assert rotated.exit_code == 0 and rotated.stdout.startswith("cmx-") and rotated.stdout != first.stdout

    monkeypatch.setenv("CLAUDE_MAX_SERVER_KEY", "short")
    short = CliRunner().invoke(cli, ["server-key"])
    assert short.exit_code == 1 and "CLAUDE_MAX_SERVER_KEY is shorter than 16 characters." in short.stderr
    assert short.exception is None or isinstance(short.exception, SystemExit)
