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
               {"ignore_sigterm": true} (a CLI too busy to exit on SIGTERM: only SIGKILL stops it)
  turns        a list of step lists, one per user message (the last one repeats); overrides steps
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

SESSION = "5e55e55e-0000-4000-8000-000000000001"


# -- event builders (used by the tests) -------------------------------------------------------
def init(session_id: str = SESSION, api_key_source: str = "none", model: str = "claude-opus-5-5") -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "init",
        "session_id": session_id,
        "model": model,
        "apiKeySource": api_key_source,
        "claude_code_version": "2.1.328",
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
        elif step.get("await_close"):
            sys.stdin.read()
        elif step.get("ignore_sigterm"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--version"]:  # answered like the real CLI: `read_version` passes no scenario
        _out("2.1.328 (Claude Code)")
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
