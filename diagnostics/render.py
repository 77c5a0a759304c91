"""Human and JSON output of a doctor run. Findings hold masked values only; nothing here unmasks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from llm_claude_max import invocation

from .context import CLIFound, Context
from .findings import CheckResult, Finding, Status

SCHEMA_VERSION = 1
GLYPH = {0: "✓", 1: "!", 2: "✗"}
SKIPPED = "-"
FINDING_GLYPH = {
    Status.OK: "✓",
    Status.INFO: "•",
    Status.SKIP: "-",
    Status.WARN: "!",
    Status.FAIL: "✗",
    Status.ERROR: "✗",
}
VERDICT_GROUP = "Billing"


def _version() -> str:
    try:
        return metadata.version("llm-claude-max")
    except metadata.PackageNotFoundError:
        return "unknown"


def _groups(results: Sequence[CheckResult]) -> dict[str, list[CheckResult]]:
    groups: dict[str, list[CheckResult]] = {}
    for result in results:
        groups.setdefault(result.check.group, []).append(result)
    return groups


def _table(rows: Sequence[Sequence[str]], indent: str) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(indent + "  ".join(cells).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return lines


def _finding_lines(finding: Finding, *, verbose: bool, indent: str = "    ") -> list[str]:
    lines = [f"{indent}{FINDING_GLYPH[finding.status]} {finding.summary}"]
    pad = indent + "  "
    problem = finding.status in (Status.WARN, Status.FAIL, Status.ERROR)
    if finding.detail and (verbose or problem):
        lines += [f"{pad}{line}" for line in finding.detail.splitlines()]
    if finding.fix:
        fix_lines = finding.fix.splitlines()
        lines.append(f"{pad}fix: {fix_lines[0]}")
        lines += [f"{pad}     {line}" for line in fix_lines[1:]]
    if finding.table:
        lines += _table(finding.table, pad)
    if verbose and finding.source:
        lines.append(f"{pad}source: {finding.source}")
    if verbose:
        lines += [f"{pad}see: {link}" for link in finding.links]
    return lines


def human(results: Sequence[CheckResult], ctx: Context, *, exit_code: int) -> str:
    verbose = ctx.options.verbose
    cli = ctx.cli
    head = f"claude-max doctor {_version()}"
    if isinstance(cli, CLIFound):
        head += f" · Claude Code {cli.version or '?'} · {cli.path}"
    lines = [head, ""]
    groups = _groups(results)
    problems = 0
    for title, group in groups.items():
        rank = max((r.status.rank for r in group), default=0)
        findings = [f for r in group for f in r.findings]
        glyph = SKIPPED if findings and all(f.status is Status.SKIP for f in findings) else GLYPH[rank]
        problems += rank > 0
        if title == VERDICT_GROUP or verbose:
            if len(lines) > 2:
                lines.append("")
            lines.append(f"[{glyph}] {title}")
            for finding in findings:
                if verbose or finding.status is not Status.SKIP:
                    lines += _finding_lines(finding, verbose=verbose)
            continue
        shown = [f for f in findings if f.status.rank > 0 or f.table]
        headline = next(
            (f for f in findings if f.status.rank == rank and not f.table), findings[0] if findings else None
        )
        summary = f": {headline.summary}" if headline is not None and (rank == 0 or len(shown) <= 1) else ""
        lines.append(f"[{glyph}] {title}{summary}")
        for finding in shown:
            if finding is headline and not finding.fix and not finding.table and not finding.detail:
                continue
            lines += _finding_lines(finding, verbose=False)
    lines.append("")
    counts = _counts(results)
    if exit_code == 0 and counts["warn"] == 0:
        lines.append("✓ No problems found.")
    else:
        parts = [
            f"{counts[k]} {name}"
            for k, name in (("fail", "failure(s)"), ("error", "crashed check(s)"), ("warn", "warning(s)"))
            if counts[k]
        ]
        lines.append(f"{'✗' if exit_code == 1 else '!'} Doctor found {', '.join(parts)} in {problems} group(s).")
    if not verbose:
        lines.append(f"  `{invocation.command('doctor --verbose')}` shows every finding with its source.")
    return "\n".join(lines) + "\n"


def _counts(results: Sequence[CheckResult]) -> dict[str, int]:
    counts = {s.value: 0 for s in Status}
    for result in results:
        for finding in result.findings:
            counts[finding.status.value] += 1
    return counts


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "status": finding.status.value,
        "summary": finding.summary,
        "detail": finding.detail,
        "source": finding.source,
        "fix": finding.fix,
        "links": list(finding.links),
        "table": [list(row) for row in finding.table] if finding.table else None,
        "data": dict(finding.data) if finding.data else None,
    }


def as_json(results: Sequence[CheckResult], ctx: Context, *, exit_code: int, strict: bool) -> str:
    billing: dict[str, Any] = {"plain_cli": None, "llm_claude_max": None}
    for result in results:
        if result.check.id == "billing.verdict":
            for finding in result.findings:
                if finding.data and finding.data.get("route_of") in billing:
                    entry = {k: v for k, v in finding.data.items() if k != "route_of"}
                    billing[str(finding.data["route_of"])] = {
                        **entry,
                        "status": finding.status.value,
                        "summary": finding.summary,
                    }
    worst = max((r.status.rank for r in results), default=0)
    document = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "claude-max doctor", "version": _version()},
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "options": {"offline": ctx.options.offline, "live": ctx.options.live, "strict": strict},
        "status": {0: "ok", 1: "warn", 2: "fail"}[worst],
        "exit_code": exit_code,
        "billing": billing,
        "counts": _counts(results),
        "checks": [
            {
                "id": r.check.id,
                "title": r.check.title,
                "group": r.check.group,
                "plugin": r.plugin,
                "status": r.status.value,
                "duration_ms": round(r.duration_ms, 1),
                "findings": [_finding_json(f) for f in r.findings],
            }
            for r in results
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
