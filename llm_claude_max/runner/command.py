"""The argv and the environment of every `claude` process, built deliberately.

- stream-json in and out, so the prompt travels over stdin (no argv size limit, no prompt parsed as a
  flag) and the route can be checked with ``initialize`` before anything is sent;
- no Claude Code tools, no settings files (no ``apiKeyHelper``, no settings ``env`` blocks, no
  CLAUDE.md), no MCP servers, unless the user opts in to tools;
- values passed as ``--flag=value`` so a value that starts with ``-`` is never read as a flag;
- the child environment is the parent's minus every credential/route variable in
  :mod:`llm_claude_max.routes`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import routes
from . import builtin_tools

# Defaults for the child environment, each kept when the user's environment already sets it.
QUIET_DEFAULTS: dict[str, str] = {
    # The one setting that stops start-up from hanging on telemetry and profile fetches (claude-cli.md §2.4).
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    # The CLI's own defaults retry for ~3 minutes and wait ~6 minutes per stalled attempt (§4.2).
    "CLAUDE_CODE_MAX_RETRIES": "3",
    # Bounds the wait for response headers only; a long streamed answer is not cut.
    "API_TIMEOUT_MS": "60000",
}


class SystemPlacement(enum.StrEnum):
    """Where a system prompt goes."""

    REPLACE = "replace"  # --system-prompt: replaces Claude Code's agent prompt
    APPEND = "append"  # --append-system-prompt: after Claude Code's agent prompt
    USER = "user"  # inside the first user turn, Claude Code's system prompt untouched


@dataclass(frozen=True)
class CommandSpec:
    """Everything fixed when a CLI process starts."""

    model: str | None = None
    """A CLI model alias or id; None runs the CLI's default model."""
    system_prompt: str | None = None
    placement: SystemPlacement = SystemPlacement.REPLACE
    resume: str | None = None
    json_schema: Mapping[str, Any] | None = None
    effort: str | None = None
    tools: tuple[str, ...] = ()
    """Claude Code's own tools to enable (they run on this machine). Empty: none."""
    persist_session: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Overrides for the child environment, e.g. ``CLAUDE_CODE_MAX_RETRIES`` from an option."""
    isolated: bool = True
    """False only for the doctor's probe of what plain `claude -p` would do: no isolation flags. Such a
    process is only asked ``initialize``; :meth:`Session.turn` refuses to send it a prompt."""
    setting_sources: str | None = None
    """For a non-isolated probe: which settings to load (None: the CLI's default, all of them)."""


ARGV_VALUE_LIMIT = 100_000
"""Longer system prompts go through a file: Linux refuses a single argument over 128 KiB."""


def build_argv(cli: Path, spec: CommandSpec, *, system_prompt_file: Path | None = None) -> list[str]:
    """The CLI's argv; ``system_prompt_file``, when given, holds ``spec.system_prompt`` (see
    :data:`ARGV_VALUE_LIMIT`)."""
    protocol = [str(cli), "-p", "--input-format=stream-json", "--output-format=stream-json", "--verbose"]
    if not spec.isolated:
        return protocol + ([f"--setting-sources={spec.setting_sources}"] if spec.setting_sources is not None else [])
    argv = [
        *protocol,
        "--include-partial-messages",
        "--setting-sources=",
        "--strict-mcp-config",
        # The system prompt given now applies, also on --resume (the CLI otherwise reuses the first one).
        "--system-prompt-snapshot=off",
    ]
    if spec.tools:
        # --tools takes names; a permission rule such as Bash(git log:*) belongs in --allowedTools only.
        argv += [f"--tools={','.join(builtin_tools.names(spec.tools))}", f"--allowedTools={','.join(spec.tools)}"]
    else:
        argv.append("--tools=")
    if spec.model:
        argv.append(f"--model={spec.model}")
    if spec.effort:
        argv.append(f"--effort={spec.effort}")
    system = spec.system_prompt or ""
    if spec.placement is SystemPlacement.APPEND:
        if system_prompt_file is not None:
            argv.append(f"--append-system-prompt-file={system_prompt_file}")
        elif system:
            argv.append(f"--append-system-prompt={system}")
    elif spec.placement is SystemPlacement.REPLACE and (system or not spec.tools):
        # Without tools, Claude Code's 7 KB agent prompt only describes tools the model cannot use.
        if system_prompt_file is not None:
            argv.append(f"--system-prompt-file={system_prompt_file}")
        else:
            argv.append(f"--system-prompt={system}")
    if spec.json_schema is not None:
        argv.append("--json-schema=" + json.dumps(spec.json_schema, separators=(",", ":")))
    if spec.resume:
        argv.append(f"--resume={spec.resume}")
    if not spec.persist_session:
        argv.append("--no-session-persistence")
    return argv


def build_env(
    parent: Mapping[str, str],
    *,
    base_url: str | None = None,
    allow_api_billing: bool = False,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The parent's environment minus every credential/route variable, plus quiet defaults.

    ``allow_api_billing`` keeps the API-key variables (the user's explicit opt-in). ``base_url``
    is ``CLAUDE_MAX_BASE_URL``: the only way an endpoint reaches the child.
    """
    keep = routes.API_BILLING if allow_api_billing else frozenset()
    env = routes.scrub(parent, keep=keep)
    for name, value in QUIET_DEFAULTS.items():
        env.setdefault(name, value)
    if base_url:
        env["ANTHROPIC_BASE_URL"] = base_url
    # Overrides tune the CLI (retries, timeouts); they can never bring a credential back.
    env.update({k: v for k, v in (overrides or {}).items() if k not in routes.REMOVED})
    return env
