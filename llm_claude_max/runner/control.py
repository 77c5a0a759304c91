"""One answer for every control request the CLI sends us, in every read loop.

- ``hook_callback`` (our PreToolUse hook): a call of one of the caller's tools is **deferred** (the
  turn stops with ``stop_reason: tool_deferred`` and the caller runs it); anything else (Claude Code's
  own tools, enabled by the user; the CLI's StructuredOutput tool) gets no decision, so the CLI's own
  permission rules apply.
- ``mcp_message`` for our in-process MCP server: ``initialize``, ``notifications/*``, ``tools/list``,
  ``ping``; a ``tools/call`` (which a deferred call never reaches) is answered with an error result, never
  run here.
- ``can_use_tool``: refused (we never pass ``--permission-prompt-tool``; this is a safety net).
- Anything else: an error response naming the request, never silence (a CLI waiting for an answer
  would hang).

No I/O: :func:`answer` turns a request into the bytes to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tools import MCP_SERVER, ToolNames, ToolSpec, is_caller_tool, mcp_tool_list
from .protocol import JSON, ControlRequest, encode_control_error, encode_control_success

MCP_PROTOCOL_VERSION = "2025-11-25"


class Dispatcher:
    """Answers control requests for one CLI process, whose caller offers ``tools`` (maybe none)."""

    def __init__(self, tools: Sequence[ToolSpec] = ()) -> None:
        self.tools = tuple(tools)
        self.names = ToolNames(self.tools)

    def answer(self, request: ControlRequest) -> bytes:
        if request.subtype == "hook_callback":
            return encode_control_success(request.request_id, self._hook(request.request))
        if request.subtype == "mcp_message":
            return self._mcp(request)
        if request.subtype == "can_use_tool":
            denial = {"behavior": "deny", "message": "llm-claude-max does not grant tool permissions."}
            return encode_control_success(request.request_id, denial)
        return encode_control_error(request.request_id, f"llm-claude-max does not handle {request.subtype!r}")

    def _hook(self, request: JSON) -> JSON:
        hook_input = request.get("input") or {}
        tool = hook_input.get("tool_name")
        if hook_input.get("hook_event_name") == "PreToolUse" and isinstance(tool, str) and is_caller_tool(tool):
            output = {
                "hookEventName": "PreToolUse",
                "permissionDecision": "defer",
                "permissionDecisionReason": "the caller runs its own tools",
            }
            return {"hookSpecificOutput": output}
        return {}

    def _mcp(self, request: ControlRequest) -> bytes:
        message = request.request.get("message")
        server = request.request.get("server_name")
        if not isinstance(message, dict):
            return encode_control_error(request.request_id, "mcp_message without a message")
        if server != MCP_SERVER:
            reply = _rpc_error(message, -32601, f"no MCP server named {server!r} here")
        else:
            reply = self._rpc(message)
        return encode_control_success(request.request_id, {"mcp_response": reply})

    def _rpc(self, message: JSON) -> JSON:
        method = message.get("method")
        if "id" not in message:  # a notification: acknowledged, as the official SDK does
            return {"jsonrpc": "2.0", "result": {}}
        if method == "initialize":
            params = message.get("params") or {}
            result: Any = {
                "protocolVersion": params.get("protocolVersion") or MCP_PROTOCOL_VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": MCP_SERVER, "version": "1.0.0"},
            }
        elif method == "tools/list":
            result = {"tools": mcp_tool_list(self.tools, self.names)}
        elif method == "ping":
            result = {}
        elif method == "tools/call":
            # Never reached while calls are deferred; a safety net if the CLI calls anyway.
            text = "This tool runs in the caller's process; the call was not deferred, so it did not run."
            result = {"content": [{"type": "text", "text": text}], "isError": True}
        else:
            return _rpc_error(message, -32601, f"method {method!r} not found")
        return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def _rpc_error(message: JSON, code: int, text: str) -> JSON:
    return {"jsonrpc": "2.0", "id": message.get("id"), "error": {"code": code, "message": text}}
