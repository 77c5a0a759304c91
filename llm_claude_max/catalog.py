"""The CLI's model aliases, as last reported by the CLI itself and cached on disk.

Every prompt's ``initialize`` answer lists the models the CLI offers (alias, resolved id,
description); the list is saved here so registering models with `llm` never starts the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import paths

DEFAULT_ALIAS = "default"
EFFORTS = ("low", "medium", "high", "xhigh", "max")
"""The CLI's ``--effort`` levels; each model's own list (``supportedEffortLevels``) is in its entry."""


@dataclass(frozen=True)
class CatalogModel:
    alias: str
    """What ``--model`` takes: ``default``, ``opus``, ``sonnet``..."""
    resolved: str | None = None
    description: str | None = None
    efforts: tuple[str, ...] = ()

    @property
    def model_id(self) -> str:
        """The llm model id: ``claude-max`` for the CLI default, ``claude-max-<alias>`` otherwise."""
        return "claude-max" if self.alias == DEFAULT_ALIAS else f"claude-max-{self.alias}"


FALLBACK: tuple[CatalogModel, ...] = (
    CatalogModel(DEFAULT_ALIAS, description="The Claude Code CLI's default model"),
    CatalogModel("opus"),
    CatalogModel("sonnet"),
    CatalogModel("haiku"),
)
"""Used until the CLI has reported its list once."""


def cache_path(env: Mapping[str, str] | None = None) -> Path:
    return paths.state_dir(env) / "models.json"


def load(env: Mapping[str, str] | None = None) -> tuple[CatalogModel, ...]:
    try:
        data = json.loads(cache_path(env).read_text())
        models = tuple(
            CatalogModel(m["alias"], m.get("resolved"), m.get("description"), tuple(m.get("efforts") or ()))
            for m in data["models"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return FALLBACK
    if not any(m.alias == DEFAULT_ALIAS for m in models):
        models = (FALLBACK[0], *models)
    return models or FALLBACK


def from_initialize(models: Any) -> tuple[CatalogModel, ...]:
    """Parse the ``models`` list of the CLI's ``initialize`` answer."""
    parsed = []
    for m in models if isinstance(models, list) else []:
        if isinstance(m, dict) and isinstance(m.get("value"), str) and m["value"]:
            efforts = m.get("supportedEffortLevels")
            parsed.append(
                CatalogModel(
                    alias=m["value"],
                    resolved=m.get("resolvedModel"),
                    description=m.get("description"),
                    efforts=tuple(efforts) if isinstance(efforts, list) else (),
                )
            )
    return tuple(parsed)


def remember(models: Any, env: Mapping[str, str] | None = None) -> bool:
    """Save the list from an ``initialize`` answer if it changed. Returns True when written."""
    parsed = from_initialize(models)
    if not parsed or parsed == load(env):
        return False
    try:
        paths.write_json(cache_path(env), {"models": [asdict(m) for m in parsed]})
    except OSError:
        return False
    return True
