"""Shared fixtures.

Every test runs with a temporary HOME, state dir and llm user dir, and with every credential/route
variable removed from the environment: the real ``~/.claude`` is never touched and no real Anthropic
host is contacted (the CLI runs against :mod:`fakeapi` through ``CLAUDE_MAX_BASE_URL``).

After each test, no `claude` process (real or fake) started during it may still exist.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_claude_max import config, invocation, routes
from llm_claude_max.runner.client import ClaudeCLI
from llm_claude_max.runner.locate import TESTED_VERSION
from llm_claude_max.server.app import AppConfig, create_app
from llm_claude_max.server.engine import Engine, EngineConfig

from . import proctable
from .fakeapi import FakeAnthropicAPI
from .server_process import Server, start_server

# A suite started in the background (`./dev test &`, and CI) inherits an ignored SIGINT, and so would every
# `llm` it starts: Python leaves an ignored SIGINT ignored, so the Ctrl-C tests would test nothing but
# that. A handler here is reset to the default in each child at exec, as on a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TESTS = Path(__file__).parent
FAKE_CLAUDE = TESTS / "fake_claude.py"
PINNED_VERSION = TESTED_VERSION
DEFAULT_PINNED = (
    Path.home() / ".cache" / "llm-claude-max" / "claude-cli" / PINNED_VERSION / "node_modules" / ".bin" / "claude"
)
ORPHAN_MARKER = "312.5"  # argument of `sleep` grandchildren started by fake scenarios
RUN_MARKER = "LLM_CLAUDE_MAX_TEST_RUN"
RUN_ID = uuid.uuid4().hex
os.environ[RUN_MARKER] = RUN_ID  # inherited by every process this test run starts, at any depth


def pinned_cli_path() -> Path:
    path = Path(os.environ.get("CLAUDE_MAX_TEST_CLI") or DEFAULT_PINNED)
    if not path.exists():
        pytest.fail(
            f"The pinned Claude Code CLI {PINNED_VERSION} is not installed at {path}. "
            "Run `./dev test`, which installs it into ~/.cache/llm-claude-max, or set CLAUDE_MAX_TEST_CLI."
        )
    return path


@pytest.fixture(scope="session")
def nowhere_proxy() -> Iterator[str]:
    """The HTTPS proxy of every test: a loopback port that refuses connections (bound, never listening).
    A real CLI that reaches for a real host (plain `claude -p` with an API key contacts
    api.anthropic.com before it answers ``initialize``) is refused on this machine instead."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- isolation ------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nowhere_proxy: str) -> Iterator[Path]:
    for variable in routes.VARIABLES:
        monkeypatch.delenv(variable.name, raising=False)
    for name in config.DOCUMENTED:
        monkeypatch.delenv(name, raising=False)
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "LLM_LOAD_PLUGINS", "CLAUDECODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", nowhere_proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the fake API and the server under test
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CLAUDE_MAX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    # The CLI creates Unix sockets under $TMPDIR: keep the path short (108-byte limit).
    short_tmp = tempfile.mkdtemp(prefix="cm-", dir="/tmp")
    monkeypatch.setenv("TMPDIR", short_tmp)
    yield home
    shutil.rmtree(short_tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def front_door() -> Iterator[None]:
    """Each test starts with no recorded front door (`claude-max`, `llm claude-max`, the server)."""
    invocation.reset()
    yield
    invocation.reset()


def write_login(
    home: Path, *, plan: str = "max", expires_in: float = 30 * 86400, config_dir: Path | None = None
) -> Path:
    """A fake `/login` credentials file (fake token values, real shape)."""
    target = (config_dir or home / ".claude") / ".credentials.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": "sk-ant-oat01-FAKEACCESSTOKEN-aaaa",
                    "refreshToken": "sk-ant-ort01-FAKEREFRESHTOKEN-bbbb",
                    "expiresAt": int((time.time() + expires_in) * 1000),
                    "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
                    "subscriptionType": plan,
                }
            }
        )
    )
    target.chmod(0o600)
    return target


@pytest.fixture
def login(home: Path) -> Path:
    return write_login(home)


