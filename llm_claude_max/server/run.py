"""Starting `claude-max serve`: bind, check the billing route, write the state file the doctor reads,
and serve until Ctrl-C or SIGTERM (which stop every `claude` child)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click
import uvicorn

from .. import guard, invocation, paths, progress
from ..errors import ClaudeMaxError
from ..runner import children
from ..runner.client import ClaudeCLI
from ..runner.loop import CALLER_SIGNALS
from ..runner.session import Timeouts
from . import connections, keys
from .app import AppConfig, create_app
from .engine import Engine, EngineConfig
from .records import ServerRecord


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    public: bool = False
    require_key: bool = False
    pool_size: int = 2
    max_concurrency: int = 4
    queue: int = 16
    live_sessions: int = 4
    idle_seconds: float = 600.0
    allow_remote_images: bool = False
    cors_origins: tuple[str, ...] = ()
    recycle: bool = True
    max_conversations: int = 50
    max_body_bytes: int = 20 * 1024 * 1024
    max_connections: int = 256
    log_level: str = "warning"
    unix_socket: Path | None = None
    """Listen on this Unix socket (made 0600) instead of ``host:port`` (the warm server, :mod:`..warm`)."""
    key: str | None = None
    """Require this key (instead of the stored one, when ``require_key``)."""
    exit_when_idle: float | None = None
    """Stop after this many seconds without a request."""
    relay_for: str | None = None
    """The warm server: messages are spelt for the llm prompts it answers (see ``AppConfig.relay_for``)."""
    on_listening: Callable[[str], None] | None = None
    """Called with the URL once requests are accepted."""


def _bind(host: str, port: int) -> connections.Listener:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = connections.Listener(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, telling the engine at once when a signal asks it to stop."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        with contextlib.suppress(RuntimeError):  # no loop yet, or already closed
            asyncio.get_running_loop().call_soon_threadsafe(self.engine.begin_stop)


def _bind_unix(path: Path) -> connections.Listener:
    sock = connections.Listener(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket left by a server that died (a live one holds the warm server's lock)
    umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"Cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(umask)
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


async def _exit_when_idle(engine: Engine, server: uvicorn.Server, seconds: float) -> None:
    while not server.should_exit:
        await asyncio.sleep(min(5.0, max(seconds / 4, 0.05)))
        if engine.quiet_for() >= seconds:
            server.should_exit = True


def run(options: ServeOptions) -> None:
    # A server started from the plugin's loop thread (the warm server) inherits its blocked signals.
    if hasattr(signal, "pthread_sigmask"):  # (POSIX)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CALLER_SIGNALS)
    children.install()  # SIGHUP (uvicorn handles SIGTERM and SIGINT while it serves), atexit
    try:
        cli = ClaudeCLI()
        paths.workspace(cli.env)  # every process runs there, and the server's records live beside it
    except ClaudeMaxError as exc:
        raise click.ClickException(str(exc)) from None
    settings = cli.settings
    policy = guard.Policy.from_settings(settings)
    try:
        key, where = keys.load() if options.require_key and options.key is None else (options.key, "none")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with progress.waiting("claude-max serve: starting; asking the Claude Code CLI which credential it will use"):
            route, _ = asyncio.run(cli.probe())
        note = guard.check_route(route, policy)
        click.echo(f"Billing: {route.describe()}" + (f" ({note})" if note else ""), err=True)
    except ClaudeMaxError as exc:
        click.secho(f"Every request will fail until this is fixed: {exc}", fg="red", err=True)

    if options.unix_socket is not None:
        sock = _bind_unix(options.unix_socket)
        url = "http://localhost"
        info = {"url": url, "socket": str(options.unix_socket), "public": False, "key_required": key is not None}
    else:
        sock = _bind(options.host, options.port)
        host, port = sock.getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        info = {"url": url, "host": host, "port": port, "public": options.public, "key_required": key is not None}
    record = ServerRecord(info, cli.env)
    engine = Engine(
        cli,
        EngineConfig(
            pool_size=options.pool_size,
            max_concurrency=options.max_concurrency,
            queue=options.queue,
            live_sessions=options.live_sessions,
            idle_seconds=options.idle_seconds,
            timeouts=Timeouts(),
            policy=policy,
            recycle=options.recycle,
            max_conversations=options.max_conversations,
        ),
        record,
    )

    def ready(orphans: list[int]) -> None:
        # Printed only now: uvicorn handles SIGTERM from here on, so "listening" means "stoppable" too.
        if orphans:
            click.echo(f"Stopped {len(orphans)} claude process(es) left by a server that died.", err=True)
        if options.exit_when_idle:
            watchers.add(asyncio.ensure_future(_exit_when_idle(engine, server, options.exit_when_idle)))
        if options.on_listening is not None:
            options.on_listening(url)
            return
        if key is not None:
            click.echo(f"API key required (`{invocation.command('server-key')}` prints it; kept in {where}).", err=True)
        click.echo(f"claude-max serve: listening on {url} (OpenAI base URL: {url}/v1)", err=True)
        sys.stdout.write(f"{url}\n")
        sys.stdout.flush()

    watchers: set[asyncio.Future[None]] = set()

    app = create_app(
        engine,
        AppConfig(
            key=key,
            max_body_bytes=options.max_body_bytes,
            allow_remote_images=options.allow_remote_images,
            cors_origins=options.cors_origins,
            loopback=not options.public,
            info=info,
            relay_for=options.relay_for,
            on_ready=ready,
        ),
    )
    processes = options.pool_size + options.max_concurrency + options.live_sessions + EngineConfig.max_paused
    max_connections, sock.max_open = connections.room(options.max_connections, processes)
    connections.install_accept_error_filter()
    server = _Server(
        uvicorn.Config(
            app,
            # Header and body timeouts, and a connection limit that fits the file limit.
            http=connections.protocol(connections.ConnectionLimits(max_connections=max_connections)),
            backlog=128,
            log_level=options.log_level,
            lifespan="on",
            timeout_graceful_shutdown=5,
            access_log=False,
        ),
        engine,
    )
    try:
        server.run(sockets=[sock])
    finally:
        for watcher in watchers:
            watcher.cancel()
        sock.close()
        record.close()
        if options.unix_socket is not None:
            options.unix_socket.unlink(missing_ok=True)
