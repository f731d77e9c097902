"""The ``--trace`` option every example shares.

``traced(enabled)`` is a context manager: with ``enabled`` true, and when the
tracer can run here (root, bcc importable, ``tracing.session`` present), the
body runs under a ``tracing.session.Session`` that watches this process and
any pids added with ``trace.watch(pid)``; when the body ends, the kernel-side
events are printed after the example's normal output.  When the tracer cannot
run, the reason goes to stderr and the body runs untraced.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Iterator, List


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
        return "--trace needs root (eBPF probes); running untraced"
    try:
        import tracing.session  # noqa: F401
    except ImportError as exc:
        return f"--trace needs the tracer (tracing.session: {exc}); running untraced"
    try:
        import bcc  # noqa: F401
    except ImportError as exc:
        return f"--trace needs bcc (python3-bpfcc: {exc}); running untraced"
    return None


class Trace:
    """What the example body sees: ``watch(pid)`` adds a process (a forked child)."""

    def __init__(self, session: Any = None) -> None:
        self.session = session
        self.pids: List[int] = [os.getpid()]

    @property
    def active(self) -> bool:
        return self.session is not None

    def watch(self, pid: int) -> None:
        self.pids.append(pid)
        add = getattr(self.session, "add_pid", None)
        if add is not None:
            add(pid)


def format_event(event: Any) -> str:
    """One line for one kernel event, whatever the tracer's event type offers."""
    render = getattr(event, "format", None)
    if callable(render):
        return str(render())
    return str(event)


def print_events(events: List[Any], out: Any = None) -> None:
    out = out if out is not None else sys.stdout
    print(f"--- kernel events ({len(events)}) ---", file=out)
    for event in events:
        print(format_event(event), file=out)
    out.flush()


@contextlib.contextmanager
def traced(enabled: bool) -> Iterator[Trace]:
    """Run the body under a tracing session if *enabled* and possible."""
    if not enabled:
        yield Trace()
        return
    reason = why_untraceable()
    if reason is not None:
        print(f"{os.path.basename(sys.argv[0])}: {reason}", file=sys.stderr)
        yield Trace()
        return
    from tracing.session import Session

    pid = os.getpid()
    with Session(pids=[pid]) as session:
        trace = Trace(session)
        yield trace
        if os.getpid() != pid:  # a forked child leaving through the context: not ours
            return
    sys.stdout.flush()
    print_events(list(session.events))
