"""Usage you can see: the plan's 5-hour and weekly windows, as the Claude Code CLI reports them.

Every ``rate_limit_event`` the CLI prints (the only source: llm-claude-max never calls a usage
endpoint) is recorded per account by :func:`observe`, called from the turn loop for the llm plugin,
the server and the doctor's live probe alike.

- ``windows``: a ``rate_limit_info`` -> typed windows, overage state, warnings and blocks (pure)
- ``store``: the per-account record on disk; :func:`observe`
- ``render``: bars for people, the versioned JSON document (docs/usage.md)
- ``gate``: the server's fast 429, warning headers and ``GET /v1/usage``
- ``report``: tokens and the CLI's cost estimate from llm's ``logs.db``, per day and model
"""

from .store import observe

__all__ = ["observe"]
