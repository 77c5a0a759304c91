"""The child of ``./dev bench tools-trace``: one `llm` tool chain in this process, with the moments of a
tool round trip stamped where they happen (``time.monotonic()``, a system-wide clock on Linux, so the
parent can put them beside the fake API's own stamps).

Run as a script by :func:`bench.suite.bench_tools_trace`, in its sandbox's environment; prints one JSON
object: ``{"hook": t, "deferred": t, "result": t, "tool": t, "written": t}``, each the first such moment
after the model's tool call:

- ``hook``: the CLI asks the plugin's PreToolUse hook about the call;
- ``deferred``: the plugin's answer (``defer``) is written;
- ``result``: the CLI's ``result`` for that step is read (the step ends; llm gets the call);
- ``tool``: llm runs the tool;
- ``written``: the plugin writes the tool's result to the paused CLI.

Wrapping two methods of the plugin's process class costs a few microseconds per event.
"""

from __future__ import annotations

import json
import time
from typing import Any

import llm

from llm_claude_max.runner import process
from llm_claude_max.runner.protocol import ControlRequest, Result

stamps: dict[str, float] = {}


def stamp(name: str) -> None:
    stamps.setdefault(name, time.monotonic())


def wrap() -> None:
    read_event, send = process.ClaudeProcess.read_event, process.ClaudeProcess.send

    async def traced_read(self: process.ClaudeProcess) -> Any:
        event = await read_event(self)
        if isinstance(event, ControlRequest) and event.subtype == "hook_callback":
            stamp("hook")
        elif isinstance(event, Result) and "hook" in stamps:
            stamp("result")
        return event

    async def traced_send(self: process.ClaudeProcess, data: bytes) -> None:
        await send(self, data)
        if "hook" in stamps and "deferred" not in stamps:
            stamp("deferred")
        elif b'"tool_result"' in data:
            stamp("written")

    process.ClaudeProcess.read_event = traced_read  # type: ignore[method-assign]
    process.ClaudeProcess.send = traced_send  # type: ignore[method-assign]


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    stamp("tool")
    return a * b


def main() -> None:
    wrap()
    chain = llm.get_model("claude-max").chain("what is 3*7", tools=[multiply])
    if chain.text() != "21":
        raise SystemExit("the chain did not answer 21")
    print(json.dumps(stamps))


if __name__ == "__main__":
    main()
