"""The llm hook implementations (the ``llm`` entry point).

`llm` imports this module on every invocation, so it imports nothing heavy: the models and the
runner load only when models are registered (not for ``llm --version``, ``llm logs``...).
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
