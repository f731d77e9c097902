"""Live tracing with the Session API: transfers made by Python, rawsys and C.

Every event is checked field by field against what the test itself did:
pids and tids, the socket, the fd numbers on each side, and the kernel
``struct file`` identity (same address and inode on both ends; the inode is
also compared with ``fstat``).  Runs as root with the distribution's bcc; in
CI nothing here is skipped.

The sessions use doctor's backend unless ``RAWSYS_TEST_BACKEND`` names one;
the tests marked ``kernel_matrix`` are the focused set that ``./dev kernels``
runs for every backend on every kernel it boots.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import subprocess
import threading
from ctypes import POINTER, c_int, c_ubyte, cast, sizeof
from pathlib import Path
from typing import Callable, Iterator

import pytest
from tracing_helpers import (
    SCM_TRACEPOINT_ATTACHMENTS,
    TRACEPOINT_ATTACHMENTS,
    TRACEPOINT_PROGRAMS,
    bpf_prog_ids,
    bpf_prog_names,
    build_fdpass,
    forced_backend,
    kprobe_attachments,
    own_bpf_prog_ids,
    parse_roles,
    require_live_tracing,
    scm_receive_function,
    tracepoint_attachments,
    wait_gone,
)

from rawsys.c.cmsg import CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE
from rawsys.c.constants import MSG_CMSG_CLOEXEC, MSG_CTRUNC, MSG_PEEK, SCM_RIGHTS, SOL_SOCKET
from rawsys.c.libc import recvmmsg, recvmsg, sendmmsg, sendmsg
from rawsys.c.structs import iovec, mmsghdr, msghdr
from rawsys.trace.events import LostEvent, RecvEvent, SendEvent, TraceEvent, Transfer
from rawsys.trace.session import Session

pytestmark = pytest.mark.usefixtures("fd_leak_check")


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    """One session for the module, filtered on this process (children added per test)."""
    require_live_tracing()
    with Session(pids=[os.getpid()], backend=forced_backend()) as s:
        yield s


@pytest.fixture
def s(session: Session) -> Session:
    session.poll(0)  # forget what earlier tests left
    session.matcher.flush()
    return session


def wait_for(s: Session, sends: int, recvs: int, timeout: float = 5.0) -> list[TraceEvent]:
    def enough(evs: list[TraceEvent]) -> bool:
        return (
            sum(isinstance(e, SendEvent) for e in evs) >= sends
            and sum(isinstance(e, RecvEvent) for e in evs) >= recvs
        )

    evs = s.collect(enough, timeout)
    assert enough(evs), f"expected {sends} sends and {recvs} receives, got {evs}"
    return evs


def only(evs: list[TraceEvent], kind: type) -> list[TraceEvent]:
    return [e for e in evs if isinstance(e, kind)]


# --------------------------------------------------------------- C-layer helpers
def c_send(sock: int, fds: list[int], flags: int = 0) -> int:
    """sendmsg(2) through rawsys.c, one byte and one SCM_RIGHTS message, as C writes it."""
    payload = bytearray(b"x")
    iov = iovec()
    iov.set_buffer(payload)
    control = (c_ubyte * CMSG_SPACE(sizeof(c_int) * len(fds)))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int) * len(fds))
    data = cast(CMSG_DATA(cmsg), POINTER(c_int))
    for i, fd in enumerate(fds):
        data[i] = fd
    return sendmsg(sock, msg, flags)


def _fds_of(msg: msghdr) -> list[int]:
    out: list[int] = []
    cmsg = CMSG_FIRSTHDR(msg)
    while cmsg is not None:
        c = cmsg.contents
        if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_RIGHTS:
            n = (c.cmsg_len - CMSG_LEN(0)) // sizeof(c_int)
            data = cast(CMSG_DATA(cmsg), POINTER(c_int))
            out.extend(data[i] for i in range(n))
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return out


def c_recv(sock: int, room: int, flags: int = 0) -> tuple[int, int, list[int]]:
    """recvmsg(2) through rawsys.c with room for *room* fds: (ret, msg_flags, fds)."""
    buf = bytearray(16)
    iov = iovec()
    iov.set_buffer(buf)
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control((c_ubyte * CMSG_SPACE(sizeof(c_int) * room))() if room else None)
    ret = recvmsg(sock, msg, flags)
    return ret, msg.msg_flags, _fds_of(msg) if ret >= 0 else []


# ------------------------------------------------------------------ the tests
@pytest.mark.kernel_matrix
def test_python_send_fds_one_line_per_fd(
    s: Session, dgram: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = dgram
    r, w = pipe
    socket.send_fds(a, [b"x"], [r, w])
    _, got, _, _ = socket.recv_fds(b, 16, 4)
    try:
        evs = wait_for(s, 1, 1)
        (send,) = only(evs, SendEvent)
        (recv,) = only(evs, RecvEvent)
        me, tid = os.getpid(), threading.get_native_id()
        for ev in (send, recv):
            assert (ev.pid, ev.tid, ev.ok, ev.errno, ev.backend) == (me, tid, True, 0, s.backend)
            assert ev.comm and ev.ret == 1 and ev.syscall in ("sendmsg", "recvmsg")
        assert send.sock == a.fileno() and recv.sock == b.fileno()
        assert send.fds == (r, w) and recv.fds == tuple(got)
        ino = os.fstat(r).st_ino
        assert [f.inode for f in send.files] == [ino, ino]
        assert [f.kind for f in send.files] == ["pipe", "pipe"]
        assert send.files[0].address != send.files[1].address  # read end, write end
        assert [f.address for f in recv.files] == [f.address for f in send.files]
        # In the receiver: its own fd plus the sender's still-open one.
        assert all(f.refcount >= 2 for f in recv.files)
        transfers = s.transfers(evs)
        assert [(t.send_fd, t.recv_fd, t.matched) for t in transfers] == [
            (r, got[0], True),
            (w, got[1], True),
        ]
    finally:
        for fd in got:
            os.close(fd)


@pytest.mark.kernel_matrix
def test_regular_file_name_inode_and_inflight_refcount(
    s: Session, dgram: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    a, b = dgram
    path = tmp_path / "payload.txt"
    path.write_text("hello")
    fd = os.open(path, os.O_RDONLY)
    try:
        socket.send_fds(a, [b"x"], [fd])
        send = only(wait_for(s, 1, 0), SendEvent)[0]
        (f,) = send.files
        assert (f.name, f.kind, f.inode) == ("payload.txt", "file", os.fstat(fd).st_ino)
        assert f.label == "payload.txt"
        # The sender's table holds one reference, the queued skb another (in flight).
        assert f.refcount == 2
    finally:
        os.close(fd)
    _, got, _, _ = socket.recv_fds(b, 16, 1)
    try:
        (recv,) = only(wait_for(s, 0, 1), RecvEvent)
        assert recv.files[0].address == f.address
        assert recv.files[0].refcount == 1  # only the receiver's table now
        assert os.read(got[0], 16) == b"hello"
    finally:
        os.close(got[0])


@pytest.mark.kernel_matrix
def test_several_cmsghdrs_all_walked(
    s: Session, dgram: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    """Two SCM_RIGHTS headers in one control buffer: the fds of both are reported."""
    a, b = dgram
    r, w = pipe
    a.sendmsg(
        [b"x"],
        [
            (SOL_SOCKET, SCM_RIGHTS, array.array("i", [r])),
            (SOL_SOCKET, SCM_RIGHTS, array.array("i", [w])),
        ],
    )
    _, got, _, _ = socket.recv_fds(b, 16, 4)
    try:
        evs = wait_for(s, 1, 1)
        (send,) = only(evs, SendEvent)
        assert send.fds == (r, w) and send.fds_seen == 2
        (recv,) = only(evs, RecvEvent)
        assert recv.fds == tuple(got) and len(got) == 2
        assert {f.address for f in recv.files} == {f.address for f in send.files}
    finally:
        for fd in got:
            os.close(fd)


@pytest.mark.kernel_matrix
def test_rawsys_cmsg_cloexec(
    s: Session, dgram: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = dgram
    r, _ = pipe
    assert c_send(a.fileno(), [r]) == 1
    ret, _flags, got = c_recv(b.fileno(), 1, MSG_CMSG_CLOEXEC)
    try:
        assert ret == 1 and len(got) == 1
        assert fcntl.fcntl(got[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        (recv,) = only(wait_for(s, 1, 1), RecvEvent)
        assert recv.fds == (got[0],) and recv.cloexec == (True,)
        assert "CMSG_CLOEXEC" in recv.flags
    finally:
        os.close(got[0])


@pytest.mark.kernel_matrix
def test_rawsys_python_layer(
    s: Session, dgram: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    """rawsys.send_fds/recv_fds (close-on-exec by default, flags honoured)."""
    import rawsys

    a, b = dgram
    r, w = pipe
    assert rawsys.send_fds(a, [b"x"], [r, w]) == 1
    _, peeked, _, _ = rawsys.recv_fds(b, 16, 2, MSG_PEEK)
    _, got, _, _ = rawsys.recv_fds(b, 16, 2)
    try:
        evs = wait_for(s, 1, 2)
        (send,) = only(evs, SendEvent)
        peek_ev, real_ev = only(evs, RecvEvent)
        assert send.fds == (r, w)
        assert (peek_ev.fds, real_ev.fds) == (tuple(peeked), tuple(got))
        assert "PEEK" in peek_ev.flags and "PEEK" not in real_ev.flags
        assert real_ev.cloexec == (True, True) and "CMSG_CLOEXEC" in real_ev.flags
        addresses = [f.address for f in send.files]
        assert [f.address for f in peek_ev.files] == addresses
        assert [f.address for f in real_ev.files] == addresses
    finally:
        for fd in [*peeked, *got]:
            os.close(fd)


@pytest.mark.kernel_matrix
def test_cloexec_transfer_flag(
    s: Session, dgram: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = dgram
    r, _ = pipe
    assert c_send(a.fileno(), [r]) == 1
    _, _, got = c_recv(b.fileno(), 1, MSG_CMSG_CLOEXEC)
    plain: list[int] = []
    try:
        assert c_send(a.fileno(), [r]) == 1
        _, _, plain = c_recv(b.fileno(), 1, 0)
        evs = wait_for(s, 2, 2)
        transfers = s.transfers(evs)
        assert [t.matched for t in transfers] == [True, True]
        assert ["CLOEXEC" in t.flags for t in transfers] == [True, False]
        assert [t.recv_fd for t in transfers] == [got[0], plain[0]]
    finally:
        for fd in got + plain:
            os.close(fd)


@pytest.mark.kernel_matrix
def test_ctrunc_too_small_control_buffer(
    s: Session, dgram: tuple[socket.socket, socket.socket]
) -> None:
    """Four fds sent, room for one (CMSG_SPACE(sizeof(int)), which the kernel fills
    with as many as fit: two): those installed, MSG_CTRUNC, the rest never arrive."""
    a, b = dgram
    pipes = [os.pipe() for _ in range(2)]
    fds = [pipes[0][0], pipes[0][1], pipes[1][0], pipes[1][1]]
    fit = (CMSG_SPACE(sizeof(c_int)) - CMSG_LEN(0)) // sizeof(c_int)
    try:
        assert c_send(a.fileno(), fds) == 1
        ret, flags, got = c_recv(b.fileno(), 1)
        assert ret == 1 and flags & MSG_CTRUNC and len(got) == fit < len(fds)
        try:
            evs = wait_for(s, 1, 1)
            (send,) = only(evs, SendEvent)
            (recv,) = only(evs, RecvEvent)
            assert send.fds == tuple(fds)
            assert "CTRUNC" in recv.flags and recv.fds == tuple(got)
            assert [f.address for f in recv.files] == [f.address for f in send.files[:fit]]
            verdicts = s.transfers(evs) + s.flush()
            matched = [t for t in verdicts if isinstance(t, Transfer)]
            lost = [t for t in verdicts if isinstance(t, LostEvent)]
            assert all(t.matched for t in matched)
            assert [(t.send_fd, t.recv_fd) for t in matched] == list(zip(fds, got))
            assert all("CTRUNC" in t.flags for t in matched)
            # The rest were dropped by the kernel: lost, cause ctrunc, each named.
            assert [(t.fd, t.reason, t.fit) for t in lost] == [
                (fd, "ctrunc", fit) for fd in fds[fit:]]
            assert all(t.receiver is not None and t.receiver.pid == os.getpid() for t in lost)
        finally:
            for fd in got:
                os.close(fd)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


@pytest.mark.kernel_matrix
def test_no_control_buffer_reports_ctrunc_without_fds(
    s: Session, dgram: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = dgram
    assert c_send(a.fileno(), [pipe[0]]) == 1
    ret, flags, got = c_recv(b.fileno(), 0)
    assert ret == 1 and flags & MSG_CTRUNC and got == []
    evs = wait_for(s, 1, 1)
    (recv,) = only(evs, RecvEvent)
    assert recv.fds == () and "CTRUNC" in recv.flags
    # Linked to its send through the peer socket: lost, not NOSEND.
    (lost,) = s.transfers(evs)
    assert isinstance(lost, LostEvent)
    assert (lost.reason, lost.pid, lost.fd, lost.fit) == ("ctrunc", os.getpid(), pipe[0], 0)
    assert s.flush() == []


@pytest.mark.kernel_matrix
def test_peek_gives_a_clone_then_the_real_read(
    s: Session, dgram: tuple[socket.socket, socket.socket], pipe: tuple[int, int]
) -> None:
    a, b = dgram
    r, _ = pipe
    assert c_send(a.fileno(), [r]) == 1
    _, _, peeked = c_recv(b.fileno(), 1, MSG_PEEK)
    _, _, real = c_recv(b.fileno(), 1, 0)
    try:
        assert len(peeked) == 1 and len(real) == 1 and peeked != real
        evs = wait_for(s, 1, 2)
        recvs = only(evs, RecvEvent)
        assert [("PEEK" in e.flags) for e in recvs] == [True, False]
        assert [e.fds for e in recvs] == [tuple(peeked), tuple(real)]
        (send,) = only(evs, SendEvent)
        assert {e.files[0].address for e in recvs} == {send.files[0].address}
        transfers = s.transfers(evs)
        assert [(t.matched, t.recv_fd, "PEEK" in t.flags) for t in transfers] == [
            (True, peeked[0], True),
            (True, real[0], False),
        ]
        assert s.flush() == []
    finally:
        for fd in peeked + real:
            os.close(fd)


@pytest.mark.kernel_matrix
def test_failed_send_is_reported_as_failed(
    s: Session, dgram: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = dgram
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as info:
        socket.send_fds(a, [b"x"], [r])
    assert info.value.errno == errno.EBADF
    (send,) = only(wait_for(s, 1, 0), SendEvent)
    assert (send.ok, send.errno, send.ret) == (False, errno.EBADF, -errno.EBADF)
    assert send.fds == (r,) and send.files[0].address == 0
    transfers = s.transfers([send])
    assert [(t.matched, t.send is send, t.recv) for t in transfers] == [(False, True, None)]
    assert s.matcher.pending == 0  # never waits for a receive


@pytest.mark.kernel_matrix
def test_sendmmsg_recvmmsg(s: Session, dgram: tuple[socket.socket, socket.socket]) -> None:
    a, b = dgram
    pipes = [os.pipe() for _ in range(3)]
    got: list[int] = []
    try:
        out = (mmsghdr * 3)()
        keep: list[object] = []
        for i, (r, _w) in enumerate(pipes):
            payload = bytearray(b"m" * (i + 1))
            iov = iovec()
            iov.set_buffer(payload)
            control = (c_ubyte * CMSG_SPACE(sizeof(c_int)))()
            hdr = out[i].msg_hdr
            hdr.set_iov([iov])
            hdr.set_control(control)
            cmsg = CMSG_FIRSTHDR(hdr)
            assert cmsg is not None
            cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_RIGHTS
            cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int))
            cast(CMSG_DATA(cmsg), POINTER(c_int))[0] = r
            keep.append((payload, iov, control))
        assert sendmmsg(a.fileno(), out, 3, 0) == 3
        into = (mmsghdr * 3)()
        for i in range(3):
            iov = iovec()
            buf = bytearray(8)
            iov.set_buffer(buf)
            into[i].msg_hdr.set_iov([iov])
            into[i].msg_hdr.set_control((c_ubyte * CMSG_SPACE(sizeof(c_int)))())
            keep.append((buf, iov))
        assert recvmmsg(b.fileno(), into, 3, 0, None) == 3
        got = [fd for i in range(3) for fd in _fds_of(into[i].msg_hdr)]
        assert len(got) == 3
        evs = wait_for(s, 3, 3)
        sends, recvs = only(evs, SendEvent), only(evs, RecvEvent)
        assert [(e.syscall, e.msg_index, e.ret) for e in sends] == [
            ("sendmmsg", i, i + 1) for i in range(3)
        ]
        assert [(e.syscall, e.msg_index, e.ret) for e in recvs] == [
            ("recvmmsg", i, i + 1) for i in range(3)
        ]
        assert [e.fds[0] for e in sends] == [r for r, _ in pipes]
        assert [e.fds[0] for e in recvs] == got
        transfers = s.transfers(evs)
        assert [(t.send_fd, t.recv_fd) for t in transfers] == list(
            zip([r for r, _ in pipes], got)
        )
    finally:
        for fd in got:
            os.close(fd)
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_pid_filter_is_applied_in_the_kernel(s: Session, pipe: tuple[int, int]) -> None:
    """A child process's transfers are not reported until its pid is added."""
    code = (
        "import os, socket\n"
        "a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        f"socket.send_fds(a, [b'x'], [{pipe[0]}])\n"
        "_, fds, _, _ = socket.recv_fds(b, 1, 1)\n"
        "os.close(fds[0])\n"
    )
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, pass_fds=[pipe[0]])
    evs = s.collect(timeout=0.5)
    assert evs == []


