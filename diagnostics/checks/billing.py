"""The verdict users came for: who pays for a prompt, in plain `claude -p` and in llm-claude-max."""

from __future__ import annotations

from collections.abc import Iterator

from llm_claude_max import config, guard, invocation
from llm_claude_max.routes import Rung

from ..context import Context
from ..discovery import Credential, Discovery, HeaderCredential, route_of
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl

GROUP = "Billing"
SUPPORT_LINK = "https://support.claude.com/en/articles/12304248-managing-api-key-environment-variables-in-claude-code"
ISSUE_LINK = "https://github.com/anthropics/claude-code/issues/37686"


@hookimpl
def doctor_checks() -> list[Check]:
    return [
        Check("billing.verdict", "Who is billed", GROUP, verdict, order=10),
        Check("billing.paid-usage", "Paid extra usage", GROUP, paid_usage, order=20),
    ]


def fix_for(credential: Credential) -> str:
    """The exact command or edit that takes ``credential`` out of the way."""
    source = credential.source
    if source.kind == "env":
        lines = [f"unset {credential.name}"]
        lines += [f"and delete the line that sets it: {where}" for where in credential.defined_at]
        if not credential.defined_at:
            lines.append("and remove it from wherever your shell loads it (profile, .env, direnv, IDE settings)")
        return "\n".join(lines)
    if source.kind == "settings":
        key = "apiKeyHelper" if credential.rung is Rung.API_KEY_HELPER else credential.name
        if source.scope == "managed":
            return f"set by your organisation's managed settings ({source.describe()}): ask your administrator"
        return f'delete "{key}" from {source.describe()}'
    if credential.rung is Rung.MANAGED_KEY:
        return "claude auth logout    # then run `claude` and /login with your Claude subscription"
    return f"remove {credential.name} ({source.describe()})"


def _data(report: guard.RouteReport, winner: Credential | None) -> dict[str, str | None]:
    return {**{k: v for k, v in report.as_dict().items()}, "credential": winner.name if winner else None}


def verdict(ctx: Context) -> Iterator[Finding]:
    d: Discovery = ctx.discovery
    yield from _plain(ctx, d)
    yield from _ours(ctx, d)


def _cli_answer(ctx: Context, probe_of: str, static: guard.RouteReport) -> guard.RouteReport | None:
    """The CLI's own answer when it differs from the static reading and saw everything that reading did:
    then the CLI's answer is the verdict (the static reading only explains it)."""
    if ctx.options.offline:
        return None
    probe = ctx.plain_probe if probe_of == "plain" else ctx.our_probe
    if probe.route is None or not probe.complete or probe.route.route is static.route:
        return None
    return probe.route


def _by_cli(
    report: guard.RouteReport, static: guard.RouteReport, who: str, *, subscription: bool, data: dict[str, str | None]
) -> Finding:
    said = f"{who} is billed to {report.describe()} (the CLI's own answer; reading your files gave {static.describe()})"
    if report.route is guard.Route.SUBSCRIPTION:
        return Finding(Status.OK, said, source="cli:initialize", data=data)
    if report.route is guard.Route.NONE:
        status = Status.FAIL if who == "llm-claude-max" else Status.INFO
        return Finding(status, f"{who}: the CLI says it is not logged in", source="cli:initialize", data=data)
    failing = who == "llm-claude-max" or subscription or bool(report.conflict)
    return Finding(
        Status.FAIL if failing else Status.INFO,
        said,
        detail="A source the doctor cannot read decides (managed settings, a credential helper, a newer CLI); "
        f"`{invocation.command('doctor --verbose')}` shows what it could read.",
        source="cli:initialize",
        data=data,
    )


def _headers(who: str, sent: list[HeaderCredential], report: guard.RouteReport, data: dict[str, str | None]) -> Finding:
    """A credential smuggled in ANTHROPIC_CUSTOM_HEADERS: the CLI's own answer does not show it."""
    fixes = []
    for header in sent:
        if header.source.kind == "env":
            fixes.append(f"remove the {header.header} line from ANTHROPIC_CUSTOM_HEADERS (or unset it)")
            fixes += [f"where it is set: {where}" for where in header.defined_at]
        else:
            fixes.append(f"remove the {header.header} line from ANTHROPIC_CUSTOM_HEADERS in {header.source.describe()}")
    return Finding(
        Status.FAIL,
        f"{who} sends {' and '.join(h.describe() for h in sent)}"
        + (f" as well as {report.describe()}" if report.route is not guard.Route.NONE else ""),
        detail="The Claude Code CLI adds these headers to every API request next to its own credential and still "
        'reports apiKeySource "none" (checked with Claude Code 2.1.328): neither the CLI nor this doctor can tell '
        "which one Anthropic bills. Count on pay-as-you-go API billing until the header is gone.",
        source=f"{sent[0].source.kind}:{sent[0].source.describe()}",
        fix="\n".join(fixes),
        data={**data, "route": guard.Route.API_KEY.value, "source": "ANTHROPIC_CUSTOM_HEADERS", "credential": None},
    )


