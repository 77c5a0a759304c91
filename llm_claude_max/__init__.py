"""llm-claude-max: Claude through your own Claude Code CLI, billed to your Claude Max/Pro plan.

Importing the package imports nothing: the llm hooks live in :mod:`llm_claude_max.plugin`, so the
doctor and the server can use the runner without loading `llm`.
"""
