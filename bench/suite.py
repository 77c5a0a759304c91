"""The benchmarks. Each one builds its own sandbox and returns a :class:`Report`."""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .measure import BenchError, Run, Stats, interleave, run
from .sandbox import PINNED_VERSION, Command, Sandbox
from .server import (
    MEMORY_FIELDS,
    Message,
    Server,
    Turn,
    assistant,
    memory_kib,
    tree_cpu_seconds,
    tree_memory_kib,
    user,
)

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
class Table:
    """A further table of a report, printed after the first one under its caption."""

    caption: str
    columns: list[str]
    rows: list[list[str]]


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
    tables: list[Table] = field(default_factory=list)

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


# -- 5. doctor ------------------------------------------------------------------------------------
DOCTOR_OFFLINE_TARGET_MS = 300


def bench_doctor(runs: int) -> Report:
    with Sandbox() as sandbox:
        offline = sandbox.claude_max("claude-max doctor --offline", "doctor", "--offline")
        full = sandbox.claude_max("claude-max doctor", "doctor")
        version = sandbox.raw("claude --version", "--version")
        llm = sandbox.llm("llm --version", "--version")
        results = interleave(
            [offline, full, version, llm],
            sandbox,
            runs,
            # run() treats a non-zero exit as a failure and shows the output; these prove which checks ran.
            expect={
                offline.label: b"Cross-check with the CLI: Not run (--offline)",
                full.label: "✓] Cross-check with the CLI: The CLI confirms".encode(),
                version.label: PINNED_VERSION.encode(),
                llm.label: b"llm, version",
            },
        )
        prompts = len(sandbox.api.message_requests)
        leftovers = sandbox.leftovers
    o, f, v, lv = (Stats.of(r.seconds for r in results[c.label]) for c in (offline, full, version, llm))
    per_round = [b.seconds - a.seconds for a, b in zip(results[offline.label], results[full.label], strict=True)]
    spread = Stats.of(per_round)
    rows = [time_row(c.label, s) for c, s in ((offline, o), (full, f), (version, v), (llm, lv))]
    rows.append(
        [
            "full − --offline (the CLI probes)",
            ms(f.median - o.median),
            _ms_range(spread) + " (per round)",
            str(spread.n),
        ]
    )
    return Report(
        "doctor",
        "Wall time of `claude-max doctor`, offline and full, with `claude --version` and `llm --version` for context",
        TIME_COLUMNS,
        rows,
        [
            Check(
                "claude-max doctor --offline, median wall time in ms", round(o.median * 1000), DOCTOR_OFFLINE_TARGET_MS
            )
        ],
        [
            f"the full doctor takes {ms(f.median - o.median)} more than --offline (medians): two `initialize` probes "
            f"and `claude auth status`, run concurrently; one `claude --version` alone takes {ms(v.median)}",
            f"/v1/messages requests received by the fake API during all runs: {prompts} (the doctor sends no prompt)",
        ],
        {"seconds": timings(results), "api_message_requests": prompts, "leftovers": leftovers},
    )


def _ms_range(stats: Stats) -> str:
    return f"{ms(stats.low)} – {ms(stats.high)}"


# -- 6. server ------------------------------------------------------------------------------------
POOL_SIZE, LIVE_SESSIONS, MAX_CONCURRENCY = 2, 4, 4  # LIVE_SESSIONS: the server's default
COLD_OPTIONS = ("--pool-size", "0", "--live-sessions", "0")
WARM_OPTIONS = ("--pool-size", str(POOL_SIZE), "--no-recycle")
RECYCLE_OPTIONS = ("--pool-size", str(POOL_SIZE), "--live-sessions", "0")
LOAD_OPTIONS = ("--pool-size", str(POOL_SIZE), "--max-concurrency", str(MAX_CONCURRENCY), "--queue", "64")
LOAD_SERVERS = {"recycling (default)": LOAD_OPTIONS, "--no-recycle": (*LOAD_OPTIONS, "--no-recycle")}
LOAD_CLIENTS = (1, 2, 4, 8)
LOAD_REQUESTS = 24
RSS_SERVERS = 3
# The flags the server starts its `claude` processes with (besides the stream-json input it writes the prompt to).
SERVER_FLAGS = (
    "--setting-sources=",
    "--strict-mcp-config",
    "--system-prompt-snapshot=off",
    "--tools=",
    "--system-prompt=",
)
# What is timed in each round, in this order, and the name used in ratios and notes.
LATENCY = {
    "raw": (f"raw CLI, `claude -p {' '.join(STREAM_FLAGS)} hi`: first text_delta line", "raw CLI"),
    "raw+flags": ("raw CLI with the server's flags added: first text_delta line", "raw CLI + server flags"),
    "cold": (f"server, cold spawn (`{' '.join(COLD_OPTIONS)}`): first content delta", "cold spawn"),
    "warm": (f"server, warm pool (`{' '.join(WARM_OPTIONS)}`): first content delta", "warm pool"),
    "recycled": (
        f"server, recycled process (`{' '.join(RECYCLE_OPTIONS)}`): a new conversation's first content delta",
        "recycled process",
    ),
    "live": ("server, second turn on the conversation's live process: first content delta", "live process"),
}


