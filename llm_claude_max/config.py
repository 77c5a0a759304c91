"""llm-claude-max's own environment variables, read in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

CLI = "CLAUDE_MAX_CLI"
BASE_URL = "CLAUDE_MAX_BASE_URL"
ALLOW_API_BILLING = "CLAUDE_MAX_ALLOW_API_BILLING"
ALLOW_OVERAGE = "CLAUDE_MAX_ALLOW_OVERAGE"
SERVER = "CLAUDE_MAX_SERVER"
SERVER_KEY = "CLAUDE_MAX_SERVER_KEY"
COMMAND = "CLAUDE_MAX_COMMAND"
"""How messages spell the `claude-max` command, when a wrapper knows better (``./dev`` sets ``./dev claude-max``)."""
WARM = "CLAUDE_MAX_WARM"

DOCUMENTED: dict[str, str] = {
    CLI: "path of the `claude` executable (default: `claude` on PATH)",
    BASE_URL: "send the CLI's API requests to this URL instead of Anthropic's; your subscription token is sent there",
    ALLOW_API_BILLING: "1 = allow pay-as-you-go API-key billing (warned on every prompt)",
    ALLOW_OVERAGE: "1 = allow prompts served from paid extra usage (warned on every prompt)",
    "CLAUDE_MAX_STATE_DIR": "where llm-claude-max keeps its workspace and state "
    "(default ~/.local/state/llm-claude-max)",
    SERVER: "URL of a running `claude-max serve`; the llm plugin then sends prompts through it",
    SERVER_KEY: "API key for a `claude-max serve` that requires one",
    COMMAND: "how messages spell the `claude-max` command when a wrapper runs it (`./dev` sets `./dev claude-max`)",
    WARM: "1 = llm prompts start a private warm server when none runs, and go through it (`llm claude-max warm`)",
}

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Names of this machine's loopback interface: the server's default, and what a loopback server answers to."""

_TRUE = {"1", "true", "yes", "on"}


def flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    cli: str | None = None
    base_url: str | None = None
    allow_api_billing: bool = False
    allow_overage: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            cli=env.get(CLI) or None,
            base_url=env.get(BASE_URL) or None,
            allow_api_billing=flag(env, ALLOW_API_BILLING),
            allow_overage=flag(env, ALLOW_OVERAGE),
        )
