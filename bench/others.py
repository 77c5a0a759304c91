"""Other projects' OpenAI-compatible servers over the Claude Code CLI, for the side-by-side comparison:
claudegate (PyPI ``claude-code-openai``) and claude-max-api-proxy (npm ``claude-max-api-proxy``).

They are installed once into a cache outside the checkout (``~/.cache/llm-claude-max/bench-tools``) with
their registries' own clients (pip, npm), and run in the benchmark's sandbox: the pinned CLI, the fake API
(``ANTHROPIC_BASE_URL``, which both pass on to the CLI through its environment) and the fake login in
the sandbox's HOME. Both bind 127.0.0.1 by default; the port is given.

- claudegate 0.1.1 runs the CLI through the Claude Agent SDK (``CLAUDEGATE_CLI_PATH`` names the pinned
  CLI), keeps a conversation's process between turns (``reuse_sessions``), "bare mode" (no Claude Code
  prompt or tools) by default.
- claude-max-api-proxy 1.0.0 runs ``claude --print ... <prompt>`` from ``PATH`` for every request (one
  process per request, nothing kept); the sandbox's PATH starts with a directory holding the pinned CLI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .measure import BenchError
from .sandbox import Sandbox
from .server import External

TOOLS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-claude-max" / "bench-tools"
CLAUDEGATE = ("claude-code-openai", "0.1.1")
PROXY = ("claude-max-api-proxy", "1.0.0")


def install() -> None:
    """Install both into :data:`TOOLS` unless they are there."""
    gate = TOOLS / "claudegate"
    if not (gate / "bin" / "claudegate").exists():
        subprocess.run(["python3", "-m", "venv", str(gate)], check=True)
        pip = [str(gate / "bin" / "pip"), "install", "--quiet", f"{CLAUDEGATE[0]}=={CLAUDEGATE[1]}"]
        subprocess.run(pip, check=True)
    proxy = TOOLS / "proxy"
    if not (proxy / "node_modules" / PROXY[0] / "dist" / "server" / "standalone.js").exists():
        proxy.mkdir(parents=True, exist_ok=True)
        npm = ["npm", "install", "--prefix", str(proxy), "--no-audit", "--no-fund", "--loglevel=error"]
        subprocess.run([*npm, f"{PROXY[0]}@{PROXY[1]}"], check=True)


def _env(sandbox: Sandbox) -> dict[str, str]:
    """The raw CLI's sandbox environment, with the pinned CLI first on PATH as `claude`."""
    bin_dir = sandbox.root / "others-bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "claude"
    if not link.exists():
        link.symlink_to(sandbox.cli)
    env = sandbox.raw("", "").env
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}


def claudegate(sandbox: Sandbox, port: int) -> External:
    env = {
        **_env(sandbox),
        "CLAUDEGATE_CLI_PATH": str(sandbox.cli),
        "CLAUDEGATE_HOST": "127.0.0.1",
        "CLAUDEGATE_PORT": str(port),
        "CLAUDEGATE_LOG_LEVEL": "WARNING",
        "CLAUDEGATE_REQUEST_LOG": "false",
    }
    argv = [str(TOOLS / "claudegate" / "bin" / "claudegate"), "serve", "--port", str(port), "--model", "opus"]
    return External(sandbox, f"claudegate {CLAUDEGATE[1]}", argv, env, port, "/health")


def claude_max_api_proxy(sandbox: Sandbox, port: int) -> External:
    script = TOOLS / "proxy" / "node_modules" / PROXY[0] / "dist" / "server" / "standalone.js"
    if not script.exists():
        raise BenchError(f"{PROXY[0]} is not installed at {script}")
    argv = ["node", str(script), str(port)]
    return External(sandbox, f"claude-max-api-proxy {PROXY[1]}", argv, _env(sandbox), port, "/health")
