"""Is the Claude Code CLI installed, which one runs, and is it a version we have tested?"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from llm_claude_max import config
from llm_claude_max.runner import locate
from llm_claude_max.runner.locate import INSTALL_HINT, TESTED_VERSION, version_tuple

from ..context import CLIMissing, Context
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl

GROUP = "Claude Code CLI"
SETUP_LINK = "https://code.claude.com/docs/en/setup"
POINT_AT_CLAUDE = (
    f'export {config.CLI}="$(command -v claude)"   # the Claude Code executable\n'
    f"or: unset {config.CLI}                      # use `claude` on PATH"
)


@hookimpl
def doctor_checks() -> list[Check]:
    return [Check("cli.installed", "Claude Code CLI installed and tested", GROUP, installed, order=10)]


def installed(ctx: Context) -> Iterator[Finding]:
    cli = ctx.cli
    if isinstance(cli, CLIMissing):
        if ctx.settings.cli:  # the variable is wrong, not the installation
            yield Finding(
                Status.FAIL,
                f"{config.CLI} does not point at an executable",
                detail=cli.message,
                source=f"env:{config.CLI}",
                fix=POINT_AT_CLAUDE,
            )
            return
        yield Finding(
            Status.FAIL,
            "The Claude Code CLI was not found",
            detail=cli.message,
            fix="npm install -g @anthropic-ai/claude-code",
            links=(SETUP_LINK,),
        )
        return
    where = f" at {cli.path}"
    if cli.version is None and not ctx.options.offline:
        reason = asyncio.run(locate.identify(cli.path, ctx.env))
        if reason is not None:
            yield Finding(
                Status.FAIL,
                f"{locate.described(cli.path, ctx.env)} is not the Claude Code CLI",
                detail=f"{reason}, where Claude Code prints `{TESTED_VERSION} {locate.IDENTITY}`.",
                source=f"file:{cli.path}",
                fix=POINT_AT_CLAUDE if ctx.settings.cli else "npm install -g @anthropic-ai/claude-code",
                links=() if ctx.settings.cli else (SETUP_LINK,),
            )
            return
    if cli.version is None:
        yield Finding(
            Status.INFO if ctx.options.offline else Status.WARN,
            f"Claude Code (version unknown){where}",
            detail="Run without --offline to ask the CLI for its version." if ctx.options.offline else INSTALL_HINT,
            source=f"file:{cli.path}",
        )
    elif version_tuple(cli.version) < version_tuple(TESTED_VERSION):
        yield Finding(
            Status.WARN,
            f"Claude Code {cli.version}{where} is older than {TESTED_VERSION}, "
            "the version llm-claude-max is tested with",
            fix="claude update",
            source=f"{cli.version_source}:{cli.path}",
        )
    else:
        newer = "" if cli.version == TESTED_VERSION else f" (tested with {TESTED_VERSION})"
        yield Finding(Status.OK, f"Claude Code {cli.version}{where}{newer}", source=f"{cli.version_source}:{cli.path}")
    if ctx.settings.cli:
        yield Finding(Status.INFO, f"{config.CLI} selects this executable", source=f"env:{config.CLI}")
    distinct = {p.resolve() for p in cli.on_path}
    if len(distinct) > 1:
        listing = ", ".join(str(p) for p in cli.on_path)
        yield Finding(
            Status.WARN,
            f"{len(distinct)} different `claude` executables are on PATH; the first one runs",
            detail=listing,
            fix=f"remove the installs you do not use, or export {config.CLI}={cli.path}",
        )