@pytest.mark.kernel_matrix
def test_c_program_across_fork(build_c: Callable[..., Path], tmp_path: Path) -> None:
    """The classic send_fd/recv_fd pair of cmsg(3) in C: the child sends an open file."""
    require_live_tracing()
    exe = build_fdpass(build_c, tmp_path)
    data = tmp_path / "passed.txt"
    data.write_text("file passed by the child")
    with Session(comm="fdpass", backend=forced_backend()) as s:
        out = subprocess.run([str(exe), "fork", str(data)], capture_output=True, text=True,
                             check=True).stdout
        roles = parse_roles(out)
        evs = wait_for(s, 1, 1)
        transfers = s.transfers(evs)
    assert "I got fd" in out and "file passed by the child" in out
    (sender_pid, sender_fd), (receiver_pid, receiver_fd) = roles["sender"], roles["receiver"]
    assert sender_pid != receiver_pid
    (send,) = only(evs, SendEvent)
    (recv,) = only(evs, RecvEvent)
    assert (send.pid, send.comm, send.fds) == (sender_pid, "fdpass", (sender_fd,))
    assert (recv.pid, recv.comm, recv.fds) == (receiver_pid, "fdpass", (receiver_fd,))
    assert send.files[0].address == recv.files[0].address
    assert send.files[0].inode == recv.files[0].inode == data.stat().st_ino
    assert recv.files[0].name == "passed.txt"
    (t,) = transfers
    assert t.matched and t.send is send and t.recv is recv
    assert (t.send_fd, t.recv_fd) == (sender_fd, receiver_fd)


