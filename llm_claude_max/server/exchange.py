"""One HTTP exchange, the same for every API: read and parse the request, wait for a slot, run the step,
wait for its first event, then answer JSON or stream server-sent events; a caller that leaves, a server
that stops and every error end the same way.

An API is an :class:`Adapter`: it parses its own request into a :class:`Call` (a neutral
:class:`~llm_claude_max.request.TurnRequest` and how to answer) and renders events, results and errors in
its own shapes. The exchange owns admission, queueing, disconnects, cancellation and cleanup: the step's
slot and its events are held by one ``AsyncExitStack``, which a streamed answer takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .. import catalog
from ..errors import ClaudeMaxError, InvalidRequest, NotSent
from ..request import TurnRequest
from ..runner.pool import Start
from ..runner.session import Deferred, Done, Notice, TurnEvent
from ..usage import gate as usage_gate
from .engine import Engine

T = TypeVar("T")
logger = logging.getLogger("llm_claude_max.server")

VISIBLE = (Done, Deferred)
"""Events after which an answer can no longer change its HTTP status (with any content event)."""


class ServerStopping(NotSent):
    """The server is shutting down."""

    code = "server_stopping"
    http_status = 503


class TooLarge(InvalidRequest):
    code = "request_too_large"
    http_status = 413


class ClientGone(Exception):
    """The client disconnected; its work was cancelled."""


@dataclass
class Call:
    """A parsed request: what to run and how to answer."""

    request: TurnRequest
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    """Headers of every answer (X-Claude-Max-Ignored...)."""
    context: Any = None
    """Whatever the API needs to render its answer."""


@dataclass
class Step:
    """What a step produced, for a JSON answer."""

    start: Start | None
    events: list[TurnEvent]

    @property
    def end(self) -> Done | Deferred:
        last = self.events[-1]
        assert isinstance(last, (Done, Deferred))
        return last


class Adapter(Protocol):
    """One HTTP API over the exchange."""

    def parse(self, body: Any, partition: str) -> Call:
        """The call, or InvalidRequest (400/404/413) with a message that names the bad field."""

    def render(self, call: Call, step: Step) -> dict[str, Any]:
        """The JSON answer of a finished step."""

    def stream(self, call: Call, events: AsyncIterator[Start | TurnEvent]) -> AsyncIterator[ServerSentEvent]:
        """The streamed answer."""

    def error(self, exc: ClaudeMaxError) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, body and headers of an error answer."""

    def stream_error(self, call: Call, exc: ClaudeMaxError) -> Iterable[ServerSentEvent]:
        """The events that end a stream with an error (``call.context`` holds what was streamed so far)."""


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 20 * 1024 * 1024
    show_stderr: bool = True
    """Errors carry the CLI's stderr (False beyond loopback: it goes to the server log only)."""


