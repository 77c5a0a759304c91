"""A `claude -p` stream-json process driven turn by turn, with the billing guard in the loop.

``start()`` spawns the CLI and asks it, with ``initialize``, which credential it will use; nothing can
be billed before the guard allows that route. Each ``turn()`` writes one user message and yields
:data:`TurnEvent` values until the CLI's ``result``. One process can serve several turns (the server
keeps warm ones); the ``llm`` plugin uses one turn per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import guard, paths
from ..errors import (
    ClaudeTimeout,
    CLINotFound,
    InvalidRequest,
    PaidUsageRefused,
    ProtocolError,
    StructuredOutputMissing,
)
from . import failure, locate
from .command import ARGV_VALUE_LIMIT, CommandSpec, build_argv
from .process import ClaudeProcess
from .protocol import (
    JSON,
    ApiRetry,
    Assistant,
    ControlRequest,
    ControlResponse,
    Init,
    RateLimit,
    Result,
    TextDelta,
    ThinkingDelta,
    User,
    encode_control_error,
    encode_initialize,
    encode_user_message,
)


@dataclass(frozen=True)
class Timeouts:
    """Watchdogs, in seconds. On expiry the whole process group is killed."""

    start: float = 30.0
    """From spawn until the CLI has answered ``initialize``."""
    idle: float = 180.0
    """Longest silence (no event at all) while a turn runs."""
    total: float | None = 1800.0
    """Hard cap for one turn."""


DEFAULT_TIMEOUTS = Timeouts()


# -- what a turn yields --------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class Notice:
    """Something the user should see on stderr: retries, warnings."""

    message: str


@dataclass(frozen=True)
class ToolUse:
    """Claude Code ran one of its own tools (only when tools were enabled)."""

    name: str
    input: JSON


@dataclass
class Outcome:
    session_id: str
    model: str | None
    text: str
    structured_output: Any
    route: guard.RouteReport
    rate_limit: RateLimit | None
    warnings: list[str]
    result: Result = field(repr=False)

    @property
    def verified(self) -> bool:
        """A subscription route was confirmed in-band by a ``rate_limit_event``."""
        return self.route.route is guard.Route.SUBSCRIPTION and self.rate_limit is not None

    @property
    def usage(self) -> JSON:
        return self.result.usage

    @property
    def cost_usd(self) -> float | None:
        """The CLI's list-price estimate for this turn (not a bill)."""
        per_turn = self.result.raw.get("model_usage_since_last_result")
        if isinstance(per_turn, dict) and per_turn:
            return sum(float(m.get("costUSD") or 0) for m in per_turn.values() if isinstance(m, dict))
        cost = self.result.raw.get("total_cost_usd")
        return float(cost) if isinstance(cost, (int, float)) else None

    def summary(self, continued: str) -> Summary:
        raw = self.result.raw
        return Summary(
            session_id=self.session_id,
            model=self.model,
            usage=self.usage,
            billing={**self.route.as_dict(), "verified": self.verified},
            rate_limit=self.rate_limit.raw if self.rate_limit else None,
            cost_usd=self.cost_usd,
            continued=continued,
            warnings=tuple(self.warnings),
            extra={k: raw.get(k) for k in ("stop_reason", "num_turns", "duration_ms", "duration_api_ms")},
        )


@dataclass(frozen=True)
class Summary:
    """What a finished prompt reports, whether it ran here or through `claude-max serve`."""

    session_id: str | None
    model: str | None
    usage: Mapping[str, Any]
    """Anthropic-style: input_tokens, output_tokens, cache_read/creation_input_tokens, output_tokens_details."""
    billing: Mapping[str, Any]
    rate_limit: Mapping[str, Any] | None
    cost_usd: float | None
    continued: str
    """new, warm, live, resumed or replayed."""
    warnings: Sequence[str] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    outcome: Outcome


TurnEvent = Text | Reasoning | Notice | ToolUse | Done


RETRY_LABELS = {
    "overloaded": "Claude API overloaded",
    "rate_limit": "Claude API rate limited",
    "server_error": "Claude API server error",
    "authentication_failed": "Claude API authentication failed",
}


