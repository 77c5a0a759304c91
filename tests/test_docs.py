"""The documentation's examples and tables are checked against the code."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

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
