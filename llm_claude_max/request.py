"""One neutral request for every front door: the `llm` plugin and each HTTP API convert to it.

A :class:`TurnRequest` is a conversation so far (``history``), what is new (a user message, or the
results of the model's tool calls), the flags a CLI process is started with (``spec``) and the caller it
belongs to (``partition``). Blocks are Anthropic content blocks; ``tool_use`` blocks carry the caller's
own tool names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import validation
from .content import Block, Turn
from .errors import InvalidRequest
from .runner.command import CommandSpec
from .tools import ToolResult


@dataclass(frozen=True)
class TurnRequest:
    spec: CommandSpec
    """Spawn-time flags: model, system prompt, schema, effort, Claude Code's tools, the caller's tools."""
    history: tuple[Turn, ...]
    """Earlier messages, oldest first, alternating user and assistant."""
    new: tuple[Block, ...]
    """The new user message, or ``tool_result`` blocks answering the last assistant turn's tool calls."""
    system: str | None = None
    """The system prompt's text (also when it travels inside the first user message)."""
    partition: str = ""
    """The caller: conversations and processes are never shared across partitions."""
    session: str | None = None
    """A CLI session id the caller recorded for this conversation (``--resume`` candidate)."""
    cwd: Path | None = None
    """Working directory of the CLI (Claude Code's own tools run there); None: the private workspace."""
    fingerprints: tuple[Any, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.fingerprints:
            object.__setattr__(self, "fingerprints", tuple(fingerprint(t) for t in self.history))
        if not self.new:
            raise InvalidRequest("The prompt is empty.")
        validation.check_request(  # text the CLI cannot carry is refused here, before anything starts
            system=self.system or self.spec.system_prompt,
            messages=[*(t.blocks for t in self.history), self.new],
            json_schema=self.spec.json_schema,
            model=self.spec.model,
        )

    @property
    def structured(self) -> bool:
        return self.spec.json_schema is not None

    @property
    def tool_results(self) -> tuple[ToolResult, ...]:
        """The results carried by ``new``, if it answers tool calls (else empty)."""
        if not all(b.get("type") == "tool_result" for b in self.new):
            return ()
        return tuple(
            ToolResult(str(b.get("tool_use_id")), b.get("content") or "", bool(b.get("is_error"))) for b in self.new
        )

    @property
    def pending_calls(self) -> tuple[Block, ...]:
        """The ``tool_use`` blocks of the last assistant turn (what ``tool_results`` answer)."""
        if not self.history or self.history[-1].role != "assistant":
            return ()
        return tuple(b for b in self.history[-1].blocks if b.get("type") == "tool_use")

    def key(self, extra: Sequence[Any] = ()) -> str:
        """The identity of this conversation so far (plus ``extra`` turns' fingerprints), per caller and flags."""
        return chain_key(self.partition, spec_key(self.spec, self.cwd), (*self.fingerprints, *extra))


def spec_key(spec: CommandSpec, cwd: Path | None = None) -> str:
    """A hashable identity for the flags a process is started with (and where)."""
    return json.dumps(
        [
            spec.model,
            spec.system_prompt,
            spec.placement,
            spec.json_schema,
            spec.effort,
            sorted(spec.extra_env.items()),
            list(spec.claude_tools),
            [t.key() for t in spec.caller_tools],
            str(cwd) if cwd else None,
        ],
        sort_keys=True,
        default=str,
    )


def chain_key(partition: str, spec: str, fingerprints: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps([partition, spec, list(fingerprints)], default=list).encode()).hexdigest()


def fingerprint(turn: Turn) -> Any:
    """A normalised form of a message for matching a continued conversation. An assistant message that
    called tools is known by its call ids alone (clients keep or drop the text beside them)."""
    calls = [b.get("id") for b in turn.blocks if b.get("type") == "tool_use"]
    if turn.role == "assistant" and calls:
        return ("assistant", tuple(calls))
    return (turn.role, tuple(_block(b) for b in turn.blocks))


def _block(block: Block) -> Any:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", "")).strip()
    if kind == "tool_result":
        content = json.dumps(block.get("content"), sort_keys=True, default=str)
        return ("tool_result", block.get("tool_use_id"), _digest(content), bool(block.get("is_error")))
    if kind in ("image", "document"):
        return (kind, _digest(str((block.get("source") or {}).get("data", ""))))
    return (kind, _digest(json.dumps(block, sort_keys=True, default=str)))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
