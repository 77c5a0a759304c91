"""The package as a new user gets it: `uv build`, then the wheel installed the common ways, each in an
environment of its own (never this checkout), driving the real pinned CLI against the fake API.

- a fresh virtualenv with llm, and `llm install <wheel>` (pip inside llm's environment);
- `uv tool install llm --with <wheel>`, where only `llm` is on PATH: every command a message names must
  exist there; and `--with-executables-from`, which adds `claude-max`.

uv runs from its own cache (offline first; online only when the cache lacks something), so after a
first run these tests need no network.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .fakeapi import FakeAnthropicAPI

pytestmark = pytest.mark.real_cli

ROOT = Path(__file__).parent.parent
# Read before any test replaces HOME: the user's uv cache is what keeps these tests fast and offline.
UV_CACHE = os.environ.get("UV_CACHE_DIR") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uv"
)
PROXIES = {k: os.environ.get(k, "") for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY")}
"""The proxies uv needs for PyPI (each test's own HTTPS_PROXY refuses every connection, for the CLI's sake)."""
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
"""PATH inside the installed environments: their own bin directory first, never this checkout's venv."""


def uv_executable() -> str:
    found = os.environ.get("CLAUDE_MAX_TEST_UV") or shutil.which("uv")
    if not found:
        cached = sorted((Path.home() / ".cache" / "llm-claude-max").glob("uv-*/bin/uv"))
        found = str(cached[-1]) if cached else None
    if not found:
        pytest.fail("uv is needed to build and install the package: run the suite with `./dev test`")
    return found


UV = uv_executable()


