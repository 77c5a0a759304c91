"""The HTTP surface: routes, authentication, limits, and OpenAI-shaped errors (never a 500 with a
traceback for bad input)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import catalog, guard, invocation
from ..errors import ClaudeMaxError, InvalidRequest, PaidUsageRefused
from ..runner.session import Done, Notice, Reasoning, Text
from ..transcript import media_block
from . import keys, openai_api
from .engine import Engine, Start

T = TypeVar("T")
OPENAPI = Path(__file__).with_name("openapi.json")
PUBLIC_PATHS = {"/health", "/openapi.json"}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


@dataclass(frozen=True)
class AppConfig:
    key: str | None = None
    """Required on every request except /health and /openapi.json, when set."""
    max_body_bytes: int = 20 * 1024 * 1024
    allow_remote_images: bool = False
    max_image_bytes: int = 10 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    loopback: bool = True
    """Listening on loopback only: then requests must name a loopback host (DNS rebinding)."""
    info: dict[str, Any] = field(default_factory=dict)
    on_ready: Callable[[list[int]], None] | None = None
    """Called once the server accepts requests and handles signals, with the orphans it reaped."""


class ClientGone(Exception):
    """The client disconnected; its work was cancelled."""


def error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(openai_api.error_body(message, code, status), status_code=status, headers=headers)


def error_for(exc: ClaudeMaxError) -> JSONResponse:
    lock = guard.OverageLock().read() if isinstance(exc, PaidUsageRefused) else None
    until = lock.get("until") if lock else None
    status, body, headers = openai_api.error_for(exc, lock_until=until if isinstance(until, int) else None)
    return JSONResponse(body, status_code=status, headers=headers)


class EventStream(StreamingResponse):
    """Server-sent events that stop, and cancel their producer, as soon as the client disconnects,
    even while no event is due (Starlette alone notices only at the next write)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        listener = asyncio.ensure_future(self.listen_for_disconnect(receive))
        await asyncio.wait({stream, listener}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stream, listener):
            task.cancel()
        results = await asyncio.gather(stream, listener, return_exceptions=True)
        closing = getattr(self.body_iterator, "aclose", None)
        if closing is not None:
            await closing()  # Starlette never closes it: its `finally` (kill the CLI, free the slot) runs now
        problem = results[0]
        if isinstance(problem, Exception) and not isinstance(problem, OSError):
            raise problem


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled ourselves (server shutdown): the work goes too
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})  # its cleanup kills the CLI; a cancellation of ours still propagates
    if not task.cancelled():
        task.exception()  # retrieved: an error after the client left is of no interest to anyone
    raise ClientGone


