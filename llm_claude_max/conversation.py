"""llm conversations as CLI sessions: what one `llm` prompt sends to the CLI.

A response records the CLI's session id in the provider metadata of its text (``claude_max``) and in
``response_json``. The next turn of the conversation (``llm -c``) continues that session with
``--resume`` and sends only the new message, when the last assistant message came from us and the
CLI still has its transcript. Otherwise (another machine, transcripts cleaned up, a conversation
started with another model) the earlier messages are replayed as context in the first message of a
new session (:func:`llm_claude_max.transcript.first_message`). ``--session-id`` is never used
(reusing one fails in the CLI).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm import Attachment
from llm.parts import AttachmentPart, Message, TextPart, ToolCallPart, ToolResultPart

from .errors import InvalidRequest
from .runner.command import SystemPlacement
from .transcript import Block, Turn, first_message, media_block, text_block

META = "claude_max"


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
        data: bytes = attachment.content_bytes()  # type: ignore[no-untyped-call]
    except Exception as exc:  # unreadable file, failed download
        raise InvalidRequest(f"Could not read attachment {attachment.path or attachment.url or ''}: {exc}") from exc
    return media_block(mime, data)


def blocks_of(message: Message) -> tuple[Block, ...]:
    blocks: list[Block] = []
    for part in message.parts:
        if isinstance(part, TextPart) and part.text:
            blocks.append(text_block(part.text))
        elif isinstance(part, AttachmentPart) and part.attachment is not None:
            blocks.append(attachment_block(part.attachment))
        elif isinstance(part, ToolCallPart):
            blocks.append(text_block(f"[tool call {part.name}({json.dumps(part.arguments)})]"))
        elif isinstance(part, ToolResultPart):
            blocks.append(text_block(f"[tool result {part.name}: {part.output}]"))
    return tuple(blocks)


def system_text(messages: Sequence[Message]) -> str:
    """The text of every system message (`llm -s`), in order."""
    return "\n\n".join(
        p.text for m in messages if m.role == "system" for p in m.parts if isinstance(p, TextPart) and p.text
    )


def plan(
    messages: Sequence[Message],
    *,
    placement: SystemPlacement,
    transcript_exists: Callable[[str], bool],
) -> TurnPlan:
    system = system_text(messages)
    turns = [m for m in messages if m.role != "system"]
    if not turns or turns[-1].role != "user":  # `llm -m claude-max ""` has no user message at all
        raise InvalidRequest("The prompt is empty: there is no new user message to send.")
    current = list(blocks_of(turns[-1]))
    if not current:
        raise InvalidRequest("The prompt is empty.")
    history = turns[:-1]
    system_flag = (system or None) if placement is not SystemPlacement.USER else None

    last_assistant = next((m for m in reversed(history) if m.role == "assistant"), None)
    session_id = session_of(last_assistant) if last_assistant is not None else None
    if session_id and transcript_exists(session_id):
        return TurnPlan(system_flag, current, resume=session_id)

    replay = [Turn(m.role, blocks_of(m)) for m in history]
    content = first_message(replay, current, system=system or None, placement=placement)
    if not history:
        return TurnPlan(system_flag, content)
    why = (
        f"the Claude Code session {session_id} is not on this machine"
        if session_id
        else "this conversation has no Claude Code session yet"
    )
    notice = f"claude-max: {why}; replaying {len(history)} earlier message(s) as context."
    return TurnPlan(system_flag, content, replayed=len(history), notice=notice)
