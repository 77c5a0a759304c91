"""Read the OS keyring without ever blocking the doctor, and without ever printing a secret.

``keyring`` can block forever (a locked collection with an unlock dialog) or fail in many ways on a
headless Linux box, so the lookup runs in a child Python process with a timeout and reports only a
state, and on macOS the metadata of Claude Code's login item (plan, scopes, expiry).
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

CLAUDE_SERVICE = "Claude Code-credentials"

_PROBE = r"""
import json, sys
service, account, want_metadata = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
try:
    import keyring
    from keyring.backends import fail, null
    backend = keyring.get_keyring()
    name = type(backend).__module__ + "." + type(backend).__name__
    if isinstance(backend, fail.Keyring) or (hasattr(backend, "backends") and not backend.backends):
        print(json.dumps({"state": "no-backend", "backend": name})); sys.exit()
    if isinstance(backend, null.Keyring):
        print(json.dumps({"state": "null-backend", "backend": name})); sys.exit()
    value = keyring.get_password(service, account)
    out = {"state": "backend", "backend": name, "item_present": value is not None}
    if value is not None and want_metadata:
        try:
            oauth = json.loads(value).get("claudeAiOauth") or {}
            keys = ("expiresAt", "refreshTokenExpiresAt", "scopes", "subscriptionType")
            out["metadata"] = {k: oauth.get(k) for k in keys}
            out["metadata"]["refreshToken"] = bool(oauth.get("refreshToken"))
        except Exception:
            out["metadata"] = None
    print(json.dumps(out))
except Exception as exc:
    print(json.dumps({"state": "error", "error": type(exc).__name__ + ": " + str(exc)[:200]}))
"""


@dataclass(frozen=True)
class KeyringState:
    state: str
    """``backend``, ``no-backend``, ``null-backend``, ``error`` or ``timeout``."""
    backend: str | None = None
    item_present: bool = False
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def probe(
    service: str = CLAUDE_SERVICE, account: str | None = None, *, metadata: bool = False, timeout: float = 5.0
) -> KeyringState:
    account = account or getpass.getuser()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, service, account, "1" if metadata else "0"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return KeyringState(
            "timeout", error=f"no answer within {timeout:g} s (a locked keyring waiting for an unlock dialog?)"
        )
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return KeyringState("error", error=(done.stderr or done.stdout).strip()[:200] or f"exit code {done.returncode}")
    return KeyringState(
        data.get("state", "error"),
        data.get("backend"),
        bool(data.get("item_present")),
        data.get("error"),
        data.get("metadata") or {},
    )
