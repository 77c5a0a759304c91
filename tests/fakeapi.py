"""A fake Anthropic Messages API on 127.0.0.1 for driving the real `claude` CLI in tests.

It answers ``POST /v1/messages`` with SSE streams (or JSON when ``stream`` is false), records every
request (headers and JSON body), and plays scripted :class:`Reply` objects in order, falling back to
``default``. Faults: HTTP errors with headers, malformed SSE, a stream cut mid-way, stalls before the
headers or after ``message_start``, and a gate that holds the last chunk until the test opens it.

Run it by hand for experiments: ``python tests/fakeapi.py [port]``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["ok", "malformed", "cut", "stall_body", "stall_headers"]


@dataclass
class ToolUse:
    """A call of one of the caller's tools, as the model would make it."""

    name: str
    """The caller's tool name; matched against the request's tools exactly or after an ``mcp__<server>__``
    prefix (how the CLI names an in-process MCP server's tools)."""
    input: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass
class Reply:
    """One scripted answer to one ``POST /v1/messages``."""

    text: str | list[str] = "Hello from the fake API."
    tool_uses: list[ToolUse] = field(default_factory=list)
    """Answer with these tool_use blocks (after ``text``, when it is not empty) if the tools are offered."""
    thinking: str | None = None
    status: int = 200
    error_message: str | None = None
    error_type: str = "api_error"
    headers: dict[str, str] = field(default_factory=dict)
    mode: Mode = "ok"
    chunk_delay: float = 0.0
    # Answer with a StructuredOutput tool call carrying this input (when the tool is offered).
    structured: dict[str, Any] | None = None
    # Answer with a call of this Claude Code tool, e.g. ("Read", {"file_path": "/etc/passwd"}), unless the
    # last message already carries a tool result.
    # Hold the last text chunk until this event is set (proves streaming order); records whether the
    # gate was opened in time (True) or the wait timed out (False).
    gate: threading.Event | None = None
    gate_timeout: float = 10.0
    gate_opened: bool | None = None
    input_tokens: int = 12
    output_tokens: int = 7
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    stall_seconds: float = 600.0
    stop_reason: str | None = None
    """Overrides the stop reason (``max_tokens``: the answer was cut at the output limit)."""


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw_size: int
    at: float
    """When the request arrived (``time.monotonic()``: comparable across processes on Linux)."""
    answered_at: float | None = None
    """When the answer was completely written."""

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def _offered(name: str, tools: set[Any]) -> str | None:
    """The request's name for the caller's tool ``name`` (``mcp__<server>__name``), or None."""
    for offered in tools:
        if isinstance(offered, str) and (offered == name or offered.split("__", 2)[-1] == name):
            return offered
    return None


