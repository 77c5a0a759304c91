"""What checks share: the environment, the options, and facts computed once on first use.

Checks run concurrently; every fact here is a :class:`fact`: computed once, under a lock, so two checks
asking for the CLI probe start the CLI only once (``functools.cached_property`` has no lock on 3.12+).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from llm_claude_max import config, guard
from llm_claude_max.errors import ClaudeMaxError
from llm_claude_max.runner import locate

from . import keychain
from .discovery import Discovery, Login, Source, login_from_blob, managed_dirs

T = TypeVar("T")


class fact(Generic[T]):
    """A property computed once per context, even when several threads ask for it at once."""

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    @overload
    def __get__(self, instance: None, owner: type) -> fact[T]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance: object | None, owner: type) -> fact[T] | T:
        if instance is None:
            return self
        values: dict[str, Any] = instance.__dict__.setdefault("_facts", {})
        if self.name not in values:
            with instance.__dict__["_fact_lock"](self.name):
                if self.name not in values:
                    values[self.name] = self.compute(instance)
        return values[self.name]  # type: ignore[no-any-return]


MANAGED_DIR_VAR = "CLAUDE_MAX_DOCTOR_MANAGED_DIR"
"""Overrides where managed settings are read from (tests use it)."""


@dataclass(frozen=True)
class Options:
    offline: bool = False
    """No CLI subprocess and no network probe."""
    live: bool = False
    """Allow checks that send a real prompt (spends a little quota)."""
    verbose: bool = False
    trust_project: bool = False
    """Let the CLI load this directory's own settings, even if they make it run commands."""


@dataclass(frozen=True)
class CLIFound:
    path: Path
    version: str | None
    version_source: str
    """``--version``, ``cache``, ``package.json`` or ``path``."""
    on_path: tuple[Path, ...]


@dataclass(frozen=True)
class CLIMissing:
    message: str
    on_path: tuple[Path, ...]


@dataclass(frozen=True)
class Probe:
    """The CLI's own answer to ``initialize`` (no API call)."""

    route: guard.RouteReport | None
    error: str | None = None
    complete: bool = True
    """The CLI loaded every settings file the static reading considered."""


class Context:
    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        options: Options | None = None,
        platform: str = sys.platform,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.home = Path(self.env.get("HOME") or Path.home())
        self.cwd = (cwd or Path.cwd()).resolve()
        self.options = options or Options()
        self.platform = platform
        self.settings = config.Settings.from_env(self.env)
        locks: dict[str, threading.Lock] = {}
        guard_lock = threading.Lock()

        def lock_for(name: str) -> threading.Lock:
            with guard_lock:
                return locks.setdefault(name, threading.Lock())

        self._fact_lock = lock_for

    @fact
    def managed_dirs(self) -> tuple[Path, ...]:
        if self.env.get(MANAGED_DIR_VAR):
            return (Path(self.env[MANAGED_DIR_VAR]),)
        return managed_dirs(self.platform)

    @fact
    def keychain_state(self) -> keychain.KeyringState | None:
        """On macOS Claude Code keeps the login in the Keychain: its item (metadata only), probed once.
        ``None`` on other platforms."""
        if self.platform != "darwin":
            return None
        return keychain.probe(keychain.CLAUDE_SERVICE, self.env.get("USER"), metadata=True)

    @fact
    def keychain_login(self) -> Login | None:
        state = self.keychain_state
        if state is None or state.state != "backend" or not state.item_present:
            return None
        meta = state.metadata
        blob = {"claudeAiOauth": {**meta, "refreshToken": "present" if meta.get("refreshToken") else ""}}
        return login_from_blob(blob, Source("keychain", f"macOS Keychain item {keychain.CLAUDE_SERVICE!r}"))

    @fact
    def discovery(self) -> Discovery:
        return Discovery(
            self.env,
            home=self.home,
            cwd=self.cwd,
            managed=self.managed_dirs,
            keychain_login=self.keychain_login,
            allow_api_billing=self.settings.allow_api_billing,
        )

    @fact
    def cli(self) -> CLIFound | CLIMissing:
        on_path = tuple(locate.all_on_path(self.env))
        try:
            path = locate.find_cli(None, self.env)
        except ClaudeMaxError as exc:
            return CLIMissing(exc.message, on_path)
        version, source = locate.cached_version(path, self.env), "cache"
        if version is None:
            version, source = locate.version_without_running(path)
        if version is None and not self.options.offline:
            version, source = locate.read_version(path, self.env), "--version"
        return CLIFound(path, version, source, on_path)

    def _probe(self, *, plain: bool) -> Probe:
        from llm_claude_max.runner.client import ClaudeCLI

        # The CLI runs the apiKeyHelper and hooks of the settings it loads: a directory's own
        # (an untrusted clone's) are left out unless the user trusts it.
        untrusted = plain and bool(self.discovery.project_commands) and not self.options.trust_project
        try:
            client = ClaudeCLI(env=self.env, settings=self.settings)
            sources = "user" if untrusted else None
            route, _ = asyncio.run(client.probe(plain=plain, cwd=self.cwd, timeout=30, setting_sources=sources))
        except ClaudeMaxError as exc:
            return Probe(None, exc.message, complete=not untrusted)
        return Probe(route, complete=not untrusted)

    @fact
    def plain_probe(self) -> Probe:
        """What plain `claude -p` in this directory and shell says it will use."""
        return self._probe(plain=True)

    @fact
    def our_probe(self) -> Probe:
        """What the CLI says it will use when llm-claude-max runs it."""
        return self._probe(plain=False)

    @fact
    def auth_status(self) -> dict[str, Any] | str:
        """``claude auth status --json`` in this shell (a dict), or why it could not be read (a str)."""
        import json
        import subprocess

        cli = self.cli
        if isinstance(cli, CLIMissing):
            return cli.message
        env = dict(self.env)
        env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        try:
            done = subprocess.run(
                [str(cli.path), "auth", "status", "--json"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=20,
                env=env,
                cwd=self.cwd,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`claude auth status` failed: {exc}"
        try:
            data = json.loads(done.stdout)
        except ValueError:
            return f"`claude auth status --json` printed no JSON (exit code {done.returncode})"
        return data if isinstance(data, dict) else "`claude auth status --json` printed no JSON object"
