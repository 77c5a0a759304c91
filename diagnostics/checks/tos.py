"""Which Terms-of-Service risk tier this setup is in, each line with its official source.

The tiers are this project's reading of Anthropic's published terms (``docs/doctor.md``); the quoted
sources are Anthropic's.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from llm_claude_max import invocation
from llm_claude_max.server import records

from ..context import Context
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl

GROUP = "Terms of Service"
LEGAL = "https://code.claude.com/docs/en/legal-and-compliance"
AUTHENTICATION = "https://code.claude.com/docs/en/authentication"
HEADLESS = "https://code.claude.com/docs/en/headless"
CONSUMER_TERMS = "https://www.anthropic.com/legal/consumer-terms"

# Servers that use a Claude OAuth token against the API themselves (not through the CLI).
RAW_OAUTH_FILES = (
    (".claude-max-proxy.json", "a raw-OAuth proxy configuration"),
    (".dario/credentials.json", "dario (raw-OAuth proxy) credentials"),
    (".cli-proxy-api", "CLIProxyAPI (raw-OAuth proxy) logins"),
)
RAW_OAUTH_VARIABLES = ("CLAUDE_ACCESS_TOKEN", "CLAUDE_REFRESH_TOKEN")
RAW_OAUTH_PORTS = ((3456, "dario"), (8317, "CLIProxyAPI"), (42069, "claude-code-proxy"))


@hookimpl
def doctor_checks() -> list[Check]:
    return [
        Check("tos.tier", "Risk tier of this setup", GROUP, tier, order=10),
        Check("tos.raw-oauth", "Raw-OAuth proxies", GROUP, raw_oauth, order=20),
    ]


def tier(ctx: Context) -> Iterator[Finding]:
    d = ctx.discovery
    ours = d.winner(ours=True)
    if ours is not None and not ours.rung.paid:
        yield Finding(
            Status.OK,
            "Low risk: llm-claude-max drives your own, unmodified Claude Code CLI with your own login, on this machine",
            detail="Scripted `claude -p` is still automation; "
            "Anthropic's usage limits assume ordinary, individual use, "
            f"and its terms have changed several times (`{invocation.command('doctor --verbose tos')}` "
            "lists the sources).",
            links=(LEGAL, AUTHENTICATION),
        )
    plain = d.winner(ours=False)
    if plain is not None and plain.rung.paid:
        yield Finding(
            Status.INFO,
            "ToS-clean, pay-as-you-go: plain `claude -p` here uses an API credential, the documented way to automate",
            links=(LEGAL,),
        )
    if d.bare:
        yield Finding(
            Status.INFO,
            "CLAUDE_CODE_SIMPLE (bare mode) is set: plain `claude -p` never reads your login, "
            "so it is API-billed by construction",
            links=(HEADLESS,),
        )
    for server in records.running(ctx.env):
        if not server.get("public"):
            continue
        yield Finding(
            Status.FAIL,
            f"`{invocation.command('serve')}` listens beyond this machine ({server.get('host')}:{server.get('port')})",
            detail="Serving other people through your subscription is prohibited: Anthropic does not permit routing "
            "requests through Free, Pro or Max plan credentials on behalf of others.",
            fix="restart it without --host (it binds 127.0.0.1 by default)",
            links=(LEGAL,),
        )


def raw_oauth(ctx: Context) -> Iterator[Finding]:
    found = False
    for relative, what in RAW_OAUTH_FILES:
        path = ctx.home / relative
        if path.exists() and (path.is_file() or any(p.name.startswith("claude") for p in path.glob("*"))):
            found = True
            yield _prohibited(f"{what} exists: {path}", source=f"file:{path}")
    for name in RAW_OAUTH_VARIABLES:
        if ctx.env.get(name):
            found = True
            yield _prohibited(f"{name} is set: a tool here uses a Claude OAuth token directly", source=f"env:{name}")
    if ctx.options.offline:
        yield Finding(Status.SKIP, "Loopback ports not probed (--offline)")
    else:
        for port, name in RAW_OAUTH_PORTS:
            if _identify(port, name):
                found = True
                yield _prohibited(f"{name} answers on 127.0.0.1:{port}", source=f"net:127.0.0.1:{port}")
    if not found:
        yield Finding(Status.OK, "No raw-OAuth proxy found (they use your login token outside Claude Code)")


def _prohibited(summary: str, *, source: str) -> Finding:
    return Finding(
        Status.FAIL,
        "High risk: " + summary,
        detail="Using a Claude OAuth token outside Claude Code, or spoofing Claude Code, is prohibited and has led to "
        "disabled accounts. llm-claude-max never does this; such a tool on the same account puts it at risk.",
        source=source,
        links=(LEGAL, CONSUMER_TERMS),
    )


def _identify(port: int, name: str) -> bool:
    """True when something on 127.0.0.1:port answers like the named proxy (a port alone proves nothing)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            pass
    except OSError:
        return False
    import httpx

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0, trust_env=False) as client:
            if name == "dario":
                body = client.get("/health").json()
                return isinstance(body, dict) and "oauth" in body
            if name == "CLIProxyAPI":
                body = client.get("/").json()
                return isinstance(body, dict) and "CLI Proxy API" in str(body.get("message", ""))
            response = client.get("/health")
            return "claude" in response.text.lower() and response.status_code < 500
    except (httpx.HTTPError, ValueError):
        return False
