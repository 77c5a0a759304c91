"""A new user's first run (issue 12): every message names its real cause and a command that exists for
this user, through the real front doors (`llm`, `claude-max`, `python -m`, the server)."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from llm_claude_max import guard, invocation, progress
from llm_claude_max.runner import builtin_tools
from llm_claude_max.runner.command import CommandSpec, build_argv

from . import fake_claude as fc
from .conftest import FakeCLI, pinned_cli_path
from .fakeapi import FakeAnthropicAPI, Reply, five_hour_limit_headers
from .server_process import Server, start_server

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parent.parent
KEY = "cmx-first-run-key-0123456789"


def run(
    *argv: str, env: dict[str, str] | None = None, merged: bool = False, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """A front door as a subprocess: ``llm``, ``claude-max`` (from this venv) or any argv."""
    program = str(BIN / argv[0]) if "/" not in argv[0] and (BIN / argv[0]).exists() else argv[0]
    return subprocess.run(
        [program, *argv[1:]],
        capture_output=not merged,
        stdout=subprocess.PIPE if merged else None,
        stderr=subprocess.STDOUT if merged else None,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
        **kwargs,  # type: ignore[arg-type]
    )


def named_commands(text: str) -> list[str]:
    """Every `claude-max ...` / `llm claude-max ...` command a message names in backquotes."""
    return re.findall(r"`((?:llm |python -m llm_claude_max|claude-max)[^`]*)`", text)


@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path) -> FakeAnthropicAPI:
    return real_cli


# -- the Claude Code executable -------------------------------------------------------------------------
def test_cli_variable_pointing_nowhere_names_the_variable(fake_cli: FakeCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_MAX_CLI", "/nonexistent/claude")
    done = run("llm", "-m", "claude-max", "hi")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: CLAUDE_MAX_CLI is set to /nonexistent/claude, which does not exist.")
    assert "unset CLAUDE_MAX_CLI" in done.stderr and "npm install" not in done.stderr
    doctor = run("claude-max", "doctor", "--offline", "--json", "cli")
    finding = json.loads(doctor.stdout)["checks"][0]["findings"][0]
    assert finding["status"] == "fail" and finding["summary"] == "CLAUDE_MAX_CLI does not point at an executable"
    assert "CLAUDE_MAX_CLI" in finding["fix"] and "npm" not in finding["fix"]  # fix the variable, not the install


NOT_CLAUDE = {
    "cat": "/bin/cat",  # refuses -p, closes its input
    "prints a version": "#!/bin/sh\necho 'acme-tool 3.2.1'\n",  # a line that is not stream-json, exit 0
}


@pytest.mark.parametrize("kind", NOT_CLAUDE)
def test_an_executable_that_is_not_claude_code_is_named_as_such(
    kind: str, fake_cli: FakeCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    executable = NOT_CLAUDE[kind]
    if not executable.startswith("/"):
        script = tmp_path / "claude"
        script.write_text(executable)
        script.chmod(0o755)
        executable = str(script)
    monkeypatch.setenv("CLAUDE_MAX_CLI", executable)
    done = run("llm", "-m", "claude-max", "hi")
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"Error: CLAUDE_MAX_CLI ({executable}) is not the Claude Code CLI: its --version printed"
    )
    assert "closed its input" not in done.stderr and "not stream-json" not in done.stderr
    finding = json.loads(run("claude-max", "doctor", "--json", "cli").stdout)["checks"][0]["findings"][0]
    assert finding["status"] == "fail" and finding["summary"].endswith("is not the Claude Code CLI")


def test_claude_codes_own_version_line_is_recognised() -> None:
    from llm_claude_max.runner.locate import not_claude_reason

    assert not_claude_reason("2.1.328 (Claude Code)\n", 0) is None
    assert not_claude_reason("", 1) == "its --version printed nothing (exit code 1)"


# -- the state directory, the prompt, Claude Code's tools ----------------------------------------------
def test_unusable_state_dir_is_a_clear_error(
    fake_cli: FakeCLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("CLAUDE_MAX_STATE_DIR", str(not_a_dir))
    expected = f"CLAUDE_MAX_STATE_DIR is set to {not_a_dir}, which llm-claude-max cannot use: Not a directory"
    for argv in (["llm", "-m", "claude-max", "hi"], ["claude-max", "serve", "--port", "0"]):
        done = run(*argv)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(f"Error: {expected}"), done.stderr
        assert "[Errno" not in done.stderr and "Traceback" not in done.stderr
    assert fake_cli.invocations() == []
    doctor = json.loads(run("claude-max", "doctor", "--json").stdout)
    assert doctor["counts"]["error"] == 0  # no crashed check
    assert expected in json.dumps(doctor)


def test_empty_prompt_says_so(fake_cli: FakeCLI) -> None:
    done = run("llm", "-m", "claude-max", "")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: The prompt is empty")
    assert fake_cli.invocations() == []


def test_a_misspelt_claude_tool_is_refused(fake_cli: FakeCLI) -> None:
    done = run("llm", "-m", "claude-max", "-o", "claude_tools", "Grep,Raed", "hi")
    assert done.returncode != 0
    assert "'Raed' is not a Claude Code tool (the CLI would ignore it). Did you mean Read?" in done.stderr
    assert "Traceback" not in done.stderr
    assert fake_cli.invocations() == []


def test_tool_names_and_rules() -> None:
    assert builtin_tools.parse(" Read, Bash(git log:*) ,Agent") == ("Read", "Bash(git log:*)", "Agent")
    for bad, reason in (("read", "Did you mean Read?"), ("Bash(", "is not a tool name"), ("Nope", "not a Claude Code")):
        with pytest.raises(ValueError, match=re.escape(reason)):
            builtin_tools.parse(bad)
    argv = build_argv(Path("c"), CommandSpec(claude_tools=("Read", "Bash(git log:*)", "Bash(git diff:*)")))
    assert "--tools=Read,Bash" in argv  # --tools takes names only: a rule there enables nothing
    # Rules are permissions; Read stays confined to its directory, so it is not allowed everywhere.
    assert "--allowedTools=Bash(git log:*),Bash(git diff:*)" in argv


def _init_tools(fake_api: FakeAnthropicAPI, tmp_path: Path, tools: str) -> list[str]:
    """The `tools` of the pinned CLI's system/init event for ``--tools=<tools>``."""
    env = {**os.environ, "ANTHROPIC_BASE_URL": fake_api.url, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    argv = [str(pinned_cli_path()), "-p", "--input-format=stream-json", "--output-format=stream-json", "--verbose"]
    argv += ["--setting-sources=", "--strict-mcp-config", f"--tools={tools}", "--no-session-persistence"]
    message = {"type": "user", "message": {"role": "user", "content": "hi"}}
    stdin = json.dumps(message) + "\n"
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    init = next(e for e in events if e.get("type") == "system" and e.get("subtype") == "init")
    return list(init["tools"])


@pytest.mark.real_cli
def test_the_tool_list_is_the_pinned_clis(api: FakeAnthropicAPI, tmp_path: Path) -> None:
    assert tuple(_init_tools(api, tmp_path, "default")) == builtin_tools.DEFAULT
    assert set(_init_tools(api, tmp_path, ",".join(sorted(builtin_tools.KNOWN)))) == builtin_tools.KNOWN
    assert _init_tools(api, tmp_path, ",".join(builtin_tools.ALIASES)) == list(builtin_tools.ALIASES.values())
    assert _init_tools(api, tmp_path, "Raed") == []  # what the CLI does with an unknown name: nothing, silently


@pytest.mark.real_cli
def test_a_permission_rule_enables_its_tool(api: FakeAnthropicAPI, tmp_path: Path) -> None:
    import llm

    llm.get_model("claude-max").prompt("hi", claude_tools="Bash(git log:*)", claude_tools_dir=str(tmp_path)).text()
    body = api.message_requests[0].body
    assert body is not None and "Bash" in [t["name"] for t in body["tools"]]


# -- the server: the key, and opt-ins an HTTP client can act on -------------------------------------------
@pytest.fixture
def serve(real_cli: FakeAnthropicAPI, login: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        server = start_server(args, tmp_path / f"server-{len(servers)}.log", env=env)
        servers.append(server)
        assert server.url.startswith("http://"), server.log.read_text()
        return server

    yield start
    for server in servers:
        server.stop()


def test_server_401_names_the_key_and_where_to_get_it(serve: Callable[..., Server], fake_cli: FakeCLI) -> None:
    server = serve("--require-key", env={"CLAUDE_MAX_SERVER_KEY": KEY})
    refused = httpx.get(server.base + "/models", timeout=30)
    assert refused.status_code == 401
    message = refused.json()["error"]["message"]
    assert "`claude-max server-key` prints" in message and "CLAUDE_MAX_SERVER_KEY" in message
    through_llm = run("llm", "-m", "claude-max", "hi", env={"CLAUDE_MAX_SERVER": server.url})
    assert through_llm.returncode == 1 and "CLAUDE_MAX_SERVER_KEY" in through_llm.stderr


def test_http_clients_are_never_told_llm_options(serve: Callable[..., Server], real_cli: FakeAnthropicAPI) -> None:
    server = serve("--pool-size", "0")
    reset = int(time.time()) + 3600
    real_cli.enqueue(Reply(text="Paid words here", headers=five_hour_limit_headers(reset, overage=True)))
    payload = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):  # stopped, then refused at once (the usage reading of that event, or the block)
        answer = httpx.post(server.base + "/chat/completions", json=payload, timeout=60)
        assert answer.status_code == 429
        message = answer.json()["error"]["message"]
        assert "start `claude-max serve` with CLAUDE_MAX_ALLOW_OVERAGE=1 in its environment" in message
        assert "-o " not in message
    assert "no prompt was sent" in message or "Nothing was sent" in message


def test_opt_in_hints_follow_the_front_door() -> None:
    report = guard.RouteReport(guard.Route.API_KEY, "ANTHROPIC_API_KEY")
    with pytest.raises(Exception, match=re.escape("or pass -o allow_api_billing 1")):
        guard.check_route(report, guard.Policy())
    invocation.serving()
    with pytest.raises(Exception, match="CLAUDE_MAX_ALLOW_API_BILLING=1 in its environment") as info:
        guard.check_route(report, guard.Policy())
    assert "-o " not in str(info.value)


# -- a paid answer after an overage stop: shown once, error on its own line --------------------------------
@pytest.mark.parametrize("mode", ["stream", "async", "no-stream"])
def test_overage_stop_shows_the_paid_answer_once(api: FakeAnthropicAPI, mode: str) -> None:
    reset = int(time.time()) + 3600
    api.enqueue(Reply(text="Paid words here", headers=five_hour_limit_headers(reset, overage=True)))
    flags = {"stream": [], "async": ["--async"], "no-stream": ["--no-stream"]}[mode]
    done = run("llm", "-m", "claude-max", *flags, "hi", merged=True)  # stdout and stderr in one place, as on a screen
    assert done.returncode == 1
    assert done.stdout.count("Paid words here") == 1, done.stdout
    if mode == "no-stream":  # nothing was printed as it came: the error carries the answer
        assert done.stdout.startswith("Error: Stopped: your plan's usage window is used up")
        assert "The answer served from extra usage was:\nPaid words here" in done.stdout
    else:
        assert done.stdout.startswith("Paid words here\nError: Stopped: your plan's usage window is used up")
        assert "The answer printed above was served from extra usage." in done.stdout


# -- commands named in messages exist for this user --------------------------------------------------------
def test_messages_name_the_command_of_the_front_door(fake_cli: FakeCLI, api: FakeAnthropicAPI, home: Path) -> None:
    (home / ".claude" / ".credentials.json").unlink()
    done = run("llm", "-m", "claude-max", "hi")
    assert "(`llm claude-max doctor` shows what the CLI sees)" in done.stderr
    for command in named_commands(done.stderr):
        assert run(*command.split(), "--help").returncode == 0, command
    tails = {
        ("claude-max", "doctor", "--offline"): "`claude-max doctor --verbose` shows every finding",
        ("llm", "claude-max", "doctor", "--offline"): "`llm claude-max doctor --verbose` shows every finding",
        (sys.executable, "-m", "llm_claude_max", "doctor", "--offline"): (
            "`python -m llm_claude_max doctor --verbose` shows every finding"
        ),
    }
    for argv, expected in tails.items():
        assert expected in run(*argv).stdout


def test_no_output_points_to_a_file_a_pip_user_lacks(fake_cli: FakeCLI, login: Path) -> None:
    outputs = [run("claude-max", "doctor", "--verbose").stdout]
    for command in ("", "doctor", "serve", "models", "server-key", "unlock"):
        outputs.append(run("claude-max", *command.split(), "--help").stdout)
    for output in outputs:
        local = re.sub(r"https?://\S+", "", output)  # links to web pages are fine; files of this repo are not
        assert "docs/" not in local and ".md" not in local, output
    schema = json.loads(run("claude-max", "doctor", "--json-schema").stdout)
    assert schema["title"].startswith("claude-max doctor --json")


def test_help_everywhere() -> None:
    for argv in (["claude-max"], ["claude-max", "-h"], ["llm", "claude-max"], ["llm", "claude-max", "-h"]):
        done = run(*argv)
        assert done.returncode == 0, (argv, done.stderr)
        assert "Commands:" in done.stdout and "doctor" in done.stdout
        listing = done.stdout.split("Commands:")[1]
        assert "..." not in listing  # every summary whole, none cut mid-word
    summary = next(line for line in run("llm", "--help").stdout.splitlines() if line.strip().startswith("claude-max"))
    assert not summary.endswith("...") and summary.rstrip().endswith(".")


def test_shell_completion_works_as_documented() -> None:
    script = run("claude-max", env={"_CLAUDE_MAX_COMPLETE": "bash_source"}).stdout
    assert "_claude_max_completion" in script
    words = run(
        "claude-max", env={"_CLAUDE_MAX_COMPLETE": "bash_complete", "COMP_WORDS": "claude-max do", "COMP_CWORD": "1"}
    )
    assert "plain,doctor" in words.stdout
    readme = (ROOT / "README.md").read_text()
    assert 'eval "$(_CLAUDE_MAX_COMPLETE=bash_source claude-max)"' in readme


# -- the doctor's public API, and a user's own diagnostics.py ----------------------------------------------
def test_the_doctor_api_under_our_own_name() -> None:
    import diagnostics
    from llm_claude_max import doctor

    assert doctor.hookimpl is diagnostics.hookimpl and doctor.Finding is diagnostics.Finding
    assert doctor.ENTRY_POINT_GROUP == "claude_max_doctor"
    assert "from llm_claude_max.doctor import" in (ROOT / "docs" / "doctor.md").read_text()


def test_a_users_diagnostics_module_cannot_break_the_doctor(fake_cli: FakeCLI, login: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "diagnostics.py").write_text("raise SystemExit('hijacked by ./diagnostics.py')\n")
    for argv, env in (
        ([sys.executable, "-m", "llm", "claude-max", "doctor", "--offline"], {}),  # the cwd comes first on sys.path
        ([sys.executable, "-m", "llm_claude_max", "doctor", "--offline"], {}),
        (["claude-max", "doctor", "--offline"], {"PYTHONPATH": str(project)}),
    ):
        done = run(*argv, env=env, cwd=project)
        assert "hijacked" not in done.stdout + done.stderr, argv
        assert done.stdout.startswith("claude-max doctor"), (argv, done.stderr)


# -- progress on long waits, on a terminal only ------------------------------------------------------------
async def test_a_long_wait_is_named_once_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from llm_claude_max.runner.session import Notice, Text

    async def events() -> object:
        await asyncio.sleep(0.5)  # starting
        progress.phase(progress.WAITING_FOR_API)
        await asyncio.sleep(0.5)  # the API is slow
        yield Notice("Claude API overloaded, retry 1/3 in 0.1 s")
        await asyncio.sleep(0.5)
        yield Text("answer")
        await asyncio.sleep(0.5)  # silence inside the answer: nothing may be printed there
        yield Text(" more")

    monkeypatch.setattr(progress, "enabled", lambda: True)
    got = [e async for e in progress.watch(events(), after=0.3)]  # type: ignore[arg-type]
    assert [type(e).__name__ for e in got] == ["Notice", "Text", "Text"]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("…")[0] for line in lines] == [
        "claude-max: starting the Claude Code CLI",
        "claude-max: waiting for the Claude API",
        "claude-max: waiting for the Claude API",  # a new silence after the retry notice
    ]
    monkeypatch.setattr(progress, "enabled", lambda: False)
    assert len([e async for e in progress.watch(events(), after=0.3)]) == 3  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""


