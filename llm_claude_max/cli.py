"""The `claude-max` command (also mounted as `llm claude-max`). Thin: each command imports what it needs.

Shell completion comes from click: ``eval "$(_CLAUDE_MAX_COMPLETE=bash_source claude-max)"`` (or
``zsh_source``, ``fish_source``); inside llm, llm's own ``_LLM_COMPLETE`` covers ``llm claude-max``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    from diagnostics import Check, Finding
    from diagnostics import Context as DoctorContext

HELP = {"help_option_names": ["-h", "--help"]}


@click.group(
    invoke_without_command=True,
    context_settings=HELP,
    short_help="Claude Max/Pro via your Claude Code CLI: doctor, serve.",
)
@click.version_option(package_name="llm-claude-max", prog_name="claude-max")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Use your Claude Max/Pro subscription from llm and other tools, through your own Claude Code CLI,
    without ever billing an API account by accident."""
    from . import invocation  # here, not at import: llm imports this module on every invocation

    invocation.entered(ctx)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


@cli.command(short_help="List the models the Claude Code CLI offers, as llm model ids.")
@click.option("--refresh", is_flag=True, help="Ask the CLI for its current model list (no API call, nothing billed).")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def models(refresh: bool, as_json: bool) -> None:
    """List the models the Claude Code CLI offers, as llm model ids."""
    from . import catalog

    if refresh:
        from .errors import ClaudeMaxError
        from .runner.client import ClaudeCLI

        try:
            asyncio.run(ClaudeCLI().probe())
        except ClaudeMaxError as exc:
            raise click.ClickException(str(exc)) from None
    entries = catalog.load()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"model_id": e.model_id, "cli_model": e.alias, "resolved": e.resolved, "description": e.description}
                    for e in entries
                ],
                indent=2,
            )
        )
        return
    for e in entries:
        resolved = f" -> {e.resolved}" if e.resolved else ""
        description = f"  {e.description}" if e.description else ""
        click.echo(f"{e.model_id} ({e.alias}{resolved}){description}")
    if not any(e.resolved for e in entries):
        click.echo("(built-in list; run with --refresh to ask the CLI)", err=True)


@cli.command(short_help="Which credential the CLI uses, who is billed, and the fix.")
@click.argument("select", nargs=-1, metavar="[GROUP|CHECK]...")
@click.option("--offline", is_flag=True, help="Do not start the CLI or probe local ports (fast, static analysis only).")
@click.option("--live", is_flag=True, help="Also send one tiny prompt through llm-claude-max (spends a little quota).")
@click.option("--json", "as_json", is_flag=True, help="Output JSON (a versioned document; see --json-schema).")
@click.option("--json-schema", is_flag=True, help="Print the JSON Schema of --json output and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Show every finding with its details, sources and links.")
@click.option("--strict", is_flag=True, help="Exit with 3 when there are warnings (for CI).")
@click.option("--list", "list_checks", is_flag=True, help="List every check and the plugin that provides it.")
@click.option("--disable-plugin", multiple=True, metavar="NAME", help="Do not load this plugin (repeatable).")
@click.option(
    "--trust-project",
    is_flag=True,
    help="Let the CLI load this directory's own settings even if they run commands (apiKeyHelper, hooks).",
)
@click.option(
    "--project",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The directory plain `claude -p` would run in, for its .claude settings (default: the current one).",
)
@click.pass_context
def doctor(
    click_ctx: click.Context,
    select: tuple[str, ...],
    offline: bool,
    live: bool,
    as_json: bool,
    json_schema: bool,
    verbose: bool,
    strict: bool,
    list_checks: bool,
    disable_plugin: tuple[str, ...],
    trust_project: bool,
    project: Path | None,
) -> None:
    """Which credential the Claude Code CLI will use and why, who is billed, and the exact fix.

    Exit codes: 0 no problem, 1 a failure (or a crashed check), 2 bad usage, 3 warnings with --strict.
    """
    from . import doctor as _doctor  # loads the doctor from its own files, never a stray `diagnostics`

    if json_schema:
        click.echo((_doctor.HERE / "schema.json").read_text(), nl=False)
        return
    from diagnostics import manager, render

    plugins = manager.load(blocked=disable_plugin)
    checks = manager.select(plugins, select)
    if select and not checks:
        raise click.UsageError(
            f"No check or group matches {' '.join(select)!r}; `{_command('doctor --list')}` shows them."
        )
    if list_checks:
        rows = [("check", "group", "plugin", "title")]
        for plugin, check in checks:
            where = plugins.distributions.get(plugin, plugin)
            flags = " (--live)" if check.live else (" (starts the CLI)" if check.needs_cli else "")
            rows.append((check.id, check.group, where, check.title + flags))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        for failure in plugins.failures:
            click.echo(f"! {failure.findings[0].summary}", err=True)
        return
    options = _doctor.Options(offline=offline, live=live, verbose=verbose, trust_project=trust_project)
    context = _doctor.Context(cwd=project, options=options)
    from . import progress

    running: set[str] = set()
    lock = threading.Lock()
    tracked = [(plugin, dataclasses.replace(check, run=_tracking(check, running, lock))) for plugin, check in checks]

    def still_running() -> str:
        with lock:
            titles = sorted(running)
        if not titles:
            return ""
        why = ""
        if context.env.get("ANTHROPIC_API_KEY") and any("plain claude -p" in t for t in titles):
            why = "; with ANTHROPIC_API_KEY set, plain `claude -p` first tries api.anthropic.com, for ~18 s"
        return f"claude-max doctor: waiting for {', '.join(titles)}{why}"

    with progress.waiting(still_running):
        results = plugins.failures + manager.run(tracked, context)
    code = manager.exit_code(results, strict=strict)
    if as_json:
        click.echo(render.as_json(results, context, exit_code=code, strict=strict), nl=False)
    else:
        click.echo(render.human(results, context, exit_code=code), nl=False)
    click_ctx.exit(code)


