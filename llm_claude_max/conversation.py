"""llm conversations in neutral terms: what one `llm` prompt asks of the CLI.

``prompt.messages`` holds the whole chain (system, earlier turns with their tool calls and results, the
new message). :func:`split` turns it into the system text, the earlier turns, the new message (a user
message, or the results of the model's tool calls) and the CLI session the conversation last ran in.

A response records its CLI session id in the provider metadata of its text or tool calls
(``claude_max``) and in ``response_json``; the next turn (``llm -c``) resumes that session when the CLI
still has it (:mod:`llm_claude_max.runner.pool` decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llm import Attachment
from llm.parts import AttachmentPart, Message, TextPart, ToolCallPart, ToolResultPart

from .content import Block, Turn, media_block, text_block
from .errors import InvalidRequest

META = "claude_max"


@dataclass(frozen=True)
class Split:
    system: str
    history: tuple[Turn, ...]
    new: tuple[Block, ...]
    session: str | None
    """The CLI session of the conversation's last answer, when it came from this plugin."""


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
    """A message's content blocks: text, attachments, the model's tool calls, tool results."""
    blocks: list[Block] = []
    for part in message.parts:
        if isinstance(part, TextPart) and part.text:
            blocks.append(text_block(part.text))
        elif isinstance(part, AttachmentPart) and part.attachment is not None:
            blocks.append(attachment_block(part.attachment))
        elif isinstance(part, ToolCallPart) and not part.server_executed:
            call_id = part.tool_call_id or f"call_{len(blocks)}"
            blocks.append({"type": "tool_use", "id": call_id, "name": part.name, "input": dict(part.arguments or {})})
        elif isinstance(part, ToolResultPart) and not part.server_executed:
            blocks.append(tool_result_block(part))
    return tuple(blocks)


def tool_result_block(part: ToolResultPart) -> Block:
    """A tool's output (and any attachments it returned) as a ``tool_result``; an exception is an error result."""
    text = part.output if part.exception is None else f"Error: {part.exception}"
    attachments = [attachment_block(a) for a in part.attachments or []]
    content: str | list[Block] = [text_block(text or "(no output)"), *attachments] if attachments else text
    block: Block = {"type": "tool_result", "tool_use_id": part.tool_call_id or "", "content": content}
    if part.exception is not None:
        block["is_error"] = True
    return block


def system_text(messages: Sequence[Message]) -> str:
    """The text of every system message (`llm -s`), in order."""
    return "\n\n".join(
        p.text for m in messages if m.role == "system" for p in m.parts if isinstance(p, TextPart) and p.text
    )


def split(messages: Sequence[Message]) -> Split:
    """The conversation so far, and what is new. Raises InvalidRequest when there is nothing new to send."""
    turns: list[Turn] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"  # tool results travel as user turns
        blocks = blocks_of(message)
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, turns[-1].blocks + blocks)
        else:
            turns.append(Turn(role, blocks))
    if not turns or turns[-1].role != "user" or not turns[-1].blocks:
        raise InvalidRequest("The prompt is empty.")
    history = tuple(turns[:-1])
    last_assistant = next((m for m in reversed(messages[:-1]) if m.role == "assistant"), None)
    session = session_of(last_assistant) if last_assistant is not None else None
    return Split(system_text(messages), history, turns[-1].blocks, session)
