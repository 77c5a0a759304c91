"""System prompts that cannot go on the command line travel in a file, which never outlives its use.

A single argument over 128 KiB makes Linux refuse to start the CLI, and no argument can hold a NUL, so
such a system prompt is written to ``<state dir>/system-prompts/<pid>-<random>.txt`` (mode 0600) and
passed as ``--system-prompt-file``. The CLI reads it while it starts, before it answers ``initialize``
(checked with the real CLI: a file removed then still served every later turn), so the session
removes it right after that answer. A file whose writer was killed before that moment (SIGKILL) is
removed by the next process that starts the runner: its name starts with the writer's pid.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .. import paths
from .command import ARGV_VALUE_LIMIT


def needed(system: str | None) -> bool:
    return system is not None and (len(system.encode()) > ARGV_VALUE_LIMIT or "\0" in system)


def directory(env: Mapping[str, str] | None = None) -> Path:
    return paths.state_dir(env) / "system-prompts"


def write(system: str, env: Mapping[str, str] | None = None) -> Path:
    folder = directory(env)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".txt", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(system)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def sweep(env: Mapping[str, str] | None = None) -> list[Path]:
    """Remove the files of processes that are gone; returns what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for path in directory(env).glob("*-*.txt"):
            pid = path.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
