"""The one list of environment variables that choose, redirect or carry Claude Code credentials.

Both the runner (which removes them from the child environment) and the doctor (which shows them,
masked, in precedence order) read this module; nothing else may keep its own copy.

Sources: Claude Code's documented authentication precedence and env-var reference, and the variables
the 2.1.328 binary itself treats as credentials (``shared/reference/credentials-and-tos.md`` §1.2 and
§1.5, ``claude-cli.md`` §3).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """What a variable does to the route a prompt takes."""

    CLOUD = "cloud provider"  # Bedrock/Vertex/Foundry/...: billed by the cloud account
    GATEWAY_TOKEN = "gateway token"  # Authorization: Bearer to a gateway or the API
    API_KEY = "API key"  # x-api-key: pay-as-you-go Console/API billing
    SUBSCRIPTION = "subscription token"  # a claude.ai subscription credential (setup-token)
    PROFILE = "profile/federation"  # Anthropic profile or workload identity federation
    ENDPOINT = "endpoint"  # where requests (and the credential) are sent
    MODE = "mode"  # changes how the CLI authenticates or identifies itself
    LOGIN = "login provisioning"  # only used by `claude auth login`
    LOCATOR = "locator"  # where the stored login lives
    NETWORK = "network"  # the user's proxy settings


@dataclass(frozen=True)
class RouteVariable:
    name: str
    kind: Kind
    secret: bool
    removed: bool
    """True when the runner removes it from the child environment."""
    note: str


def _v(name: str, kind: Kind, note: str, *, secret: bool = False, removed: bool = True) -> RouteVariable:
    return RouteVariable(name, kind, secret, removed, note)


CLOUD_PROVIDERS = ("BEDROCK", "VERTEX", "FOUNDRY", "MANTLE", "ANTHROPIC_AWS", "ANTHROPIC_GOOGLE_CLOUD")
"""Providers with a ``CLAUDE_CODE_USE_<PROVIDER>`` switch."""

VARIABLES: tuple[RouteVariable, ...] = (
    # -- rung 1: cloud providers ------------------------------------------------------------
    *(_v(f"CLAUDE_CODE_USE_{p}", Kind.CLOUD, "switches the CLI to a cloud provider") for p in CLOUD_PROVIDERS),
    *(_v(f"CLAUDE_CODE_SKIP_{p}_AUTH", Kind.CLOUD, "a gateway signs cloud requests") for p in CLOUD_PROVIDERS),
    _v("CLAUDE_CODE_PROVIDER_MANAGED_BY_HOST", Kind.CLOUD, "a host application chooses the provider"),
    _v("AWS_BEARER_TOKEN_BEDROCK", Kind.CLOUD, "Bedrock API key", secret=True),
    _v("ANTHROPIC_FOUNDRY_API_KEY", Kind.CLOUD, "Microsoft Foundry key", secret=True),
    _v("ANTHROPIC_FOUNDRY_AUTH_TOKEN", Kind.CLOUD, "Microsoft Foundry token", secret=True),
    _v("ANTHROPIC_FOUNDRY_RESOURCE", Kind.CLOUD, "Microsoft Foundry resource"),
    _v("ANTHROPIC_AWS_API_KEY", Kind.CLOUD, "Claude on AWS key", secret=True),
    _v("ANTHROPIC_AWS_WORKSPACE_ID", Kind.CLOUD, "Claude on AWS workspace"),
    _v("ANTHROPIC_VERTEX_PROJECT_ID", Kind.CLOUD, "Vertex AI project"),
    # -- rung 2: gateway / bearer token -------------------------------------------------------
    _v(
        "ANTHROPIC_AUTH_TOKEN",
        Kind.GATEWAY_TOKEN,
        "sent as Authorization: Bearer; beats a subscription login",
        secret=True,
    ),
    _v("CLAUDE_CODE_GATEWAY_TOKEN_FILE_DESCRIPTOR", Kind.GATEWAY_TOKEN, "gateway token read from a file descriptor"),
    # -- rung 3: API key ----------------------------------------------------------------------
    _v(
        "ANTHROPIC_API_KEY",
        Kind.API_KEY,
        "sent as x-api-key; in `claude -p` it silently beats a subscription login",
        secret=True,
    ),
    _v("CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR", Kind.API_KEY, "API key read from a file descriptor"),
    _v("CLAUDE_CODE_API_KEY_HELPER_TTL_MS", Kind.MODE, "refresh interval of an apiKeyHelper script"),
    # -- rung 6: subscription token (kept: it is the subscription) ---------------------------
    _v(
        "CLAUDE_CODE_OAUTH_TOKEN",
        Kind.SUBSCRIPTION,
        "long-lived subscription token from `claude setup-token`",
        secret=True,
        removed=False,
    ),
    _v(
        "CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR",
        Kind.SUBSCRIPTION,
        "subscription token read from a file descriptor",
        removed=False,
    ),
    # -- rung 7: profiles and federation ------------------------------------------------------
    _v("ANTHROPIC_PROFILE", Kind.PROFILE, "selects an Anthropic profile"),
    _v("ANTHROPIC_FEDERATION_RULE_ID", Kind.PROFILE, "workload identity federation"),
    _v("ANTHROPIC_ORGANIZATION_ID", Kind.PROFILE, "workload identity federation"),
    _v("ANTHROPIC_WORKSPACE_ID", Kind.PROFILE, "workload identity federation"),
    _v("ANTHROPIC_IDENTITY_TOKEN_FILE", Kind.PROFILE, "workload identity federation token file"),
    # -- endpoint (not a rung: redirects whichever credential wins) ---------------------------
    _v("ANTHROPIC_BASE_URL", Kind.ENDPOINT, "every request, with its credential, goes to this URL"),
    _v("ANTHROPIC_BEDROCK_BASE_URL", Kind.ENDPOINT, "Bedrock endpoint"),
    _v("ANTHROPIC_BEDROCK_MANTLE_BASE_URL", Kind.ENDPOINT, "Bedrock Mantle endpoint"),
    _v("ANTHROPIC_VERTEX_BASE_URL", Kind.ENDPOINT, "Vertex endpoint"),
    _v("ANTHROPIC_FOUNDRY_BASE_URL", Kind.ENDPOINT, "Foundry endpoint"),
    _v("ANTHROPIC_AWS_BASE_URL", Kind.ENDPOINT, "Claude on AWS endpoint"),
    _v("ANTHROPIC_GOOGLE_CLOUD_BASE_URL", Kind.ENDPOINT, "Google Cloud endpoint"),
    _v("CLAUDE_CODE_API_BASE_URL", Kind.ENDPOINT, "alternative API endpoint"),
    _v("ANTHROPIC_UNIX_SOCKET", Kind.ENDPOINT, "sends API requests through a Unix socket"),
    _v("ANTHROPIC_CUSTOM_HEADERS", Kind.ENDPOINT, "extra headers on every request", secret=True),
    # -- modes that change authentication or identity -----------------------------------------
    _v("CLAUDE_CODE_SIMPLE", Kind.MODE, "bare mode: OAuth is never read, only API keys"),
    _v("CLAUDE_CODE_ENTRYPOINT", Kind.MODE, "who launched the CLI; the CLI must report its own"),
    _v("CLAUDE_BG_AUTH_SNAPSHOT_PATH", Kind.MODE, "credential snapshot of a background session"),
    _v("CLAUDE_CODE_HOST_CREDS_FILE", Kind.MODE, "credentials handed over by a host application"),
    _v("CLAUDE_CODE_SESSION_ACCESS_TOKEN", Kind.MODE, "hosted-session access token", secret=True),
    # -- login provisioning (used by `claude auth login`, never by a prompt) ------------------
    _v("CLAUDE_CODE_OAUTH_REFRESH_TOKEN", Kind.LOGIN, "refresh token for `claude auth login`", secret=True),
    _v("CLAUDE_CODE_OAUTH_SCOPES", Kind.LOGIN, "scopes for `claude auth login`"),
    _v("CLAUDE_CODE_OAUTH_CLIENT_ID", Kind.LOGIN, "OAuth client id override"),
    # -- kept: where the login lives, and the user's network ----------------------------------
    _v("CLAUDE_CONFIG_DIR", Kind.LOCATOR, "where the CLI keeps its login and transcripts", removed=False),
    *(
        _v(n, Kind.NETWORK, "proxy", removed=False)
        for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")
    ),
    _v("CLAUDE_CODE_CLIENT_CERT", Kind.NETWORK, "mTLS client certificate", removed=False),
)

BY_NAME: Mapping[str, RouteVariable] = {v.name: v for v in VARIABLES}

REMOVED: frozenset[str] = frozenset(v.name for v in VARIABLES if v.removed)
"""Variables the runner never passes to the CLI (unless API billing is explicitly enabled)."""

API_BILLING: frozenset[str] = frozenset(v.name for v in VARIABLES if v.kind is Kind.API_KEY)
"""Variables passed through only when the user has opted in to API-key billing."""

FILE_DESCRIPTORS: tuple[str, ...] = tuple(v.name for v in VARIABLES if v.name.endswith("_FILE_DESCRIPTOR"))
"""Variables naming an inherited file descriptor the CLI reads a credential from (it must stay open in
the child when the variable is passed on)."""


class Rung(enum.IntEnum):
    """Claude Code's credential precedence, highest first (the documented order, ``authentication.md``)."""

    CLOUD = 1  # CLAUDE_CODE_USE_BEDROCK/VERTEX/FOUNDRY/...
    AUTH_TOKEN = 2  # ANTHROPIC_AUTH_TOKEN
    API_KEY = 3  # ANTHROPIC_API_KEY
    API_KEY_HELPER = 4  # apiKeyHelper setting
    MANAGED_KEY = 5  # a Console API key stored by `claude auth login --console` (.claude.json primaryApiKey)
    OAUTH_TOKEN = 6  # CLAUDE_CODE_OAUTH_TOKEN (setup-token)
    PROFILE = 7  # ANTHROPIC_PROFILE / federation
    LOGIN = 8  # /login: claude.ai subscription OAuth (.credentials.json or the macOS Keychain)

    @property
    def title(self) -> str:
        return RUNG_TITLES[self]

    @property
    def paid(self) -> bool:
        """Billed per token (or by a cloud account) rather than to a subscription."""
        return self not in (Rung.OAUTH_TOKEN, Rung.LOGIN)


