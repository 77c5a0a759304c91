"""Conversation content in the CLI's terms, shared by the llm plugin and the server.

A :class:`Turn` is a role and Anthropic content blocks (text, image, document, tool_use, tool_result).
When neither a process nor a transcript of the CLI holds a conversation, the earlier turns are written as a
seeded session (:mod:`llm_claude_max.runner.seed`); if that fails, :func:`first_message` replays them as
text inside the first user message of a new session.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest
from .runner.command import SystemPlacement

Block = dict[str, Any]

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
DOCUMENT_TYPES = frozenset({"application/pdf"})
ATTACHMENT_TYPES = IMAGE_TYPES | DOCUMENT_TYPES

REPLAY_INTRO = (
    "This conversation started earlier; its transcript is not available to you, so the earlier messages are "
    "repeated here, oldest first."
)
REPLAY_OUTRO = "Now reply to this new message:"


@dataclass(frozen=True)
class Turn:
    role: str
    """``user`` or ``assistant``."""
    blocks: tuple[Block, ...]


def text_block(text: str) -> Block:
    return {"type": "text", "text": text}


def media_block(media_type: str, data: bytes | str) -> Block:
    """An image or PDF block from raw bytes or base64 text. Raises InvalidRequest for other types."""
    if media_type not in ATTACHMENT_TYPES:
        supported = ", ".join(sorted(ATTACHMENT_TYPES))
        raise InvalidRequest(f"Attachments of type {media_type!r} are not supported (supported: {supported}).")
    if isinstance(data, bytes):
        encoded = base64.b64encode(data).decode()
    else:
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("An attachment's base64 data is not valid base64.") from None
        encoded = data
    kind = "document" if media_type in DOCUMENT_TYPES else "image"
    return {"type": kind, "source": {"type": "base64", "media_type": media_type, "data": encoded}}


def system_block(system: str) -> Block:
    """The system prompt as the first text of the first user message (placement ``user``)."""
    return text_block(f"<system_instructions>\n{system}\n</system_instructions>")


def replay_block(block: Block) -> Block:
    """A block as it can stand in a replayed text: tool calls and results become text."""
    kind = block.get("type")
    if kind == "tool_use":
        arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
        return text_block(f"[call {block.get('id')} of the tool {block.get('name')} with {arguments}]")
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            content = "\n".join(str(b.get("text", f"[{b.get('type')}]")) for b in content if isinstance(b, dict))
        failed = " (it failed)" if block.get("is_error") else ""
        return text_block(f"[result of call {block.get('tool_use_id')}{failed}: {content}]")
    return block


def merge_text(blocks: Sequence[Block]) -> list[Block]:
    """Join adjacent text blocks, so a replay is one readable text with images in place."""
    merged: list[Block] = []
    for block in blocks:
        if block["type"] == "text" and merged and merged[-1]["type"] == "text":
            merged[-1] = text_block(merged[-1]["text"] + "\n" + block["text"])
        else:
            merged.append(dict(block))
    return merged


def first_message(
    history: Sequence[Turn], current: Sequence[Block], *, system: str | None, placement: SystemPlacement
) -> list[Block]:
    """The first user message of a new CLI session: earlier turns (if any) replayed as context, then
    the new message; with placement ``user``, the system prompt goes first."""
    if not current:
        raise InvalidRequest("The prompt is empty.")
    blocks: list[Block] = []
    if placement is SystemPlacement.USER and system:
        blocks.append(system_block(system))
    if history:
        blocks.append(text_block(REPLAY_INTRO))
        for turn in history:
            blocks.append(text_block(f"<{turn.role}>"))
            blocks.extend(replay_block(b) for b in turn.blocks)
            blocks.append(text_block(f"</{turn.role}>"))
        blocks.append(text_block(REPLAY_OUTRO))
    blocks.extend(replay_block(b) for b in current)
    return merge_text(blocks)