def _plain(ctx: Context, d: Discovery) -> Iterator[Finding]:
    winner = d.winner(ours=False)
    report = route_of(winner, d.login)
    sent = [h for h in d.header_credentials if h.plain]
    if sent:  # before the CLI's answer, which cannot show them
        data = {"route_of": "plain_cli", **_data(report, winner)}
        yield _headers("plain `claude -p` in this shell", sent, report, data)
        return
    cli = _cli_answer(ctx, "plain", report)
    if cli is not None:
        yield _by_cli(cli, report, "plain `claude -p` in this shell", subscription=d.has_subscription(),
                      data={"route_of": "plain_cli", **_data(cli, None)})  # fmt: skip
        return
    data = {"route_of": "plain_cli", **_data(report, winner)}
    summary = f"plain `claude -p` in this shell is billed to {report.describe()}"
    if winner is None:
        why = " (bare mode: CLAUDE_CODE_SIMPLE makes it ignore your login)" if d.bare and d.has_subscription() else ""
        yield Finding(Status.INFO, f"plain `claude -p` in this shell is not logged in{why}", data=data)
        return
    if not winner.rung.paid:
        yield Finding(Status.OK, summary, source=f"{winner.source.kind}:{winner.source.describe()}", data=data)
        return
    beaten = [c for c in d.credentials if c.plain and c.active and c.rung.paid]
    if d.has_subscription():
        yield Finding(
            Status.FAIL,
            summary + ", although you are logged in to your subscription",
            detail="In `claude -p` an API credential silently wins over a subscription login; people have lost "
            "thousands of dollars this way. Every plain `claude -p` (scripts, cron) from this shell pays per token.",
            source=f"{winner.source.kind}:{winner.source.describe()}",
            fix="\n".join(fix_for(c) for c in beaten),
            links=(SUPPORT_LINK, ISSUE_LINK),
            data=data,
        )
    else:
        yield Finding(
            Status.INFO,
            summary + " (pay-as-you-go; no subscription login found)",
            source=f"{winner.source.kind}:{winner.source.describe()}",
            data=data,
        )


def _ours(ctx: Context, d: Discovery) -> Iterator[Finding]:
    winner = d.winner(ours=True)
    report = route_of(winner, d.login)
    sent = [h for h in d.header_credentials if h.ours]  # only from managed settings: the variable is removed
    if sent:
        yield _headers("llm-claude-max", sent, report, {"route_of": "llm_claude_max", **_data(report, winner)})
        return
    cli = _cli_answer(ctx, "ours", report)
    if cli is not None:
        yield _by_cli(cli, report, "llm-claude-max", subscription=d.has_subscription(ours=True),
                      data={"route_of": "llm_claude_max", **_data(cli, None)})  # fmt: skip
        return
    data = {"route_of": "llm_claude_max", **_data(report, winner)}
    if winner is None:
        yield Finding(
            Status.FAIL,
            "llm-claude-max: no subscription login, every prompt will be refused",
            fix="claude    # then type /login and sign in with your Claude subscription",
            data=data,
        )
        return
    if not winner.rung.paid:
        yield Finding(
            Status.OK,
            f"llm-claude-max is billed to {report.describe()}",
            source=f"{winner.source.kind}:{winner.source.describe()}",
            data=data,
        )
        return
    if report.route in (guard.Route.API_KEY, guard.Route.API_KEY_HELPER) and ctx.settings.allow_api_billing:
        yield Finding(
            Status.WARN,
            f"llm-claude-max is billed to {report.describe()}, because {config.ALLOW_API_BILLING} is set",
            fix=f"unset {config.ALLOW_API_BILLING}",
            data=data,
        )
        return
    yield Finding(
        Status.FAIL,
        f"llm-claude-max refuses every prompt: the CLI would bill {report.describe()}",
        detail="llm-claude-max removes credential variables and skips settings files, "
        "but this one still reaches the CLI.",
        source=f"{winner.source.kind}:{winner.source.describe()}",
        fix=fix_for(winner),
        data=data,
    )


def paid_usage(ctx: Context) -> Iterator[Finding]:
    lock = guard.OverageLock(ctx.env).read()
    if lock is not None and "problem" in lock:
        yield Finding(
            Status.WARN,
            f"Prompts are blocked: the paid extra usage block {lock['problem']}, so it counts as set",
            fix=invocation.command("unlock"),
        )
    elif lock is not None:
        until = guard.format_reset(lock.get("until")) if isinstance(lock.get("until"), int) else None
        yield Finding(
            Status.WARN,
            "Prompts are blocked: an earlier one was served from paid extra usage"
            + (f" (until {until})" if until else ""),
            fix=invocation.command("unlock"),
        )
    if ctx.settings.allow_overage:
        yield Finding(
            Status.WARN,
            f"{config.ALLOW_OVERAGE} is set: prompts may be served from paid extra usage",
            fix=f"unset {config.ALLOW_OVERAGE}",
        )
    if lock is None and not ctx.settings.allow_overage:
        yield Finding(Status.OK, "Paid extra usage is refused (llm-claude-max stops the CLI if it is ever used)")
