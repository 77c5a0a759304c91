"""``python -m llm_claude_max``: the `claude-max` command, wherever the package is importable."""

from .cli import cli
from .invocation import MODULE

cli(prog_name=MODULE)
