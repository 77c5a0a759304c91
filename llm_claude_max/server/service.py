"""`claude-max serve --install-service`: run the server at login, as a systemd user unit (Linux) or a
launchd agent (macOS), with the options it was given.

The service runs ``<this Python> -m llm_claude_max serve <options>``, which works however the package
was installed (a venv, ``pipx``, ``uv tool``). Service managers start with a bare environment, so the
unit records the ``PATH`` (where ``claude`` and its runtime are found) and the llm-claude-max and proxy
settings of the shell that installed it. Credentials are never written: the CLI's own login is what the
server uses, and its API key stays in the keyring or its 0600 file. The file itself is 0600.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import config, invocation, paths, routes

NAME = "claude-max"
"""The systemd unit's name (``claude-max.service``)."""
LABEL = "dev.llm-claude-max.serve"
"""The launchd agent's label."""

KEPT = (
    "PATH",
    "LANG",
    "CLAUDE_CONFIG_DIR",
    "XDG_STATE_HOME",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "CLAUDE_CODE_MAX_RETRIES",
    "API_TIMEOUT_MS",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    # Not the plugin's server settings, nor a wrapper's spelling of the command (the service is neither).
    *(name for name in config.DOCUMENTED if name not in (config.SERVER, config.SERVER_KEY, config.COMMAND)),
)
"""Variables copied from the installing shell into the service, when set."""


@dataclass(frozen=True)
class Service:
    """Where the service file goes and how the service manager is driven."""

    kind: str
    """``systemd`` or ``launchd``."""
    path: Path
    content: bytes
    start: tuple[tuple[str, ...], ...]
    stop: tuple[tuple[str, ...], ...]
    logs: str
    """How to read the server's output."""


def command(options: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "llm_claude_max", "serve", *options]


def environment(env: Mapping[str, str]) -> dict[str, str]:
    return {name: env[name] for name in KEPT if env.get(name) and name not in routes.REMOVED}


def for_platform(options: Sequence[str], env: Mapping[str, str] | None = None, platform: str = sys.platform) -> Service:
    env = os.environ if env is None else env
    if platform == "darwin":
        return _launchd(options, env)
    if platform.startswith("linux"):
        return _systemd(options, env)
    raise ValueError(f"--install-service supports Linux (systemd) and macOS (launchd), not {platform}.")


# -- systemd ---------------------------------------------------------------------------------------------
def _systemd(options: Sequence[str], env: Mapping[str, str]) -> Service:
    base = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or Path.home()) / ".config")
    path = base / "systemd" / "user" / f"{NAME}.service"
    lines = [
        f"# Written by `{invocation.command('serve --install-service')}`; "
        f"removed by `{invocation.command('serve --uninstall-service')}`.",
        "[Unit]",
        "Description=llm-claude-max: OpenAI-compatible server over your own Claude Code CLI",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_systemd_word(word) for word in command(options)),
        *(f"Environment={_systemd_word(f'{k}={v}', dollars=False)}" for k, v in environment(env).items()),
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM to the server only: it stops its `claude` children itself, then whatever is left is killed.
        "KillMode=mixed",
        "TimeoutStopSec=20",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    unit = f"{NAME}.service"
    return Service(
        kind="systemd",
        path=path,
        content="\n".join(lines).encode(),
        start=(("systemctl", "--user", "daemon-reload"), ("systemctl", "--user", "enable", "--now", unit)),
        stop=(("systemctl", "--user", "disable", "--now", unit), ("systemctl", "--user", "daemon-reload")),
        logs=f"journalctl --user -u {unit}",
    )


def _systemd_word(word: str, *, dollars: bool = True) -> str:
    """One argument, quoted for a unit file: specifiers (``%``) and, in ExecStart, ``$`` are escaped."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if dollars:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


# -- launchd ---------------------------------------------------------------------------------------------
def _launchd(options: Sequence[str], env: Mapping[str, str]) -> Service:
    home = Path(env.get("HOME") or Path.home())
    path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    log = home / "Library" / "Logs" / "llm-claude-max" / "serve.log"
    agent = {
        "Label": LABEL,
        "ProgramArguments": command(options),
        "EnvironmentVariables": environment(env),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "ExitTimeOut": 20,
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    }
    domain = f"gui/{os.getuid()}"
    return Service(
        kind="launchd",
        path=path,
        content=plistlib.dumps(agent),
        start=(("launchctl", "bootstrap", domain, str(path)),),
        stop=(("launchctl", "bootout", f"{domain}/{LABEL}"),),
        logs=f"tail -f {log}",
    )


# -- install / uninstall ---------------------------------------------------------------------------------
def install(service: Service) -> list[str]:
    """Write the file (0600) and start the service if the service manager is here; returns what to tell
    the user."""
    if service.kind == "launchd":
        paths_to_make = [service.path.parent, Path(str(plistlib.loads(service.content)["StandardOutPath"])).parent]
    else:
        paths_to_make = [service.path.parent]
    for directory in paths_to_make:
        directory.mkdir(parents=True, exist_ok=True)
    replacing = service.path.exists()
    if replacing:
        _run_all(service.stop, quiet=True)  # a loaded agent or a running unit would keep the old options
    paths.write_private(service.path, service.content)
    notes = [f"{'Replaced' if replacing else 'Wrote'} {service.path}"]
    return notes + _activate(service.start, "Start it with")


def uninstall(service: Service) -> list[str]:
    if not service.path.exists():
        return [f"No service is installed ({service.path} does not exist)."]
    notes = _activate(service.stop[:1], "Stop it with")
    service.path.unlink()
    _run_all(service.stop[1:], quiet=True)
    return [*notes, f"Removed {service.path}"]


def _activate(commands: Sequence[Sequence[str]], otherwise: str) -> list[str]:
    """Run ``commands`` when their tool exists; else (or when one fails) say what to run by hand."""
    if not commands or shutil.which(commands[0][0]) is None:
        return [f"{otherwise}: " + " && ".join(" ".join(c) for c in commands)]
    failure = _run_all(commands, quiet=False)
    if failure is None:
        return ["Ran: " + " && ".join(" ".join(c) for c in commands)]
    return [failure, f"{otherwise}: " + " && ".join(" ".join(c) for c in commands)]


def _run_all(commands: Sequence[Sequence[str]], *, quiet: bool) -> str | None:
    for argv in commands:
        if shutil.which(argv[0]) is None:
            return None if quiet else f"{argv[0]} is not on PATH"
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None if quiet else f"`{' '.join(argv)}` failed: {exc}"
        if done.returncode != 0 and not quiet:
            said = (done.stderr or done.stdout).strip().splitlines()
            return f"`{' '.join(argv)}` failed: {said[-1] if said else f'exit code {done.returncode}'}"
    return None
