"""The server's processes: the shared :class:`~llm_claude_max.runner.pool.Pool` (paused, live, resumed,
seeded conversations, per caller) plus what only a server needs.

- **Warm spares**: for each set of flags recently asked for, up to ``pool_size`` processes are started
  ahead and route-checked (``initialize``), waiting for a new conversation's first message (about 0.1 s
  to the first token instead of 0.45 s cold).
- **Recycling** (``recycle``, on by default): a process whose conversation is let go is reset and kept
  for the next new conversation of its caller with the same flags, on any model (:mod:`..runner.recycle`);
  warm spares are then kept per set of flags without the model. A spare is made from the least recently
  used live process rather than a new one when live processes are at their limit.
- **Admission**: at most ``max_concurrency`` steps run at once and ``queue`` wait; beyond that a request
  is refused with :class:`~llm_claude_max.errors.ServerBusy` (429).
- **Records**: every child is recorded, so a server that died has its children killed by the next one
  (:mod:`llm_claude_max.server.records`); all of them are ended on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .. import guard
from ..errors import ClaudeMaxError, ServerBusy
from ..request import TurnRequest, spec_key
from ..runner.client import ClaudeCLI
from ..runner.command import CommandSpec
from ..runner.pool import Pool, Start
from ..runner.protocol import RateLimit
from ..runner.recycle import Recycling, flags_key
from ..runner.session import Deferred, Done, Session, Timeouts, TurnEvent
from . import records
from .records import ServerRecord

logger = logging.getLogger("llm_claude_max.server")
WARM_UP = ({"type": "text", "text": "(a warm spare: no message is ever sent)"},)


@dataclass(frozen=True)
class EngineConfig:
    pool_size: int = 2
    """Warm processes kept in total (0 disables warm spares)."""
    max_concurrency: int = 4
    queue: int = 16
    live_sessions: int = 4
    """Processes kept alive after a finished answer, for the next turn of their conversation."""
    max_paused: int = 8
    """Processes kept paused at tool calls, waiting for their results."""
    idle_seconds: float = 600.0
    """Warm, live and paused processes idle longer than this are stopped (conversations stay resumable)."""
    timeouts: Timeouts = field(default_factory=Timeouts)
    policy: guard.Policy = field(default_factory=guard.Policy)
    recycle: bool = True
    """Reset finished conversations' processes for new ones (up to ``pool_size`` per caller and flags)."""
    max_conversations: int = 50
    """A recycled process is ended after this many conversations."""

    def recycling(self) -> Recycling:
        spares = self.pool_size if self.recycle else 0
        return Recycling(spares=spares, total=spares, max_conversations=self.max_conversations)


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


@dataclass
class Stats:
    cold_starts: int = 0
    warm_hits: int = 0
    recycled_hits: int = 0
    live_hits: int = 0
    paused_hits: int = 0
    resumes: int = 0
    seeded: int = 0
    replays: int = 0
    refused_busy: int = 0

    def count(self, start: Start) -> None:
        if start.process == "warm":
            self.warm_hits += 1
        elif start.process == "recycled":
            self.recycled_hits += 1
        name = {"live": "live_hits", "paused": "paused_hits", "resumed": "resumes", "seeded": "seeded",
                "replayed": "replays"}.get(start.continued)  # fmt: skip
        if name is not None:
            setattr(self, name, getattr(self, name) + 1)


