"""The doctor's plugin interface (pluggy).

A plugin is any module or object with a ``@hookimpl``-decorated ``doctor_checks`` function. Third-party
packages announce theirs in the ``claude_max_doctor`` entry-point group::

    [project.entry-points.claude_max_doctor]
    my_checks = "my_package.doctor_checks"

The built-in checks are registered exactly the same way (as plugins named ``builtin.<module>``).
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from .findings import Check

PROJECT = "claude_max_doctor"
"""The pluggy project name and the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def doctor_checks() -> Iterable[Check]:  # type: ignore[empty-body]
    """Return the checks this plugin provides.

    Called once per doctor run, before any check runs. Each check's ``run`` is called later with the
    shared context; an exception in ``doctor_checks`` or in a check becomes an ``error`` finding and
    never stops the other checks.
    """
