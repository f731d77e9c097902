"""Stopping the tracer promptly: the probes' slow release is left to a helper process.

The pure parts run anywhere: the helper holds copies of the fds it is given
until told to let go, then closes them and exits with nothing to reap.  The
live parts (root, the distribution's bcc) check that a session's detach
returns only once none of its programs can run -- they are gone at once, not
after a wait -- and that nothing is counted after it.
"""

from __future__ import annotations

import os
import select
import socket

import pytest
from tracing_helpers import bpf_prog_ids, forced_backend, own_bpf_prog_ids, require_live_tracing

from rawsys.trace.session import Session
from rawsys.trace.system import release

pytestmark = pytest.mark.usefixtures("fd_leak_check")


def _writers_gone(r: int, timeout: float) -> bool:
    """Whether the read end *r* of a pipe sees end of file within *timeout* s."""
    if not select.select([r], [], [], timeout)[0]:
        return False
    return os.read(r, 1) == b""


def test_helper_holds_the_fds_until_released_then_closes_them() -> None:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    try:
        handover = release.hand_over([w, w2])
        assert handover is not None
        os.close(w)
        os.close(w2)
        # The helper's copies keep both pipes open after this process's are gone.
        assert not _writers_gone(r, 0.3)
        handover.release()
        assert _writers_gone(r, 30) and _writers_gone(r2, 30)
        handover.wait_closed()  # returns: the helper has closed everything and exited
        handover.reap()
        assert handover._proc.returncode == 0  # its first process only forks the closer
    finally:
        os.close(r)
        os.close(r2)


def test_helper_lets_go_when_its_starter_goes_without_a_word() -> None:
    r, w = os.pipe()
    try:
        handover = release.hand_over([w])
        assert handover is not None
        os.close(w)
        handover.reap()
        del handover  # the go pipe closes with it, as when the starter dies
        assert _writers_gone(r, 30)
    finally:
        os.close(r)


def test_nothing_to_hand_over_starts_no_helper() -> None:
    assert release.hand_over([]) is None


def test_what_is_not_an_fd_is_refused_before_anything_opens() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(TypeError):
            release.hand_over([r, {b"kprobe__scm_detach_fds": w}])  # type: ignore[list-item]
    finally:
        os.close(r)
        os.close(w)


def test_a_helper_that_fails_to_start_leaks_no_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError starting it means no helper (None); anything else goes up;
    either way the pipes opened for it are closed (the module's leak check)."""
    r, w = os.pipe()

    def refuse(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(release.subprocess, "Popen", refuse)
    try:
        error: BaseException = OSError(24, "Too many open files")
        assert release.hand_over([r]) is None
        error = RuntimeError("interrupted")
        with pytest.raises(RuntimeError):
            release.hand_over([r])
    finally:
        os.close(r)
        os.close(w)


def test_a_program_id_goes_with_its_last_reference() -> None:
    if os.geteuid() != 0:
        pytest.skip("loading a BPF program needs root (CAP_BPF)")
    from rawsys.trace.doctor.bpfcalls import load_trivial_program

    fd, err = load_trivial_program(1)  # BPF_PROG_TYPE_SOCKET_FILTER: r0 = 0; exit
    assert fd >= 0, os.strerror(err)
    try:
        prog_id = release.program_id(fd)
        assert prog_id in bpf_prog_ids()
        assert release.program_exists(prog_id)
        assert not release.wait_programs_gone([prog_id], 0.05)  # this fd holds it
    finally:
        os.close(fd)
    assert release.wait_programs_gone([prog_id], 5.0)
    assert not release.program_exists(prog_id)


def _pass_fd(a: socket.socket, b: socket.socket) -> None:
    r, w = os.pipe()
    socket.send_fds(a, [b"x"], [r])
    _, fds, _, _ = socket.recv_fds(b, 1, 1)
    for fd in (r, w, *fds):
        os.close(fd)


def test_every_attached_probe_fd_is_handed_over_whatever_bcc_keeps_it_in() -> None:
    """bcc keeps a kprobe's fds by event then function, a tracepoint's or a
    kfunc's by name alone: the tables are filled by bcc's own bookkeeping here
    (nothing attached), and every fd comes out once, with one detach per probe."""
    from rawsys.trace.system.bccloader import BccUnavailable, load_bcc

    try:
        bcc = load_bcc()
    except BccUnavailable as e:
        pytest.skip(f"the distribution's bcc is not installed: {e}")
    from rawsys.trace.session import _attached_probes

    b = bcc.BPF.__new__(bcc.BPF)  # the tables alone: no program compiled
    for table in ("kprobe_fds", "tracepoint_fds", "raw_tracepoint_fds",
                  "kfunc_entry_fds", "kfunc_exit_fds"):
        setattr(b, table, {})
    b._add_kprobe_fd(b"p_scm_detach_fds", b"kprobe__scm_detach_fds", 11)
    b._add_kprobe_fd(b"r_scm_detach_fds", b"kretprobe__scm_detach_fds", 12)
    b.tracepoint_fds[b"syscalls:sys_enter_recvmsg"] = 13
    b.kfunc_entry_fds[b"kfunc__vmlinux__unix_destruct_scm"] = 14
    calls, fds = _attached_probes(b)
    assert sorted(fds) == [11, 12, 13, 14]
    assert [key for _, key in calls] == [
        b"p_scm_detach_fds", b"r_scm_detach_fds", b"syscalls:sys_enter_recvmsg",
        b"kfunc__vmlinux__unix_destruct_scm"]
    assert [detach.__name__ for detach, _ in calls] == [
        "detach_kprobe_event", "detach_kprobe_event", "detach_tracepoint", "detach_kfunc"]


def test_detach_returns_once_no_program_runs_and_nothing_counts_after() -> None:
    require_live_tracing()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    held = own_bpf_prog_ids()  # another session's, if open
    try:
        with Session(pids=[os.getpid()], backend=forced_backend()) as s:
            ours = own_bpf_prog_ids() - held
            assert ours and ours <= bpf_prog_ids()
            _pass_fd(a, b)
            s.detach()
            # At once, not after a wait: detach returned when they had gone.
            assert not ours & bpf_prog_ids()
            before = s.totals()
            assert before.produced_routine >= 2  # the send and the receive
            _pass_fd(a, b)
            after = s.totals()
            assert after.produced_routine == before.produced_routine
            assert s.running  # the rings and counters stay readable until close
            s.detach()  # idempotent
        assert own_bpf_prog_ids() == held
    finally:
        a.close()
        b.close()


def test_without_a_helper_detach_still_ends_every_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no helper can start, the probes are released here, side by side."""
    require_live_tracing()
    monkeypatch.setattr(release, "hand_over", lambda fds: None)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    held = own_bpf_prog_ids()
    try:
        with Session(pids=[os.getpid()], backend=forced_backend()) as s:
            s.start_detach()
            s.detach()
            before = s.totals()
            _pass_fd(a, b)
            assert s.totals().produced_routine == before.produced_routine
        assert own_bpf_prog_ids() == held
    finally:
        a.close()
        b.close()


def test_the_kernel_offers_the_grace_period_detach_waits_for() -> None:
    """membarrier(MEMBARRIER_CMD_QUERY) lists MEMBARRIER_CMD_GLOBAL, which
    wait_runs_ended uses (else it falls back to a pause); it then returns."""
    from rawsys.c.syscalls import SYS_membarrier, syscall

    assert syscall(SYS_membarrier, 0, 0, 0) & release.MEMBARRIER_CMD_GLOBAL
    release.wait_runs_ended()
