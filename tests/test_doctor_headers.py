"""The doctor and a credential in ANTHROPIC_CUSTOM_HEADERS: the real CLI sends it besides the
subscription token and reports apiKeySource "none", so plain `claude -p` is not cleared."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import pinned_cli_path
from .fakeapi import FakeAnthropicAPI
from .test_doctor import _assert_no_secret, doctor_json, findings, project, run_doctor  # noqa: F401

KEY = "sk-ant-api03-MASKMEh7Gf5Ds3Aa-zzzz"


def test_an_api_key_header_fails_the_plain_verdict(login: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / ".bashrc").write_text(f"export ANTHROPIC_CUSTOM_HEADERS='x-api-key: {KEY}'\n")
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", f"X-Trace: 1\nx-api-key: {KEY}")
    doc = doctor_json("--offline")
    plain, ours = findings(doc, "billing.verdict")
    assert plain["status"] == "fail"
    assert plain["summary"] == (
        "plain `claude -p` in this shell sends an API key (x-api-key) in ANTHROPIC_CUSTOM_HEADERS as well as your "
        "Claude Max plan (claude.ai login)"
    )
    assert 'apiKeySource "none"' in plain["detail"] and "pay-as-you-go" in plain["detail"]
    assert plain["fix"].splitlines() == [
        "remove the x-api-key line from ANTHROPIC_CUSTOM_HEADERS (or unset it)",
        "where it is set: ~/.bashrc:1",
    ]
    assert doc["billing"]["plain_cli"]["route"] == "api_key"
    assert ours["status"] == "ok"  # llm-claude-max removes the variable
    assert doc["exit_code"] == 1
    for args in (["--offline"], ["--offline", "--verbose"], ["--offline", "--json"]):
        _assert_no_secret(run_doctor(*args)[1], [KEY])


def test_a_bearer_header_too(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", "Authorization: Bearer gateway-token")
    plain = findings(doctor_json("--offline"), "billing.verdict")[0]
    assert plain["status"] == "fail" and "a bearer token (Authorization)" in plain["summary"]


def test_without_a_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", f"x-api-key: {KEY}")
    plain = findings(doctor_json("--offline"), "billing.verdict")[0]
    assert (
        plain["summary"] == "plain `claude -p` in this shell sends an API key (x-api-key) in ANTHROPIC_CUSTOM_HEADERS"
    )


def test_other_headers_are_fine(login: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", "X-Team: research\nX-Api-Keyring: no")
    assert [f["status"] for f in findings(doctor_json("--offline"), "billing.verdict")] == ["ok", "ok"]


@pytest.mark.real_cli
def test_the_real_cli_sends_both_and_the_doctor_says_so(
    real_cli: FakeAnthropicAPI, login: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", f"x-api-key: {KEY}")
    # Plain `claude -p`, as a user's script runs it (pointed at the fake API).
    done = subprocess.run(
        [str(pinned_cli_path()), "-p", "--output-format", "stream-json", "--verbose", "hi"],
        capture_output=True,
        text=True,
        env={**os.environ, "ANTHROPIC_BASE_URL": real_cli.url, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    request = real_cli.message_requests[0]
    assert request.header("authorization") == "Bearer sk-ant-oat01-FAKEACCESSTOKEN-aaaa"
    assert request.header("x-api-key") == KEY
    init = next(json.loads(line) for line in done.stdout.splitlines() if '"subtype":"init"' in line)
    assert init["apiKeySource"] == "none"  # the CLI's own report does not show it

    doc = doctor_json("billing", "crosscheck")
    assert findings(doc, "billing.verdict")[0]["status"] == "fail"
    notes = findings(doc, "crosscheck.plain")
    assert notes[-1]["status"] == "warn" and "leaves out an API key (x-api-key)" in notes[-1]["summary"]
