"""`claude-max doctor`: which credential the Claude Code CLI will use and why, who is billed, when the
login expires, the Terms-of-Service risk of the setup, and the exact fix.

The public API for third-party checks::

    from diagnostics import Check, Context, Finding, Status, hookimpl

    @hookimpl
    def doctor_checks():
        return [Check("mycompany.vpn", "Corporate VPN", "My company", run)]

    def run(ctx: Context):
        yield Finding(Status.OK, "VPN is up")

and in the plugin's ``pyproject.toml``::

    [project.entry-points.claude_max_doctor]
    mycompany = "mycompany_doctor"

See ``docs/doctor.md``.
"""

from .context import Context, Options
from .findings import Check, CheckResult, Finding, Status
from .hookspecs import hookimpl

__all__ = ["Check", "CheckResult", "Context", "Finding", "Options", "Status", "hookimpl"]
