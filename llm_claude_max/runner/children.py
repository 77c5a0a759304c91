"""The `claude` process groups this process started, and what ends them when this process ends.

Every CLI runs in a process group of its own (``start_new_session``), so a terminal's Ctrl-C reaches
only us and we stop the CLI ourselves. The price: nothing stops it for us when we end. This module
covers each way out:

============================  ==============================================================
how this process ends          what ends its CLIs
============================  ==============================================================
return, exception, Ctrl-C      the caller's own cleanup (``ClaudeProcess.kill``); ``atexit`` for
                               anything still registered at interpreter exit
SIGTERM, SIGHUP                :func:`install`'s handlers: signal every registered group, then
                               die of the same signal (default action), as if we had not caught it
SIGKILL, a crash (Linux)       the kernel: each CLI is started with ``PR_SET_PDEATHSIG = SIGKILL``
                               (:func:`launch`)
SIGKILL, a crash (elsewhere)   nothing: the CLI sees end of input, finishes the answer it is
                               writing (its request was already sent) and exits
============================  ==============================================================

The parent-death signal is sent when the *thread* that started the child exits, not the process:
every CLI must be started from a thread that outlives it: the plugin's one background loop
(``runner/loop.py``) runs until interpreter exit, after its pool ended every CLI; the server's loop is its
main thread.
It reaches the CLI itself, not processes the CLI started (Claude Code's own tools, only when enabled).

Groups are signalled before their stdin is closed, never after: a CLI paused at a tool call makes
one more (billed) API request when its input closes, none when it is signalled (tool-calling.md §2).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

HANDLED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
EXIT_GRACE_SECONDS = 1.0
"""How long a dying parent lets its CLIs exit on SIGTERM before it SIGKILLs their groups."""
PR_SET_PDEATHSIG = 1

_groups: dict[int, None] = {}  # insertion-ordered set; changed only under the GIL, never locked (signal handlers)
_installed: list[bool] = []  # [True] once install() ran on the main thread
_install_lock = threading.Lock()


def register(pgid: int) -> None:
    """A process group this process started (the CLI's pid: it leads its own group)."""
    _groups[pgid] = None
    install()


def unregister(pgid: int) -> None:
    """The group's leader has exited and was reaped."""
    _groups.pop(pgid, None)


def registered() -> list[int]:
    return list(_groups)


# -- the parent-death signal --------------------------------------------------------------------------


def launch(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The argv and extra ``asyncio.create_subprocess_exec`` arguments that start a CLI which the kernel
    SIGKILLs when the thread that started it exits (Linux; elsewhere ``argv`` unchanged).

    util-linux's ``setpriv --pdeathsig KILL`` sets the signal and execs the CLI in place (same pid; the
    setting survives the exec): about 1 ms. Without it, a ``preexec_fn`` sets it, which costs a full
    fork of this process instead of a vfork, about 8 ms more per start. A parent that dies before the
    signal is set leaves a CLI that has been sent nothing yet: it reads the end of its input and exits."""
    setpriv = _setpriv()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", *argv], {}
    return list(argv), spawn_options()


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    found = shutil.which("setpriv", path=os.defpath + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        return None
    try:  # --pdeathsig appeared in util-linux 2.33 (2018)
        ok = subprocess.run([found, "--pdeathsig", "KILL", "--", "true"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return found if ok.returncode == 0 else None


def spawn_options() -> dict[str, Any]:
    """Extra ``subprocess``/``asyncio.create_subprocess_exec`` arguments for a child: on Linux, a
    ``preexec_fn`` that makes the kernel SIGKILL the child when the thread that started it exits."""
    prctl = _prctl()
    if prctl is None:
        return {}
    parent = os.getpid()

    def die_with_parent() -> None:  # runs in the child, between fork and exec
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError("prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return {"preexec_fn": die_with_parent}


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up in the parent (the child must not import or load anything)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return function


# -- signals and exit -----------------------------------------------------------------------------------


def install() -> None:
    """Install the SIGTERM/SIGHUP handlers and the ``atexit`` hook (idempotent).

    A handler is installed only from the main thread (the only one that may) and only over the default
    action: a program that handles or ignores the signal itself (``nohup``, uvicorn while it serves)
    keeps its own behaviour. Call it from the thread that calls into the runner, too: the sync plugin
    starts its CLIs from a worker thread, where this is a no-op.
    """
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    with _install_lock:
        if _installed:
            return
        for sig in HANDLED_SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(sig) is signal.SIG_DFL:
                    signal.signal(sig, _on_signal)
        atexit.register(stop_all)
        _installed.append(True)


def _on_signal(signum: int, frame: object) -> None:
    stop_all()
    # Die of the signal, as if it had not been caught (the exit status tells the shell what happened).
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def stop_all(grace: float = EXIT_GRACE_SECONDS) -> list[int]:
    """SIGTERM every registered group, wait up to ``grace`` seconds for their leaders, SIGKILL the groups
    (what is left: a CLI that ignored SIGTERM, the tools it started). Returns the groups signalled."""
    groups = list(_groups)
    if not groups:
        return []
    _signal(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_running(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.02)
    _signal(groups, signal.SIGKILL)
    for group in groups:
        unregister(group)
    return groups


def _signal(groups: Iterable[int], sig: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def _running(pid: int) -> bool:
    """The group leader exists and is not a zombie (an exited child not yet reaped)."""
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except (OSError, IndexError):
            return False
    try:  # without /proc a zombie cannot be told from a running process: the grace period is waited out
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
