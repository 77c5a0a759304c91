"""`-o claude_tools`: Claude Code's file tools stay inside claude_tools_dir (the real CLI's own
permission rules, answering the fake API's tool calls)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import llm
import pytest

from .fakeapi import FakeAnthropicAPI, Reply, ToolUse

pytestmark = pytest.mark.real_cli


def tool_results(api: FakeAnthropicAPI) -> list[dict[str, Any]]:
    found = []
    for request in api.message_requests:
        assert request.body is not None
        for message in request.body["messages"]:
            content = message["content"]
            if message["role"] == "user" and isinstance(content, list):
                found += [b for b in content if b.get("type") == "tool_result"]
    return found


def call(api: FakeAnthropicAPI, work: Path, tools: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    api.enqueue(Reply(text="", tool_uses=[ToolUse(name, arguments)]), Reply(text="done"))
    text = llm.get_model("claude-max").prompt("go", claude_tools=tools, claude_tools_dir=str(work)).text()
    assert text == "done"
    (result,) = tool_results(api)[-1:]
    return result


@pytest.fixture
def work(tmp_path: Path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    (directory / "inside.txt").write_text("INSIDE FILE\n")
    (directory / "link").symlink_to("/etc/passwd")
    return directory


@pytest.mark.parametrize(
    "target",
    ["/etc/passwd", "{work}/link", "{work}/" + "../" * 16 + "etc/passwd"],
    ids=["absolute", "symlink", "dotdot"],
)
def test_read_outside_the_directory_is_refused(
    real_cli: FakeAnthropicAPI, login: Path, work: Path, target: str
) -> None:
    result = call(real_cli, work, "Read", "Read", {"file_path": target.format(work=work)})
    assert result.get("is_error") is True
    assert "root:x:0:0" not in json.dumps(result)


def test_read_inside_the_directory_works(real_cli: FakeAnthropicAPI, login: Path, work: Path) -> None:
    result = call(real_cli, work, "Read", "Read", {"file_path": str(work / "inside.txt")})
    assert "INSIDE FILE" in json.dumps(result) and not result.get("is_error")


def test_grep_and_write_stay_inside(real_cli: FakeAnthropicAPI, login: Path, work: Path, tmp_path: Path) -> None:
    grep = call(real_cli, work, "Grep", "Grep", {"pattern": "root", "path": "/etc/passwd", "output_mode": "content"})
    assert grep.get("is_error") is True and "root:x:0:0" not in json.dumps(grep)
    outside = tmp_path / "outside.txt"
    write = call(real_cli, work, "Write", "Write", {"file_path": str(outside), "content": "x"})
    assert write.get("is_error") is True and not outside.exists()
    inside = call(real_cli, work, "Write", "Write", {"file_path": str(work / "new.txt"), "content": "made"})
    assert not inside.get("is_error") and (work / "new.txt").read_text() == "made"
