"""The entry point to the runner: the user's CLI, configured once, used by the plugin, server and doctor."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from .. import catalog, config, guard, paths, progress, routes, validation
from . import promptfile
from .command import CommandSpec, build_env
from .locate import CLI_VAR as CLI
from .locate import find_cli
from .protocol import JSON
from .session import DEFAULT_TIMEOUTS, Session, Timeouts, TurnEvent


class ClaudeCLI:
    """The user's own `claude` executable with our settings.

    ``env`` is the environment the child is derived from (default: this process's); credential and
    route variables in it are never passed on (see :mod:`llm_claude_max.routes`).
    """

    def __init__(
        self, *, cli: str | None = None, env: Mapping[str, str] | None = None, settings: config.Settings | None = None
    ) -> None:
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.settings = settings or config.Settings.from_env(self.env)
        self.path: Path = find_cli(cli, {**self.env, CLI: self.settings.cli} if self.settings.cli else self.env)
        self.lock = guard.OverageLock(self.env)
        promptfile.sweep(self.env)  # system prompt files of processes killed before they removed them

    def child_env(self, policy: guard.Policy, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        return build_env(
            self.env,
            base_url=self.settings.base_url,
            allow_api_billing=policy.allow_api_billing,
            overrides=overrides,
        )

    def session(
        self,
        spec: CommandSpec,
        *,
        policy: guard.Policy,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        cwd: Path | None = None,
    ) -> Session:
        child = self.child_env(policy, spec.extra_env)
        return Session(
            self.path,
            spec,
            env=child,
            cwd=cwd or paths.workspace(self.env),
            policy=policy,
            lock=self.lock,
            timeouts=timeouts,
            pass_fds=_inherited_fds(child),
        )

    async def prompt(
        self,
        spec: CommandSpec,
        content: str | list[JSON],
        *,
        policy: guard.Policy,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        structured: bool = False,
        cwd: Path | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """One prompt in a fresh process: route check, one turn, clean exit (or a kill on any error)."""
        validation.check_request(
            system=spec.system_prompt, messages=[content], json_schema=spec.json_schema, model=spec.model
        )
        async with self.session(spec, policy=policy, timeouts=timeouts, cwd=cwd) as session:
            await session.start()
            progress.phase(progress.WAITING_FOR_API)
            catalog.remember(session.initialize.get("models"), self.env)
            async for event in session.turn(content, structured=structured):
                yield event

    async def probe(
        self, *, plain: bool = False, cwd: Path | None = None, timeout: float = 30.0, setting_sources: str | None = None
    ) -> tuple[guard.RouteReport, dict[str, Any]]:
        """Ask the CLI which route it would use (``initialize``; no API call, nothing billed).

        Does not apply the policy: the caller decides what to make of the route. By default this is
        the route llm-claude-max gets (scrubbed environment, isolated flags). ``plain=True`` asks what
        plain `claude -p` in ``cwd`` would use, with this environment and the user's settings (all of them,
        or ``setting_sources``), for the doctor; such a session can never be sent a prompt. Note that the
        CLI runs the ``apiKeyHelper`` and hooks of the settings it loads.
        """
        timeouts = Timeouts(start=timeout)
        if plain:
            env = dict(self.env)
            env.setdefault("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            spec = CommandSpec(isolated=False, setting_sources=setting_sources)
            session = Session(
                self.path,
                spec,
                env=env,
                cwd=cwd or Path.cwd(),
                policy=guard.Policy(),
                lock=self.lock,
                timeouts=timeouts,
                pass_fds=_inherited_fds(env),
            )
        else:
            session = self.session(CommandSpec(persist_session=False), policy=guard.Policy(), timeouts=timeouts)
        async with session:  # closed when done; killed on any error or cancellation
            route = await session.start(enforce=False)
        catalog.remember(session.initialize.get("models"), self.env)
        return route, session.initialize


def _inherited_fds(env: Mapping[str, str]) -> tuple[int, ...]:
    """File descriptors the CLI is told to read a credential from must stay open in the child."""
    fds = []
    for name in routes.FILE_DESCRIPTORS:
        value = env.get(name, "")
        if value.isdigit():
            try:
                os.fstat(int(value))
            except OSError:
                continue
            fds.append(int(value))
    return tuple(fds)
