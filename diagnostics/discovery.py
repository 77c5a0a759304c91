"""What the Claude Code CLI would see, read statically (no subprocess, no network).

- environment variables, merged with the ``env`` blocks of every settings scope in the CLI's order
  (user < project < local < managed; a settings value overrides the shell, ``""`` cancels it);
- ``apiKeyHelper`` from settings, a Console key stored by ``claude auth login --console``
  (``primaryApiKey`` in ``.claude.json``), and the ``/login`` credentials file (metadata only);
- where each one comes from, including the shell profile or ``.env`` line that exports a variable.

Two views are computed: what plain ``claude -p`` in this shell sees, and what the CLI sees when
llm-claude-max runs it (credential variables removed, only managed settings loaded). Nothing here
keeps a secret: values are masked as soon as they are read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_claude_max import guard, paths, routes
from llm_claude_max.routes import Kind, Rung

from .masking import mask, mask_embedded, mask_url

SCOPES = ("user", "project", "local", "managed")  # increasing priority
COMMAND_SETTINGS = ("apiKeyHelper", "hooks", "awsAuthRefresh", "awsCredentialExport", "otelHeadersHelper")
"""Settings that make the CLI run a command when it starts."""

ACTIVE_CLOUD_SWITCHES = {f"CLAUDE_CODE_USE_{p}" for p in routes.CLOUD_PROVIDERS}
ACTIVE_PROFILE = {"ANTHROPIC_PROFILE", "ANTHROPIC_FEDERATION_RULE_ID"}
OFF = ("", "0", "false", "no", "off")
"""Values that leave a switch variable off."""

PROFILE_FILES = (
    ".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc", ".zprofile", ".zshenv", ".zlogin",
    ".config/fish/config.fish",
)  # fmt: skip
SYSTEM_PROFILE_FILES = ("/etc/environment", "/etc/profile", "/etc/bash.bashrc", "/etc/zsh/zshenv", "/etc/zsh/zshrc")
DOTENV_NAMES = (".env", ".env.local", ".envrc")


def managed_dirs(platform: str = sys.platform) -> tuple[Path, ...]:
    if platform == "darwin":
        return (Path("/Library/Application Support/ClaudeCode"),)
    if platform.startswith("win"):
        return (Path(os.environ.get("PROGRAMDATA", "C:/ProgramData")) / "ClaudeCode",)
    return (Path("/etc/claude-code"),)


def short_path(path: Path, home: Path) -> str:
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class SettingsFile:
    scope: str
    path: Path
    data: Mapping[str, Any] = field(repr=False, default_factory=dict)
    error: str | None = None

    def line_of(self, key: str) -> int | None:
        """The first line of the file that mentions ``"key"`` (for fixes)."""
        try:
            for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
                if f'"{key}"' in line:
                    return number
        except OSError:
            return None
        return None


@dataclass(frozen=True)
class Source:
    kind: str
    """``env``, ``settings``, ``file`` or ``keychain``."""
    location: str
    path: Path | None = None
    line: int | None = None
    scope: str | None = None
    """For settings: user, project, local or managed."""

    def describe(self) -> str:
        if self.line:
            return f"{self.location}:{self.line}"
        return self.location


@dataclass(frozen=True)
class Credential:
    rung: Rung
    name: str
    display: str
    """Masked value or a description; never the secret."""
    source: Source
    plain: bool
    """Plain `claude -p` in this shell sees it."""
    ours: bool
    """The CLI sees it when llm-claude-max runs it."""
    active: bool = True
    """It selects a route by itself (a cloud key without its CLAUDE_CODE_USE_* switch does not)."""
    defined_at: tuple[str, ...] = ()
    """Shell profile / .env lines that set the variable (``~/.zshrc:12``)."""


CREDENTIAL_HEADERS = {"x-api-key": "an API key", "authorization": "a bearer token"}
"""Headers that carry a credential; in ANTHROPIC_CUSTOM_HEADERS the CLI sends them *besides* its own."""


@dataclass(frozen=True)
class HeaderCredential:
    """A credential header in ``ANTHROPIC_CUSTOM_HEADERS``. The real CLI (2.1.328) sends it on every
    request next to its own credential (a subscription's ``Authorization: Bearer``) and still reports
    ``apiKeySource: none``: neither it nor this doctor can tell which one Anthropic bills."""

    header: str
    source: Source
    plain: bool
    ours: bool
    defined_at: tuple[str, ...] = ()

    def describe(self) -> str:
        where = "" if self.source.describe() == "shell environment" else f" in {self.source.describe()}"
        return f"{CREDENTIAL_HEADERS[self.header.lower()]} ({self.header}) in ANTHROPIC_CUSTOM_HEADERS{where}"


def credential_headers(value: str) -> list[str]:
    """The credential headers named in an ``ANTHROPIC_CUSTOM_HEADERS`` value (``Name: value`` lines)."""
    names = [line.split(":", 1)[0].strip() for line in value.splitlines() if ":" in line]
    return [name for name in names if name.lower() in CREDENTIAL_HEADERS]


@dataclass(frozen=True)
class Endpoint:
    name: str
    display: str
    source: Source


@dataclass(frozen=True)
class Login:
    """Metadata of the stored `/login` (never the tokens)."""

    source: Source
    plan: str | None
    scopes: tuple[str, ...]
    expires_at: dt.datetime | None
    refresh_expires_at: dt.datetime | None
    has_refresh_token: bool
    mode: int | None
    owner_uid: int | None
    error: str | None = None


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"unreadable: {exc.strerror}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def login_from_blob(
    blob: Mapping[str, Any], source: Source, *, mode: int | None = None, owner_uid: int | None = None
) -> Login:
    oauth = blob.get("claudeAiOauth")
    if not isinstance(oauth, dict):
        return Login(source, None, (), None, None, False, mode, owner_uid, error="no claudeAiOauth entry")

    def when(ms: Any) -> dt.datetime | None:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if isinstance(ms, (int, float)) and ms > 0 else None

    scopes = oauth.get("scopes")
    plan = oauth.get("subscriptionType")
    return Login(
        source=source,
        plan=str(plan) if plan else None,
        scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
        expires_at=when(oauth.get("expiresAt")),
        refresh_expires_at=when(oauth.get("refreshTokenExpiresAt")),
        has_refresh_token=bool(oauth.get("refreshToken")),
        mode=mode,
        owner_uid=owner_uid,
    )


def find_definitions(names: set[str], files: list[Path], home: Path) -> dict[str, list[str]]:
    """``name -> ["~/.zshrc:12", ...]`` for lines that set one of ``names`` (sh, zsh, fish, .env)."""
    if not names:
        return {}
    pattern = re.compile(
        r"^\s*(?:export\s+|set\s+-[a-zA-Z]*x[a-zA-Z]*\s+|setenv\s+|declare\s+-x\s+)?("
        + "|".join(map(re.escape, sorted(names)))
        + r")(?:\s*=|\s+\S)"
    )
    found: dict[str, list[str]] = {}
    for path in files:
        try:
            if not path.is_file() or path.stat().st_size > 1_000_000:
                continue
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            match = pattern.match(line)
            if match:
                found.setdefault(match.group(1), []).append(f"{short_path(path, home)}:{number}")
    return found


class Discovery:
    def __init__(
        self,
        env: Mapping[str, str],
        *,
        home: Path,
        cwd: Path,
        managed: tuple[Path, ...],
        keychain_login: Login | None = None,
        allow_api_billing: bool = False,
    ) -> None:
        self.env = env
        self.allow_api_billing = allow_api_billing
        self.home = home
        self.cwd = cwd
        self.config_dir = paths.claude_config_dir({**env, "HOME": str(home)})
        self.settings = self._settings(managed)
        self.login = self._login() or keychain_login
        self.credentials: list[Credential] = []
        self.endpoints: list[Endpoint] = []
        self.header_credentials: list[HeaderCredential] = []
        self._scan_variables()
        self._scan_helper()
        self._scan_managed_key()
        if self.login is not None and self.login.error is None:
            self.credentials.append(
                Credential(
                    Rung.LOGIN, "/login", self._login_display(self.login), self.login.source, plain=True, ours=True
                )
            )
        self.credentials.sort(key=lambda c: (c.rung, not c.active))
        self.project_commands = [
            f"{short_path(f.path, self.home)}: {key}"
            for f in self.settings
            if f.scope in ("project", "local")
            for key in COMMAND_SETTINGS
            if f.data.get(key)
        ]
        """Commands this directory's own settings would make the CLI run (an untrusted clone's)."""

    # -- settings files ----------------------------------------------------------------------
    def _settings(self, managed: tuple[Path, ...]) -> list[SettingsFile]:
        candidates: list[tuple[str, Path]] = [
            ("user", self.config_dir / "settings.json"),
            ("project", self.cwd / ".claude" / "settings.json"),
            ("local", self.cwd / ".claude" / "settings.local.json"),
        ]
        for directory in managed:
            candidates.append(("managed", directory / "managed-settings.json"))
            fragments = directory / "managed-settings.d"
            if fragments.is_dir():
                candidates += [("managed", p) for p in sorted(fragments.glob("*.json"))]
        files = []
        for scope, path in candidates:
            data, error = _read_json(path)
            if data is not None or error is not None:
                files.append(SettingsFile(scope, path, data or {}, error))
        return files

    def settings_source(self, file: SettingsFile, key: str, what: str) -> Source:
        return Source(
            "settings",
            f"{short_path(file.path, self.home)} ({file.scope} settings, {what})",
            path=file.path,
            line=file.line_of(key),
            scope=file.scope,
        )

    # -- variables ---------------------------------------------------------------------------
    def _effective(self, ours: bool) -> dict[str, tuple[str, Source]]:
        """name -> (value, source) after the settings env blocks, for one of the two views."""
        values: dict[str, tuple[str, Source]] = {}
        keep = routes.API_BILLING if self.allow_api_billing else frozenset()
        shell_env = routes.scrub(self.env, keep=keep) if ours else dict(self.env)
        for name, value in shell_env.items():
            if name in routes.BY_NAME:
                values[name] = (value, Source("env", "shell environment"))
        for scope in SCOPES:
            if ours and scope != "managed":
                continue  # llm-claude-max runs the CLI with --setting-sources "" (managed still applies)
            for file in self.settings:
                block = file.data.get("env") if file.scope == scope else None
                if not isinstance(block, dict):
                    continue
                for name, value in block.items():
                    if name in routes.BY_NAME and isinstance(value, (str, int, float, bool)):
                        values[name] = (str(value), self.settings_source(file, name, "env block"))
        return {name: pair for name, pair in values.items() if pair[0] != ""}

    def _scan_variables(self) -> None:
        plain = self._effective(ours=False)
        self.bare = plain.get("CLAUDE_CODE_SIMPLE", ("",))[0].strip().lower() not in OFF
        """Bare mode in plain `claude -p`: the login and setup tokens are never read."""
        ours = self._effective(ours=True)
        defined = find_definitions(set(routes.BY_NAME), self.profile_files(), self.home)
        self.definitions = defined
        for variable in routes.VARIABLES:
            rows: list[tuple[str, Source, bool, bool]] = []
            p, o = plain.get(variable.name), ours.get(variable.name)
            if p and o and p[1] == o[1]:
                rows.append((p[0], p[1], True, True))
            else:
                if p:
                    rows.append((p[0], p[1], True, False))
                if o:
                    rows.append((o[0], o[1], False, True))
            for value, source, in_plain, in_ours in rows:
                display = self._display(variable, value)
                where = tuple(defined.get(variable.name, ())) if source.kind == "env" else ()
                if variable.kind is Kind.ENDPOINT or variable.kind is Kind.NETWORK:
                    self.endpoints.append(Endpoint(variable.name, display, source))
                    if variable.name == "ANTHROPIC_CUSTOM_HEADERS":
                        self.header_credentials += [
                            HeaderCredential(header, source, in_plain, in_ours, where)
                            for header in credential_headers(value)
                        ]
                elif variable.kind in routes.KIND_RUNG:
                    active = (
                        variable.kind not in (Kind.CLOUD, Kind.PROFILE)
                        or variable.name in ACTIVE_CLOUD_SWITCHES | ACTIVE_PROFILE
                    )
                    if variable.name in ACTIVE_CLOUD_SWITCHES and value.strip().lower() in OFF:
                        active = False
                    self.credentials.append(
                        Credential(
                            routes.KIND_RUNG[variable.kind],
                            variable.name,
                            display,
                            source,
                            in_plain,
                            in_ours,
                            active,
                            where,
                        )
                    )

    @staticmethod
    def _display(variable: routes.RouteVariable, value: str) -> str:
        if variable.secret:
            return mask(value)
        if variable.kind in (Kind.ENDPOINT, Kind.NETWORK):
            return mask_url(value)
        return mask_embedded(value) if len(value) <= 80 else mask_embedded(value[:77]) + "..."

    def profile_files(self) -> list[Path]:
        files = [self.home / name for name in PROFILE_FILES]
        files += [Path(p) for p in SYSTEM_PROFILE_FILES]
        profile_d = Path("/etc/profile.d")
        if profile_d.is_dir():
            files += sorted(profile_d.glob("*.sh"))
        directory = self.cwd
        while True:
            files += [directory / name for name in DOTENV_NAMES]
            if directory in (self.home, directory.parent):
                break
            directory = directory.parent
        return files

    # -- apiKeyHelper, Console key, login ------------------------------------------------------
    def _scan_helper(self) -> None:
        winner: SettingsFile | None = None
        for scope in SCOPES:
            for file in self.settings:
                if file.scope == scope and isinstance(file.data.get("apiKeyHelper"), str) and file.data["apiKeyHelper"]:
                    winner = file
        if winner is not None:
            # Only the program: the rest of a helper command can hold a key in any form.
            program = str(winner.data["apiKeyHelper"]).split()[0] if str(winner.data["apiKeyHelper"]).split() else "?"
            self.credentials.append(
                Credential(
                    Rung.API_KEY_HELPER,
                    "apiKeyHelper",
                    f"runs `{mask_embedded(program)[:60]} …`",
                    self.settings_source(winner, "apiKeyHelper", "apiKeyHelper"),
                    plain=True,
                    ours=winner.scope == "managed",
                )
            )

    def _scan_managed_key(self) -> None:
        config_json = paths.claude_json({**self.env, "HOME": str(self.home)})
        data, _ = _read_json(config_json)
        key = data.get("primaryApiKey") if data else None
        if isinstance(key, str) and key:
            self.credentials.append(
                Credential(
                    Rung.MANAGED_KEY,
                    "primaryApiKey",
                    mask(key),
                    Source("file", f"{short_path(config_json, self.home)} (Console login)", path=config_json),
                    plain=True,
                    ours=True,
                )
            )

    def _login(self) -> Login | None:
        path = self.config_dir / ".credentials.json"
        source = Source("file", short_path(path, self.home), path=path)
        data, error = _read_json(path)
        if data is None and error is None:
            return None
        mode: int | None = None
        owner: int | None = None
        try:
            st = path.stat()
            mode, owner = st.st_mode & 0o777, st.st_uid
        except OSError:
            pass
        if data is None:
            return Login(source, None, (), None, None, False, mode, owner, error=error)
        return login_from_blob(data, source, mode=mode, owner_uid=owner)

    @staticmethod
    def _login_display(login: Login) -> str:
        return f"{guard.plan_name(login.plan) or 'claude.ai'} login"

    # -- verdicts --------------------------------------------------------------------------------
    def winner(self, *, ours: bool) -> Credential | None:
        """The credential the CLI uses in `claude -p` (PRINT_MODE_ORDER), in one of the two views."""
        visible = [c for c in self.credentials if c.active and (c.ours if ours else c.plain)]
        if not ours and self.bare:
            visible = [c for c in visible if c.rung not in (Rung.LOGIN, Rung.OAUTH_TOKEN)]
        for rung in routes.PRINT_MODE_ORDER:
            for credential in visible:
                if credential.rung is rung:
                    return credential
        return None

    def has_subscription(self, *, ours: bool = False) -> bool:
        return any(c.rung in (Rung.LOGIN, Rung.OAUTH_TOKEN) and (c.ours if ours else c.plain) for c in self.credentials)


RUNG_ROUTES = {
    Rung.CLOUD: guard.Route.CLOUD,
    Rung.AUTH_TOKEN: guard.Route.GATEWAY,
    Rung.API_KEY: guard.Route.API_KEY,
    Rung.API_KEY_HELPER: guard.Route.API_KEY_HELPER,
    Rung.MANAGED_KEY: guard.Route.API_KEY,
    Rung.OAUTH_TOKEN: guard.Route.SUBSCRIPTION,
    Rung.PROFILE: guard.Route.UNKNOWN,
    Rung.LOGIN: guard.Route.SUBSCRIPTION,
}


def route_of(credential: Credential | None, login: Login | None) -> guard.RouteReport:
    """The route a winning credential means, in the guard's terms (for comparison with the CLI's answer)."""
    if credential is None:
        return guard.RouteReport(guard.Route.NONE, "none")
    route = RUNG_ROUTES[credential.rung]
    if credential.rung is Rung.LOGIN:
        return guard.RouteReport(route, "claude.ai login", plan=guard.plan_name(login.plan if login else None))
    if credential.rung is Rung.CLOUD:
        provider = credential.name.removeprefix("CLAUDE_CODE_USE_").lower()
        return guard.RouteReport(route, credential.name, provider=provider)
    where = credential.source.describe()
    name = credential.name if where == "shell environment" else f"{credential.name} in {where}"
    return guard.RouteReport(route, name)
