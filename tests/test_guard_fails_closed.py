"""The paid-extra-usage block fails closed: a block that cannot be written or read still blocks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from llm_claude_max import guard
from llm_claude_max.cli import cli as claude_max
from llm_claude_max.errors import PaidUsageRefused
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.runner.command import CommandSpec
from llm_claude_max.server.app import AppConfig, create_app
from llm_claude_max.server.engine import Engine, EngineConfig

from . import fake_claude as fc
from .conftest import FakeCLI

OVERAGE = [
    {"emit": fc.init()},
    {"emit": fc.delta("paid answer")},
    {"emit": fc.rate_limit("rejected", overage=True, resets_at=int(time.time()) + 3600, kind="five_hour")},
    {"sleep": 30},
]


@pytest.fixture(autouse=True)
def _forget_unsaved_blocks() -> None:
    guard.OverageLock.unsaved.clear()  # a block kept in memory belongs to one test


async def prompt(cli: ClaudeCLI) -> str:
    return "".join([getattr(e, "text", "") async for e in cli.prompt(CommandSpec(), "hi", policy=guard.Policy())])


def unwritable(tmp_path: Path) -> Path:
    """A lock path whose directory cannot be created (a regular file is in the way): as root too."""
    (tmp_path / "in-the-way").write_text("")
    return tmp_path / "in-the-way" / "overage-lock.json"


async def test_a_block_that_cannot_be_written_still_blocks_this_process(fake_cli: FakeCLI, tmp_path: Path) -> None:
    fake_cli.scenario(steps=OVERAGE)
    cli = ClaudeCLI()
    cli.lock.path = unwritable(tmp_path)
    with pytest.raises(PaidUsageRefused) as info:
        await prompt(cli)
    message = str(info.value)
    assert "extra usage" in message and f"could not be saved to {cli.lock.path} (File exists)" in message
    assert "other processes" in message
    assert info.value.partial_text == "paid answer"

    started = len(fake_cli.invocations())
    with pytest.raises(PaidUsageRefused, match="Nothing was sent") as info:
        await prompt(cli)
    assert str(cli.lock.path) in str(info.value)
    assert len(fake_cli.invocations()) == started  # refused before a CLI was started

    # Once the directory takes it, the block is saved (another process sees it) and still holds.
    (tmp_path / "in-the-way").unlink()
    with pytest.raises(PaidUsageRefused, match="Nothing was sent") as info:
        await prompt(cli)
    assert "could not be saved" not in str(info.value)
    assert json.loads(cli.lock.path.read_text())["limit"] == "five_hour"
    assert guard.OverageLock.unsaved == {}


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"{not json", "is not valid JSON"), (b"[1, 2]", "does not hold a block"), (None, "cannot be read")],
    ids=["corrupt", "not-an-object", "a-directory"],
)
async def test_a_lock_file_that_cannot_be_read_counts_as_a_block(
    fake_cli: FakeCLI, content: bytes | None, why: str
) -> None:
    lock = guard.OverageLock()
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        lock.path.mkdir()
    else:
        lock.path.write_bytes(content)
    with pytest.raises(PaidUsageRefused, match=why) as info:
        await prompt(ClaudeCLI())
    assert "claude-max unlock" in str(info.value)
    assert fake_cli.invocations() == []

    done = CliRunner().invoke(claude_max, ["unlock"])
    if content is None:  # unlock removes files, not directories: it says so
        assert done.exit_code == 1 and f"Could not remove {lock.path}" in done.output
        lock.path.rmdir()
    else:
        assert done.exit_code == 0 and "Block removed" in done.output
    assert await prompt(ClaudeCLI()) == "Hello there."


FULL_DISK = """
import asyncio, json, resource, signal, sys
from llm_claude_max import guard
from llm_claude_max.errors import PaidUsageRefused
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.runner.command import CommandSpec

async def prompt(cli):
    try:
        async for _ in cli.prompt(CommandSpec(), "hi", policy=guard.Policy()):
            pass
    except PaidUsageRefused as exc:
        return str(exc)

cli = ClaudeCLI()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # every write to a file fails from now on: a full disk
first = asyncio.run(prompt(cli))
second = asyncio.run(prompt(cli))
print(json.dumps([first, second]))
"""


def test_a_full_disk_blocks_instead_of_failing(fake_cli: FakeCLI, tmp_path: Path) -> None:
    fake_cli.scenario(steps=OVERAGE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("FAKE_CLAUDE_LOG")  # the fake CLI could not write its log either
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)
    assert "served from paid extra usage" in first and "could not be saved" in first and "File too large" in first
    assert second.startswith("Refused:") and "Nothing was sent" in second and "could not be saved" in second
    assert not guard.OverageLock().path.exists()
    assert not list(guard.OverageLock().path.parent.glob(".overage-lock.json.*"))  # no half-written file


async def test_the_server_answers_429_not_500(fake_cli: FakeCLI, tmp_path: Path) -> None:
    fake_cli.scenario(steps=OVERAGE)
    cli = ClaudeCLI()
    cli.lock.path = unwritable(tmp_path)
    engine = Engine(cli, EngineConfig(pool_size=0))
    app = create_app(engine, AppConfig())
    body = {"model": "claude-max", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            first = await client.post("/v1/chat/completions", json=body)
            second = await client.post("/v1/chat/completions", json=body)
    finally:
        await engine.stop()
    assert first.status_code == 429, first.text
    assert "could not be saved" in first.json()["error"]["message"]
    # Refused before anything starts: by the block, or first by the usage reading of the same event.
    assert second.status_code == 429
    assert re.search("Nothing was sent|no prompt was sent", second.json()["error"]["message"])
    assert len(fake_cli.invocations()) == 1


def test_the_doctor_reports_an_unreadable_block(login: Path) -> None:
    from .test_doctor import doctor_json, findings

    lock = guard.OverageLock()
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text("{half a fi")
    found = findings(doctor_json("--offline"), "billing.paid-usage")
    assert [f["status"] for f in found] == ["warn"]
    assert "is not valid JSON, so it counts as set" in found[0]["summary"]
    assert found[0]["fix"] == "claude-max unlock"
