"""A tracing session: load the probes, read decoded events, detach cleanly.

::

    from rawsys.trace.session import Session

    with Session(pids=[os.getpid()]) as s:
        ...                                  # pass some fds
        for ev in s.events(timeout=1.0):     # SendEvent / RecvEvent
            print(ev)
        print(s.lost)

The backend is chosen by doctor (:mod:`rawsys.trace.doctor.choice`) from
what the running kernel allows, unless ``backend=`` forces one.  Filters
(``pids``, ``tids``, ``comm``, ``uids``) are applied in the kernel.  Everything the session
attached (programs, the ring buffer, maps) is released by :meth:`close`,
which ``with`` calls.  A session is not thread-safe; use it from one thread.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator

from rawsys.trace.bpf import program
from rawsys.trace.bpf.prelude import (
    ANOMALY_RING_PAGES,
    LOST_ANOMALY,
    LOST_ROUTINE,
    LOST_SLOTS,
    LOST_UNTRACKED,
    RING_PAGES_DEFAULT,
    Filters,
)
from rawsys.trace.events import (
    ONE_FD_SIZE,
    EventKind,
    FileIdentity,
    TraceEvent,
    decode_events,
    decode_path,
)
from rawsys.trace.matcher import Matcher, Verdict
from rawsys.trace.reader import RingReader, wait_readable
from rawsys.trace.system import release

__all__ = ["Session", "SessionError", "Totals"]

# Waiting for the programs to go after a detach: they go within a grace period
# or two; longer means someone else holds one, and the probes' release is awaited.
PROGRAMS_GONE_TIMEOUT = 2.0
MAX_BATCH = 4096  # records read, decoded and written per poll: the reader's memory budget
MAX_HELD = 65536  # anomalies held back for the routine records before them, at most


class HeldAnomalies:
    """Anomalies read ahead of the routine records that happened before them.

    The anomaly ring is read whole at every poll, the routine ring a batch at
    a time: when the reader lags, a receive cut short arrives seconds before
    the send of its message and the routine records around it.  Linked then,
    it would be linked against sends older than itself (the matcher takes the
    oldest message pending on its socket), and every later pairing of that
    socket would be off by one.  So an anomaly is held until the routine
    records up to its time have been read (the routine ring drained, or a
    batch of them reaching its timestamp), then handed out with them, and the
    batch, sorted by time, links it where it happened.  Records are never
    lost here: at most :data:`MAX_HELD` are held (past it the oldest go out
    early) and :meth:`take` with ``drained=True`` hands out every one.
    """

    def __init__(self, cap: int = MAX_HELD) -> None:
        self.cap = cap
        self._held: list[bytes] = []

    def __len__(self) -> int:
        return len(self._held)

    def take(self, anomalies: list[bytes], routine: list[bytes], drained: bool) -> list[bytes]:
        """The anomalies due with *routine* (read after *anomalies*), oldest first.

        *drained*: every routine record produced so far has been read (the
        ring held fewer than a batch), so every held anomaly is due.
        """
        held = self._held + anomalies if self._held else anomalies
        if drained or not held:
            self._held = []
            return held
        if not routine:
            self._held = held
            return []
        mark = max(int.from_bytes(r[:8], "little") for r in routine[-64:])
        due = [r for r in held if int.from_bytes(r[:8], "little") <= mark]
        if len(due) == len(held):
            self._held = []
            return held
        later = [r for r in held if int.from_bytes(r[:8], "little") > mark]
        if len(later) > self.cap:
            due += later[:len(later) - self.cap]
            later = later[len(later) - self.cap:]
        self._held = later
        return due


@dataclass(frozen=True)
class Totals:
    """What the probes produced and what became of it (exact once the probes are detached).

    *Routine* events are ordinary transfers; *anomalies* are the events that
    explain a missing fd (CTRUNC receives, failed sends, fds not recorded),
    which travel in their own ring.  ``produced_*`` come from per-CPU counters
    kept in the kernel before any ring is asked for room, so they are exact
    even when events are dropped.
    """

    produced_routine: int
    produced_anomalies: int
    read_routine: int
    read_anomalies: int  # handed out by poll_raw/drain (not those still held back)
    lost_routine: int  # refused by the full routine ring: the reader fell behind
    lost_anomalies: int  # refused by the anomaly ring
    unread_routine: int  # left in the ring when the session stopped at once
    unread_anomalies: int  # read but still held back when the session closed
    untracked: int  # calls not followed: a per-thread map was full
    # (pid, "send" or "recv") -> (events, fds) of the routine events the full
    # ring refused; with the events read, the exact count per process
    dropped_per_process: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)

    @property
    def routine_dropped(self) -> int:
        return self.lost_routine + self.unread_routine

    @property
    def anomalies_dropped(self) -> int:
        return self.lost_anomalies + self.unread_anomalies


def _attached_probes(
    b: Any,
) -> tuple[list[tuple[Callable[[bytes], None], bytes]], list[int]]:
    """Each probe *b* (a ``bcc.BPF``) has attached: its detach call, and every perf fd.

    bcc keeps one fd per tracepoint or kfunc, but a kprobe event's fds by the
    function attached (``{event: {function: fd}}``); its detach takes them all.
    """
    calls: list[tuple[Callable[[bytes], None], bytes]] = []
    fds: list[int] = []
    for table, detach in (
        (b.kprobe_fds, b.detach_kprobe_event),
        (b.tracepoint_fds, b.detach_tracepoint),
        (b.raw_tracepoint_fds, b.detach_raw_tracepoint),
        (b.kfunc_entry_fds, b.detach_kfunc),
        (b.kfunc_exit_fds, b.detach_kretfunc),
    ):
        for key, held in list(table.items()):
            calls.append((detach, key))
            fds.extend(held.values() if isinstance(held, dict) else (held,))
    return calls, fds


def _run_side_by_side(calls: list[tuple[Callable[[bytes], None], bytes]]) -> None:
    """Run bcc's detach calls in threads of their own: their grace periods overlap in part."""
    errors: list[BaseException] = []

    def run(fn: Callable[[bytes], None], key: bytes) -> None:
        try:
            fn(key)
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SessionError(f"could not detach every probe: {errors[0]}") from errors[0]


