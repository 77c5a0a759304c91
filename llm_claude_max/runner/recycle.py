"""Reusing an idle CLI process for the next new conversation with the same spawn-time flags.

A process whose conversation is over is reset in place instead of ended, and kept as a *spare*: the
next new conversation of the same caller with the same flags starts in it at once, on any model
(``set_model``), without a start-up (about 0.4 s and 0.6–0.9 CPU-s each).

The reset, observed on the CLI 2.1.328 against the fake API (``docs/recycling.md``):

1. ``/clear``, sent as a user message that carries our own uuid: the CLI prints ``conversation_reset``, a
   new ``system/init`` with a **new session id**, and a ``result`` with ``num_turns: 0``; nothing goes
   upstream. The new conversation begins with a record of the command (about 550 bytes: a caveat, the
   command's name, its empty output) that would go upstream in front of the next first message.
2. ``rewind_conversation`` to the record's first row (the caveat, which the transcript names as the
   parent of the ``/clear`` row): the record is cut away. The next first message then goes upstream
   exactly as from a fresh process (system, tools and messages byte for byte; the session id is new).

The billing route was checked when the process started (``initialize``) and the ``system/init`` of the
reset is checked again (:meth:`Session.between_turns`); a process stays verified by its earlier
``rate_limit_event`` (the CLI prints one only when a window's figures change).

Any surprise (an event out of place, a refused rewind, a record that is not where it should be) retires
the process: it is ended, never reused. So is a process that served ``max_conversations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
import weakref
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import ProtocolError
from ..request import TurnRequest, spec_key
from .command import CommandSpec
from .protocol import JSON, ControlResponse, Event, Init, Other, Result, encode_clear, encode_control_request
from .session import Session

logger = logging.getLogger("llm_claude_max.recycle")
CAVEAT = "<local-command-caveat>"
RECORD_WAIT_SECONDS = 1.0
"""How long the reset waits for the CLI to write the ``/clear`` record to the new session's transcript."""
_ids = itertools.count(1)


@dataclass(frozen=True)
class Recycling:
    spares: int = 0
    """Reset processes kept per caller and set of flags; 0: none (a process ends with its conversation)."""
    total: int = 8
    """Reset processes kept in all; beyond that, those of the least recently used flags are ended."""
    max_conversations: int = 50
    """A process is retired (ended) after this many conversations."""


NO_RECYCLING = Recycling()


def flags_key(spec: CommandSpec, cwd: Path | None = None) -> str:
    """What a process is started with, but the model (which ``set_model`` changes in a running process)."""
    return spec_key(replace(spec, model=None), cwd)


def recyclable(request: TurnRequest) -> bool:
    """Processes with Claude Code's own tools (background shells, a working directory, a file-state
    cache) are never reused, nor the doctor's non-isolated probes."""
    return request.spec.isolated and not request.spec.claude_tools and request.cwd is None


# -- the protocol ----------------------------------------------------------------------------------------
async def reset(session: Session) -> None:
    """Start a new, empty conversation in this idle process. Raises :class:`ProtocolError` on any surprise
    (the process must then be ended)."""
    before = session.session_id
    clear = str(uuid.uuid4())
    events = await session.between_turns(encode_clear(clear), lambda e: isinstance(e, Result))
    _check_cleared(events, clear, before)
    caveat = await _record_start(session, clear)
    answer = await control(
        session,
        {"subtype": "rewind_conversation", "target_message_uuid": caveat, "last_seen_user_message_uuid": clear},
    )
    if answer.get("rewound") is not True or answer.get("targetMessageUuid") != caveat:
        raise ProtocolError(f"The CLI did not cut the /clear record: {json.dumps(answer)[:300]}")


async def switch_model(session: Session, model: str | None) -> str:
    """``set_model``: the model of the process's next requests (None: the CLI's default). Returns the
    model id the CLI resolved."""
    request: JSON = {"subtype": "set_model"}
    if model is not None:
        request["model"] = model
    answer = await control(session, request)
    resolved = answer.get("model")
    if not isinstance(resolved, str) or not resolved:
        raise ProtocolError(f"The CLI did not confirm the model {model!r}: {json.dumps(answer)[:300]}")
    return resolved


