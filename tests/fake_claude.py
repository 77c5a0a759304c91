#!/usr/bin/env python3
"""A scripted stand-in for the `claude` CLI, for unit tests that need exact events and faults.

Behaviour comes from the JSON file named by ``FAKE_CLAUDE_SCENARIO``; every invocation is appended to
``FAKE_CLAUDE_LOG`` (argv, environment, stdin lines). Stdlib only. The event builders below are
imported by the tests to write scenarios.

Scenario keys:
  version      printed by ``--version``
  initialize   "ok" (default), "error", "silent", or an object merged into the answer
  initialize_delay  seconds to wait before answering initialize (a slow start)
  account      the ``account`` object of the initialize answer (default: a Claude Max login)
  auth_status  JSON printed by ``auth status --json``
  steps        what to do after the first user message, in order:
               {"emit": event} {"raw": "text line"} {"stderr": "text"} {"sleep": s}
               {"exit": code} {"spawn": [argv...]} {"hang": true} {"await_close": true}
               {"signal_self": "INT"} (the CLI's own SIGINT handling: exit 0 without a result)
               {"die": "KILL"} (killed by something else: the OOM killer, a `kill -9`)
               {"ignore_sigterm": true} (a CLI too busy to exit on SIGTERM: only SIGKILL stops it)
               {"paused": true} (parked at a tool call, like the real CLI: input closing now would make one
               more API request, logged as {"paused_stdin_eof": true}; SIGTERM exits 143 after 0.3 s;
               logs {"paused": true} once parked)
  turns        a list of step lists, one per user message (the last one repeats); overrides steps
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SESSION = "5e55e55e-0000-4000-8000-000000000001"
_LOCATE = Path(__file__).resolve().parents[1] / "llm_claude_max" / "runner" / "locate.py"
VERSION = re.search(r'^TESTED_VERSION = "(.+)"$', _LOCATE.read_text(), re.MULTILINE).group(1)  # type: ignore[union-attr]
"""The version it reports: the pinned CLI's (read from where the package keeps it; stdlib only here)."""


# -- event builders (used by the tests) -------------------------------------------------------
def init(session_id: str = SESSION, api_key_source: str = "none", model: str = "claude-opus-5-5") -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "init",
        "session_id": session_id,
        "model": model,
        "apiKeySource": api_key_source,
        "claude_code_version": VERSION,
        "messaging_socket_path": None,
    }


def delta(text: str, message_id: str = "msg_1") -> dict[str, Any]:
    return {
        "type": "stream_event",
        "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        "api_message_id": message_id,
    }


def thinking(text: str, message_id: str = "msg_1") -> dict[str, Any]:
    return {
        "type": "stream_event",
        "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": text}},
        "api_message_id": message_id,
    }


def assistant(text: str, message_id: str = "msg_1", **extra: Any) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {"id": message_id, "model": "claude-opus-5-5", "content": [{"type": "text", "text": text}]},
        **extra,
    }


def rate_limit(
    status: str = "allowed", *, overage: bool = False, resets_at: int | None = None, kind: str | None = None
) -> dict[str, Any]:
    info: dict[str, Any] = {"status": status, "isUsingOverage": overage}
    if resets_at is not None:
        info["resetsAt"] = resets_at
    if kind is not None:
        info["rateLimitType"] = kind
    return {"type": "rate_limit_event", "rate_limit_info": info}


def tool_start(index: int, tool_id: str, name: str, message_id: str = "msg_1") -> dict[str, Any]:
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    event = {"type": "content_block_start", "index": index, "content_block": block}
    return {"type": "stream_event", "event": event, "api_message_id": message_id}


def tool_delta(index: int, partial_json: str, message_id: str = "msg_1") -> dict[str, Any]:
    delta = {"type": "input_json_delta", "partial_json": partial_json}
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    return {"type": "stream_event", "event": event, "api_message_id": message_id}


def tool_use(tool_id: str, name: str, arguments: dict[str, Any], message_id: str = "msg_1") -> dict[str, Any]:
    """The ``assistant`` event of one tool_use block (the CLI sends one per block)."""
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}
    return {"type": "assistant", "message": {"id": message_id, "model": "claude-opus-5-5", "content": [block]}}


def tool_result_event(tool_use_id: str, content: str, *, is_error: bool = False) -> dict[str, Any]:
    """The user message the CLI adds with the result of one of its own tools."""
    block = {"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error}
    return {"type": "user", "message": {"role": "user", "content": [block]}}


def hook_callback(tool_id: str, api_name: str, request_id: str = "hook-1") -> dict[str, Any]:
    """The CLI asking our PreToolUse hook about a tool call."""
    hook_input = {"hook_event_name": "PreToolUse", "tool_name": api_name, "tool_use_id": tool_id}
    request = {"subtype": "hook_callback", "callback_id": "llm-claude-max-pre-tool-use", "input": hook_input}
    return {"type": "control_request", "request_id": request_id, "request": request}


def deferred(calls: list[tuple[str, str, dict[str, Any]]], *, session_id: str = SESSION) -> list[dict[str, Any]]:
    """The steps of a turn that ends calling the caller's tools ``(id, api name, arguments)``."""
    steps: list[dict[str, Any]] = [{"emit": init(session_id)}]
    for index, (tool_id, name, arguments) in enumerate(calls):
        steps += [
            {"emit": tool_start(index, tool_id, name)},
            {"emit": tool_delta(index, json.dumps(arguments))},
            {"emit": tool_use(tool_id, name, arguments)},
            {"emit": hook_callback(tool_id, name, f"hook-{index}")},
        ]
    steps += [{"emit": rate_limit()}, {"emit": result("", stop_reason="tool_deferred", session_id=session_id)}]
    return steps


def api_retry(
    attempt: int, max_retries: int = 3, delay_ms: float = 1200, error: str = "overloaded", status: int | None = 529
) -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "api_retry",
        "attempt": attempt,
        "max_retries": max_retries,
        "retry_delay_ms": delay_ms,
        "error_status": status,
        "error": error,
    }