def bench_server(runs: int) -> Report:
    with Sandbox() as sandbox:
        raw = sandbox.raw(f"claude -p {' '.join(STREAM_FLAGS)} hi", "-p", *STREAM_FLAGS, "hi")
        lean = sandbox.raw("claude -p (server flags) hi", "-p", *STREAM_FLAGS, *SERVER_FLAGS, "hi")
        first, complete, latency_info = _server_latency(sandbox, raw, lean, runs)
        memory, memory_info = _server_memory(sandbox)
        load, load_exits = _server_load(sandbox)
        leftovers = sandbox.leftovers
    exit_codes = [*latency_info["exit_codes"], *memory_info["exit_codes"], *load_exits]
    stats = {key: Stats.of(values) for key, values in first.items()}
    rows = [time_row(LATENCY[key][0], s) for key, s in stats.items()]
    ratios: dict[str, float] = {}
    for key, base in (("cold", "raw"), ("warm", "raw"), ("recycled", "raw"), ("live", "raw"), ("cold", "raw+flags")):
        name = f"{LATENCY[key][1]} / {LATENCY[base][1]}"
        ratios[name] = stats[key].median / stats[base].median
        rows.append(ratio_row(name, ratios[name], [a / b for a, b in zip(first[key], first[base], strict=True)]))

    load_rows = []
    for level in load:
        latency = Stats.of(level["latency"])
        load_rows.append(
            [
                level["server"],
                str(level["clients"]),
                str(level["requests"]),
                ", ".join(f"{code}: {n}" for code, n in sorted(level["statuses"].items())),
                f"{level['seconds']:.2f} s",
                f"{level['per_second']:.2f}",
                f"{ms(latency.median)} ({_ms_range(latency)})",
                ", ".join(f"{name} {n}" for name, n in sorted(level["processes"].items())),
                f"{level['cpu_seconds_per_request']:.2f}",
                f"{_mib(level['peak_rss_kib'])} / {_mib(level['peak_private_kib'])}",
                f"{level['cpu_busy']:.0%}",
            ]
        )
    memory_rows = []
    for label, samples in memory.items():
        cells = [f"{_mib(s.median)} ({_mib_range(s)})" for s in (Stats.of(samples[f]) for f in MEMORY_FIELDS)]
        memory_rows.append([label, *cells, str(len(samples[MEMORY_FIELDS[0]]))])
    failed = sum(n for level in load for code, n in level["statuses"].items() if code != 200)
    to_end = ", ".join(f"{LATENCY[key][1]} {ms(Stats.of(values).median)}" for key, values in complete.items())
    notes = [
        f"cold spawn through the server − raw CLI with the server's flags: "
        f"{ms(stats['cold'].median - stats['raw+flags'].median)} (medians)",
        f"to the end of the answer (the raw CLI's exit; the server's `data: [DONE]`), medians: {to_end}",
        "every warm-pool turn ran on a warm process, every second turn on its live one and every timed recycled "
        "turn on a recycled one (checked in each answer's `claude_max.process`)",
        *_load_notes(load),
        f"idle `claude` children of a fresh `{' '.join(WARM_OPTIONS)}` server: {latency_info['warm_children']}"
        + (
            " (one warm process per model): the memory servers got their second one from a request for another model"
            if any(memory_info["second_model"])
            else ""
        ),
        f"non-200 responses under load: {failed}"
        + "".join(f"; {level['clients']} clients: {level['errors'][0]}" for level in load if level["errors"]),
        f"exit status of the servers on SIGTERM: {', '.join(sorted({str(c) for c in exit_codes}))}",
    ]
    return Report(
        "server",
        "`claude-max serve`: time to the first token, throughput, memory",
        TIME_COLUMNS,
        rows,
        notes=notes,
        data={
            "first_content_seconds": first,
            "complete_seconds": complete,
            "ratios": ratios,
            "load": [dict(level, statuses={str(k): v for k, v in level["statuses"].items()}) for level in load],
            "memory_kib": memory,
            "idle_children": {
                "fresh": latency_info["warm_children"],
                "memory_servers": memory_info["children"],
                "second_model_request": memory_info["second_model"],
            },
            "exit_codes": exit_codes,
            "leftovers": leftovers,
        },
        tables=[
            Table(
                f"Throughput: plain (non-streaming) requests, {LOAD_REQUESTS} per level, against "
                f"`claude-max serve {' '.join(LOAD_OPTIONS)}`, recycling (the default) and with `--no-recycle`; "
                "each client sends its next request as soon as the previous one is answered. Process: where each "
                "request's `claude` came from. CPU-s per request: the server and every process below it (those "
                "that ended included), over the level, per answered request. Peak memory: the most that server "
                "and its processes held at once (VmRSS / private RssAnon, summed, sampled every 0.1 s). CPU busy: "
                "both cores of the whole machine, during the level.",
                [
                    "server",
                    "clients",
                    "requests",
                    "statuses",
                    "wall",
                    "requests/s",
                    "latency median (min – max)",
                    "process",
                    "CPU-s per request",
                    "peak memory",
                    "CPU busy",
                ],
                load_rows,
            ),
            Table(
                f"Memory of idle `{' '.join(WARM_OPTIONS)} --live-sessions 0` servers holding {POOL_SIZE} warm "
                f"processes, from `/proc/<pid>/status`, {RSS_SERVERS} servers.",
                [
                    "process",
                    "VmRSS median (min – max)",
                    "of which private, RssAnon",
                    "peak, VmHWM",
                    "samples",
                ],
                memory_rows,
            ),
        ],
    )