def _tracking(check: Check, running: set[str], lock: threading.Lock) -> Callable[[DoctorContext], list[Finding]]:
    """``check.run``, keeping ``running`` up to date (for the progress line of a long doctor run)."""

    def run(ctx: DoctorContext) -> list[Finding]:
        with lock:
            running.add(check.title)
        try:
            return list(check.run(ctx) or ())
        finally:
            with lock:
                running.discard(check.title)

    return run


def _command(sub: str) -> str:
    from . import invocation

    return invocation.command(sub)


TOS_WARNING = (
    "WARNING: this server is reachable from other machines. Anthropic's terms do not allow serving other "
    "people through your Claude subscription; keep it to your own devices, behind the API key."
)


@cli.command(short_help="Run an OpenAI-compatible server on this machine.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (then an API key is always required).")
@click.option("--require-key", is_flag=True, help="Require the API key on loopback too.")
@click.option(
    "--pool-size",
    default=2,
    show_default=True,
    type=click.IntRange(0, 32),
    help="Processes kept ready for new conversations (started ahead, or recycled).",
)
@click.option(
    "--max-concurrency", default=4, show_default=True, type=click.IntRange(1, 64), help="Prompts running at once."
)
@click.option(
    "--queue", default=16, show_default=True, type=click.IntRange(0, 1024), help="Prompts waiting; beyond: 429."
)
@click.option(
    "--live-sessions", default=4, show_default=True, type=click.IntRange(0, 64), help="Conversations kept warm."
)
@click.option(
    "--idle-timeout",
    default=600,
    show_default=True,
    type=click.IntRange(10),
    help="Seconds before an idle process stops.",
)
@click.option(
    "--allow-remote-images",
    is_flag=True,
    help="Fetch http(s) image URLs in requests: public addresses only (never this machine or its networks), "
    "at most 8 per request, 10 MB each, 20 MB in all (default: data URLs only).",
)
@click.option(
    "--cors-origin", multiple=True, help="Allow browser requests from this origin (repeatable; default: none)."
)
@click.option(
    "--recycle/--no-recycle",
    default=True,
    show_default=True,
    help="Reset a finished conversation's process for the next new one instead of starting another "
    "(the new conversation gets nothing of the earlier one).",
)
@click.option(
    "--max-conversations",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="A recycled process is ended after this many conversations.",
)
@click.option("--max-body-mb", default=20, show_default=True, type=click.IntRange(1, 200), help="Largest request body.")
@click.option(
    "--max-connections",
    default=256,
    show_default=True,
    type=click.IntRange(4, 65536),
    help="Open connections at most (lowered to fit the file limit); beyond, the longest idle one is closed.",
)
@click.option(
    "--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option(
    "--install-service",
    is_flag=True,
    help="Instead of serving now: run the server at login with these options "
    "(a systemd user unit on Linux, a launchd agent on macOS), and start it.",
)
@click.option(
    "--uninstall-service", is_flag=True, help="Stop the server installed with --install-service and remove it."
)
@click.pass_context
def serve(
    click_ctx: click.Context,
    host: str,
    port: int,
    allow_remote: bool,
    require_key: bool,
    pool_size: int,
    max_concurrency: int,
    queue: int,
    live_sessions: int,
    idle_timeout: int,
    allow_remote_images: bool,
    cors_origin: tuple[str, ...],
    recycle: bool,
    max_conversations: int,
    max_body_mb: int,
    max_connections: int,
    log_level: str,
    install_service: bool,
    uninstall_service: bool,
) -> None:
    """An OpenAI-compatible server (/v1/chat/completions, /v1/models) on this machine, billed to your plan."""
    from .config import LOOPBACK_HOSTS
    from .server.run import ServeOptions, run

    public = host not in LOOPBACK_HOSTS
    if public and not allow_remote:
        raise click.UsageError(f"--host {host} is reachable from other machines; add --allow-remote to mean it.")
    if install_service or uninstall_service:
        _service(click_ctx, install=install_service, uninstall=uninstall_service)
        return
    from . import invocation

    invocation.serving()
    options = ServeOptions(
        host=host,
        port=port,
        public=public,
        require_key=require_key or public,
        pool_size=pool_size,
        max_concurrency=max_concurrency,
        queue=queue,
        live_sessions=live_sessions,
        idle_seconds=float(idle_timeout),
        allow_remote_images=allow_remote_images,
        cors_origins=cors_origin,
        recycle=recycle,
        max_conversations=max_conversations,
        max_body_bytes=max_body_mb * 1024 * 1024,
        max_connections=max_connections,
        log_level=log_level,
    )
    if public:
        click.secho(TOS_WARNING, fg="yellow", err=True)
    run(options)