RUNG_TITLES = {
    Rung.CLOUD: "cloud provider",
    Rung.AUTH_TOKEN: "ANTHROPIC_AUTH_TOKEN",
    Rung.API_KEY: "ANTHROPIC_API_KEY",
    Rung.API_KEY_HELPER: "apiKeyHelper",
    Rung.MANAGED_KEY: "/login managed key",
    Rung.OAUTH_TOKEN: "CLAUDE_CODE_OAUTH_TOKEN",
    Rung.PROFILE: "profile / federation",
    Rung.LOGIN: "/login (claude.ai)",
}

KIND_RUNG: Mapping[Kind, Rung] = {
    Kind.CLOUD: Rung.CLOUD,
    Kind.GATEWAY_TOKEN: Rung.AUTH_TOKEN,
    Kind.API_KEY: Rung.API_KEY,
    Kind.SUBSCRIPTION: Rung.OAUTH_TOKEN,
    Kind.PROFILE: Rung.PROFILE,
}

PRINT_MODE_ORDER: tuple[Rung, ...] = (
    Rung.CLOUD,
    Rung.API_KEY,
    Rung.AUTH_TOKEN,
    Rung.API_KEY_HELPER,
    Rung.MANAGED_KEY,
    Rung.OAUTH_TOKEN,
    Rung.PROFILE,
    Rung.LOGIN,
)
"""Who wins in `claude -p`, as observed on the CLI 2.1.328 (``claude-cli.md`` §3.2): the documented
order, except that ``ANTHROPIC_API_KEY`` is used whenever present (with ``ANTHROPIC_AUTH_TOKEN`` also
set, both headers are sent and ``apiKeySource`` names the API key)."""


def scrub(env: Mapping[str, str], *, keep: frozenset[str] = frozenset()) -> dict[str, str]:
    """``env`` without the removed variables (except ``keep``)."""
    return {name: value for name, value in env.items() if name not in REMOVED or name in keep}
