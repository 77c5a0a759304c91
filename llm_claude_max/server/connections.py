"""HTTP connections that a slow or hostile client cannot hold open, and a log it cannot flood.

uvicorn has a keep-alive timeout but no limit on the time a client takes to send its headers or its
body, and its connection limit (``limit_concurrency``) only answers 503 once headers arrive. This
subclass of its h11 protocol adds:

- a **header timeout**: a connection must deliver a request's headers within ``header_seconds`` of
  opening, or of the first byte after the previous response; otherwise it is closed (``408`` when it
  had sent something);
- a **body timeout**: while the app waits for the request body, the client may stay silent at most
  ``body_seconds`` (a body shorter than its ``Content-Length`` used to hang forever): ``408`` and close;
- a **connection limit**: beyond ``max_connections``, the connection that has waited longest without a
  request in progress is closed to make room; if every connection has a request in progress, the new
  one is answered ``503`` and closed. :func:`room` fits the limit under the process's file limit, and
  :class:`Listener` stops accepting before the descriptors run out;
- :class:`AcceptErrorFilter`: on Python 3.11 asyncio logs one traceback per ``accept()`` attempt that
  fails with "Too many open files", up to 2048 a second; at most one line a minute is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("llm_claude_max.server")


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 256
    header_seconds: float = 10.0
    body_seconds: float = 30.0


class RateLimitedLog:
    """A warning logged at most once per ``interval`` seconds, with the count of the ones left out."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.last = -float("inf")
        self.skipped = 0

    def due(self) -> str | None:
        """None when this occurrence is to be left out; else a suffix counting the ones left out."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.skipped += 1
            return None
        suffix = f" ({self.skipped} more in the last {self.interval:g} s)" if self.skipped else ""
        self.last, self.skipped = now, 0
        return suffix


class AcceptErrorFilter(logging.Filter):
    """For the ``asyncio`` logger: one "accept() out of system resource" record a minute, no traceback."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.log = RateLimitedLog(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        suffix = self.log.due()
        if suffix is None:
            return False
        error = record.exc_info[1] if record.exc_info else None
        why = Listener.PAUSED if isinstance(error, OSError) and error.strerror == Listener.PAUSED else error
        record.msg = f"accept() paused for a second: {why or 'file limit reached'}; new connections wait{suffix}"
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def install_accept_error_filter() -> AcceptErrorFilter:
    asyncio_logger = logging.getLogger("asyncio")
    for existing in asyncio_logger.filters:
        if isinstance(existing, AcceptErrorFilter):
            return existing
    installed = AcceptErrorFilter()
    asyncio_logger.addFilter(installed)
    return installed


