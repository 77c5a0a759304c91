"""The plugin's background loop: work stopped early by its caller ends, and the caller's wait ends too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from llm_claude_max.runner.loop import Background


def _counting(cleaned: threading.Event) -> AsyncIterator[int]:
    async def numbers() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
                await asyncio.sleep(0.01)
        finally:
            cleaned.set()

    return numbers()


def test_a_sync_caller_that_stops_early_waits_for_the_cleanup_and_no_longer() -> None:
    loop = Background()
    try:
        cleaned = threading.Event()
        done = threading.Event()

        def consume() -> None:
            stream = loop.iterate(lambda: _counting(cleaned))
            assert next(stream) == 0
            stream.close()  # type: ignore[attr-defined]
            done.set()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        consumer.join(10)
        assert done.is_set(), "closing the iteration hung"
        assert cleaned.is_set()
    finally:
        loop.close()


async def test_an_async_caller_that_stops_early_waits_for_the_cleanup() -> None:
    loop = Background()
    try:
        cleaned = threading.Event()
        stream = loop.aiterate(lambda: _counting(cleaned))
        assert await anext(stream) == 0
        await asyncio.wait_for(stream.aclose(), 10)
        assert cleaned.is_set()
    finally:
        loop.close()