SERVICE_FLAGS = ("install_service", "uninstall_service")


def _given_options(ctx: click.Context) -> list[str]:
    """The options the user gave `serve` (not the defaults), as arguments for the service to start with."""
    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None or param.name in SERVICE_FLAGS:
            continue
        if ctx.get_parameter_source(param.name) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        flag = max(param.opts, key=len)
        value = ctx.params[param.name]
        if param.is_flag:
            args += [flag] if value else []
        elif param.multiple:
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def _service(ctx: click.Context, *, install: bool, uninstall: bool) -> None:
    from .server import service

    if install and uninstall:
        raise click.UsageError("--install-service and --uninstall-service cannot be used together.")
    try:
        spec = service.for_platform(_given_options(ctx))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        notes = service.install(spec) if install else service.uninstall(spec)
    except OSError as exc:
        raise click.ClickException(f"Could not write {spec.path}: {exc.strerror or exc}") from None
    for note in notes:
        click.echo(note)
    if install:
        click.echo(f"Logs: {spec.logs}")
        click.echo(f"Remove it with: {_command('serve --uninstall-service')}")


@cli.group(short_help="A private background server that makes llm prompts start faster.")
def warm() -> None:
    """A private server in the background that `llm -m claude-max` prompts go through, so they start in a
    running CLI process (about 0.1 s sooner each, and far less CPU). It stops by itself when idle.

    Set CLAUDE_MAX_WARM=1 to have prompts start it when it is not running."""


@warm.command("start")
@click.option(
    "--idle-timeout",
    default=900,
    show_default=True,
    type=click.IntRange(5),
    help="Stop after this many seconds without a prompt.",
)
@click.option("--pool-size", default=1, show_default=True, type=click.IntRange(0, 8), help="Processes kept ready.")
def warm_start(idle_timeout: int, pool_size: int) -> None:
    """Start the warm server for this environment (unless it runs), and wait until it takes prompts."""
    import os

    from . import warm as warm_server

    running = warm_server.find(os.environ)
    found = running or warm_server.start(os.environ, idle_timeout=idle_timeout, pool_size=pool_size)
    if found is None:
        log = warm_server.directory(os.environ) / "server.log"
        raise click.ClickException(f"The warm server did not start; its log is {log}.")
    state = "already running" if running else "started"
    click.echo(f"Warm server {state} (pid {found.pid}, socket {found.socket}).")


@warm.command("stop")
@click.option("--all", "every", is_flag=True, help="Also those started from other environments.")
def warm_stop(every: bool) -> None:
    """Stop the warm server (its CLI processes end with it)."""
    import os

    from . import warm as warm_server

    stopped = warm_server.stop(os.environ, every=every)
    click.echo(f"Stopped {len(stopped)} warm server(s)." if stopped else "No warm server was running.")


@warm.command("status")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def warm_status(as_json: bool) -> None:
    """Whether a warm server runs, and whether this environment's prompts go through it."""
    import os
    import time

    from . import config
    from . import warm as warm_server

    found = warm_server.servers(os.environ)
    if as_json:
        click.echo(json.dumps({"servers": found, "on_demand": warm_server.wanted(os.environ)}, indent=2))
        return
    for state in found:
        whose = "this environment" if state["this_environment"] else "another environment"
        age = int(time.time() - state.get("started", time.time()))
        click.echo(
            f"pid {state['pid']}: {whose}, socket {state['socket']}, up {age} s, "
            f"stops after {state.get('idle_timeout')} s without a prompt"
        )
    if not any(s["this_environment"] for s in found):
        click.echo("No warm server runs for this environment: prompts start their own CLI.")
    if not warm_server.wanted(os.environ):
        click.echo(f"Set {config.WARM}=1 to have prompts start one when none runs.")