def uv(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``uv args`` from the cache alone, or, if the cache lacks something, with the network."""
    base = {**os.environ, **PROXIES, "UV_CACHE_DIR": UV_CACHE, "UV_NO_PROGRESS": "1", **(env or {})}
    base.pop("UV_OFFLINE", None)
    for offline in ({"UV_OFFLINE": "1"}, {}):  # (an empty UV_OFFLINE is an error to uv, not "online")
        done = subprocess.run(
            [UV, *args], capture_output=True, text=True, check=False, cwd=cwd, env={**base, **offline}
        )
        if done.returncode == 0:
            return done
    raise AssertionError(f"uv {' '.join(args)} failed:\n{done.stderr}")


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path
    requirements: Path
    """The locked runtime dependencies (`uv export --no-dev`), as constraints for the installs."""


LITTER = (".hypothesis/examples/x", "bench/results/run.json", "llm_claude_max/__pycache__/x.cpython-311.pyc",
          ".mypy_cache/x", ".pytest_cache/x", ".ruff_cache/x", ".venv/bin/x", "dist/old.whl", "tests/.hypothesis/x")  # fmt: skip
"""What a working checkout accumulates; none of it may reach a distribution."""


def working_copy(target: Path) -> Path:
    """This checkout's files (tracked or not, minus what git ignores) plus the usual litter."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for name in LITTER:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text("litter")
    return target


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    source = working_copy(tmp_path_factory.mktemp("checkout"))
    uv("build", "--out-dir", str(out), cwd=source)  # the wheel is built from the sdist: the sdist must be complete
    requirements = out / "requirements.txt"
    exported = uv("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--quiet", cwd=ROOT)
    requirements.write_text(exported.stdout)
    (wheel,) = out.glob("llm_claude_max-*.whl")
    (sdist,) = out.glob("llm_claude_max-*.tar.gz")
    return Built(wheel, sdist, requirements)


# -- what is in the distributions ---------------------------------------------------------------------------
def test_the_sdist_holds_the_source_and_nothing_else(built: Built) -> None:
    with tarfile.open(built.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("pyproject.toml", "README.md", "LICENSE", "uv.lock", "dev", "tests/conftest.py", "docs/doctor.md"):
        assert needed in names
    assert "llm_claude_max/py.typed" in names and "diagnostics/schema.json" in names
    litter = re.compile(
        r"(^|/)(\.hypothesis|__pycache__|\.venv|\.mypy_cache|\.pytest_cache|\.ruff_cache|dist)(/|$)|\.pyc$"
    )
    assert [n for n in names if litter.search(n) or n.startswith("bench/results")] == []


def test_the_wheel_is_complete_and_described(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    for needed in ("llm_claude_max/py.typed", "diagnostics/py.typed", "diagnostics/schema.json",
                   "llm_claude_max/server/openapi.py", "llm_claude_max/__main__.py", f"{info}/licenses/LICENSE"):  # fmt: skip
        assert needed in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/")) or "__pycache__" in n]
    assert metadata["Name"] == "llm-claude-max" and metadata["License-Expression"] == "Apache-2.0"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Issues"} <= set(urls)
    assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])
    assert "claude-code" in metadata["Keywords"] and metadata["Author"]
    assert (
        "claude_max = llm_claude_max.plugin" in entry_points and "claude-max = llm_claude_max.cli:main" in entry_points
    )


# -- installed the common ways -----------------------------------------------------------------------------
@pytest.fixture
def api(real_cli: FakeAnthropicAPI, login: Path) -> FakeAnthropicAPI:
    return real_cli


def run_in(bin_dir: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command of an installed environment, with only that environment's bin directory added to PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}:{SYSTEM_PATH}"
    return subprocess.run(
        [*argv[:1], *argv[1:]], capture_output=True, text=True, check=False, timeout=120, cwd=cwd, env=env
    )


def named_commands(text: str) -> list[str]:
    return re.findall(r"`((?:llm claude-max|claude-max)(?: [^`]*)?)`", text)


def assert_named_commands_exist(bin_dir: Path, text: str, cwd: Path) -> list[str]:
    names = named_commands(text)
    for command in names:
        done = run_in(bin_dir, *command.split(), "--help", cwd=cwd)
        assert done.returncode == 0, f"`{command}` named in a message does not exist here: {done.stderr}"
    return names


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory away from this checkout (so nothing imports it by accident)."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    return directory


def test_llm_install_into_a_fresh_virtualenv(
    built: Built, api: FakeAnthropicAPI, tmp_path: Path, outside: Path
) -> None:
    venv = tmp_path / "venv"
    uv("venv", "--seed", "--python", sys.executable, str(venv))  # --seed: pip, which `llm install` runs
    uv("pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(built.requirements))  # llm and friends
    bin_dir = venv / "bin"
    installed = run_in(
        bin_dir, str(bin_dir / "llm"), "install", str(built.wheel), cwd=outside
    )  # pip: the dependencies are there already, so no index is needed
    assert installed.returncode == 0, installed.stderr
    where = run_in(bin_dir, "python", "-c", "import llm_claude_max; print(llm_claude_max.__file__)", cwd=outside)
    assert where.stdout.startswith(str(venv))  # the installed wheel, not this checkout
    doctor = run_in(bin_dir, "llm", "claude-max", "doctor", "--offline", cwd=outside)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.startswith("claude-max doctor 0.1.0")
    assert_named_commands_exist(bin_dir, doctor.stdout, outside)
    prompt = run_in(bin_dir, "llm", "-m", "claude-max", "Say hi", cwd=outside)
    assert (prompt.returncode, prompt.stdout) == (0, "Hello from the fake API.\n"), prompt.stderr
    assert run_in(bin_dir, "claude-max", "--version", cwd=outside).stdout == "claude-max, version 0.1.0\n"


@pytest.fixture
def tool_dirs(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {"UV_TOOL_DIR": str(tmp_path / "tools"), "UV_TOOL_BIN_DIR": str(tmp_path / "tool-bin")}


def uv_tool_install(built: Built, dirs: dict[str, str], *with_args: str) -> Path:
    uv(
        "tool",
        "install",
        "--python",
        sys.executable,
        "--constraints",
        str(built.requirements),
        "llm",
        *with_args,
        env=dirs,
    )
    return Path(dirs["UV_TOOL_BIN_DIR"])


def test_uv_tool_with_the_plugin_only(
    built: Built, api: FakeAnthropicAPI, tool_dirs: dict[str, str], home: Path, outside: Path
) -> None:
    bin_dir = uv_tool_install(built, tool_dirs, "--with", str(built.wheel))
    assert sorted(p.name for p in bin_dir.iterdir()) == ["llm"]  # no `claude-max` for this user
    prompt = run_in(bin_dir, "llm", "-m", "claude-max", "Say hi", cwd=outside)
    assert (prompt.returncode, prompt.stdout) == (0, "Hello from the fake API.\n"), prompt.stderr
    messages = []
    (home / ".claude" / ".credentials.json").unlink()
    refused = run_in(bin_dir, "llm", "-m", "claude-max", "Say hi", cwd=outside)
    assert refused.returncode == 1 and "`llm claude-max doctor`" in refused.stderr
    messages.append(refused.stderr)
    messages.append(run_in(bin_dir, "llm", "claude-max", "doctor", cwd=outside).stdout)
    named = [c for text in messages for c in assert_named_commands_exist(bin_dir, text, outside)]
    assert named and all(c.startswith("llm claude-max ") for c in named)


def test_uv_tool_with_the_claude_max_command(
    built: Built, api: FakeAnthropicAPI, tool_dirs: dict[str, str], outside: Path
) -> None:
    bin_dir = uv_tool_install(built, tool_dirs, "--with-executables-from", f"llm-claude-max @ {built.wheel.as_uri()}")
    assert sorted(p.name for p in bin_dir.iterdir()) == ["claude-max", "llm"]
    doctor = run_in(bin_dir, "claude-max", "doctor", "--offline", cwd=outside)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    named = assert_named_commands_exist(bin_dir, doctor.stdout, outside)
    assert named == ["claude-max doctor --verbose"]
