"""The documentation's examples and tables are checked against the code."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llm_claude_max.cli import cli
from llm_claude_max.models import ClaudeMaxOptions

from .fakeapi import FakeAnthropicAPI, Reply, ToolUse, tool_results

ROOT = Path(__file__).parent.parent


def test_readme_options_table_matches_the_model_options() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- options:start -->")[1].split("<!-- options:end -->")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", table, re.MULTILINE))
    expected = {name: field.description for name, field in ClaudeMaxOptions.model_fields.items()}
    assert rows == expected


def _python_block_after(markdown: str, marker: str) -> str:
    after = markdown.split(marker, 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_doctor_docs_plugin_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_cli: object) -> None:
    docs = (ROOT / "docs" / "doctor.md").read_text()
    site = tmp_path / "site"
    site.mkdir()
    (site / "acme_claude_doctor.py").write_text(_python_block_after(docs, "`acme_claude_doctor.py`:"))
    info = site / "acme_claude_doctor-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-claude-doctor\nVersion: 1.0\n")
    entry = re.search(r"\[project\.entry-points\.claude_max_doctor\]\n(.+)\n", docs)
    assert entry is not None
    (info / "entry_points.txt").write_text(
        f"[claude_max_doctor]\n{entry.group(1).replace(' ', '').replace(chr(34), '')}\n"
    )
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("acme_claude_doctor", None)
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere:3128")
    result = CliRunner().invoke(cli, ["doctor", "--json", "acme"])
    document = json.loads(result.output)
    by_id = {c["id"]: c for c in document["checks"]}
    assert by_id["acme.proxy"]["findings"][0]["status"] == "warn"
    assert by_id["acme.proxy"]["plugin"] == "acme"
    assert by_id["acme.cli-pin"]["findings"][0]["status"] == "ok"  # the fake CLI says it is 2.1.328
    listing = CliRunner().invoke(cli, ["doctor", "--list", "acme"]).output
    assert "acme-claude-doctor 1.0" in listing


@pytest.mark.real_cli
def test_readme_tools_example_runs(real_cli: FakeAnthropicAPI, login: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    code = _python_block_after(readme, "From Python, with a function or a Toolbox:")
    real_cli.enqueue(
        Reply(text="", tool_uses=[ToolUse("lookup", {"city": "Paris"}), ToolUse("Notes_add", {"note": "Paris 22C"})]),
        Reply(text="It is 22C and sunny in Paris; noted."),
    )
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "It is 22C and sunny in Paris; noted."
    assert [r["content"] for r in tool_results(real_cli.message_requests[1].body)] == ["22C, sunny", "1 notes"]


def test_server_parameter_table_matches_the_chat_completions_adapter() -> None:
    """Every Chat Completions parameter is in docs/server.md's table, as applied, refused or ignored, and
    the ignored ones are exactly those the server names in X-Claude-Max-Ignored."""
    from llm_claude_max.server.apis import openai_chat

    docs = (ROOT / "docs" / "server.md").read_text()
    table = docs.split("<!-- parameters:start -->")[1].split("<!-- parameters:end -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| (applied|refused|ignored) \| .+ \|$", table, re.MULTILINE)
    assert len(rows) == table.count("\n| `")  # every row has one of the three verdicts
    verdicts = dict(rows)
    fields = set(openai_chat.ChatCompletionRequest.model_fields)
    assert set(verdicts) == fields | set(openai_chat.IGNORED) | set(openai_chat.REFUSED)
    assert {name for name, verdict in rows if verdict == "ignored"} == set(openai_chat.IGNORED)
    assert {name for name, verdict in rows if verdict == "refused"} >= set(openai_chat.REFUSED)


@pytest.mark.real_cli
def test_server_function_calling_example_runs(server: Any, real_cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from .fakeapi import Reply, ToolUse, tool_results

    docs = (ROOT / "docs" / "server.md").read_text()
    example = _python_block_after(docs, "## Function calling")
    assert 'base_url="http://127.0.0.1:8765/v1"' in example
    real_cli.enqueue(Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]), Reply(text="Sunny."))
    namespace: dict[str, Any] = {}
    try:
        exec(example.replace("http://127.0.0.1:8765/v1", server.base), namespace)
    finally:
        if "client" in namespace:
            namespace["client"].close()
    assert capsys.readouterr().out == "Sunny.\n"
    [result] = tool_results(real_cli.message_requests[1].body)
    assert result["content"] == "22°C and sunny in Paris"
