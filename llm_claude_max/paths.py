"""Where llm-claude-max keeps its files, and where the CLI keeps its transcripts and login."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import StateDirUnusable

STATE_DIR_VAR = "CLAUDE_MAX_STATE_DIR"


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically (a unique temporary file, then a rename), creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk leaves no half-written file behind
            tmp.unlink()
        raise


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a file only its owner can read (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Per-user state: the private working directory, caches and the billing lock.

    ``$CLAUDE_MAX_STATE_DIR``, else ``$XDG_STATE_HOME/llm-claude-max``, else
    ``~/.local/state/llm-claude-max``.
    """
    env = os.environ if env is None else env
    if env.get(STATE_DIR_VAR):
        return Path(env[STATE_DIR_VAR]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base).expanduser() / "llm-claude-max"


def workspace(env: Mapping[str, str] | None = None) -> Path:
    """The private, empty working directory every CLI process runs in.

    Nothing here is read into prompts (no CLAUDE.md, no git context) and transcripts of every
    conversation land under one project directory, so ``--resume`` always finds them.
    """
    path = state_dir(env) / "workspace"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise unusable_state_dir(exc, env) from None
    return path


def unusable_state_dir(exc: OSError, env: Mapping[str, str] | None = None) -> StateDirUnusable:
    """The error for a state directory that cannot be created or written, naming what to change."""
    env = os.environ if env is None else env
    reason = f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc.strerror or exc)
    if env.get(STATE_DIR_VAR):
        return StateDirUnusable(
            f"{STATE_DIR_VAR} is set to {env[STATE_DIR_VAR]}, which llm-claude-max cannot use: {reason}. "
            f"Point {STATE_DIR_VAR} at a directory you can write to, or unset it to use {_default(env)}."
        )
    return StateDirUnusable(
        f"llm-claude-max cannot use its state directory {state_dir(env)}: {reason}. Make it a directory you can "
        f"write to, or set {STATE_DIR_VAR} to one."
    )


def _default(env: Mapping[str, str]) -> str:
    return str(state_dir({k: v for k, v in env.items() if k != STATE_DIR_VAR}))


def claude_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """The CLI's configuration directory: ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``."""
    env = os.environ if env is None else env
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".claude"


def claude_json(env: Mapping[str, str] | None = None) -> Path:
    """The CLI's global state file (login account, onboarding, projects): ``.claude.json`` in
    ``$CLAUDE_CONFIG_DIR`` when that is set, else in the home directory."""
    env = os.environ if env is None else env
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]).expanduser() / ".claude.json"
    return Path(env.get("HOME") or Path.home()) / ".claude.json"


def project_dir_name(cwd: Path) -> str:
    """The CLI's transcript folder name for a working directory: ``/``, ``.`` and ``_`` become ``-``."""
    return re.sub(r"[/._]", "-", str(cwd))


def transcript_path(session_id: str, cwd: Path, env: Mapping[str, str] | None = None) -> Path:
    """Where the CLI writes the transcript of ``session_id`` started in ``cwd``."""
    return claude_config_dir(env) / "projects" / project_dir_name(cwd) / f"{session_id}.jsonl"


def transcript_exists(session_id: str, cwd: Path, env: Mapping[str, str] | None = None) -> bool:
    if not re.fullmatch(r"[0-9a-fA-F-]{36}", session_id):
        return False
    if transcript_path(session_id, cwd, env).is_file():
        return True
    # `--resume <id>` finds a session from any working directory (claude-cli.md §5).
    projects = claude_config_dir(env) / "projects"
    return any(projects.glob(f"*/{session_id}.jsonl"))
