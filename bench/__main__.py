"""``python -m bench [NAME...] [-n RUNS]``: run the benchmarks, print markdown, save JSON.

The JSON (machine, versions, every sample) goes to ``bench/results/<timestamp>.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .measure import BenchError
from .sandbox import pinned_cli
from .suite import BENCHMARKS, Report

RESULTS = Path(__file__).parent / "results"


def markdown(report: Report) -> str:
    lines = [f"## {report.name}: {report.title}", ""]
    lines.append("| " + " | ".join(report.columns) + " |")
    lines.append("|" + "---|" * len(report.columns))
    lines += ["| " + " | ".join(row) + " |" for row in report.rows]
    for table in report.tables:
        lines += ["", table.caption, "", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if report.checks or report.notes:
        lines.append("")
    for check in report.checks:
        verdict = "met" if check.ok else "MISSED"
        lines.append(f"- {check.what}: **{check.value:g}** (target ≤ {check.target:g}): {verdict}")
    lines += [f"- {note}" for note in report.notes]
    leftovers = report.data.get("leftovers")
    if leftovers:
        lines.append(f"- processes left behind and killed by the harness: {len(leftovers)}")
    return "\n".join(lines) + "\n"


def _output(*argv: str | Path) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout.strip()


def machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "llm": metadata.version("llm"),
        "llm-claude-max": metadata.version("llm-claude-max"),
        "claude_cli": _output(pinned_cli(), "--version"),
        "git": _output("git", "-C", Path(__file__).parent, "describe", "--always", "--dirty"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the benchmarks of the llm plugin.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="what to run (default: all): " + ", ".join(BENCHMARKS))
    parser.add_argument("-n", "--runs", type=int, help="runs per command (default: per benchmark)")
    args = parser.parse_args(argv)
    names: list[str] = args.names or list(BENCHMARKS)
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    info = machine()
    print(f"# Benchmarks, {info['date']}\n")
    print(
        f"{info['nproc']} cores, load {info['loadavg_at_start'][0]:.2f}, Python {info['python']}, llm {info['llm']}, "
        f"llm-claude-max {info['llm-claude-max']} ({info['git']}), Claude Code {info['claude_cli']}\n"
    )
    reports: dict[str, Any] = {}
    failed = []
    for name in names:
        benchmark, default_runs = BENCHMARKS[name]
        try:
            report = benchmark(args.runs or default_runs)
        except BenchError as exc:
            print(f"## {name}: FAILED\n\n```\n{exc}\n```\n", flush=True)
            failed.append(name)
            continue
        print(markdown(report), flush=True)
        reports[name] = report.to_json()

    info["loadavg_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps({"machine": info, "benchmarks": reports}, indent=1) + "\n")
    print(f"JSON: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
