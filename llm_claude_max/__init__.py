"""llm-claude-max: Claude through your own Claude Code CLI, billed to your Claude Max/Pro plan.

This module holds only the llm hook implementations. `llm` imports it on every invocation, so it
imports nothing heavy: the models and the runner load when a model is actually registered or used.
"""

from __future__ import annotations

from typing import Any

import llm


@llm.hookimpl
def register_models(register: Any) -> None:
    from . import catalog
    from .models import AsyncClaudeMax, ClaudeMax

    for entry in catalog.load():
        register(ClaudeMax(entry), AsyncClaudeMax(entry))


@llm.hookimpl
def register_commands(cli: Any) -> None:
    from .cli import cli as claude_max

    cli.add_command(claude_max, name="claude-max")
