"""CLI processes that outlive a step, and how every conversation continues: one strategy for the
`llm` plugin and the server.

A request continues its conversation the first way that applies (:meth:`Pool.run`):

1. **paused**: it carries results for tool calls a process of this caller is paused on (same flags):
   they are written to that process, which goes on (no new process, nothing re-sent);
2. **live**: a process whose conversation so far is exactly this request's history takes the new message;
3. **resumed**: the caller recorded a CLI session for this conversation and its transcript exists:
   ``--resume`` it and send the new message;
4. **seeded**: the earlier messages are written as a new CLI session (:mod:`.seed`) and resumed, with
   real tool calls and results; results for tool calls make it pause on the last call at start-up and
   take its result;
5. **replayed**: (if seeding fails) the earlier messages as text in the first message of a new process;
6. **new**: no history: a *recycled* process (reset after an earlier conversation of this caller with the
   same flags, :mod:`.recycle`), else a fresh one.

Paused and live processes are kept per caller partition, bounded in number, and ended after
``idle_seconds`` by a reaper (SIGTERM, then SIGKILL: a paused process is never ended by closing its input).
With recycling on, a live process whose conversation is let go (beyond the limit) is reset and kept for
the next new conversation instead of ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .. import catalog, guard, paths, progress
from ..content import Block, Turn, first_message, system_block, text_block
from ..errors import InvalidRequest, SessionNotFound
from ..request import TurnRequest, fingerprint, spec_key
from ..tools import ToolNames, ToolResult
from . import seed
from .client import ClaudeCLI
from .command import SystemPlacement
from .recycle import NO_RECYCLING, Recycler, Recycling
from .session import Deferred, Done, Session, Timeouts, TurnEvent

logger = logging.getLogger("llm_claude_max.pool")
KNOWN_LIMIT = 10_000
"""Conversations whose CLI session is remembered for ``--resume``."""


@dataclass(frozen=True)
class Start:
    """How a request's conversation continued (the first event :meth:`Pool.run` yields)."""

    continued: str
    """paused, live, resumed, seeded, replayed or new"""
    process: str
    """Where its process came from: paused or live (kept from an earlier step), recycled (reset after another
    conversation), warm (started ahead) or cold."""


@dataclass
class Held:
    """A process kept after its step, with what it may be used for."""

    session: Session
    spec: str
    partition: str
    last_used: float
    recycle: str | None = None
    """Where its process goes, reset, once its conversation is let go (:mod:`.recycle`); None: ended."""


@dataclass(frozen=True)
class Plan:
    continued: str
    session: Session | None = None
    """A kept process to use (paused, live); None: start one."""
    resume: str | None = None
    content: list[Block] | None = None
    """The user message to send; None when the step gives tool results."""
    results: tuple[ToolResult, ...] = ()
    redefer: bool = False
    """The resumed session pauses at start-up on a call of ``results`` (seeded)."""
    structured: bool | None = None
    """Whether the step ends in structured output, when the process decides it (a paused one)."""


