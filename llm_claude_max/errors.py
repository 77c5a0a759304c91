"""Every way a prompt through the Claude Code CLI can fail.

```
ClaudeMaxError
├── NotSent                      refused before anything was sent: nothing was billed
│   ├── InvalidRequest           400  bad input (empty prompt, unreadable attachment, bad option)
│   │   ├── ModelNotFound        404  the model is not one the CLI offers
│   │   └── PromptTooLong        400  the conversation does not fit the model's context window
│   ├── SessionNotFound          404  a conversation to continue is not in the CLI's transcripts
│   ├── ServerBusy               429  every slot and queue place of the server is taken
│   ├── CLINotFound              503  no `claude` executable (or CLAUDE_MAX_CLI points nowhere)
│   ├── NotLoggedIn              503  the CLI has no subscription login
│   ├── BillingRouteRefused      503  the CLI would bill an API key, gateway or cloud account
│   └── StateDirUnusable         503  the state directory (CLAUDE_MAX_STATE_DIR) cannot be created or written
├── UsageRefused                      the plan's limits: before sending, or stopping a turn at once
│   ├── UsageLimitReached        429  the 5-hour / 7-day window is used up; `resets_at` says when
│   └── PaidUsageRefused         429  extra (paid) usage would serve, or served, the prompt
└── TurnFailed                        failed during a turn: something may have been billed
    ├── APIError                 502  the API failed after the CLI's bounded retries (503 when overloaded)
    ├── ClaudeTimeout            504  no answer within a watchdog limit; the CLI was stopped
    ├── ProtocolError            502  the CLI broke its stream-json protocol, or exited without a result
    │   └── CLICrashed           502  the CLI died before its answer: killed by something else, or exited non-zero
    ├── StructuredOutputMissing  502  --schema was given but the model returned no structured output
    │   └── StructuredOutputRetried  502  a streamed structured output was replaced by a later attempt
    └── Cancelled                499  we stopped the CLI: Ctrl-C, cancellation, a caller that went away
```

Each class has a stable ``code`` (``usage_limit_reached``...), the ``code`` of the server's errors,
and the ``http_status`` a server answers with. :func:`by_code` maps a code back to its class through
an explicit registry, whatever modules were imported.

These classes do not depend on `llm` (the doctor and the server use them without it). Through the
`llm` plugin every one of them is raised as an instance of both its class here and
`llm.ModelError`, so `except llm.ModelError` works as well as `except UsageLimitReached`.
"""

from __future__ import annotations

import datetime as _dt


class ClaudeMaxError(Exception):
    """Base class: a prompt through the Claude Code CLI failed."""

    code = "claude_max_error"
    http_status = 500

    def __init__(self, message: str, *, stderr: str | None = None) -> None:
        self.message = message
        self.stderr = stderr
        super().__init__(message)

    def __str__(self) -> str:
        if self.stderr:
            return f"{self.message}\nCLI stderr: {self.stderr}"
        return self.message


# -- refused before anything was sent ------------------------------------------------------------


class NotSent(ClaudeMaxError):
    """Refused before anything reached the API: nothing was billed."""

    code = "not_sent"


class InvalidRequest(NotSent):
    """The request cannot be sent as given."""

    code = "invalid_request"
    http_status = 400


class ModelNotFound(InvalidRequest):
    """The requested model is not one the CLI offers."""

    code = "model_not_found"
    http_status = 404


class PromptTooLong(InvalidRequest):
    """The API refused the request as longer than the model's context window (HTTP 400)."""

    code = "context_length_exceeded"  # OpenAI's code for the same condition


class SessionNotFound(NotSent):
    """The CLI has no transcript for the session being resumed."""

    code = "session_not_found"
    http_status = 404


class ServerBusy(NotSent):
    """Every slot and queue place of `claude-max serve` is taken."""

    code = "server_busy"
    http_status = 429
    retry_after: int | None = None
    """Seconds until a place is likely free (the ``Retry-After`` header)."""


class CLINotFound(NotSent):
    """The Claude Code CLI is not installed, or the configured path is not executable."""

    code = "cli_not_found"
    http_status = 503


