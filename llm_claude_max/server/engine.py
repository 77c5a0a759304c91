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
- **Cleanup**: every child is killed on shutdown, and children recorded by a previous server that died
  are killed at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import catalog, guard, paths
from ..errors import ClaudeMaxError, SessionNotFound
from ..runner.client import ClaudeCLI
from ..runner.command import CommandSpec
from ..runner.protocol import RateLimit
from ..runner.session import Done, Session, Timeouts, TurnEvent
from ..transcript import first_message
from .openai_api import ChatRequest, chain_key


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


class ChildRegistry:
    """PIDs of our `claude` children on disk, so a restarted server can kill what a crashed one left."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pids: dict[int, int | None] = {}

    @staticmethod
    def _start_time(pid: int) -> int | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[19])
        except (OSError, IndexError, ValueError):
            return None

    @staticmethod
    def _is_claude(pid: int) -> bool:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            return False
        return "claude" in Path(argv0).name

    def reap_orphans(self) -> list[int]:
        """Kill (process group and all) the recorded children that still run; returns their PIDs."""
        try:
            recorded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            recorded = []
        killed = []
        for entry in recorded if isinstance(recorded, list) else []:
            pid, started = entry.get("pid"), entry.get("start")
            if (
                isinstance(pid, int)
                and self._start_time(pid) == started
                and started is not None
                and self._is_claude(pid)
            ):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
        self._write()
        return killed

    def add(self, pid: int) -> None:
        self.pids[pid] = self._start_time(pid)
        self._write()

    def remove(self, pid: int) -> None:
        if self.pids.pop(pid, False) is not False:
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"pid": p, "start": s} for p, s in self.pids.items()]))
        tmp.replace(self.path)


class Engine:
    def __init__(self, cli: ClaudeCLI, config: EngineConfig) -> None:
        self.cli = cli
        self.config = config
        self.registry = ChildRegistry(paths.state_dir(cli.env) / "server-children.json")
        self.warm: OrderedDict[str, list[Session]] = OrderedDict()
        self._warming: set[str] = set()
        self.conversations: OrderedDict[str, Conversation] = OrderedDict()
        self.sessions: set[Session] = set()
        self.stats = Stats()
        self.last_rate_limit: RateLimit | None = None
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._waiting = 0
        self._running = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> list[int]:
        orphans = self.registry.reap_orphans()
        if self.config.pool_size:
            self._refill(CommandSpec())
        self._reaper = asyncio.create_task(self._reap_idle())
        return orphans

    async def stop(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._kill(s) for s in list(self.sessions)), return_exceptions=True)
        self.warm.clear()
        self.conversations.clear()

    async def _spawn(self, spec: CommandSpec) -> Session:
        session = self.cli.session(spec, policy=self.config.policy, timeouts=self.config.timeouts)
        self.sessions.add(session)
        try:
            await session.start()
        except BaseException:
            await self._kill(session)
            raise
        if session.proc is not None:
            self.registry.add(session.proc.pid)
        catalog.remember(session.initialize.get("models"), self.cli.env)
        return session

    async def _kill(self, session: Session) -> None:
        self.sessions.discard(session)
        pid = session.proc.pid if session.proc is not None else None
        await session.kill()
        if pid is not None:
            self.registry.remove(pid)

    # -- warm pool -----------------------------------------------------------------------------------
    def _warm_count(self) -> int:
        return sum(len(v) for v in self.warm.values()) + len(self._warming)

    def _refill(self, spec: CommandSpec) -> None:
        """Keep one warm process for ``spec``, making room by stopping those of the least recently used specs."""
        if self._closed or not self.config.pool_size:
            return
        key = spec_key(spec)
        self.warm.setdefault(key, [])
        self.warm.move_to_end(key)
        if self.warm[key] or key in self._warming:
            return
        for other in list(self.warm):
            if self._warm_count() < self.config.pool_size:
                break
            if other != key:
                for session in self.warm.pop(other):
                    self._background(self._kill(session))
        if self._warm_count() >= self.config.pool_size:
            return
        self._warming.add(key)

        async def warm_up() -> None:
            try:
                session = await self._spawn(spec)
            except ClaudeMaxError:
                return  # the next request starts cold and reports the error properly
            finally:
                self._warming.discard(key)
            if self._closed:
                await self._kill(session)
            else:
                self.warm.setdefault(key, []).append(session)

        self._background(warm_up())

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
            limit = time.monotonic() - self.config.idle_seconds
            for sessions in list(self.warm.values()):
                for session in list(sessions):
                    if (session.started_at or 0) < limit or not session.alive:
                        sessions.remove(session)
                        await self._kill(session)
            for conversation in self.conversations.values():
                if conversation.session is not None and conversation.last_used < limit:
                    session, conversation.session = conversation.session, None
                    await self._kill(session)

    # -- admission -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One running turn. Raises :class:`ServerBusy` when the queue is full too."""
        if self._slots.locked() and self._waiting >= self.config.queue:
            self.stats.refused_busy += 1
            raise ServerBusy(
                f"The server is busy: {self.config.max_concurrency} prompts are running and {self._waiting} waiting."
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()

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
                    yield event
        finally:
            if done is None and session is not None:
                await self._kill(session)  # failed, cancelled or the client went away: never leave it running
        assert session is not None and done is not None
        outcome = done.outcome
        self.last_rate_limit = outcome.rate_limit or self.last_rate_limit
        reply = ("assistant", (outcome.text.strip(),))
        key = chain_key(partition, (*request.fingerprint, reply))
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
