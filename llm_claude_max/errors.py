"""Every way a prompt through the Claude Code CLI can fail.

```
ClaudeMaxError
├── CLINotFound              no `claude` executable (or CLAUDE_MAX_CLI points nowhere)
├── NotLoggedIn              the CLI has no subscription login
├── BillingRouteRefused      the CLI would bill an API key, gateway or cloud account
├── PaidUsageRefused         the plan is exhausted and extra (paid) usage would serve the prompt
├── UsageLimitReached        the 5-hour / 7-day window is used up; `resets_at` says when it reopens
├── APIError                 the API failed after the CLI's bounded retries (`status`: 529, 500, ...)
├── ClaudeTimeout            no answer within a watchdog limit; the CLI was stopped
├── ProtocolError            the CLI printed something that is not its stream-json protocol
├── StructuredOutputMissing  --schema was given but the model returned no structured output
├── SessionNotFound          a conversation to resume is not in the CLI's transcripts
├── InvalidRequest           bad input (empty prompt, unreadable attachment, bad option)
├── StateDirUnusable         the state directory (CLAUDE_MAX_STATE_DIR) cannot be created or written
└── Cancelled                Ctrl-C, task cancellation, or the CLI was interrupted
```

Each class has a stable ``code`` (``usage_limit_reached``...): the ``code`` of the server's
OpenAI-style errors, mapped back to the class by the plugin.

These classes do not depend on `llm` (the doctor and the server use them without it). Through the
`llm` plugin every one of them is raised as an instance of both its class here and
`llm.ModelError`, so `except llm.ModelError` works as well as `except UsageLimitReached`.
"""

from __future__ import annotations

import datetime as _dt


class ClaudeMaxError(Exception):
    """Base class: a prompt through the Claude Code CLI failed."""

    code = "claude_max_error"

    def __init__(self, message: str, *, stderr: str | None = None) -> None:
        self.message = message
        self.stderr = stderr
        super().__init__(message)

    def __str__(self) -> str:
        if self.stderr:
            return f"{self.message}\nCLI stderr: {self.stderr}"
        return self.message


class CLINotFound(ClaudeMaxError):
    """The Claude Code CLI is not installed, or the configured path is not executable."""

    code = "cli_not_found"


class NotLoggedIn(ClaudeMaxError):
    """The CLI has no usable claude.ai subscription login."""

    code = "not_logged_in"


class BillingRouteRefused(ClaudeMaxError):
    """The CLI would bill something other than the subscription, and the user has not opted in."""

    code = "billing_route_refused"

    def __init__(self, message: str, *, route: str, stderr: str | None = None) -> None:
        self.route = route
        super().__init__(message, stderr=stderr)


class PaidUsageRefused(ClaudeMaxError):
    """Extra (paid) usage served or would serve the prompt, and the user has not opted in."""

    code = "paid_usage_refused"

    partial_text: str = ""
    """What the model had already answered when the CLI was stopped (already paid for)."""
    answer_shown: bool = False
    """llm's command line already printed ``partial_text`` as it streamed (see :mod:`llm_claude_max.terminal`)."""

    def __str__(self) -> str:
        # The paid answer is in the message unless it is already on the user's screen: `response.text()`,
        # a non-streaming request and an error before the first delta never show the chunks.
        if not self.partial_text:
            return super().__str__()
        if self.answer_shown:
            return super().__str__() + "\n\nThe answer printed above was served from extra usage."
        return super().__str__() + f"\n\nThe answer served from extra usage was:\n{self.partial_text}"


class UsageLimitReached(ClaudeMaxError):
    """The subscription's usage window is exhausted."""

    code = "usage_limit_reached"

    def __init__(
        self,
        message: str,
        *,
        limit: str | None = None,
        resets_at: _dt.datetime | None = None,
        stderr: str | None = None,
    ) -> None:
        self.limit = limit
        self.resets_at = resets_at
        super().__init__(message, stderr=stderr)


class APIError(ClaudeMaxError):
    """The Anthropic API failed after the CLI's retries."""

    code = "api_error"

    def __init__(self, message: str, *, status: int | None = None, stderr: str | None = None) -> None:
        self.status = status
        super().__init__(message, stderr=stderr)


class ClaudeTimeout(ClaudeMaxError):
    """A watchdog limit passed; the CLI process group was killed."""

    code = "timeout"


class ProtocolError(ClaudeMaxError):
    """The CLI's output broke the stream-json protocol (or it exited without a result)."""

    code = "protocol_error"


class StructuredOutputMissing(ClaudeMaxError):
    """A schema was requested but the model did not return structured output."""

    code = "structured_output_missing"


class SessionNotFound(ClaudeMaxError):
    """The CLI has no transcript for the session being resumed."""

    code = "session_not_found"


class InvalidRequest(ClaudeMaxError):
    """The request cannot be sent as given."""

    code = "invalid_request"


class StateDirUnusable(ClaudeMaxError):
    """llm-claude-max's state directory (``CLAUDE_MAX_STATE_DIR`` or the default) cannot be used."""

    code = "state_dir_unusable"


class Cancelled(ClaudeMaxError):
    """The prompt was cancelled before the CLI finished."""

    code = "cancelled"


def by_code(code: str | None) -> type[ClaudeMaxError]:
    """The error class for a ``code`` (the base class for an unknown one)."""
    stack: list[type[ClaudeMaxError]] = [ClaudeMaxError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls
        stack.extend(cls.__subclasses__())
    return ClaudeMaxError