async def control(session: Session, request: JSON) -> JSON:
    """Send a control request to an idle process and return its answer; only bookkeeping events
    (``command_lifecycle``) may come before it."""
    request_id = f"llm-claude-max-{request.get('subtype')}-{next(_ids)}"

    def answered(event: Event) -> bool:
        return isinstance(event, ControlResponse) and event.request_id == request_id

    events = await session.between_turns(encode_control_request(request_id, request), answered)
    *before, last = events
    if any(not (isinstance(e, Other) and e.type == "command_lifecycle") for e in before):
        raise ProtocolError(f"Unexpected output before the answer to {request.get('subtype')}: {before[0]!r:.200}")
    assert isinstance(last, ControlResponse)
    if not last.ok:
        raise ProtocolError(f"The CLI refused {request.get('subtype')}: {last.error}")
    return last.response


def _check_cleared(events: list[Event], clear: str, before: str | None) -> None:
    resets = [e for e in events if isinstance(e, Other) and e.type == "conversation_reset"]
    inits = [e for e in events if isinstance(e, Init)]
    result = events[-1]
    assert isinstance(result, Result)
    unexpected = [e for e in events[:-1] if not isinstance(e, (Other, Init))]
    if (
        len(resets) != 1
        or resets[0].raw.get("user_message_uuid") != clear
        or not inits
        or any(i.session_id in (before, "") for i in inits)
        or result.is_error
        or result.subtype != "success"
        or result.raw.get("num_turns") != 0
        or unexpected
    ):
        raise ProtocolError(f"/clear did not reset the conversation as expected: {[repr(e)[:120] for e in events]}")


async def _record_start(session: Session, clear: str) -> str:
    """The uuid of the caveat that begins the ``/clear`` record: the parent of the ``/clear`` row in the new
    session's transcript (the CLI prints neither)."""
    assert session.session_id is not None
    path = paths.transcript_path(session.session_id, session.cwd, session.env)
    deadline = time.monotonic() + RECORD_WAIT_SECONDS
    while True:
        rows = _rows(path)
        row = rows.get(clear)
        if row is not None:
            parent = rows.get(str(row.get("parentUuid")))
            content = json.dumps((parent or {}).get("message", {}).get("content"))
            if parent is None or parent.get("isMeta") is not True or CAVEAT not in content:
                raise ProtocolError("The /clear record in the transcript does not begin with the CLI's caveat.")
            return str(parent["uuid"])
        if time.monotonic() > deadline:
            raise ProtocolError(f"The /clear record is not in the transcript {path}.")
        await asyncio.sleep(0.01)


def _rows(path: Path) -> dict[str, JSON]:
    rows: dict[str, JSON] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict) and isinstance(row.get("uuid"), str):
                    rows[row["uuid"]] = row
    return rows


# -- spares ----------------------------------------------------------------------------------------------
@dataclass
class Spare:
    session: Session
    since: float


