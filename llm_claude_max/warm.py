"""The warm server: an opt-in, per-user `claude-max serve` in the background that `llm` prompts go
through, so a prompt starts in a running CLI process (warm, or recycled after an earlier conversation)
instead of starting one.

- **Opt-in.** ``llm claude-max warm start`` starts it now; with ``CLAUDE_MAX_WARM=1`` a prompt that finds
  none runs as usual and then starts one for the next prompts. It stops after ``--idle-timeout``
  seconds without a prompt (15 minutes by default) or at ``llm claude-max warm stop``.
- **Private.** It listens on a Unix socket in a directory only the user can enter, made 0600, and every
  request must carry a key that is kept in a 0600 file beside it and changes with every start. Nothing
  listens on the network.
- **Only for the same environment.** A warm server is found through a directory named by a hash of the
  environment it was started with (every variable but a few shell ones, see :data:`SHELL_ONLY`). A
  prompt from another environment (another CLI, base URL, billing opt-in, config directory...) does not
  find it and runs its own CLI as without one. So the CLI, its environment, the billing guard and its
  settings are always those the prompt would have had.
- **Falls back, never silently to something else.** A server that cannot be reached (gone, shutting down)
  means the prompt runs its own CLI, as without a warm server: nothing had been sent to it. Options that
  only apply to a CLI started here (``cli``, ``claude_tools``, ``allow_api_billing``, ``allow_overage``)
  run the prompt here too.

This module is imported by the plugin on every prompt: it imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config, invocation, paths

IDLE_TIMEOUT = 900
"""Seconds without a prompt after which a warm server stops."""
START_TIMEOUT = 60.0
SHELL_ONLY = frozenset(
    {"PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "WINDOWID"}
)
"""Variables that change from one shell or directory to the next and mean nothing to the CLI: a prompt
from another directory still finds the warm server."""
LOCAL_ONLY = ("allow_api_billing", "allow_overage", "claude_tools", "claude_tools_dir", "cli")
"""Prompt options that apply to a CLI started by the prompt: such a prompt runs its own."""
SOCKET_PATH_LIMIT = 100
"""A Unix socket's path must fit in 108 bytes; a longer state directory puts it in a private temporary one."""


@dataclass(frozen=True)
class Endpoint:
    """A running warm server, as the plugin reaches it."""

    url: str
    key: str
    socket: str
    pid: int