class Pool:
    """Processes kept between steps, for one event loop (the plugin's background loop, or the server's)."""

    def __init__(
        self,
        *,
        keep_live: int = 0,
        max_paused: int = 8,
        idle_seconds: float = 600.0,
        recycling: Recycling = NO_RECYCLING,
    ) -> None:
        self.keep_live = keep_live
        self.max_paused = max_paused
        self.idle_seconds = idle_seconds
        self.paused: OrderedDict[tuple[str, str], Held] = OrderedDict()
        """(partition, tool call id) -> the process paused on that call"""
        self.live: OrderedDict[str, Held] = OrderedDict()
        """conversation key -> the idle process holding that conversation"""
        self.sessions: set[Session] = set()
        """Every process started here and not yet ended."""
        self.known: OrderedDict[str, str] = OrderedDict()
        """conversation key -> its CLI session id, kept after the process ends (a ``--resume`` candidate)"""
        self.recycler = Recycler(recycling, lambda session, graceful: self._end(session, graceful=graceful))
        """Processes reset after their conversation, for the next new one with the same flags."""
        self.on_spawn: Callable[[Session], None] | None = None
        self.on_end: Callable[[Session], None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._exiting: set[asyncio.Task[None]] = set()
        """Processes told to exit after their answer, not yet gone (waited for by :meth:`end_all`)."""
        self._closed = False

    # -- the strategy ------------------------------------------------------------------------------
    async def run(
        self, request: TurnRequest, cli: ClaudeCLI, *, policy: guard.Policy, timeouts: Timeouts
    ) -> AsyncIterator[Start | TurnEvent]:
        """Run one step of ``request``: a :class:`Start`, then the step's events up to ``Done`` or ``Deferred``."""
        self._ensure_reaper()
        plans = list(self._plans(request, cli))
        for number, plan in enumerate(plans):
            last = number == len(plans) - 1
            session: Session | None = None
            ended: Done | Deferred | None = None
            kept = produced = False
            try:
                session, process = await self._open(plan, request, cli, policy, timeouts)
                async for event in self._drive(plan, session, request):
                    if not produced:
                        produced = True
                        yield Start(plan.continued, process)
                    if isinstance(event, (Done, Deferred)):
                        ended, kept = event, self._file(session, request, event)
                    yield event
                return
            except SessionNotFound:
                if produced or last:
                    raise
                logger.info("conversation not found for %s; trying the next way", plan.continued)
            finally:
                if session is not None and not kept:
                    # Ended gracefully only after a finished answer; killed on every other way out.
                    if isinstance(ended, Done):
                        self._exit_later(session)
                    else:
                        await self._end(session)

    def _plans(self, request: TurnRequest, cli: ClaudeCLI) -> Iterator[Plan]:
        results = request.tool_results
        if results:
            yield from self._plans_for_results(request, results)
            return
        live = self.live.pop(request.key(), None)
        if live is not None and live.session.alive and live.spec == spec_key(request.spec, request.cwd):
            yield Plan("live", session=live.session, content=list(request.new))
        elif live is not None:
            self._discard(live)
        cwd = request.cwd or paths.workspace(cli.env)
        session = request.session or self.known.get(request.key())
        if session and request.history and paths.transcript_exists(session, cwd, cli.env):
            yield Plan("resumed", resume=session, content=list(request.new))
        if request.history:
            yield Plan("seeded", content=list(request.new))
            yield Plan("replayed", content=self._replay(request, request.history, request.new))
        else:
            yield Plan("new", content=self._replay(request, (), request.new))

    def _plans_for_results(self, request: TurnRequest, results: tuple[ToolResult, ...]) -> Iterator[Plan]:
        held = next((h for r in results if (h := self.paused.get((request.partition, r.call_id)))), None)
        paused = False
        if held is not None:
            self._unpark(held)
            # llm's chains drop the schema on their tool-result steps: a paused process keeps its own.
            schema = request.spec.json_schema or held.session.spec.json_schema
            if held.session.alive and held.spec == spec_key(replace(request.spec, json_schema=schema), request.cwd):
                paused = True
                yield Plan("paused", session=held.session, results=results, structured=schema is not None)
            else:
                self._discard(held)
        if not request.pending_calls:
            if paused:
                return  # the process knows its calls; nothing else could take these results
            raise InvalidRequest(
                "These tool results answer no tool call: the conversation's last assistant message has none."
            )
        yield Plan("seeded", results=results, redefer=True)
        replayed = (*request.history, Turn("user", request.new))
        yield Plan("replayed", content=self._replay(request, replayed[:-1], replayed[-1].blocks))

    @staticmethod
    def _replay(request: TurnRequest, history: tuple[Turn, ...], new: tuple[Block, ...]) -> list[Block]:
        return first_message(history, list(new), system=request.system, placement=request.spec.placement)

    async def _open(
        self, plan: Plan, request: TurnRequest, cli: ClaudeCLI, policy: guard.Policy, timeouts: Timeouts
    ) -> tuple[Session, str]:
        if plan.session is not None:
            return plan.session, plan.continued
        if plan.continued == "seeded":
            resume = self._seed(request, cli)
            return await self._spawn(replace(request.spec, resume=resume), request, cli, policy, timeouts), "cold"
        if plan.resume is not None:
            return await self._spawn(replace(request.spec, resume=plan.resume), request, cli, policy, timeouts), "cold"
        return await self.fresh(request, cli, policy, timeouts)

    def _seed(self, request: TurnRequest, cli: ClaudeCLI) -> str:
        names = ToolNames(request.spec.caller_tools)
        cwd = request.cwd or paths.workspace(cli.env)
        turns = list(request.history)
        if request.spec.placement is SystemPlacement.USER and request.system and turns and turns[0].role == "user":
            turns[0] = Turn("user", (system_block(request.system), *turns[0].blocks))
        pending: list[str] = []
        if request.tool_results:
            answered, last = seed.sequential(turns.pop(), request.new)
            turns.extend(answered)
            pending = [str(answered[-1].blocks[-1].get("id"))]
            if last is None:
                raise InvalidRequest("No result was sent for the conversation's last tool call.")
        try:
            return seed.write(turns, cwd=cwd, names=names, env=cli.env, pending=pending)
        except OSError as exc:
            raise SessionNotFound(f"Could not write the conversation for the CLI: {exc}") from exc

    async def _drive(self, plan: Plan, session: Session, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        structured = request.structured if plan.structured is None else plan.structured
        if plan.redefer:
            calls = await session.redeferred()
            results = [r for r in plan.results if r.call_id in {c.id for c in calls}]
            async for event in session.continue_with(results, structured=structured):
                yield event
        elif plan.results:
            async for event in session.continue_with(plan.results, structured=structured):
                yield event
        else:
            assert plan.content is not None
            async for event in session.turn(plan.content, structured=structured):
                yield event

    # -- keeping processes ---------------------------------------------------------------------------
    def _file(self, session: Session, request: TurnRequest, event: Done | Deferred) -> bool:
        """Keep the process after its step (True), before the step's last event is handed out: a consumer
        that stops there must not strand it."""
        now = time.monotonic()
        recycle = self.recycler.key(request)
        held = Held(session, spec_key(request.spec, request.cwd), request.partition, now, recycle)
        if isinstance(event, Deferred):
            for call in event.calls:
                self.paused[(request.partition, call.id)] = held
            self._limit(self.paused, self.max_paused)
            return True
        outcome = event.outcome
        reply = Turn("assistant", (text_block(outcome.text.strip()),))
        key = request.key((fingerprint(Turn("user", request.new)), fingerprint(reply)))
        self.known[key] = outcome.session_id
        while len(self.known) > KNOWN_LIMIT:
            self.known.popitem(last=False)
        if self.keep_live <= 0 or self._closed or not session.alive:
            return self.recycler.release(session, recycle)
        replaced = self.live.pop(key, None)
        if replaced is not None and replaced.session is not session:
            self._let_go(replaced)  # the same exchange again: the older process is unreachable
        self.live[key] = held
        self._limit(self.live, self.keep_live, self._let_go)
        return True

    def _limit(self, table: OrderedDict[Any, Held], limit: int, remove: Callable[[Held], Any] | None = None) -> None:
        while len({id(h) for h in table.values()}) > max(limit, 0):
            oldest = next(iter(table.values()))
            (remove or self._discard)(oldest)

    def _let_go(self, held: Held) -> bool:
        """A live process whose conversation is no longer kept: reset for a new conversation (True), or ended
        (the conversation itself can still continue by ``--resume``)."""
        for key in [k for k, h in self.live.items() if h is held]:
            del self.live[key]
        if self.recycler.release(held.session, held.recycle):
            return True
        self._discard(held)
        return False

    def recycle_least_recent(self, recycle: str) -> bool:
        """When live processes are at their limit, let the least recently used one with these flags go
        (:meth:`_let_go`): it becomes a spare for a new conversation instead of a new process being started."""
        if self.keep_live <= 0 or len(self.live) < self.keep_live:
            return False
        held = next((h for h in self.live.values() if h.recycle == recycle), None)
        return held is not None and self._let_go(held)

    def _unpark(self, held: Held) -> None:
        for key in [k for k, h in self.paused.items() if h is held]:
            del self.paused[key]

    def _discard(self, held: Held) -> None:
        """Forget a kept process and end it (in the background)."""
        self._unpark(held)
        for key in [k for k, h in self.live.items() if h is held]:
            del self.live[key]
        task = asyncio.ensure_future(self._end(held.session))
        task.add_done_callback(_log_failure)

    def release(self, partition: str, call_ids: Iterable[str]) -> int:
        """End the processes of this caller paused at these tool calls (a caller that gave up its chain: no
        results will come). Returns how many."""
        held = {id(h): h for c in call_ids if (h := self.paused.get((partition, c))) is not None}
        for one in held.values():
            self._discard(one)
        return len(held)

    # -- processes ------------------------------------------------------------------------------------
    async def fresh(
        self, request: TurnRequest, cli: ClaudeCLI, policy: guard.Policy, timeouts: Timeouts
    ) -> tuple[Session, str]:
        """A process for a new conversation: a recycled one, else one started now ("cold"); the server
        overrides this with warm ones."""
        recycled = await self.recycler.take(request)
        if recycled is not None:
            return recycled, "recycled"
        return await self._spawn(request.spec, request, cli, policy, timeouts), "cold"

    async def _spawn(
        self, spec: Any, request: TurnRequest, cli: ClaudeCLI, policy: guard.Policy, timeouts: Timeouts
    ) -> Session:
        session = cli.session(spec, policy=policy, timeouts=timeouts, cwd=request.cwd)
        self.sessions.add(session)
        try:
            await session.start()
            progress.phase(progress.WAITING_FOR_API)  # the progress line, when one is watching this prompt
            if self.on_spawn is not None:
                self.on_spawn(session)
        except BaseException:
            await self._end(session)
            raise
        catalog.remember(session.initialize.get("models"), cli.env)
        return session

    def _exit_later(self, session: Session) -> None:
        """End a process whose answer is complete without making its caller wait: its input is closed now
        and it exits by itself (about 30 ms; its transcript is complete then); :meth:`end_all` waits for it."""
        self.sessions.discard(session)
        if session.proc is not None:
            session.proc.close_stdin()
        task = asyncio.ensure_future(self._end(session, graceful=True))
        self._exiting.add(task)
        task.add_done_callback(self._exiting.discard)
        task.add_done_callback(_log_failure)

    async def _end(self, session: Session, *, graceful: bool = False) -> None:
        """End a process: ``graceful`` (its input closed) only when it is idle after a finished answer;
        otherwise killed (paused, failed, cancelled): closing the input of a busy CLI lets it go on."""
        self.sessions.discard(session)
        if graceful and session.alive and not session.paused:
            await session.close()
        else:
            await session.kill()
        if self.on_end is not None:
            self.on_end(session)

    # -- reaping ------------------------------------------------------------------------------------
    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_seconds / 2))
            try:
                self.reap(time.monotonic() - self.idle_seconds)
            except Exception:  # one bad round must not end reaping for good
                logger.exception("reaping idle processes failed")

    def reap(self, before: float) -> None:
        """End kept processes idle since before ``before`` (monotonic) and those that died."""
        for held in {id(h): h for h in (*self.paused.values(), *self.live.values())}.values():
            if held.last_used < before or not held.session.alive:
                self._discard(held)
        for session in self.recycler.reap(before):
            task = asyncio.ensure_future(self._end(session, graceful=True))
            task.add_done_callback(_log_failure)

    async def end_all(self) -> None:
        """End every process started here (the pool stays usable)."""
        self.paused.clear()
        self.live.clear()
        await asyncio.gather(*self._exiting, return_exceptions=True)
        await self.recycler.end_all()
        await asyncio.gather(*(self._end(s) for s in list(self.sessions)), return_exceptions=True)

    async def close(self) -> None:
        """End every process and keep no more (interpreter exit, server shutdown)."""
        self._closed = True
        self.recycler.close()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.end_all()

    def health(self) -> dict[str, int]:
        return {
            "paused": len({id(h) for h in self.paused.values()}),
            "live": len(self.live),
            "recycled": self.recycler.health()["ready"],
            "processes": len(self.sessions),
        }


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("ending a process failed: %s", task.exception())
