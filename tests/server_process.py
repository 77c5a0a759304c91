"""A `claude-max serve` child for the tests: started on a free port, its URL read from stdout."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import openai

from . import proctable

BIN = Path(sys.executable).parent


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[str]
    log: Path
    clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.url + "/v1"

    def client(self, api_key: str = "unused", **kwargs: object) -> openai.OpenAI:
        """An `openai` client for this server, closed (with its pooled connections) by `stop`."""
        client = openai.OpenAI(base_url=self.base, api_key=api_key, max_retries=0, **kwargs)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def children(self) -> list[int]:
        """PIDs of `claude` processes whose parent is the server."""
        return proctable.claude_children(self.proc.pid)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_server(args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Server:
    """Start the server; ``url`` is empty if it did not print one within 60 s (see ``log``)."""
    with log.open("w") as stderr:  # the child keeps its own copy
        proc = subprocess.Popen(
            [str(BIN / "claude-max"), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    url = proc.stdout.readline().strip() if ready else ""
    return Server(url, proc, log)
