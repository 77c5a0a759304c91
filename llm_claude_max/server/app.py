"""The HTTP surface: routes, the guard in front of them, the lifespan. Every API runs through the one
:class:`~llm_claude_max.server.exchange.Exchange`; errors are the API's own shapes, never a 500 with a
traceback for bad input."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import catalog, guard, invocation
from ..content import Turn
from ..errors import ClaudeMaxError, InvalidRequest
from ..usage import gate as usage_gate
from . import hosts, images, keys, openapi, throttle
from .apis import anthropic_messages, common, openai_chat, openai_responses
from .engine import Engine
from .exchange import Call, Exchange, Limits, partition_of

PUBLIC_PATHS = {"/health", "/openapi.json"}
DEEP_HEALTH_SECONDS = 10.0
"""``/health/deep`` starts a CLI probe at most this often; callers in between share its answer."""


@dataclass(frozen=True)
class AppConfig:
    key: str | None = None
    """Required on every request except /health and /openapi.json, when set."""
    max_body_bytes: int = 20 * 1024 * 1024
    allow_remote_images: bool = False
    max_image_bytes: int = 10 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    loopback: bool = True
    """Listening on loopback only: then requests must name a loopback host (DNS rebinding), and errors may
    carry the CLI's stderr (for callers beyond loopback it goes to the server log only)."""
    info: dict[str, Any] = field(default_factory=dict)
    image_fetcher: images.Fetcher | None = None
    """How remote images are fetched (default: public addresses only, within max_image_bytes)."""
    relay_for: str | None = None
    """The warm server: its callers are llm prompts, whose commands are spelt like this (``llm claude-max``)."""
    on_ready: Callable[[list[int]], None] | None = None
    """Called once the server accepts requests and handles signals, with the orphans it reaped."""


def error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None, *, anthropic: bool = False
) -> JSONResponse:
    """An error in the caller's API's shape: Anthropic's for Anthropic clients, OpenAI's for the others."""
    if anthropic:
        body = anthropic_messages.error_body(message, anthropic_messages.error_type(status, code))
    else:
        body = openai_chat.error_body(message, code, status)
    return JSONResponse(body, status_code=status, headers=headers)


def speaks_anthropic(path: str, headers: Mapping[str, str]) -> bool:
    """An Anthropic client: the Messages API's paths, or the ``anthropic-version`` header its SDKs always send."""
    return path.startswith("/v1/messages") or "anthropic-version" in headers


def _lock_until() -> int | None:
    lock = guard.OverageLock().read()
    until = lock.get("until") if lock else None
    return until if isinstance(until, int) else None