def _on_a_terminal(argv: list[str], *, stop_when: Callable[[str], bool] = lambda s: False) -> tuple[str, str]:
    """Run ``argv`` with stderr on a pseudo-terminal (stdout a pipe); return (stdout, stderr)."""
    leader, follower = pty.openpty()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, text=True, env=os.environ.copy()) as proc:
        os.close(follower)
        err = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            err += chunk
            if stop_when(err.decode(errors="replace")):
                proc.terminate()
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(timeout=60)
    os.close(leader)
    return out, err.decode(errors="replace").replace("\r\n", "\n")


def test_a_stalled_api_is_named_on_a_terminal(fake_cli: FakeCLI) -> None:
    fake_cli.scenario(steps=[{"sleep": progress.AFTER + 1.5}, *fc.answer("late answer")])
    out, err = _on_a_terminal([str(BIN / "llm"), "-m", "claude-max", "hi"])
    assert out == "late answer\n"  # never in the answer
    assert "claude-max: waiting for the Claude API… (" in err
    assert "starting the Claude Code CLI" not in err  # it had started: the line names the right wait
    quiet = run("llm", "-m", "claude-max", "hi")  # stderr not a terminal: nothing
    assert quiet.stdout == "late answer\n" and quiet.stderr == ""


def test_a_slow_server_start_is_named_on_a_terminal(fake_cli: FakeCLI, login: Path) -> None:
    fake_cli.scenario(initialize_delay=progress.AFTER + 2)
    _, err = _on_a_terminal(
        [str(BIN / "claude-max"), "serve", "--port", "0", "--pool-size", "0"],
        stop_when=lambda text: "listening on" in text,
    )
    assert "claude-max serve: starting; asking the Claude Code CLI which credential it will use" in err


