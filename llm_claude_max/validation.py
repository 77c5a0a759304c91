"""What the Claude Code CLI can carry, checked before anything starts, for every front door (the llm
plugin, the server, the Python API): bad text is an :class:`InvalidRequest`, never a traceback after a
CLI was started.

What the real CLI 2.1.328 does with awkward text (against the fake API):

- a lone surrogate (U+D800-U+DFFF alone; also what invalid UTF-8 becomes when read as text with
  ``surrogateescape``, e.g. binary data piped to ``llm``) is silently replaced by U+FFFD, in messages,
  system prompts and files alike: the model would get something else than was sent. Refused.
- NUL is carried in messages and in a system prompt file, but no command-line argument can hold one
  (the OS ends the string there): a system prompt with a NUL goes through a file
  (``runner/promptfile.py``), a JSON schema escapes it, a model name with one is refused.
- every other control character (C0, DEL, C1), U+FFFE, U+FEFF and U+2028 reach the API unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import InvalidRequest

BINARY_HINT = "Was binary data sent as the prompt? Send files as attachments (`llm -a FILE`, or an image or file part)."


def check_text(text: str, where: str) -> None:
    """Refuse text the CLI would change: lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        raise InvalidRequest(
            f"{where} is not valid Unicode text: it holds a lone surrogate (U+{ord(char):04X}) at character "
            f"{exc.start}, which the Claude Code CLI would replace with U+FFFD. {BINARY_HINT}"
        ) from None


def check_blocks(content: str | Iterable[Mapping[str, Any]], where: str = "The prompt") -> None:
    """A user message: its text, and the base64 data of images and documents."""
    if isinstance(content, str):
        check_text(content, where)
        return
    for block in content:
        if isinstance(block.get("text"), str):
            check_text(block["text"], where)
        source = block.get("source")
        if isinstance(source, Mapping) and isinstance(source.get("data"), str):
            check_text(source["data"], f"{where} (an attachment)")
        if block.get("type") == "tool_use":
            check_text(json.dumps(block.get("input"), ensure_ascii=False), f"{where} (a tool call)")
        if block.get("type") == "tool_result":
            result = block.get("content")
            check_blocks(result if isinstance(result, (str, list)) else "", f"{where} (a tool result)")


def check_request(
    *,
    system: str | None,
    messages: Iterable[str | Iterable[Mapping[str, Any]]],
    json_schema: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> None:
    """Everything a prompt sends to the CLI: the system prompt, every message (history included), the
    schema and the model name (both on the command line)."""
    if system:
        check_text(system, "The system prompt")
    for content in messages:
        check_blocks(content)
    if json_schema is not None:
        check_text(json.dumps(json_schema, ensure_ascii=False), "The JSON schema")  # NULs are escaped there
    if model:
        check_text(model, "The model name")
        if "\0" in model:
            raise InvalidRequest("The model name contains a NUL character, which no command line can carry.")
