"""How the user reached llm-claude-max, so that a message only ever names a command that exists for them.

The same package is reached through several front doors, and they do not put the same commands on PATH:

- the ``claude-max`` script (``pip install``, ``pipx``, a clone's ``./dev``): ``claude-max doctor``;
- inside ``llm`` (``llm -m claude-max``, ``llm claude-max ...``): ``llm install`` and
  ``uv tool install llm --with llm-claude-max`` put only ``llm`` on PATH, so ``llm claude-max doctor``;
- ``claude-max serve``: its callers are HTTP clients, which cannot pass ``-o`` options; an opt-in is
  the server's own environment.

:func:`command` spells a subcommand and :func:`opt_in` an opt-in for the current front door. The front
door is recorded once per process by the ``claude-max`` click group (also when llm mounts it) and by
the server; without one, being inside llm is recognised by ``llm.cli`` having been imported, and a
library caller gets the spelling that is on PATH.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

from . import config

SCRIPT = "claude-max"
"""The console script."""
INSIDE_LLM = "llm claude-max"
"""The same commands, mounted in llm by the plugin."""
MODULE = "python -m llm_claude_max"
"""Always available where the package is importable."""


@dataclass
class _FrontDoor:
    spelling: str | None = None
    serving: bool = False


_door = _FrontDoor()


def entered(ctx: Any) -> None:
    """Record the front door from the ``claude-max`` group's click context (top level or mounted in llm)."""
    mounted = ctx.find_root() is not ctx
    _door.spelling = INSIDE_LLM if mounted else (MODULE if ctx.info_name == MODULE else SCRIPT)


def serving() -> None:
    """This process is `claude-max serve`: messages go to HTTP clients."""
    _door.serving = True


def relaying(spelling: str) -> None:
    """This process is the warm server, which answers the `llm` prompts of one user: its messages are spelt
    as for them (``spelling``, the front door that started it), and opt-ins are llm's."""
    _door.spelling, _door.serving = spelling, False


def is_serving() -> bool:
    return _door.serving


def prefix() -> str:
    """``claude-max`` or ``llm claude-max`` (or ``python -m llm_claude_max``): whichever this user can run."""
    wrapper = os.environ.get(config.COMMAND, "").strip()
    if wrapper:  # a wrapper the user typed, e.g. a clone's `./dev claude-max`
        return wrapper
    if _door.spelling is not None:
        return _door.spelling
    if "llm.cli" in sys.modules:  # the llm command line imported the plugin
        return INSIDE_LLM
    return _on_path()


@functools.cache
def _on_path() -> str:
    if shutil.which(SCRIPT):
        return SCRIPT
    if shutil.which("llm"):
        return INSIDE_LLM
    return MODULE


def command(sub: str) -> str:
    """A subcommand as this user types it, e.g. ``command("doctor")`` -> ``llm claude-max doctor``."""
    return f"{prefix()} {sub}".strip()


def opt_in(variable: str, option: str) -> str:
    """How to opt in to something refused: the server's environment for HTTP callers, else the variable or
    the llm option (``-o``; a keyword argument of ``model.prompt()`` in Python)."""
    if _door.serving:
        return f"start `{command('serve')}` with {variable}=1 in its environment"
    return f"set {variable}=1 or pass -o {option} 1"


def reset() -> None:
    """Forget the front door (tests run several in one process)."""
    _door.spelling, _door.serving = None, False
    _on_path.cache_clear()