class Exchange:
    def __init__(self, engine: Engine, limits: Limits = Limits()) -> None:
        self.engine = engine
        self.limits = limits

    async def handle(
        self,
        request: Request,
        api: Adapter,
        *,
        check: Callable[[Call], None] | None = None,
        prepare: Callable[[Call], Awaitable[Call]] | None = None,
    ) -> Response:
        """Answer one request. ``check`` runs before admission, ``prepare`` after it (fetching remote images)."""
        env, policy = self.engine.cli.env, self.engine.config.policy
        try:
            body = await self.read_json(request)
            try:
                call = api.parse(body, partition_of(request, body))
            except RecursionError:  # JSON that parses, nested deeper than its checks can follow
                raise InvalidRequest("The request is nested too deeply.") from None
            if check is not None:
                check(call)
            # The last reading says the plan refuses prompts until a reset: answer at once, start nothing.
            refused = usage_gate.refusal(call.request.spec.model or catalog.DEFAULT_ALIAS, policy, env)
            if refused is not None:
                raise refused
        except ClaudeMaxError as exc:
            return self.error_response(api, exc)
        except ClientGone:
            return Response(status_code=499)
        stack = contextlib.AsyncExitStack()
        try:
            await self.watch(request, stack.enter_async_context(self.engine.slot()))
            if prepare is not None:
                call = await self.watch(request, prepare(call))
            events = self.engine.run_step(call.request)
            stack.push_async_callback(events.aclose)
            prefix = await self.watch(request, _until_visible(events))
        except ClientGone:
            await stack.aclose()
            return Response(status_code=499)
        except ClaudeMaxError as exc:
            await stack.aclose()
            return self.error_response(api, exc, call.headers)
        except BaseException:
            await stack.aclose()
            raise
        if not call.stream:
            return await self._json(request, api, call, stack, prefix, events)
        return self._sse(api, call, stack.pop_all(), prefix, events)

    async def _json(
        self,
        request: Request,
        api: Adapter,
        call: Call,
        stack: contextlib.AsyncExitStack,
        prefix: list[Start | TurnEvent],
        events: AsyncIterator[Start | TurnEvent],
    ) -> Response:
        async with stack:
            try:
                collected = await self.watch(request, _until_end(prefix, events))
            except ClientGone:
                return Response(status_code=499)  # the caller gave up (timeout, Ctrl-C): its CLI is stopped
            except ClaudeMaxError as exc:
                return self.error_response(api, exc, call.headers)
        start = next((e for e in collected if isinstance(e, Start)), None)
        step = Step(start, [e for e in collected if not isinstance(e, Start)])
        headers = {**call.headers, **usage_gate.headers(self.engine.cli.env)}  # after this answer's reading
        return JSONResponse(api.render(call, step), headers=headers)

    def _sse(
        self,
        api: Adapter,
        call: Call,
        owned: contextlib.AsyncExitStack,
        prefix: list[Start | TurnEvent],
        events: AsyncIterator[Start | TurnEvent],
    ) -> Response:
        stopping = self.engine.stopping

        async def body() -> AsyncIterator[ServerSentEvent]:
            # Events are read here, in the response's own task, never in another one: a client that leaves
            # cancels this task, and the step (its CLI) ends with it.
            async with owned:  # the slot and the step end with the stream, however it ends
                try:
                    async for sse in api.stream(call, _chain(prefix, events)):
                        yield sse
                except ClaudeMaxError as failure:
                    stopped = ServerStopping("The server is shutting down; the answer was cut here.")
                    # (when the server stops, it ended every process on its way out: that is the error)
                    for sse in api.stream_error(call, self._hidden(stopped if stopping.is_set() else failure)):
                        yield sse

        # The reading before this request: a stream's own comes after its text (usage/gate.py).
        headers = {**call.headers, **usage_gate.headers(self.engine.cli.env), "Cache-Control": "no-cache"}
        return EventSourceResponse(body(), headers=headers, ping=15, sep="\n")

    async def watch(self, request: Request, work: Awaitable[T]) -> T:
        """Await ``work``; if the client disconnects first, cancel it and raise :class:`ClientGone`; if the
        server stops first, cancel it and raise :class:`ServerStopping`."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(request))
        stopping = asyncio.ensure_future(self.engine.stopping.wait())
        try:
            await asyncio.wait({task, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled ourselves: the work goes too
            task.cancel()
            raise
        finally:
            gone.cancel()
            stopping.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})  # its cleanup ends the CLI; a cancellation of ours still propagates
        if not task.cancelled():
            task.exception()  # retrieved: an error after the client left is of no interest to anyone
        if self.engine.stopping.is_set():  # (uvicorn may also report a disconnect while it stops)
            raise ServerStopping("The server is shutting down; nothing more was sent. Try again when it is back.")
        raise ClientGone

    async def read_json(self, request: Request) -> Any:
        size = 0
        chunks = []
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.limits.max_body_bytes:
                    raise TooLarge(f"The request body is larger than {self.limits.max_body_bytes} bytes.")
                chunks.append(chunk)
        except ClientDisconnect:  # left, or cut off by the body timeout (server/connections.py)
            raise ClientGone from None
        try:
            return json.loads(b"".join(chunks) or b"null")
        except ValueError:
            raise InvalidRequest("The request body is not valid JSON.") from None
        except RecursionError:
            raise InvalidRequest("The request body is nested too deeply.") from None

    def error_response(self, api: Adapter, exc: ClaudeMaxError, headers: dict[str, str] | None = None) -> Response:
        status, body, extra = api.error(self._hidden(exc))
        return JSONResponse(body, status_code=status, headers={**(headers or {}), **extra})

    def _hidden(self, exc: ClaudeMaxError) -> ClaudeMaxError:
        """``exc`` as a caller may see it: beyond loopback, without the CLI's stderr (logged instead)."""
        if self.limits.show_stderr or not exc.stderr:
            return exc
        logger.warning("%s", exc)  # the full text, for the server's owner
        shown = copy.copy(exc)
        shown.stderr = None
        shown.message = f"{exc.message} (details in the server log)"
        return shown

    def shown(self, exc: ClaudeMaxError) -> str:
        return str(self._hidden(exc))


def partition_of(request: Request, body: Any) -> str:
    """Callers are told apart by the key they present and the OpenAI ``user`` / Anthropic ``metadata.user_id``."""
    user = body.get("user") if isinstance(body, dict) else None
    if user is None and isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        user = body["metadata"].get("user_id")
    return f"{request.state.caller}:{user if isinstance(user, str) else ''}"


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _until_visible(events: AsyncIterator[Start | TurnEvent]) -> list[Start | TurnEvent]:
    """Events up to the first one the caller sees (text, a tool call, the end): early failures (billing
    route, usage limit, API errors after retries) get their own HTTP status."""
    prefix: list[Start | TurnEvent] = []
    async for event in events:
        prefix.append(event)
        if not isinstance(event, (Start, Notice)):
            break
    return prefix


async def _until_end(prefix: list[Start | TurnEvent], events: AsyncIterator[Start | TurnEvent]) -> list[Any]:
    collected = list(prefix)
    if collected and isinstance(collected[-1], VISIBLE):
        return collected
    async for event in events:
        collected.append(event)
        if isinstance(event, VISIBLE):
            break
    return collected


async def _chain(prefix: list[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    for event in prefix:
        yield event
    if prefix and isinstance(prefix[-1], VISIBLE):
        return
    async for event in rest:
        yield event
