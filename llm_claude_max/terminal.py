"""What llm's command line already showed the user, so an error neither repeats nor hides the answer.

When paid extra usage served a prompt, the CLI is stopped and :class:`~llm_claude_max.errors.PaidUsageRefused`
carries the part of the answer that was already served (and paid for). Who has seen it depends on the
caller:

- llm's ``prompt``/``chat`` command streaming (the default): each chunk was printed as it came, so the
  error says "the answer above" instead of printing it again, and starts on a line of its own;
- ``llm --no-stream``, ``response.text()``, any Python caller: nothing was printed, so the error carries
  the answer (``str(exc)`` and ``exc.partial_text``).

llm prints chunks in the thread that iterates the model, where its click context is current: the
decision is made there (:func:`relay`, :func:`arelay`), never in the runner's worker thread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from .errors import PaidUsageRefused

T = TypeVar("T")

DISPLAYING_COMMANDS = ("prompt", "chat")
"""llm commands that print each streamed chunk to stdout."""


def llm_prints_chunks(stream: bool) -> bool:
    """True inside llm's own ``prompt``/``chat`` command when it streams (``stream`` is what llm asked for)."""
    if not stream or "click" not in sys.modules:
        return False
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    root = ctx.find_root().command
    ours = getattr(getattr(root, "callback", None), "__module__", "") == "llm.cli"
    return ours and ctx.command.name in DISPLAYING_COMMANDS


def settle(exc: PaidUsageRefused, *, stream: bool) -> None:
    """Before ``exc`` reaches llm: mark a streamed answer as shown, and end its line when the error would
    otherwise be printed right after it on the same screen or file."""
    if not exc.partial_text or not llm_prints_chunks(stream):
        return
    exc.answer_shown = True
    if not exc.partial_text.endswith("\n") and _same_destination():
        sys.stdout.flush()
        sys.stderr.write("\n")
        sys.stderr.flush()


def _same_destination() -> bool:
    """stdout and stderr end up in the same place: one terminal, or one file or pipe (``2>&1``)."""
    try:
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def relay(events: Iterator[T], *, stream: bool) -> Iterator[T]:
    """``events`` unchanged; a :class:`PaidUsageRefused` is settled on its way out (sync models)."""
    try:
        yield from events
    except PaidUsageRefused as exc:
        settle(exc, stream=stream)
        raise


async def arelay(events: AsyncIterator[T], *, stream: bool) -> AsyncIterator[T]:
    """The same for async models."""
    try:
        async for event in events:
            yield event
    except PaidUsageRefused as exc:
        settle(exc, stream=stream)
        raise
    finally:
        closing = getattr(events, "aclose", None)
        if closing is not None:
            await closing()
