"""`llm` as a user runs it: this environment's `llm` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .fakeapi import FakeAnthropicAPI, Reply

LLM = str(Path(sys.executable).parent / "llm")


def llm_run(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``llm ARGS`` to its end and capture its output."""
    return subprocess.run(
        [LLM, *args],
        capture_output=True,
        text=True,
        check=False,
        input=input,
        timeout=timeout,
        env=env or os.environ.copy(),
    )


@contextmanager
def llm_mid_answer(api: FakeAnthropicAPI) -> Iterator[subprocess.Popen[str]]:
    """``llm -m claude-max hi`` halfway through its answer: it has printed "one " and the fake API holds
    the rest until the block ends. The process is killed then if it still runs."""
    gate = threading.Event()
    api.enqueue(Reply(text="one two three", gate=gate, gate_timeout=30))
    with subprocess.Popen(
        [LLM, "-m", "claude-max", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.read(4) == "one "
            yield proc
        finally:
            gate.set()
            if proc.poll() is None:
                proc.kill()
