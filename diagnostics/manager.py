"""Loading the doctor's plugins and running their checks.

Built-in checks are modules under :mod:`diagnostics.checks`, registered as plugins named
``builtin.<module>``; third-party ones come from the ``claude_max_doctor`` entry-point group. Both go
through the same hook. A plugin that fails to import or to list its checks, and a check that raises,
become ``error`` findings: the run always completes.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import cast

import pluggy

from . import hookspecs
from .checks import BUILTIN
from .context import Context
from .findings import Check, CheckResult, Finding, Status
from .masking import mask_embedded

BLOCK_VAR = "CLAUDE_MAX_DOCTOR_DISABLE_PLUGINS"
"""Comma-separated plugin names not to load (like ``--disable-plugin``)."""


@dataclass
class Plugins:
    manager: pluggy.PluginManager
    checks: list[tuple[str, Check]] = field(default_factory=list)
    failures: list[CheckResult] = field(default_factory=list)
    """Plugins that could not be loaded or could not list their checks."""
    distributions: dict[str, str] = field(default_factory=dict)
    """Plugin name -> "distribution version" for entry-point plugins."""


def _failure(plugin: str, what: str, exc: BaseException) -> CheckResult:
    check = Check(f"plugin.{plugin}", f"Plugin {plugin}", "Plugins", lambda ctx: ())
    detail = mask_embedded("".join(traceback.format_exception_only(type(exc), exc)).strip())
    return CheckResult(check, plugin, [Finding(Status.ERROR, f"The plugin {plugin!r} {what}", detail=detail)])


def load(*, blocked: Iterable[str] = (), entry_points: bool = True, env: dict[str, str] | None = None) -> Plugins:
    env = dict(os.environ if env is None else env)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    names = {n.strip() for n in [*blocked, *env.get(BLOCK_VAR, "").split(",")] if n.strip()}
    for name in names:
        pm.set_blocked(name)
    plugins = Plugins(pm)
    for module_name in BUILTIN:
        name = f"builtin.{module_name}"
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(f"{__package__}.checks.{module_name}"), name=name)
    if entry_points:
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:
                plugins.failures.append(_failure(ep.name, "could not be loaded", exc))
                continue
            if ep.dist is not None:
                plugins.distributions[ep.name] = f"{ep.dist.name} {ep.dist.version}"
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        plugins.failures.append(_failure(name, "implements an unknown hook", exc))
        pm.unregister(exc.plugin)
    for impl in pm.hook.doctor_checks.get_hookimpls():  # in registration order
        try:
            listed = cast("Iterable[object]", impl.function() or ())
            for check in listed:
                if not isinstance(check, Check):
                    raise TypeError(f"doctor_checks returned {type(check).__name__}, not diagnostics.Check")
                plugins.checks.append((impl.plugin_name, check))
        except Exception as exc:
            plugins.failures.append(_failure(impl.plugin_name, "failed to list its checks", exc))
    return plugins


def group_order(plugins: Plugins) -> list[str]:
    """Built-in groups in their fixed order, then third-party groups alphabetically."""
    builtin = [c.group for p, c in plugins.checks if p.startswith("builtin.")]
    ordered = list(dict.fromkeys(builtin))
    return ordered + sorted({c.group for p, c in plugins.checks} - set(ordered))


def select(plugins: Plugins, wanted: Sequence[str]) -> list[tuple[str, Check]]:
    """Checks matching the given group names or check ids (all when none given), in display order."""
    order = group_order(plugins)

    def slug(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    wanted_slugs = {slug(w) for w in wanted}
    chosen = [
        (p, c)
        for p, c in plugins.checks
        if not wanted
        or slug(c.group) in wanted_slugs
        or slug(c.id) in wanted_slugs
        or slug(c.id.split(".")[0]) in wanted_slugs
    ]
    return sorted(chosen, key=lambda pc: (order.index(pc[1].group), pc[1].order, pc[1].id))


def _run_one(plugin: str, check: Check, ctx: Context) -> CheckResult:
    start = time.perf_counter()
    result = CheckResult(check, plugin)
    if check.live and not ctx.options.live:
        result.findings.append(
            Finding(Status.SKIP, "Not run: use --live (sends one short prompt, spends a little quota)")
        )
    elif check.needs_cli and ctx.options.offline:
        result.findings.append(Finding(Status.SKIP, "Not run (--offline)"))
    else:
        try:
            for finding in check.run(ctx) or ():
                if not isinstance(finding, Finding):
                    raise TypeError(f"yielded {type(finding).__name__} {finding!r:.80}, not a Finding")
                result.findings.append(finding)
        except Exception as exc:
            detail = mask_embedded("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-2000:])
            result.findings.append(
                Finding(
                    Status.ERROR,
                    f"The check crashed: {type(exc).__name__}: {mask_embedded(str(exc))[:200]}",
                    detail=detail,
                )
            )
        if not result.findings:
            result.findings.append(Finding(Status.OK, check.title))
    result.duration_ms = (time.perf_counter() - start) * 1000
    return result


def run(checks: Sequence[tuple[str, Check]], ctx: Context, *, workers: int = 4) -> list[CheckResult]:
    """Run checks concurrently (the slow ones start the CLI); results keep the given order."""
    if len(checks) <= 1:
        return [_run_one(p, c, ctx) for p, c in checks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="doctor") as pool:
        futures = [pool.submit(_run_one, p, c, ctx) for p, c in checks]
        return [f.result() for f in futures]


def exit_code(results: Sequence[CheckResult], *, strict: bool) -> int:
    """0 ok; 1 a failure or a crashed check; 3 warnings only, with --strict (2 is click's usage error)."""
    worst = max((r.status.rank for r in results), default=0)
    if worst >= 2:
        return 1
    if worst == 1 and strict:
        return 3
    return 0
