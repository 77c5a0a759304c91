"""At most one run of an expensive check per interval; callers in between share its last result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Throttled(Generic[T]):
    """``await throttled()`` returns (result, its age in seconds). A result younger than ``interval`` is
    reused; concurrent callers wait for the one run in progress. Errors are not kept."""

    def __init__(self, work: Callable[[], Awaitable[T]], interval: float) -> None:
        self.work = work
        self.interval = interval
        self._result: tuple[float, T] | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> tuple[T, float]:
        async with self._lock:
            if self._result is None or time.monotonic() - self._result[0] >= self.interval:
                self._result = (time.monotonic(), await self.work())
            at, result = self._result
        return result, time.monotonic() - at
