"""Driving the user's own `claude -p`: locate it, build its argv and environment, speak its
stream-json protocol, and keep its processes under watchdogs. Knows nothing of `llm` or HTTP."""