class Engine(Pool):
    def __init__(self, cli: ClaudeCLI, config: EngineConfig, record: ServerRecord | None = None) -> None:
        super().__init__(
            keep_live=config.live_sessions,
            max_paused=config.max_paused,
            idle_seconds=config.idle_seconds,
            recycling=config.recycling(),
        )
        self.cli = cli
        self.config = config
        self.record = record
        self.warm: OrderedDict[str, list[Session]] = OrderedDict()
        self._warming: list[str] = []
        self.stats = Stats()
        self.last_rate_limit: RateLimit | None = None
        self.stopping = asyncio.Event()
        """Set when the server shuts down: waiting requests end with 503, streams with an error event."""
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._turns = TurnTimes()
        self._turns = TurnTimes()
        self._waiting = 0
        self._running = 0
        self._active_at = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_spawn = self._recorded
        self.on_end = self._unrecorded
        self.recycler.on_ready = self._trim_warm

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> list[int]:
        """Kill what dead servers left running, start the warm spares and the idle reaper."""
        orphans = records.reap_dead(self.cli.env)
        if self.config.pool_size:
            self._refill(CommandSpec())
        self._ensure_reaper()
        return orphans

    def begin_stop(self) -> None:
        """The server is shutting down (SIGTERM, Ctrl-C): requests still waiting end with 503 at once, and the
        running steps' processes are ended, so their answers end now with an error (a stream with an error
        event) rather than being cut by the server's exit. Call on the event loop."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._background(self.end_all())

    async def stop(self) -> None:
        """End every child and remove this server's record (uvicorn exits by the signal it got, so this, in
        the lifespan's shutdown, is where cleanup happens)."""
        self.stopping.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.warm.clear()
        await self.close()
        if self.record is not None:
            self.record.close()

    async def _spawn(
        self, spec: Any, request: TurnRequest, cli: ClaudeCLI, policy: guard.Policy, timeouts: Timeouts
    ) -> Session:
        warming = request.new == WARM_UP
        if not warming:
            self.stats.cold_starts += 1
        return await super()._spawn(spec, request, cli, policy, timeouts)

    def _recorded(self, session: Session) -> None:
        if session.proc is not None and self.record is not None:
            self.record.add(session.proc.pid)

    def _unrecorded(self, session: Session) -> None:
        if session.proc is not None and self.record is not None:
            self.record.remove(session.proc.pid)

    # -- a step ------------------------------------------------------------------------------------
    async def run_step(self, request: TurnRequest) -> AsyncGenerator[Start | TurnEvent, None]:
        """One step of ``request`` with the server's CLI, policy and timeouts."""
        async for event in self.run(request, self.cli, policy=self.config.policy, timeouts=self.config.timeouts):
            if isinstance(event, Start):
                self.stats.count(event)
            elif isinstance(event, (Done, Deferred)):
                self.last_rate_limit = event.outcome.rate_limit or self.last_rate_limit
            yield event

    # -- warm spares -------------------------------------------------------------------------------
    async def fresh(
        self, request: TurnRequest, cli: ClaudeCLI, policy: guard.Policy, timeouts: Timeouts
    ) -> tuple[Session, str]:
        recycled = await self.recycler.take(request)
        session = None
        if recycled is None and self.config.pool_size and request.cwd is None:
            session = self._take_warm(self._warm_key(request.spec))
        if request.cwd is None:
            self._refill(request.spec, self.recycler.key(request))
        if recycled is not None:
            return recycled, "recycled"
        if session is not None:
            self.sessions.add(session)
            if await self._switch_model(session, request):
                return session, "warm"
        return await self._spawn(request.spec, request, cli, policy, timeouts), "cold"

    def _warm_key(self, spec: CommandSpec) -> str:
        """Warm spares are kept per set of flags; without the model when ``set_model`` picks it."""
        return flags_key(spec) if self.config.recycle else spec_key(spec)

    async def _switch_model(self, session: Session, request: TurnRequest) -> bool:
        if not self.config.recycle:
            return True
        try:
            await self.recycler.use(session, request.spec.model)
        except ClaudeMaxError as exc:
            logger.warning("a warm CLI process could not switch its model and was ended: %s", exc)
            await self._end(session)
            return False
        return True

    def _warm_count(self) -> int:
        return sum(len(v) for v in self.warm.values()) + len(self._warming)

    def _refill(self, spec: CommandSpec, recycle: str | None = None) -> None:
        """Keep up to ``pool_size`` warm processes for ``spec``, the most recently asked for: those of less
        recently used flags give way. Recycled spares (``recycle``: their key) count; one is made from a live
        process, when live processes are at their limit, rather than a new process started."""
        if self.stopping.is_set() or not self.config.pool_size:
            return
        key = self._warm_key(spec)
        self.warm.setdefault(key, [])
        self.warm.move_to_end(key)
        wanted = self.config.pool_size - len(self.warm[key]) - self._warming.count(key)
        if recycle is not None:
            wanted -= self.recycler.count(recycle)
            while wanted > 0 and self.recycle_least_recent(recycle):
                wanted -= 1
        for other in list(self.warm):
            if wanted <= 0 or self._warm_count() + wanted <= self.config.pool_size:
                break
            if other != key:
                for session in self.warm.pop(other):
                    self._background(self._end(session))
        for _ in range(min(wanted, self.config.pool_size - self._warm_count())):
            self._warming.append(key)
            self._background(self._warm_up(key, spec))

    async def _warm_up(self, key: str, spec: CommandSpec) -> None:
        request = TurnRequest(spec, (), WARM_UP)
        try:
            session = await self._spawn(spec, request, self.cli, self.config.policy, self.config.timeouts)
        except ClaudeMaxError:
            return  # the next request starts cold and reports the error properly
        finally:
            self._warming.remove(key)
        self.sessions.discard(session)  # a spare: the pool owns it only once taken
        if self.stopping.is_set():
            await self._end(session)
        else:
            self.warm.setdefault(key, []).append(session)

    def _trim_warm(self, recycle: str) -> None:
        """A recycled spare became ready: processes ready for these flags stay within ``pool_size`` (memory no
        higher than with warm spares alone); a warm one, slower to its first token, gives way."""
        warm = self.warm.get(self.recycler.flags_of(recycle), [])
        while warm and len(warm) + self.recycler.count(recycle) > self.config.pool_size:
            self._background(self._end(warm.pop(0)))

    def _take_warm(self, key: str) -> Session | None:
        sessions = self.warm.get(key, [])
        while sessions:
            session = sessions.pop(0)
            if session.alive:
                return session
            self._background(self._end(session))  # it crashed while waiting
        return None

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reap(self, before: float) -> None:
        super().reap(before)
        for sessions in list(self.warm.values()):
            for session in list(sessions):
                if (session.started_at or 0) < before or not session.alive:
                    sessions.remove(session)
                    self._background(self._end(session))

    async def close(self) -> None:
        spares = [s for sessions in self.warm.values() for s in sessions]
        self.warm.clear()
        await asyncio.gather(*(self._end(s) for s in spares), return_exceptions=True)
        await super().close()

    # -- admission -----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One running step. Raises :class:`ServerBusy` when the queue is full too."""
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
            self._active_at = time.monotonic()
            self._slots.release()
            self._turns.add(time.monotonic() - started)

    def quiet_for(self) -> float:
        """How long no step has run or waited (0 while one does)."""
        if self._running or self._waiting:
            return 0.0
        return time.monotonic() - self._active_at

    def health(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "waiting": self._waiting,
            "warm": self._warm_count(),
            "recycled": self.recycler.health(),
            "live_conversations": len(self.live),
            "paused_conversations": len({id(h) for h in self.paused.values()}),
            "processes": len(self.sessions) + self._warm_count(),
            "stats": self.stats.__dict__,
            "at": time.time(),
        }
