"""Find the user's own `claude` executable and read its version."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .. import config, paths
from ..errors import CLINotFound

CLI_VAR = config.CLI
TESTED_VERSION = "2.1.328"
"""The CLI version this release was tested against: the pinned version of the test suite, the benchmarks
and ``./dev`` (which all read it from here)."""
INSTALL_HINT = (
    "Install Claude Code with `npm install -g @anthropic-ai/claude-code` "
    "(or see https://code.claude.com/docs/en/setup), run `claude` once and log in with /login, "
    f"or point {CLI_VAR} at the executable."
)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def find_cli(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``explicit`` (an option), else ``$CLAUDE_MAX_CLI``, else ``claude`` on ``PATH``."""
    env = os.environ if env is None else env
    configured = explicit or env.get(CLI_VAR)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            where = "the cli option" if explicit else CLI_VAR
            raise CLINotFound(f"{where} is set to {configured}, which is not an executable file. {INSTALL_HINT}")
        return path
    found = shutil.which("claude", path=env.get("PATH"))
    if found is None:
        raise CLINotFound(f"The Claude Code CLI (`claude`) is not on PATH. {INSTALL_HINT}")
    return Path(found)


def all_on_path(env: Mapping[str, str] | None = None) -> list[Path]:
    """Every executable named ``claude`` on ``PATH``, in lookup order, without duplicates."""
    env = os.environ if env is None else env
    seen: set[Path] = set()
    found: list[Path] = []
    for directory in (env.get("PATH") or "").split(os.pathsep):
        candidate = Path(directory or ".") / "claude"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            real = candidate.resolve()
            if real not in seen:
                seen.add(real)
                found.append(candidate)
    return found


def _cache_file(env: Mapping[str, str]) -> Path:
    return paths.state_dir(env) / "cli-versions.json"


def cached_version(path: Path, env: Mapping[str, str] | None = None) -> str | None:
    """The version recorded for this exact binary (same real path, size and mtime), without running it."""
    env = os.environ if env is None else env
    key = _cache_key(path)
    if key is None:
        return None
    try:
        entry = json.loads(_cache_file(env).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, str) else None


def _cache_key(path: Path) -> str | None:
    try:
        real = path.resolve()
        st = real.stat()
    except OSError:
        return None
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def version_without_running(path: Path) -> tuple[str | None, str]:
    """The version from the installation itself: npm's ``package.json`` next to the binary, or a
    native install's versioned file name (``~/.local/share/claude/versions/2.1.328``)."""
    try:
        real = path.resolve()
    except OSError:
        return None, "unknown"
    for parent in list(real.parents)[:3]:
        package = parent / "package.json"
        try:
            data = json.loads(package.read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(data, dict)
            and data.get("name") == "@anthropic-ai/claude-code"
            and isinstance(data.get("version"), str)
        ):
            return data["version"], "package.json"
    if re.fullmatch(r"\d+\.\d+\.\d+", real.name):
        return real.name, "path"
    return None, "unknown"


def read_version(path: Path, env: Mapping[str, str] | None = None, *, timeout: float = 15.0) -> str | None:
    """``claude --version``, cached per binary. None when it cannot be read."""
    env = os.environ if env is None else env
    cached = cached_version(path, env)
    if cached:
        return cached
    try:
        out = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={k: v for k, v in env.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\d+\.\d+\.\d+", out)
    if not match:
        return None
    version = match.group(0)
    key = _cache_key(path)
    if key is not None:
        cache_file = _cache_file(env)
        try:
            data = json.loads(cache_file.read_text()) if cache_file.exists() else {}
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[key] = version
        with contextlib.suppress(OSError):
            paths.write_json(cache_file, data)
    return version
