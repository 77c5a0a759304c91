"""One line on stderr when a wait gets long, saying what is being waited for; on a terminal only.

A stalled API or a CLI that retries a host it cannot reach can keep a prompt, the doctor or the
server's start-up silent for tens of seconds. After :data:`AFTER` seconds without anything to show,
one line tells the user what is happening. Nothing is printed when stderr is not a terminal (scripts,
pipes, logs), and never anything on stdout, where the answer goes.

- :func:`waiting`: around a blocking call (the doctor's probes, the server's start-up);
- :func:`watch`: around a prompt's event stream; the runner names the current wait with :func:`phase`
  ("starting the Claude Code CLI", then "waiting for the Claude API").
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

AFTER = 5.0
"""Seconds of silence before the line is printed."""
STARTING = "starting the Claude Code CLI"
WAITING_FOR_API = "waiting for the Claude API"


def enabled() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def say(message: str) -> None:
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def waiting(what: str | Callable[[], str], *, after: float | None = None) -> Iterator[None]:
    """Print ``what`` once if the block is still running after ``after`` seconds (on a terminal)."""
    if not enabled():
        yield
        return
    after = AFTER if after is None else after
    started = time.monotonic()

    def tell() -> None:
        text = what() if callable(what) else what
        if text:
            say(f"{text} ({time.monotonic() - started:.0f} s so far)")

    timer = threading.Timer(after, tell)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@dataclass
class _Wait:
    what: str
    since: float = field(default_factory=time.monotonic)
    pending: bool = False
    """The consumer is waiting for the next event."""
    told: set[str] = field(default_factory=set)
    """What was already said during this silence."""
    quiet: bool = False
    """Something was shown (text or reasoning): a line now could land inside the answer."""


_current: contextvars.ContextVar[_Wait | None] = contextvars.ContextVar("llm_claude_max_progress", default=None)


def phase(what: str) -> None:
    """Name what the prompt being watched waits for now (a no-op when nothing watches)."""
    wait = _current.get()
    if wait is not None:
        wait.what = what


async def watch(events: AsyncIterator[T], *, first: str = STARTING, after: float | None = None) -> AsyncIterator[T]:
    """``events`` (a prompt's events) unchanged, with one stderr line per long silence before the answer
    starts. After the first text or reasoning, nothing more is said: the line could land inside the answer.
    """
    from .runner.session import Reasoning, Text

    if not enabled():
        try:
            async for event in events:
                yield event
        finally:
            await _close(events)
        return
    wait = _Wait(first)
    token = _current.set(wait)
    ticker = asyncio.ensure_future(_tick(wait, AFTER if after is None else after))
    try:
        while True:
            wait.since, wait.pending, wait.told = time.monotonic(), True, set()
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            finally:
                wait.pending = False
            wait.quiet = wait.quiet or isinstance(event, (Text, Reasoning))
            yield event
    finally:
        ticker.cancel()
        await asyncio.wait({ticker})
        with contextlib.suppress(ValueError):  # closed from another context (a finaliser)
            _current.reset(token)
        await _close(events)


async def _tick(wait: _Wait, after: float) -> None:
    while not wait.quiet:
        await asyncio.sleep(min(1.0, after / 2))
        silent = time.monotonic() - wait.since
        if wait.pending and not wait.quiet and silent >= after and wait.what not in wait.told:
            wait.told.add(wait.what)
            say(f"claude-max: {wait.what}… ({silent:.0f} s so far)")


async def _close(events: AsyncIterator[object]) -> None:
    closing = getattr(events, "aclose", None)
    if closing is not None:
        await closing()
