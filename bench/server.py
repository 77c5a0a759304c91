"""A `claude-max serve` under measurement: started in a sandbox, spoken to over HTTP, stopped with SIGTERM.

The server and its `claude` children carry the sandbox's HOME; while the server runs, its PID is in
``sandbox.spared`` so that the per-run cleanup of other commands leaves it alone. :meth:`Server.stop`
takes it out again and runs the sandbox's cleanup, which kills (and counts) anything the server left.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests import proctable

from .measure import BenchError
from .sandbox import Sandbox

START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 120.0
Message = dict[str, str]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


@dataclass
class Turn:
    """One POST /v1/chat/completions as the client saw it."""

    status: int
    seconds: float
    """From sending the request to the end of the response."""
    first: float | None
    """From sending the request to the first non-empty content or tool-call delta (streaming only)."""
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    """The response's non-standard ``claude_max`` field (``continued``, ``process``, ...)."""
    calls: list[dict[str, Any]] = field(default_factory=list)
    """The tool calls of the answer, assembled from the streamed deltas: ``{"id", "name", "arguments"}``."""
    sent: float = 0.0
    """When the request was sent (``time.monotonic()``, comparable with the fake API's records)."""

    @property
    def process(self) -> str | None:
        value = self.meta.get("process")
        return value if isinstance(value, str) else None