def tool_results(body: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The tool_result blocks of a recorded request's last message."""
    messages = (body or {}).get("messages") or [{}]
    content = messages[-1].get("content")
    return (
        [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if isinstance(content, list)
        else []
    )


def _chunks(text: str | list[str]) -> list[str]:
    if isinstance(text, list):
        return text
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


class FakeAnthropicAPI:
    """Start with ``with FakeAnthropicAPI() as api:``; point the CLI at ``api.url``."""

    def __init__(self, port: int = 0) -> None:
        self.default = Reply()
        self.replies: list[Reply] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._message_counter = 0
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open_sockets: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeAnthropicAPI:
        api = self

        class Handler(_Handler):
            owner = api

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                for sock in list(self._open_sockets):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            self._server = None

    def __enter__(self) -> FakeAnthropicAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- scripting ---------------------------------------------------------------------------
    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self.replies.pop(0) if self.replies else self.default

    def _next_message_id(self) -> str:
        with self._lock:
            self._message_counter += 1
            return f"msg_fake{self._message_counter:04d}"

    @property
    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]


class _Handler(BaseHTTPRequestHandler):
    owner: FakeAnthropicAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._open_sockets.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _record(self) -> dict[str, Any] | None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: dict[str, Any] | None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = Recorded(self.command, self.path, dict(self.headers.items()), body, len(raw), time.monotonic())
        with self.owner._lock:
            self.owner.requests.append(rec)
        self._recorded = rec
        return body

    def do_GET(self) -> None:
        self._record()
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not found"}})

    def do_CONNECT(self) -> None:
        self._record()
        self.send_response(403)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._record() or {}
        if not self.path.startswith("/v1/messages"):
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not found"}})
            return
        if "count_tokens" in self.path:
            self._json(200, {"input_tokens": 10})
            return
        reply = self.owner._next_reply()
        if reply.mode == "stall_headers":
            time.sleep(reply.stall_seconds)
            return
        if reply.status != 200:
            payload = {
                "type": "error",
                "error": {"type": reply.error_type, "message": reply.error_message or f"fake error {reply.status}"},
            }
            self._json(reply.status, payload, reply.headers)
            return
        blocks = self._answer_blocks(body, reply)
        if body.get("stream"):
            self._stream(body, reply, blocks)
        else:
            self._json(200, self._message(body, reply, blocks), reply.headers)
        self._recorded.answered_at = time.monotonic()

    # -- answer building ---------------------------------------------------------------------
    def _answer_blocks(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        tools = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        messages = body.get("messages") or [{}]
        structured_calls = {
            b.get("id")
            for m in messages
            if m.get("role") == "assistant" and isinstance(m.get("content"), list)
            for b in m["content"]
            if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "StructuredOutput"
        }
        answered_tool = any(r.get("tool_use_id") in structured_calls for r in tool_results(body))
        blocks: list[dict[str, Any]] = []
        if reply.thinking:
            blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": "sig-fake"})
        calls = [(use, _offered(use.name, tools)) for use in reply.tool_uses]
        if calls and all(name is not None for _, name in calls):
            if reply.text:
                blocks.append({"type": "text", "text": "".join(_chunks(reply.text))})
            for use, name in calls:
                tool_id = use.id or f"toolu_{self.owner._next_message_id()}"
                blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": use.input})
        elif reply.structured is not None and "StructuredOutput" in tools and not answered_tool:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{self.owner._next_message_id()}",
                    "name": "StructuredOutput",
                    "input": reply.structured,
                }
            )
        else:
            blocks.append({"type": "text", "text": "".join(_chunks(reply.text))})
        return blocks

    def _usage(self, reply: Reply) -> dict[str, Any]:
        return {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "cache_creation_input_tokens": reply.cache_creation_tokens,
        }

    def _message(self, body: dict[str, Any], reply: Reply, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.owner._next_message_id(),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": blocks,
            "stop_reason": reply.stop_reason or ("tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn"),
            "stop_sequence": None,
            "usage": self._usage(reply),
        }

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", "req_fake")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, event: str, data: dict[str, Any] | str) -> None:
        payload = data if isinstance(data, str) else json.dumps(data)
        self.wfile.write(f"event: {event}\ndata: {payload}\n\n".encode())
        self.wfile.flush()

    def _stream(self, body: dict[str, Any], reply: Reply, blocks: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", "req_fake")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        message = self._message(body, reply, blocks)
        start = dict(message, content=[], stop_reason=None, usage=dict(self._usage(reply), output_tokens=1))
        try:
            self._sse("message_start", {"type": "message_start", "message": start})
            if reply.mode == "stall_body":
                time.sleep(reply.stall_seconds)
                return
            self._sse("ping", {"type": "ping"})
            for index, block in enumerate(blocks):
                self._stream_block(index, block, reply)
                if reply.mode == "cut":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
            self._sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": reply.output_tokens},
                },
            )
            self._sse("message_stop", {"type": "message_stop"})
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _stream_block(self, index: int, block: dict[str, Any], reply: Reply) -> None:
        kind = block["type"]
        if kind == "text":
            self._sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            pieces = _chunks(reply.text)
            for n, piece in enumerate(pieces):
                if n == len(pieces) - 1 and reply.gate is not None:
                    reply.gate_opened = reply.gate.wait(reply.gate_timeout)
                if reply.mode == "malformed" and n == 1:
                    self.wfile.write(
                        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_de\n\n'
                    )
                    self.wfile.flush()
                    continue
                self._sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
                )
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
        elif kind == "thinking":
            self._sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            self._sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                },
            )
            self._sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                },
            )
        elif kind == "tool_use":
            self._sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                },
            )
            arguments = json.dumps(block["input"])
            # In pieces, as the real API streams arguments (input_json_delta).
            for start in range(0, len(arguments), 8):
                self._sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments[start : start + 8]},
                    },
                )
        self._sse("content_block_stop", {"type": "content_block_stop", "index": index})


UNIFIED = "anthropic-ratelimit-unified-"
WINDOW_PREFIXES = {"five_hour": "5h", "seven_day": "7d", "seven_day_overage_included": "7d_oi", "overage": "overage"}
"""The header infix of each window, as the CLI 2.1.328 reads them (``anthropic-ratelimit-unified-7d-utilization``)."""

Window = tuple[float, int] | tuple[float, int, str] | tuple[float, int, str, float]
"""(utilization, reset epoch[, status[, surpassed threshold]])."""


def unified_headers(
    status: str = "allowed",
    *,
    claim: str | None = None,
    reset: int | None = None,
    windows: dict[str, Window] | None = None,
    overage: str | None = None,
    overage_reset: int | None = None,
    overage_reason: str | None = None,
) -> dict[str, str]:
    """The unified rate-limit headers Anthropic's API sends a subscription: the top-level status (with the
    limiting window ``claim`` and its ``reset``), per-window utilization/reset/status/threshold, overage."""
    headers = {UNIFIED + "status": status}
    if claim is not None:
        headers[UNIFIED + "representative-claim"] = claim
    if reset is not None:
        headers[UNIFIED + "reset"] = str(reset)
    for name, (utilization, window_reset, *rest) in (windows or {}).items():
        prefix = UNIFIED + WINDOW_PREFIXES[name]
        headers[f"{prefix}-utilization"] = str(utilization)
        headers[f"{prefix}-reset"] = str(window_reset)
        if rest:
            headers[f"{prefix}-status"] = str(rest[0])
        if len(rest) > 1:
            headers[f"{prefix}-surpassed-threshold"] = str(rest[1])
    if overage is not None:
        headers[UNIFIED + "overage-status"] = overage
    if overage_reset is not None:
        headers[UNIFIED + "overage-reset"] = str(overage_reset)
    if overage_reason is not None:
        headers[UNIFIED + "overage-disabled-reason"] = overage_reason
    return headers


def five_hour_limit_headers(reset_epoch: int, *, overage: bool = False) -> dict[str, str]:
    """Unified rate-limit headers: the 5-hour window is used up (and, with ``overage``, extra usage serves it)."""
    return unified_headers(
        "rejected",
        claim="five_hour",
        reset=reset_epoch,
        windows={"five_hour": (1.0, reset_epoch, "rejected")},
        overage="allowed" if overage else None,
        overage_reset=reset_epoch if overage else None,
    )


if __name__ == "__main__":  # pragma: no cover - manual experiments
    import sys

    with FakeAnthropicAPI(int(sys.argv[1]) if len(sys.argv) > 1 else 0) as fake:
        print(fake.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
