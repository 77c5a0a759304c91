"""The benchmarks. Each one builds its own sandbox and returns a :class:`Report`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .measure import BenchError, Run, Stats, interleave, run
from .sandbox import Command, Sandbox

ANSWER = b"Hello from the fake API."  # the fake API's default reply
STREAM_FLAGS = ("--output-format", "stream-json", "--verbose", "--include-partial-messages")


@dataclass(frozen=True)
class Check:
    what: str
    value: float
    target: float
    """The value must be at most this."""

    @property
    def ok(self) -> bool:
        return self.value <= self.target


@dataclass
class Report:
    name: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    """Everything measured, raw samples included, for the JSON file."""

    def to_json(self) -> dict[str, Any]:
        checks = [dict(asdict(c), ok=c.ok) for c in self.checks]
        return {"title": self.title, "checks": checks, "notes": self.notes, **self.data}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def time_row(label: str, stats: Stats) -> list[str]:
    return [label, ms(stats.median), f"{ms(stats.low)} – {ms(stats.high)}", str(stats.n)]


def ratio_row(label: str, value: float, per_round: list[float]) -> list[str]:
    spread = Stats.of(per_round)
    return [label, f"{value:.3f}", f"{spread.low:.3f} – {spread.high:.3f} (per round)", str(spread.n)]


TIME_COLUMNS = ["measure", "median", "min – max", "runs"]


def timings(results: dict[str, list[Run]]) -> dict[str, list[float]]:
    return {label: [round(r.seconds, 4) for r in runs] for label, runs in results.items()}


# -- 1. import ------------------------------------------------------------------------------------
def bench_import(runs: int) -> Report:
    with Sandbox() as sandbox:
        loaded = sandbox.llm("llm --version (plugin loaded)", "--version")
        bare = sandbox.llm("llm --version (LLM_LOAD_PLUGINS='')", "--version", plugins=False)
        # Make sure the two differ by exactly this plugin.
        if b"llm-claude-max" not in run(sandbox.llm("plugins", "plugins"), sandbox).stdout:
            raise BenchError("the plugin is not installed in this environment")
        if run(sandbox.llm("plugins", "plugins", plugins=False), sandbox).stdout.strip() != b"[]":
            raise BenchError("LLM_LOAD_PLUGINS='' still loads plugins")
        results = interleave([loaded, bare], sandbox, runs, expect={loaded.label: b"llm, version"})
        leftovers = sandbox.leftovers
    a = Stats.of(r.seconds for r in results[loaded.label])
    b = Stats.of(r.seconds for r in results[bare.label])
    per_round = [x.seconds / y.seconds for x, y in zip(results[loaded.label], results[bare.label], strict=True)]
    ratio = a.median / b.median
    return Report(
        "import",
        "Plugin import overhead: `llm --version` with the plugin vs with no plugins",
        TIME_COLUMNS,
        [time_row(loaded.label, a), time_row(bare.label, b), ratio_row("ratio of the medians", ratio, per_round)],
        [Check("with plugin / without", round(ratio, 3), 1.03)],
        [f"difference of the medians: {ms(a.median - b.median)}"],
        {"seconds": timings(results), "ratio": ratio, "leftovers": leftovers},
    )


# -- 2. prompt ------------------------------------------------------------------------------------
def bench_prompt(runs: int) -> Report:
    with Sandbox() as sandbox:
        prompt = sandbox.llm("llm -m claude-max hi", "-m", "claude-max", "hi")
        version = sandbox.llm("llm --version", "--version")
        raw = sandbox.raw(f"claude -p {' '.join(STREAM_FLAGS)} hi", "-p", *STREAM_FLAGS, "hi")
        results = interleave(
            [prompt, version, raw],
            sandbox,
            runs,
            first={prompt.label: b"", raw.label: b'"text_delta"'},
            expect={prompt.label: ANSWER, version.label: b"llm, version", raw.label: b'"result":"' + ANSWER},
        )
        leftovers = sandbox.leftovers
    p, v, r = (results[c.label] for c in (prompt, version, raw))
    wall = [Stats.of(x.seconds for x in runs_) for runs_ in (p, v, r)]
    ratio = (wall[0].median - wall[1].median) / wall[2].median
    per_round = [(a.seconds - b.seconds) / c.seconds for a, b, c in zip(p, v, r, strict=True)]
    extra = wall[0].median - wall[1].median - wall[2].median
    rows = [
        time_row(prompt.label, wall[0]),
        time_row(version.label, wall[1]),
        time_row(raw.label, wall[2]),
        ratio_row("(llm prompt − llm --version) / raw CLI", ratio, per_round),
    ]
    # Time to the first answer text, and from there to exit (CLI shutdown, llm's logging, Python's teardown).
    llm_first, raw_first = (Stats.of(_first(x) for x in runs_) for runs_ in (p, r))
    llm_tail, raw_tail = (Stats.of(x.seconds - _first(x) for x in runs_) for runs_ in (p, r))
    rows += [
        time_row("first text byte on stdout, llm -m claude-max hi", llm_first),
        time_row("first text_delta line, raw CLI", raw_first),
        time_row("first text → exit, llm -m claude-max hi", llm_tail),
        time_row("first text_delta → exit, raw CLI", raw_tail),
    ]
    data = {
        "seconds": timings(results),
        "first_text_seconds": {
            label: [round(_first(x), 4) for x in results[label]] for label in (prompt.label, raw.label)
        },
        "ratio": ratio,
        "leftovers": leftovers,
    }
    return Report(
        "prompt",
        "Per-prompt overhead of the plugin vs the raw CLI, same fake API",
        TIME_COLUMNS,
        rows,
        [Check("(llm prompt − llm --version) / raw CLI", round(ratio, 3), 1.10)],
        [f"added per prompt beyond llm's start-up and the CLI's own time: {ms(extra)} (medians)"],
        data,
    )


def _first(done: Run) -> float:
    if done.first is None:
        raise BenchError("the answer text never appeared on stdout")
    return done.first


# -- 3. request-size ------------------------------------------------------------------------------
def bench_request_size(runs: int) -> Report:
    del runs  # the request body is deterministic: one run of each
    with Sandbox() as sandbox:
        plugin = sandbox.llm("llm -m claude-max hi", "-m", "claude-max", "hi")
        raw = sandbox.raw("claude -p hi", "-p", "hi")
        bodies = {c.label: _request_of(c, sandbox) for c in (plugin, raw)}
        leftovers = sandbox.leftovers
    parts = ("system", "tools", "messages")
    rows = []
    sizes: dict[str, dict[str, int]] = {}
    for label, (size, body) in bodies.items():
        sizes[label] = {"total": size} | {k: _json_size(body.get(k)) for k in parts}
        rows.append([label, f"{size:,}", *(f"{sizes[label][k]:,}" for k in parts), str(len(body.get("tools") or []))])
    plugin_size, raw_size = bodies[plugin.label][0], bodies[raw.label][0]
    share = plugin_size / raw_size
    return Report(
        "request-size",
        'Bytes of the /v1/messages request body for "hi"',
        ["command", "body bytes", "system", "tools", "messages", "tool count"],
        rows,
        [Check("request body of the plugin, bytes", plugin_size, 2048)],
        [f"the plugin's request is {share:.1%} of the CLI default's, {1 / share:.0f}× smaller"],
        {"bytes": sizes, "plugin_vs_cli": share, "leftovers": leftovers},
    )


def _request_of(command: Command, sandbox: Sandbox) -> tuple[int, dict[str, Any]]:
    before = len(sandbox.api.message_requests)
    run(command, sandbox, expect=ANSWER)
    requests = sandbox.api.message_requests[before:]
    if len(requests) != 1 or requests[0].body is None:
        raise BenchError(f"{command.label}: expected one /v1/messages request, got {len(requests)}")
    return requests[0].raw_size, requests[0].body


def _json_size(value: object) -> int:
    """Compact JSON size of one part of the body (the parts do not add up exactly to the total)."""
    return 0 if value is None else len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


# -- 4. rss ---------------------------------------------------------------------------------------
def bench_rss(runs: int) -> Report:
    with Sandbox() as sandbox:
        prompt = sandbox.llm("llm -m claude-max hi", "-m", "claude-max", "hi")
        version = sandbox.llm("llm --version", "--version")
        raw = sandbox.raw("claude -p hi", "-p", "hi")
        labels = (
            "llm process (Python) during llm -m claude-max hi",
            "its claude child",
            "llm process for llm --version (baseline)",
            "raw claude -p hi (context)",
        )
        peaks: dict[str, list[int]] = {label: [] for label in labels}
        for round_ in range(runs + 1):  # round 0 warms up
            p, v, r = (
                run(c, sandbox, rss=True, expect=None if c is version else ANSWER) for c in (prompt, version, raw)
            )
            if round_:
                children = [kib for pid, (name, kib) in p.peak_kib.items() if pid != p.pid and name == "claude"]
                if len(children) != 1:
                    raise BenchError(f"expected one claude child of llm, found {len(children)}")
                sample = (p.peak_kib[p.pid][1], children[0], v.peak_kib[v.pid][1], r.peak_kib[r.pid][1])
                for label, kib in zip(labels, sample, strict=True):
                    peaks[label].append(kib)
        leftovers = sandbox.leftovers
    stats = {label: Stats.of(values) for label, values in peaks.items()}
    rows = [[label, _mib(s.median), f"{_mib(s.low)} – {_mib(s.high)}", str(s.n)] for label, s in stats.items()]
    added = stats[labels[0]].median - stats[labels[2]].median
    return Report(
        "rss",
        "Peak RSS (VmHWM, polled every 10 ms) during a prompt",
        ["process", "peak RSS median", "min – max", "runs"],
        rows,
        notes=[f"a prompt adds {_mib(added)} to the llm process over `llm --version`"],
        data={"peak_kib": peaks, "leftovers": leftovers},
    )


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


BENCHMARKS: dict[str, tuple[Callable[[int], Report], int]] = {
    "import": (bench_import, 15),
    "prompt": (bench_prompt, 10),
    "request-size": (bench_request_size, 1),
    "rss": (bench_rss, 5),
}
"""name -> (benchmark, default number of runs)."""