def test_tid_filter() -> None:
    """Filtering on one thread id: another thread's transfers are not reported."""
    require_live_tracing()
    other_done = threading.Event()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        with Session(
            tids=[threading.get_native_id()], backend=forced_backend()
        ) as s:

            def elsewhere() -> None:
                socket.send_fds(a, [b"x"], [w])
                other_done.set()

            t = threading.Thread(target=elsewhere)
            t.start()
            t.join()
            assert other_done.is_set()
            _, got, _, _ = socket.recv_fds(b, 1, 1)  # this thread: reported
            os.close(got[0])
            evs = wait_for(s, 0, 1)
            assert only(evs, SendEvent) == []
            assert only(evs, RecvEvent)[0].tid == threading.get_native_id()
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.kernel_matrix
def test_clean_stop_leaves_no_program() -> None:
    require_live_tracing()
    held = own_bpf_prog_ids()  # the module's session, if open
    with Session(pids=[os.getpid()], backend=forced_backend()) as s:
        ours = own_bpf_prog_ids() - held
        attached = [(i, tp) for i, tp in tracepoint_attachments(os.getpid()) if i in ours]
        attached_ids = {i for i, _ in attached}
        assert ours <= bpf_prog_ids()  # bpftool prog show lists them
        names = sorted(bpf_prog_names(ours).values())
        if s.backend == "tracepoint":
            # every tracepoint attached once; read's and execve's programs serve their siblings too
            assert attached_ids == ours
            assert sorted(tp for _, tp in attached) == sorted(TRACEPOINT_ATTACHMENTS)
            assert names == sorted(TRACEPOINT_PROGRAMS)
        else:
            # every syscall's entry and exit, and the kernel's SCM_RIGHTS path
            assert sorted(tp for _, tp in attached) == sorted(SCM_TRACEPOINT_ATTACHMENTS)
            receive = scm_receive_function()
            functions = ("__scm_send", "scm_detach_fds", receive)
            if s.backend == "kprobe":
                probes = {i: p for i, p in kprobe_attachments(os.getpid()).items() if i in ours}
                assert attached_ids | set(probes) == ours
                assert sorted(probes.values()) == sorted(
                    (kind, fn) for fn in functions for kind in ("kprobe", "kretprobe")
                )
            else:
                # bcc's kfunc__/kretfunc__ programs; bpftool may show the target alone
                traced = sorted(
                    n.removeprefix("kretfunc__").removeprefix("kfunc__")
                    for n in names
                    if not n.startswith("tracepoint__")
                )
                assert traced == sorted(["__scm_send", "scm_detach_fds", "scm_detach_fds", receive])
        assert s.running
    assert own_bpf_prog_ids() == held
    left = wait_gone(ours)
    assert not left, f"programs left behind: {sorted(left)}"
    assert not s.running
    with pytest.raises(RuntimeError):
        s.poll(0)


