"""Claude Code's own tools (the ``claude_tools`` option): the names the CLI accepts in ``--tools``.

The CLI silently ignores a name it does not know (``--tools=Raed`` enables nothing and says nothing),
and a permission rule such as ``Bash(git log:*)`` in ``--tools`` enables nothing either. So names are
checked here, against the CLI 2.1.328's own list: ``tests/test_plugin_real.py`` asks the pinned CLI
which tools each name enables (its ``system/init`` event lists them; the ``initialize`` answer does not).
"""

from __future__ import annotations

import difflib
import re

TESTED_WITH = "2.1.328"

DEFAULT = (
    "Task", "Bash", "CronCreate", "CronDelete", "CronList", "Edit", "EnterWorktree", "ExitWorktree", "ListAgents",
    "Monitor", "NotebookEdit", "Read", "RemoteTrigger", "ReportFindings", "ScheduleWakeup", "SendMessage", "Skill",
    "TaskStop", "ToolSearch", "WebFetch", "WebSearch", "Workflow", "Write",
)  # fmt: skip
"""``--tools=default`` as the CLI lists it in ``system/init`` (a Max login; ``RemoteTrigger`` is Max only)."""
EXTRA = ("Glob", "Grep", "TaskCreate", "TaskGet", "TaskList", "TaskUpdate")
"""Not in the default set, but enabled when named."""
ALIASES = {"Agent": "Task", "KillShell": "TaskStop"}
"""Older names the CLI still accepts, and the tool each enables."""
KNOWN = frozenset(DEFAULT + EXTRA)

_RULE = re.compile(r"(?P<name>[A-Za-z]+)(?:\((?P<rule>[^()]+)\))?")


def parse(value: str) -> tuple[str, ...]:
    """``"Read, Grep,Bash(git log:*)"`` -> ``("Read", "Grep", "Bash(git log:*)")``; ValueError for a name the
    CLI would ignore."""
    specs = tuple(part.strip() for part in value.split(",") if part.strip())
    for spec in specs:
        match = _RULE.fullmatch(spec)
        if match is None:
            raise ValueError(f"{spec!r} is not a tool name or a rule such as Bash(git log:*)")
        name = match["name"]
        if name not in KNOWN and name not in ALIASES:
            raise ValueError(_unknown(name))
    return specs


def names(specs: tuple[str, ...]) -> tuple[str, ...]:
    """The tools to enable (``--tools``): each spec's name, once. ``Bash(git log:*)`` -> ``Bash``."""
    return tuple(dict.fromkeys(spec.split("(", 1)[0] for spec in specs))


def _unknown(name: str) -> str:
    candidates = sorted(KNOWN | ALIASES.keys())
    same = [c for c in candidates if c.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]}?" if close else ""
    return (
        f"{name!r} is not a Claude Code tool (the CLI would ignore it).{hint} "
        f"Claude Code {TESTED_WITH} has: {', '.join(sorted(KNOWN))}"
    )