def result(
    text: str = "Hello.",
    *,
    is_error: bool = False,
    subtype: str = "success",
    status: int | None = None,
    session_id: str = SESSION,
    structured: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "result": text,
        "session_id": session_id,
        "api_error_status": status,
        "stop_reason": "end_turn",
        "structured_output": structured,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 7,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 0,
            "output_tokens_details": {"thinking_tokens": 2},
        },
        "total_cost_usd": 0.000188,
        "modelUsage": {"claude-opus-5-5": {"costUSD": 0.000188}},
        **extra,
    }


def answer(text: str = "Hello there.", *, session_id: str = SESSION) -> list[dict[str, Any]]:
    """The steps of a normal subscription answer, streamed word by word."""
    words = text.split(" ")
    chunks = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    return [
        {"emit": init(session_id)},
        *({"emit": delta(c)} for c in chunks),
        {"emit": assistant(text)},
        {"emit": rate_limit()},
        {"emit": result(text, session_id=session_id)},
    ]


MAX_ACCOUNT = {"subscriptionType": "Claude Max", "apiProvider": "firstParty"}


# -- the fake CLI itself ------------------------------------------------------------------------
def _out(obj: Any) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_CLAUDE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _run_steps(steps: list[dict[str, Any]]) -> None:
    for step in steps:
        if "emit" in step:
            _out(step["emit"])
        elif "raw" in step:
            _out(step["raw"])
        elif "stderr" in step:
            sys.stderr.write(step["stderr"] + "\n")
            sys.stderr.flush()
        elif "sleep" in step:
            time.sleep(step["sleep"])
        elif "exit" in step:
            sys.exit(step["exit"])
        elif "spawn" in step:
            subprocess.Popen(
                step["spawn"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        elif step.get("hang"):
            while True:
                time.sleep(1)
        elif step.get("signal_self"):
            _out(
                {
                    "type": "user",
                    "message": {"role": "user", "content": [{"type": "text", "text": "[Request interrupted by user]"}]},
                }
            )
            sys.exit(0)
        elif step.get("die"):
            os.kill(os.getpid(), getattr(signal, "SIG" + step["die"]))
            time.sleep(10)
        elif step.get("await_close"):
            sys.stdin.read()
        elif step.get("ignore_sigterm"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif step.get("paused"):
            _paused()


def _paused() -> None:
    """Wait at a tool call. The exit on SIGTERM is delayed so that input closed before the signal is seen."""
    dying_at: list[float] = []
    signal.signal(signal.SIGTERM, lambda *a: dying_at.append(time.monotonic() + 0.3))
    _log({"pid": os.getpid(), "paused": True})  # from here on, SIGTERM is seen as by a parked CLI
    watching = True
    while not dying_at or time.monotonic() < dying_at[0]:
        if watching and select.select([0], [], [], 0.05)[0] and not os.read(0, 65536):
            _log({"pid": os.getpid(), "paused_stdin_eof": True})
            watching = False
        elif not watching:
            time.sleep(0.05)
    _log({"pid": os.getpid(), "paused_exit": 143})
    os._exit(143)


def main() -> None:
    # As the real CLI (Node resets its signal mask at start): the plugin's loop thread, which spawns the
    # CLI, blocks the signals the caller's thread takes, and a child inherits the mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    args = sys.argv[1:]
    if args[:1] == ["--version"]:  # answered like the real CLI: `read_version` passes no scenario
        _out(f"{VERSION} (Claude Code)")
        return
    with open(os.environ["FAKE_CLAUDE_SCENARIO"]) as f:
        scenario = json.load(f)
    _log({"argv": args, "env": dict(os.environ), "pid": os.getpid(), "cwd": os.getcwd()})
    if args[:2] == ["auth", "status"]:
        _out(scenario.get("auth_status", {"loggedIn": True, "authMethod": "claude.ai", "subscriptionType": "max"}))
        return
    turns = scenario.get("turns") or [scenario.get("steps", answer())]
    turn_index = 0
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        _log({"pid": os.getpid(), "stdin_line": line})
        message = json.loads(line)
        if message.get("type") == "control_request" and message["request"].get("subtype") == "initialize":
            mode = scenario.get("initialize", "ok")
            time.sleep(scenario.get("initialize_delay", 0))
            if mode == "silent":
                continue
            if mode == "error":
                _out(
                    {
                        "type": "control_response",
                        "response": {
                            "subtype": "error",
                            "request_id": message["request_id"],
                            "error": "unknown subtype",
                        },
                    }
                )
                continue
            response = {
                "models": [
                    {"value": "default", "resolvedModel": "claude-opus-5-5"},
                    {"value": "opus", "resolvedModel": "claude-opus-5-5"},
                ],
                "account": scenario.get("account", MAX_ACCOUNT),
                "pid": os.getpid(),
            }
            if isinstance(mode, dict):
                response.update(mode)
            _out(
                {
                    "type": "control_response",
                    "response": {"subtype": "success", "request_id": message["request_id"], "response": response},
                }
            )
        elif message.get("type") == "user":
            _run_steps(turns[min(turn_index, len(turns) - 1)])  # later messages repeat the last turn
            turn_index += 1
    _log({"pid": os.getpid(), "exit": "stdin closed"})


if __name__ == "__main__":
    # Like the real CLI: exit 143 at once. (sys.exit here was sometimes swallowed: raised inside a
    # __del__ it is only printed, and the fake ran on.)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(143))
    main()
