"""What a running `claude-max serve` records on disk, one file per server
(``<state dir>/servers/<pid>.json``): where it listens (the doctor reads it) and the PIDs of its `claude`
children (the next server kills them if this one died without cleaning up).

A process is identified by its PID *and* its start time, so a reused PID is never mistaken for it.
Start times come from ``/proc``; elsewhere only the PID is checked, and children are not reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import paths


def directory(env: Mapping[str, str] | None = None) -> Path:
    return paths.state_dir(env) / "servers"


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: Any, start: Any) -> bool:
    """The process runs (a zombie, exited but not yet reaped by its parent, does not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _state(pid) == "Z":
        return False
    return start is None or process_start(pid) == start


def _state(pid: int) -> str | None:
    """The process's state letter (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _is_claude(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return "claude" in Path(argv0).name


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The records of servers that are still running."""
    found = []
    for path in sorted(directory(env).glob("*.json")):
        data = _read(path)
        if data is not None and alive(data.get("pid"), data.get("start")):
            found.append(data)
    return found


def reap_dead(env: Mapping[str, str] | None = None) -> list[int]:
    """Kill the children that servers which are gone left running (never those of a live server);
    returns their PIDs."""
    killed = []
    for path in directory(env).glob("*.json"):
        data = _read(path)
        if data is None or alive(data.get("pid"), data.get("start")):
            continue
        for child in data.get("children") or []:
            pid, start = child.get("pid"), child.get("start")
            if start is not None and alive(pid, start) and _is_claude(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
        path.unlink(missing_ok=True)
    return killed


class ServerRecord:
    """This server's record: written at start, updated as children come and go, removed at exit."""

    def __init__(self, info: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
        pid = os.getpid()
        self.path = directory(env) / f"{pid}.json"
        self.info = {**info, "pid": pid, "start": process_start(pid)}
        self.children: dict[int, int | None] = {}
        self._closed = False
        self._write()

    def add(self, pid: int) -> None:
        self.children[pid] = process_start(pid)
        self._write()

    def remove(self, pid: int) -> None:
        if self.children.pop(pid, False) is not False:
            self._write()

    def close(self) -> None:
        self._closed = True
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        if self._closed:
            return
        children = [{"pid": pid, "start": start} for pid, start in self.children.items()]
        paths.write_json(self.path, {**self.info, "children": children})
