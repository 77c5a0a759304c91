"""llm conversations as CLI sessions: what one `llm` prompt sends to the CLI.

A response records the CLI's session id in the provider metadata of its text (``claude_max``) and in
``response_json``. The next turn of the conversation (``llm -c``) continues that session with
``--resume`` and sends only the new message, when the last assistant message came from us and the
CLI still has its transcript. Otherwise (another machine, transcripts cleaned up, a conversation
started with another model) the earlier messages are replayed as context in the first message of a
new session. ``--session-id`` is never used (reusing one fails in the CLI).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llm import Attachment
from llm.parts import AttachmentPart, Message, ReasoningPart, TextPart, ToolCallPart, ToolResultPart

from .errors import InvalidRequest
from .runner.command import SystemPlacement

META = "claude_max"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
DOCUMENT_TYPES = frozenset({"application/pdf"})
ATTACHMENT_TYPES = IMAGE_TYPES | DOCUMENT_TYPES

Block = dict[str, Any]


@dataclass(frozen=True)
class TurnPlan:
    system: str | None
    """The system prompt for a CLI flag (None when it travels inside the user turn)."""
    content: list[Block]
    resume: str | None = None
    replayed: int = 0
    notice: str | None = None


def session_of(message: Message) -> str | None:
    """The CLI session id recorded on an assistant message, if it came from this plugin."""
    holders = [message.provider_metadata, *(getattr(p, "provider_metadata", None) for p in message.parts)]
    for meta in reversed(holders):
        if isinstance(meta, dict) and isinstance(meta.get(META), dict):
            session_id = meta[META].get("session_id")
            if isinstance(session_id, str) and session_id:
                return session_id
    return None


def attachment_block(attachment: Attachment) -> Block:
    mime: str = attachment.resolve_type()  # type: ignore[no-untyped-call]
    try:
        data: str = attachment.base64_content()  # type: ignore[no-untyped-call]
    except Exception as exc:  # unreadable file, failed download
        raise InvalidRequest(f"Could not read attachment {attachment.path or attachment.url or ''}: {exc}") from exc
    kind = "document" if mime in DOCUMENT_TYPES else "image"
    return {"type": kind, "source": {"type": "base64", "media_type": mime, "data": data}}


def _blocks(message: Message) -> list[Block]:
    blocks: list[Block] = []
    for part in message.parts:
        if isinstance(part, TextPart) and part.text:
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, AttachmentPart) and part.attachment is not None:
            blocks.append(attachment_block(part.attachment))
        elif isinstance(part, ToolCallPart):
            blocks.append({"type": "text", "text": f"[tool call {part.name}({json.dumps(part.arguments)})]"})
        elif isinstance(part, ToolResultPart):
            blocks.append({"type": "text", "text": f"[tool result {part.name}: {part.output}]"})
        elif isinstance(part, ReasoningPart):
            continue
    return blocks


def _system_text(messages: Sequence[Message]) -> str:
    return "\n\n".join(
        p.text for m in messages if m.role == "system" for p in m.parts if isinstance(p, TextPart) and p.text
    )


def _merge_text(blocks: list[Block]) -> list[Block]:
    """Join adjacent text blocks, so a replay is one readable text with images in place."""
    merged: list[Block] = []
    for block in blocks:
        if block["type"] == "text" and merged and merged[-1]["type"] == "text":
            merged[-1] = {"type": "text", "text": merged[-1]["text"] + "\n" + block["text"]}
        else:
            merged.append(block)
    return merged


def plan(
    messages: Sequence[Message],
    *,
    placement: SystemPlacement,
    transcript_exists: Callable[[str], bool],
) -> TurnPlan:
    system = _system_text(messages) or None
    turns = [m for m in messages if m.role != "system"]
    if not turns or turns[-1].role != "user":
        raise InvalidRequest("There is no new user message to send.")
    current = _blocks(turns[-1])
    if not current:
        raise InvalidRequest("The prompt is empty.")
    history = turns[:-1]
    system_flag = system if placement is not SystemPlacement.USER else None

    def with_system(blocks: list[Block]) -> list[Block]:
        if placement is SystemPlacement.USER and system:
            return [{"type": "text", "text": f"<system_instructions>\n{system}\n</system_instructions>"}, *blocks]
        return blocks

    if not history:
        return TurnPlan(system_flag, _merge_text(with_system(current)))

    last_assistant = next((m for m in reversed(history) if m.role == "assistant"), None)
    session_id = session_of(last_assistant) if last_assistant is not None else None
    if session_id and transcript_exists(session_id):
        return TurnPlan(system_flag, current, resume=session_id)

    replay: list[Block] = [
        {
            "type": "text",
            "text": "This conversation started earlier; its transcript is not available to you, so the earlier "
            "messages are repeated here, oldest first.",
        }
    ]
    for message in history:
        replay.append({"type": "text", "text": f"<{message.role}>"})
        replay.extend(_blocks(message))
        replay.append({"type": "text", "text": f"</{message.role}>"})
    replay.append({"type": "text", "text": "Now reply to this new message:"})
    replay.extend(current)
    why = (
        f"the Claude Code session {session_id} is not on this machine"
        if session_id
        else "this conversation has no Claude Code session yet"
    )
    notice = f"claude-max: {why}; replaying {len(history)} earlier message(s) as context."
    return TurnPlan(system_flag, _merge_text(with_system(replay)), replayed=len(history), notice=notice)