# -- the orphan check -----------------------------------------------------------------------------
def _claude_processes() -> dict[int, str]:
    """`claude` processes (real or fake) started by this test run, whatever their parent now is."""
    marker = f"{RUN_MARKER}={RUN_ID}".encode()
    found: dict[int, str] = {}
    for pid in proctable.pids():
        args = proctable.argv(pid)
        joined = " ".join(args)
        ours = proctable.is_claude(args) or "fake_claude.py" in joined or joined == f"sleep {ORPHAN_MARKER}"
        if ours and marker in proctable.environ(pid):
            found[pid] = joined[:200]
    return found


def _states(pids: Iterable[int]) -> dict[int, str]:
    """State, parent and process group of each pid, to tell a stuck kill from a forgotten child."""
    return {pid: f"state={f[0]} ppid={f[1]} pgid={f[2]}" for pid in pids if (f := proctable.stat(pid))}


def _end_background_processes() -> None:
    """What interpreter exit does for the plugin: end the processes its background loop keeps (a chain
    abandoned while paused at a tool call)."""
    from llm_claude_max.runner import loop

    current = loop._state.get("background")
    if current is not None and current.pid == os.getpid():
        current.call(current.pool.end_all, timeout=10)


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    before = set(_claude_processes())
    yield
    _end_background_processes()
    deadline = time.monotonic() + 3.0
    while True:
        left = {pid: cmd for pid, cmd in _claude_processes().items() if pid not in before}
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"claude processes left behind: {left}; {_states(left)}")
        time.sleep(0.05)


# -- the fake API and the real CLI --------------------------------------------------------------------
@pytest.fixture
def fake_api() -> Iterator[FakeAnthropicAPI]:
    with FakeAnthropicAPI() as api:
        yield api


@pytest.fixture
def real_cli(monkeypatch: pytest.MonkeyPatch, fake_api: FakeAnthropicAPI) -> FakeAnthropicAPI:
    """The pinned real CLI, pointed at the fake API. Returns the fake API."""
    monkeypatch.setenv(config.CLI, str(pinned_cli_path()))
    monkeypatch.setenv(config.BASE_URL, fake_api.url)
    return fake_api


# -- the scripted fake CLI ------------------------------------------------------------------------
@dataclass
class FakeCLI:
    dir: Path

    def scenario(self, **scenario: Any) -> None:
        (self.dir / "scenario.json").write_text(json.dumps(scenario))

    def log(self) -> list[dict[str, Any]]:
        path = self.dir / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def invocations(self) -> list[dict[str, Any]]:
        return [e for e in self.log() if "argv" in e]

    def stdin_lines(self) -> list[dict[str, Any]]:
        return [json.loads(e["stdin_line"]) for e in self.log() if "stdin_line" in e]


@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCLI:
    fake = FakeCLI(tmp_path / "fake-cli")
    fake.dir.mkdir()
    fake.scenario()
    monkeypatch.setenv(config.CLI, str(FAKE_CLAUDE))
    monkeypatch.setenv("FAKE_CLAUDE_SCENARIO", str(fake.dir / "scenario.json"))
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(fake.dir / "log.jsonl"))
    return fake


# -- the server app in this process ------------------------------------------------------------------------
@pytest.fixture
async def app_client() -> AsyncIterator[httpx.AsyncClient]:
    """The server app in this process (no pool), over ASGI."""
    engine = Engine(ClaudeCLI(), EngineConfig(pool_size=0))
    app = create_app(engine, AppConfig())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        await engine.stop()


# -- `claude-max serve` as a subprocess -------------------------------------------------------------------
@pytest.fixture
def serve(real_cli: FakeAnthropicAPI, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `claude-max serve` children (the real CLI, the fake API); each is stopped after the test."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, expect_failure: bool = False) -> Server:
        server = start_server(args, tmp_path / f"server-{len(servers)}.log", env=env)
        servers.append(server)
        if not expect_failure:
            assert server.url.startswith("http://"), server.log.read_text()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve: Callable[..., Server], login: Path) -> Server:
    return serve()