def fingerprint(env: Mapping[str, str]) -> str:
    """A hash of what a prompt's CLI would get from this environment (and of this installation)."""
    kept = sorted((k, v) for k, v in env.items() if k not in SHELL_ONLY)
    installed = os.stat(__file__).st_mtime_ns
    data = json.dumps([kept, sys.executable, __file__, installed], separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def home(env: Mapping[str, str]) -> Path:
    """Where every warm server of this user keeps its state."""
    return paths.state_dir(env) / "warm"


def directory(env: Mapping[str, str]) -> Path:
    """The state directory of the warm server for this environment."""
    return home(env) / fingerprint(env)


def _state(where: Path) -> dict[str, Any] | None:
    """A running server's state (``server.json``), or None."""
    from .server import records

    try:
        state = json.loads((where / "server.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not records.alive(state.get("pid"), state.get("start")):
        return None
    return state


def find(env: Mapping[str, str]) -> Endpoint | None:
    """The warm server started with this environment, if it runs."""
    where = directory(env)
    state = _state(where)
    if state is None:
        return None
    try:
        key = (where / "key").read_text().strip()
    except OSError:
        return None
    return Endpoint(str(state.get("url") or "http://localhost"), key, str(state.get("socket")), int(state["pid"]))


def wanted(env: Mapping[str, str]) -> bool:
    """``CLAUDE_MAX_WARM=1``: prompts start a warm server when none runs."""
    return config.flag(env, config.WARM)


# -- the plugin's way ---------------------------------------------------------------------------------
async def route(
    env: Mapping[str, str],
    options: Any,
    via: Callable[[Endpoint], AsyncIterator[Any]],
    local: Callable[[], AsyncIterator[Any]],
) -> AsyncIterator[Any]:
    """A prompt's events: through the warm server when one runs for this environment (``via``), else from a
    CLI started here (``local``), which then starts a warm server if the user asked for them."""
    from .server.client import Unreachable

    endpoint = None if any(getattr(options, name, None) is not None for name in LOCAL_ONLY) else find(env)
    if endpoint is not None:
        from . import progress

        progress.phase("waiting for the warm claude-max server")
        events = via(endpoint)
        try:
            try:
                first = await anext(events)
            except StopAsyncIteration:
                return
            except Unreachable:
                endpoint = None  # nothing was sent: run here
            else:
                yield first
                async for event in events:
                    yield event
                return
        finally:
            await events.aclose()  # type: ignore[attr-defined]
    async for event in local():
        yield event
    if wanted(env) and not _started:  # after a prompt that went well: starting one never hides a failure
        _started.append(None)
        try:
            start(env, wait=False)
        except (OSError, subprocess.SubprocessError) as exc:
            sys.stderr.write(
                f"claude-max: the warm server could not be started ({exc}); prompts start their own CLI.\n"
            )


_started: list[Endpoint | None] = []
"""A warm server was started by this process (once is enough)."""


# -- starting and stopping -----------------------------------------------------------------------------------
def start(
    env: Mapping[str, str], *, idle_timeout: int = IDLE_TIMEOUT, pool_size: int = 1, wait: bool = True
) -> Endpoint | None:
    """Start the warm server for this environment in the background, unless one runs; with ``wait``, until
    it accepts prompts (None if it did not: its log is ``server.log`` in :func:`directory`)."""
    found = find(env)
    if found is not None:
        return found
    where = directory(env)
    _private_dir(where)
    command = [sys.executable, "-m", "llm_claude_max.cli", "warm", "serve", "--idle-timeout", str(idle_timeout)]
    command += ["--pool-size", str(pool_size), "--spelling", invocation.prefix()]
    with (where / "server.log").open("ab") as log:
        # Through sh, which exits at once: the server is nobody's child (init reaps it), in a session of its
        # own (no terminal: Ctrl-C at a prompt never reaches it).
        subprocess.run(
            ["/bin/sh", "-c", '"$@" &', "sh", *command],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            check=False,
            timeout=30,
        )
    if not wait:
        return None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = find(env)
        if found is not None:
            return found
        time.sleep(0.05)
    return None


def stop(env: Mapping[str, str], *, every: bool = False, timeout: float = 20.0) -> list[int]:
    """Stop the warm server of this environment (``every``: of any environment); returns their PIDs."""
    from .server import records

    states = [s for s in servers(env) if (every or s["this_environment"]) and _is_warm_server(s["pid"])]
    for state in states:
        with contextlib.suppress(ProcessLookupError):
            os.kill(state["pid"], signal.SIGTERM)  # it ends its CLI processes and removes its state
    deadline = time.monotonic() + timeout
    for state in states:
        while records.alive(state["pid"], state.get("start")) and time.monotonic() < deadline:
            time.sleep(0.05)
        if records.alive(state["pid"], state.get("start")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["pid"], signal.SIGKILL)
    return [s["pid"] for s in states]


def servers(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every running warm server of this user, with ``this_environment`` telling whether this
    environment's prompts go through it."""
    mine = fingerprint(env)
    found = []
    for where in sorted(home(env).glob("*/")):
        state = _state(where)
        if state is not None:
            found.append({**state, "directory": str(where), "this_environment": where.name == mine})
    return found


def _is_warm_server(pid: int) -> bool:
    """The process is a warm server (its command line says so, where ``/proc`` shows it)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return b"warm" in argv and b"serve" in argv


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


# -- the server's side ------------------------------------------------------------------------------------
def serve(env: Mapping[str, str], *, idle_timeout: int, pool_size: int, spelling: str | None = None) -> None:
    """Run the warm server of this environment in the foreground (``start`` runs this in the background).
    Returns at once if one runs already."""
    import fcntl

    from .server import keys, records
    from .server.run import ServeOptions, run

    where = directory(env)
    _private_dir(where)
    lock = (where / "lock").open("a")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another one runs (or is starting) for this environment
        key = keys.new_key()
        _write_private(where / "key", key + "\n")
        socket_dir = where if len(str(where / "s")) <= SOCKET_PATH_LIMIT else Path(tempfile.mkdtemp(prefix="cmw-"))
        socket_path = socket_dir / "s"

        def listening(url: str) -> None:
            pid = os.getpid()
            state = {
                "pid": pid,
                "start": records.process_start(pid),
                "url": url,
                "socket": str(socket_path),
                "idle_timeout": idle_timeout,
                "started": time.time(),
            }
            _write_private(where / "server.json", json.dumps(state))

        options = ServeOptions(
            require_key=True,
            key=key,
            pool_size=pool_size,
            live_sessions=4,
            idle_seconds=float(min(idle_timeout, 600)),
            unix_socket=socket_path,
            exit_when_idle=float(idle_timeout),
            on_listening=listening,
            relay_for=spelling or invocation.INSIDE_LLM,
        )
        try:
            run(options)
        finally:
            (where / "server.json").unlink(missing_ok=True)
            (where / "key").unlink(missing_ok=True)
            if socket_dir != where:
                with contextlib.suppress(OSError):
                    socket_dir.rmdir()
    finally:
        lock.close()


def _write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
