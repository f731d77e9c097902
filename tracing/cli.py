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
import errno as errno_mod
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Callable, Sequence, TextIO

from rawsys.trace.bpf.prelude import PID_MAX_LIMIT
from rawsys.trace.bpf.program import BACKENDS
from rawsys.trace.events import LostEvent, TraceEvent, Transfer
from rawsys.trace.matcher import Verdict

if TYPE_CHECKING:
    from rawsys.trace.session import Session, Totals

__all__ = ["main", "format_lost", "format_transfer", "format_verdict", "HEADER"]

EXAMPLES = """examples:
    rawsys-trace                  # trace every fd passed over Unix sockets
    rawsys-trace -T               # include a timestamp column (seconds)
    rawsys-trace -p 181 -p 182    # only processes 181 and 182 (both ends!)
    rawsys-trace -t 123           # only thread 123
    rawsys-trace -n nginx         # only processes whose comm is "nginx"
    rawsys-trace -d 10            # trace for 10 seconds, then exit
    rawsys-trace --json           # one JSON object per send/receive on stdout
    rawsys-trace --backend tracepoint   # force the syscall-tracepoint backend
    rawsys-trace doctor           # what this kernel allows, which backend is used
    rawsys-trace setup            # (root) mount tracefs, install bcc and headers
"""

HEADER = (
    f"{'TIME':<8} {'SPID':>6} {'SCOMM':<7} {'SFD':>3} {'RPID':>6} {'RCOMM':<7} {'RFD':>3} "
    f"{'FILE':<15} {'INODE':>7} FLAGS"
)


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
                        help="include a timestamp column (seconds since start)")
    parser.add_argument("-p", "--pid", action="append", type=_typed_id("PID"), default=[],
                        metavar="PID", help="trace this process only (repeatable)")
    parser.add_argument("-t", "--tid", action="append", type=_typed_id("TID"), default=[],
                        metavar="TID", help="trace this thread only (repeatable)")
    parser.add_argument("-n", "--name", metavar="NAME",
                        help="trace processes whose command name (comm) is NAME")
    parser.add_argument("-d", "--duration", type=_duration, metavar="SECONDS",
                        help="total duration of trace, seconds")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="force a backend instead of the one doctor chooses")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per send/receive event on stdout")
    parser.add_argument("--unmatched-after", type=_duration, default=2.0, metavar="SECONDS",
                        help="show a receive whose send was not reported after this long "
                        "as NOSEND (default 2); sends wait for their receive")
    parser.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    return parser


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def format_transfer(t: Transfer, *, start_ns: int = 0, timestamp: bool = False) -> str:
    """One line of the live view, aligned with :data:`HEADER` (about 80 columns)."""
    ev = t.recv if t.recv is not None else t.send
    assert ev is not None
    if timestamp:
        when = f"{max(0, ev.timestamp_ns - start_ns) / 1e9:<8.3f}"
    else:
        when = time.strftime("%H:%M:%S")

    def side(e: TraceEvent | None, fd: int | None) -> str:
        if e is None:
            return f"{'-':>6} {'-':<7} {'-':>3}"
        fds = "-" if fd is None else str(fd)
        return f"{e.pid:>6} {_short(e.comm, 7):<7} {fds:>3}"

    flags = set(t.flags)
    if t.send is not None and not t.send.ok:
        flags.add("FAILED:" + errno_mod.errorcode.get(t.send.errno, str(t.send.errno)))
    elif t.send is None:
        flags.add("NOSEND")
    elif t.in_flight:
        flags.add("INFLIGHT")
    elif t.recv is None:
        flags.add("NORECV")
    flags.discard("CMSG_CLOEXEC")  # CLOEXEC says what the fd got
    inode = str(t.file.inode) if t.file.address else "-"
    return (
        f"{when:<8} {side(t.send, t.send_fd)} {side(t.recv, t.recv_fd)} "
        f"{_short(_file_column(t), 15):<15} {inode:>7} {','.join(sorted(flags)) or '-'}"
    )


