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
import time
from collections import deque
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator

from rawsys.trace.bpf import program
from rawsys.trace.bpf.prelude import RING_PAGES_DEFAULT, Filters
from rawsys.trace.events import FileIdentity, TraceEvent, Transfer, decode_event, decode_path
from rawsys.trace.matcher import Matcher

__all__ = ["Session", "SessionError"]


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
        self._bpf: Any = None
        self._raw: deque[bytes] = deque()
        self._callback: Callable[[Any, Any, int], int] | None = None
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
        from rawsys.trace.system.bccloader import BccUnavailable, load_bcc

        try:
            bcc = load_bcc()
        except BccUnavailable as e:
            raise SessionError(str(e)) from None
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

        raw = self._raw

        def on_event(_ctx: Any, data: Any, size: int) -> int:
            raw.append(ctypes.string_at(data, size))
            return 0

        self._callback = on_event
        b = self._require()
        try:
            for name, ids in self.filters.map_entries().items():
                table = b[name.encode()]
                for i in ids:
                    table[ctypes.c_uint32(i)] = ctypes.c_uint8(1)
            b[b"events"].open_ring_buffer(on_event)
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _load(self, bcc: Any) -> None:
        text = self.program_text()

        class _Deferred(bcc.BPF):  # type: ignore[misc]
            """bcc's BPF without its attach-on-construction, done below instead."""

            def _trace_autoload(self) -> None:
                pass

        try:
            # If attaching fails, the maps and programs already created must be
            # released: keep the object first, attach after (bcc would raise
            # from its constructor and leak them).
            self._bpf = _Deferred(text=text.encode())
            bcc.BPF._trace_autoload(self._bpf)
            self._attach(bcc)
        except BaseException:
            self.close()
            raise

    def _attach(self, bcc: Any) -> None:
        """Attach what the BPF constructor did not (tracepoints attach themselves)."""
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

    def close(self) -> None:
        """Detach every probe and free the ring buffer and maps; idempotent."""
        b = self._bpf
        if b is not None:
            try:
                self._lost_at_close = self.lost
            finally:
                self._bpf = None
                b.cleanup()
        self._callback = None

    @property
    def running(self) -> bool:
        return self._bpf is not None

    # ------------------------------------------------------------ reading
    def _require(self) -> Any:
        if self._bpf is None:
            raise SessionError("the session is not started (use `with Session(...)` or start())")
        return self._bpf

    def poll(self, timeout: float = 0.1, max_events: int = 4096) -> list[TraceEvent]:
        """Up to *max_events* events, waiting at most *timeout* seconds when none is held.

        One wait on the ring buffer takes every record it holds (cheaply, as
        bytes); decoding is done *max_events* at a time so that a caller can
        write results out steadily during a burst.
        """
        b = self._require()
        if not self._raw:
            b.ring_buffer_poll(max(0, int(timeout * 1000)))
            # The probes wake the reader only for a batch: take what is there.
            b.ring_buffer_consume()
        return self._drain(max_events)

    def drain(self) -> list[TraceEvent]:
        """Every event the ring buffer and the session hold now, without waiting."""
        b = self._require()
        b.ring_buffer_consume()
        return self._drain(None)

    def _drain(self, limit: int | None) -> list[TraceEvent]:
        out: list[TraceEvent] = []
        backend = self.backend or "?"
        raw = self._raw
        n = len(raw) if limit is None else min(limit, len(raw))
        for _ in range(n):
            out.append(decode_event(raw.popleft(), backend))
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
                    yield from self._drain(None)
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
                got.extend(self._drain(None))
                return got

    def transfers(self, events: Iterable[TraceEvent]) -> list[Transfer]:
        """Feed *events* to the session's matcher; the transfers they complete."""
        out: list[Transfer] = []
        for ev in events:
            out.extend(self.matcher.feed(ev))
        return out

    def flush(self) -> list[Transfer]:
        """Unmatched halves still pending, as transfers."""
        return self.matcher.flush()

    @property
    def decoded(self) -> int:
        return self._decoded

    @property
    def lost(self) -> int:
        """Events dropped in the kernel: ring buffer full, or a call not tracked (map full)."""
        if self._bpf is None:
            return self._lost_at_close
        total = 0
        for per_cpu in self._bpf[b"lost"].values():
            total += sum(int(v) for v in per_cpu)
        self._lost_at_close = total
        return total

    _lost_at_close = 0

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
