"""The ``--trace`` option every example shares.

``traced(enabled)`` is a context manager: with ``enabled`` true, and when the
tracer can run here (root, the distribution's bcc, ``rawsys.trace.session``), the
body runs under a ``rawsys.trace.session.Session`` filtered (in the kernel) on
this process and the children it forks through ``trace.fork()``.  When the
body ends, the kernel-side events are printed after the example's normal
output: a ``--- kernel events (N) ---`` line, one line per event, then one
line per transfer (a send linked to its receive by the same kernel
``struct file``).  When the tracer cannot run, the reason goes to stderr and
the body runs untraced.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from typing import Any, Iterator, List, TextIO

EVENTS_HEADER = "--- kernel events"
QUIET_SECONDS = 0.25  # after the body: stop reading once the ring buffer is this quiet
MAX_SHOWN = 8  # fds listed per event line


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
        import rawsys.trace.session  # noqa: F401
    except ImportError as exc:
        return f"--trace needs the tracer, rawsys.trace.session, which is not available ({exc})"
    try:
        from rawsys.trace.system.bccloader import BccUnavailable, load_bcc
    except ImportError as exc:
        return f"--trace needs rawsys.trace.system.bccloader ({exc})"
    try:
        load_bcc()
    except (BccUnavailable, ImportError, OSError) as exc:
        return f"--trace needs bcc: {exc}"
    return None


class Trace:
    """What the example body sees: ``active``, and ``fork()`` that keeps the child traced."""

    def __init__(self, session: Any = None) -> None:
        self.session = session

    @property
    def active(self) -> bool:
        return self.session is not None

    def fork(self) -> int:
        """``os.fork()``; when tracing, the child waits until it is added to the filter.

        Without the wait the child could send before the parent has told the
        kernel-side filter about it, and its events would be lost.
        """
        if self.session is None:
            return os.fork()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # the parent has added this pid
            os.close(r)
            return 0
        os.close(r)
        try:
            self.session.add_pid(pid)
        finally:
            os.write(w, b"g")
            os.close(w)
        return pid


def format_event(event: Any) -> str:
    """One line for one kernel event (``rawsys.trace.events.SendEvent``/``RecvEvent``)."""
    flags = ",".join(sorted(event.flags)) or "-"
    result = "ok" if event.ok else errno.errorcode.get(event.errno, str(event.errno))
    files = " ".join(f.label for f in event.files)
    cloexec = event.cloexec
    shown = [
        f"{fd}{'(cloexec)' if i < len(cloexec) and cloexec[i] else ''}"
        for i, fd in enumerate(event.fds[:MAX_SHOWN])
    ]
    if len(event.fds) > MAX_SHOWN:
        shown.append(f"... ({max(event.fds_seen, len(event.fds))} fds)")
        files = " ".join(f.label for f in event.files[:MAX_SHOWN]) + " ..."
    fds = " ".join(shown) or "-"
    return (f"{event.event:<4} {event.syscall:<8} pid {event.pid:<7} sock {event.sock:<3} "
            f"{result:<12} fds {fds}  flags {flags}  {files}").rstrip()


def format_transfer(t: Any) -> str:
    """One line per fd that crossed: sender pid/fd -> receiver pid/fd, the kernel file."""
    def side(ev: Any, fd: int | None) -> str:
        return "?" if ev is None else f"pid {ev.pid} fd {fd}"

    flags = ",".join(sorted(t.flags)) or "-"
    return (f"transfer {side(t.send, t.send_fd)} -> {side(t.recv, t.recv_fd)}  "
            f"file {t.file.label} 0x{t.file.address:x}  flags {flags}")


def format_lost(lost: Any) -> str:
    """One line per fd the kernel dropped: the sender's pid/fd, why, and where."""
    sender = "?" if lost.pid is None else f"pid {lost.pid} fd {lost.fd}"
    receiver = "" if lost.receiver is None else f" (receiver pid {lost.receiver.pid})"
    fit = "" if lost.fit is None else f", {lost.fit} fit"
    return (f"lost     {sender}  file {lost.file.label} 0x{lost.file.address:x}  "
            f"{lost.reason} in {lost.syscall}{fit}{receiver}")


def print_events(events: List[Any], transfers: List[Any], out: TextIO | None = None) -> None:
    out = out if out is not None else sys.stdout
    print(f"{EVENTS_HEADER} ({len(events)}) ---", file=out)
    for event in events:
        print(format_event(event), file=out)
    from rawsys.trace.events import LostEvent

    for transfer in transfers:
        # The matcher also reports fds that never arrived (a receive cut short).
        lost = isinstance(transfer, LostEvent)
        print(format_lost(transfer) if lost else format_transfer(transfer), file=out)
    out.flush()


def drain(session: Any) -> List[Any]:
    """Every event still in the ring buffer: read until it has been quiet for a moment."""
    events: List[Any] = []
    while True:
        batch = session.poll(QUIET_SECONDS)
        if not batch:
            return events
        events.extend(batch)


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
    from rawsys.trace.session import Session

    owner = os.getpid()
    session = Session(pids=[owner])
    try:
        session.start()
    except Exception as exc:  # probes that cannot load or attach: say why, run untraced
        _say(f"--trace could not start the tracer ({type(exc).__name__}: {exc})")
        yield Trace()
        return
    events: List[Any] = []
    transfers: List[Any] = []
    try:
        yield Trace(session)
        if os.getpid() != owner:  # a forked child leaving through here: not its session
            return
        events = drain(session)
        # Failed sends moved nothing; a receive that installed nothing links to nothing.
        transfers = [
            t for t in session.transfers([e for e in events if e.ok]) + session.flush()
            if t.file.address != 0
        ]
    finally:
        if os.getpid() == owner:
            session.close()
    sys.stdout.flush()
    print_events(events, transfers)
