"""`claude-max doctor`: every check against fake HOME trees and environments (never the real ~/.claude)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from llm_claude_max import guard
from llm_claude_max.cli import cli

from .conftest import FakeCLI, write_login
from .fakeapi import FakeAnthropicAPI

SCHEMA = json.loads((Path(__file__).parent.parent / "diagnostics" / "schema.json").read_text())
API_KEY = "sk-ant-api03-DOCTORTESTAPIKEY-1111"


def run_doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["doctor", *args], catch_exceptions=False)
    return result.exit_code, result.output


def doctor_json(*args: str) -> dict[str, Any]:
    code, output = run_doctor("--json", *args)
    document = json.loads(output)
    jsonschema.validate(document, SCHEMA)
    assert document["exit_code"] == code
    return document


def findings(document: dict[str, Any], check_id: str) -> list[dict[str, Any]]:
    return next(c["findings"] for c in document["checks"] if c["id"] == check_id)


def statuses(document: dict[str, Any], check_id: str) -> list[str]:
    return [f["status"] for f in findings(document, check_id)]


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: FakeCLI) -> Path:
    """Run in an empty project directory, with a CLI present and no managed settings."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    managed = tmp_path / "managed"
    managed.mkdir()
    monkeypatch.setenv("CLAUDE_MAX_DOCTOR_MANAGED_DIR", str(managed))
    return directory


def write_settings(path: Path, settings: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))
    return path


# -- the billing verdict in each situation of the billing matrix ----------------------------------------


def test_login_only(login: Path) -> None:
    doc = doctor_json("--offline")
    assert doc["billing"]["plain_cli"]["route"] == "subscription"
    assert doc["billing"]["plain_cli"]["plan"] == "Claude Max"
    assert doc["billing"]["llm_claude_max"]["route"] == "subscription"
    assert statuses(doc, "billing.verdict") == ["ok", "ok"]