def _load_notes(load: list[dict[str, Any]]) -> list[str]:
    """Recycling against --no-recycle at the most clients, as ratios."""
    top = max(level["clients"] for level in load)
    by = {level["server"]: level for level in load if level["clients"] == top}
    new, old = by.get("recycling (default)"), by.get("--no-recycle")
    if new is None or old is None:
        return []
    return [
        f"{top} clients, recycling / --no-recycle: requests/s ×{new['per_second'] / old['per_second']:.2f} "
        f"({new['per_second']:.2f} / {old['per_second']:.2f}), CPU-s per request "
        f"{new['cpu_seconds_per_request']:.2f} / {old['cpu_seconds_per_request']:.2f}, peak memory "
        f"{_mib(new['peak_rss_kib'])} / {_mib(old['peak_rss_kib'])} (private {_mib(new['peak_private_kib'])} / "
        f"{_mib(old['peak_private_kib'])})"
    ]


def _mib_range(stats: Stats) -> str:
    return f"{_mib(stats.low)} – {_mib(stats.high)}"


def _server_turn(
    server: Server,
    messages: list[Message],
    process: str | tuple[str, ...],
    continued: str,
    *,
    stream: bool = True,
    model: str = "claude-max",
) -> Turn:
    """One request that must succeed, answer the fake API's text and run on the expected kind of process."""
    turn = server.chat(messages, stream=stream, model=model)
    got = (turn.status, turn.text, turn.process, turn.meta.get("continued"))
    kinds = (process,) if isinstance(process, str) else process
    if (
        got[:2] != (200, ANSWER.decode())
        or turn.process not in kinds
        or got[3] != continued
        or (stream and turn.first is None)
    ):
        raise BenchError(f"{server.label}: expected (200, answer, {process!r}, {continued!r}), got {got!r}")
    return turn


