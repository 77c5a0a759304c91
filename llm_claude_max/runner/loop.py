"""The one long-lived event loop that owns every CLI process of this Python process (the `llm` plugin).

A CLI paused at a tool call must outlive the ``execute()`` that started it, and an asyncio subprocess
belongs to the loop that spawned it; so every CLI runs on one loop, in a daemon thread, with one
:class:`~llm_claude_max.runner.pool.Pool`. The sync model iterates work there with :meth:`Background.iterate`;
the async model, on its own loop, with :meth:`Background.aiterate`. Either way, a caller that stops early
(``break``, an exception, Ctrl-C, cancellation) cancels the work and waits until its cleanup, which ends
the CLI, has run.

At interpreter exit the pool is closed (every kept process ended) before the loop stops.
(`claude-max serve` has its own loop and pool and does not use this module.)
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import os
import queue
import signal
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .pool import Pool

T = TypeVar("T")
_ITEM, _ERROR, _END = "item", "error", "end"
EXIT_GRACE_SECONDS = 5.0
CALLER_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}
"""Signals only the caller's thread takes (see :meth:`Background._run`)."""


class Background:
    """The loop thread and its pool. Get it with :func:`background`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self._tasks: dict[concurrent.futures.Future[None], asyncio.Task[None]] = {}
        self.thread = threading.Thread(target=self._run, name="llm-claude-max", daemon=True)
        self.thread.start()
        self._pool: Pool | None = None

    @property
    def pool(self) -> Pool:
        """The pool of this loop's processes, made on first use (a prompt through a server needs none)."""
        if self._pool is None:
            from .pool import Pool

            self._pool = Pool()
        return self._pool

    def _run(self) -> None:
        # Ctrl-C, SIGTERM and SIGHUP must reach the caller's (main) thread: a kernel may hand a process's
        # signal to any thread that does not block it (Linux prefers the main thread, but not while it
        # has a signal pending), and one that lands here would leave the main thread blocked in a read
        # such as llm's "Approve tool call?" prompt. Threads started from here (asyncio's waitpid
        # watchers) inherit the mask; so do processes spawned from here, which is why a CLI spawned here
        # unblocks them (Node does so itself; the warm server and the test's fake CLI too).
        if hasattr(signal, "pthread_sigmask"):  # (POSIX)
            signal.pthread_sigmask(signal.SIG_BLOCK, CALLER_SIGNALS)
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, factory: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run a coroutine from ``factory`` on the loop and wait for its result (from another thread)."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("llm-claude-max's background loop cannot wait for itself")
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout)

    def iterate(self, factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate an async iterator that runs on the loop, from synchronous code."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("llm-claude-max's background loop cannot wait for itself")
        items: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        future = self._submit(_pump(factory, items.put))
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
            self.cancel(future)
            concurrent.futures.wait([future])  # done once its cleanup (ending the CLI) has run

    async def aiterate(self, factory: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Iterate an async iterator that runs on the loop, from another event loop."""
        caller = asyncio.get_running_loop()
        if caller is self.loop:
            async for item in factory():
                yield item
            return
        items: asyncio.Queue[tuple[str, object]] = asyncio.Queue()

        def threadsafe(call: Callable[..., Any], *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is listening
                caller.call_soon_threadsafe(call, *args)

        future = self._submit(_pump(factory, lambda entry: threadsafe(items.put_nowait, entry)))
        try:
            while True:
                kind, value = await items.get()
                if kind == _ITEM:
                    yield value  # type: ignore[misc]
                elif kind == _ERROR:
                    assert isinstance(value, BaseException)
                    raise value
                else:
                    return
        finally:
            self.cancel(future)
            # Wait for its cleanup (the CLI ended). A second cancellation of ours ends the wait; the cleanup
            # goes on, on the background loop.
            await asyncio.wait({asyncio.wrap_future(future)})

    def _submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Run ``coro`` on the loop in a copy of the caller's context (what the caller set there, such as
        the progress line's current wait, holds in the work too)."""
        context = contextvars.copy_context()
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def start() -> None:
            if not future.set_running_or_notify_cancel():
                coro.close()
                return
            task = context.run(self.loop.create_task, coro)

            def done(task: asyncio.Task[None]) -> None:
                self._tasks.pop(future, None)
                if task.cancelled():
                    # A running concurrent future cannot be cancelled (cancel() is a no-op): finish it, or a
                    # caller waiting for the work's cleanup would wait forever.
                    future.set_result(None)
                elif task.exception() is not None:
                    future.set_exception(task.exception())
                else:
                    future.set_result(None)

            task.add_done_callback(done)
            self._tasks[future] = task

        self.loop.call_soon_threadsafe(start)
        return future

    def cancel(self, future: concurrent.futures.Future[None]) -> None:
        """Cancel work started with :meth:`_submit` (its task, on the loop)."""

        def stop() -> None:
            task = self._tasks.pop(future, None)
            if task is not None:
                task.cancel()
            else:
                future.cancel()

        self.loop.call_soon_threadsafe(stop)

    def close(self) -> None:
        """End every kept process and stop the loop (at interpreter exit)."""
        if not self.loop.is_running() or os.getpid() != self.pid:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            if self._pool is not None:
                self.call(self._pool.close, timeout=EXIT_GRACE_SECONDS)
            self.call(self.loop.shutdown_asyncgens, timeout=EXIT_GRACE_SECONDS)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(EXIT_GRACE_SECONDS)
        if not self.thread.is_alive():
            self.loop.close()


async def _pump(factory: Callable[[], AsyncIterator[Any]], put: Callable[[tuple[str, object]], None]) -> None:
    try:
        async for item in factory():
            put((_ITEM, item))
        put((_END, None))
    except BaseException as exc:  # delivered to the consumer, re-raised there
        put((_ERROR, exc))
        if isinstance(exc, asyncio.CancelledError):
            raise


_state: dict[str, Background] = {}
_lock = threading.Lock()


def background() -> Background:
    """The process's background loop, started on first use (and again in a forked child)."""
    with _lock:
        current = _state.get("background")
        if current is None or current.pid != os.getpid():
            current = _state["background"] = Background()
            atexit.register(current.close)
        return current
