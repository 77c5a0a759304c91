"""Iterate an async iterator from synchronous code.

The async side runs on a private event loop in a worker thread, so this works even where the caller's
thread already runs a loop (Jupyter). When the caller stops early (``break``, an exception, Ctrl-C),
the async side is cancelled and this waits until its cleanup, which kills the CLI, has finished.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from . import children

T = TypeVar("T")

_ITEM, _ERROR, _END = "item", "error", "end"


def iterate_sync(factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    children.install()  # signal handlers need the caller's (main) thread; the CLI starts in the worker
    items: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
    finished = threading.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="llm-claude-max", daemon=True)
    thread.start()

    async def pump() -> None:
        try:
            async for item in factory():
                items.put((_ITEM, item))
            items.put((_END, None))
        except BaseException as exc:  # delivered to the caller's thread, re-raised there
            items.put((_ERROR, exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(pump(), loop)
    try:
        while True:
            kind, value = items.get()
            if kind == _ITEM:
                yield value  # type: ignore[misc]
            elif kind == _ERROR:
                assert isinstance(value, BaseException)
                raise value
            else:
                return
    finally:
        future.cancel()
        finished.wait()
        # As asyncio.run does: finish async generators left suspended (httpx's line iterators after an
        # early exit), or their aclose() coroutines are dropped unawaited when the loop closes.
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
