"""The latest usage reading of each account, one small JSON file per account.

``observe()`` is called for every ``rate_limit_event`` the CLI prints, whichever front door started it
(the llm plugin, ``claude-max serve``, the doctor's live probe). It never raises: a corrupt or
unwritable file costs the reading, never the prompt (``claude-max doctor`` reports it).

An account is named by what the CLI's ``initialize`` answer says about the login (``account.email``
and ``account.organization``, read by the CLI from ``oauthAccount`` in ``.claude.json``), hashed; no
token is ever read. A login the CLI names no account for (``CLAUDE_CODE_OAUTH_TOKEN``) is ``unnamed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from . import windows

if TYPE_CHECKING:
    from ..runner.protocol import RateLimit

logger = logging.getLogger(__name__)

VERSION = 1
UNNAMED = "unnamed"


def directory(env: Mapping[str, str] | None = None) -> Path:
    return paths.state_dir(env) / "usage"


def account_key(email: str | None, organization: str | None) -> str:
    """A stable name for a login that reveals neither the address nor a credential."""
    if not email:
        return UNNAMED
    identity = f"{email.strip().lower()}\n{(organization or '').strip()}"
    return "acct-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Account:
    key: str
    email: str | None = None
    organization: str | None = None
    plan: str | None = None

    @classmethod
    def from_initialize(cls, account: Any) -> Account:
        """The ``account`` object of the CLI's ``initialize`` answer."""
        data = account if isinstance(account, Mapping) else {}
        email, organization = _text(data.get("email")), _text(data.get("organization"))
        return cls(account_key(email, organization), email, organization, _text(data.get("subscriptionType")))

    def describe(self) -> str:
        plan = self.plan or "Claude subscription"
        if not self.email:
            return f"{plan} · this login (the CLI names no account for it)"
        return f"{plan} · {self.email}" + (f" ({self.organization})" if self.organization else "")


