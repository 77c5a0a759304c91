"""`claude-max serve --install-service` / `--uninstall-service`: the generated systemd unit and launchd
agent, checked as files (and with `systemd-analyze verify`), and their command run for real.

The service manager is never the real one: `systemctl` and `launchctl` are stand-ins on PATH that
record how they were called."""

from __future__ import annotations

import os
import plistlib
import re
import select
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llm_claude_max.server import service

from .conftest import FakeCLI

BIN = Path(sys.executable).parent


@pytest.fixture
def managers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-ins for systemctl and launchctl first on PATH; each call is appended to calls.log."""
    bin_dir = tmp_path / "managers"
    bin_dir.mkdir()
    for name in ("systemctl", "launchctl"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls.log"\n')
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "calls.log"


def claude_max(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "claude-max"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def exec_start(unit: str) -> list[str]:
    """The argv of ExecStart, unquoted as systemd does (``%%`` -> ``%``, ``$$`` -> ``$``)."""
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(line.removeprefix("ExecStart="))]


def environment(unit: str) -> dict[str, str]:
    pairs = [
        shlex.split(line.removeprefix("Environment="))[0]
        for line in unit.splitlines()
        if line.startswith("Environment=")
    ]
    return dict(pair.replace("%%", "%").split("=", 1) for pair in pairs)


def test_systemd_unit_with_the_users_options(managers: Path, tmp_path: Path) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-api03-NEVERWRITTEN-0000",
        "CLAUDE_MAX_SERVER_KEY": "cmx-neverwritten-0123456",
    }
    done = claude_max(
        "serve", "--port", "9123", "--pool-size", "1", "--cors-origin", "http://a.example/%x$y",
        "--install-service",
        env={"CLAUDE_MAX_ALLOW_OVERAGE": "1", **secrets},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit_path = tmp_path / "config" / "systemd" / "user" / "claude-max.service"
    assert done.stdout.splitlines()[0] == f"Wrote {unit_path}"
    assert stat.S_IMODE(unit_path.stat().st_mode) == 0o600
    unit = unit_path.read_text()
    assert exec_start(unit) == [
        sys.executable, "-m", "llm_claude_max", "serve",
        "--port", "9123", "--pool-size", "1", "--cors-origin", "http://a.example/%x$y",
    ]  # fmt: skip
    env = environment(unit)
    assert env["PATH"] == os.environ["PATH"] and env["CLAUDE_MAX_ALLOW_OVERAGE"] == "1"
    for secret in secrets.values():
        assert secret not in unit
    assert managers.read_text().splitlines() == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now claude-max.service",
    ]
    assert "Remove it with: claude-max serve --uninstall-service" in done.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    spec = service.for_platform(["--port", "9124", "--cors-origin", "http://x/%h $HOME"], platform="linux")
    unit = tmp_path / "claude-max.service"
    unit.write_bytes(spec.content)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_uninstall_stops_and_removes(managers: Path, tmp_path: Path) -> None:
    assert claude_max("serve", "--install-service").returncode == 0
    managers.unlink()
    done = claude_max("serve", "--uninstall-service")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "config" / "systemd" / "user" / "claude-max.service").exists()
    assert managers.read_text().splitlines() == [
        "systemctl --user disable --now claude-max.service",
        "systemctl --user daemon-reload",
    ]
    again = claude_max("serve", "--uninstall-service")
    assert again.returncode == 0 and again.stdout.startswith("No service is installed")


def test_without_a_service_manager_the_commands_are_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    bare = tmp_path / "bare"
    bare.mkdir()
    done = subprocess.run(  # no systemctl on this PATH
        [sys.executable, "-m", "llm_claude_max", "serve", "--install-service"],
        capture_output=True, text=True, check=False, env={**os.environ, "PATH": str(bare)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Start it with: systemctl --user daemon-reload && systemctl --user enable --now claude-max.service" in (
        done.stdout
    )
    assert "Remove it with: python -m llm_claude_max serve --uninstall-service" in done.stdout


def test_launchd_agent(tmp_path: Path) -> None:
    spec = service.for_platform(
        ["--port", "9125"], env={"HOME": str(tmp_path), "PATH": "/opt/homebrew/bin:/usr/bin"}, platform="darwin"
    )
    assert spec.path == tmp_path / "Library" / "LaunchAgents" / "dev.llm-claude-max.serve.plist"
    agent = plistlib.loads(spec.content)
    assert agent["Label"] == "dev.llm-claude-max.serve"
    assert agent["ProgramArguments"] == [sys.executable, "-m", "llm_claude_max", "serve", "--port", "9125"]
    assert agent["EnvironmentVariables"] == {"PATH": "/opt/homebrew/bin:/usr/bin"}
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["StandardErrorPath"] == str(tmp_path / "Library" / "Logs" / "llm-claude-max" / "serve.log")
    assert spec.start == (("launchctl", "bootstrap", f"gui/{os.getuid()}", str(spec.path)),)
    assert spec.stop == (("launchctl", "bootout", f"gui/{os.getuid()}/dev.llm-claude-max.serve"),)
    with pytest.raises(ValueError, match=r"Linux .* and macOS"):
        service.for_platform([], platform="win32")


def test_the_units_command_serves(managers: Path, tmp_path: Path, fake_cli: FakeCLI, login: Path) -> None:
    assert claude_max("serve", "--port", "0", "--pool-size", "0", "--install-service").returncode == 0
    unit = (tmp_path / "config" / "systemd" / "user" / "claude-max.service").read_text()
    env = {"HOME": os.environ["HOME"], **environment(unit)}  # what systemd would give it
    env.update({k: v for k, v in os.environ.items() if k.startswith(("FAKE_CLAUDE", "LLM_CLAUDE_MAX_TEST"))})
    with subprocess.Popen(exec_start(unit), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "the service's command printed no URL"
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+\n", proc.stdout.readline())
        finally:
            proc.terminate()
            proc.wait(timeout=30)
