"""One `claude` child process: spawned in its own process group, read line by line, always reaped.

Reads are bounded with ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11 ``wait_for``
swallows a cancellation that arrives while the awaited read completes, which let a cancelled prompt run
on. Waiting for the child to exit uses ``asyncio.wait`` instead, which never cancels the calling task:
that wait runs during a cancellation (Ctrl-C, a client that went away), and there ``asyncio.timeout``
before Python 3.11.3 raises ``CancelledError`` rather than ``TimeoutError``, which skipped the SIGKILL
and left a CLI that ignored SIGTERM running.

The child gets its own session (``start_new_session``) so a terminal Ctrl-C reaches only us; we then
kill the whole group ourselves (SIGTERM, then SIGKILL), so tools or helpers the CLI started die too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ProtocolError
from . import children
from .protocol import Event, parse_line

STDOUT_LINE_LIMIT = 64 * 1024 * 1024  # an assistant/result line can carry a very long answer
STDERR_TAIL_BYTES = 16 * 1024
KILL_GRACE_SECONDS = 2.0


class ClaudeProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._stderr = collections.deque[bytes]()
        self._stderr_size = 0
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())
        self.socket_path: str | None = None
        """The CLI's messaging socket (from ``init``); removed after a kill, which leaves it behind."""
        self.killed = False
        """:meth:`kill` was called: an exit by a signal was ours, not a crash."""

    @classmethod
    async def start(
        cls, argv: Sequence[str], env: Mapping[str, str], cwd: Path, pass_fds: Sequence[int] = ()
    ) -> ClaudeProcess:
        argv, dies_with_us = children.launch(argv)  # the CLI dies with this process (Linux)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=str(cwd),
            start_new_session=True,
            limit=STDOUT_LINE_LIMIT,
            pass_fds=tuple(pass_fds),
            **dies_with_us,
        )
        children.register(proc.pid)  # stopped if this process is stopped by a signal, or exits
        return cls(proc)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def _drain_stderr(self) -> None:
        stream = self._proc.stderr
        assert stream is not None
        while chunk := await stream.read(4096):
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the CLI wrote to stderr, trimmed, for error messages."""
        text = b"".join(self._stderr).decode(errors="replace").strip()
        if len(text) > limit:
            text = "…" + text[-limit:]
        return text

    async def send(self, data: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ProtocolError(
                "The CLI closed its input before the prompt was written.", stderr=self.stderr_tail()
            ) from exc

    def close_stdin(self) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    async def read_event(self) -> Event | None:
        """The next event, or None at end of output. Blank lines are skipped."""
        stdout = self._proc.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError as exc:  # a line beyond STDOUT_LINE_LIMIT
                raise ProtocolError(f"The CLI printed a line longer than {STDOUT_LINE_LIMIT} bytes.") from exc
            if not line:
                return None
            if line.strip():
                return parse_line(line)

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for exit (and for stderr to be drained); TimeoutError if the CLI is still running."""
        if not await self._exited_within(timeout):
            raise TimeoutError
        children.unregister(self.pid)
        await asyncio.wait({self._stderr_task}, timeout=1.0)
        return self._proc.returncode if self._proc.returncode is not None else -1

    async def _exited_within(self, seconds: float | None) -> bool:
        exited = asyncio.ensure_future(self._proc.wait())
        done, _ = await asyncio.wait({exited}, timeout=seconds)
        return bool(done)

    async def finish(self, timeout: float = 5.0) -> int:
        """Close stdin and let the CLI exit on its own (it does within ~30 ms); kill it if it does not."""
        self.close_stdin()
        try:
            return await self.wait(timeout)
        except TimeoutError:
            await self.kill()
            return self._proc.returncode if self._proc.returncode is not None else -1

    async def kill(self) -> None:
        """Kill the whole process group and reap the child. Safe to call more than once.

        The group is signalled first and stdin closed only once it is gone: a CLI paused at a tool call
        makes one more (billed) API request when its input closes, none when it is signalled."""
        self.killed = True
        try:
            if self._proc.returncode is None:
                self._signal_group(signal.SIGTERM)
                await self._exited_within(KILL_GRACE_SECONDS)
        finally:
            # Also on a second cancellation during the grace period. SIGKILL reaches what is left: the
            # CLI if it ignored SIGTERM, and members of the group that outlive it (tools it started).
            self._signal_group(signal.SIGKILL)
            self._stderr_task.cancel()
            await asyncio.wait({asyncio.ensure_future(self._proc.wait()), self._stderr_task})
            self.close_stdin()
            children.unregister(self.pid)
            if self.socket_path and Path(self.socket_path).name == f"{self.pid}.sock":
                with contextlib.suppress(OSError):
                    os.unlink(self.socket_path)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