def test_bad_filters_raise_clear_errors() -> None:
    from rawsys.trace.bpf.program import ProgramError

    with pytest.raises(ProgramError, match="PID must be an int"):
        Session(pids=["1"])  # type: ignore[list-item]
    with pytest.raises(ProgramError, match="out of range"):
        Session(pids=[0])
    with pytest.raises(ProgramError, match="longer than the kernel keeps"):
        Session(comm="x" * 16)
    with pytest.raises(ValueError, match="unknown backend"):
        Session(backend="dtrace")


@pytest.mark.parametrize("backend", ["kprobe", "fentry"])
def test_forced_backend_attaches_or_fails_cleanly(backend: str) -> None:
    """Where the kernel refuses a backend, starting it fails with a clear error and
    leaves nothing loaded; where it allows it, it starts and stops cleanly."""
    require_live_tracing()
    from rawsys.trace.doctor import probe_capabilities

    caps = probe_capabilities()
    allowed = {"kprobe": caps.kprobes.ok, "fentry": caps.fentry.ok}[backend]
    held = own_bpf_prog_ids()  # the module's session, if open
    s = Session(pids=[os.getpid()], backend=backend)
    if allowed:
        with s:
            assert s.running and s.backend == backend
    else:
        with pytest.raises(RuntimeError, match=f"{backend} backend: could not load or attach"):
            s.start()
        assert not s.running
    assert own_bpf_prog_ids() == held  # every program fd this session had is closed


