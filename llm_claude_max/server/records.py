"""What a running `claude-max serve` records on disk, one file per server
(``<state dir>/servers/<pid>.json``): where it listens (the doctor reads it) and the PIDs of its `claude`
children (the next server kills them if this one died without cleaning up).

A process is identified by its PID *and* its start time, so a reused PID is never mistaken for it.
Start times come from ``/proc``; elsewhere only the PID is checked, and children are not reaped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import paths

logger = logging.getLogger("llm_claude_max.server")


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
    """A record, or None when it cannot be read, is not JSON or has not the shape we write."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not _process(data):
        return None
    children = data.get("children", [])
    if not isinstance(children, list) or not all(isinstance(c, dict) and _process(c) for c in children):
        return None
    return data


def _process(entry: dict[str, Any]) -> bool:
    pid, start = entry.get("pid"), entry.get("start")
    return isinstance(pid, int) and not isinstance(pid, bool) and (start is None or isinstance(start, int))


def running(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The records of servers that are still running (unreadable records are left out)."""
    found = []
    for path in sorted(directory(env).glob("*.json")):
        data = _read(path)
        if data is not None and alive(data.get("pid"), data.get("start")):
            found.append(data)
    return found


def reap_dead(env: Mapping[str, str] | None = None) -> list[int]:
    """Kill the children that servers which are gone left running (never those of a live server);
    returns their PIDs. Records of servers that are gone are removed, unreadable ones too when the
    process named by the file name is gone; one that cannot be removed is skipped with a warning."""
    killed = []
    for path in directory(env).glob("*.json"):
        data = _read(path)
        if data is None:
            writer = int(path.stem) if path.stem.isdigit() else None
            if writer is not None and alive(writer, None):
                logger.warning("Skipped the unreadable server record %s: process %s still runs.", path, writer)
                continue
            _remove(path, "an unreadable server record")
            continue
        if alive(data.get("pid"), data.get("start")):
            continue
        for child in data.get("children") or []:
            pid, start = child.get("pid"), child.get("start")
            if start is not None and alive(pid, start) and _is_claude(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
        _remove(path, "the record of a server that is gone")
    return killed


def _remove(path: Path, what: str) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("Could not remove %s, %s: %s. Remove it by hand.", what, path, exc.strerror or exc)


class ServerRecord:
    """This server's record: written at start, updated as children come and go, removed at exit."""

    def __init__(self, info: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
        pid = os.getpid()
        self.path = directory(env) / f"{pid}.json"
        self.info = {**info, "pid": pid, "start": process_start(pid)}
        self.children: dict[int, int | None] = {}
        self._closed = False
        self._unwritable = False
        self._write()

    def add(self, pid: int) -> None:
        self.children[pid] = process_start(pid)
        self._write()

    def remove(self, pid: int) -> None:
        if self.children.pop(pid, False) is not False:
            self._write()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        if self._closed:
            return
        children = [{"pid": pid, "start": start} for pid, start in self.children.items()]
        try:
            paths.write_json(self.path, {**self.info, "children": children})
        except OSError as exc:  # serving goes on; its children still die with it (runner/children.py)
            if not self._unwritable:
                logger.warning("Could not write the server record %s: %s.", self.path, exc.strerror or exc)
            self._unwritable = True
