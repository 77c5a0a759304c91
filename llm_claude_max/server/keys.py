"""The server's API key: generated once, kept in the OS keyring (or a 0600 file when there is no
usable keyring), compared in constant time. It protects the server; it is not an Anthropic credential."""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from .. import config, invocation, paths

SERVICE = "llm-claude-max"
ACCOUNT = "server-api-key"
KEYRING_TIMEOUT = 5.0
MIN_LENGTH = 16
"""A stored key shorter than this (an empty file after a crash...) is not a key: a new one is made."""

T = TypeVar("T")


def _with_timeout(call: Callable[[], T]) -> T:
    """Run a keyring call in a daemon thread: a locked keyring can block forever."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(KEYRING_TIMEOUT)
    if thread.is_alive():
        raise TimeoutError("the keyring did not answer")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _file(env: Mapping[str, str]) -> Path:
    return paths.state_dir(env) / "server-key"


def load(env: Mapping[str, str] | None = None, *, rotate: bool = False) -> tuple[str, str]:
    """The key and where it is kept (``$CLAUDE_MAX_SERVER_KEY``, ``keyring`` or the file path)."""
    env = os.environ if env is None else env
    given = env.get(config.SERVER_KEY, "")
    if given and not rotate:
        if len(given) < MIN_LENGTH:
            raise ValueError(f"{config.SERVER_KEY} is shorter than {MIN_LENGTH} characters.")
        return given, config.SERVER_KEY
    try:
        import keyring

        stored = None if rotate else _with_timeout(lambda: keyring.get_password(SERVICE, ACCOUNT))
        if stored and len(stored) >= MIN_LENGTH:
            return stored, "keyring"
        key = new_key()
        _with_timeout(lambda: keyring.set_password(SERVICE, ACCOUNT, key))
        if _with_timeout(lambda: keyring.get_password(SERVICE, ACCOUNT)) == key:
            return key, "keyring"
    except Exception:
        pass
    path = _file(env)
    if path.exists() and not rotate:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        stored = path.read_text().strip()
        if len(stored) >= MIN_LENGTH:
            return stored, str(path)
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key, str(path)


def new_key() -> str:
    return "cmx-" + secrets.token_urlsafe(32)


def matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty or short key never matches."""
    if not given or len(expected) < MIN_LENGTH:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def refusal() -> str:
    """The 401 message: where the key comes from, and how to send it."""
    return (
        f"Missing or wrong API key. This server requires the key that `{invocation.command('server-key')}` prints, "
        f"sent as `Authorization: Bearer <key>` or `x-api-key: <key>` (the llm plugin sends {config.SERVER_KEY})."
    )
