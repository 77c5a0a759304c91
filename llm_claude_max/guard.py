"""The billing guard: what the CLI reported -> allow, refuse, or allow with a warning.

Three checkpoints, in the order a prompt meets them (``claude-cli.md`` §3):

1. before anything is sent: the ``initialize`` answer (``account``, ``auth_conflict``) names the
   credential the CLI will use; only a claude.ai subscription passes, unless the user opted in to API
   billing;
2. ``system/init.apiKeySource`` must be ``"none"`` (an API key would show here);
3. a ``rate_limit_event`` (sent for subscription credentials only) confirms the route; with
   ``isUsingOverage`` the prompt was served from paid extra usage, which stops the process and locks
   further prompts until the usage window resets or the user opts in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from . import config, invocation, paths
from .errors import BillingRouteRefused, NotLoggedIn, PaidUsageRefused
from .runner.protocol import Init, RateLimit


class Route(enum.StrEnum):
    SUBSCRIPTION = "subscription"
    API_KEY = "api_key"
    API_KEY_HELPER = "api_key_helper"
    GATEWAY = "gateway_token"
    CLOUD = "cloud_provider"
    NONE = "not_logged_in"
    UNKNOWN = "unknown"


def plan_name(subscription_type: Any) -> str | None:
    """``max`` -> ``Claude Max`` (the stored login's ``subscriptionType``)."""
    return f"Claude {str(subscription_type).title()}" if subscription_type else None


SUBSCRIPTION_TOKENS = frozenset({"claude.ai", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR"})


@dataclass(frozen=True)
class RouteReport:
    """The credential the CLI says it will use."""

    route: Route
    source: str
    """Where the winning credential comes from, e.g. ``claude.ai login`` or ``ANTHROPIC_API_KEY``."""
    plan: str | None = None
    provider: str = "firstParty"
    conflict: Mapping[str, Any] | None = None
    """``auth_conflict``: a subscription credential exists but an API key wins."""

    def describe(self) -> str:
        if self.route is Route.SUBSCRIPTION:
            plan = self.plan or "Claude subscription"
            return f"your {plan} plan ({self.source})"
        if self.route is Route.CLOUD:
            return f"the cloud provider account ({self.provider})"
        if self.route is Route.NONE:
            return "nothing (not logged in)"
        if self.route is Route.GATEWAY:
            return f"the gateway/bearer token from {self.source} (not your subscription)"
        return f"the API key from {self.source} (pay-as-you-go API billing)"

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route.value, "source": self.source, "plan": self.plan, "provider": self.provider}


def route_from_account(account: Mapping[str, Any], conflict: Mapping[str, Any] | None = None) -> RouteReport:
    """Classify the ``account`` object of the CLI's ``initialize`` answer."""
    provider = str(account.get("apiProvider") or "firstParty")
    if provider != "firstParty":
        return RouteReport(Route.CLOUD, provider, provider=provider)
    api_key_source = account.get("apiKeySource")
    token_source = account.get("tokenSource")
    plan = account.get("subscriptionType")
    if api_key_source and api_key_source != "none":
        # An API key always wins in `claude -p`, even over a login (auth_conflict names both).
        route = Route.API_KEY_HELPER if api_key_source == "apiKeyHelper" else Route.API_KEY
        return RouteReport(route, str(api_key_source), provider=provider, conflict=conflict)
    if plan:
        return RouteReport(Route.SUBSCRIPTION, "claude.ai login", plan=str(plan), provider=provider)
    if token_source in SUBSCRIPTION_TOKENS:
        source = "claude.ai login" if token_source == "claude.ai" else str(token_source)
        return RouteReport(Route.SUBSCRIPTION, source, provider=provider)
    if token_source == "apiKeyHelper":
        return RouteReport(Route.API_KEY_HELPER, "apiKeyHelper", provider=provider)
    if token_source in (None, "none"):
        return RouteReport(Route.NONE, "none", provider=provider)
    if token_source == "ANTHROPIC_AUTH_TOKEN" or "TOKEN" in str(token_source):
        return RouteReport(Route.GATEWAY, str(token_source), provider=provider)
    return RouteReport(Route.UNKNOWN, str(token_source), provider=provider)


def route_from_auth_status(status: Mapping[str, Any], *, oauth_token_set: bool) -> RouteReport:
    """Classify ``claude auth status --json`` (the fallback when ``initialize`` is not answered).

    Its ``oauth_token`` means either ``CLAUDE_CODE_OAUTH_TOKEN`` or ``ANTHROPIC_AUTH_TOKEN`` (a gateway,
    e.g. from managed settings): it counts as the subscription only when ``oauth_token_set`` says the
    former is in the CLI's environment, and fails closed otherwise."""
    provider = str(status.get("apiProvider") or "firstParty")
    if provider != "firstParty":
        return RouteReport(Route.CLOUD, provider, provider=provider)
    method = status.get("authMethod")
    api_key_source = status.get("apiKeySource")
    if api_key_source and api_key_source != "none":
        route = Route.API_KEY_HELPER if api_key_source == "apiKeyHelper" else Route.API_KEY
        return RouteReport(route, str(api_key_source), provider=provider)
    if method == "claude.ai":
        plan = status.get("subscriptionType")
        return RouteReport(Route.SUBSCRIPTION, "claude.ai login", plan=plan_name(plan))
    if method == "oauth_token":
        if oauth_token_set:
            return RouteReport(Route.SUBSCRIPTION, "CLAUDE_CODE_OAUTH_TOKEN")
        return RouteReport(Route.UNKNOWN, "an OAuth or gateway token (`claude auth status` cannot tell which)")
    if method in ("api_key", "api_key_helper"):
        return RouteReport(Route.API_KEY_HELPER if method == "api_key_helper" else Route.API_KEY, str(method))
    if method in (None, "none"):
        return RouteReport(Route.NONE, "none")
    return RouteReport(Route.UNKNOWN, str(method))


@dataclass(frozen=True)
class Policy:
    allow_api_billing: bool = False
    allow_overage: bool = False

    @classmethod
    def from_settings(cls, settings: config.Settings, **options: bool | None) -> Policy:
        """Options given per prompt win over the environment."""
        api = options.get("allow_api_billing")
        overage = options.get("allow_overage")
        return cls(
            allow_api_billing=settings.allow_api_billing if api is None else api,
            allow_overage=settings.allow_overage if overage is None else overage,
        )


def api_billing_hint() -> str:
    return f"To use API billing on purpose, {invocation.opt_in(config.ALLOW_API_BILLING, 'allow_api_billing')}."


def check_route(report: RouteReport, policy: Policy) -> str | None:
    """Raise unless the route is allowed; return a warning to show when it is allowed but paid."""
    if report.route is Route.SUBSCRIPTION:
        return None
    if report.route is Route.NONE:
        raise NotLoggedIn(
            "The Claude Code CLI is not logged in to a Claude subscription. Run `claude`, then /login, "
            f"and try again (`{invocation.command('doctor')}` shows what the CLI sees)."
        )
    if report.route in (Route.API_KEY, Route.API_KEY_HELPER) and policy.allow_api_billing:
        return f"claude-max: this prompt is billed to {report.describe()}, because API billing is enabled."
    if report.route is Route.UNKNOWN:
        raise BillingRouteRefused(
            f"Refused: the CLI would use {report.source}, which llm-claude-max cannot confirm is your "
            f"subscription. Nothing was sent. Run `{invocation.command('doctor')}`.",
            route=report.route.value,
        )
    detail = " A subscription login exists, but the API credential would win." if report.conflict else ""
    raise BillingRouteRefused(
        f"Refused: the Claude Code CLI would bill {report.describe()}, not a Claude subscription.{detail} "
        f"Nothing was sent. Run `{invocation.command('doctor')}` to see where that credential comes from. "
        + (api_billing_hint() if report.route in (Route.API_KEY, Route.API_KEY_HELPER) else ""),
        route=report.route.value,
    )


def check_init(init: Init, report: RouteReport, policy: Policy) -> None:
    """``apiKeySource`` must be ``none`` on a subscription route (second, in-band assertion)."""
    if init.api_key_source in ("", "none"):
        return
    if policy.allow_api_billing and report.route in (Route.API_KEY, Route.API_KEY_HELPER):
        return
    raise BillingRouteRefused(
        f"Stopped: the CLI reported apiKeySource={init.api_key_source!r}, so this prompt would be billed "
        f"to an API key. The process was killed. Run `{invocation.command('doctor')}`. " + api_billing_hint(),
        route=Route.API_KEY.value,
    )


def format_reset(epoch: int | None) -> str | None:
    if not epoch:
        return None
    when = dt.datetime.fromtimestamp(epoch).astimezone()
    now = dt.datetime.now().astimezone()
    if when.date() == now.date():
        return when.strftime("%H:%M")
    return when.strftime("%a %d %b %H:%M")


LIMIT_LABELS = {
    "five_hour": "5-hour",
    "seven_day": "7-day",
    "seven_day_opus": "7-day Opus",
    "seven_day_sonnet": "7-day Sonnet",
    "seven_day_overage_included": "7-day (extra usage included)",
    "overage": "extra usage",
}
"""Display names of the CLI's ``rateLimitType`` values and ``unifiedWindows`` keys."""


def limit_label(limit_type: str | None) -> str:
    return LIMIT_LABELS.get(limit_type or "", (limit_type or "usage").replace("_", " "))


# -- the overage lock ---------------------------------------------------------------------------


def allow_overage_hint() -> str:
    return f"{invocation.opt_in(config.ALLOW_OVERAGE, 'allow_overage')} to accept paid extra usage"


class OverageLock:
    """A file that remembers that paid extra usage served a prompt, so later prompts are refused
    before they are sent. It expires when the usage window resets.

    It fails closed. A lock file that exists but cannot be read or parsed counts as a block until
    `claude-max unlock` removes it. A block that cannot be written (a read-only or full disk) is kept
    in this process, which refuses its prompts and tries the write again before each one; other
    processes cannot know of it, and the error says so, with the directory to fix."""

    unsaved: ClassVar[dict[Path, tuple[dict[str, Any], str]]] = {}
    """Blocks this process could not write: lock path -> (the block, why the write failed)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.path: Path = paths.state_dir(env) / "overage-lock.json"

    def read(self) -> dict[str, Any] | None:
        """The block, or None. A lock file that cannot be read or parsed is ``{"problem": why}``."""
        if self.path in self.unsaved:
            data = self.unsaved[self.path][0]
        else:
            try:
                data = json.loads(self.path.read_bytes())
            except (FileNotFoundError, NotADirectoryError):  # no such file can exist: no block
                return None
            except OSError as exc:
                return {"problem": f"{self.path} cannot be read ({exc.strerror or exc})"}
            except ValueError:
                return {"problem": f"{self.path} is not valid JSON"}
            if not isinstance(data, dict):
                return {"problem": f"{self.path} does not hold a block"}
        until = data.get("until")
        if isinstance(until, (int, float)) and until <= time.time():
            with contextlib.suppress(OSError):  # expired either way; `claude-max unlock` reports a stuck file
                self.clear()
            return None
        return dict(data)

    def set(self, rate_limit: RateLimit, session_id: str | None, refusal: PaidUsageRefused | None = None) -> None:
        """Record the block. Never raises: a block that cannot be written is kept in this process, and
        ``refusal`` (the error about to be raised) says so."""
        # The plan's window reopening ends the need for extra usage; without a reset time, 5 hours.
        until = rate_limit.resets_at or rate_limit.raw.get("overageResetsAt") or int(time.time()) + 5 * 3600
        data = {"since": int(time.time()), "until": until, "limit": rate_limit.limit_type, "session_id": session_id}
        self.unsaved[self.path] = (data, "not written yet")
        self._save()
        if self.path in self.unsaved and refusal is not None:
            refusal.message += " " + self._unsaved_warning()

    def _save(self) -> None:
        """Write a block kept in this process; it stays here if the state directory does not take it."""
        data, _ = self.unsaved[self.path]
        try:
            paths.write_json(self.path, data)
        except OSError as exc:
            self.unsaved[self.path] = (data, exc.strerror or str(exc))
        else:
            del self.unsaved[self.path]

    def _unsaved_warning(self) -> str:
        why = self.unsaved[self.path][1]
        return (
            f"WARNING: the block could not be saved to {self.path} ({why}), so other processes (another `llm`, "
            "a server) do not know of it: each of them can be served from paid extra usage once before it "
            f"stops. Make {self.path.parent} writable (or free disk space); this process refuses prompts "
            "meanwhile and saves the block as soon as it can."
        )

    def clear(self) -> None:
        """Remove the block (`claude-max unlock`). Raises OSError if the file cannot be removed."""
        self.unsaved.pop(self.path, None)
        self.path.unlink(missing_ok=True)

    def check(self, policy: Policy) -> None:
        """Refuse before sending while the lock holds (unless extra usage is allowed)."""
        if policy.allow_overage:
            return
        if self.path in self.unsaved:
            self._save()
        data = self.read()
        if data is None:
            return
        if "problem" in data:
            raise PaidUsageRefused(
                f"Refused: the paid extra usage block {data['problem']}, so it counts as set. Nothing was sent. "
                f"If no prompt was served from paid extra usage, `{invocation.command('unlock')}` removes it; to "
                f"continue anyway, {allow_overage_hint()}."
            )
        until = format_reset(data.get("until") if isinstance(data.get("until"), int) else None)
        when = f" until your {limit_label(data.get('limit'))} limit resets at {until}" if until else ""
        unsaved = f" {self._unsaved_warning()}" if self.path in self.unsaved else ""
        raise PaidUsageRefused(
            f"Refused: an earlier prompt was served from paid extra usage, so prompts are blocked{when}. "
            f"Nothing was sent. To continue anyway, {allow_overage_hint()}; `{invocation.command('unlock')}` "
            "removes the block." + unsaved
        )


def check_rate_limit(rate_limit: RateLimit, policy: Policy) -> str | None:
    """Raise :class:`PaidUsageRefused` when extra usage served the prompt without opt-in; return a
    warning when it did with opt-in."""
    if not rate_limit.is_using_overage:
        return None
    if policy.allow_overage:
        return "claude-max: this prompt was served from paid extra usage (allowed by your opt-in)."
    raise PaidUsageRefused(
        "Stopped: your plan's usage window is used up and this prompt was served from paid extra usage. "
        f"The CLI was stopped and further prompts are blocked until the window resets; {allow_overage_hint()}."
    )
