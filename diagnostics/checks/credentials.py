"""Every credential the CLI could use, in its order of precedence, shown like `aws configure list`."""

from __future__ import annotations

from collections.abc import Iterator

from llm_claude_max import config, routes

from ..context import Context
from ..discovery import Credential, Discovery
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl
from ..masking import mask_url

GROUP = "Credentials"
PRECEDENCE_LINK = "https://code.claude.com/docs/en/authentication"


@hookimpl
def doctor_checks() -> list[Check]:
    return [
        Check("credentials.precedence", "Credentials in order of precedence", GROUP, precedence, order=10),
        Check("credentials.endpoint", "Where requests are sent", GROUP, endpoint, order=20),
        Check("credentials.settings", "Settings files", GROUP, settings_files, order=30),
    ]


def _column(discovery: Discovery, credential: Credential, *, ours: bool) -> str:
    if not (credential.ours if ours else credential.plain):
        if ours and credential.source.kind == "settings":
            return "not loaded"
        return "removed" if ours else "-"
    if not credential.active:
        return "inactive"
    if not ours and discovery.bare and credential.rung in (routes.Rung.LOGIN, routes.Rung.OAUTH_TOKEN):
        return "bare mode"
    return "WINS" if discovery.winner(ours=ours) == credential else "shadowed"


def precedence(ctx: Context) -> Iterator[Finding]:
    discovery = ctx.discovery
    rows: list[tuple[str, ...]] = [("credential", "value", "from", "claude -p", "llm-claude-max")]
    for rung in routes.Rung:
        present = [c for c in discovery.credentials if c.rung is rung]
        if not present:
            rows.append((rung.title, "<not set>", "", "", ""))
        for credential in present:
            origin = credential.source.describe()
            if credential.defined_at:
                origin += f" (set in {', '.join(credential.defined_at)})"
            name = rung.title if credential.name in rung.title else f"{rung.title}: {credential.name}"
            rows.append(
                (
                    name,
                    credential.display,
                    origin,
                    _column(discovery, credential, ours=False),
                    _column(discovery, credential, ours=True),
                )
            )
    yield Finding(
        Status.INFO,
        "Credentials, highest precedence first (WINS = used by that route)",
        table=tuple(rows),
        links=(PRECEDENCE_LINK,),
    )
    dormant = {
        name: where
        for name, where in discovery.definitions.items()
        if not any(c.name == name for c in discovery.credentials)
        and not any(e.name == name for e in discovery.endpoints)
    }
    for name, where in sorted(dormant.items()):
        yield Finding(
            Status.INFO,
            f"{name} is not set in this shell, but {', '.join(where)} would set it in others",
            detail="Shells, cron jobs or IDE terminals that read that file would bill it in plain `claude -p`.",
            source=f"file:{where[0]}",
        )


def endpoint(ctx: Context) -> Iterator[Finding]:
    discovery = ctx.discovery
    base = next((e for e in discovery.endpoints if e.name == "ANTHROPIC_BASE_URL"), None)
    if base is not None:
        yield Finding(
            Status.WARN,
            f"plain `claude -p` sends every request, with its credential, to {base.display}",
            detail="ANTHROPIC_BASE_URL is not a credential but redirects whichever one wins. "
            "llm-claude-max removes it.",
            source=f"{base.source.kind}:{base.source.describe()}",
            fix="unset ANTHROPIC_BASE_URL" if base.source.kind == "env" else None,
        )
    others = [
        e
        for e in discovery.endpoints
        if e.name != "ANTHROPIC_BASE_URL" and routes.BY_NAME[e.name].kind is routes.Kind.ENDPOINT
    ]
    for e in others:
        yield Finding(
            Status.WARN,
            f"{e.name} is set to {e.display} (removed by llm-claude-max)",
            source=f"{e.source.kind}:{e.source.describe()}",
        )
    if ctx.settings.base_url:
        yield Finding(
            Status.WARN,
            f"llm-claude-max sends your subscription token to {mask_url(ctx.settings.base_url)} ({config.BASE_URL})",
            detail="Only use it for a gateway you run and trust.",
            source=f"env:{config.BASE_URL}",
        )
    proxies = [e for e in discovery.endpoints if routes.BY_NAME[e.name].kind is routes.Kind.NETWORK]
    for p in proxies:
        yield Finding(
            Status.INFO,
            f"{p.name} = {p.display} (used by both routes)",
            source=f"{p.source.kind}:{p.source.describe()}",
        )
    if base is None and not others and not ctx.settings.base_url:
        yield Finding(Status.OK, "Requests go to Anthropic's API directly (no base URL override)")


def settings_files(ctx: Context) -> Iterator[Finding]:
    files = ctx.discovery.settings
    for file in files:
        if file.error:
            yield Finding(
                Status.WARN,
                f"{file.path} is {file.error}; the CLI silently ignores it in `claude -p`",
                source=f"file:{file.path}",
            )
    readable = [f"{f.path} ({f.scope})" for f in files if not f.error]
    yield Finding(
        Status.INFO,
        f"{len(readable)} settings file(s) read" if readable else "No settings files",
        detail="\n".join(readable) or None,
    )