def raise_file_limit() -> int:
    """Raise the soft limit of open files to the hard limit (as Go programs do); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def room(wanted: int, processes: int) -> tuple[int, int]:
    """(the connection limit, the most connections open at once) that fit under the file limit.

    What is left of the file limit (minus what is open now, four descriptors per `claude` process and a
    margin) bounds the connections open at once, :class:`Listener`'s ``max_open``; the connection
    limit stays below it, so connections closed to make room are released before the bound is met."""
    soft = raise_file_limit()
    if soft == resource.RLIM_INFINITY:
        return wanted, wanted * 2
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 16
    max_open = max(2, soft - in_use - 4 * processes - 16)
    return max(1, min(wanted, max_open * 3 // 4)), max_open


class Listener(socket.socket):
    """A listening socket that has at most ``max_open`` accepted connections open at once.

    At the bound, ``accept()`` first reports nothing to accept: asyncio tries again on its next loop
    iteration, by when the connections closed to make room are usually gone. If the bound still holds
    after :data:`SPIN_SECONDS` (every connection busy), it fails once with ``EMFILE`` (not a real one: no
    descriptor ran out), which makes asyncio stop watching the socket for a second instead of spinning;
    connections wait in the kernel's backlog meanwhile. The rest of that burst again reports nothing to
    accept: Python 3.11 does not end its accept loop after such an error (up to ``backlog`` attempts,
    each logged)."""

    max_open = 1 << 30
    SPIN_SECONDS = 0.05
    PAUSED = "the server's connection limit is reached"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open = 0
        self._full_since: float | None = None
        self._paused_at = -float("inf")

    def accept(self) -> tuple[socket.socket, Any]:
        if self.open >= self.max_open:
            now = time.monotonic()
            self._full_since = self._full_since or now
            if now - self._full_since < self.SPIN_SECONDS or now - self._paused_at < self.SPIN_SECONDS:
                raise BlockingIOError
            self._paused_at, self._full_since = now, None
            raise OSError(errno.EMFILE, self.PAUSED)
        self._full_since = None
        fd, address = self._accept()  # type: ignore[attr-defined]
        accepted = _Accepted(self.family, self.type, self.proto, fileno=fd)
        accepted.listener = self
        self.open += 1
        if socket.getdefaulttimeout() is None and self.gettimeout():
            accepted.setblocking(True)
        return accepted, address


class _Accepted(socket.socket):
    listener: Listener | None = None

    def close(self) -> None:
        if self.listener is not None:
            self.listener.open -= 1
            self.listener = None
        super().close()


def protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """The uvicorn ``http`` protocol class for these limits."""
    namespace = {"limits": limits, "refusals": RateLimitedLog(), "timeouts": RateLimitedLog()}
    return type("LimitedH11Protocol", (LimitedH11Protocol,), namespace)


class LimitedH11Protocol(H11Protocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    refusals: ClassVar[RateLimitedLog] = RateLimitedLog()
    timeouts: ClassVar[RateLimitedLog] = RateLimitedLog()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._between_requests = True
        self._idle_since = 0.0
        self._received = False
        self._refused = False

    # -- the connection limit ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._arm(self.limits.header_seconds, self._header_timeout)
        open_ = [c for c in self.connections if isinstance(c, LimitedH11Protocol) and not c.transport.is_closing()]
        if len(open_) > self.limits.max_connections:
            idle = [c for c in open_ if c._between_requests and c is not self]
            oldest = min(idle, key=lambda c: c._idle_since, default=None)
            if oldest is not None:
                oldest._close("made room for a new connection")
            else:
                self._refuse()

    def _refuse(self) -> None:
        """Answer 503 and end the connection without a reset: the request the client sends is read and
        dropped until it closes its side (at most a second), or the answer could be lost."""
        self._note(self.refusals, "connection limit reached: a new connection was answered 503")
        self._refused = True
        body = b'{"error":{"message":"Too many connections; try again shortly.","code":"server_busy"}}'
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(1.0, lambda: self._close(None))

    def eof_received(self) -> None:
        if self._refused:
            self._close(None)

    # -- the timeouts -------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        cycle = self.cycle
        self._received = True
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.cycle is not cycle:  # a request's headers are complete
            self._between_requests = False
            self._disarm()
        elif self._between_requests and self._timer is None:  # the first bytes of the next request
            self._arm(self.limits.header_seconds, self._header_timeout)
        if not self._between_requests:
            if self.conn.their_state is h11.SEND_BODY:
                self._arm(self.limits.body_seconds, self._body_timeout)  # restarted by every piece
            else:
                self._disarm()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()  # arms uvicorn's keep-alive timeout; may start a pipelined request
        if self.cycle is cycle:
            self._between_requests = True
            self._received = False
            self._idle_since = self.loop.time()
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _header_timeout(self) -> None:
        self._timer = None
        if not self._between_requests or self.transport.is_closing():
            return
        if self._received:
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        self._close(f"no request headers within {self.limits.header_seconds:g} s")

    def _body_timeout(self) -> None:
        self._timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app is not reading: the client is not the slow one
            self._arm(self.limits.body_seconds, self._body_timeout)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the app sees the client gone; its own answer goes nowhere
            with contextlib.suppress(h11.LocalProtocolError):
                for event in (
                    h11.Response(status_code=408, headers=[(b"connection", b"close"), (b"content-length", b"0")]),
                    h11.EndOfMessage(),
                ):
                    self.transport.write(self.conn.send(event))
        self._close(f"the request body stalled for {self.limits.body_seconds:g} s")

    # -- helpers --------------------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self, why: str | None) -> None:
        if why is not None:
            self._note(self.timeouts, f"closed a connection: {why}")
        self._disarm()
        self.transport.close()

    def _note(self, log: RateLimitedLog, message: str) -> None:
        suffix = log.due()
        if suffix is not None:
            logger.warning("%s%s", message, suffix)