def _server_latency(
    sandbox: Sandbox, raw: Command, lean: Command, runs: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Rounds of: raw CLI, raw CLI with the server's flags, cold server, warm server (a new conversation),
    and the second turn of that conversation. Between server requests, the servers settle (a replacement
    warm process finishes starting, a finished process is stopped), so that no measurement pays for them."""
    first: dict[str, list[float]] = {key: [] for key in LATENCY}
    complete: dict[str, list[float]] = {key: [] for key in LATENCY}
    expect = b'"result":"' + ANSWER
    with (
        Server(sandbox, *COLD_OPTIONS) as cold,
        Server(sandbox, *WARM_OPTIONS) as warm,
        Server(sandbox, *RECYCLE_OPTIONS) as recycling,
    ):
        cold.settle(most=0)
        warm.settle(least=1)
        recycling.settle(least=1)
        warm_children = len(warm.children())
        for round_ in range(runs + 1):  # round 0 warms up
            samples: dict[str, tuple[float | None, float]] = {}
            for key, command in (("raw", raw), ("raw+flags", lean)):
                done = run(command, sandbox, first=b'"text_delta"', expect=expect)
                samples[key] = (done.first, done.seconds)
            # A distinct first message per round: each round is a new conversation for the servers.
            opening = [user(f"hi {round_}")]
            turn = _server_turn(cold, opening, "cold", "new")
            samples["cold"] = (turn.first, turn.seconds)
            cold.settle(most=0)  # its process stops after the turn (--live-sessions 0)
            turn = _server_turn(warm, opening, "warm", "new")
            samples["warm"] = (turn.first, turn.seconds)
            warm.settle(least=1)
            turn = _server_turn(warm, [*opening, assistant(turn.text), user("and again")], "live", "live")
            samples["live"] = (turn.first, turn.seconds)
            warm.settle(least=1)
            # Round 0 leaves a finished conversation behind, so every later round finds a recycled process.
            turn = _server_turn(recycling, opening, "recycled" if round_ else ("warm", "cold", "recycled"), "new")
            samples["recycled"] = (turn.first, turn.seconds)
            recycling.settle(least=1)
            if round_:
                for key, (to_first, to_end) in samples.items():
                    if to_first is None:
                        raise BenchError(f"{LATENCY[key][0]}: no answer text")
                    first[key].append(round(to_first, 4))
                    complete[key].append(round(to_end, 4))
    exit_codes = [cold.exit_code, warm.exit_code, recycling.exit_code]
    return first, complete, {"exit_codes": exit_codes, "warm_children": warm_children}


def _server_memory(sandbox: Sandbox) -> tuple[dict[str, dict[str, list[int]]], dict[str, Any]]:
    """:data:`MEMORY_FIELDS` (KiB) of the warm `claude` children of idle servers, and of the servers themselves."""
    children: dict[str, list[int]] = {name: [] for name in MEMORY_FIELDS}
    own: dict[str, list[int]] = {name: [] for name in MEMORY_FIELDS}
    counts, exit_codes, second_model = [], [], []
    for _ in range(RSS_SERVERS):
        with Server(sandbox, *WARM_OPTIONS, "--live-sessions", "0") as server:
            server.settle(least=1)
            second_model.append(len(server.children()) < POOL_SIZE)
            if second_model[-1]:
                # A pool that keeps one warm process per model (and options): a request for a second model
                # fills the second place; with --live-sessions 0 the request's own process stops after it.
                _server_turn(server, [user("hi")], "cold", "new", model="claude-max-sonnet")
            server.settle(least=POOL_SIZE, most=POOL_SIZE)
            pids = server.children()
            counts.append(len(pids))
            for pid in [*pids, server.pid]:
                target = own if pid == server.pid else children
                for name, kib in memory_kib(pid).items():
                    target[name].append(kib)
        exit_codes.append(server.exit_code)
    memory = {"warm `claude` child (idle, ready)": children, "the server's own Python process (idle)": own}
    return memory, {"children": counts, "exit_codes": exit_codes, "second_model": second_model}


def _server_load(sandbox: Sandbox) -> tuple[list[dict[str, Any]], list[int | None]]:
    """Completed requests per second, CPU per request and peak memory with 1, 2, 4 and 8 clients against
    a server that recycles its processes (the default) and one that does not, one after the other."""
    levels = []
    exit_codes = []
    idle_limit = 2 * POOL_SIZE + LIVE_SESSIONS  # warm and recycled processes, live conversations
    for name, options in LOAD_SERVERS.items():
        with Server(sandbox, *options) as server:
            server.settle(least=1)
            for clients in LOAD_CLIENTS:
                levels.append({"server": name, **_load(server, clients, LOAD_REQUESTS)})
                server.settle(least=1)
                if (idle := len(server.children())) > idle_limit:
                    raise BenchError(
                        f"{server.label}: {idle} idle claude children after {clients} clients, more than "
                        f"2 × --pool-size + --live-sessions = {idle_limit}: the server leaks processes"
                    )
        exit_codes.append(server.exit_code)
    return levels, exit_codes


def _load(
    server: Server, clients: int, requests: int, *, model: str = "claude-max", watch: bool = True
) -> dict[str, Any]:
    """``requests`` plain requests from ``clients`` threads, each with its own connection. Also measured:
    the CPU time of the server and every process below it (reaped ones included) per request, and the peak
    of their summed memory (sampled every 0.1 s)."""
    numbers = iter(range(requests))
    lock = threading.Lock()
    turns: list[Turn] = []
    # Warm, warming, recycled, live and running processes, and as many again being stopped; beyond that the
    # server leaks (each one is ~170 MiB), and the level stops. The idle count after each level is the exact
    # check. (``watch=False``: another project's server, whose processes are its own business.)
    limit = 3 * POOL_SIZE + LIVE_SESSIONS + 2 * MAX_CONCURRENCY
    most = [0]
    peak = [0, 0]
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=120.0) as connection:
            while not stop.is_set():
                with lock:
                    number = next(numbers, None)
                if number is None:
                    return
                # Distinct messages: each request is a new conversation of the same caller.
                turn = server.chat([user(f"hi {clients}-{number}")], stream=False, client=connection, model=model)
                with lock:
                    turns.append(turn)

    def watchdog() -> None:
        while not stop.wait(0.1):
            rss, anon = tree_memory_kib(server.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            most[0] = max(most[0], len(server.children()))
            if watch and most[0] > limit:
                stop.set()

    cpu_before = _cpu_jiffies()
    tree_before = tree_cpu_seconds(server.pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients + 1) as pool:
        watching = pool.submit(watchdog)
        try:
            for future in [pool.submit(client) for _ in range(clients)]:
                future.result()
            seconds = time.perf_counter() - start
            if stop.is_set():
                raise BenchError(f"{server.label}: {most[0]} claude children under load (limit {limit}): it leaks")
        finally:
            stop.set()  # a client that failed must not leave the watchdog running
        watching.result()
    busy, total = (after - before for after, before in zip(_cpu_jiffies(), cpu_before, strict=True))
    server.settle()  # processes stopped after the level are reaped: their CPU time is counted
    tree_cpu = tree_cpu_seconds(server.pid) - tree_before
    ok = [t for t in turns if t.status == 200]
    return {
        "cpu_seconds_per_request": tree_cpu / max(len(ok), 1),
        "peak_rss_kib": peak[0],
        "peak_private_kib": peak[1],
        "clients": clients,
        "requests": requests,
        "seconds": round(seconds, 4),
        "per_second": len(ok) / seconds,
        "cpu_busy": busy / total if total else 0.0,
        "statuses": Counter(t.status for t in turns),
        "processes": Counter(t.process or "?" for t in ok),
        "latency": [round(t.seconds, 4) for t in turns],
        "errors": [t.text for t in turns if t.status != 200][:5],
        "most_children": most[0],
    }


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from the first line of /proc/stat."""
    user_, nice, system, idle, iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    busy = user_ + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


# -- warm: llm through the warm server ----------------------------------------------------------------
def bench_warm(runs: int) -> Report:
    """`llm -m claude-max hi` through a running warm server, against llm's own start-up and the raw CLI; the
    same prompt without a warm server beside it."""
    import signal
    import sqlite3
    import subprocess
    import sys

    from llm_claude_max import warm

    with Sandbox() as sandbox:
        env = sandbox.plugin_env()
        log = (sandbox.root / "warm-server.log").open("wb")
        # What `llm claude-max warm start` runs in the background, here in the benchmark's hands.
        server = subprocess.Popen(
            [sys.executable, "-m", "llm_claude_max.cli", "warm", "serve", "--idle-timeout", "3600"],
            env=env, cwd=sandbox.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        sandbox.spared.add(server.pid)
        try:
            deadline = time.monotonic() + 60
            while warm.find(env) is None:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise BenchError("the warm server did not start: " + (sandbox.root / "warm-server.log").read_text())
                time.sleep(0.1)
            through = sandbox.llm("llm -m claude-max hi (warm server running)", "-m", "claude-max", "hi")
            # Another environment does not find the server: the prompt starts its own CLI, as without one.
            direct = Command(
                "llm -m claude-max hi (no warm server)", through.argv, {**env, "BENCH_NO_WARM": "1"}, through.cwd
            )
            version = sandbox.llm("llm --version", "--version")
            raw = sandbox.raw(f"claude -p {' '.join(STREAM_FLAGS)} hi", "-p", *STREAM_FLAGS, "hi")
            results = interleave(
                [through, direct, version, raw],
                sandbox,
                runs,
                first={through.label: b"", direct.label: b"", raw.label: b'"text_delta"'},
                expect={through.label: ANSWER, direct.label: ANSWER, raw.label: b'"result":"' + ANSWER},
            )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
            sandbox.spared.discard(server.pid)
        with sqlite3.connect(sandbox.root / "llm" / "logs.db") as db:  # llm 0.36 logs prompts as turns
            rows = [json.loads(r[0]) for r in db.execute("select response_json from turns") if r[0]]
        leftovers = sandbox.leftovers
    routes = Counter(f"{'warm server' if r.get('via') else 'own CLI'}: {r.get('process') or 'cold'}" for r in rows)
    p, d, v, r = (results[c.label] for c in (through, direct, version, raw))
    wall = [Stats.of(x.seconds for x in runs_) for runs_ in (p, d, v, r)]
    ratio = (wall[0].median - wall[2].median) / wall[3].median
    direct_ratio = (wall[1].median - wall[2].median) / wall[3].median
    rows_out = [time_row(c.label, w) for c, w in zip((through, direct, version, raw), wall, strict=True)]
    rows_out += [
        ratio_row(
            "(llm prompt through the warm server − llm --version) / raw CLI",
            ratio,
            [(a.seconds - c.seconds) / e.seconds for a, c, e in zip(p, v, r, strict=True)],
        ),
        ratio_row(
            "(llm prompt, no warm server − llm --version) / raw CLI",
            direct_ratio,
            [(b.seconds - c.seconds) / e.seconds for b, c, e in zip(d, v, r, strict=True)],
        ),
    ]
    for label, runs_ in ((through.label, p), (direct.label, d)):
        rows_out.append(time_row(f"first text byte on stdout, {label}", Stats.of(_first(x) for x in runs_)))
    rows_out.append(time_row("first text_delta line, raw CLI", Stats.of(_first(x) for x in r)))
    for label, runs_ in ((through.label, p), (direct.label, d), ("raw CLI", r)):
        rows_out.append(time_row(f"first text → exit, {label}", Stats.of(x.seconds - _first(x) for x in runs_)))
    return Report(
        "warm",
        "`llm -m claude-max` through the warm server vs its own CLI, llm's start-up and the raw CLI",
        TIME_COLUMNS,
        rows_out,
        [Check("(llm prompt through the warm server − llm --version) / raw CLI", round(ratio, 3), 0.2)],
        [
            "where the logged prompts ran (llm's logs.db, the untimed first round included): "
            + ", ".join(f"{k} {n}" for k, n in sorted(routes.items())),
            f"through the warm server, a prompt takes {ms(wall[0].median - wall[2].median)} beyond llm's own "
            f"start-up; with its own CLI {ms(wall[1].median - wall[2].median)} (medians)",
        ],
        {
            "seconds": timings(results),
            "ratio": ratio,
            "direct_ratio": direct_ratio,
            "routes": routes,
            "leftovers": leftovers,
        },
    )


# -- compare: other projects' servers ----------------------------------------------------------------
def bench_compare(runs: int) -> Report:
    """llm-claude-max's server side by side with claudegate and claude-max-api-proxy, same sandbox: a new
    conversation's first token, a second turn's, throughput with 8 clients, CPU per request, peak memory."""
    import contextlib

    from . import others
    from .server import External, free_port

    others.install()
    with Sandbox() as sandbox, contextlib.ExitStack() as stack:
        raw = sandbox.raw(f"claude -p {' '.join(STREAM_FLAGS)} hi", "-p", *STREAM_FLAGS, "hi")
        servers: dict[str, tuple[Server, str]] = {
            "llm-claude-max (recycling, the default)": (Server(sandbox, "--pool-size", str(POOL_SIZE)), "claude-max"),
            "llm-claude-max --no-recycle": (Server(sandbox, *WARM_OPTIONS), "claude-max"),
            f"claudegate {others.CLAUDEGATE[1]}": (others.claudegate(sandbox, free_port()), "opus"),
            f"claude-max-api-proxy {others.PROXY[1]}": (others.claude_max_api_proxy(sandbox, free_port()), "opus"),
        }
        for server, _ in servers.values():
            stack.enter_context(server)
            server.settle(least=0 if isinstance(server, External) else 1)
        first: dict[str, list[float]] = {
            "raw": [],
            **{f"{n} new": [] for n in servers},
            **{f"{n} 2nd": [] for n in servers},
        }
        kinds: dict[str, Counter[str]] = {name: Counter() for name in servers}
        for round_ in range(runs + 1):  # round 0 warms up
            done = run(raw, sandbox, first=b'"text_delta"', expect=b'"result":"' + ANSWER)
            sample = {"raw": done.first}
            for name, (server, model) in servers.items():
                quiet = 0 if isinstance(server, External) else 1
                opening = [user(f"hi {round_}")]
                turn = _any_turn(server, opening, model)
                sample[f"{name} new"] = turn.first
                kinds[name][turn.process or "?"] += bool(round_)
                server.settle(least=quiet)
                turn = _any_turn(server, [*opening, assistant(turn.text), user("and again")], model)
                sample[f"{name} 2nd"] = turn.first
                server.settle(least=quiet)
            if round_:
                for key, value in sample.items():
                    if value is None:
                        raise BenchError(f"{key}: no answer text")
                    first[key].append(round(value, 4))
        load = {}
        for name, (server, model) in servers.items():
            load[name] = _load(server, 8, LOAD_REQUESTS, model=model, watch=False)
            server.settle(least=0)
    leftovers = sandbox.leftovers
    base = Stats.of(first["raw"]).median
    rows = []
    for name in servers:
        new, second, level = Stats.of(first[f"{name} new"]), Stats.of(first[f"{name} 2nd"]), load[name]
        failed = sum(n for code, n in level["statuses"].items() if code != 200)
        rows.append(
            [
                name,
                f"{ms(new.median)} ({new.median / base:.2f}×)",
                f"{ms(second.median)} ({second.median / base:.2f}×)",
                f"{level['per_second']:.2f}" + (f" ({failed} failed)" if failed else ""),
                f"{level['cpu_seconds_per_request']:.2f}",
                f"{_mib(level['peak_rss_kib'])} / {_mib(level['peak_private_kib'])}",
            ]
        )
    return Report(
        "compare",
        "OpenAI-compatible servers over the same Claude Code CLI, side by side (same fake API, same machine)",
        [
            "server",
            "new conversation: first token (/ raw CLI)",
            "second turn: first token (/ raw CLI)",
            "requests/s, 8 clients",
            "CPU-s per request",
            "peak memory (RSS / private)",
        ],
        rows,
        notes=[
            f"raw CLI (`claude -p {' '.join(STREAM_FLAGS)} hi`), first text_delta line: {ms(base)} (median of {runs})",
            "llm-claude-max's new conversations ran on: "
            + "; ".join(
                f"{n}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds[n].items()))
                for n in servers
                if not isinstance(servers[n][0], External)
            ),
            f"throughput: {LOAD_REQUESTS} plain requests from 8 clients, each a new conversation, against each server "
            "alone; CPU and memory as in the server benchmark",
        ],
        data={
            "first_seconds": first,
            "load": {n: dict(v, statuses={str(k): c for k, c in v["statuses"].items()}) for n, v in load.items()},
            "processes": kinds,
            "leftovers": leftovers,
        },
    )


def _any_turn(server: Server, messages: list[Message], model: str) -> Turn:
    turn = server.chat(messages, stream=True, model=model)
    if turn.status != 200 or ANSWER.decode() not in turn.text or turn.first is None:
        raise BenchError(f"{server.label}: {turn.status} {turn.text[:300]!r}")
    return turn


# -- tools ----------------------------------------------------------------------------------------
STAMPED_FUNCTIONS = """\
def multiply(a: int, b: int) -> int:
    'Multiply two integers.'
    import os, time

    with open(os.environ["BENCH_TOOL_STAMP"], "a") as stamps:  # when llm runs the tool (a system-wide clock)
        stamps.write(f"{time.monotonic()}\\n")
    return a * b
"""


def bench_tools(runs: int) -> Report:
    """A tool round trip through `llm --functions`: from the end of the model's tool call (the fake API has
    written its last byte) to the next upstream request, which carries the result; against the same run's
    cold start (llm launched -> first upstream request)."""
    from tests.fakeapi import Reply, ToolUse

    round_trips: list[float] = []
    to_tool: list[float] = []
    from_tool: list[float] = []
    colds: list[float] = []
    with Sandbox() as sandbox:
        stamps = sandbox.root / "tool-stamps"
        command = sandbox.llm("llm --functions", "-m", "claude-max", "--functions", STAMPED_FUNCTIONS, "what is 3*7")
        command.env["BENCH_TOOL_STAMP"] = str(stamps)
        for _ in range(runs):
            sandbox.api.requests.clear()
            stamps.unlink(missing_ok=True)
            sandbox.api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 3, "b": 7})]), Reply(text="21"))
            started = time.monotonic()
            run(command, sandbox, expect=b"21")
            first, second = sandbox.api.message_requests[:2]
            if first.answered_at is None:
                raise BenchError("the fake API did not finish its tool-call answer")
            (ran,) = map(float, stamps.read_text().split())
            round_trips.append(second.at - first.answered_at)
            to_tool.append(ran - first.answered_at)
            from_tool.append(second.at - ran)
            colds.append(first.at - started)
        leftovers = sandbox.leftovers
    trip, cold = Stats.of(round_trips), Stats.of(colds)
    ratio = trip.median / cold.median
    rows = [
        time_row("tool round trip: end of the tool call -> next upstream request", trip),
        time_row("of which: end of the tool call -> llm runs the tool", Stats.of(to_tool)),
        time_row("of which: llm runs the tool -> next upstream request", Stats.of(from_tool)),
        time_row("cold: llm launched -> first upstream request", cold),
        ratio_row("round trip / cold", ratio, [a / b for a, b in zip(round_trips, colds, strict=True)]),
    ]
    return Report(
        "tools",
        "Tool round trip through a paused CLI vs a cold start, same fake API",
        TIME_COLUMNS,
        rows,
        [Check("tool round trip, median ms", round(trip.median * 1000, 1), 50)],
        ["the round trip includes llm running the tool and the CLI writing the result upstream"],
        {
            "round_trip_seconds": round_trips,
            "to_tool_seconds": to_tool,
            "from_tool_seconds": from_tool,
            "cold_seconds": colds,
            "ratio": ratio,
            "leftovers": leftovers,
        },
    )


