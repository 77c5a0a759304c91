"""Slow and hostile clients: connections that never finish their headers or their body, too many of
them, and a server at its file limit. It stays reachable and its log stays short."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.server import connections
from llm_claude_max.server.app import AppConfig, create_app
from llm_claude_max.server.engine import Engine, EngineConfig

from .conftest import FakeCLI
from .server_process import BIN

HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass
class Running:
    server: uvicorn.Server
    port: int

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        if not piece:
            break
        data += piece
    return data


def health(running: Running) -> bytes:
    with running.connect() as sock:
        sock.sendall(HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        return answer(sock)


@pytest.fixture
def serve(fake_cli: FakeCLI) -> Iterator[object]:
    """Start the app in a uvicorn thread with the given limits; stopped at the end."""
    started: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(**limits: float) -> Running:
        engine = Engine(ClaudeCLI(), EngineConfig(pool_size=0))
        app = create_app(engine, AppConfig())
        config = uvicorn.Config(
            app, http=connections.protocol(connections.ConnectionLimits(**limits)), lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        started.append((server, thread, sock))
        return Running(server, sock.getsockname()[1])

    yield start
    for server, thread, sock in started:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_connection_that_sends_nothing_is_closed(serve: object) -> None:
    running = serve(header_seconds=0.5)  # type: ignore[operator]
    with running.connect() as sock:
        assert sock.recv(100) == b""  # closed, silently (a connection left open would time out here)


def test_headers_that_never_end_get_408(serve: object, caplog: pytest.LogCaptureFixture) -> None:
    running = serve(header_seconds=0.5)  # type: ignore[operator]
    with running.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 408 ")
    assert "no request headers within 0.5 s" in caplog.text


def test_a_body_shorter_than_its_length_gets_408(serve: object, caplog: pytest.LogCaptureFixture) -> None:
    running = serve(body_seconds=0.5)  # type: ignore[operator]
    with running.connect() as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model":'
        )
        assert answer(sock).startswith(b"HTTP/1.1 408 ")
    assert "the request body stalled for 0.5 s" in caplog.text
    assert "Traceback" not in caplog.text and "Exception in ASGI application" not in caplog.text
    assert health(running).startswith(b"HTTP/1.1 200 ")


def test_the_next_request_on_a_kept_alive_connection_is_timed_too(serve: object) -> None:
    running = serve(header_seconds=0.5)  # type: ignore[operator]
    with running.connect() as sock:
        sock.sendall(HEALTH)
        time.sleep(0.2)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # and never more
        assert answer(sock).startswith(b"HTTP/1.1 408 ")


def test_idle_connections_make_room_for_new_ones(serve: object) -> None:
    running = serve(max_connections=8, header_seconds=60)  # type: ignore[operator]
    idle = [running.connect() for _ in range(30)]
    try:
        time.sleep(0.3)
        assert running.open_connections() <= 8
        assert health(running).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in idle:
            sock.close()


def test_when_every_connection_is_busy_a_new_one_gets_503(serve: object) -> None:
    running = serve(max_connections=4, header_seconds=60, body_seconds=60)  # type: ignore[operator]
    busy = [running.connect() for _ in range(4)]
    try:
        for sock in busy:  # requests in progress: headers done, body awaited
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n"
            )
        time.sleep(0.3)
        refused = health(running)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"server_busy" in refused
    finally:
        for sock in busy:
            sock.close()


def test_accept_errors_are_logged_once_a_minute() -> None:
    log_filter = connections.AcceptErrorFilter()
    records = []
    for _ in range(2048):
        record = logging.LogRecord(
            "asyncio", logging.ERROR, __file__, 1, log_filter.MESSAGE + "\nsocket: <...>", (), None
        )
        if log_filter.filter(record):
            records.append(record)
    assert len(records) == 1 and records[0].exc_info is None
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", (), None)
    assert log_filter.filter(other)


def resource_limit(pid: int) -> str:
    """The process's soft limit of open files, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return ""


def test_a_server_at_a_low_file_limit_stays_reachable_and_quiet(fake_cli: FakeCLI, tmp_path: Path) -> None:
    """64 open files at most (soft and hard), 200 connections that never send their headers."""
    log = tmp_path / "server.log"

    with log.open("w") as stderr:
        proc = subprocess.Popen(
            ["sh", "-c", f'ulimit -n 64 && exec "{BIN / "claude-max"}" serve --port 0 --pool-size 0'],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=os.environ.copy(),
        )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])
        running = Running(None, port)  # type: ignore[arg-type]
        hogs = []
        for _ in range(200):
            sock = running.connect()
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            hogs.append(sock)
        try:
            time.sleep(1)
            assert resource_limit(proc.pid) == "64"
            for _ in range(3):
                assert health(running).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in hogs:
                sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert proc.stdout is not None
        proc.stdout.close()
    text = log.read_text()
    assert len(text) < 4000, text[:4000]
    assert "Traceback" not in text and "Too many open files" not in text