def create_app(engine: Engine, config: AppConfig) -> Starlette:
    invocation.serving()  # opt-in hints in errors name the server's environment, never llm's -o options

    async def read_json(request: Request) -> Any:
        size = 0
        chunks = []
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"null")
        except ValueError:
            raise InvalidRequest("The request body is not valid JSON.") from None
        except RecursionError:
            raise InvalidRequest("The request body is nested too deeply.") from None

    async def fetch_images(body: Any) -> dict[str, Any]:
        if not config.allow_remote_images:
            return {}
        urls = openai_api.remote_image_urls(body)
        if not urls:
            return {}
        fetched: dict[str, Any] = {}
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=True) as client:
            for url in urls:
                try:
                    async with client.stream("GET", url) as response:
                        response.raise_for_status()
                        data = b""
                        async for piece in response.aiter_bytes():
                            data += piece
                            if len(data) > config.max_image_bytes:
                                raise InvalidRequest(
                                    f"The image at {url} is larger than {config.max_image_bytes} bytes."
                                )
                        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                except httpx.HTTPError as exc:
                    raise InvalidRequest(f"Could not fetch the image at {url}: {exc}") from None
                fetched[url] = media_block(media_type, data)
        return fetched

    def partition_of(request: Request, user: str | None) -> str:
        # Callers are told apart by the key they present and the OpenAI `user` field.
        return f"{request.state.caller}:{user or ''}"

    async def chat(request: Request) -> Response:
        try:
            body = await read_json(request)
            chat_request = openai_api.parse(body, await fetch_images(body))
        except _TooLarge:
            return error(413, f"The request body is larger than {config.max_body_bytes} bytes.", "request_too_large")
        except ClaudeMaxError as exc:
            return error_for(exc)
        headers = {openai_api.IGNORED_HEADER: ", ".join(chat_request.ignored)} if chat_request.ignored else {}
        slot = engine.slot()
        admission = asyncio.ensure_future(slot.__aenter__())
        try:
            await unless_disconnected(request, admission)  # a caller that gives up while queued leaves
        except ClaudeMaxError as exc:
            return error_for(exc)
        except ClientGone:
            if not admission.cancelled() and admission.exception() is None:  # admitted as it left
                await slot.__aexit__(None, None, None)
            return Response(status_code=499)
        events = engine.turn(chat_request, partition_of(request, chat_request.user))
        request_id, created = openai_api.new_id(), int(time.time())
        buffered: list[Any] = []
        try:
            start = await unless_disconnected(request, anext(events))
            assert isinstance(start, Start)
            # Wait for the first text (or the end) before answering, so that early failures (billing
            # route, usage limit, API errors after retries) get their own HTTP status.
            while True:
                event = await unless_disconnected(request, anext(events))
                buffered.append(event)
                if isinstance(event, (Text, Reasoning, Done)):
                    break
        except (ClaudeMaxError, ClientGone, StopAsyncIteration) as exc:
            await events.aclose()
            await slot.__aexit__(None, None, None)
            if isinstance(exc, ClaudeMaxError):
                return error_for(exc)
            return Response(status_code=499)
        except BaseException:
            await events.aclose()
            await slot.__aexit__(None, None, None)
            raise

        async def remaining() -> AsyncIterator[Any]:
            for event in buffered:
                yield event
            async for event in events:
                yield event

        if not chat_request.stream:
            try:
                done = next((e for e in buffered if isinstance(e, Done)), None)
                while done is None:
                    # A caller that gives up (timeout, Ctrl-C) stops its CLI here too.
                    event = await unless_disconnected(request, anext(events))
                    done = event if isinstance(event, Done) else None
                outcome = done.outcome
            except ClaudeMaxError as exc:
                return error_for(exc)
            except (ClientGone, StopAsyncIteration):
                return Response(status_code=499)
            finally:
                await events.aclose()
                await slot.__aexit__(None, None, None)
            return JSONResponse(
                openai_api.completion(request_id, created, chat_request.model, outcome, start), headers=headers
            )

        async def stream() -> AsyncIterator[bytes]:
            model = chat_request.model
            try:
                yield openai_api.sse(openai_api.chunk(request_id, created, model, {"role": "assistant", "content": ""}))
                async for event in remaining():
                    if isinstance(event, Text) and event.text:
                        yield openai_api.sse(openai_api.chunk(request_id, created, model, {"content": event.text}))
                    elif isinstance(event, Reasoning) and event.text:
                        # The field several OpenAI-compatible servers use for thinking; clients ignore it.
                        delta = {"reasoning_content": event.text}
                        yield openai_api.sse(openai_api.chunk(request_id, created, model, delta))
                    elif isinstance(event, Notice):
                        yield f": {event.message}\n\n".encode()  # an SSE comment: progress, ignored by clients
                    elif isinstance(event, Done):
                        outcome = event.outcome
                        final = openai_api.chunk(
                            request_id, created, outcome.model or model, {}, openai_api.finish_reason(outcome)
                        )
                        final["claude_max"] = openai_api.metadata(outcome, start)
                        yield openai_api.sse(final)
                        if chat_request.include_usage:
                            usage = openai_api.chunk(request_id, created, outcome.model or model, {})
                            usage["choices"], usage["usage"] = [], openai_api.usage(outcome)
                            yield openai_api.sse(usage)
                yield openai_api.sse("[DONE]")
            except ClaudeMaxError as exc:
                status, body, _ = openai_api.error_for(exc)
                body["error"]["status"] = status
                yield openai_api.sse(body)
            finally:
                await events.aclose()
                await slot.__aexit__(None, None, None)

        return EventStream(stream(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model(e) for e in catalog.load()]})

    async def model(request: Request) -> Response:
        wanted = request.path_params["model"]
        for entry in catalog.load():
            if wanted in (entry.model_id, entry.alias):
                return JSONResponse(_model(entry))
        return error(404, f"The model {wanted!r} does not exist here.", "model_not_found")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def deep_health(request: Request) -> Response:
        try:
            async with engine.slot():  # it starts a CLI: admitted like a prompt
                route, answer = await engine.cli.probe()
        except ClaudeMaxError as exc:
            if exc.code == "server_busy":
                return error_for(exc)
            return JSONResponse({"status": "fail", "error": str(exc), "engine": engine.health()}, status_code=503)
        ok = route.route is guard.Route.SUBSCRIPTION
        rate = engine.last_rate_limit
        return JSONResponse(
            {
                "status": "ok" if ok else "fail",
                "billing": {**route.as_dict(), "allowed": ok},
                "last_rate_limit": rate.raw if rate is not None else None,
                "cli": {"path": str(engine.cli.path), "version": answer.get("claude_code_version")},
                "engine": engine.health(),
                "server": config.info,
            },
            status_code=200 if ok else 503,
        )

    async def openapi(request: Request) -> Response:
        return Response(OPENAPI.read_text(), media_type="application/json")

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/health/deep", deep_health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    middleware = [Middleware(_Guard, config=config)]
    if config.cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-api-key"],
            ),
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            return error(405, f"{request.method} is not allowed on {request.url.path}.", "method_not_allowed")
        return error(404, f"There is nothing at {request.url.path}.", "not_found")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, f"Internal error: {type(exc).__name__}. The server log has the details.", "internal_error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.orphans = await engine.start()
        if config.on_ready is not None:
            config.on_ready(app.state.orphans)
        try:
            yield
        finally:
            await engine.stop()

    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, 405: not_found, 500: server_error},
        lifespan=lifespan,
    )


