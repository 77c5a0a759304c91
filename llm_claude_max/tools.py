"""The caller's tools, in neutral terms (no `llm`, no HTTP): what the model may call, the calls it
made, and the results the caller sends back.

The caller's tools reach the model through an in-process MCP server of ours (see
:mod:`llm_claude_max.runner.mcp`); the CLI names each one ``mcp__<server>__<name>``. Every call the
model makes is deferred to the caller, who runs it in its own process: Claude Code never runs these.
Claude Code's *own* tools (Read, Bash...) are something else, enabled only on request
(``CommandSpec.claude_tools``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

MCP_SERVER = "tools"
"""Name of our in-process MCP server: the model sees the caller's tools as ``mcp__tools__<name>``."""
PREFIX = f"mcp__{MCP_SERVER}__"
NAME_LIMIT = 64
"""Longest tool name the Anthropic API takes; the CLI's prefix counts."""
_SAFE = re.compile(r"[^A-Za-z0-9_-]")
NOT_RUN = "This call was not run: no result was sent for it. Call it again if it is still needed."
"""The result of a call the caller sent no result for (the model is told, never left waiting)."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool the caller offers: name, description and JSON Schema of its arguments."""

    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def key(self) -> Any:
        return (self.name, self.description, json.dumps(self.input_schema, sort_keys=True))


@dataclass(frozen=True)
class ToolCall:
    """The model's call of one of the caller's tools. ``id`` is the API's ``toolu_…`` id."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """What the caller's tool returned (``is_error`` when it raised or refused)."""

    call_id: str
    content: str | Sequence[Mapping[str, Any]]
    is_error: bool = False

    def block(self) -> dict[str, Any]:
        """The Anthropic ``tool_result`` block."""
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": self.call_id}
        block["content"] = self.content if isinstance(self.content, str) else [dict(b) for b in self.content]
        if self.is_error:
            block["is_error"] = True
        return block


class ToolNames:
    """The caller's names and the names our MCP server exposes, both ways, exactly.

    A name the API would refuse or the CLI would rewrite (dots, spaces, over 64 characters with the
    ``mcp__tools__`` prefix) is exposed as a safe, unique variant, and every call is mapped back to the
    caller's own name."""

    def __init__(self, specs: Iterable[ToolSpec]) -> None:
        self.exposed: dict[str, str] = {}
        """caller's name -> exposed name"""
        self.caller: dict[str, str] = {}
        """exposed name -> caller's name"""
        room = NAME_LIMIT - len(PREFIX)
        for spec in specs:
            if not isinstance(spec.name, str) or not spec.name:
                raise InvalidRequest("Every tool needs a non-empty name.")
            if spec.name in self.exposed:
                raise InvalidRequest(f"Two tools are named {spec.name!r}.")
            name = _SAFE.sub("_", spec.name)
            if len(name) > room or name != spec.name or name in self.caller:
                digest = hashlib.sha256(spec.name.encode()).hexdigest()[:6]
                name = f"{name[: room - 7]}_{digest}"
            self.exposed[spec.name] = name
            self.caller[name] = spec.name

    def api_name(self, caller_name: str) -> str:
        """The name the model sees (and writes in ``tool_use`` blocks)."""
        return PREFIX + self.exposed.get(caller_name, _SAFE.sub("_", caller_name))

    def from_api(self, api_name: str) -> str | None:
        """The caller's name for a ``tool_use`` name, or None when it is not one of the caller's tools."""
        if not api_name.startswith(PREFIX):
            return None
        return self.caller.get(api_name[len(PREFIX) :])

    def from_mcp(self, mcp_name: str) -> str | None:
        return self.caller.get(mcp_name)


def is_caller_tool(api_name: str) -> bool:
    return api_name.startswith(PREFIX)


def mcp_tool_list(specs: Sequence[ToolSpec], names: ToolNames) -> list[dict[str, Any]]:
    """The ``tools/list`` answer of our MCP server."""
    return [
        {"name": names.exposed[s.name], "description": s.description or "", "inputSchema": dict(s.input_schema)}
        for s in specs
    ]
