"""Find the user's own `claude` executable and read its version."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .. import config, paths
from ..errors import ClaudeMaxError, CLINotFound

CLI_VAR = config.CLI
TESTED_VERSION = "2.1.328"
"""The CLI version this release was tested against: the pinned version of the test suite, the benchmarks
and ``./dev`` (which all read it from here)."""
INSTALL_HINT = (
    "Install Claude Code with `npm install -g @anthropic-ai/claude-code` "
    "(or see https://code.claude.com/docs/en/setup), run `claude` once and log in with /login, "
    f"or point {CLI_VAR} at the executable."
)
IDENTITY = "(Claude Code)"
"""What ``claude --version`` prints after the version number: ``2.1.328 (Claude Code)``."""


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def find_cli(option: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``option`` (the model's ``cli`` option), else ``$CLAUDE_MAX_CLI``, else ``claude`` on ``PATH``."""
    env = os.environ if env is None else env
    where = "The cli option (-o cli)" if option else CLI_VAR
    configured = option or env.get(CLI_VAR)
    if configured:
        path = Path(configured).expanduser()
        problem = _not_executable(path)
        if problem:
            undo = "leave out -o cli" if option else f"unset {CLI_VAR}"
            raise CLINotFound(
                f"{where} is set to {configured}, {problem}. Point it at the Claude Code executable "
                f"(`command -v claude` prints its path), or {undo} to use `claude` on PATH."
            )
        return path
    found = shutil.which("claude", path=env.get("PATH"))
    if found is None:
        raise CLINotFound(f"The Claude Code CLI (`claude`) is not on PATH. {INSTALL_HINT}")
    return Path(found)


def _not_executable(path: Path) -> str | None:
    if not path.exists():
        return "which does not exist"
    if path.is_dir():
        return "which is a directory"
    if not os.access(path, os.X_OK):
        return "which is not executable"
    return None


def described(path: Path, env: Mapping[str, str]) -> str:
    """How the user chose this executable, for messages: ``CLAUDE_MAX_CLI (/bin/cat)``, ``the `claude` on PATH
    (...)`` or the path itself (the ``cli`` option)."""
    if env.get(CLI_VAR) and Path(env[CLI_VAR]).expanduser() == path:
        return f"{CLI_VAR} ({path})"
    if shutil.which("claude", path=env.get("PATH")) == str(path):
        return f"the `claude` on PATH ({path})"
    return str(path)


def not_claude_reason(version_output: str, returncode: int | None) -> str | None:
    """Why ``--version`` output shows the executable is not Claude Code; None when it is."""
    if IDENTITY in version_output:
        return None
    lines = version_output.strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    if text:
        return f"its --version printed {text[:160]!r}"
    return f"its --version printed nothing (exit code {returncode})"


async def identify(path: Path, env: Mapping[str, str], *, timeout: float = 10.0) -> str | None:
    """Why ``path`` is not the Claude Code CLI, or None when it is (or when that cannot be told).

    Used only after a start failed, to tell "this is not Claude Code" from a Claude Code that broke.
    """
    if version_without_running(path)[0] is not None:
        return None  # npm's package.json or a native install's versioned file name says it is
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path), "--version",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={k: v for k, v in env.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return f"it cannot be run ({exc.strerror or exc})"
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, TimeoutError):
            return None  # it may be a Claude Code that hangs: the original error stands
        raise
    return not_claude_reason(out.decode(errors="replace"), proc.returncode)


async def explain_start_failure(path: Path, env: Mapping[str, str], error: ClaudeMaxError) -> ClaudeMaxError:
    """The error to raise when the CLI failed before answering ``initialize``: :class:`CLINotFound` when the
    executable is not Claude Code at all (``cat``, a wrapper that broke...), else ``error`` itself."""
    reason = await identify(path, env)
    if reason is None:
        return error
    which = described(path, env)
    if which.startswith(CLI_VAR):
        fix = f"Point {CLI_VAR} at the Claude Code executable, or unset it to use `claude` on PATH."
    elif which.startswith("the `claude` on PATH"):
        fix = INSTALL_HINT
    else:
        fix = "Point the cli option (-o cli) at the Claude Code executable."
    return CLINotFound(
        f"{which} is not the Claude Code CLI: {reason}, where Claude Code prints `{TESTED_VERSION} {IDENTITY}`. " + fix,
        stderr=error.stderr,
    )


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
    if not match or IDENTITY not in out:  # another program's version is not Claude Code's
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