class NotLoggedIn(NotSent):
    """The CLI has no usable claude.ai subscription login."""

    code = "not_logged_in"
    http_status = 503


class BillingRouteRefused(NotSent):
    """The CLI would bill something other than the subscription, and the user has not opted in."""

    code = "billing_route_refused"
    http_status = 503

    def __init__(self, message: str, *, route: str = "unknown", stderr: str | None = None) -> None:
        self.route = route
        super().__init__(message, stderr=stderr)


class StateDirUnusable(NotSent):
    """llm-claude-max's state directory (``CLAUDE_MAX_STATE_DIR`` or the default) cannot be used."""

    code = "state_dir_unusable"
    http_status = 503


# -- the plan's limits -----------------------------------------------------------------------------


class UsageRefused(ClaudeMaxError):
    """The plan's limits refused the prompt (before sending, or by stopping the turn at once)."""

    code = "usage_refused"
    http_status = 429


class UsageLimitReached(UsageRefused):
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


class PaidUsageRefused(UsageRefused):
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


# -- failed during a turn ------------------------------------------------------------------------


class TurnFailed(ClaudeMaxError):
    """The turn failed after the prompt was sent: part of it may have been billed."""

    code = "turn_failed"
    http_status = 502


class APIError(TurnFailed):
    """The Anthropic API failed after the CLI's retries."""

    code = "api_error"

    def __init__(self, message: str, *, status: int | None = None, stderr: str | None = None) -> None:
        self.status = status
        """The API's HTTP status (529, 500...), when the CLI reported one."""
        super().__init__(message, stderr=stderr)

    @property
    def http_status(self) -> int:  # type: ignore[override]
        """502, or 503 when the API was overloaded (a client should retry later)."""
        return 503 if self.status in (503, 529) else 502


class ClaudeTimeout(TurnFailed):
    """A watchdog limit passed; the CLI process group was killed."""

    code = "timeout"
    http_status = 504


class ProtocolError(TurnFailed):
    """The CLI's output broke the stream-json protocol (or it exited without a result)."""

    code = "protocol_error"


class CLICrashed(ProtocolError):
    """The CLI exited before its ``result`` and llm-claude-max did not stop it: killed by something else
    (the OOM killer, a `kill`), or a non-zero exit. A server answers 502, never 499 ("cancelled")."""

    code = "cli_crashed"


class StructuredOutputMissing(TurnFailed):
    """A schema was requested but the model did not return structured output."""

    code = "structured_output_missing"


class StructuredOutputRetried(StructuredOutputMissing):
    """A structured output already streamed was rejected by the CLI's schema check and written again."""

    code = "structured_output_retried"


class Cancelled(TurnFailed):
    """The prompt was cancelled before the CLI finished: we stopped it (Ctrl-C, a cancelled task, a caller
    that went away); a CLI that dies by itself is :class:`CLICrashed`."""

    code = "cancelled"
    http_status = 499


# -- the registry ----------------------------------------------------------------------------------

ALL: tuple[type[ClaudeMaxError], ...] = (
    ClaudeMaxError,
    NotSent,
    InvalidRequest,
    ModelNotFound,
    PromptTooLong,
    SessionNotFound,
    ServerBusy,
    CLINotFound,
    NotLoggedIn,
    BillingRouteRefused,
    StateDirUnusable,
    UsageRefused,
    UsageLimitReached,
    PaidUsageRefused,
    TurnFailed,
    APIError,
    ClaudeTimeout,
    ProtocolError,
    CLICrashed,
    StructuredOutputMissing,
    StructuredOutputRetried,
    Cancelled,
)
"""Every class of the tree, listed once: the registry :func:`by_code` reads."""

BY_CODE: dict[str, type[ClaudeMaxError]] = {cls.code: cls for cls in ALL}


def by_code(code: str | None) -> type[ClaudeMaxError]:
    """The error class for a ``code`` (the base class for an unknown one)."""
    return BY_CODE.get(code or "", ClaudeMaxError)
