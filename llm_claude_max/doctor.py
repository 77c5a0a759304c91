"""The public API of `claude-max doctor` for third-party checks, under this project's own name::

    from llm_claude_max.doctor import Check, Context, Finding, Status, hookimpl

The doctor itself is the ``diagnostics`` package installed beside ``llm_claude_max``. That name is
generic: a user's own ``diagnostics.py`` comes first on ``sys.path`` wherever the current directory
does (``python -m llm``, Jupyter, ``PYTHONPATH=.``). So it is imported here from its file, next to
this package, never by a search of ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "diagnostics"
HERE = Path(__file__).resolve().parent.parent / PACKAGE


def _ours(module: ModuleType) -> bool:
    return Path(getattr(module, "__file__", None) or "/").resolve().parent == HERE


def _load() -> ModuleType:
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None:
        if _ours(loaded):
            return loaded
        raise ImportError(
            f"Another module named {PACKAGE!r} ({getattr(loaded, '__file__', '?')}) was imported before "
            "llm-claude-max's doctor; run the doctor in a process of its own: `claude-max doctor` "
            "or `llm claude-max doctor`."
        )
    spec = importlib.util.spec_from_file_location(PACKAGE, HERE / "__init__.py", submodule_search_locations=[str(HERE)])
    if spec is None or spec.loader is None:  # pragma: no cover - the package is installed with this one
        raise ImportError(f"llm-claude-max's doctor is missing from {HERE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACKAGE]
        raise
    return module


_load()

from diagnostics import Check, CheckResult, Context, Finding, Options, Status, hookimpl  # noqa: E402
from diagnostics.hookspecs import PROJECT  # noqa: E402
from diagnostics.masking import mask, mask_url  # noqa: E402

ENTRY_POINT_GROUP = PROJECT
"""Third-party packages announce their checks in this entry-point group."""

__all__ = [
    "ENTRY_POINT_GROUP",
    "Check",
    "CheckResult",
    "Context",
    "Finding",
    "Options",
    "Status",
    "hookimpl",
    "mask",
    "mask_url",
]