def _model(entry: catalog.CatalogModel) -> dict[str, Any]:
    return {
        "id": entry.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "anthropic (through your Claude Code CLI)",
    }


class _TooLarge(Exception):
    pass


class _Guard:
    """Every request passes here first.

    - Refused: requests a web page could make (another site's ``Origin``; on loopback, a ``Host``
      that is not loopback, the DNS-rebinding trick; a POST body that is not ``application/json``,
      which a form or a no-cors fetch can send without a preflight).
    - The API key (``Authorization: Bearer <key>`` or ``x-api-key``), when one is set, for everything
      but the public paths.
    - The caller's partition: a hash of the key it presented, never the key itself.
    """

    def __init__(self, app: Any, config: AppConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        refusal = self._web_page(scope, headers) or self._unauthorised(scope, given)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = hashlib.sha256((given or "").encode()).hexdigest()[:16]
        await self.app(scope, receive, send)

    def _web_page(self, scope: Scope, headers: dict[str, str]) -> JSONResponse | None:
        origin = headers.get("origin")
        if origin is not None and origin not in self.config.cors_origins:
            message = f"Requests from the web origin {origin} are not allowed (see --cors-origin)."
            return error(403, message, "origin_not_allowed")
        # Browsers label even no-CORS requests (an <img> pointing here) that carry no Origin.
        if origin is None and headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return error(403, "Requests from other web sites are not allowed.", "origin_not_allowed")
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if self.config.loopback and name not in LOOPBACK_HOSTS:
            return error(400, f"Host {host!r} is not this machine's loopback address.", "invalid_host")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope.get("method") == "POST" and content_type != "application/json":
            return error(415, "Send the request body as application/json.", "unsupported_media_type")
        return None

    def _unauthorised(self, scope: Scope, given: str | None) -> JSONResponse | None:
        expected = self.config.key
        if expected is None or scope.get("path") in PUBLIC_PATHS or keys.matches(given, expected):
            return None
        return error(401, keys.refusal(), "invalid_api_key")
