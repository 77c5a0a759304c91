"""A `claude -p` stream-json process driven step by step, with the billing guard in the loop.

``start()`` spawns the CLI and asks it, with ``initialize``, which credential it will use; nothing can
be billed before the guard allows that route. Each ``turn()`` writes one user message and yields
:data:`~llm_claude_max.runner.turn.TurnEvent` values until the CLI's ``result``: :class:`Done`, or
:class:`Deferred` when the model called the caller's tools. A deferred session is *paused*: it waits,
alive, for ``continue_with(results)``. One process can serve many turns (the server keeps live ones).

Every control request the CLI sends while we read is answered by one
:class:`~llm_claude_max.runner.control.Dispatcher`; every event goes through one
:class:`~llm_claude_max.runner.turn.TurnState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import guard, usage
from ..errors import (
    APIError,
    ClaudeMaxError,
    ClaudeTimeout,
    CLINotFound,
    InvalidRequest,
    PaidUsageRefused,
    ProtocolError,
)
from ..tools import NOT_RUN, ToolCall, ToolResult
from . import children, failure, locate, promptfile
from .command import ARGV_VALUE_LIMIT, MAX_OUTPUT_TOKENS, CommandSpec, build_argv
from .control import Dispatcher
from .process import ClaudeProcess
from .protocol import (
    JSON,
    ControlRequest,
    ControlResponse,
    Event,
    Init,
    RateLimit,
    Result,
    encode_initialize,
    encode_tool_results,
    encode_user_message,
)
from .timeouts import DEFAULT_TIMEOUTS, Timeouts
from .turn import (
    ClaudeToolRan,
    Deferred,
    Done,
    Notice,
    Outcome,
    Reasoning,
    StructuredDelta,
    Summary,
    Text,
    ToolCallArgs,
    ToolCallStarted,
    TurnEvent,
    TurnState,
    retry_notice,
)

__all__ = [
    "DEFAULT_TIMEOUTS",
    "ClaudeToolRan",
    "Deferred",
    "Done",
    "Notice",
    "Outcome",
    "Reasoning",
    "Session",
    "StructuredDelta",
    "Summary",
    "Text",
    "Timeouts",
    "ToolCallArgs",
    "ToolCallStarted",
    "TurnEvent",
    "retry_notice",
]


class Session:
    """One CLI process. Use as ``async with Session(...) as s: await s.start(); async for e in s.turn(...)``."""

    _ids = itertools.count(1)

    def __init__(
        self,
        cli: Path,
        spec: CommandSpec,
        *,
        env: Mapping[str, str],
        cwd: Path,
        policy: guard.Policy,
        lock: guard.OverageLock,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.cli = cli
        self.spec = spec
        self.env = env
        self.cwd = cwd
        self.policy = policy
        self.lock = lock
        self.timeouts = timeouts
        self.pass_fds = pass_fds
        self.proc: ClaudeProcess | None = None
        self.route: guard.RouteReport | None = None
        self.route_warning: str | None = None
        self.initialize: JSON = {}
        """The CLI's answer to ``initialize`` (models, account, version)."""
        self.session_id: str | None = None
        self.turns = 0
        self.started_at: float | None = None
        self._unchecked = False
        self._system_file: Path | None = None
        self.dispatcher = Dispatcher(spec.caller_tools)
        self.verified = False
        """A ``rate_limit_event`` of this process confirmed the subscription route (sent once per process)."""
        self.busy = False
        """A step is running (events are being read)."""
        self._early: list[Any] = []
        """Events read while waiting for ``initialize`` that belong to the first step."""
        self.paused: tuple[ToolCall, ...] = ()
        """The caller's tool calls this session waits for (it ended its last step deferred)."""

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    # -- start and the route check -------------------------------------------------------------
    async def start(self, *, enforce: bool = True) -> guard.RouteReport:
        """Spawn the CLI and check the billing route. Raises before anything is sent.

        ``enforce=False`` only reports the route (the doctor's probe); no turn may follow then.
        """
        if enforce:
            self.lock.check(self.policy)
        if self.spec.json_schema is not None and len(json.dumps(self.spec.json_schema).encode()) > ARGV_VALUE_LIMIT:
            raise InvalidRequest(
                f"The schema is larger than {ARGV_VALUE_LIMIT} bytes, too large for the CLI's command line."
            )
        if promptfile.needed(self.spec.system_prompt):  # too long for argv, or holds a NUL
            self._system_file = promptfile.write(self.spec.system_prompt or "", self.env)
        argv = build_argv(self.cli, self.spec, system_prompt_file=self._system_file)
        self.started_at = time.monotonic()
        try:
            self.proc = await ClaudeProcess.start(argv, self.env, self.cwd, self.pass_fds)
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                raise InvalidRequest("The request is too large for the CLI's command line.") from exc
            raise CLINotFound(f"Could not start the Claude Code CLI at {self.cli}: {exc}") from exc
        request_id = f"llm-claude-max-init-{next(self._ids)}"
        try:
            await self.proc.send(encode_initialize(request_id, hooks=bool(self.spec.caller_tools)))
            answer = await self._await_initialize(request_id)
        except ProtocolError as exc:  # it never answered `initialize`: is it Claude Code at all?
            raise await locate.explain_start_failure(self.cli, self.env, exc) from exc
        self._forget_system_file()  # read by now: a SIGKILL of this process can no longer leave it behind
        if answer.ok:
            self.initialize = answer.response
            account = answer.response.get("account")
            conflict = answer.response.get("auth_conflict")
            self.route = guard.route_from_account(account if isinstance(account, dict) else {}, conflict)
        else:
            self.route = await self._auth_status_route()
        self._unchecked = not enforce
        if enforce:
            self.route_warning = guard.check_route(self.route, self.policy)
        return self.route

    async def _await_initialize(self, request_id: str) -> ControlResponse:
        """Read until the answer to ``initialize``, answering the CLI's own requests meanwhile; a ``result``
        before it (``--resume`` of a session the CLI cannot find) is that error."""
        assert self.proc is not None
        deadline = time.monotonic() + self.timeouts.start
        while True:
            remaining = deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(remaining, 0.001)):
                    event = await self.proc.read_event()
            except TimeoutError:
                raise ClaudeTimeout(
                    f"The Claude Code CLI did not start within {self.timeouts.start:g} s.",
                    stderr=self.proc.stderr_tail() or None,
                ) from None
            if event is None:
                raise await self._exit_error(interrupted=False)
            if isinstance(event, ControlResponse) and event.request_id == request_id:
                return event
            if isinstance(event, ControlRequest):
                await self.proc.send(self.dispatcher.answer(event))
            elif isinstance(event, Result) and (event.is_error or event.subtype != "success"):
                raise failure.from_result(event, None, self.proc.stderr_tail())
            elif isinstance(event, Result):
                self._early.append(event)

    async def _auth_status_route(self) -> guard.RouteReport:
        """Fallback for a CLI that does not answer ``initialize``: ``claude auth status --json``."""
        argv, dies_with_us = children.launch([str(self.cli), "auth", "status", "--json"])
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(self.env), cwd=str(self.cwd), start_new_session=True, pass_fds=tuple(self.pass_fds),
            **dies_with_us,
        )  # fmt: skip
        try:
            async with asyncio.timeout(self.timeouts.start):
                out, _ = await proc.communicate()
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise ClaudeTimeout(
                    "`claude auth status` did not answer; the billing route could not be checked."
                ) from None
            raise
        try:
            status = json.loads(out)
        except ValueError:
            raise ProtocolError(
                "The CLI answered neither `initialize` nor `auth status --json`; refusing to send."
            ) from None
        token = self.env.get("CLAUDE_CODE_OAUTH_TOKEN") or self.env.get("CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR")
        return guard.route_from_auth_status(status if isinstance(status, dict) else {}, oauth_token_set=bool(token))

    # -- steps ---------------------------------------------------------------------------------
    async def turn(self, content: str | list[JSON], *, structured: bool = False) -> AsyncIterator[TurnEvent]:
        """Send one user message and yield events until the CLI's result."""
        self._ready()
        if self.paused:
            raise InvalidRequest("The model is waiting for the results of its tool calls; send those first.")
        if not content:
            raise InvalidRequest("The prompt is empty.")
        self.lock.check(self.policy)
        if self.route_warning:
            yield Notice(self.route_warning)
        await self._send(encode_user_message(content))
        async for event in self._step(structured):
            yield event

    async def continue_with(
        self, results: Sequence[ToolResult], *, structured: bool = False
    ) -> AsyncIterator[TurnEvent]:
        """Give a paused session the results of its tool calls, in one message, and yield the next step."""
        self._ready()
        pending = {call.id for call in self.paused}
        unknown = [r.call_id for r in results if r.call_id not in pending]
        if not pending or unknown:
            raise InvalidRequest(f"No tool call is waiting for these results: {', '.join(unknown) or 'none'}.")
        given = {r.call_id for r in results}
        missing = [ToolResult(c.id, NOT_RUN, True) for c in self.paused if c.id not in given]
        self.lock.check(self.policy)
        await self._send(encode_tool_results([r.block() for r in (*results, *missing)]))
        self.paused = ()
        async for event in self._step(structured):
            yield event

    async def redeferred(self) -> tuple[ToolCall, ...]:
        """After ``--resume`` of a session that ended at a deferred call: the CLI asks our hook again at
        start-up, we defer again, and it reports the call; the session is paused on it."""
        self._ready()
        async for event in self._step(False, redefer=True):
            if isinstance(event, Deferred):
                return event.calls
        raise ProtocolError("The resumed CLI did not pause at its tool call.")

    async def between_turns(self, line: bytes, until: Callable[[Event], bool]) -> list[Event]:
        """Write one line (a command, a control request) to this idle process (its last step ended with the
        model's answer) and read until ``until`` holds, answering the CLI's own requests meanwhile; the
        events read are returned. Used between conversations (:mod:`.recycle`): a ``system/init`` read here
        passes the same billing check as in a turn."""
        self._ready()
        assert self.proc is not None and self.route is not None
        if self.paused:
            raise ProtocolError("The CLI waits for tool results: it is not idle.")
        deadline = time.monotonic() + self.timeouts.start
        events: list[Event] = []
        await self.proc.send(line)
        while True:
            event = await self._next(deadline)
            if event is None:
                raise failure.from_exit(await self._exit_code(), self.proc.stderr_tail(), interrupted=False)
            if isinstance(event, ControlRequest):
                await self.proc.send(self.dispatcher.answer(event))
                continue
            if isinstance(event, Init):
                guard.check_init(event, self.route, self.policy)
                self.proc.socket_path = event.socket_path
                self.session_id = event.session_id
            events.append(event)
            if until(event):
                return events

    def _ready(self) -> None:
        if self.proc is None or self.route is None or self._unchecked:
            raise RuntimeError("Session.start() must succeed, with the route enforced, before a turn")

    async def _send(self, data: bytes) -> None:
        assert self.proc is not None
        await self.proc.send(data)
        self.turns += 1

    async def _step(self, structured: bool, *, redefer: bool = False) -> AsyncIterator[TurnEvent]:
        assert self.proc is not None and self.route is not None
        state = TurnState(
            route=self.route,
            policy=self.policy,
            names=self.dispatcher.names,
            structured=structured,
            verified=self.verified,
            session_id=self.session_id,
            redefer=redefer,
            cut_at_limit=MAX_OUTPUT_TOKENS in self.spec.extra_env,
        )
        deadline = time.monotonic() + self.timeouts.total if self.timeouts.total else None
        self.busy = True
        try:
            async for item in self._read_step(state, deadline):
                yield item
        finally:
            self.busy = False

    async def _read_step(self, state: TurnState, deadline: float | None) -> AsyncIterator[TurnEvent]:
        assert self.proc is not None
        while state.finished is None:
            event = self._early.pop(0) if self._early else await self._next(deadline)
            if event is None:
                raise await self._exit_error(interrupted=state.interrupted)
            if isinstance(event, ControlRequest):
                await self.proc.send(self.dispatcher.answer(event))
                continue
            if isinstance(event, Init):
                self.proc.socket_path = event.socket_path
            noted = None
            if isinstance(event, RateLimit):  # recorded for `claude-max usage`; never raises
                noted = usage.observe(event, self.initialize.get("account"), self.env)
            try:
                out = state.feed(event)
            except PaidUsageRefused as refused:
                # Stop at once: the CLI could make further (paid) requests in this turn.
                if state.rate_limit is not None:  # never raises; says so in the error if it cannot be saved
                    self.lock.set(state.rate_limit, state.session_id, refused)
                await self.kill()
                raise
            except ClaudeMaxError as exc:
                if isinstance(exc, APIError) and exc.stderr is None:
                    exc.stderr = self.proc.stderr_tail() or None
                raise
            self.verified = state.verified
            self.session_id = state.session_id or self.session_id
            if noted:  # the plan's window is nearly used up: once, after the guard's own verdict
                state.warnings.append(noted)
                out.append(Notice(noted))
            for item in out:
                if isinstance(item, Deferred):
                    self.paused = item.calls
                if isinstance(item, Done) and item.outcome.cut:
                    await self.kill()  # it would go on by itself, past the caller's limit
                yield item

    async def _exit_error(self, *, interrupted: bool) -> ClaudeMaxError:
        """The error for an exit without a result: a crash, unless we stopped the CLI ourselves."""
        assert self.proc is not None
        killed = self.proc.killed  # read first: _exit_code stops a CLI that lingers after its output ended
        code = await self._exit_code()
        return failure.from_exit(code, self.proc.stderr_tail(), interrupted=interrupted, killed=killed)

    async def _exit_code(self) -> int:
        """After the end of output: the exit code (a CLI that closed stdout but lingers is killed)."""
        assert self.proc is not None
        try:
            return await self.proc.wait(5)
        except TimeoutError:
            await self.kill()
            return self.proc.returncode if self.proc.returncode is not None else -9

    async def _next(self, deadline: float | None) -> Any:
        assert self.proc is not None
        timeout = self.timeouts.idle
        hard = False
        if deadline is not None and deadline - time.monotonic() < timeout:
            timeout, hard = max(deadline - time.monotonic(), 0.001), True
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.read_event()
        except TimeoutError:
            stderr = self.proc.stderr_tail() or None
            await self.kill()
            if hard:
                raise ClaudeTimeout(
                    f"No complete answer within {self.timeouts.total:g} s; the CLI was stopped.", stderr=stderr
                ) from None
            raise ClaudeTimeout(
                f"The CLI sent nothing for {self.timeouts.idle:g} s; it was stopped.", stderr=stderr
            ) from None

    # -- ending ---------------------------------------------------------------------------------
    async def close(self) -> None:
        if self.proc is not None:
            await self.proc.finish()
        self._forget_system_file()

    async def kill(self) -> None:
        if self.proc is not None:
            await self.proc.kill()
        self._forget_system_file()

    def _forget_system_file(self) -> None:
        if self._system_file is not None:
            self._system_file.unlink(missing_ok=True)
            self._system_file = None
