"""The billing matrix, through the llm front door, with the real CLI against the fake API.

In every situation either the request reaches the API with the subscription ``Authorization:
Bearer`` and the OAuth beta and no ``x-api-key``, or nothing reaches it and the user gets a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import llm
import pytest

from llm_claude_max.errors import NotLoggedIn

from .conftest import write_login
from .fakeapi import FakeAnthropicAPI

pytestmark = pytest.mark.real_cli

OAUTH_TOKEN = "sk-ant-oat01-FAKEACCESSTOKEN-aaaa"
ENV_OAUTH_TOKEN = "sk-ant-oat01-FAKEENVTOKEN-cccc"
API_KEY = "sk-ant-api03-FAKEAPIKEY-dddd"


def ask(prompt: str = "Say hi", **options: object) -> str:
    return llm.get_model("claude-max").prompt(prompt, **options).text()


def assert_subscription_request(api: FakeAnthropicAPI, token: str = OAUTH_TOKEN) -> None:
    assert len(api.message_requests) == 1, [r.path for r in api.requests]
    request = api.message_requests[0]
    assert request.header("authorization") == f"Bearer {token}"
    assert "oauth-2025-04-20" in (request.header("anthropic-beta") or "")
    assert request.header("x-api-key") is None


def write_settings(home: Path, settings: dict[str, object]) -> None:
    (home / ".claude" / "settings.json").write_text(json.dumps(settings))


@pytest.mark.parametrize(
    ("env", "settings"),
    [
        pytest.param({"ANTHROPIC_API_KEY": API_KEY}, None, id="api-key-and-login"),
        pytest.param({"ANTHROPIC_AUTH_TOKEN": "gateway-token"}, None, id="auth-token-and-login"),
        pytest.param(
            {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_AUTH_TOKEN": "gateway-token"}, None, id="both-and-login"
        ),
        pytest.param({}, {"apiKeyHelper": f"echo {API_KEY}"}, id="api-key-helper-in-user-settings"),
        pytest.param({}, {"apiKeyHelper": "exit 3"}, id="failing-api-key-helper"),
        pytest.param({}, {"env": {"ANTHROPIC_API_KEY": API_KEY}}, id="settings-env-block"),
        pytest.param(
            {"CLAUDE_CODE_USE_BEDROCK": "1", "AWS_BEARER_TOKEN_BEDROCK": "bedrock"}, None, id="bedrock-switch"
        ),
        pytest.param({"CLAUDE_CODE_SIMPLE": "1"}, None, id="bare-mode-variable"),
        pytest.param({"ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}, None, id="foreign-base-url"),
        pytest.param({"ANTHROPIC_CUSTOM_HEADERS": "x-api-key: " + API_KEY}, None, id="custom-headers"),
        pytest.param({"CLAUDE_CODE_ENTRYPOINT": "cli"}, None, id="inherited-entrypoint"),
    ],
)
def test_a_login_is_billed_whatever_else_is_set(
    real_cli: FakeAnthropicAPI,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    settings: dict[str, object] | None,
) -> None:
    write_login(home)
    if settings:
        write_settings(home, settings)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ask() == "Hello from the fake API."
    assert_subscription_request(real_cli)
    assert "sdk-cli" in (real_cli.message_requests[0].header("user-agent") or "")


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"ANTHROPIC_API_KEY": API_KEY}, id="api-key-alone"),
        pytest.param({"ANTHROPIC_AUTH_TOKEN": "gateway-token"}, id="auth-token-alone"),
        pytest.param({}, id="nothing"),
    ],
)
def test_without_a_login_nothing_is_sent(
    real_cli: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NotLoggedIn) as info:
        ask()
    assert isinstance(info.value, llm.ModelError)
    assert "/login" in str(info.value)
    assert real_cli.message_requests == []


def test_helper_without_login_is_not_run_and_nothing_is_sent(
    real_cli: FakeAnthropicAPI, home: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "helper-ran"
    write_settings(home, {"apiKeyHelper": f"touch {marker}; echo {API_KEY}"})
    with pytest.raises(NotLoggedIn):
        ask()
    assert real_cli.message_requests == []
    assert not marker.exists()


def test_setup_token_is_a_subscription(real_cli: FakeAnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", ENV_OAUTH_TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    assert ask() == "Hello from the fake API."
    assert_subscription_request(real_cli, ENV_OAUTH_TOKEN)


def test_expired_login_still_goes_to_the_subscription(real_cli: FakeAnthropicAPI, home: Path) -> None:
    # The CLI tries to refresh (unreachable here) and then sends the stored token: never an API key.
    write_login(home, expires_in=-3600)
    assert ask() == "Hello from the fake API."
    assert_subscription_request(real_cli)


def test_login_in_claude_config_dir(
    real_cli: FakeAnthropicAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "claude-config"
    write_login(tmp_path, config_dir=config_dir)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    assert ask() == "Hello from the fake API."
    assert_subscription_request(real_cli)


def test_pro_plan_is_a_subscription(real_cli: FakeAnthropicAPI, home: Path) -> None:
    write_login(home, plan="pro")
    response = llm.get_model("claude-max").prompt("hi")
    response.text()
    assert response.response_json is not None
    assert response.response_json["billing"]["plan"] == "Claude Pro"
    assert response.response_json["billing"]["verified"] is True


def test_api_billing_only_with_opt_in_and_warned(
    real_cli: FakeAnthropicAPI, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_login(home)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    assert ask(allow_api_billing=True) == "Hello from the fake API."
    request = real_cli.message_requests[0]
    assert request.header("x-api-key") == API_KEY
    assert "billed to the API key from ANTHROPIC_API_KEY" in capsys.readouterr().err
    # The same through the environment variable, warned again.
    monkeypatch.setenv("CLAUDE_MAX_ALLOW_API_BILLING", "1")
    ask()
    assert "billed to the API key" in capsys.readouterr().err