def create_app(engine: Engine, config: AppConfig) -> Starlette:
    if config.relay_for is not None:
        invocation.relaying(config.relay_for)
    else:
        invocation.serving()  # opt-in hints in errors name the server's environment, never llm's -o options
    exchange = Exchange(engine, Limits(max_body_bytes=config.max_body_bytes, show_stderr=config.loopback))
    chat_api = openai_chat.Adapter(lock_until=_lock_until)
    fetcher = config.image_fetcher or images.Fetcher(images.Limits(max_image_bytes=config.max_image_bytes))
    responses_api = openai_responses.Adapter(lock_until=_lock_until)
    messages_api = anthropic_messages.Adapter(lock_until=_lock_until)

    def remote_urls(call: Call) -> list[str]:
        request = call.request
        return [u for turn in (*request.history, Turn("user", request.new)) for u in common.remote_urls(turn.blocks)]

    def check_images(call: Call) -> None:
        """Before admission: remote images must be allowed, and not too many."""
        urls = remote_urls(call)
        if urls and not config.allow_remote_images:
            raise InvalidRequest(
                "Remote image URLs are off; send a data URL, or start the server with --allow-remote-images."
            )
        fetcher.check_count(urls)

    async def fetch_images(call: Call) -> Call:
        """Once admitted: a queued request costs no network or memory."""
        urls = remote_urls(call)
        if not urls:
            return call
        fetched = await fetcher.fetch_all(urls)

        def swap(blocks: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(fetched[b["url"]] if b.get("type") == "remote_image" else b for b in blocks)

        request = call.request
        history = tuple(Turn(t.role, swap(t.blocks)) for t in request.history)
        call.request = replace(request, history=history, new=swap(request.new), fingerprints=())
        return call

    async def chat(request: Request) -> Response:
        return await exchange.handle(request, chat_api, check=check_images, prepare=fetch_images)

    async def responses(request: Request) -> Response:
        return await exchange.handle(request, responses_api, check=check_images, prepare=fetch_images)

    async def messages(request: Request) -> Response:
        return await exchange.handle(request, messages_api, check=check_images, prepare=fetch_images)

    async def count_tokens(request: Request) -> Response:
        status, body = anthropic_messages.count_tokens_refusal()
        return JSONResponse(body, status_code=status)

    async def models(request: Request) -> Response:
        entries = catalog.load()
        if speaks_anthropic(request.url.path, request.headers):
            data = [_anthropic_model(e) for e in entries]
            return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})
        return JSONResponse({"object": "list", "data": [_model(e) for e in entries]})

    async def model(request: Request) -> Response:
        wanted = request.path_params["model"]
        anthropic = speaks_anthropic(request.url.path, request.headers)
        for entry in catalog.load():
            if wanted in (entry.model_id, entry.alias):
                return JSONResponse(_anthropic_model(entry) if anthropic else _model(entry))
        return error(404, f"The model {wanted!r} does not exist here.", "model_not_found", anthropic=anthropic)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def probe_cli() -> tuple[int, dict[str, Any]]:
        """What the CLI answers to ``initialize`` (no API call). Raises ServerBusy; other errors are answers."""
        try:
            async with engine.slot():  # it starts a CLI: admitted like a prompt
                route, answer = await engine.cli.probe()
        except ClaudeMaxError as exc:
            if exc.code == "server_busy":
                raise
            return 503, {"status": "fail", "error": exchange.shown(exc)}
        ok = route.route is guard.Route.SUBSCRIPTION
        cli = {"path": str(engine.cli.path), "version": answer.get("claude_code_version")}
        return (200 if ok else 503), {"status": "ok" if ok else "fail", "billing": {**route.as_dict(), "allowed": ok},
                                      "cli": cli}  # fmt: skip

    deep_probe = throttle.Throttled(probe_cli, DEEP_HEALTH_SECONDS)

    async def deep_health(request: Request) -> Response:
        try:
            (status, body), age = await deep_probe()
        except ClaudeMaxError as exc:
            return exchange.error_response(chat_api, exc)
        rate = engine.last_rate_limit
        return JSONResponse(
            {
                **body,
                "checked_seconds_ago": round(age, 1),
                "last_rate_limit": rate.raw if rate is not None else None,
                "usage": usage_gate.document(engine.cli.env, engine.config.policy),
                "engine": engine.health(),
                "server": config.info,
            },
            status_code=status,
        )

    async def usage_windows(request: Request) -> Response:
        return JSONResponse(usage_gate.document(engine.cli.env, engine.config.policy))

    async def release(request: Request) -> Response:
        """The caller gave up tool chains: end its processes paused at these calls (the warm server's `llm`)."""
        try:
            body = await exchange.read_json(request)
        except ClaudeMaxError as exc:
            return exchange.error_response(chat_api, exc)
        ids = body.get("tool_call_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return error(400, 'Send {"tool_call_ids": [...]}.', "invalid_request")
        return JSONResponse({"released": engine.release(partition_of(request, body), ids)})

    async def openapi_document(request: Request) -> Response:
        return JSONResponse(openapi.document())

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/health/deep", deep_health, methods=["GET"]),
        Route("/v1/usage", usage_windows, methods=["GET"]),
        Route("/v1/claude-max/release", release, methods=["POST"]),
        Route("/openapi.json", openapi_document, methods=["GET"]),
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
        anthropic = speaks_anthropic(request.url.path, request.headers)
        if status == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
            return error(405, message, "method_not_allowed", anthropic=anthropic)
        return error(404, f"There is nothing at {request.url.path}.", "not_found", anthropic=anthropic)

    async def server_error(request: Request, exc: Exception) -> Response:
        message = f"Internal error: {type(exc).__name__}. The server log has the details."
        return error(500, message, "internal_error", anthropic=speaks_anthropic(request.url.path, request.headers))

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


def _anthropic_model(entry: catalog.CatalogModel) -> dict[str, Any]:
    """A model as the Anthropic API lists one (the catalog knows no release date: the epoch stands for it)."""
    name = entry.description or entry.resolved or entry.alias
    return {"type": "model", "id": entry.model_id, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}


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
        anthropic = speaks_anthropic(scope.get("path", ""), headers)
        refusal = self._web_page(scope, headers, anthropic) or self._unauthorised(scope, given, anthropic)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = hashlib.sha256((given or "").encode()).hexdigest()[:16]
        await self.app(scope, receive, send)

    def _web_page(self, scope: Scope, headers: dict[str, str], anthropic: bool) -> JSONResponse | None:
        origin = headers.get("origin")
        if origin is not None and origin not in self.config.cors_origins:
            message = f"Requests from the web origin {origin} are not allowed (see --cors-origin)."
            return error(403, message, "origin_not_allowed", anthropic=anthropic)
        # Browsers label even no-CORS requests (an <img> pointing here) that carry no Origin.
        if origin is None and headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return error(
                403, "Requests from other web sites are not allowed.", "origin_not_allowed", anthropic=anthropic
            )
        host = headers.get("host", "")
        if self.config.loopback and not hosts.is_loopback(host):
            message = f"Host {host!r} is not this machine's loopback address."
            return error(400, message, "invalid_host", anthropic=anthropic)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope.get("method") == "POST" and content_type != "application/json":
            message = "Send the request body as application/json."
            return error(415, message, "unsupported_media_type", anthropic=anthropic)
        return None

    def _unauthorised(self, scope: Scope, given: str | None, anthropic: bool) -> JSONResponse | None:
        expected = self.config.key
        if expected is None or scope.get("path") in PUBLIC_PATHS or keys.matches(given, expected):
            return None
        return error(401, keys.refusal(), "invalid_api_key", anthropic=anthropic)