def retry_notice(event: ApiRetry) -> str:
    label = RETRY_LABELS.get(event.error or "", "Claude API unreachable")
    if event.error_status and event.error not in RETRY_LABELS:
        label = f"Claude API error {event.error_status}"
    total = f"/{event.max_retries}" if event.max_retries else ""
    delay = f" in {event.delay_ms / 1000:.1f} s" if event.delay_ms is not None else ""
    return f"{label}, retry {event.attempt}{total}{delay}"


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
        system = self.spec.system_prompt or ""
        if len(system.encode()) > ARGV_VALUE_LIMIT:
            directory = paths.state_dir(self.env)
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="system-prompt-", suffix=".txt", dir=directory)
            with os.fdopen(fd, "w") as f:
                f.write(system)
            self._system_file = Path(name)
        if self.spec.json_schema is not None and len(json.dumps(self.spec.json_schema).encode()) > ARGV_VALUE_LIMIT:
            raise InvalidRequest(
                f"The schema is larger than {ARGV_VALUE_LIMIT} bytes, too large for the CLI's command line."
            )
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
            await self.proc.send(encode_initialize(request_id))
            answer = await self._await_initialize(request_id)
        except ProtocolError as exc:  # it never answered `initialize`: is it Claude Code at all?
            raise await locate.explain_start_failure(self.cli, self.env, exc) from exc
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
                raise failure.from_exit(await self._exit_code(), self.proc.stderr_tail(), interrupted=False)
            if isinstance(event, ControlResponse) and event.request_id == request_id:
                return event
            if isinstance(event, ControlRequest):
                await self.proc.send(encode_control_error(event.request_id, "not supported by llm-claude-max"))

    async def _auth_status_route(self) -> guard.RouteReport:
        """Fallback for a CLI that does not answer ``initialize``: ``claude auth status --json``."""
        proc = await asyncio.create_subprocess_exec(
            str(self.cli), "auth", "status", "--json",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(self.env), cwd=str(self.cwd), start_new_session=True, pass_fds=tuple(self.pass_fds),
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

    # -- one turn ------------------------------------------------------------------------------
    async def turn(self, content: str | list[JSON], *, structured: bool = False) -> AsyncIterator[TurnEvent]:
        """Send one user message and yield events until the CLI's result."""
        if self.proc is None or self.route is None or self._unchecked:
            raise RuntimeError("Session.start() must succeed, with the route enforced, before a turn")
        if not content:
            raise InvalidRequest("The prompt is empty.")
        self.lock.check(self.policy)
        if self.route_warning:
            yield Notice(self.route_warning)
        await self.proc.send(encode_user_message(content))
        self.turns += 1
        deadline = time.monotonic() + self.timeouts.total if self.timeouts.total else None

        streamed: set[tuple[str | None, str]] = set()  # (message id, "text"/"thinking") with deltas
        completed: set[str | None] = set()  # message ids whose assistant event arrived
        texts: list[str] = []
        rate_limit: RateLimit | None = None
        warnings: list[str] = []
        interrupted = False

        while True:
            event = await self._next(deadline)
            if event is None:
                raise failure.from_exit(await self._exit_code(), self.proc.stderr_tail(), interrupted=interrupted)
            if isinstance(event, Init):
                guard.check_init(event, self.route, self.policy)
                self.session_id = event.session_id
                self.proc.socket_path = event.socket_path
            elif isinstance(event, TextDelta):
                streamed.add((event.message_id, "text"))
                if not structured:
                    texts.append(event.text)
                    yield Text(event.text)
            elif isinstance(event, ThinkingDelta):
                streamed.add((event.message_id, "thinking"))
                yield Reasoning(event.text)
            elif isinstance(event, Assistant):
                if event.api_error is not None:
                    continue
                incomplete = {mid for mid, _ in streamed if mid not in completed and mid != event.message_id}
                completed.add(event.message_id)
                for block in event.content:
                    kind = block.get("type")
                    if kind == "text" and (event.message_id, "text") not in streamed and not structured:
                        # The CLI fell back to a non-streaming request: the whole text arrives here.
                        if incomplete and texts:
                            yield Notice(
                                "claude-max: the stream was interrupted; the CLI asked again without streaming, "
                                "the full answer follows"
                            )
                        texts.append(block.get("text", ""))
                        yield Text(block.get("text", ""))
                    elif kind == "thinking" and (event.message_id, "thinking") not in streamed:
                        yield Reasoning(str(block.get("thinking", "")))
                    elif kind == "tool_use" and block.get("name") != "StructuredOutput":
                        yield ToolUse(str(block.get("name")), block.get("input") or {})
            elif isinstance(event, User):
                if "[Request interrupted by user" in json.dumps(event.content):
                    interrupted = True
            elif isinstance(event, RateLimit):
                rate_limit = event
                try:
                    warning = guard.check_rate_limit(event, self.policy)
                except PaidUsageRefused as exc:
                    # Stop at once: the CLI could make further (paid) requests in this turn.
                    self.lock.set(event, self.session_id)
                    await self.kill()
                    exc.partial_text = "".join(texts)
                    raise
                if warning:
                    warnings.append(warning)
                    yield Notice(warning)
            elif isinstance(event, ApiRetry):
                yield Notice(retry_notice(event))
            elif isinstance(event, ControlRequest):
                await self.proc.send(encode_control_error(event.request_id, "not supported by llm-claude-max"))
            elif isinstance(event, Result):
                if event.is_error or event.subtype != "success":
                    raise failure.from_result(event, rate_limit, self.proc.stderr_tail())
                self.session_id = event.session_id or self.session_id
                if structured:
                    if event.structured_output is None:
                        raise StructuredOutputMissing(
                            "The model did not return output matching the schema (the CLI's structured_output "
                            f"is null). Its last text was: {event.text[:500]!r}"
                        )
                    text = json.dumps(event.structured_output, ensure_ascii=False)
                    texts = [text]
                    yield Text(text)
                outcome = Outcome(
                    session_id=self.session_id or "",
                    model=self._model_of(event),
                    text="".join(texts),
                    structured_output=event.structured_output,
                    route=self.route,
                    rate_limit=rate_limit,
                    warnings=warnings,
                    result=event,
                )
                if self.route.route is guard.Route.SUBSCRIPTION and rate_limit is None:
                    warning = (
                        "claude-max: the CLI sent no rate_limit_event, so subscription billing of this prompt is "
                        "unverified (recorded in the response)"
                    )
                    warnings.append(warning)
                    yield Notice(warning)
                yield Done(outcome)
                return

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

    @staticmethod
    def _model_of(result: Result) -> str | None:
        usage = result.raw.get("model_usage_since_last_result") or result.raw.get("modelUsage")
        if isinstance(usage, dict) and usage:
            return str(next(iter(usage)))
        return None

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
