"""The ``--trace`` option every example shares.

``traced(enabled)`` is a context manager: with ``enabled`` true, and when the
tracer can run here (root, the distribution's bcc, ``tracing.session``), the
body runs under a ``tracing.session.Session`` that watches this process (and
the pids added with ``trace.watch(pid)`` when the session supports it); when
the body ends, the kernel-side events are printed after the example's normal
output, under a ``--- kernel events (N) ---`` line.  When the tracer cannot
run, the reason goes to stderr and the body runs untraced.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from typing import Any, Iterator, List, TextIO

EVENTS_HEADER = "--- kernel events"


def add_trace_argument(parser: argparse.ArgumentParser) -> None:
    """Give *parser* the ``--trace`` flag every example takes."""
    parser.add_argument(
        "--trace",
        action="store_true",
        help="as root with bcc: print the kernel-side events of this example's transfers",
    )


def why_untraceable() -> str | None:
    """``None`` when a tracing session can start here, otherwise the reason."""
    if os.geteuid() != 0:
        return "--trace needs root (eBPF probes)"
    try:
        import tracing.session  # noqa: F401
    except ImportError as exc:
        return f"--trace needs the tracer, tracing.session, which is not available ({exc})"
    try:
        from tracing.bccloader import BccUnavailable, load_bcc
    except ImportError as exc:
        return f"--trace needs tracing.bccloader ({exc})"
    try:
        load_bcc()
    except (BccUnavailable, ImportError, OSError) as exc:
        return f"--trace needs bcc: {exc}"
    return None


class Trace:
    """What the example body sees: ``watch(pid)`` adds a process (a forked child)."""

    def __init__(self, session: Any = None) -> None:
        self.session = session

    @property
    def active(self) -> bool:
        return self.session is not None

    def watch(self, pid: int) -> None:
        add = getattr(self.session, "add_pid", None)
        if callable(add):
            add(pid)


def format_event(event: Any) -> str:
    """One line for one kernel event (``tracing.events.SendEvent``/``RecvEvent``)."""
    if not all(hasattr(event, a) for a in ("event", "syscall", "pid", "fds", "flags", "ok")):
        return str(event)
    flags = ",".join(sorted(event.flags)) or "-"
    result = "ok" if event.ok else errno.errorcode.get(event.errno, str(event.errno))
    files = " ".join(f.label for f in getattr(event, "files", ()))
    cloexec = getattr(event, "cloexec", ())
    fds = " ".join(
        f"{fd}{'(cloexec)' if i < len(cloexec) and cloexec[i] else ''}"
        for i, fd in enumerate(event.fds)
    ) or "-"
    return (f"{event.event:<4} {event.syscall:<8} pid {event.pid:<7} sock {event.sock:<3} "
            f"{result:<6} fds {fds}  flags {flags}  {files}").rstrip()


def print_events(events: List[Any], out: TextIO | None = None) -> None:
    out = out if out is not None else sys.stdout
    print(f"{EVENTS_HEADER} ({len(events)}) ---", file=out)
    for event in events:
        print(format_event(event), file=out)
    out.flush()


def _say(reason: str) -> None:
    print(f"{os.path.basename(sys.argv[0])}: {reason}; running untraced", file=sys.stderr)
    sys.stderr.flush()


@contextlib.contextmanager
def traced(enabled: bool) -> Iterator[Trace]:
    """Run the body under a tracing session if *enabled* and possible."""
    if not enabled:
        yield Trace()
        return
    reason = why_untraceable()
    if reason is not None:
        _say(reason)
        yield Trace()
        return
    from tracing.session import Session

    pid = os.getpid()
    session = Session(pids=[pid])
    try:
        session.__enter__()
    except Exception as exc:  # probes that cannot attach: say why, run untraced
        _say(f"--trace could not start the tracer ({type(exc).__name__}: {exc})")
        yield Trace()
        return
    try:
        yield Trace(session)
    finally:
        if os.getpid() == pid:  # a forked child leaving through here is not the owner
            session.__exit__(*sys.exc_info())
    sys.stdout.flush()
    print_events(list(session.events))
