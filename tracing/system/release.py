"""Release attached probes in a process of their own, so that stopping is prompt.

Closing the perf event of a tracepoint probe (or a kprobe) is slow: the
kernel first takes the BPF program off the tracepoint and waits for one RCU
grace period (``perf_event_detach_bpf_prog``), which closes done side by side
share, then unregisters the tracepoint and waits for two more grace periods
under one global mutex (``perf_trace_destroy``, ``event_mutex``), one
tracepoint after another: 40-90 ms each here, most of a second for the
tracer's sixteen.  A process cannot exit before its fds are released, so
that second would be added to every stop.

:func:`hand_over` gives those fds to a short-lived helper process (this file,
run as a script) and returns at once; the caller then closes its own copies,
which only drops references, and lets the helper go.  The helper closes
every fd in a thread of its own and exits.  What the caller needs to know --
that none of its programs runs any more -- it learns from the programs' ids:
the kernel frees a program's id when its last reference goes, and the perf
event drops its reference only after the grace period that ends every run in
flight (:func:`wait_programs_gone`).  That order is this machine's kernel
(6.18: ``synchronize_rcu_tasks_trace`` in ``perf_event_detach_bpf_prog``,
seen in the closing threads' kernel stacks); older kernels such as 6.1 drop
the reference right after taking the program off the tracepoint, so a run
already under way may still count an event for a few microseconds after its
id has gone: :func:`wait_runs_ended` waits one more RCU grace period, which
ends every such run (8-20 ms here).
"""

from __future__ import annotations

import ctypes
import operator
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

__all__ = [
    "Handover",
    "hand_over",
    "program_exists",
    "program_id",
    "wait_programs_gone",
    "wait_runs_ended",
]

# <linux/bpf.h> enum bpf_cmd
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
MEMBARRIER_CMD_GLOBAL = 1  # <linux/membarrier.h>: synchronize_rcu() on SMP


class Handover:
    """A helper process holding copies of fds, waiting for :meth:`release` to close them."""

    def __init__(self, proc: subprocess.Popen[bytes], go_fd: int, done_fd: int) -> None:
        self._proc = proc
        self._go_fd = go_fd  # closed: the helper may close its copies
        self._done_fd = done_fd  # end of file: the helper has closed them all

    def release(self) -> None:
        """Let the helper close its copies (call once this process has closed its own)."""
        if self._go_fd >= 0:
            os.close(self._go_fd)
            self._go_fd = -1

    def reap(self) -> None:
        """Collect the helper's first process, which exits as soon as it has forked the closer."""
        self._proc.wait()

    def wait_closed(self) -> None:
        """Let the helper go and wait until it has closed every fd (the kernel released them)."""
        self.release()
        while self._done_fd >= 0:
            try:
                if not os.read(self._done_fd, 1):
                    os.close(self._done_fd)
                    self._done_fd = -1
            except InterruptedError:
                continue
        self.reap()

    def __del__(self) -> None:
        for fd in (self._go_fd, self._done_fd):
            if fd >= 0:
                os.close(fd)


def hand_over(fds: Iterable[int]) -> Handover | None:
    """Start a helper holding copies of *fds*; None if it could not start.

    The helper closes its copies after :meth:`Handover.release` (or when this
    process dies), in a process of its own session whose parent exits at
    once: nothing is left to reap, and the terminal's Ctrl-C does not reach it.
    """
    fds = [operator.index(fd) for fd in fds]  # a TypeError here, before any pipe
    if not fds or not sys.executable:
        return None
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(go_r), str(done_w), *map(str, fds)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(go_r, done_w, *fds), start_new_session=True,
        )
    except BaseException as e:
        os.close(go_w)
        os.close(done_r)
        if isinstance(e, OSError):
            return None
        raise
    finally:
        os.close(go_r)
        os.close(done_w)
    return Handover(proc, go_w, done_r)


class _ObjInfoAttr(ctypes.Structure):  # union bpf_attr, BPF_OBJ_GET_INFO_BY_FD
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class _ProgInfoHead(ctypes.Structure):  # the first fields of struct bpf_prog_info
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]


class _GetFdByIdAttr(ctypes.Structure):  # union bpf_attr, BPF_*_GET_FD_BY_ID
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    # Imported here: the helper runs this file as a script, without rawsys.
    from rawsys.trace.doctor.bpfcalls import bpf_command

    return bpf_command(cmd, attr)


def program_id(prog_fd: int) -> int:
    """The kernel's id of the BPF program behind *prog_fd* (what bpftool shows)."""
    info = _ProgInfoHead()
    attr = _ObjInfoAttr(prog_fd, ctypes.sizeof(info), ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return int(info.id)


def program_exists(prog_id: int) -> bool:
    """Whether program *prog_id* is still loaded (someone still holds a reference)."""
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, _GetFdByIdAttr(prog_id, 0, 0))
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


def wait_programs_gone(prog_ids: Iterable[int], timeout: float, step: float = 0.002) -> bool:
    """Wait until none of *prog_ids* is loaded; False if some still are after *timeout* s."""
    left = set(prog_ids)
    deadline = time.monotonic() + timeout
    while True:
        left = {i for i in left if program_exists(i)}
        if not left:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def wait_runs_ended() -> None:
    """Return once every run of a tracing program that began before this call has ended.

    Such runs (non-sleepable BPF programs on tracepoints and kprobes) hold
    the RCU read lock; ``membarrier(MEMBARRIER_CMD_GLOBAL)`` waits for an RCU
    grace period.  A kernel with nohz_full CPUs refuses that command: a
    100 ms pause stands in for it there (a run lasts microseconds).
    """
    from rawsys.c.syscalls import SYS_membarrier, syscall

    if SYS_membarrier < 0 or syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0:
        time.sleep(0.1)


def _wait_for_end_of_file(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 1):
                return
        except InterruptedError:
            continue


def _helper(argv: list[str]) -> None:
    """The helper's work: hold the fds until told, then close each in its own thread.

    Whoever drops the last reference to a probe does the kernel's slow part,
    one probe after another if it is a process's exit: so the closer waits
    until both its starter and its own parent have dropped their copies.
    """
    go_fd, done_fd, *fds = (int(a) for a in argv)
    parent_gone, parent_alive = os.pipe()
    if os.fork():
        for fd in fds:
            os.close(fd)  # cheap: the closer holds them too
        os._exit(0)  # the starter reaps this one at once; the closer is adopted
    os.close(parent_alive)
    _wait_for_end_of_file(parent_gone)
    _wait_for_end_of_file(go_fd)  # the starter has closed its end: its copies are gone
    threads = [threading.Thread(target=os.close, args=(fd,)) for fd in fds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(done_fd)  # the starter may be waiting for this
    os._exit(0)


if __name__ == "__main__":
    _helper(sys.argv[1:])
