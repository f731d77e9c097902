"""What ``rawsys-trace`` prints: the table, the JSON records, the interval summary.

Pure functions and small classes over decoded events (no kernel, no bcc), so
every line the command can print is testable without tracing anything.

Times: the probes stamp each event with ``bpf_ktime_get_ns()``
(``CLOCK_MONOTONIC``); :class:`WallClock` converts that to the wall clock
with an offset taken once, when tracing starts, so TIME is when the event
happened in the kernel, not when its line was printed.
"""

from __future__ import annotations

import datetime
import errno as errno_mod
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, TextIO

from rawsys.trace.events import FileIdentity, LostEvent, TraceEvent, Transfer

__all__ = [
    "HEADER",
    "WallClock",
    "IntervalSummary",
    "Printer",
    "event_json",
    "file_column",
    "format_transfer",
    "is_failure_or_loss",
    "loss_cause",
    "name_matches",
    "transfer_json",
]

COMM_WIDTH = 15  # TASK_COMM_LEN - 1: the whole name the kernel keeps, as bcc's tools show it
PID_WIDTH = 7  # PID_MAX_LIMIT (2**22) has 7 digits
FD_WIDTH = 3
FLAGS_WIDTH = 12  # "CLOEXEC,PEEK", "FAILED:EBADF"


def _side_header(prefix: str) -> str:
    pid, comm, fd = prefix + "PID", prefix + "COMM", prefix + "FD"
    return f"{pid:>{PID_WIDTH}} {comm:<{COMM_WIDTH}} {fd:>{FD_WIDTH}}"


# The fixed columns end before column 80; FILE comes last and is never cut.
HEADER = f"{'TIME':<8} {_side_header('S')} {_side_header('R')} {'FLAGS':<{FLAGS_WIDTH}} FILE"