class Recycler:
    """Reset processes, per caller partition and flags (the model left out), ready for a new conversation.

    A process is in one place at a time: running a step (the caller's), being reset (ours), or ready here;
    :meth:`take` hands a ready one to exactly one caller.
    """

    def __init__(self, config: Recycling, end: Callable[[Session, bool], Awaitable[None]]) -> None:
        """``end(session, graceful)`` ends a process (``graceful``: it is idle; close its input)."""
        self.config = config
        self._end = end
        self.ready: OrderedDict[str, list[Spare]] = OrderedDict()
        """key -> reset processes, oldest first; keys from least to most recently used"""
        self.resetting: Counter[str] = Counter()
        self.models: weakref.WeakKeyDictionary[Session, str | None] = weakref.WeakKeyDictionary()
        """The model a process uses now, when ``set_model`` changed it from its spawn flag."""
        self.uses: weakref.WeakKeyDictionary[Session, int] = weakref.WeakKeyDictionary()
        """Conversations a process has served."""
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Condition | None = None
        self._closed = False
        self.on_ready: Callable[[str], None] | None = None
        """Called with a key when a spare of it became ready (the server then keeps fewer warm ones)."""

    @property
    def enabled(self) -> bool:
        return self.config.spares > 0

    def key(self, request: TurnRequest) -> str | None:
        """Where a process of ``request`` is kept once reset; None: never reused."""
        if not self.enabled or not recyclable(request):
            return None
        return json.dumps([request.partition, flags_key(request.spec, request.cwd)])

    @staticmethod
    def flags_of(key: str) -> str:
        """The :func:`flags_key` part of a key."""
        return str(json.loads(key)[1])

    def count(self, key: str) -> int:
        """Ready and being reset."""
        return len(self.ready.get(key, ())) + self.resetting[key]

    # -- in and out ----------------------------------------------------------------------------------
    def release(self, session: Session, key: str | None) -> bool:
        """Take a process whose conversation is over (its last step ended with the model's answer, so it reads
        nothing more): reset it in the background and keep it. False: not taken (the caller ends it)."""
        if key is None or self._closed or not session.alive or session.paused:
            return False
        if self.uses.get(session, 1) >= self.config.max_conversations:
            self.stats["retired"] += 1
            return False
        if self.count(key) >= self.config.spares:
            return False
        self.resetting[key] += 1
        task = asyncio.ensure_future(self._reset(key, session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _reset(self, key: str, session: Session) -> None:
        try:
            await reset(session)
            ok = True
        except Exception as exc:
            ok = False
            logger.warning("a CLI process could not be reset and was ended: %s", exc)
        except BaseException:  # cancelled (closing): the process goes with it
            self.resetting[key] -= 1
            await self._end(session, False)
            await self._notify()
            raise
        self.resetting[key] -= 1
        kept = ok and not self._closed
        if kept:
            self.stats["resets"] += 1
            self.ready.setdefault(key, []).append(Spare(session, time.monotonic()))
            self.ready.move_to_end(key)
        else:
            self.stats["reset_failures"] += not ok
        await self._notify()  # a waiting take() finds the spare, or knows there is none coming
        if not kept:
            await self._end(session, False)
        elif self.on_ready is not None:
            self.on_ready(key)
        while sum(len(v) for v in self.ready.values()) > self.config.total:
            oldest = next(iter(self.ready))
            spare = self.ready[oldest][0]
            self._forget(oldest, spare)
            await self._end(spare.session, True)

    async def take(self, request: TurnRequest) -> Session | None:
        """A reset process for ``request``'s new conversation, switched to its model; None when there is none
        (one being reset is waited for: that takes a few tens of milliseconds)."""
        key = self.key(request)
        if key is None:
            return None
        while True:
            spares = self.ready.get(key)
            if spares:
                spare = spares[0]
                self._forget(key, spare)
                break
            if not self.resetting[key]:
                return None
            changed = self._condition()
            async with changed:
                await changed.wait()
        session = spare.session
        try:
            await self.use(session, request.spec.model)
        except Exception as exc:  # a protocol surprise: retired; the conversation starts elsewhere
            self.stats["reset_failures"] += 1
            logger.warning("a reset CLI process could not switch its model and was ended: %s", exc)
            await self._end(session, False)
            return None
        except BaseException:
            await self._end(session, False)
            raise
        self.uses[session] = self.uses.get(session, 1) + 1
        self.stats["taken"] += 1
        return session

    async def use(self, session: Session, model: str | None) -> None:
        """Switch ``session`` to ``model`` (the CLI's default when None) unless it uses it already."""
        current = self.models.get(session, session.spec.model)
        if current != model:
            await switch_model(session, model)
            self.models[session] = model

    def _forget(self, key: str, spare: Spare) -> None:
        spares = self.ready[key]
        spares.remove(spare)
        if not spares:
            del self.ready[key]

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    # -- ending ----------------------------------------------------------------------------------------
    def reap(self, before: float) -> list[Session]:
        """Forget spares idle since before ``before`` (monotonic) and dead ones; the caller ends them."""
        gone = []
        for key, spares in list(self.ready.items()):
            for spare in list(spares):
                if spare.since < before or not spare.session.alive:
                    self._forget(key, spare)
                    gone.append(spare.session)
        return gone

    async def end_all(self) -> None:
        """End every spare and every reset in progress."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        spares = [s.session for spares in self.ready.values() for s in spares]
        self.ready.clear()
        await asyncio.gather(*(self._end(s, True) for s in spares), return_exceptions=True)

    def close(self) -> None:
        """Keep no more processes (:meth:`end_all` ends those kept)."""
        self._closed = True

    def health(self) -> dict[str, Any]:
        return {
            "ready": sum(len(v) for v in self.ready.values()),
            "resetting": sum(self.resetting.values()),
            **self.stats,
        }