TRACE_SEGMENTS = {
    "hook": ("the tool call's last byte sent -> the CLI asks the plugin's hook", "CLI"),
    "deferred": ("-> the plugin answers defer", "plugin"),
    "result": ("-> the CLI ends the step (its result read)", "CLI"),
    "tool": ("-> llm runs the tool", "plugin and llm"),
    "written": ("-> the plugin writes the result to the paused CLI", "llm and plugin"),
    "request": ("-> the CLI's next upstream request", "CLI"),
}


def bench_tools_trace(runs: int) -> Report:
    """Where a tool round trip in the plugin goes: the moments of :mod:`bench.tooltrace` (an llm chain in a
    child process, stamped inside the plugin) beside the fake API's, segment by segment."""
    from tests.fakeapi import Reply, ToolUse

    segments: dict[str, list[float]] = {name: [] for name in TRACE_SEGMENTS}
    with Sandbox() as sandbox:
        child = [sys.executable, str(Path(__file__).with_name("tooltrace.py"))]
        command = Command("tool trace", child, sandbox.plugin_env(), sandbox.root)
        for _ in range(runs):
            sandbox.api.requests.clear()
            sandbox.api.enqueue(Reply(text="", tool_uses=[ToolUse("multiply", {"a": 3, "b": 7})]), Reply(text="21"))
            done = run(command, sandbox)
            first, second = sandbox.api.message_requests[:2]
            if first.answered_at is None:
                raise BenchError("the fake API did not finish its tool-call answer")
            moments = {"start": first.answered_at, **json.loads(done.stdout), "request": second.at}
            for before, name in itertools.pairwise(moments):
                segments[name].append(moments[name] - moments[before])
        leftovers = sandbox.leftovers

    def row(label: str, who: str, samples: list[float]) -> list[str]:
        stats = Stats.of(samples)
        spread = f"{stats.low * 1000:.1f} – {stats.high * 1000:.1f} ms"
        return [label, who, f"{stats.median * 1000:.1f} ms", spread, str(stats.n)]

    rows = [row(label, who, segments[name]) for name, (label, who) in TRACE_SEGMENTS.items()]
    rows.append(row("tool round trip (the sum)", "", [sum(parts) for parts in zip(*segments.values(), strict=True)]))
    medians = {name: Stats.of(samples).median for name, samples in segments.items()}
    cli = sum(medians[name] for name, (_, who) in TRACE_SEGMENTS.items() if who == "CLI")
    return Report(
        "tools-trace",
        "Where a tool round trip in the plugin goes, segment by segment",
        ["segment", "whose work", "median", "min – max", "runs"],
        rows,
        [],
        [f"the CLI's segments: {cli * 1000:.1f} ms of the {sum(medians.values()) * 1000:.1f} ms the medians add up to"],
        {"segments_seconds": segments, "leftovers": leftovers},
    )


