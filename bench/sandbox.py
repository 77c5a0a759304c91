"""A throwaway world for one benchmark: a HOME with a fake login, the fake API, and the commands to run.

Every process a benchmark starts gets ``HOME=<sandbox home>``, which is how leftovers are found and
killed: only processes carrying this sandbox's HOME, never anyone else's `claude`. A long-running
process (a `claude-max serve`) is spared, with its descendants, while it is registered in ``spared``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llm_claude_max.runner.locate import TESTED_VERSION
from tests import proctable
from tests.fakeapi import FakeAnthropicAPI

PINNED_VERSION = TESTED_VERSION
PINNED_CLI = Path.home() / ".cache/llm-claude-max/claude-cli" / PINNED_VERSION / "node_modules/.bin/claude"
LLM = Path(sys.executable).parent / "llm"
CLAUDE_MAX = Path(sys.executable).parent / "claude-max"


def pinned_cli() -> Path:
    """``$CLAUDE_MAX_TEST_CLI`` (set by ``./dev bench``), else the pinned CLI in the cache."""
    path = Path(os.environ.get("CLAUDE_MAX_TEST_CLI") or PINNED_CLI)
    if not path.exists():
        raise SystemExit(f"The pinned Claude Code CLI is not at {path}; run `./dev bench`, which installs it.")
    return path


def write_login(home: Path) -> None:
    """A fake `/login` file, the same shape as ``write_login`` in tests/conftest.py (fake token values)."""
    target = home / ".claude" / ".credentials.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    login = {
        "accessToken": "sk-ant-oat01-FAKEACCESSTOKEN-aaaa",
        "refreshToken": "sk-ant-ort01-FAKEREFRESHTOKEN-bbbb",
        "expiresAt": int((time.time() + 30 * 86400) * 1000),
        "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
        "subscriptionType": "max",
    }
    target.write_text(json.dumps({"claudeAiOauth": login}))
    target.chmod(0o600)


@dataclass(frozen=True)
class Command:
    label: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Sandbox:
    def __init__(self) -> None:
        self.cli = pinned_cli()
        # Short on purpose: the CLI creates Unix sockets under $TMPDIR (108-byte path limit).
        self.root = Path(tempfile.mkdtemp(prefix="cmb-", dir="/tmp"))
        self.home = self.root / "home"
        write_login(self.home)
        self.raw_cwd = self.root / "raw-cwd"  # empty, like the plugin's private workspace
        self.raw_cwd.mkdir()
        self.api = FakeAnthropicAPI()
        self.leftovers: list[str] = []
        """Command lines of processes that outlived their run (killed by :meth:`kill_leftovers`)."""
        self.spared: set[int] = set()
        """PIDs that :meth:`kill_leftovers` leaves alone, with their descendants (running servers)."""

    def __enter__(self) -> Sandbox:
        _become_subreaper()
        self.api.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.kill_leftovers()
        finally:
            self.api.stop()
            shutil.rmtree(self.root, ignore_errors=True)

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "TMPDIR": str(self.root),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            **extra,
        }

    def raw(self, label: str, *args: str) -> Command:
        """The CLI itself, pointed at the fake API, in an empty directory."""
        return Command(label, [str(self.cli), *args], self._env(ANTHROPIC_BASE_URL=self.api.url), self.raw_cwd)

    def plugin_env(self) -> dict[str, str]:
        """The environment of ``llm`` and ``claude-max``: the pinned CLI, the fake API, private state."""
        return self._env(
            CLAUDE_MAX_CLI=str(self.cli),
            CLAUDE_MAX_BASE_URL=self.api.url,
            CLAUDE_MAX_STATE_DIR=str(self.root / "state"),
            LLM_USER_PATH=str(self.root / "llm"),
        )

    def llm(self, label: str, *args: str, plugins: bool = True) -> Command:
        """``llm`` with the plugin configured for the fake API (``plugins=False``: ``LLM_LOAD_PLUGINS=''``)."""
        env = self.plugin_env()
        if not plugins:
            env["LLM_LOAD_PLUGINS"] = ""
        return Command(label, [str(LLM), *args], env, self.root)

    def claude_max(self, label: str, *args: str) -> Command:
        """The ``claude-max`` command (doctor, serve), configured like ``llm``."""
        return Command(label, [str(CLAUDE_MAX), *args], self.plugin_env(), self.root)

    def kill_leftovers(self, timeout: float = 5.0) -> None:
        """SIGKILL every process started with this sandbox's HOME, reap it, and wait until it is gone.

        Processes in ``spared`` and their descendants are left alone.
        """
        found = _processes_with_home(self.home)
        if self.spared and found:
            parents = proctable.parents()
            spared = set().union(*(proctable.descendants(root, parents) for root in self.spared))
            found = {pid: c for pid, c in found.items() if pid not in spared}
        for pid, cmdline in found.items():
            self.leftovers.append(cmdline)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while found and time.monotonic() < deadline:
            for pid in found:
                with contextlib.suppress(ChildProcessError):  # not (yet) re-parented to us
                    os.waitpid(pid, os.WNOHANG)
            found = {pid: c for pid, c in found.items() if proctable.stat(pid)}
            time.sleep(0.01)
        if running := {pid: c for pid, c in found.items() if proctable.is_running(pid)}:
            raise RuntimeError(f"processes survived SIGKILL: {running}")


def _become_subreaper() -> None:
    """Orphans of our children (a `claude` whose `llm` was killed) become our children, so we can reap them."""
    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _processes_with_home(home: Path) -> dict[int, str]:
    marker = f"HOME={home}".encode()
    found: dict[int, str] = {}
    for pid in proctable.pids():
        # zombies have an empty command line and die with their parent
        if marker in proctable.environ(pid) and (args := proctable.argv(pid)):
            found[pid] = " ".join(args)[:200]
    return found