@warm.command("serve", hidden=True)
@click.option("--idle-timeout", default=900, type=click.IntRange(5))
@click.option("--pool-size", default=1, type=click.IntRange(0, 8))
@click.option("--spelling", default=None, help="How messages spell the claude-max command for the prompts served.")
def warm_serve(idle_timeout: int, pool_size: int, spelling: str | None) -> None:
    """Run the warm server in the foreground (`warm start` runs this in the background)."""
    import os

    from . import warm as warm_server

    warm_server.serve(os.environ, idle_timeout=idle_timeout, pool_size=pool_size, spelling=spelling)


@cli.command("server-key", short_help="Print the API key of the server (created on first use).")
@click.option("--rotate", is_flag=True, help="Replace the key with a new one (restart the server afterwards).")
def server_key(rotate: bool) -> None:
    """Print the API key of `claude-max serve` (created on first use; kept in the OS keyring or a 0600 file)."""
    from .server import keys

    try:
        key, where = keys.load(rotate=rotate)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(key)
    click.echo(f"(kept in {where})", err=True)


def _plain_terminal() -> bool:
    """stdout cannot show block characters (an ASCII locale): draw bars with # and -."""
    import sys

    encoding = sys.stdout.encoding or "ascii"
    try:
        "█░✗·".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return True
    return False


@cli.group(invoke_without_command=True, short_help="How much of your plan's windows is used, and when they reset.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON (the shape: see `usage --help`).")
@click.pass_context
def usage(click_ctx: click.Context, as_json: bool) -> None:
    """How much of your plan's 5-hour and weekly windows is used, and when they reset.

    As the Claude Code CLI reported it with your last answer: nothing is sent, nothing is spent.
    `claude-max usage report` shows the tokens that went through llm.
    """
    if click_ctx.invoked_subcommand is not None:
        if as_json:
            command = click_ctx.invoked_subcommand
            raise click.UsageError(f"--json goes after the subcommand: {_command(f'usage {command} --json')}")
        return
    import os

    from . import config
    from .usage import render

    allow = config.Settings.from_env().allow_overage
    if as_json:
        click.echo(json.dumps(render.current_document(os.environ, allow_overage=allow), indent=2))
    else:
        click.echo(render.current_text(os.environ, allow_overage=allow, plain=_plain_terminal()), nl=False)


@usage.command("report")
@click.option("--days", type=click.IntRange(1, 3660), help="The last N days, today included (default 7).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="From this day (YYYY-MM-DD) to today.")
@click.option(
    "--database", type=click.Path(dir_okay=False, path_type=Path), help="llm's logs.db (default: `llm logs path`)."
)
@click.option("--json", "as_json", is_flag=True, help="Output JSON (a versioned document).")
def usage_report(days: int | None, since: Any, database: Path | None, as_json: bool) -> None:
    """Prompts, tokens and the CLI's list-price estimate per day and model, from llm's logs."""
    import datetime as dt
    import os
    import time

    from .usage import report

    if days is not None and since is not None:
        raise click.UsageError("Give --days or --since, not both.")
    today = dt.date.today()
    first = since.date() if since is not None else today - dt.timedelta(days=(days or 7) - 1)
    if first > today:
        raise click.UsageError(f"--since {first} is in the future.")
    path = database or report.database_path(os.environ)
    try:
        rows = report.read(path, first)
    except report.ReportError as exc:
        raise click.ClickException(str(exc)) from None
    result = report.Report.of(rows, path, first, today)
    if as_json:
        click.echo(json.dumps(report.document(result, now=time.time()), indent=2))
    else:
        click.echo(report.text(result, plain=_plain_terminal()), nl=False)


@cli.command(short_help="Remove the block set after paid extra usage served a prompt.")
def unlock() -> None:
    """Remove the block set after a prompt was served from paid extra usage."""
    from . import guard

    lock = guard.OverageLock()
    if lock.read() is None:
        click.echo("No block is set.")
        return
    try:
        lock.clear()
    except OSError as exc:
        raise click.ClickException(
            f"Could not remove {lock.path}: {exc.strerror or exc}. Remove it by hand; until then prompts stay blocked."
        ) from None
    click.echo("Block removed. Prompts are checked again; paid extra usage stays refused unless you opt in.")


def main() -> None:
    from .invocation import SCRIPT

    cli(prog_name=SCRIPT)


if __name__ == "__main__":
    main()
