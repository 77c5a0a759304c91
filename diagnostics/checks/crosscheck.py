"""Ask the CLI itself (``initialize`` and ``claude auth status``; no API call) and compare its
answers with the doctor's own reading of your environment and files. When they disagree, the CLI is
right: the finding says so."""

from __future__ import annotations

from collections.abc import Iterator

from llm_claude_max import guard, invocation

from ..context import Context, Probe
from ..discovery import route_of
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl

GROUP = "Cross-check with the CLI"


@hookimpl
def doctor_checks() -> list[Check]:
    return [
        Check("crosscheck.plain", "The CLI's answer for plain claude -p", GROUP, plain, order=10, needs_cli=True),
        Check("crosscheck.ours", "The CLI's answer under llm-claude-max", GROUP, ours, order=20, needs_cli=True),
        Check("crosscheck.auth-status", "claude auth status", GROUP, auth_status, order=30, needs_cli=True),
    ]


def _compare(probe: Probe, expected: guard.RouteReport, who: str, left_out: list[str]) -> Iterator[Finding]:
    if not probe.complete:
        yield Finding(
            Status.INFO,
            "This directory's own settings were left out of the CLI's answer: they make it run commands",
            detail="\n".join(left_out),
            fix=f"{invocation.command('doctor --trust-project')}    # if you trust this directory",
        )
    if probe.route is None:
        yield Finding(Status.WARN, f"Could not ask the CLI about {who}: {probe.error}")
        return
    said = probe.route.describe()
    data = {"cli_route": probe.route.route.value, "doctor_route": expected.route.value}
    if probe.route.conflict:
        conflict = probe.route.conflict
        data["auth_conflict"] = f"{conflict.get('token_source')} vs {conflict.get('api_key_source')}"
    if probe.route.route is expected.route:
        yield Finding(Status.OK, f"The CLI confirms: {who} uses {said}", source="cli:initialize", data=data)
    elif not probe.complete:
        yield Finding(
            Status.INFO,
            f"Without this directory's settings, the CLI says {who} uses {said}",
            source="cli:initialize",
            data=data,
        )
    else:
        yield Finding(
            Status.WARN,
            f"The CLI says {who} uses {said}; the doctor's reading of your setup said {expected.describe()}",
            detail="The CLI's own answer is what counts. A source the doctor cannot read (managed settings, a "
            "credential helper, a newer CLI) is likely involved.",
            source="cli:initialize",
            data=data,
        )


def plain(ctx: Context) -> Iterator[Finding]:
    d = ctx.discovery
    yield from _compare(
        ctx.plain_probe, route_of(d.winner(ours=False), d.login), "plain `claude -p` here", d.project_commands
    )
    for header in (h for h in d.header_credentials if h.plain):
        yield Finding(
            Status.WARN,
            f"The CLI's answer leaves out {header.describe()}, which it sends on every request as well",
            detail="See “Who is billed”: which credential Anthropic bills then cannot be known.",
            source=f"{header.source.kind}:{header.source.describe()}",
        )


def ours(ctx: Context) -> Iterator[Finding]:
    d = ctx.discovery
    yield from _compare(ctx.our_probe, route_of(d.winner(ours=True), d.login), "llm-claude-max", [])


def auth_status(ctx: Context) -> Iterator[Finding]:
    status = ctx.auth_status
    if isinstance(status, str):
        yield Finding(Status.WARN, status)
        return
    # Only these fields: the rest (email, organisation) is personal and not needed here.
    fields = {k: status.get(k) for k in ("loggedIn", "authMethod", "apiKeySource", "subscriptionType", "apiProvider")}
    shown = ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    report = guard.route_from_auth_status(status, oauth_token_set=bool(ctx.env.get("CLAUDE_CODE_OAUTH_TOKEN")))
    probe = ctx.plain_probe
    if probe.route is not None and probe.route.route is not report.route:
        yield Finding(
            Status.INFO,
            f"`claude auth status` reads {shown}, which differs from the CLI's initialize answer "
            f"({probe.route.describe()})",
            detail="`auth status` is known to disagree with the request actually sent when several credentials "
            "are set; the initialize answer above is the one the request follows.",
            source="cli:auth status",
            data={k: v if isinstance(v, (str, bool)) else None for k, v in fields.items()},
        )
    else:
        yield Finding(Status.OK, f"`claude auth status`: {shown}", source="cli:auth status")
