"""The `claude-max` command (also mounted as `llm claude-max`). Thin: each command imports what it needs."""

from __future__ import annotations

import asyncio
import json

import click


@click.group()
@click.version_option(package_name="llm-claude-max", prog_name="claude-max")
def cli() -> None:
    """Use your Claude Max/Pro subscription from llm and other tools, through your own Claude Code CLI,
    without ever billing an API account by accident."""


@cli.command()
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


@cli.command()
def unlock() -> None:
    """Remove the block set after a prompt was served from paid extra usage."""
    from . import guard

    lock = guard.OverageLock()
    if lock.read() is None:
        click.echo("No block is set.")
        return
    lock.clear()
    click.echo("Block removed. Prompts are checked again; paid extra usage stays refused unless you opt in.")


def main() -> None:
    cli(prog_name="claude-max")


if __name__ == "__main__":
    main()
