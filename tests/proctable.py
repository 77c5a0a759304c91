"""The Linux process table, read from ``/proc``: the one place the orphan checks, the server tests and
the benchmarks ask about other processes.

A process can exit between listing and reading, so every reader returns an empty or default value
for a process that is gone instead of raising.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

PROC = Path("/proc")
CLAUDE_NAMES = ("claude", "claude.exe")
"""Executable names of the CLI (the npm package's native binary and its launcher)."""


def pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: state, ppid, pgid, … (``[]`` if gone)."""
    with contextlib.suppress(OSError, IndexError):
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return []


def argv(pid: int) -> list[str]:
    """The command line (``[]`` if gone, and for a zombie)."""
    with contextlib.suppress(OSError):
        raw = (PROC / str(pid) / "cmdline").read_bytes().rstrip(b"\0")
        return [arg.decode(errors="replace") for arg in raw.split(b"\0")] if raw else []
    return []


def environ(pid: int) -> list[bytes]:
    """``NAME=value`` entries of the environment the process started with (``[]`` if gone or unreadable)."""
    with contextlib.suppress(OSError):
        return (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    return []


def status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as a mapping (``{}`` if gone)."""
    with contextlib.suppress(OSError):
        lines = (PROC / str(pid) / "status").read_text().splitlines()
        return {name: value.strip() for name, value in (line.split(":", 1) for line in lines if ":" in line)}
    return {}


def parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    return {pid: int(fields[1]) for pid in pids() if (fields := stat(pid))}


def descendants(root: int, parent_of: dict[int, int]) -> set[int]:
    """``root`` and every process below it."""
    tree = {root}
    grew = True
    while grew:
        before = len(tree)
        tree |= {pid for pid, ppid in parent_of.items() if ppid in tree}
        grew = len(tree) > before
    return tree


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    fields = stat(pid)
    return bool(fields) and fields[0] != "Z"


def is_claude(args: list[str]) -> bool:
    return bool(args) and Path(args[0]).name in CLAUDE_NAMES


def claude_children(parent: int) -> list[int]:
    """PIDs of the running `claude` processes whose parent is ``parent``."""
    return sorted(pid for pid, ppid in parents().items() if ppid == parent and is_running(pid) and is_claude(argv(pid)))


def wait_until_blocked(pid: int, timeout: float = 10.0) -> None:
    """Wait until the process's main thread sleeps in a blocking call (state ``S`` in three readings 20 ms
    apart), as it does when a user at a prompt presses Ctrl-C.

    A signal sent a moment earlier can land after CPython has handled its last signal check but before
    the read (or lock wait) starts, and then nothing wakes the read: a race in CPython's ``input()`` that
    a loaded machine opens and a person cannot hit (seen in the full suite; the main thread sat in
    ``read(0, …)`` with no signal pending, and a second Ctrl-C ended it).
    """
    deadline = time.monotonic() + timeout
    sleeping = 0
    while sleeping < 3:
        assert time.monotonic() < deadline, f"process {pid} never blocked: state {stat(pid)[:1]}"
        state = stat(pid)[:1]
        assert state, f"process {pid} is gone"
        sleeping = sleeping + 1 if state == ["S"] else 0
        time.sleep(0.02)
