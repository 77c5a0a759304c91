"""The stored login: present, when it expires (metadata only, never the tokens), and how it is kept."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

from llm_claude_max import guard, invocation
from llm_claude_max.routes import Rung

from .. import keychain
from ..context import Context
from ..findings import Check, Finding, Status
from ..hookspecs import hookimpl

GROUP = "Login"
WARN_WITHIN = dt.timedelta(days=3)
LOGIN_FIX = "claude    # then type /login and sign in with your Claude subscription"
ERRORS_LINK = "https://code.claude.com/docs/en/errors"


@hookimpl
def doctor_checks() -> list[Check]:
    return [
        Check("login.present", "Subscription login and its expiry", GROUP, present, order=10),
        Check("login.file", "Credentials file permissions", GROUP, file_permissions, order=20),
        Check("login.keyring", "OS keyring", GROUP, keyring_state, order=30),
    ]


def _in(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 3600:
        return f"{max(seconds // 60, 1)} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def present(ctx: Context) -> Iterator[Finding]:
    discovery = ctx.discovery
    token = next((c for c in discovery.credentials if c.rung is Rung.OAUTH_TOKEN and c.ours), None)
    if token is not None:
        yield Finding(
            Status.OK,
            f"{token.name} holds a subscription token ({token.display})",
            detail="A `claude setup-token` token is valid for one year from when it was made; its date is not stored.",
            source=f"{token.source.kind}:{token.name}",
        )
    login = discovery.login
    if login is None:
        if token is None:
            yield Finding(
                Status.FAIL,
                "No Claude subscription login found",
                fix=LOGIN_FIX,
                source=f"file:{discovery.config_dir / '.credentials.json'}",
            )
        return
    where = f"{login.source.kind}:{login.source.describe()}"
    if login.error:
        yield Finding(Status.FAIL, f"The stored login cannot be read: {login.error}", fix=LOGIN_FIX, source=where)
        return
    plan = guard.plan_name(login.plan) or "claude.ai (plan unknown)"
    now = dt.datetime.now(dt.UTC)
    if "user:inference" not in login.scopes and login.scopes:
        yield Finding(Status.WARN, f"The {plan} login lacks the user:inference scope", fix=LOGIN_FIX, source=where)
    # The login lives as long as its refresh token; expiresAt is the short-lived access token, which
    # the CLI refreshes by itself while a refresh token is stored.
    if login.refresh_expires_at is not None or not login.has_refresh_token:
        ends = login.refresh_expires_at or login.expires_at
        if ends is None:
            yield Finding(Status.OK, f"{plan} login (no expiry recorded)", source=where, data={"plan": login.plan})
        elif ends <= now:
            yield Finding(
                Status.FAIL,
                f"The {plan} login expired on {ends:%Y-%m-%d %H:%M} UTC",
                detail="The CLI reports 'Login expired · Please run /login'.",
                fix=LOGIN_FIX,
                source=where,
                links=(ERRORS_LINK,),
            )
        elif ends - now <= WARN_WITHIN:
            yield Finding(Status.WARN, f"The {plan} login expires in {_in(ends - now)}", fix=LOGIN_FIX, source=where)
        else:
            yield Finding(
                Status.OK, f"{plan} login, valid until {ends:%Y-%m-%d}", source=where, data={"plan": login.plan}
            )
    elif login.expires_at is not None and login.expires_at <= now:
        yield Finding(
            Status.OK,
            f"{plan} login; its access token expired {_in(now - login.expires_at)} ago "
            "and the CLI renews it on next use",
            detail="The CLI refreshes it at platform.claude.com with the stored refresh token (needs the network).",
            source=where,
            data={"plan": login.plan},
        )
    else:
        detail = f"access token valid until {login.expires_at:%Y-%m-%d %H:%M} UTC" if login.expires_at else None
        yield Finding(Status.OK, f"{plan} login", detail=detail, source=where, data={"plan": login.plan})


def file_permissions(ctx: Context) -> Iterator[Finding]:
    login = ctx.discovery.login
    if login is None or login.source.kind != "file" or login.source.path is None:
        yield Finding(Status.SKIP, "No credentials file")
        return
    path = login.source.path
    if login.mode is not None and login.mode & 0o077:
        yield Finding(
            Status.WARN,
            f"{path} is readable by other users (mode {login.mode:o})",
            fix=f"chmod 600 {path}",
            source=f"file:{path}",
        )
    if login.owner_uid is not None and hasattr(os, "getuid") and login.owner_uid != os.getuid():
        yield Finding(
            Status.WARN,
            f"{path} belongs to another user (uid {login.owner_uid})",
            fix=f"sudo chown $(id -u) {path}",
            source=f"file:{path}",
        )
    if (login.mode is None or not login.mode & 0o077) and (
        login.owner_uid is None or not hasattr(os, "getuid") or login.owner_uid == os.getuid()
    ):
        mode = f"{login.mode:o}" if login.mode is not None else "?"
        yield Finding(Status.OK, f"{path} is private (mode {mode}, yours)", source=f"file:{path}")


def keyring_state(ctx: Context) -> Iterator[Finding]:
    if (state := ctx.keychain_state) is not None:  # macOS
        if state.state == "backend":
            present = "holds" if state.item_present else "has no"
            yield Finding(
                Status.OK if state.item_present else Status.INFO,
                f"The macOS Keychain {present} Claude Code's login item",
            )
        elif state.state == "timeout":
            yield Finding(
                Status.WARN,
                "The macOS Keychain did not answer (locked?)",
                detail=state.error,
                fix="security unlock-keychain ~/Library/Keychains/login.keychain-db",
            )
        else:
            yield Finding(Status.WARN, f"The macOS Keychain could not be read ({state.state})", detail=state.error)
        return
    if ctx.options.offline:
        yield Finding(
            Status.SKIP, "Keyring not probed (--offline); on Linux Claude Code keeps its login in a file, not a keyring"
        )
        return
    state = keychain.probe("llm-claude-max", "server")
    if state.state == "no-backend":
        yield Finding(
            Status.INFO,
            "No keyring backend (usual on a headless Linux box); "
            f"`{invocation.command('serve')}` keeps its API key in a 0600 file instead",
            detail="Claude Code itself keeps its login in ~/.claude/.credentials.json on Linux.",
        )
    elif state.state == "backend":
        yield Finding(
            Status.OK, f"Keyring available ({state.backend}); `{invocation.command('serve')}` keeps its API key there"
        )
    else:
        yield Finding(
            Status.INFO,
            f"Keyring unusable ({state.state}); `{invocation.command('serve')}` keeps its API key in a 0600 file",
            detail=state.error,
        )
