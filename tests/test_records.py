"""Server records (``servers/*.json``): a corrupt, unreadable or foreign one never stops
`claude-max serve`; the children a dead server left are reaped at the next start."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from llm_claude_max.server import records

from . import proctable
from .conftest import ORPHAN_MARKER, FakeCLI
from .server_process import start_server


def dead_pid() -> int:
    with subprocess.Popen(["true"]) as proc:
        pass
    return proc.pid


def record(name: str | int, content: object | bytes) -> Path:
    folder = records.directory()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


CORRUPT = [
    b"{half a rec",
    b"\xff\xfe",
    [],
    {"pid": "12"},
    {"pid": 1, "start": "yesterday"},
    {"pid": 1, "children": 5},
    {"pid": 1, "children": [5]},
    {"pid": 1, "children": [{"pid": None}]},
]


@pytest.mark.parametrize("content", CORRUPT, ids=lambda c: repr(c)[:24])
def test_a_corrupt_record_of_a_dead_process_is_removed(content: object) -> None:
    path = record(dead_pid(), content)
    assert records.reap_dead() == []
    assert not path.exists()
    assert records.running() == []


def test_a_corrupt_record_of_a_live_process_is_skipped_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    path = record(os.getpid(), b"{being written?")
    assert records.reap_dead() == []
    assert path.exists() and f"Skipped the unreadable server record {path}" in caplog.text


def test_a_record_that_cannot_be_removed_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    folder = records.directory()
    (folder / f"{dead_pid()}.json").mkdir(parents=True)  # unreadable, and unlink() fails on it
    assert records.reap_dead() == []
    assert "Could not remove an unreadable server record" in caplog.text


def test_the_children_of_a_dead_server_are_reaped(tmp_path: Path) -> None:
    """A `claude` that outlived its server (a platform without a parent-death signal, a tool)."""
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.symlink_to("/bin/sleep")
    with subprocess.Popen([str(claude), ORPHAN_MARKER], start_new_session=True) as orphan:
        deadline = time.monotonic() + 5
        while records.process_start(orphan.pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        record(dead_pid(), {"pid": dead_pid(), "start": 1, "children": [
            {"pid": orphan.pid, "start": records.process_start(orphan.pid)}, {"pid": 1, "start": 1}]})  # fmt: skip
        assert records.reap_dead() == [orphan.pid]
        assert orphan.wait(timeout=5) == -9
    assert list(records.directory().glob("*.json")) == []
    assert proctable.is_running(1)  # pid 1 was named with a wrong start time: left alone


def test_serve_starts_despite_corrupt_records(fake_cli: FakeCLI, tmp_path: Path) -> None:
    for n, content in enumerate(CORRUPT):
        record(dead_pid() if n % 2 else f"x{n}", content)
    server = start_server(["--pool-size", "0"], tmp_path / "server.log")
    try:
        assert server.url, (tmp_path / "server.log").read_text()
        assert [p.name for p in records.directory().glob("*.json")] == [f"{server.proc.pid}.json"]
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_serve_starts_when_its_record_cannot_be_written(fake_cli: FakeCLI, tmp_path: Path) -> None:
    records.directory().parent.mkdir(parents=True, exist_ok=True)
    records.directory().write_text("a file where the directory should be")
    server = start_server(["--pool-size", "0"], tmp_path / "server.log")
    try:
        assert server.url, (tmp_path / "server.log").read_text()
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "Could not write the server record" in log and "Traceback" not in log
