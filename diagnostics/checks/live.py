"""Opt-in (--live): one tiny prompt through llm-claude-max, proving the route end to end.

Spends a little of your plan's quota (one short Haiku answer).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from llm_claude_max import guard
from llm_claude_max.errors import ClaudeMaxError

from ..context import Context
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from llm_claude_max.runner.session import Outcome

GROUP = "Live probe"
PROMPT = "Reply with the single word OK."


@hookimpl
def doctor_checks() -> list[Check]:
    return [
        Check(
            "live.prompt",
            "A real prompt through llm-claude-max (spends a little quota)",
            GROUP,
            prompt,
            live=True,
            needs_cli=True,
        )
    ]


async def _run(ctx: Context) -> Outcome:
    from llm_claude_max.runner.client import ClaudeCLI
    from llm_claude_max.runner.command import CommandSpec
    from llm_claude_max.runner.session import Done, Timeouts

    client = ClaudeCLI(env=ctx.env, settings=ctx.settings)
    policy = guard.Policy.from_settings(ctx.settings)
    spec = CommandSpec(model="haiku", persist_session=False)
    async for event in client.prompt(spec, PROMPT, policy=policy, timeouts=Timeouts(total=120)):
        if isinstance(event, Done):
            return event.outcome
    raise RuntimeError("the prompt ended without an outcome")


def prompt(ctx: Context) -> Iterator[Finding]:
    try:
        outcome = asyncio.run(_run(ctx))
    except ClaudeMaxError as exc:
        yield Finding(Status.FAIL, f"The live prompt failed: {exc.message}")
        return
    route = outcome.route.describe()
    if outcome.verified:
        yield Finding(
            Status.OK,
            f"Answered by {outcome.model}, billed to {route}; verified (apiKeySource none, rate_limit_event received)",
            data={"model": outcome.model, "route": outcome.route.route.value, "verified": True},
        )
    else:
        yield Finding(Status.WARN, f"Answered, billed to {route}, but the CLI sent no rate_limit_event: unverified")
    rate = outcome.rate_limit
    if rate is not None:
        window = guard.limit_label(rate.limit_type) if rate.limit_type else "usage"
        resets = dt.datetime.fromtimestamp(rate.resets_at).astimezone().strftime("%a %H:%M") if rate.resets_at else None
        state = f"{window} window: {rate.status}" + (f", resets {resets}" if resets else "")
        status = Status.OK if rate.status == "allowed" else Status.WARN
        yield Finding(status, state, data={k: v for k, v in rate.raw.items() if isinstance(v, (str, int, float, bool))})