def test_a_slow_doctor_check_is_named(fake_cli: FakeCLI, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from llm_claude_max.cli import cli

    fake_cli.scenario(initialize_delay=1.0)
    monkeypatch.setattr(progress, "enabled", lambda: True)
    monkeypatch.setattr(progress, "AFTER", 0.3)
    result = CliRunner().invoke(cli, ["doctor", "crosscheck.ours"])
    assert "claude-max doctor: waiting for The CLI's answer under llm-claude-max (" in result.stderr


# -- ./dev --------------------------------------------------------------------------------------------------
def test_a_clones_dev_script_is_named_as_typed(api: FakeAnthropicAPI, home: Path, tmp_path: Path) -> None:
    """From a clone, the README's first command is `./dev llm ...`: messages name `./dev claude-max ...`."""
    (home / ".claude" / ".credentials.json").unlink()
    uv = os.environ.get("CLAUDE_MAX_TEST_UV") or shutil.which("uv")
    assert uv, "run the suite with ./dev test"
    env = {"PATH": f"{Path(uv).parent}:{os.environ['PATH']}"}  # ./dev finds this uv instead of installing one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dev = os.path.relpath(ROOT / "dev", elsewhere)
    done = run(dev, "llm", "-m", "claude-max", "hi", env=env, cwd=elsewhere)
    assert done.returncode == 1
    assert f"(`{dev} claude-max doctor` shows what the CLI sees)" in done.stderr, done.stderr
    assert run(dev, "claude-max", "doctor", "--help", env=env, cwd=elsewhere).returncode == 0


def test_dev_refuses_an_unknown_command() -> None:
    done = subprocess.run([str(ROOT / "dev"), "nonsense"], capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("dev: unknown command 'nonsense'\n")
