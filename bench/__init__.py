"""Benchmarks of the llm plugin against the pinned real Claude Code CLI and the fake Anthropic API.

Run them with ``./dev bench`` (all) or ``./dev bench prompt`` (one); figures are recorded in
``docs/benchmarks.md``. Nothing here contacts Anthropic or touches the real ``~/.claude``: every run
happens in a throwaway HOME with a fake login, against :mod:`tests.fakeapi`.
"""
