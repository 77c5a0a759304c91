"""Running one command and measuring it: wall time, time to first output, peak RSS; and medians."""

from __future__ import annotations

import os
import selectors
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests import proctable

from .sandbox import Command, Sandbox

POLL_SECONDS = 0.010


class BenchError(RuntimeError):
    pass


@dataclass
class Run:
    pid: int
    seconds: float
    """Wall time from spawn to exit."""
    first: float | None
    """Seconds until stdout first contained the ``first`` marker (None when not asked or never seen)."""
    stdout: bytes
    peak_kib: dict[int, tuple[str, int]] = field(default_factory=dict)
    """pid -> (command name, peak VmHWM in KiB) of the process and its descendants (``rss=True``)."""


@dataclass(frozen=True)
class Stats:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        data = sorted(values)
        if not data:
            raise BenchError("no samples")
        return cls(statistics.median(data), data[0], data[-1], len(data))


def run(
    command: Command,
    sandbox: Sandbox,
    *,
    first: bytes | None = None,
    expect: bytes | None = None,
    rss: bool = False,
    timeout: float = 120.0,
) -> Run:
    """Run ``command`` to completion with stdin closed; kill and reap anything it leaves behind.

    ``first``: time the first appearance of this marker on stdout (``b""``: the first byte).
    ``expect``: stdout must contain it, or the run is an error (so failures are never timed).
    ``rss``: poll VmHWM of the process tree every 10 ms (costs CPU: not for timing runs).
    """
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command.argv,
            env=command.env,
            cwd=command.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            stdout, first_at, peaks = _read(proc, start, first, rss, timeout)
            proc.wait(timeout=max(0.1, start + timeout - time.perf_counter()))
            seconds = time.perf_counter() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            sandbox.kill_leftovers()  # anything it started, found by the sandbox's HOME
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    if proc.returncode != 0 or (expect is not None and expect not in stdout):
        output = stdout.decode(errors="replace")[-3000:]
        raise BenchError(f"{command.label}: exit {proc.returncode}\nstdout: {output}\nstderr: {errors[-2000:]}")
    return Run(proc.pid, seconds, first_at, stdout, peaks)


def _read(
    proc: subprocess.Popen[bytes], start: float, first: bytes | None, rss: bool, timeout: float
) -> tuple[bytes, float | None, dict[int, tuple[str, int]]]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    chunks: list[bytes] = []
    first_at: float | None = None
    peaks: dict[int, tuple[str, int]] = {}
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if time.perf_counter() - start > timeout:
                raise BenchError(f"no exit within {timeout} s: {proc.args!r}")
            if rss:
                _sample_tree(proc.pid, peaks)
            if not selector.select(POLL_SECONDS if rss else 1.0):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks), first_at, peaks
            chunks.append(chunk)
            if first is not None and first_at is None and first in b"".join(chunks[-2:]):
                first_at = time.perf_counter() - start


def _sample_tree(root: int, peaks: dict[int, tuple[str, int]]) -> None:
    """Record VmHWM (peak resident set) of ``root`` and its descendants; a process's last sample wins."""
    for pid in proctable.descendants(root, proctable.parents()):
        status = proctable.status(pid)
        if "VmHWM" in status:  # absent once the process is a zombie
            peaks[pid] = (status["Name"], int(status["VmHWM"].split()[0]))


def interleave(
    commands: list[Command],
    sandbox: Sandbox,
    runs: int,
    *,
    first: dict[str, bytes] | None = None,
    expect: dict[str, bytes] | None = None,
) -> dict[str, list[Run]]:
    """One untimed warm-up run of each command, then ``runs`` rounds of A, B, C, ... in turn."""
    first = first or {}
    expect = expect or {}
    results: dict[str, list[Run]] = {c.label: [] for c in commands}
    for round_ in range(runs + 1):
        for command in commands:
            done = run(command, sandbox, first=first.get(command.label), expect=expect.get(command.label))
            if round_:
                results[command.label].append(done)
    return results