@dataclass(frozen=True)
class Record:
    """One account's latest reading, as stored."""

    account: Account
    observed_at: float
    source: str | None
    """The program whose prompt brought the reading: ``llm``, ``claude-max serve``..."""
    info: Mapping[str, Any]
    """The CLI's ``rate_limit_info``, unchanged."""
    windows_info: Mapping[str, Any] | None
    """The latest ``unifiedWindows`` seen (an event without any keeps the earlier ones)..."""
    windows_observed_at: float | None
    """... and when they arrived."""

    def reading(self) -> windows.Reading:
        earlier = (self.windows_info, self.windows_observed_at or self.observed_at) if self.windows_info else None
        return windows.parse(self.info, self.observed_at, earlier=earlier)

    def as_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "account": {
                "key": self.account.key,
                "email": self.account.email,
                "organization": self.account.organization,
                "plan": self.account.plan,
            },
            "observed_at": self.observed_at,
            "source": self.source,
            "rate_limit_info": dict(self.info),
            "windows": {"observed_at": self.windows_observed_at, "unifiedWindows": self.windows_info},
        }

    @classmethod
    def from_json(cls, data: Any) -> Record:
        """Raises ValueError for anything that is not a record this version wrote."""
        try:
            account, info, kept = data["account"], data["rate_limit_info"], data.get("windows") or {}
            if data["version"] != VERSION or not isinstance(info, dict) or not isinstance(account["key"], str):
                raise TypeError
            unified = kept.get("unifiedWindows")
            kept_at = kept.get("observed_at")
            return cls(
                Account(account["key"], _text(account.get("email")), _text(account.get("organization")),
                        _text(account.get("plan"))),
                float(data["observed_at"]),
                _text(data.get("source")),
                info,
                unified if isinstance(unified, dict) else None,
                float(kept_at) if isinstance(kept_at, (int, float)) else None,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("not a usage record") from None


@dataclass(frozen=True)
class Problem:
    """A usage file that could not be read or written."""

    path: Path
    message: str


def path_of(key: str, env: Mapping[str, str] | None = None) -> Path:
    return directory(env) / f"{key}.json"


def read(path: Path) -> Record:
    """Raises OSError (unreadable) or ValueError (corrupt)."""
    return Record.from_json(json.loads(path.read_text()))


def load(key: str, env: Mapping[str, str] | None = None) -> Record | None:
    try:
        return read(path_of(key, env))
    except (OSError, ValueError):
        return None


def load_all(env: Mapping[str, str] | None = None) -> tuple[list[Record], list[Problem]]:
    """Every account's record, the most recently observed first, and the files that could not be read."""
    records: list[Record] = []
    problems: list[Problem] = []
    try:
        files = sorted(directory(env).glob("*.json"))
    except OSError as exc:
        return [], [Problem(directory(env), f"cannot be listed: {exc.strerror or exc}")]
    for path in files:
        try:
            records.append(read(path))
        except OSError as exc:
            problems.append(Problem(path, f"cannot be read: {exc.strerror or exc}"))
        except ValueError:
            problems.append(Problem(path, "is not a usage record (corrupt); the next reading replaces it"))
    return sorted(records, key=lambda r: r.observed_at, reverse=True), problems


def save(record: Record, env: Mapping[str, str] | None = None) -> None:
    paths.write_json(path_of(record.account.key, env), record.as_json())


def unwritable(env: Mapping[str, str] | None = None) -> Problem | None:
    """Why a new reading could not be stored, or None (the doctor asks; nothing is written)."""
    target = directory(env)
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Problem(target, f"cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):  # records are replaced by a rename: the directory counts
        return Problem(target, f"cannot be written: no write permission on {existing}")
    return None


# -- which account is logged in now ------------------------------------------------------------------

_login_cache: dict[Path, tuple[tuple[int, int], str | None]] = {}


def login_key(env: Mapping[str, str] | None = None) -> str | None:
    """The account key of the login stored in the CLI's ``.claude.json`` (its ``oauthAccount`` email
    and organization name; nothing else is read), or None when there is none. Cached per file
    version (the CLI rewrites that file often, and it can be large)."""
    path = paths.claude_json(env)
    try:
        stat = path.stat()
    except OSError:
        return None
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _login_cache.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    try:
        account = json.loads(path.read_text()).get("oauthAccount")
    except (OSError, ValueError, AttributeError):
        account = None
    key = None
    if isinstance(account, dict) and _text(account.get("emailAddress")):
        key = account_key(account["emailAddress"], _text(account.get("organizationName")))
    _login_cache[path] = (version, key)
    return key


def current(env: Mapping[str, str] | None = None, *, only: Callable[[Record], bool] | None = None) -> Record | None:
    """The record of the login the CLI would use now: the one stored in ``.claude.json`` when there is
    one (a login switched since the last reading has none yet), else the latest reading of any account.

    ``only``: what the caller is looking for. When no record matches, the login is not even looked up
    (``.claude.json`` can be megabytes, and the server asks on every request)."""
    records, _ = load_all(env)
    if only is not None and not any(only(r) for r in records):
        return None
    key = login_key(env)
    chosen = next((r for r in records if r.account.key == key), None) if key is not None else None
    if key is None and records:
        chosen = records[0]
    return chosen if chosen is not None and (only is None or only(chosen)) else None


# -- recording ---------------------------------------------------------------------------------------------


def front_door(argv: list[str] | None = None) -> str | None:
    """The program this process is: ``llm``, ``claude-max serve``, ``claude-max doctor``..."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return None
    program = Path(argv[0]).name
    if program == "claude-max":
        command = next((a for a in argv[1:] if not a.startswith("-")), None)
        return f"claude-max {command}" if command else program
    if program == "llm":
        return "llm"
    return None


def observe(
    event: RateLimit, account: Any, env: Mapping[str, str] | None = None, *, now: float | None = None
) -> str | None:
    """Record the reading of one ``rate_limit_event`` for ``account`` (the ``initialize`` answer's
    ``account``). Returns a warning line when a window is nearly used up. Never raises."""
    now = time.time() if now is None else now
    try:
        who = Account.from_initialize(account)
        info = event.raw
        earlier = load(who.key, env)
        unified = info.get("unifiedWindows")
        kept: Mapping[str, Any] | None = unified if isinstance(unified, dict) else None
        kept_at: float | None = now
        if kept is None and earlier is not None:
            kept, kept_at = earlier.windows_info, earlier.windows_observed_at
        record = Record(who, now, front_door(), info, kept, kept_at)
        reading = record.reading()
    except Exception:  # a reading must never break a prompt
        logger.debug("usage reading not understood", exc_info=True)
        return None
    try:
        save(record, env)
    except OSError:
        logger.debug("usage reading not stored", exc_info=True)
    return windows.warning(reading, now)
