"""However `llm` or `claude-max serve` ends, its `claude` processes end with it, and nothing more is billed.

The real CLI runs against the fake API, whose reply stalls before its headers. With
``API_TIMEOUT_MS=1500`` a CLI left running retries about every 1.5 s: a second request on the fake API
means a CLI outlived the process that started it (the same stall lasted 281 s and sent a second billed
request in the issue's report).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_claude_max import guard
from llm_claude_max.runner import children
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.runner.command import CommandSpec
from llm_claude_max.runner.session import Text

from . import fake_claude as fc
from . import proctable
from .conftest import FakeCLI
from .fakeapi import FakeAnthropicAPI, Reply
from .llm_command import LLM
from .server_process import start_server

RETRY_MS = 1500


def _wait_for(condition: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _claude_below(root: int) -> list[int]:
    """Running `claude` processes started by ``root`` (they may have been reparented since: by marker)."""
    tree = proctable.descendants(root, proctable.parents())
    return [pid for pid in tree if proctable.is_running(pid) and proctable.is_claude(proctable.argv(pid))]


@pytest.fixture
def stalled(real_cli: FakeAnthropicAPI, login: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAnthropicAPI:
    monkeypatch.setenv("API_TIMEOUT_MS", str(RETRY_MS))
    real_cli.default = Reply(mode="stall_headers", stall_seconds=60)
    return real_cli


@pytest.mark.real_cli
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_to_llm_ends_its_cli_and_nothing_more_is_sent(stalled: FakeAnthropicAPI, sig: signal.Signals) -> None:
    with subprocess.Popen(
        [LLM, "-m", "claude-max", "hi"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy()
    ) as proc:
        try:
            assert _wait_for(lambda: len(stalled.message_requests) == 1), "the prompt never reached the fake API"
            cli = _claude_below(proc.pid)
            assert len(cli) == 1, cli
            if sig is signal.SIGINT:  # Python's handler: it must find the main thread waiting, as a user's does
                proctable.wait_until_blocked(proc.pid)
            proc.send_signal(sig)
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if sig is signal.SIGINT:
        assert proc.returncode == 1  # llm's own Ctrl-C handling: "Error: ..." / Aborted
    else:
        assert proc.returncode == -sig  # died of the signal, as if it had not been caught
    assert _wait_for(lambda: not proctable.is_running(cli[0]), timeout=5), f"claude {cli[0]} outlived llm"
    time.sleep(3 * RETRY_MS / 1000)  # a surviving CLI would have retried by now
    assert len(stalled.message_requests) == 1


@pytest.mark.real_cli
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=lambda s: s.name)
def test_a_server_killed_by_a_signal_leaves_no_cli(
    real_cli: FakeAnthropicAPI, login: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    server = start_server(["--pool-size", "2"], tmp_path / "server.log")
    try:
        assert server.url, (tmp_path / "server.log").read_text()
        assert _wait_for(lambda: len(server.children()) == 2), "the warm pool did not start"
        cli = server.children()
        server.stop(sig)
    finally:
        server.stop()
    assert server.proc.returncode == -sig
    assert _wait_for(lambda: not any(proctable.is_running(pid) for pid in cli), timeout=5)


# -- the registry and the handlers, in a child Python process ------------------------------------------

SCRIPT = """
import asyncio, os, signal, sys, time
from llm_claude_max.runner import children
from llm_claude_max.runner.process import ClaudeProcess

async def main():
    proc = await ClaudeProcess.start([sys.executable, "-c", {child!r}], os.environ, os.getcwd())
    print(proc.pid, flush=True)
    await asyncio.sleep(60)

{setup}
asyncio.run(main())
"""
IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def _run_script(child: str, setup: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(child=child, setup=setup)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_handlers_kill_even_a_child_that_ignores_sigterm(sig: signal.Signals) -> None:
    with _run_script(IGNORES_TERM) as proc:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        proc.send_signal(sig)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -sig
    assert _wait_for(lambda: not proctable.is_running(child), timeout=5)


def test_a_program_that_handles_the_signal_keeps_its_handler() -> None:
    """`nohup llm ...` ignores SIGHUP: so does the CLI's supervision (no handler over SIG_IGN)."""
    setup = "signal.signal(signal.SIGHUP, signal.SIG_IGN)"
    with _run_script("import time; time.sleep(60)", setup) as proc:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None and proctable.is_running(child)
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert _wait_for(lambda: not proctable.is_running(child), timeout=5)


@pytest.mark.parametrize("how", ["setpriv", "preexec_fn"])
def test_a_child_dies_with_the_thread_that_started_it(how: str) -> None:
    """SIGKILL leaves no handler to run: the kernel's parent-death signal ends the child (Linux), set by
    util-linux's setpriv or, without it, in the child before it execs."""
    setup = "children._setpriv = lambda: None" if how == "preexec_fn" else "assert children._setpriv()"
    with _run_script("import time; time.sleep(60)", setup) as proc:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert _wait_for(lambda: not proctable.is_running(child), timeout=5)


def test_stop_all_signals_registered_groups_and_forgets_them() -> None:
    with subprocess.Popen(["sleep", "30"], start_new_session=True) as proc:
        children.register(proc.pid)
        assert proc.pid in children.registered()
        assert children.stop_all(grace=0.5) == [proc.pid]
        assert proc.wait(timeout=5) == -signal.SIGTERM
    assert children.registered() == []


# -- the kill order: signal first, input closed after ----------------------------------------------


async def test_a_cli_paused_at_a_tool_call_is_signalled_before_its_input_closes(fake_cli: FakeCLI) -> None:
    """Closing a paused CLI's input makes it send one more (billed) API request; a signal does not."""
    fake_cli.scenario(steps=[{"emit": fc.init()}, {"emit": fc.delta("x")}, {"paused": True}])
    started = asyncio.Event()

    async def consume() -> None:
        async for event in ClaudeCLI().prompt(CommandSpec(), "hi", policy=guard.Policy()):
            if isinstance(event, Text):
                started.set()  # then waits, inside the runner, for an event that never comes

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(started.wait(), 30)
        # Parked, as the real CLI is once it has shown the call (a signal a moment earlier would end the
        # fake before it could tell which came first).
        deadline = time.monotonic() + 30
        while not any(entry.get("paused") for entry in fake_cli.log()):
            assert time.monotonic() < deadline, "the fake CLI never parked"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()  # the caller gives up: the runner kills the CLI
        with pytest.raises(asyncio.CancelledError):
            await task
    log = [{k: v for k, v in entry.items() if k != "pid"} for entry in fake_cli.log()]
    assert {"paused_exit": 143} in log
    assert {"paused_stdin_eof": True} not in log