class Server:
    """``claude-max serve --port 0 OPTIONS...`` in ``sandbox``; use as a context manager."""

    def __init__(self, sandbox: Sandbox, *options: str) -> None:
        self.sandbox = sandbox
        self.options = options
        self.label = " ".join(("claude-max serve", *options))
        self.log = sandbox.root / f"serve-{time.monotonic_ns()}.log"
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self.exit_code: int | None = None

    def __enter__(self) -> Server:
        command = self.sandbox.claude_max(self.label, "serve", "--port", "0", *self.options)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command.argv,
                env=command.env,
                cwd=command.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.sandbox.spared.add(self.proc.pid)
        try:
            assert self.proc.stdout is not None
            ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
            self.url = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
            if not self.url.startswith("http://"):
                raise BenchError(f"{self.label}: no URL within {START_TIMEOUT} s\n{self.log.read_text()[-2000:]}")
            self.client = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM (the server then stops its children), wait, and kill whatever is left in the sandbox."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.exit_code = self.proc.returncode
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.sandbox.spared.discard(self.proc.pid)
            self.sandbox.kill_leftovers()
        return self.exit_code

    # -- its processes ---------------------------------------------------------------------------------
    def children(self) -> list[int]:
        """PIDs of the `claude` processes whose parent is the server."""
        return proctable.claude_children(self.pid)

    def settle(self, *, least: int = 0, most: int | None = None, minimum: float = 0.3, quiet: float = 0.3) -> float:
        """Wait until the server and its children have used no CPU for ``quiet`` seconds (a replacement warm
        process has finished starting, a finished one has been stopped) while the server has between
        ``least`` and ``most`` `claude` children. Returns the seconds waited."""
        start = time.perf_counter()
        deadline = start + 20.0
        last, quiet_since = -1, start
        time.sleep(minimum)
        while True:
            now = time.perf_counter()
            pids = self.children()
            ticks = sum(_cpu_ticks(pid) for pid in [self.pid, *pids])
            if ticks != last:
                last, quiet_since = ticks, now
            elif now - quiet_since >= quiet and least <= len(pids) <= (len(pids) if most is None else most):
                return now - start
            if now > deadline:
                wanted = f"{least}" + ("+" if most is None else f"–{most}")
                raise BenchError(f"{self.label}: not idle with {wanted} claude children after 20 s (has {len(pids)})")
            time.sleep(0.02)

    # -- requests ---------------------------------------------------------------------------------------
    def chat(
        self,
        messages: list[Message],
        *,
        stream: bool,
        model: str = "claude-max",
        client: httpx.Client | None = None,
    ) -> Turn:
        """One chat completion; ``client``: another connection (one per thread), default: the server's."""
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        return self.complete(body, client=client)

    def complete(self, body: dict[str, Any], *, client: httpx.Client | None = None) -> Turn:
        """POST ``body`` to /v1/chat/completions; streamed if it says so."""
        client = client or self.client
        assert client is not None
        stream = bool(body.get("stream"))
        sent = time.monotonic()
        start = time.perf_counter()
        if not stream:
            response = client.post(self.url + "/v1/chat/completions", json=body)
            seconds = time.perf_counter() - start
            if response.status_code != 200:
                return Turn(response.status_code, seconds, None, response.text[:500])
            data = response.json()
            return Turn(200, seconds, None, data["choices"][0]["message"]["content"] or "", data.get("claude_max", {}))
        first: float | None = None
        parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        meta: dict[str, Any] = {}
        with client.stream("POST", self.url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                return Turn(response.status_code, time.perf_counter() - start, None, response.text[:500], sent=sent)
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line.removeprefix("data: ")
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    raise BenchError(f"{self.label}: error in the stream: {payload[:500]}")
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if (delta.get("content") or delta.get("tool_calls")) and first is None:
                        first = time.perf_counter() - start
                    if delta.get("content"):
                        parts.append(delta["content"])
                    for call in delta.get("tool_calls") or []:
                        _add_call_delta(calls, call)
                meta = chunk.get("claude_max", meta)
        seconds = time.perf_counter() - start
        return Turn(200, seconds, first, "".join(parts), meta, [calls[i] for i in sorted(calls)], sent)


def _add_call_delta(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    """One streamed ``delta.tool_calls`` item: the first of a call has its id and name, the rest add arguments."""
    call = calls.setdefault(delta["index"], {"id": delta.get("id"), "name": None, "arguments": ""})
    function = delta.get("function") or {}
    call["name"] = function.get("name") or call["name"]
    call["arguments"] += function.get("arguments") or ""


MEMORY_FIELDS = ("VmRSS", "RssAnon", "VmHWM")
"""Resident now; of it, private (anonymous) memory, which is not shared with the other `claude`
processes the way the binary's file-backed pages are; peak resident."""


def memory_kib(pid: int) -> dict[str, int]:
    """:data:`MEMORY_FIELDS` of a process, from ``/proc/<pid>/status``, in KiB."""
    if not (status := proctable.status(pid)):
        raise BenchError(f"process {pid} ended before its memory was read")
    return {name: int(status[name].split()[0]) for name in MEMORY_FIELDS}


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (0 once it is gone)."""
    fields = proctable.stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def tree_cpu_seconds(root: int) -> float:
    """CPU time used so far by ``root`` and every process below it, those already reaped included (their
    time is in their parent's ``cutime``/``cstime``)."""
    ticks = 0
    for pid in proctable.descendants(root, proctable.parents()):
        if fields := proctable.stat(pid):
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_memory_kib(root: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of ``root`` and every process below it, in KiB, summed (RssAnon is private memory:
    the CLI binary's shared pages are in VmRSS once per process)."""
    rss = anon = 0
    for pid in proctable.descendants(root, proctable.parents()):
        status = proctable.status(pid)
        if "VmRSS" in status:
            rss += int(status["VmRSS"].split()[0])
            anon += int(status.get("RssAnon", "0 kB").split()[0])
    return rss, anon


class External(Server):
    """Another project's OpenAI-compatible server (for the side-by-side comparison), started with ``argv``
    and ``env`` in the sandbox, listening on ``port``; ready when ``GET ready_path`` answers."""

    def __init__(
        self, sandbox: Sandbox, label: str, argv: list[str], env: dict[str, str], port: int, ready_path: str
    ) -> None:
        super().__init__(sandbox)
        self.label = label
        self.argv = argv
        self.env = env
        self.port = port
        self.ready_path = ready_path

    def __enter__(self) -> External:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.sandbox.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.sandbox.spared.add(self.proc.pid)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"{self.label}: did not start\n{self.log.read_text()[-2000:]}")
                try:
                    if httpx.get(self.url + self.ready_path, timeout=2).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            self.client = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
