#!/usr/bin/env python3
# rawsys-trace  Trace file descriptors passed over Unix sockets (SCM_RIGHTS).
#               For Linux, uses BCC, eBPF.
#
# USAGE: rawsys-trace [-h] [-T] [-p PID] [-t TID] [-n NAME] [-d SECONDS]
#                     [--backend {kprobe,fentry,tracepoint}] [--json]
#        rawsys-trace doctor | setup
#
# Each fd that leaves one process's table through sendmsg/sendmmsg and is
# installed in another's by recvmsg/recvmmsg is shown as one line, once both
# ends are seen: the sender's pid/comm/fd, the receiver's pid/comm/fd, the
# kernel struct file both ends share (name or kind, inode), and the flags
# (CLOEXEC, CTRUNC, PEEK).  Sends nobody received, receives whose send was not
# seen, and failed sends are shown too.  The probes read struct offsets from
# the running kernel's BTF; the backend (kprobes, fentry trampolines or
# syscall tracepoints) is chosen from what the kernel allows.
#
# Compared with bcc's sofdsnoop: sends are linked to receives through the
# struct file, every cmsghdr is walked (not only the first), user memory is
# read with bpf_probe_read_user, sendmmsg/recvmmsg are covered, PIDs are typed
# ints filtered in the kernel, and it works without kprobes.
"""Command line of the fd-transfer tracer: ``rawsys-trace`` / ``python -m rawsys.trace``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Callable, Sequence, TextIO

from rawsys.trace.bpf.prelude import PID_MAX_LIMIT, UID_INVALID
from rawsys.trace.bpf.program import BACKENDS
from rawsys.trace.events import COMM_LEN
from rawsys.trace.output import (
    HEADER,
    Printer,
    WallClock,
    format_transfer,
)

if TYPE_CHECKING:
    from rawsys.trace.jsonstream import JsonStream
    from rawsys.trace.session import Session, Totals

__all__ = ["main", "format_transfer", "HEADER"]

EXAMPLES = """examples:
    rawsys-trace                  # trace every fd passed over Unix sockets
    rawsys-trace -T               # TIME in seconds since tracing began
    rawsys-trace -p 181 -p 182    # only processes 181 and 182 (both ends!)
    rawsys-trace -t 123           # only thread 123
    rawsys-trace -n tmux          # only transfers where a comm contains "tmux"
    rawsys-trace -u 1000          # only processes of user 1000
    rawsys-trace -x               # only failed sends and lost fds
    rawsys-trace -i 5             # every 5 s: transfers per sender -> receiver, losses
    rawsys-trace -d 10            # trace for 10 seconds, then exit
    rawsys-trace --json           # JSON lines: sends, receives, transfers
    rawsys-trace --backend tracepoint   # force the syscall-tracepoint backend
    rawsys-trace doctor           # what this kernel allows, which backend is used
    rawsys-trace setup            # (root) mount tracefs, install bcc and headers
"""

# Stopping at once: after the signal (or -d), routine events still in the ring
# are written for at most this long, then counted as dropped.
STOP_BUDGET = 0.1


def _typed_id(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not 0 < value < PID_MAX_LIMIT:
            raise argparse.ArgumentTypeError(
                f"{what} {value} is out of range 1..{PID_MAX_LIMIT - 1}"
            )
        return value

    parse.__name__ = what
    return parse


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return value


def _uid(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"UID must be an integer, got {text!r}") from None
    if not 0 <= value < UID_INVALID:
        raise argparse.ArgumentTypeError(f"UID {value} is out of range 0..{UID_INVALID - 1}")
    return value


def _comm_part(text: str) -> str:
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError(f"NAME must be non-empty, without NUL: {text!r}")
    if len(text.encode()) > COMM_LEN - 1:
        raise argparse.ArgumentTypeError(
            f"NAME {text!r} is longer than the {COMM_LEN - 1} bytes the kernel keeps of a "
            "command name (TASK_COMM_LEN)")
    return text


def _version() -> str:
    from rawsys import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rawsys-trace",
        usage="%(prog)s [options]  |  %(prog)s doctor [-h]  |  %(prog)s setup [-h]",
        description="Trace file descriptors passed over Unix sockets (SCM_RIGHTS): "
        "one line per fd, sender to receiver, linked by the kernel's struct file. "
        "'doctor' shows what this kernel allows and which backend is used; "
        "'setup' (root) prepares the machine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    parser.add_argument("-T", "--timestamp", action="store_true",
                        help="TIME in seconds since tracing began instead of the clock")
    parser.add_argument("-p", "--pid", action="append", type=_typed_id("PID"), default=[],
                        metavar="PID", help="trace this process only (repeatable)")
    parser.add_argument("-t", "--tid", action="append", type=_typed_id("TID"), default=[],
                        metavar="TID", help="trace this thread only (repeatable)")
    parser.add_argument("-u", "--uid", action="append", type=_uid, default=[],
                        metavar="UID", help="trace processes of this user only (repeatable)")
    parser.add_argument("-n", "--name", metavar="NAME", type=_comm_part,
                        help="only transfers where the sender's or receiver's command name "
                        "(comm) contains NAME")
    parser.add_argument("-x", "--failed", action="store_true",
                        help="only show failed sends and lost fds")
    parser.add_argument("-i", "--interval", type=_duration, metavar="SECONDS",
                        help="print a summary every SECONDS instead of one line per fd: "
                        "transfers per sender -> receiver, losses per cause")
    parser.add_argument("-d", "--duration", type=_duration, metavar="SECONDS",
                        help="total duration of trace, seconds")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="force a backend instead of the one doctor chooses")
    parser.add_argument("--json", action="store_true",
                        help="print JSON lines on stdout: each send and receive, and each "
                        "transfer once both ends are seen")
    parser.add_argument("--unmatched-after", type=_duration, default=2.0, metavar="SECONDS",
                        help="show a receive whose send was not reported after this long "
                        "as NOSEND (default 2); sends wait for their receive")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    return parser


class _StopSignal:
    """SIGINT and SIGTERM set a flag and wake the loop's wait through a pipe.

    The handler raises nothing, so a signal never cuts an output line in
    half; the loop sees the flag after its current batch.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._old_wakeup = signal.set_wakeup_fd(self._w)
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.signum:
            self.signum = signum

    @property
    def wake_fds(self) -> tuple[int, ...]:
        return (self._r,)

    def restore(self) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._r)
        os.close(self._w)


