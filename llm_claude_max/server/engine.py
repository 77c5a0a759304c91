"""The server's processes: warm spares, live conversations, admission control, and cleanup.

- **Warm pool**: for each (model, system prompt, options) recently asked for, up to ``pool_size``
  processes are started ahead and already route-checked (``initialize``), waiting for their first
  message (about 0.12 s to the first token instead of 0.45 s cold).
- **Live conversations**: after a turn the process stays alive; a request whose messages extend that
  exact conversation (same caller partition: API key and ``user``) is sent to it as one more stream-json
  message (about 25 ms to the first token). Without a live process, ``--resume`` continues the CLI
  session; without a known session, earlier messages are replayed. Two callers never share a session.
- **Admission**: at most ``max_concurrency`` turns run at once and ``queue`` wait; beyond that a request
  is refused with 429.
- **Cleanup**: every child is killed on shutdown, and the children recorded by servers that died are
  killed at start-up (:mod:`llm_claude_max.server.records`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from .. import catalog, guard
from ..errors import ClaudeMaxError, SessionNotFound
from ..runner.client import ClaudeCLI
from ..runner.command import CommandSpec
from ..runner.protocol import RateLimit
from ..runner.session import Done, Session, Timeouts, TurnEvent
from ..transcript import first_message
from . import records
from .openai_api import ChatRequest, chain_key
from .records import ServerRecord

logger = logging.getLogger("llm_claude_max.server")


def spec_key(spec: CommandSpec) -> str:
    """A hashable identity for the flags a process is started with."""
    return json.dumps(
        [spec.model, spec.system_prompt, spec.placement, spec.json_schema, spec.effort, sorted(spec.extra_env.items())],
        sort_keys=True,
        default=str,
    )


class ServerBusy(ClaudeMaxError):
    """Every slot and queue place is taken."""

    code = "server_busy"
    retry_after: int | None = None
    """Seconds until a place is likely free (the ``Retry-After`` header)."""


@dataclass(frozen=True)
class EngineConfig:
    pool_size: int = 2
    """Warm processes kept in total (0 disables the pool)."""
    max_concurrency: int = 4
    queue: int = 16
    live_sessions: int = 4
    """Processes kept alive after a turn, for the next turn of their conversation."""
    idle_seconds: float = 600.0
    """Warm and live processes idle longer than this are stopped (conversations stay resumable)."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    policy: guard.Policy = field(default_factory=guard.Policy)


@dataclass
class TurnTimes:
    """How long a slot is held, on average (exponentially weighted), for ``Retry-After``."""

    average: float = 10.0
    """Seconds; a guess until turns have been measured."""

    def add(self, seconds: float) -> None:
        self.average = 0.8 * self.average + 0.2 * seconds

    def retry_after(self, waiting: int, slots: int) -> int:
        """Seconds until a new request would likely get a place: the ones ahead, spread over the slots."""
        return max(1, min(300, math.ceil(self.average * (waiting + 1) / slots)))


@dataclass(frozen=True)
class Start:
    continued: str
    """How the conversation continued: new, replayed, live or resumed."""
    process: str
    """Where its process came from: warm (the pool), cold (started for it) or live (its earlier turn's)."""


@dataclass
class Conversation:
    session_id: str
    spec: CommandSpec
    session: Session | None
    last_used: float


@dataclass
class Stats:
    cold_starts: int = 0
    warm_hits: int = 0
    live_hits: int = 0
    resumes: int = 0
    replays: int = 0
    refused_busy: int = 0