@pytest.mark.kernel_matrix
def test_scm_max_fd_files_and_one_more(
    s: Session, dgram: tuple[socket.socket, socket.socket]
) -> None:
    """SCM_MAX_FD fds in one message are all reported; one more is refused (EINVAL)."""
    from rawsys.c.constants import SCM_MAX_FD

    a, b = dgram
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(SCM_MAX_FD)]
    got: list[int] = []
    try:
        socket.send_fds(a, [b"x"], fds)
        _, got, _, _ = socket.recv_fds(b, 1, SCM_MAX_FD)
        evs = wait_for(s, 1, 1)
        (send,) = only(evs, SendEvent)
        (recv,) = only(evs, RecvEvent)
        assert send.fds == tuple(fds) and recv.fds == tuple(got)
        assert {f.label for f in send.files} == {"null"}
        transfers = s.transfers(evs)
        assert len(transfers) == SCM_MAX_FD and all(t.matched for t in transfers)
        with pytest.raises(OSError) as info:
            socket.send_fds(a, [b"x"], fds + fds[:1])
        assert info.value.errno == errno.EINVAL
        (failed,) = only(wait_for(s, 1, 0), SendEvent)
        assert (failed.ok, failed.errno, failed.fds_seen) == (False, errno.EINVAL, SCM_MAX_FD + 1)
        assert len(failed.fds) == SCM_MAX_FD  # the records hold at most SCM_MAX_FD
    finally:
        for fd in fds + got:
            os.close(fd)
