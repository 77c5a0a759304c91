"""Give the CLI a conversation it never had: a session file that ``--resume`` continues.

When no process and no transcript of the CLI holds a conversation (another machine, an OpenAI client
that kept its own history, a process reaped while paused), its messages are written as a new session of
the CLI, in the CLI's own transcript format, and that session is resumed. The model then sees the
earlier messages as real messages, with real ``tool_use`` / ``tool_result`` blocks and images in place,
not as text pasted into one message.

Observed on the CLI 2.1.328 against the fake API (docs/architecture.md, "Seeded sessions"):
- a chain of ``user`` / ``assistant`` entries linked by ``parentUuid`` is enough; the next request
  carries exactly those messages;
- a ``tool_use`` left without a result is answered by the CLI with an "interrupted" error; one followed
  by a ``hook_deferred_tool`` attachment is asked about again at start-up, so it can be paused on and
  given its real result;
- only the *last* deferred call of a message survives a resume (the CLI drops the others), so a step with
  several pending calls is written as consecutive single calls, the earlier ones already answered.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import paths
from ..content import Block, Turn
from ..tools import NOT_RUN, ToolNames
from .locate import TESTED_VERSION as VERSION


def write(
    turns: Sequence[Turn],
    *,
    cwd: Path,
    names: ToolNames,
    env: Mapping[str, str] | None = None,
    pending: Sequence[str] = (),
) -> str:
    """Write ``turns`` as a new CLI session started in ``cwd``; returns its session id.

    ``turns`` alternate user/assistant, with the caller's tool names. ``pending``: the id of the last
    assistant turn's tool call to leave paused (one at most: see the module docstring and
    :func:`sequential`); a resumed session then pauses on it at start-up."""
    session_id = str(uuid.uuid4())
    path = paths.transcript_path(session_id, cwd, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = list(_entries(turns, session_id=session_id, cwd=cwd, names=names, pending=pending))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    tmp.replace(path)
    return session_id


def sequential(assistant: Turn, results: Sequence[Block]) -> tuple[list[Turn], Block | None]:
    """An assistant turn with several tool calls, answered by ``results``, as consecutive single calls:
    every call but the last with its result, then the last call alone (to be paused on). Returns those
    turns and the result block for the last call (None if the caller sent none)."""
    calls = [b for b in assistant.blocks if b.get("type") == "tool_use"]
    other = [b for b in assistant.blocks if b.get("type") != "tool_use"]
    by_id = {r.get("tool_use_id"): r for r in results}
    turns: list[Turn] = []
    for n, call in enumerate(calls[:-1]):
        turns.append(Turn("assistant", tuple((other if n == 0 else []) + [call])))
        result = by_id.get(call.get("id")) or _missing(call)
        turns.append(Turn("user", (result,)))
    last = calls[-1]
    turns.append(Turn("assistant", tuple((other if len(calls) == 1 else []) + [last])))
    return turns, by_id.get(last.get("id"))


def _missing(call: Block) -> Block:
    return {
        "type": "tool_result",
        "tool_use_id": call.get("id"),
        "content": NOT_RUN,
        "is_error": True,
    }


def _entries(
    turns: Sequence[Turn], *, session_id: str, cwd: Path, names: ToolNames, pending: Sequence[str]
) -> Iterator[dict[str, Any]]:
    parent: str | None = None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    common = {"isSidechain": False, "sessionId": session_id, "cwd": str(cwd), "userType": "external"}
    for turn in turns:
        entry_id = str(uuid.uuid4())
        content = [_api_block(b, names) for b in turn.blocks]
        message = {"role": turn.role, "content": content}
        yield {"parentUuid": parent, **common, "type": turn.role, "message": message, "uuid": entry_id,
               "timestamp": stamp, "version": VERSION}  # fmt: skip
        parent = entry_id
    last = turns[-1] if turns else None
    for block in last.blocks if last is not None and last.role == "assistant" else ():
        if block.get("type") == "tool_use" and block.get("id") in pending:
            entry_id = str(uuid.uuid4())
            attachment = {
                "type": "hook_deferred_tool",
                "toolUseID": block["id"],
                "toolName": names.api_name(str(block.get("name"))),
                "toolInput": block.get("input") or {},
                "hookName": "settings",
                "hookEvent": "PreToolUse",
                "permissionMode": "default",
            }
            yield {"parentUuid": parent, **common, "type": "attachment", "attachment": attachment,
                   "uuid": entry_id, "timestamp": stamp, "version": VERSION}  # fmt: skip
            parent = entry_id


def _api_block(block: Block, names: ToolNames) -> Block:
    """A block as the API sees it: the caller's tool names become the names the model was offered."""
    if block.get("type") == "tool_use":
        return {**block, "name": names.api_name(str(block.get("name")))}
    return dict(block)
