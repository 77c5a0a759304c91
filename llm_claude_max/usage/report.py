"""``claude-max usage report``: what went through llm, from llm's own ``logs.db``.

Prompts, input/output/cache tokens and the CLI's list-price estimate of every ``claude-max`` model
response llm logged, per day (local time) and per model, with a chart of daily tokens. The estimate
is the CLI's own ``total_cost_usd`` figure, recorded by the plugin in ``response_json``; it is what
the tokens would cost at API list prices, never a charge to the subscription.

Reads llm 0.36's ``turns`` table and the legacy ``responses`` table (history logged by older llm
versions; rows present in both are counted once), read-only.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import render
from .windows import iso

SCHEMA_VERSION = 1
MODELS = "(model = 'claude-max' or model like 'claude-max-%')"
COST_NOTE = (
    "est. cost: the Claude Code CLI's estimate at API list prices, for comparison only; "
    "your subscription is not charged per token"
)
CHART_DAYS = 31


class ReportError(Exception):
    """The log database cannot be read."""


@dataclass(frozen=True)
class Row:
    """One logged response."""

    when: dt.datetime
    """Local time."""
    model: str
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float | None = None


@dataclass
class Totals:
    prompts: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cost: float = 0.0
    priced: int = 0
    """Responses that carried a cost estimate."""

    def add(self, row: Row) -> None:
        self.prompts += 1
        self.input += row.input
        self.output += row.output
        self.cache_read += row.cache_read
        self.cache_write += row.cache_write
        if row.cost is not None:
            self.cost += row.cost
            self.priced += 1

    def merge(self, other: Totals) -> None:
        self.prompts += other.prompts
        self.input += other.input
        self.output += other.output
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write
        self.cost += other.cost
        self.priced += other.priced

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    def as_json(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
            "total_tokens": self.tokens,
            "cost_estimate_usd": round(self.cost, 6) if self.priced else None,
            "responses_without_estimate": self.prompts - self.priced,
        }


@dataclass
class Report:
    database: Path
    since: dt.date
    until: dt.date
    days: dict[dt.date, dict[str, Totals]] = field(default_factory=dict)
    models: dict[str, Totals] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)

    @classmethod
    def of(cls, rows: Iterable[Row], database: Path, since: dt.date, until: dt.date) -> Report:
        days: dict[dt.date, dict[str, Totals]] = defaultdict(lambda: defaultdict(Totals))
        models: dict[str, Totals] = defaultdict(Totals)
        total = Totals()
        for row in rows:
            if not since <= row.when.date() <= until:
                continue
            days[row.when.date()][row.model].add(row)
            models[row.model].add(row)
            total.add(row)
        ordered = {day: dict(sorted(days[day].items())) for day in sorted(days)}
        return cls(database, since, until, ordered, dict(sorted(models.items())), total)

    def day_totals(self, day: dt.date) -> Totals:
        totals = Totals()
        for model in self.days.get(day, {}).values():
            totals.merge(model)
        return totals


# -- reading llm's database ----------------------------------------------------------------------------


def database_path(env: Mapping[str, str]) -> Path:
    """llm's log database: ``$LLM_USER_PATH/logs.db``, else in llm's user directory (``llm logs path``)."""
    if env.get("LLM_USER_PATH"):
        return Path(env["LLM_USER_PATH"]).expanduser() / "logs.db"
    import llm

    return Path(llm.user_dir()) / "logs.db"  # type: ignore[no-untyped-call]


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"pragma table_info({table})")}


def _select(table: str, columns: set[str], *, exclude_turns: bool) -> str:
    def column(name: str) -> str:
        return name if name in columns else "null"

    cost = (
        "case when json_valid(response_json) then json_extract(response_json, '$.cost_estimate_usd.amount') end"
        if "response_json" in columns
        else "null"
    )
    where = f"{MODELS} and datetime_utc >= ?" + (" and id not in (select id from turns)" if exclude_turns else "")
    return (
        f"select model, datetime_utc, {column('input_tokens')}, {column('output_tokens')}, "
        f"{column('token_details')}, {cost} from {table} where {where}"
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _row(model: str, when: str, input_tokens: Any, output_tokens: Any, details: Any, cost: Any) -> Row | None:
    try:
        moment = dt.datetime.fromisoformat(when)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # llm logs UTC
    try:
        extra = json.loads(details) if details else {}
    except ValueError:
        extra = {}
    extra = extra if isinstance(extra, dict) else {}
    return Row(
        moment.astimezone(),
        model,
        _int(input_tokens),
        _int(output_tokens),
        _int(extra.get("cache_read_input_tokens")),
        _int(extra.get("cache_creation_input_tokens")),
        float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
    )


def read(database: Path, since: dt.date) -> list[Row]:
    """Every claude-max response logged since local midnight of ``since``. Raises :class:`ReportError`."""
    if not database.is_file():
        raise ReportError(
            f"There is no llm log database at {database}. llm logs prompts there by default "
            "(`llm logs status`); run a prompt with `llm -m claude-max ...` first."
        )
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.datetime.now().astimezone().tzinfo)
    lower = start.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    try:
        db = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ReportError(f"Cannot open {database}: {exc}") from None
    try:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
        queries = []
        if "turns" in tables:
            queries.append(_select("turns", _columns(db, "turns"), exclude_turns=False))
        if "responses" in tables:
            queries.append(_select("responses", _columns(db, "responses"), exclude_turns="turns" in tables))
        rows = [r for q in queries for r in db.execute(q, (lower,))]
    except sqlite3.Error as exc:
        raise ReportError(f"Cannot read {database} as an llm log database: {exc}") from None
    finally:
        db.close()
    return [row for raw in rows if (row := _row(*raw)) is not None]


# -- output ---------------------------------------------------------------------------------------------


def document(report: Report, *, now: float) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": iso(now),
        "database": str(report.database),
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "cost_note": COST_NOTE,
        "days": [
            {
                "date": day.isoformat(),
                "models": [{"model": name, **totals.as_json()} for name, totals in models.items()],
                "total": report.day_totals(day).as_json(),
            }
            for day, models in report.days.items()
        ],
        "models": [{"model": name, **totals.as_json()} for name, totals in report.models.items()],
        "total": report.total.as_json(),
    }


def _cost(totals: Totals) -> str:
    if not totals.priced:
        return "n/a"
    return f"${totals.cost:,.4f}" + ("*" if totals.priced < totals.prompts else "")


def _cells(totals: Totals) -> list[str]:
    return [
        f"{totals.prompts:,}",
        f"{totals.input:,}",
        f"{totals.output:,}",
        f"{totals.cache_read:,}",
        f"{totals.cache_write:,}",
        _cost(totals),
    ]


def _table(rows: list[list[str]], right_from: int) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i >= right_from else cell.ljust(widths[i]) for i, cell in enumerate(r)
        ).rstrip()
        for r in rows
    ]


def compact(number: int) -> str:
    for size, unit in ((1_000_000_000, " G"), (1_000_000, " M"), (1_000, " k")):
        if number >= size:
            return f"{number / size:.1f}{unit}"
    return str(number)


def chart(report: Report, *, plain: bool = False) -> list[str]:
    """Daily tokens as horizontal bars, one line per day (the last 31 days of the period)."""
    first = max(report.since, report.until - dt.timedelta(days=CHART_DAYS - 1))
    days = [first + dt.timedelta(days=n) for n in range((report.until - first).days + 1)]
    amounts = [report.day_totals(day).tokens for day in days]
    top = max(amounts, default=0) or 1
    full, none = ("#", ".") if plain else ("█", "·")
    lines = ["daily tokens (input + output + cache)" + (f", last {CHART_DAYS} days" if first > report.since else "")]
    for day, amount in zip(days, amounts, strict=True):
        cells = round(amount / top * render.BAR_WIDTH * 2)
        bar = full * cells if amount else none
        if amount and not cells:
            bar = full
        lines.append(f"  {day.strftime('%a %d %b')}  {bar.ljust(render.BAR_WIDTH * 2)}  {compact(amount)}")
    return lines


def text(report: Report, *, plain: bool = False) -> str:
    period = f"{report.since.isoformat()} to {report.until.isoformat()}"
    head = f"claude-max prompts logged by llm, {period} ({report.database})"
    if not report.total.prompts:
        return f"{head}\nNo claude-max prompts were logged in this period.\n"
    header = ["date", "model", "prompts", "input", "output", "cache read", "cache write", "est. cost"]
    rows = [header]
    for day, models in report.days.items():
        for n, (name, totals) in enumerate(models.items()):
            rows.append([day.isoformat() if n == 0 else "", name, *_cells(totals)])
    rows.append(["total", "", *_cells(report.total)])
    by_model = [["model", "prompts", "input", "output", "cache read", "cache write", "est. cost"]]
    by_model += [[name, *_cells(totals)] for name, totals in report.models.items()]
    lines = [head, "", *_table(rows, 2), "", *_table(by_model, 1), "", *chart(report, plain=plain), "", COST_NOTE]
    if report.total.priced < report.total.prompts:
        lines.append("* some responses carry no estimate (logged by another version); the sum leaves them out")
    return "\n".join(lines) + "\n"