def _timestamp(ev: TraceEvent) -> int:
    return ev.timestamp_ns


class SessionError(RuntimeError):
    """The probes could not be loaded or attached; the message says why."""


def _why(e: BaseException) -> str:
    """bcc's message, with the errno it hides (it says "need super-user" for any EPERM)."""
    err = ctypes.get_errno()
    text = str(e)
    if err == errno.EPERM and "super-user" in text:
        text = "the kernel refused the program (EPERM)"
    return text + "; `rawsys-trace doctor` tells what this kernel allows"


class Session:
    """Attach the fd-transfer probes of one backend; iterate over decoded events."""

    def __init__(
        self,
        pids: Iterable[int] = (),
        tids: Iterable[int] = (),
        comm: str | None = None,
        backend: str | None = None,
        *,
        uids: Iterable[int] = (),
        ring_pages: int = RING_PAGES_DEFAULT,
        grace: float = 2.0,
    ) -> None:
        self.filters = Filters.of(pids, tids, comm, uids)
        if backend is not None and backend not in program.BACKENDS:
            choices = ", ".join(program.BACKENDS)
            raise ValueError(f"unknown backend {backend!r}; choose from {choices}")
        if ring_pages <= 0 or ring_pages & (ring_pages - 1):
            raise ValueError(f"ring_pages must be a power of two, got {ring_pages}")
        self.requested_backend = backend
        self.backend: str | None = None
        self.backend_reason = ""
        self.ring_pages = ring_pages
        self.matcher = Matcher(int(grace * 1e9))
        self.start_seconds = 0.0  # from start() to every probe attached
        # Where start() spent that time, in order: "import" (bcc), "facts"
        # (kernel facts and the program's text), "compile", "load" (the
        # verifier), "attach"; benchmarks/trace_startup.py prints them.
        self.start_phases: dict[str, float] = {}
        self._bpf: Any = None
        # [anomalies, routine]: the anomaly ring is always read first.
        self._rings: list[RingReader] = []
        self._read = [0, 0]
        self._unread = [0, 0]
        self._held = HeldAnomalies()  # anomaly records read, not handed out yet
        self._detached = False  # detaching has begun
        # The helper releasing the probes and the programs to see gone (detach()).
        self._detach_pending: tuple[release.Handover, list[int]] | None = None
        self._totals: Totals | None = None
        self._decoded = 0

    # ------------------------------------------------------------ set-up
    def choose_backend(self, *, use_cache: bool = True) -> str:
        """Resolve the backend (once): the forced one, else doctor's choice.

        Doctor's probes take about half a second; their verdict cannot change
        until the next boot, so it is kept per boot (``cached_choice``).
        """
        if self.backend is None:
            if self.requested_backend is not None:
                self.backend, self.backend_reason = self.requested_backend, "forced"
            else:
                from rawsys.trace.doctor.choice import cached_choice

                self.backend, self.backend_reason = cached_choice(use_cache=use_cache)
        return self.backend

    def program_text(self) -> str:
        """The BPF C this session loads (``--ebpf`` prints it)."""
        from rawsys.trace.kernel.facts import kernel_facts

        return program.render_program(
            self.choose_backend(), kernel_facts(), self.filters, ring_pages=self.ring_pages
        )

    def start(self) -> Session:
        """Compile, load and attach every probe; returns self."""
        if self._bpf is not None:
            return self
        t0 = time.monotonic()
        self.start_phases = {}
        from rawsys.trace.system.bccloader import BccUnavailable, load_bcc

        try:
            bcc = load_bcc()
        except BccUnavailable as e:
            raise SessionError(str(e)) from None
        self._phase("import", t0)
        try:
            self._load(bcc)
        except Exception as e:
            if self.requested_backend is None and "(cached)" in self.backend_reason:
                # The verdict kept for this boot no longer holds: ask doctor again.
                self.backend = None
                self.choose_backend(use_cache=False)
                try:
                    self._load(bcc)
                except Exception as e2:
                    raise SessionError(
                        f"{self.backend} backend: could not load or attach: {_why(e2)}"
                    ) from e2
            else:
                raise SessionError(
                    f"{self.backend} backend: could not load or attach: {_why(e)}"
                ) from e

        b = self._require()
        try:
            for name, ids in self.filters.map_entries().items():
                table = b[name.encode()]
                for i in ids:
                    table[ctypes.c_uint32(i)] = ctypes.c_uint8(1)
            t = time.monotonic()
            page = mmap.PAGESIZE
            self._rings = [
                RingReader(b[b"anomalies"].map_fd, ANOMALY_RING_PAGES * page),
                RingReader(b[b"events"].map_fd, self.ring_pages * page),
            ]
            self._phase("attach", t)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _phase(self, name: str, since: float) -> float:
        """Add the time since *since* to phase *name*; returns now."""
        now = time.monotonic()
        self.start_phases[name] = self.start_phases.get(name, 0.0) + now - since
        return now

    def _load(self, bcc: Any) -> None:
        t = time.monotonic()
        text = self.program_text()
        t = self._phase("facts", t)

        try:
            # If attaching fails, the maps and programs already created must be
            # released: keep the object first, attach after (bcc would raise
            # from its constructor and leak them).
            self._bpf = program.compile_program(bcc, text)
            t = self._phase("compile", t)
            program.load_programs(self._bpf, bcc)
            t = self._phase("load", t)
            bcc.BPF._trace_autoload(self._bpf)  # attaches what load_programs loaded
            self._attach(bcc)
            self._phase("attach", t)
        except BaseException:
            self.close()
            raise

    def _attach(self, bcc: Any) -> None:
        """Attach what bcc's autoload did not: tracepoints that share another's
        program, and the kprobe backend's kernel functions."""
        program.attach_shared_tracepoints(self._bpf)
        if self.backend == "kprobe":
            from rawsys.trace.kernel.facts import kernel_facts

            for kind, target, fn in program.kprobe_attachments(kernel_facts()):
                if kind == "kprobe":
                    self._bpf.attach_kprobe(event=target.encode(), fn_name=fn.encode())
                else:
                    self._bpf.attach_kretprobe(event=target.encode(), fn_name=fn.encode())

    def add_pid(self, pid: int) -> None:
        """Trace one more process (e.g. a forked child); only with a PID filter in force."""
        Filters.of(pids=[pid])  # validates
        if not self.filters.pids:
            return  # every process is traced already
        self._require()[b"pid_filter"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def detach(self) -> None:
        """Detach every probe, keeping the rings and counters readable; idempotent.

        Nothing is produced after this, so :meth:`totals` is final: the first
        step of stopping at once.  The kernel's slow part of releasing the
        probes is left to a helper process (:mod:`rawsys.trace.system.release`);
        this returns as soon as none of the session's programs can run.
        """
        self.start_detach()
        pending, self._detach_pending = self._detach_pending, None
        if pending is not None:
            handover, ids = pending
            if release.wait_programs_gone(ids, PROGRAMS_GONE_TIMEOUT):
                release.wait_runs_ended()  # a run begun before the id went (Linux 6.1)
            else:
                handover.wait_closed()  # someone else holds a program: wait for the probes
            handover.reap()

    def start_detach(self) -> None:
        """Begin :meth:`detach` and return at once: the probes stop within a grace period.

        Until :meth:`detach` returns, events may still arrive; read them
        meanwhile (the rings stay readable).  Idempotent.
        """
        b = self._bpf
        if b is None or self._detached:
            return
        self._detached = True
        calls, fds = _attached_probes(b)
        handover = release.hand_over(fds)
        if handover is None:
            _run_side_by_side(calls)
            return
        try:
            # The helper holds copies now: each detach only drops this process's.
            for detach, key in calls:
                detach(key)
        finally:
            handover.release()
        # The programs' last references: once the helper's closes have dropped
        # the probes', each program's id goes, and no run of it is in flight.
        ids = []
        for name, fn in list(b.funcs.items()):
            try:
                ids.append(release.program_id(fn.fd))
            except OSError:
                pass
            os.close(fn.fd)  # as bcc's own close() does
            del b.funcs[name]
        self._detach_pending = (handover, ids)

    def close(self) -> None:
        """Detach every probe and free the ring buffers and maps; idempotent."""
        b = self._bpf
        if b is not None:
            try:
                self.detach()  # faster than bcc's cleanup(), one probe after another
                # Anomalies still held back were read but never handed out.
                self._unread[0] += len(self._held)
                self._held = HeldAnomalies()
                self._totals = self.totals()
                self._lost_at_close = self.lost
            finally:
                self._bpf = None
                for r in self._rings:
                    r.close()
                self._rings = []
                b.cleanup()

    @property
    def running(self) -> bool:
        return self._bpf is not None

    # ------------------------------------------------------------ reading
    def _require(self) -> Any:
        if self._bpf is None:
            raise SessionError("the session is not started (use `with Session(...)` or start())")
        return self._bpf

    def poll_raw(
        self, timeout: float = 0.1, max_records: int = MAX_BATCH, wake_fds: tuple[int, ...] = ()
    ) -> list[bytes]:
        """Records as the probes wrote them: the anomalies due, then up to *max_records* routine.

        An anomaly is due once the routine records up to its time have been
        read (:class:`HeldAnomalies`); ``max_records=0`` hands out every one.
        Waits at most *timeout* seconds when both rings are empty, or until one
        of *wake_fds* is readable (a signal's wake-up pipe).  No routine record
        is held in Python between calls: a reader slower than the probes leaves
        the backlog in the kernel's ring, whose refusals the probes count.
        """
        self._require()
        out = self._read_rings(max_records)
        if not out and timeout > 0 and wait_readable(self._rings, timeout, wake_fds):
            out = self._read_rings(max_records)
        return out

    def _read_rings(self, max_records: int) -> list[bytes]:
        """The anomalies due (:class:`HeldAnomalies`), then up to *max_records* routine records."""
        anomalies, routine = self._rings
        # The anomaly ring first: when the routine one is then drained, every
        # routine record before the anomalies read has been read too.
        fresh = anomalies.read()
        got = routine.read(max_records, ONE_FD_SIZE) if max_records > 0 else []
        self._read[1] += len(got)
        out = self._held.take(fresh, got, len(got) < max_records or max_records <= 0)
        self._read[0] += len(out)
        if got:
            out.extend(got)
        return out

    def poll(self, timeout: float = 0.1, max_events: int = MAX_BATCH) -> list[TraceEvent]:
        """Up to *max_events* routine events and every anomaly, decoded; waits at most *timeout*."""
        return self.decode(self.poll_raw(timeout, max_events))

    def drain(self) -> list[TraceEvent]:
        """Every event the rings hold now, without waiting (anomalies first)."""
        self._require()
        out = self._held.take([], [], drained=True)
        self._read[0] += len(out)
        for i, ring in enumerate(self._rings):
            got = ring.read()
            self._read[i] += len(got)
            out.extend(got)
        return self.decode(out)

    def discard_routine(self) -> int:
        """Drop the routine events still in the ring unread (stopping at once); how many.

        They are counted in :attr:`Totals.unread_routine`.  The anomaly ring is
        left alone: read it with :meth:`poll_raw` or :meth:`drain`.
        """
        self._require()
        n = self._rings[1].skip(ONE_FD_SIZE)
        self._unread[1] += n
        return n

    def decode(self, records: list[bytes]) -> list[TraceEvent]:
        """Records from :meth:`poll_raw`, decoded for this session's backend."""
        backend = self.backend or "?"
        out = decode_events(records, backend)
        self._decoded += len(out)
        return out

    def events(self, timeout: float | None = None) -> Iterator[TraceEvent]:
        """Yield events as they come, for *timeout* seconds in total (None: until closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._bpf is not None:
            wait = 0.1
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    yield from self.drain()
                    return
            yield from self.poll(wait)

    def __iter__(self) -> Iterator[TraceEvent]:
        return self.events(None)

    def collect(
        self,
        until: Callable[[list[TraceEvent]], bool] | None = None,
        timeout: float = 5.0,
    ) -> list[TraceEvent]:
        """Gather events until ``until(events)`` is true or *timeout* seconds pass."""
        got: list[TraceEvent] = []
        deadline = time.monotonic() + timeout
        while True:
            got.extend(self.poll(0.05))
            if until is not None and until(got):
                return got
            if time.monotonic() >= deadline:
                got.extend(self.drain())
                return got

    def transfers(self, events: Iterable[TraceEvent]) -> list[Verdict]:
        """Feed *events* to the session's matcher; the transfers and losses they complete."""
        out: list[Verdict] = []
        # In the order they happened: a batch holds the anomaly ring's events
        # (receives cut short, losses) before the routine ring's (their sends).
        for ev in sorted(events, key=_timestamp):
            out.extend(self.matcher.feed(ev))
        return out

    def flush(self) -> list[Verdict]:
        """What is still pending: sends in flight, receives whose send was not seen."""
        return self.matcher.flush()

    @property
    def evicted(self) -> int:
        """Pending sends the matcher dropped to stay within its cap (shown as in flight)."""
        return self.matcher.evicted

    @property
    def decoded(self) -> int:
        return self._decoded

    @property
    def lost(self) -> int:
        """Events dropped in the kernel: a ring buffer full, or a call not tracked (map full)."""
        if self._bpf is None:
            return self._lost_at_close
        total = sum(self._lost_slots())
        self._lost_at_close = total
        return total

    _lost_at_close = 0

    def _lost_slots(self) -> list[int]:
        slots = [0] * LOST_SLOTS
        for i, per_cpu in enumerate(self._require()[b"lost"].values()):
            if i < LOST_SLOTS:
                slots[i] = sum(int(v) for v in per_cpu)
        return slots

    def totals(self) -> Totals:
        """What the probes produced, what was read, what was dropped and why.

        Exact once :meth:`detach` (or :meth:`close`) has run; while the probes
        run, a snapshot.  After :meth:`close`, the figures at close.
        """
        if self._bpf is None:
            if self._totals is None:
                raise SessionError("the session was never started")
            return self._totals
        produced = [0, 0]  # routine, anomalies
        for slot, per_cpu in enumerate(self._bpf[b"produced"].values()):
            produced[slot & 1] += sum(int(v) for v in per_cpu)
        per_process: dict[tuple[int, str], tuple[int, int]] = {}
        for key, per_cpu in self._bpf[b"dropped_by_process"].items():
            side = "send" if key.kind == EventKind.SEND else "recv"
            per_process[(int(key.pid), side)] = (sum(int(c.events) for c in per_cpu),
                                                 sum(int(c.fds) for c in per_cpu))
        lost = self._lost_slots()
        return Totals(
            produced_routine=produced[0],
            produced_anomalies=produced[1],
            read_routine=self._read[1],
            read_anomalies=self._read[0],
            lost_routine=lost[LOST_ROUTINE],
            lost_anomalies=lost[LOST_ANOMALY],
            unread_routine=self._unread[1],
            unread_anomalies=self._unread[0],
            untracked=lost[LOST_UNTRACKED],
            dropped_per_process=per_process,
        )

    def file_path(self, f: FileIdentity) -> str:
        """The full path the probes resolved for named file *f*; "" if none is kept.

        The probes keep it (``file_paths``, files.bpf.h) under the file's
        address and inode before they submit an event naming the file; ask
        while the session runs, soon after the event is read (the map keeps
        the most recent few thousand).
        """
        if self._bpf is None or not f.address:
            return ""
        table = self._bpf[b"file_paths"]
        try:
            value = table[table.Key(f.address, f.inode)]
        except KeyError:
            return ""
        buf = ctypes.string_at(ctypes.addressof(value) + type(value).buf.offset,
                               min(int(value.len), type(value).buf.size))
        return decode_path(buf, int(value.flags))