# -- server-tools ---------------------------------------------------------------------------------------
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_STEPS = {
    "cold": "cold: a new conversation with a tool, request sent -> first tool-call delta",
    "trip": "round trip: the tool result sent -> first content delta of the answer",
    "upstream": "of which: the tool result sent -> the upstream request carrying it",
    "answer": "of which: that upstream request -> first content delta at the client",
}


def bench_server_tools(runs: int) -> Report:
    """A tool round trip through `claude-max serve` on its paused process, against a cold request of the same
    conversation, both streamed, in the same round: (1) a new conversation offering a tool, which the model
    calls (the server starts a `claude` for it: ``--pool-size 0``), timed to the first tool-call delta;
    (2) the tool's result sent back, timed to the first content delta of the answer."""
    from tests.fakeapi import Reply, ToolUse

    samples: dict[str, list[float]] = {key: [] for key in TOOL_STEPS}
    load = [os.getloadavg()[0]]
    with Sandbox() as sandbox, Server(sandbox, *COLD_OPTIONS) as server:
        server.settle(most=0)
        for round_ in range(runs + 1):  # round 0 warms up
            sandbox.api.requests.clear()
            sandbox.api.enqueue(Reply(text="", tool_uses=[ToolUse("get_weather", {"city": "Paris"})]))
            messages: list[dict[str, Any]] = [{"role": "user", "content": f"Weather in Paris? ({round_})"}]
            body = {"model": "claude-max", "messages": messages, "tools": [WEATHER_TOOL], "stream": True}
            cold = _tool_turn(server, body, "cold", "new")
            if len(cold.calls) != 1 or cold.calls[0]["name"] != "get_weather":
                raise BenchError(f"{server.label}: expected one get_weather call, got {cold.calls!r}")
            call = cold.calls[0]
            function = {"name": call["name"], "arguments": call["arguments"]}
            assistant_call = {"id": call["id"], "type": "function", "function": function}
            messages += [
                {"role": "assistant", "content": None, "tool_calls": [assistant_call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "22C"},
            ]
            trip = _tool_turn(server, {**body, "messages": messages}, "paused", "paused")
            upstream = sandbox.api.message_requests
            if len(upstream) != 2 or _result_of(upstream[1].body) != "22C":
                raise BenchError(f"{server.label}: the tool result did not reach the API in one request")
            server.settle(most=0)  # the process ends after the answer (--live-sessions 0)
            if round_:
                assert cold.first is not None and trip.first is not None
                samples["cold"].append(round(cold.first, 4))
                samples["trip"].append(round(trip.first, 4))
                samples["upstream"].append(round(upstream[1].at - trip.sent, 4))
                samples["answer"].append(round(trip.first - (upstream[1].at - trip.sent), 4))
        load.append(os.getloadavg()[0])
        leftovers = sandbox.leftovers
    stats = {key: Stats.of(values) for key, values in samples.items()}
    ratio = stats["trip"].median / stats["cold"].median
    per_round = [a / b for a, b in zip(samples["trip"], samples["cold"], strict=True)]
    rows = [time_row(label, stats[key]) for key, label in TOOL_STEPS.items()]
    rows.append(ratio_row("round trip / cold", ratio, per_round))
    return Report(
        "server-tools",
        "A tool round trip through `claude-max serve` (the paused process takes the result) vs a cold request",
        TIME_COLUMNS,
        rows,
        notes=[
            f"server: `claude-max serve {' '.join(COLD_OPTIONS)}`; every round is a new conversation, its "
            "second request continued on the paused process (checked in each answer's `claude_max`)",
            f"load average (1 min) at the start and the end: {load[0]:.2f}, {load[1]:.2f}",
        ],
        data={"seconds": samples, "ratio": ratio, "loadavg": load, "leftovers": leftovers},
    )


def _tool_turn(server: Server, body: dict[str, Any], process: str, continued: str) -> Turn:
    turn = server.complete(body)
    got = (turn.status, turn.process, turn.meta.get("continued"))
    if got != (200, process, continued) or turn.first is None:
        raise BenchError(f"{server.label}: expected (200, {process!r}, {continued!r}), got {got!r}: {turn.text}")
    return turn


def _result_of(body: dict[str, Any] | None) -> Any:
    """The content of the one tool result an upstream request carries (in its last non-system message)."""
    from tests.fakeapi import tool_results

    messages = [m for m in (body or {}).get("messages") or [] if m.get("role") != "system"]
    found = tool_results({"messages": messages[-1:]})
    return found[0]["content"] if len(found) == 1 else None


BENCHMARKS: dict[str, tuple[Callable[[int], Report], int]] = {
    "import": (bench_import, 15),
    "prompt": (bench_prompt, 10),
    "request-size": (bench_request_size, 1),
    "rss": (bench_rss, 5),
    "doctor": (bench_doctor, 10),
    "server": (bench_server, 10),
    "tools": (bench_tools, 10),
    "tools-trace": (bench_tools_trace, 10),
    "server-tools": (bench_server_tools, 10),
    "warm": (bench_warm, 10),
    "compare": (bench_compare, 10),
}
"""name -> (benchmark, default number of runs)."""