def test_api_key_beats_login_with_the_line_that_sets_it(
    login: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / ".zshrc").write_text(f"alias ll=ls\nexport ANTHROPIC_API_KEY={API_KEY}\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    doc = doctor_json("--offline")
    assert doc["exit_code"] == 1
    plain, ours = findings(doc, "billing.verdict")
    assert plain["status"] == "fail"
    assert "although you are logged in" in plain["summary"]
    assert plain["fix"].splitlines() == ["unset ANTHROPIC_API_KEY", "and delete the line that sets it: ~/.zshrc:2"]
    assert doc["billing"]["plain_cli"]["route"] == "api_key"
    assert ours["status"] == "ok" and doc["billing"]["llm_claude_max"]["route"] == "subscription"


def test_dotenv_is_named_as_a_source(login: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / ".env").write_text(f"DEBUG=1\nANTHROPIC_API_KEY={API_KEY}\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    plain = findings(doctor_json("--offline"), "billing.verdict")[0]
    assert plain["status"] == "fail"
    assert "project/.env:2" in plain["fix"]


@pytest.mark.parametrize(
    ("variable", "route"),
    [("ANTHROPIC_AUTH_TOKEN", "gateway_token"), ("CLAUDE_CODE_USE_BEDROCK", "cloud_provider")],
)
def test_other_paid_variables_beat_login(
    login: Path, monkeypatch: pytest.MonkeyPatch, variable: str, route: str
) -> None:
    monkeypatch.setenv(variable, "1" if "USE" in variable else "gateway-token-value")
    doc = doctor_json("--offline")
    assert doc["billing"]["plain_cli"]["route"] == route
    assert findings(doc, "billing.verdict")[0]["fix"].startswith(f"unset {variable}")
    assert doc["billing"]["llm_claude_max"]["route"] == "subscription"


def test_settings_env_block(login: Path, project: Path) -> None:
    path = write_settings(project / ".claude" / "settings.local.json", {"env": {"ANTHROPIC_API_KEY": API_KEY}})
    doc = doctor_json("--offline")
    plain = findings(doc, "billing.verdict")[0]
    assert plain["status"] == "fail"
    assert plain["fix"] == f'delete "ANTHROPIC_API_KEY" from {path} (local settings, env block):3'
    assert doc["billing"]["llm_claude_max"]["route"] == "subscription"


def test_settings_empty_string_cancels_a_shell_export(login: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    write_settings(home / ".claude" / "settings.json", {"env": {"ANTHROPIC_API_KEY": ""}})
    assert doctor_json("--offline")["billing"]["plain_cli"]["route"] == "subscription"


def test_api_key_helper(login: Path, home: Path) -> None:
    write_settings(home / ".claude" / "settings.json", {"apiKeyHelper": f"echo {API_KEY}"})
    doc = doctor_json("--offline")
    plain = findings(doc, "billing.verdict")[0]
    assert doc["billing"]["plain_cli"]["route"] == "api_key_helper"
    assert plain["fix"].startswith('delete "apiKeyHelper" from ~/.claude/settings.json')
    assert doc["billing"]["llm_claude_max"]["route"] == "subscription"


def test_managed_settings_reach_llm_claude_max_too(login: Path, tmp_path: Path) -> None:
    write_settings(tmp_path / "managed" / "managed-settings.json", {"env": {"ANTHROPIC_API_KEY": API_KEY}})
    doc = doctor_json("--offline")
    plain, ours = findings(doc, "billing.verdict")
    assert plain["status"] == "fail"
    assert ours["status"] == "fail" and "refuses every prompt" in ours["summary"]
    assert "ask your administrator" in ours["fix"]


def test_console_key_from_login(login: Path, home: Path) -> None:
    (home / ".claude.json").write_text(json.dumps({"primaryApiKey": API_KEY, "numStartups": 3}))
    doc = doctor_json("--offline")
    assert doc["billing"]["plain_cli"]["credential"] == "primaryApiKey"
    assert findings(doc, "billing.verdict")[1]["status"] == "fail"


def test_setup_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-SETUPTOKENVALUE-2222")
    doc = doctor_json("--offline")
    assert doc["billing"]["plain_cli"]["route"] == doc["billing"]["llm_claude_max"]["route"] == "subscription"
    assert statuses(doc, "login.present") == ["ok"]
    assert findings(doc, "login.present")[0]["summary"].startswith("CLAUDE_CODE_OAUTH_TOKEN holds")


def test_setup_token_through_a_file_descriptor_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR", "3")
    present = findings(doctor_json("--offline"), "login.present")[0]
    assert present["summary"].startswith("CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR holds")
    assert present["source"] == "env:CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR"


def test_api_key_without_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    doc = doctor_json("--offline")
    plain, ours = findings(doc, "billing.verdict")
    assert plain["status"] == "info" and "pay-as-you-go" in plain["summary"]
    assert ours["status"] == "fail" and "/login" in ours["fix"]


def test_nothing_at_all() -> None:
    doc = doctor_json("--offline")
    assert doc["billing"]["llm_claude_max"]["route"] == "not_logged_in"
    assert statuses(doc, "login.present") == ["fail"]


def test_login_in_claude_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "cfg"
    write_login(tmp_path, config_dir=config_dir)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config_dir))
    assert doctor_json("--offline")["billing"]["llm_claude_max"]["route"] == "subscription"


def test_api_billing_opt_in_is_a_warning(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("CLAUDE_MAX_ALLOW_API_BILLING", "1")
    ours = findings(doctor_json("--offline"), "billing.verdict")[1]
    assert ours["status"] == "warn" and "CLAUDE_MAX_ALLOW_API_BILLING" in ours["summary"]


def test_paid_usage_block_and_opt_in(monkeypatch: pytest.MonkeyPatch, login: Path) -> None:
    lock = guard.OverageLock()
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text(json.dumps({"until": int(time.time()) + 600, "limit": "five_hour"}))
    monkeypatch.setenv("CLAUDE_MAX_ALLOW_OVERAGE", "1")
    found = findings(doctor_json("--offline"), "billing.paid-usage")
    assert [f["status"] for f in found] == ["warn", "warn"]
    assert found[0]["fix"] == "claude-max unlock"


# -- login ---------------------------------------------------------------------------------------------


def test_expired_login_without_refresh_token_fails(home: Path) -> None:
    path = write_login(home, expires_in=-3600)
    data = json.loads(path.read_text())
    data["claudeAiOauth"]["refreshToken"] = ""
    path.write_text(json.dumps(data))
    found = findings(doctor_json("--offline"), "login.present")
    assert found[0]["status"] == "fail" and "expired" in found[0]["summary"] and "/login" in found[0]["fix"]


def test_expired_access_token_with_refresh_token_is_fine(home: Path) -> None:
    write_login(home, expires_in=-3600)
    found = findings(doctor_json("--offline"), "login.present")
    assert found[0]["status"] == "ok" and "renews it" in found[0]["summary"]


def test_login_expiring_within_three_days_warns(home: Path) -> None:
    path = write_login(home)
    data = json.loads(path.read_text())
    data["claudeAiOauth"]["refreshTokenExpiresAt"] = int((time.time() + 2 * 86400) * 1000)
    path.write_text(json.dumps(data))
    found = findings(doctor_json("--offline"), "login.present")
    assert found[0]["status"] == "warn" and "expires in 47 h" in found[0]["summary"]


def test_credentials_file_permissions(login: Path) -> None:
    login.chmod(0o644)
    found = findings(doctor_json("--offline"), "login.file")
    assert found[0]["status"] == "warn" and found[0]["fix"] == f"chmod 600 {login}"
    login.chmod(0o600)
    assert statuses(doctor_json("--offline"), "login.file") == ["ok"]


def test_unreadable_credentials(home: Path) -> None:
    (home / ".claude" / ".credentials.json").write_text("{not json")
    found = findings(doctor_json("--offline"), "login.present")
    assert found[0]["status"] == "fail" and "not valid JSON" in found[0]["summary"]


def test_keyring_is_clean_on_headless_linux(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    found = findings(doctor_json("login"), "login.keyring")
    assert found[0]["status"] == "info" and "No keyring backend" in found[0]["summary"]


# -- CLI, endpoint, settings -----------------------------------------------------------------------------


def _fake_executable(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "claude"
    path.write_text("#!/bin/sh\necho '2.0.1 (Claude Code)'\n")
    path.chmod(0o755)
    return path


def test_cli_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLAUDE_MAX_CLI")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = findings(doctor_json("--offline"), "cli.installed")
    assert found[0]["status"] == "fail" and found[0]["fix"] == "npm install -g @anthropic-ai/claude-code"


def test_old_cli_and_several_installs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = _fake_executable(tmp_path / "a")
    _fake_executable(tmp_path / "b")
    monkeypatch.delenv("CLAUDE_MAX_CLI")
    monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}:/usr/bin:/bin")
    found = findings(doctor_json("cli"), "cli.installed")
    assert found[0]["status"] == "warn" and "2.0.1" in found[0]["summary"] and found[0]["fix"] == "claude update"
    assert found[1]["status"] == "warn" and "2 different `claude` executables" in found[1]["summary"]
    assert str(first) in found[1]["fix"]


def test_base_url_and_proxy(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_PROXY")  # set for every test by conftest
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://user:hunter2secret@gateway.example/v1")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("CLAUDE_MAX_BASE_URL", "http://127.0.0.1:9999")
    doc = doctor_json("--offline")
    found = findings(doc, "credentials.endpoint")
    assert [f["status"] for f in found] == ["warn", "warn", "info"]
    assert "gateway.example" in found[0]["summary"] and "hunter2secret" not in json.dumps(doc)
    assert "subscription token" in found[1]["summary"]


def test_broken_settings_file(login: Path, home: Path) -> None:
    (home / ".claude" / "settings.json").write_text("{broken")
    found = findings(doctor_json("--offline"), "credentials.settings")
    assert found[0]["status"] == "warn" and "silently ignores" in found[0]["summary"]


def test_dormant_definition(login: Path, home: Path) -> None:
    (home / ".bashrc").write_text(f"export ANTHROPIC_API_KEY={API_KEY}\n")
    found = findings(doctor_json("--offline"), "credentials.precedence")
    assert any("not set in this shell" in f["summary"] and "~/.bashrc:1" in f["summary"] for f in found)


def test_precedence_table(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    table = findings(doctor_json("--offline"), "credentials.precedence")[0]["table"]
    assert table[0] == ["credential", "value", "from", "claude -p", "llm-claude-max"]
    rows = {row[0]: row for row in table[1:]}
    assert rows["ANTHROPIC_API_KEY"][1:] == [
        "sk-ant-api03-****************1111",
        "shell environment",
        "WINS",
        "removed",
    ]
    assert rows["/login (claude.ai)"][3:] == ["shadowed", "WINS"]
    assert [row[0] for row in table[1:]][:3] == ["cloud provider", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"]


# -- Terms of Service --------------------------------------------------------------------------------


def test_tier_low_for_own_login(login: Path) -> None:
    found = findings(doctor_json("--offline"), "tos.tier")
    assert found[0]["status"] == "ok" and found[0]["links"]


@pytest.mark.parametrize("setup", ["file", "dir", "env"])
def test_raw_oauth_proxies(login: Path, home: Path, monkeypatch: pytest.MonkeyPatch, setup: str) -> None:
    if setup == "file":
        (home / ".claude-max-proxy.json").write_text("{}")
    elif setup == "dir":
        (home / ".cli-proxy-api").mkdir()
        (home / ".cli-proxy-api" / "claude-me@example.com.json").write_text("{}")
    else:
        monkeypatch.setenv("CLAUDE_ACCESS_TOKEN", "sk-ant-oat01-RAWOAUTHTOKEN-3333")
    found = findings(doctor_json("--offline"), "tos.raw-oauth")
    assert found[0]["status"] == "fail" and found[0]["summary"].startswith("High risk")


@pytest.fixture
def fake_dario(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "ok", "oauth": "healthy", "expiresIn": "5h"}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_raw_oauth_proxy_answering_on_loopback(login: Path, monkeypatch: pytest.MonkeyPatch, fake_dario: int) -> None:
    from diagnostics.checks import tos

    monkeypatch.setattr(tos, "RAW_OAUTH_PORTS", ((fake_dario, "dario"),))
    found = findings(doctor_json("tos"), "tos.raw-oauth")
    assert found[0]["status"] == "fail" and f"127.0.0.1:{fake_dario}" in found[0]["summary"]
    # Something else on the port of a proxy is not a proxy.
    monkeypatch.setattr(tos, "RAW_OAUTH_PORTS", ((fake_dario, "CLIProxyAPI"),))
    assert statuses(doctor_json("tos"), "tos.raw-oauth") == ["ok"]


def test_server_bound_beyond_loopback(login: Path) -> None:
    from llm_claude_max.server.records import ServerRecord

    record = ServerRecord({"host": "0.0.0.0", "port": 8089, "public": True})  # this (live) process
    found = findings(doctor_json("--offline"), "tos.tier")
    assert any(f["status"] == "fail" and "beyond this machine" in f["summary"] for f in found)
    record.close()
    assert not any(f["status"] == "fail" for f in findings(doctor_json("--offline"), "tos.tier"))


def test_stale_server_state_is_ignored(login: Path) -> None:
    from llm_claude_max.server import records

    dead = subprocess.Popen(["true"])
    dead.wait()
    records.directory().mkdir(parents=True, exist_ok=True)
    stale = {"host": "0.0.0.0", "port": 8089, "public": True, "pid": dead.pid, "start": 1, "children": []}
    (records.directory() / f"{dead.pid}.json").write_text(json.dumps(stale))
    assert "fail" not in statuses(doctor_json("--offline"), "tos.tier")


# -- output, exit codes, selection -------------------------------------------------------------------


def test_helper_ttl_is_not_a_credential(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_API_KEY_HELPER_TTL_MS", "60000")
    doc = doctor_json("--offline")
    assert doc["billing"]["plain_cli"]["route"] == "subscription" and doc["exit_code"] == 0


def test_bare_mode_ignores_the_login(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_SIMPLE", "1")
    doc = doctor_json("--offline")
    plain = findings(doc, "billing.verdict")[0]
    assert plain["status"] == "info" and "bare mode" in plain["summary"]
    assert doc["billing"]["llm_claude_max"]["route"] == "subscription"  # removed for llm-claude-max
    rows = {row[0]: row for row in findings(doc, "credentials.precedence")[0]["table"][1:]}
    assert rows["/login (claude.ai)"][3:] == ["bare mode", "WINS"]
    assert any("bare mode" in f["summary"] for f in findings(doc, "tos.tier"))


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_bare_mode_switched_off(login: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CLAUDE_CODE_SIMPLE", value)
    doc = doctor_json("--offline")
    assert statuses(doc, "billing.verdict") == ["ok", "ok"]
    assert not any("bare mode" in f["summary"] for f in findings(doc, "tos.tier"))


def test_secrets_in_helper_commands_and_url_queries(login: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_settings(home / ".claude" / "settings.json", {"apiKeyHelper": "echo gateway-QUIETLYq8w7e6r5t4"})
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://gw.example/v1?key=ALSOSECRETz9x8c7&team=a")
    for args in (["--offline"], ["--offline", "--json", "--verbose"]):
        output = run_doctor(*args)[1]
        assert "QUIETLY" not in output and "ALSOSECRET" not in output
        assert "gw.example" in output


def test_human_output_puts_the_verdict_first(login: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / ".zshrc").write_text(f"export ANTHROPIC_API_KEY={API_KEY}\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    code, output = run_doctor("--offline")
    assert code == 1
    lines = output.splitlines()
    assert lines[2] == "[✗] Billing"
    assert "plain `claude -p` in this shell is billed to the API key from ANTHROPIC_API_KEY" in lines[3]
    assert "fix: unset ANTHROPIC_API_KEY" in output and "~/.zshrc:1" in output
    assert "✗ Doctor found 1 failure(s)" in output


def test_exit_codes(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_doctor("--offline")[0] == 0
    monkeypatch.setenv("CLAUDE_MAX_ALLOW_OVERAGE", "1")  # a warning
    assert run_doctor("--offline")[0] == 0
    assert run_doctor("--offline", "--strict")[0] == 3
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)  # a failure
    assert run_doctor("--offline", "--strict")[0] == 1
    assert CliRunner().invoke(cli, ["doctor", "--bogus"]).exit_code == 2
    result = CliRunner().invoke(cli, ["doctor", "no-such-group"])
    assert result.exit_code == 2 and "--list" in result.output


def test_selection_by_group_and_id(login: Path) -> None:
    doc = doctor_json("--offline", "billing", "login.file")
    assert [c["id"] for c in doc["checks"]] == ["billing.verdict", "billing.paid-usage", "login.file"]


def test_offline_skips_the_cli_and_live_needs_opt_in(login: Path) -> None:
    doc = doctor_json("--offline")
    assert statuses(doc, "crosscheck.plain") == ["skip"]
    assert statuses(doc, "live.prompt") == ["skip"]
    assert "--live" in findings(doc, "live.prompt")[0]["summary"]


def test_order_is_deterministic(login: Path) -> None:
    ids = [c["id"] for c in doctor_json("--offline")["checks"]]
    assert ids == [c["id"] for c in doctor_json("--offline")["checks"]]
    assert ids[0] == "billing.verdict"


def test_list(login: Path) -> None:
    code, output = run_doctor("--list")
    assert code == 0
    assert "billing.verdict" in output and "builtin.billing" in output
    assert "live.prompt" in output and "(--live)" in output


# -- masking: no secret, in any mode ------------------------------------------------------------------

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-MASKMEq7Zx3Lp9Vb-aaaa",
    "ANTHROPIC_AUTH_TOKEN": "gateway-MASKMEw2Rt8Yk4Nc-bbbb",
    "ANTHROPIC_CUSTOM_HEADERS": "x-api-key: sk-ant-api03-MASKMEe5Uj1Hg6Dm-cccc",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-MASKMEr9Io3Fs7Qa-dddd",
    "AWS_BEARER_TOKEN_BEDROCK": "bedrock-MASKMEt4Pl8Kj2Wz-eeee",
    "ANTHROPIC_BASE_URL": "https://user:MASKMEy6Ax0Cv5Bn@gateway.example",
    "CLAUDE_ACCESS_TOKEN": "sk-ant-oat01-MASKMEu1Sd9Gh3Jk-ffff",
}
FILE_SECRETS = {
    "helper": "sk-ant-api03-MASKMEi8Ml2Nb7Vc-gggg",
    "settings": "sk-ant-api03-MASKMEo3Qw6Er1Ty-hhhh",
    "console": "sk-ant-api03-MASKMEp0Zs4Xd8Cf-iiii",
}


def _assert_no_secret(output: str, secrets: Iterable[str] = (*SECRETS.values(), *FILE_SECRETS.values())) -> None:
    """No 6-character window of any secret's private core (``MASKME`` and the 10 characters after it;
    the mask may show a secret's public prefix and its last 4 characters) appears in the output."""
    cores = [secret[secret.index("MASKME") :][:16] for secret in secrets]
    for token in ("FAKEACCESSTOKEN", "FAKEREFRESHTOKEN"):  # the login file's tokens (see conftest.write_login)
        assert token not in output
    for core in cores:
        for start in range(len(core) - 5):
            assert core[start : start + 6] not in output, (core, core[start : start + 6])


def test_secrets_never_appear(login: Path, home: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    write_settings(home / ".claude" / "settings.json", {"apiKeyHelper": f"echo {FILE_SECRETS['helper']}"})
    write_settings(project / ".claude" / "settings.json", {"env": {"ANTHROPIC_API_KEY": FILE_SECRETS["settings"]}})
    (home / ".claude.json").write_text(json.dumps({"primaryApiKey": FILE_SECRETS["console"]}))
    (home / ".zshrc").write_text(f"export ANTHROPIC_API_KEY={SECRETS['ANTHROPIC_API_KEY']}\n")
    for args in (["--offline"], ["--offline", "--verbose"], ["--offline", "--json"], ["--offline", "--list"]):
        code, output = run_doctor(*args)
        assert code in (0, 1)
        _assert_no_secret(output)


URL_SECRETS = {  # a token in a query without `=`, in a query value, in a fragment
    "ANTHROPIC_BASE_URL": "https://gateway.example/v1?MASKMEa1Sd2Fg3Hj4K",
    "CLAUDE_MAX_BASE_URL": "https://gateway.example/v1?user=me&key=MASKMEz9Xc8Vb7Nm6L",
    "HTTPS_PROXY": "http://proxy.example:3128/#MASKMEq2We3Rt4Yu5I",
}


def test_secrets_in_endpoint_urls_never_appear(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in URL_SECRETS.items():
        monkeypatch.setenv(name, value)
    for args in (["--offline"], ["--offline", "--verbose"], ["--offline", "--json"]):
        code, output = run_doctor(*args)
        assert code in (0, 1)
        if len(args) > 1:  # the details show the URLs, masked
            assert "gateway.example/v1?" in output and "proxy.example:3128" in output
        _assert_no_secret(output, URL_SECRETS.values())


# -- plugins through a real entry point ---------------------------------------------------------------------

PLUGIN_MODULE = """
from diagnostics import Check, Finding, Status, hookimpl

def good(ctx):
    yield Finding(Status.WARN, "third-party check ran", fix="do the thing")

def crashes(ctx):
    raise RuntimeError("boom sk-ant-api03-PLUGINSECRET0000-zzzz")

def not_findings(ctx):
    return ["oops"]

@hookimpl
def doctor_checks():
    return [
        Check("acme.good", "Acme good", "Acme", good),
        Check("acme.crash", "Acme crash", "Acme", crashes),
        Check("acme.odd", "Acme odd", "Acme", not_findings),
    ]
"""

BROKEN_LISTING = """
from diagnostics import hookimpl

@hookimpl
def doctor_checks():
    raise ValueError("cannot list")
"""


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Installs three distributions with `claude_max_doctor` entry points, the way pip would (dist-info)."""
    site = tmp_path / "site"
    site.mkdir()
    packages = {
        "acme_doctor": ("acme", PLUGIN_MODULE),
        "broken_doctor": ("broken", BROKEN_LISTING),
        "missing_doctor": ("missing", None),
    }
    for distribution, (ep_name, source) in packages.items():
        if source is not None:
            (site / f"{distribution}.py").write_text(textwrap.dedent(source))
        info = site / f"{distribution}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[claude_max_doctor]\n{ep_name} = {distribution}\n")
    monkeypatch.syspath_prepend(str(site))
    for name in list(sys.modules):
        if name.endswith("_doctor"):
            del sys.modules[name]
    return site


def test_third_party_plugins_load_and_crash_in_isolation(plugin_path: Path, login: Path) -> None:
    doc = doctor_json("--offline")
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["acme.good"]["plugin"] == "acme" and by_id["acme.good"]["findings"][0]["status"] == "warn"
    assert by_id["acme.crash"]["status"] == "error"
    assert "RuntimeError: boom" in by_id["acme.crash"]["findings"][0]["summary"]
    assert by_id["acme.odd"]["status"] == "error"
    assert "TypeError: yielded str 'oops', not a Finding" in by_id["acme.odd"]["findings"][0]["summary"]
    assert "PLUGINSECRET" not in json.dumps(doc)
    assert by_id["plugin.broken"]["findings"][0]["summary"] == "The plugin 'broken' failed to list its checks"
    assert by_id["plugin.missing"]["findings"][0]["summary"] == "The plugin 'missing' could not be loaded"
    assert by_id["billing.verdict"]["status"] == "ok"  # the built-ins still ran
    assert doc["exit_code"] == 1
    groups = list(dict.fromkeys(c["group"] for c in doc["checks"]))
    assert groups.index("Acme") > groups.index("Billing")
    code, output = run_doctor("--list")
    assert code == 0 and "acme_doctor 1.0" in output


def test_plugins_can_be_blocked(plugin_path: Path, login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = doctor_json("--offline", "--disable-plugin", "acme", "--disable-plugin", "builtin.tos")
    ids = {c["id"] for c in doc["checks"]}
    assert "acme.good" not in ids and "tos.tier" not in ids and "billing.verdict" in ids
    monkeypatch.setenv("CLAUDE_MAX_DOCTOR_DISABLE_PLUGINS", "broken,missing,acme")
    doc = doctor_json("--offline")
    assert not [c for c in doc["checks"] if c["id"].startswith(("plugin.", "acme."))]
    assert doc["exit_code"] == 0


# -- with the real CLI ----------------------------------------------------------------------------------------


@pytest.mark.real_cli
def test_cross_check_agrees_with_the_cli(
    real_cli: FakeAnthropicAPI, login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    doc = doctor_json("billing", "crosscheck")
    assert [f["status"] for f in findings(doc, "crosscheck.plain")] == ["ok"]
    assert findings(doc, "crosscheck.plain")[0]["data"]["auth_conflict"] == "claude.ai vs ANTHROPIC_API_KEY"
    assert "llm-claude-max uses your Claude Max plan" in findings(doc, "crosscheck.ours")[0]["summary"]
    assert findings(doc, "crosscheck.auth-status")[0]["status"] == "ok"
    assert real_cli.message_requests == []  # the doctor never sends a prompt without --live


@pytest.mark.real_cli
def test_cross_check_sees_what_the_doctor_cannot(
    real_cli: FakeAnthropicAPI, login: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The static reading is pointed away from the managed settings the CLI really reads: only the CLI
    # knows. Simulated by hiding the user settings from the doctor with a different HOME for the scan.
    write_settings(Path(os.environ["HOME"]) / ".claude" / "settings.json", {"apiKeyHelper": f"echo {API_KEY}"})
    from diagnostics.checks import crosscheck
    from diagnostics.context import Context, Options

    ctx = Context(options=Options())
    ctx.discovery.credentials[:] = [c for c in ctx.discovery.credentials if c.name != "apiKeyHelper"]
    found = list(crosscheck.plain(ctx))
    assert found[0].status.value == "warn" and "The CLI says" in found[0].summary


@pytest.mark.real_cli
def test_untrusted_project_commands_are_not_run(
    real_cli: FakeAnthropicAPI, login: Path, project: Path, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    write_settings(
        project / ".claude" / "settings.json",
        {
            "apiKeyHelper": f"touch {ran}-helper; echo sk-ant-api03-x",
            "hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": f"touch {ran}-hook"}]}]},
        },
    )
    doc = doctor_json("crosscheck", "billing")
    assert not list(tmp_path.glob("ran-*")), "the doctor let a project's settings run commands"
    plain = findings(doc, "crosscheck.plain")
    assert plain[0]["status"] == "info" and "--trust-project" in plain[0]["fix"]
    assert doc["billing"]["plain_cli"]["route"] == "api_key_helper"  # still read statically
    doctor_json("--trust-project", "crosscheck")
    assert list(tmp_path.glob("ran-*"))  # trusted: the CLI ran them, as plain `claude -p` here would


@pytest.mark.real_cli
def test_the_verdict_follows_the_cli_when_it_sees_more(
    real_cli: FakeAnthropicAPI, login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A credential the static reading cannot see, simulated by hiding it from the reading only.
    from diagnostics.checks import billing
    from diagnostics.context import Context, Options

    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    ctx = Context(options=Options())
    ctx.discovery.credentials[:] = [c for c in ctx.discovery.credentials if c.name != "ANTHROPIC_API_KEY"]
    plain = next(billing.verdict(ctx))
    assert plain.status.value == "fail" and "the CLI's own answer" in plain.summary
    assert plain.data is not None and plain.data["route"] == "api_key"


@pytest.mark.real_cli
def test_live_probe(real_cli: FakeAnthropicAPI, login: Path) -> None:
    doc = doctor_json("--live", "live")
    found = findings(doc, "live.prompt")
    assert found[0]["status"] == "ok" and "verified" in found[0]["summary"]
    assert found[1]["summary"].startswith("usage window: allowed")
    assert real_cli.message_requests[0].body["model"] == "claude-haiku-5-5"  # type: ignore[index]


@pytest.mark.real_cli
def test_doctor_subprocess_in_the_1800_dollar_case(real_cli: FakeAnthropicAPI, login: Path, home: Path) -> None:
    (home / ".profile").write_text(f"export ANTHROPIC_API_KEY={API_KEY}\n")
    env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY}
    exe = Path(sys.executable).parent
    done = subprocess.run(
        [str(exe / "claude-max"), "doctor"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "fix: unset ANTHROPIC_API_KEY" in done.stdout and "~/.profile:1" in done.stdout
    assert "The CLI confirms: plain `claude -p` here uses the API key" in done.stdout
    assert API_KEY[:-4] not in done.stdout + done.stderr
    done = subprocess.run(
        [str(exe / "llm"), "claude-max", "doctor", "--offline", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["billing"]["plain_cli"]["route"] == "api_key"


def test_credentials_file_mode_is_never_changed(login: Path) -> None:
    before = stat.S_IMODE(login.stat().st_mode)
    run_doctor("--offline")
    assert stat.S_IMODE(login.stat().st_mode) == before


@pytest.mark.real_cli
def test_cross_check_hands_credential_file_descriptors_to_the_cli(
    real_cli: FakeAnthropicAPI, login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read, write = os.pipe()
    os.write(write, API_KEY.encode())
    os.close(write)
    monkeypatch.setenv("CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR", str(read))
    try:
        doc = doctor_json("billing", "crosscheck")
    finally:
        os.close(read)
    plain = findings(doc, "crosscheck.plain")[0]
    assert plain["status"] == "ok" and plain["data"]["cli_route"] == plain["data"]["doctor_route"] == "api_key"