def summary_lines(totals: Totals, written: int) -> list[str]:
    """The closing summary: what was produced, written and dropped (and that no anomaly was)."""
    produced = totals.produced_routine + totals.produced_anomalies
    lines = [
        f"Events: {produced} produced ({totals.produced_routine} routine, "
        f"{totals.produced_anomalies} anomalies), {written} written",
        f"Routine events dropped: {totals.routine_dropped} ({totals.lost_routine} refused "
        f"by the full ring buffer, {totals.unread_routine} unread at stop)",
        f"Anomalies dropped: {totals.anomalies_dropped}",
    ]
    if totals.untracked:
        lines.append(f"Calls not followed (a per-thread map was full): {totals.untracked}")
    lost = totals.routine_dropped + totals.anomalies_dropped + totals.untracked
    lines.append(f"Lost events: {lost}")
    return lines


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from rawsys.trace.session import MAX_BATCH, Session, SessionError

    session = Session(
        pids=args.pid,
        tids=args.tid,
        uids=args.uid,
        comm=None,  # -n is a substring of either end's name: matched here, not in the kernel
        backend=args.backend,
        grace=args.unmatched_after,
    )
    if args.ebpf:
        out.write(session.program_text())
        return 0
    if os.geteuid() != 0:
        err.write("rawsys-trace: must be run as root (eBPF); try sudo\n")
        return 1
    stop = _StopSignal()
    written = 0
    printer = Printer(out, WallClock(), as_json=args.json, timestamp=args.timestamp,
                      name=args.name, failures_only=args.failed, interval=args.interval,
                      path_of=session.file_path)

    # Plain --json links routine records without decoding them (the same text).
    fast_json = args.json and args.name is None and not args.failed and args.interval is None
    stream: JsonStream | None = None

    def show_records(records: list[bytes], final: bool = False) -> None:
        """Write a batch: its events (--json) and the transfers they complete or expire."""
        nonlocal written, stream
        if fast_json:
            if stream is None:  # made once the session knows its backend
                from rawsys.trace.jsonstream import JsonStream

                stream = JsonStream(session.matcher, printer.clock, session.backend or "?",
                                    session.file_path)
            out.write(stream.batch(records, time.monotonic_ns(), final=final))
            written += len(records)
            return
        events = session.decode(records)
        now = time.monotonic_ns()
        verdicts = session.transfers(events) + (session.flush() if final else
                                                session.matcher.expire(now))
        # The kernel's loss reports reach the user as the matcher's LostEvents.
        printer.show([ev for ev in events if ev.event != "loss"], verdicts)
        printer.tick(now, final=final)
        written += len(records)

    try:
        try:
            session.start()
        except SessionError as e:
            err.write(f"rawsys-trace: {e}\n")
            return 1
        why = session.backend_reason.split(";")[0]
        err.write(
            f"Tracing fd transfers, backend {session.backend} ({why}). "
            + ("Ctrl-C to end.\n" if args.duration is None else f"For {args.duration:g} s.\n")
        )
        err.flush()
        # -T and -i count from here: tracing has begun.
        printer.start_at(time.monotonic_ns())
        printer.header()
        out.flush()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.signum:
            wait = 0.2
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            records = session.poll_raw(wait, MAX_BATCH, stop.wake_fds)
            show_records(records)
            if records:
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        stop.restore()
        if session.running:
            try:
                _stop_at_once(session, show_records)
                out.flush()
            except BrokenPipeError:
                pass
            finally:
                totals = session.totals()
                session.close()
                for line in summary_lines(totals, written):
                    err.write(line + "\n")
                if session.evicted:
                    err.write(f"Pending sends evicted (cap reached): {session.evicted}\n")
                err.flush()
    return 0


def _stop_at_once(session: Session, show_records: Callable[..., None]) -> None:
    """Detach, write every anomaly and what little else fits STOP_BUDGET, drop the rest.

    Never drains for long: the routine events left when the budget is spent
    are counted as dropped (the summary says how many).  The budget is spent
    while the probes go, not after.
    """
    from rawsys.trace.session import MAX_BATCH

    session.start_detach()
    budget_end = time.monotonic() + STOP_BUDGET
    while time.monotonic() < budget_end:
        records = session.poll_raw(0, MAX_BATCH)
        if not records:
            break
        show_records(records)
    session.detach()  # from here on nothing is produced: the counts are final
    show_records(session.poll_raw(0, 0), final=True)  # anomalies, always; the matcher flushed
    session.discard_routine()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rawsys-trace``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in ("doctor", "setup"):
        from rawsys.trace.cli_admin import doctor_main, setup_main

        sub = doctor_main if args_list[0] == "doctor" else setup_main
        return sub(args_list[1:])
    args = build_parser().parse_args(args_list)
    try:
        return _run(args, sys.stdout, sys.stderr)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, like cat.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except ValueError as e:  # bad filters reaching the Session
        print(f"rawsys-trace: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