class Engine:
    def __init__(self, cli: ClaudeCLI, config: EngineConfig, record: ServerRecord | None = None) -> None:
        self.cli = cli
        self.config = config
        self.record = record
        self.warm: OrderedDict[str, list[Session]] = OrderedDict()
        self._warming: list[str] = []  # keys of warm processes being started
        self.conversations: OrderedDict[str, Conversation] = OrderedDict()
        self.sessions: set[Session] = set()
        self.stats = Stats()
        self.last_rate_limit: RateLimit | None = None
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._turns = TurnTimes()
        self._waiting = 0
        self._running = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> list[int]:
        """Kill what dead servers left running, start the warm pool and the idle reaper."""
        orphans = records.reap_dead(self.cli.env)
        if self.config.pool_size:
            self._refill(CommandSpec())
        self._reaper = asyncio.create_task(self._reap_idle())
        return orphans

    async def stop(self) -> None:
        """Stop every child and remove this server's record (uvicorn then exits by the signal it got, so
        this, not a `finally` around it, is where cleanup must happen)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._kill(s) for s in list(self.sessions)), return_exceptions=True)
        if self.record is not None:
            self.record.close()
        self.warm.clear()
        self.conversations.clear()

    async def _spawn(self, spec: CommandSpec) -> Session:
        session = self.cli.session(spec, policy=self.config.policy, timeouts=self.config.timeouts)
        self.sessions.add(session)
        try:
            await session.start()
            if session.proc is not None and self.record is not None:
                self.record.add(session.proc.pid)
        except BaseException:
            await self._kill(session)
            raise
        catalog.remember(session.initialize.get("models"), self.cli.env)
        return session

    async def _kill(self, session: Session) -> None:
        self.sessions.discard(session)
        await session.kill()
        if session.proc is not None and self.record is not None:
            self.record.remove(session.proc.pid)

    # -- warm pool -----------------------------------------------------------------------------------
    def _warm_count(self) -> int:
        return sum(len(v) for v in self.warm.values()) + len(self._warming)

    def _refill(self, spec: CommandSpec) -> None:
        """Keep up to ``pool_size`` warm processes for ``spec``, the most recently asked for: those of
        less recently used specs give way."""
        if self._closed or not self.config.pool_size:
            return
        key = spec_key(spec)
        self.warm.setdefault(key, [])
        self.warm.move_to_end(key)
        wanted = self.config.pool_size - len(self.warm[key]) - self._warming.count(key)
        for other in list(self.warm):
            if wanted <= 0 or self._warm_count() + wanted <= self.config.pool_size:
                break
            if other != key:
                for session in self.warm.pop(other):
                    self._background(self._kill(session))
        for _ in range(min(wanted, self.config.pool_size - self._warm_count())):
            self._warming.append(key)
            self._background(self._warm_up(key, spec))

    async def _warm_up(self, key: str, spec: CommandSpec) -> None:
        try:
            session = await self._spawn(spec)
        except ClaudeMaxError:
            return  # the next request starts cold and reports the error properly
        finally:
            self._warming.remove(key)
        if self._closed:
            await self._kill(session)
        else:
            self.warm.setdefault(key, []).append(session)

    def _take_warm(self, spec: CommandSpec) -> Session | None:
        sessions = self.warm.get(spec_key(spec), [])
        while sessions:
            session = sessions.pop(0)
            if session.alive:
                return session
            self._background(self._kill(session))  # it crashed while waiting
        return None

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.config.idle_seconds / 2))
            try:
                await self._reap_once(time.monotonic() - self.config.idle_seconds)
            except Exception:  # one bad round must not end reaping for good
                logger.exception("reaping idle processes failed")

    async def _reap_once(self, limit: float) -> None:
        """Stop warm processes started before ``limit``, live ones idle since before it, and crashed ones.
        Works on snapshots: requests take and add processes while this awaits."""
        for sessions in list(self.warm.values()):
            for session in list(sessions):
                if ((session.started_at or 0) < limit or not session.alive) and session in sessions:
                    sessions.remove(session)
                    await self._kill(session)
        for conversation in list(self.conversations.values()):
            live = conversation.session
            if live is not None and (conversation.last_used < limit or not live.alive):
                conversation.session = None
                await self._kill(live)

    # -- admission -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One running turn. Raises :class:`ServerBusy` when the queue is full too."""
        if self._slots.locked() and self._waiting >= self.config.queue:
            self.stats.refused_busy += 1
            busy = ServerBusy(
                f"The server is busy: {self.config.max_concurrency} prompts are running and {self._waiting} waiting."
            )
            busy.retry_after = self._turns.retry_after(self._waiting, self.config.max_concurrency)
            raise busy
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()
            self._turns.add(time.monotonic() - started)

    # -- a turn ------------------------------------------------------------------------------------------
    async def turn(self, request: ChatRequest, partition: str) -> AsyncGenerator[TurnEvent | Start, None]:
        """Run one request; yields a :class:`Start` first, then the turn's events."""
        spec = request.spec()
        prefix = chain_key(partition, request.fingerprint[:-1])
        known = self.conversations.pop(prefix, None)
        session: Session | None = None
        content: Any = list(request.current)
        process = "cold"
        if known is not None and known.session is not None and known.session.alive and known.spec == spec:
            session, continued, process = known.session, "live", "live"
            self.stats.live_hits += 1
        elif known is not None:
            if known.session is not None:
                await self._kill(known.session)
            spec, continued = replace(spec, resume=known.session_id), "resumed"
            self.stats.resumes += 1
        else:
            content = first_message(
                request.history, list(request.current), system=request.system, placement=request.placement
            )
            session = self._take_warm(spec) if self.config.pool_size else None
            continued = "replayed" if request.history else "new"
            if session is not None:
                process = "warm"
                self.stats.warm_hits += 1
            if request.history:
                self.stats.replays += 1
            self._refill(spec)
        if session is None:
            self.stats.cold_starts += 1

        yield Start(continued, process)
        done: Done | None = None
        try:
            if session is None:
                session = await self._spawn(spec)
            try:
                async for event in session.turn(content, structured=request.schema is not None):
                    if isinstance(event, Done):
                        done = event
                        self._remember(request, partition, spec, session, event)
                    yield event
            except SessionNotFound:
                if continued != "resumed":
                    raise
                await self._kill(session)
                content = first_message(
                    request.history, list(request.current), system=request.system, placement=request.placement
                )
                session = await self._spawn(replace(spec, resume=None))
                async for event in session.turn(content, structured=request.schema is not None):
                    if isinstance(event, Done):
                        done = event
                        self._remember(request, partition, spec, session, event)
                    yield event
        finally:
            if done is None and session is not None:
                await self._kill(session)  # failed, cancelled or the client went away: never leave it running

    def _remember(self, request: ChatRequest, partition: str, spec: CommandSpec, session: Session, done: Done) -> None:
        """File the answered conversation (and its still-running process) under its new chain, before the
        last event is handed out: a consumer that stops there must not strand the process."""
        outcome = done.outcome
        self.last_rate_limit = outcome.rate_limit or self.last_rate_limit
        reply = ("assistant", (outcome.text.strip(),))
        key = chain_key(partition, (*request.fingerprint, reply))
        replaced = self.conversations.pop(key, None)
        if replaced is not None and replaced.session is not None and replaced.session is not session:
            self._background(self._kill(replaced.session))  # the same exchange again: the older process is unreachable
        self.conversations[key] = Conversation(
            outcome.session_id, replace(spec, resume=None), session, time.monotonic()
        )
        self._limit_conversations()

    def _limit_conversations(self) -> None:
        live = [c for c in self.conversations.values() if c.session is not None]
        for conversation in live[: max(0, len(live) - self.config.live_sessions)]:
            session, conversation.session = conversation.session, None
            assert session is not None
            self._background(self._kill(session))
        while len(self.conversations) > 10_000:
            self.conversations.popitem(last=False)

    def health(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "waiting": self._waiting,
            "warm": self._warm_count(),
            "live_conversations": sum(1 for c in self.conversations.values() if c.session is not None),
            "processes": len(self.sessions),
            "stats": self.stats.__dict__,
        }