def format_lost(lost: LostEvent, *, start_ns: int = 0, timestamp: bool = False) -> str:
    """One LOST line: the sender, who lost it, the file, and the reason in words."""
    if timestamp:
        when = f"{max(0, lost.timestamp_ns - start_ns) / 1e9:<8.3f}"
    else:
        when = time.strftime("%H:%M:%S")
    pid = "-" if lost.pid is None else str(lost.pid)
    fd = "-" if lost.fd is None else str(lost.fd)
    r = lost.receiver
    rpid, rcomm = ("-", "-") if r is None else (str(r.pid), r.comm)
    inode = str(lost.file.inode) if lost.file.address else "-"
    return (
        f"{when:<8} {pid:>6} {_short(lost.comm or '-', 7):<7} {fd:>3} {rpid:>6} "
        f"{_short(rcomm, 7):<7} {'-':>3} {_short(lost.file.label, 15):<15} {inode:>7} "
        f"LOST: {lost.words}"
    )


def format_verdict(v: Verdict, *, start_ns: int = 0, timestamp: bool = False) -> str:
    if isinstance(v, LostEvent):
        return format_lost(v, start_ns=start_ns, timestamp=timestamp)
    return format_transfer(v, start_ns=start_ns, timestamp=timestamp)


def _file_column(t: Transfer) -> str:
    """The file's name for named files, else its kind (the inode is its own column)."""
    f = t.file
    if not f.address:
        return "-"
    if f.name and f.kind in ("file", "dir", "chr", "blk", "link"):
        return f.name
    if f.kind == "anon" and f.name:
        return f"anon:{f.name}"
    return f.kind


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
    from rawsys.trace.jsonlines import JsonLines
    from rawsys.trace.session import MAX_BATCH, Session, SessionError

    session = Session(
        pids=args.pid,
        tids=args.tid,
        comm=args.name,
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
    start_ns = time.monotonic_ns()
    written = 0
    to_json = JsonLines(args.backend or "?")

    def show(transfers: list[Verdict]) -> None:
        for t in transfers:
            out.write(format_verdict(t, start_ns=start_ns, timestamp=args.timestamp) + "\n")

    def show_records(records: list[bytes], final: bool = False) -> None:
        """Write a batch: --json straight from the records (and one record per
        lost fd, from the matcher), else the linked transfers and losses."""
        nonlocal written
        events = session.decode(records)
        verdicts = session.transfers(events) + (
            session.flush() if final else session.matcher.expire(time.monotonic_ns()))
        if args.json:
            out.write(to_json([r for r, ev in zip(records, events) if ev.event != "loss"]))
            for v in verdicts:
                # Each lost fd; at the end, each still in flight (not lost).
                if isinstance(v, LostEvent) or v.in_flight:
                    out.write(json.dumps(v.to_json(), sort_keys=True) + "\n")
        else:
            show(verdicts)
        written += len(records)

    try:
        try:
            session.start()
        except SessionError as e:
            err.write(f"rawsys-trace: {e}\n")
            return 1
        to_json.backend = session.backend or "?"
        why = session.backend_reason.split(";")[0]
        err.write(
            f"Tracing fd transfers, backend {session.backend} ({why}). "
            + ("Ctrl-C to end.\n" if args.duration is None else f"For {args.duration:g} s.\n")
        )
        err.flush()
        if not args.json:
            out.write(HEADER + "\n")
            out.flush()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.signum:
            wait = 0.2
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            records = session.poll_raw(wait, MAX_BATCH, stop.wake_fds)
            if records or not args.json:
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
    are counted as dropped (the summary says how many).
    """
    from rawsys.trace.session import MAX_BATCH

    session.detach()
    budget_end = time.monotonic() + STOP_BUDGET
    while True:
        records = session.poll_raw(0, MAX_BATCH)
        if not records:
            break
        show_records(records)
        if time.monotonic() >= budget_end:
            break
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
