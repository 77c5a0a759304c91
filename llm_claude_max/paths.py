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
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


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