class WallClock:
    """Converts the probes' ``CLOCK_MONOTONIC`` stamps to wall-clock time.

    The offset is ``CLOCK_REALTIME - CLOCK_MONOTONIC``, sampled when the
    clock is made (the tracer makes it when tracing starts); the narrowest of
    a few samples is kept, so the error is a microsecond or so.
    """

    def __init__(self, offset_ns: int | None = None) -> None:
        if offset_ns is None:
            best: tuple[int, int] | None = None
            for _ in range(5):
                m0 = time.monotonic_ns()
                r = time.time_ns()
                m1 = time.monotonic_ns()
                width = m1 - m0
                if best is None or width < best[0]:
                    best = (width, r - (m0 + m1) // 2)
            assert best is not None
            offset_ns = best[1]
        self.offset_ns = offset_ns
        self._hms_second = -1
        self._hms_text = ""

    def wall_ns(self, ktime_ns: int) -> int:
        """Nanoseconds since the Unix epoch for a ``bpf_ktime_get_ns()`` stamp."""
        return ktime_ns + self.offset_ns

    def datetime(self, ktime_ns: int) -> datetime.datetime:
        seconds, ns = divmod(self.wall_ns(ktime_ns), 1_000_000_000)
        utc = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        return utc.replace(microsecond=ns // 1000)

    def iso(self, ktime_ns: int) -> str:
        """ISO 8601, UTC, to the microsecond: ``2026-12-02T15:20:01.123456+00:00``."""
        return self.datetime(ktime_ns).isoformat(timespec="microseconds")

    def hms(self, ktime_ns: int) -> str:
        """``HH:MM:SS`` in local time, as bcc's tools print it."""
        second = self.wall_ns(ktime_ns) // 1_000_000_000
        if second != self._hms_second:  # one strftime per second of events, not per row
            self._hms_second = second
            self._hms_text = time.strftime("%H:%M:%S", time.localtime(second))
        return self._hms_text


# ------------------------------------------------------------------ the table
NAMED_KINDS = ("file", "dir", "chr", "blk", "link")


def file_column(f: FileIdentity, path: str = "") -> str:
    """The file as /proc shows it: its full path (*path*, else ``f.path``), else
    ``pipe:[ino]``, ``socket:[ino]``, ``anon_inode:[name]``; ``-`` when there is
    none (a failed send of a closed fd).  A named file whose path is unknown
    shows its name."""
    if not f.address:
        return "-"
    path = path or f.path
    if path and f.kind in NAMED_KINDS:
        return path
    if f.kind == "pipe":
        return f"pipe:[{f.inode}]"
    if f.kind == "socket":
        return f"socket:[{f.inode}]"
    if f.kind == "anon":
        # The dentry of an anonymous inode is named like "[eventfd]" already.
        name = f.name if f.name.startswith("[") else f"[{f.name or f.inode}]"
        return f"anon_inode:{name}"
    return f.name or f"{f.kind}:[{f.inode}]"


def _errno_name(n: int) -> str:
    return errno_mod.errorcode.get(n, str(n))


def transfer_flags(t: Transfer) -> list[str]:
    """The FLAGS of a row: what the receive did, and how a half is unmatched or failed."""
    flags = set(t.flags)
    if t.send is not None and not t.send.ok:
        flags.add("FAILED:" + _errno_name(t.send.errno))
    elif t.send is None:
        flags.add("NOSEND")
    elif getattr(t, "in_flight", False):
        flags.add("INFLIGHT")
    elif t.recv is None:
        flags.add("NORECV")
    flags.discard("CMSG_CLOEXEC")  # CLOEXEC says what the fd got
    return sorted(flags)


def format_transfer(
    t: Transfer, clock: WallClock, *, start_ns: int = 0, timestamp: bool = False,
    path: str = "",
) -> str:
    """One row of the live view under :data:`HEADER`: the fixed columns end before
    column 80, the file comes last, whole.

    TIME is when the receive happened (the send, for a half alone), on the
    wall clock; with *timestamp*, seconds since *start_ns* (the moment
    tracing began, ``CLOCK_MONOTONIC``).
    """
    ev = t.recv if t.recv is not None else t.send
    assert ev is not None
    if timestamp:
        when = f"{max(0, ev.timestamp_ns - start_ns) / 1e9:<8.3f}"
    else:
        when = clock.hms(ev.timestamp_ns)

    def side(e: TraceEvent | None, fd: int | None) -> str:
        if e is None:
            return f"{'-':>{PID_WIDTH}} {'-':<{COMM_WIDTH}} {'-':>{FD_WIDTH}}"
        fds = "-" if fd is None else str(fd)
        return f"{e.pid:>{PID_WIDTH}} {e.comm:<{COMM_WIDTH}} {fds:>{FD_WIDTH}}"

    flags = ",".join(transfer_flags(t)) or "-"
    return (
        f"{when:<8} {side(t.send, t.send_fd)} {side(t.recv, t.recv_fd)} "
        f"{flags:<{FLAGS_WIDTH}} {file_column(t.file, path)}"
    )


def format_lost(lost: LostEvent, clock: WallClock, *, start_ns: int = 0,
                timestamp: bool = False, path: str = "") -> str:
    """One LOST row under :data:`HEADER`: the sender, the process whose action lost
    the fd (no fd of its own), ``LOST``, the file, then the reason in words."""
    if timestamp:
        when = f"{max(0, lost.timestamp_ns - start_ns) / 1e9:<8.3f}"
    else:
        when = clock.hms(lost.timestamp_ns)
    pid = "-" if lost.pid is None else str(lost.pid)
    fd = "-" if lost.fd is None else str(lost.fd)
    r = lost.receiver
    rpid, rcomm = ("-", "-") if r is None else (str(r.pid), r.comm)
    return (
        f"{when:<8} {pid:>{PID_WIDTH}} {(lost.comm or '-'):<{COMM_WIDTH}} {fd:>{FD_WIDTH}} "
        f"{rpid:>{PID_WIDTH}} {rcomm:<{COMM_WIDTH}} {'-':>{FD_WIDTH}} {'LOST':<{FLAGS_WIDTH}} "
        f"{file_column(lost.file, path)}  ({lost.words})"
    )


def lost_json(lost: LostEvent, clock: WallClock, path: str = "") -> dict[str, object]:
    """A lost fd: :meth:`LostEvent.to_json` with ``time`` on this run's wall clock
    and the file's ``path``."""
    out = lost.to_json()
    out["time"] = clock.iso(lost.timestamp_ns)
    file = lost.file.to_json()
    file["path"] = file_column(lost.file, path)
    out["file"] = file
    return out


# ------------------------------------------------------------------ filters
def name_matches(t: Transfer, name: str) -> bool:
    """``-n NAME``: either end's command name contains *name* (a substring, as in bcc)."""
    return any(e is not None and name in e.comm for e in (t.send, t.recv))


def event_name_matches(ev: TraceEvent, name: str) -> bool:
    return name in ev.comm


def loss_cause(t: Transfer) -> str | None:
    """Why the fd of *t* did not reach a receiver, or None when it did.

    ``send-failed:ERRNO`` (sendmsg refused it), ``no-receive-seen`` (a send
    still alone when the trace ended or its wait ran out: the fds a CTRUNC
    receive dropped end here).
    """
    if t.send is not None and not t.send.ok:
        return "send-failed:" + _errno_name(t.send.errno)
    if t.send is not None and t.recv is None:
        return "no-receive-seen"
    return None


def is_failure_or_loss(t: Transfer) -> bool:
    """``-x``: a failed send, a send nobody was seen receiving, or an fd that came
    with a receive cut short (CTRUNC: others of its message were dropped)."""
    if loss_cause(t) is not None:
        return True
    return t.recv is not None and "CTRUNC" in t.recv.flags


def is_failed_event(ev: TraceEvent) -> bool:
    """``-x`` in JSON: a failed send, or a receive cut short (CTRUNC)."""
    return not ev.ok or "CTRUNC" in ev.flags


# ------------------------------------------------------------------ JSON
PathOf = Callable[[FileIdentity], str]


def _no_path(f: FileIdentity) -> str:
    return ""


def event_json(ev: TraceEvent, clock: WallClock, path_of: PathOf = _no_path) -> dict[str, object]:
    """A send or receive record: :meth:`TraceEvent.to_json` with ``time``, ISO wall
    clock, and each file's ``path`` as :func:`file_column` shows it."""
    out = ev.to_json()
    out["time"] = clock.iso(ev.timestamp_ns)
    files: list[dict[str, object]] = []
    for f in ev.files:
        record = f.to_json()
        record["path"] = file_column(f, path_of(f) if f.kind in NAMED_KINDS else "")
        files.append(record)
    out["files"] = files
    return out


def transfer_json(t: Transfer, clock: WallClock, path: str = "") -> dict[str, object]:
    """One fd that reached a receiver: ``"event": "transfer"``, both sides and the file.

    ``sender``/``receiver`` are ``{pid, tid, comm, fd, sock, time}`` of the
    send and receive records the transfer links (the same file address and
    inode as their ``files[]`` entry); ``time`` is the receive's.
    An fd still queued when tracing stopped (``t.in_flight``) has
    ``"in_flight": true``, ``"receiver": null`` and its send's ``time``.
    """
    assert t.send is not None and (t.recv is not None or t.in_flight)

    def side(ev: TraceEvent, fd: int | None) -> dict[str, object]:
        return {"pid": ev.pid, "tid": ev.tid, "comm": ev.comm, "fd": fd, "sock": ev.sock,
                "time": clock.iso(ev.timestamp_ns)}

    file = t.file.to_json()
    file["path"] = file_column(t.file, path)
    return {
        "event": "transfer",
        "time": clock.iso((t.send if t.recv is None else t.recv).timestamp_ns),
        "sender": side(t.send, t.send_fd),
        "receiver": None if t.recv is None else side(t.recv, t.recv_fd),
        "file": file,
        "flags": [f for f in transfer_flags(t) if f not in ("NOSEND", "INFLIGHT")],
        "in_flight": t.in_flight,
    }


# ------------------------------------------------------------------ -i summary
@dataclass(frozen=True)
class _Proc:
    pid: int
    comm: str

    def __str__(self) -> str:
        return f"{self.pid} {self.comm}"


def _proc(ev: TraceEvent | None) -> _Proc:
    return _Proc(0, "-") if ev is None else _Proc(ev.pid, ev.comm)


class IntervalSummary:
    """``-i SECONDS``: per interval, transfers per sender -> receiver and losses per cause."""

    def __init__(self) -> None:
        self.pairs: Counter[tuple[_Proc, _Proc]] = Counter()
        self.losses: Counter[str] = Counter()

    def add(self, transfers: Iterable[Transfer]) -> None:
        for t in transfers:
            cause = loss_cause(t)
            if cause is not None:
                self.losses[cause] += 1
            if t.matched:
                self.pairs[(_proc(t.send), _proc(t.recv))] += 1

    def add_loss(self, cause: str, n: int = 1) -> None:
        self.losses[cause] += n

    def clear(self) -> None:
        self.pairs.clear()
        self.losses.clear()

    def _sorted_pairs(self) -> list[tuple[tuple[_Proc, _Proc], int]]:
        return sorted(self.pairs.items(),
                      key=lambda kv: (-kv[1], kv[0][0].pid, kv[0][1].pid, kv[0][0].comm))

    def _sorted_losses(self) -> list[tuple[str, int]]:
        return sorted(self.losses.items(), key=lambda kv: (-kv[1], kv[0]))

    def lines(self, when: str) -> list[str]:
        """The text of one interval: a time line, then count-sorted rows."""
        out = [f"{when}  transfers {sum(self.pairs.values())}, losses {sum(self.losses.values())}"]
        if self.pairs:
            out.append(f"{'COUNT':>8}  {'SENDER':<23} -> RECEIVER")
            for (s, r), n in self._sorted_pairs():
                out.append(f"{n:>8}  {str(s):<23} -> {r}")
        if self.losses:
            out.append(f"{'COUNT':>8}  LOST (cause)")
            for cause, n in self._sorted_losses():
                out.append(f"{n:>8}  {cause}")
        return out

    def to_json(self, when: str, interval: float) -> Mapping[str, object]:
        return {
            "event": "summary",
            "time": when,
            "interval": interval,
            "transfers": [
                {"sender": {"pid": s.pid, "comm": s.comm},
                 "receiver": {"pid": r.pid, "comm": r.comm}, "count": n}
                for (s, r), n in self._sorted_pairs()
            ],
            "losses": [{"reason": c, "count": n} for c, n in self._sorted_losses()],
        }


# ------------------------------------------------------------------ the printer
class Printer:
    """Writes what the command shows, from decoded events and the transfers they complete.

    *name*: ``-n`` (substring of either end's comm); *failures_only*: ``-x``;
    *interval*: ``-i`` (summaries instead of rows); *as_json*: ``--json``.
    """

    def __init__(
        self,
        out: TextIO,
        clock: WallClock,
        *,
        as_json: bool = False,
        timestamp: bool = False,
        start_ns: int = 0,
        name: str | None = None,
        failures_only: bool = False,
        interval: float | None = None,
        path_of: PathOf = _no_path,
    ) -> None:
        self.out = out
        self.path_of = path_of
        self.clock = clock
        self.as_json = as_json
        self.timestamp = timestamp
        self.start_ns = start_ns
        self.name = name
        self.failures_only = failures_only
        self.interval = interval
        self.summary = IntervalSummary()
        self._next_ns = start_ns + int((interval or 0) * 1e9)

    def start_at(self, start_ns: int) -> None:
        """Tracing began at *start_ns* (``CLOCK_MONOTONIC``): -T and -i count from here."""
        self.start_ns = start_ns
        self._next_ns = start_ns + int((self.interval or 0) * 1e9)

    def header(self) -> None:
        if not self.as_json and self.interval is None:
            self.out.write(HEADER + "\n")

    def _wanted(self, t: Transfer) -> bool:
        if self.name is not None and not name_matches(t, self.name):
            return False
        return not self.failures_only or is_failure_or_loss(t)

    def _lost_wanted(self, lost: LostEvent) -> bool:
        if self.name is None:
            return True
        names = [lost.comm or ""] + ([lost.receiver.comm] if lost.receiver else [])
        return any(self.name in n for n in names)

    def show(self, events: Iterable[TraceEvent],
             verdicts: Iterable[Transfer | LostEvent]) -> None:
        """Events just read and what the matcher made of them: transfers (or
        unmatched halves) and lost fds."""
        verdicts = list(verdicts)
        losses = [v for v in verdicts if isinstance(v, LostEvent) and self._lost_wanted(v)]
        transfers = [v for v in verdicts if isinstance(v, Transfer)]
        if self.interval is not None:
            self.summary.add(t for t in transfers
                             if self.name is None or name_matches(t, self.name))
            for lost in losses:
                self.summary.add_loss(lost.reason)
            return
        w = self.out.write
        if self.as_json:
            for ev in events:
                if self.name is not None and self.name not in ev.comm:
                    continue
                if self.failures_only and not is_failed_event(ev):
                    continue
                w(json.dumps(event_json(ev, self.clock, self.path_of), sort_keys=True) + "\n")
            for t in transfers:
                if (t.matched or t.in_flight) and self._wanted(t):
                    record = transfer_json(t, self.clock, self._path(t.file))
                    w(json.dumps(record, sort_keys=True) + "\n")
            for lost in losses:
                record = lost_json(lost, self.clock, self._path(lost.file))
                w(json.dumps(record, sort_keys=True) + "\n")
            return
        for t in transfers:
            if self._wanted(t):
                w(format_transfer(t, self.clock, start_ns=self.start_ns,
                                  timestamp=self.timestamp, path=self._path(t.file)) + "\n")
        for lost in losses:
            w(format_lost(lost, self.clock, start_ns=self.start_ns, timestamp=self.timestamp,
                          path=self._path(lost.file)) + "\n")

    def _path(self, f: FileIdentity) -> str:
        return self.path_of(f) if f.address and f.kind in NAMED_KINDS else ""

    def tick(self, now_ns: int, *, final: bool = False) -> None:
        """``-i``: print the interval's summary when it is over (or at the end)."""
        if self.interval is None or (now_ns < self._next_ns and not final):
            return
        if final and not self.summary.pairs and not self.summary.losses:
            return
        when = self.clock.hms(now_ns)
        if self.as_json:
            record = self.summary.to_json(self.clock.iso(now_ns), self.interval)
            self.out.write(json.dumps(record, sort_keys=True) + "\n")
        else:
            self.out.write("\n".join(self.summary.lines(when)) + "\n\n")
        self.out.flush()
        self.summary.clear()
        step = int(self.interval * 1e9)
        while self._next_ns <= now_ns:
            self._next_ns += step
