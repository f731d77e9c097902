"""The conformance cases again, seen from the kernel side through the tracer.

The same branches as ``test_sendmsg_kernel.py`` and ``test_recvmsg_kernel.py``,
run under one ``rawsys.trace.session.Session`` filtered on
this process; each test asserts what the probes report for its own transfer:
the fds and kernel files sent and installed, truncation (``CTRUNC``, how many
fds fit), close-on-exec on install, ``PEEK`` clones, failed sends reported as
failed.  The tracer reports messages that carry ``SCM_RIGHTS``; branches
without fds (credentials, ``SO_PASSCRED``) have no kernel event to check.

These need root and the distribution's bcc; CI has both, so they run there.
They are skipped only where that capability is missing, and the reason says
which.
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Iterator, List

import pytest
from scm_support import (
    close_all,
    dgram_pair,
    lowest_free_fd,
    message,
    receive,
    rights,
    send,
    send_fds,
    udp_loopback,
)

from rawsys.c import (
    AF_INET,
    AF_NETLINK,
    AF_UNIX,
    CMSG_LEN,
    CMSG_SPACE,
    MSG_CMSG_CLOEXEC,
    MSG_PEEK,
    SCM_MAX_FD,
    SOCK_DGRAM,
    SOCK_RAW,
    c_int,
    close,
    cmsghdr,
    pipe2,
    sizeof,
    socket,
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")

INT = sizeof(c_int)
QUIET_SECONDS = 0.3


def _start_session() -> object:
    if os.geteuid() != 0:
        pytest.skip(
            "kernel events need root: loading eBPF programs needs CAP_BPF and "
            "CAP_PERFMON (or CAP_SYS_ADMIN)"
        )
    from rawsys.trace.session import Session, SessionError
    from rawsys.trace.system.bccloader import BccUnavailable, load_bcc

    try:
        load_bcc()
    except BccUnavailable as exc:
        pytest.skip(f"kernel events need the distribution's bcc (python3-bpfcc): {exc}")
    session = Session(pids=[os.getpid()])
    try:
        session.start()
    except SessionError as exc:
        from rawsys.trace.doctor import probe_capabilities

        caps = probe_capabilities()
        if not (caps.kprobes.ok or caps.fentry.ok or caps.tracepoints.ok):
            pytest.skip(f"no tracer backend can attach on this kernel: {exc}")
        raise
    return session


@pytest.fixture(scope="module")
def tracer() -> Iterator[object]:
    session = _start_session()
    try:
        yield session
    finally:
        session.close()  # type: ignore[attr-defined]


Collect = Callable[[], List[object]]


@pytest.fixture
def kernel_events(tracer: object) -> Collect:
    """Drop what earlier tests left in the ring buffer; return a reader for this test's events."""

    def drain() -> List[object]:
        events: List[object] = []
        while True:
            batch = tracer.poll(QUIET_SECONDS)  # type: ignore[attr-defined]
            if not batch:
                return events
            events.extend(batch)

    drain()
    return drain


def sends(events: List[object]) -> List[object]:
    return [e for e in events if e.event == "send"]  # type: ignore[attr-defined]


def recvs(events: List[object]) -> List[object]:
    return [e for e in events if e.event == "recv"]  # type: ignore[attr-defined]


def one(events: List[object]) -> object:
    assert len(events) == 1, events
    return events[0]


# --- transfers that succeed --------------------------------------------------------


def test_one_fd_links_sender_and_receiver_through_one_file(pair, pipe, kernel_events):
    send_fds(pair[0], pipe[0])
    got = receive(pair[1], controllen=CMSG_SPACE(INT))
    close_all(got.fds)
    events = kernel_events()
    s, r = one(sends(events)), one(recvs(events))
    assert s.ok and s.sock == pair[0] and s.fds == (pipe[0],)
    assert r.ok and r.sock == pair[1] and r.fds == tuple(got.fds)
    assert s.files[0].address == r.files[0].address != 0
    assert r.files[0].inode == os.fstat(pipe[0]).st_ino and r.files[0].kind == "pipe"
    assert "CTRUNC" not in r.flags and r.cloexec == (False,)


def test_scm_max_fd_fds_are_all_seen(pair, pipe, kernel_events):
    send_fds(pair[0], *[pipe[0]] * SCM_MAX_FD)
    got = receive(pair[1], controllen=CMSG_SPACE(INT * SCM_MAX_FD))
    close_all(got.fds)
    events = kernel_events()
    assert len(one(sends(events)).fds) == SCM_MAX_FD
    assert one(recvs(events)).fds == tuple(got.fds)


def test_received_number_is_the_lowest_free_fd(pair, pipe, kernel_events):
    expected = lowest_free_fd()
    send_fds(pair[0], pipe[1])
    got = receive(pair[1], controllen=CMSG_SPACE(INT))
    close_all(got.fds)
    assert one(recvs(kernel_events())).fds == (expected,)


def test_in_flight_file_closed_by_the_sender(pair, kernel_events):
    """The send sees fd + in-flight references; the receive sees the file alive, the same one."""
    fds = (c_int * 2)()
    assert pipe2(fds, 0) == 0
    send_fds(pair[0], fds[0])
    close(fds[0])
    got = receive(pair[1], controllen=CMSG_SPACE(INT))
    close_all([*got.fds, fds[1]])
    events = kernel_events()
    s, r = one(sends(events)), one(recvs(events))
    assert s.files[0].address == r.files[0].address
    assert s.files[0].refcount == 2  # the sender's fd and the kernel's in-flight reference
    assert r.files[0].refcount == 1  # sender closed: only the receiver's new fd


# --- recvmsg: truncation, CLOEXEC, PEEK, TRUNC -------------------------------------------


@pytest.mark.parametrize("controllen", [sizeof(cmsghdr), CMSG_LEN(INT), CMSG_SPACE(INT)])
def test_small_buffer_reports_ctrunc_and_the_fds_that_fit(pair, pipe, kernel_events, controllen):
    send_fds(pair[0], *[pipe[0]] * 4)
    got = receive(pair[1], controllen=controllen)
    close_all(got.fds)
    r = one(recvs(kernel_events()))
    assert "CTRUNC" in r.flags
    assert r.fds == tuple(got.fds)
    assert len(r.fds) == (controllen - sizeof(cmsghdr)) // INT


def test_no_control_buffer_reports_ctrunc_and_nothing_installed(pair, pipe, kernel_events):
    send_fds(pair[0], pipe[0])
    got = receive(pair[1], controllen=0)
    assert got.fds == []
    r = one(recvs(kernel_events()))
    assert "CTRUNC" in r.flags and r.fds == ()


def test_room_for_all_reports_no_ctrunc(pair, pipe, kernel_events):
    send_fds(pair[0], *[pipe[0]] * 4)
    got = receive(pair[1], controllen=CMSG_SPACE(4 * INT))
    close_all(got.fds)
    r = one(recvs(kernel_events()))
    assert "CTRUNC" not in r.flags and len(r.fds) == 4


@pytest.mark.parametrize("flags, expected", [(MSG_CMSG_CLOEXEC, True), (0, False)])
def test_cloexec_on_install(pair, pipe, kernel_events, flags, expected):
    send_fds(pair[0], pipe[0], pipe[1])
    got = receive(pair[1], controllen=CMSG_SPACE(2 * INT), flags=flags)
    close_all(got.fds)
    r = one(recvs(kernel_events()))
    assert r.cloexec == (expected, expected)
    assert ("CMSG_CLOEXEC" in r.flags) == expected


def test_peek_clones_then_the_read_installs_again(pair, pipe, kernel_events):
    send_fds(pair[0], pipe[0])
    peeked = receive(pair[1], controllen=CMSG_SPACE(INT), flags=MSG_PEEK)
    real = receive(pair[1], controllen=CMSG_SPACE(INT))
    close_all(peeked.fds + real.fds)
    events = kernel_events()
    s = one(sends(events))
    first, second = recvs(events)
    assert "PEEK" in first.flags and "PEEK" not in second.flags
    assert first.fds == tuple(peeked.fds) and second.fds == tuple(real.fds)
    assert first.files[0].address == second.files[0].address == s.files[0].address


def test_msg_trunc_is_reported_and_the_fd_still_comes(pair, pipe, kernel_events):
    assert send(pair[0], message([rights(pipe[0])], payload=b"0123456789")) == (10, 0)
    got = receive(pair[1], controllen=CMSG_SPACE(INT), bufsize=4)
    close_all(got.fds)
    r = one(recvs(kernel_events()))
    assert "TRUNC" in r.flags and r.fds == tuple(got.fds) and len(r.fds) == 1


# --- sendmsg: refusals are reported as failed sends, never as transfers ------------------


def assert_failed_send(events: List[object], err: int) -> None:
    assert recvs(events) == []
    s = one(sends(events))
    assert not s.ok and s.errno == err, (s.ok, s.errno)


def test_bad_fd_is_a_failed_send(pair, pipe, kernel_events):
    spare = os.dup(pipe[0])
    os.close(spare)
    assert send(pair[0], message([rights(pipe[0], spare)])) == (-1, errno.EBADF)
    assert_failed_send(kernel_events(), errno.EBADF)


def test_too_many_fds_is_a_failed_send(pair, pipe, kernel_events):
    assert send(pair[0], message([rights(*[pipe[0]] * (SCM_MAX_FD + 1))])) == (-1, errno.EINVAL)
    events = kernel_events()
    assert_failed_send(events, errno.EINVAL)
    assert one(sends(events)).fds_seen == SCM_MAX_FD + 1


def test_controllen_over_int_max_is_a_failed_send(pair, pipe, kernel_events):
    msg = message([rights(pipe[0])])
    msg.msg_controllen = 2**31
    assert send(pair[0], msg, unchecked=True) == (-1, errno.ENOBUFS)
    events = kernel_events()
    assert recvs(events) == []
    assert all(not s.ok and s.errno == errno.ENOBUFS for s in sends(events))


def test_netlink_scm_rights_is_a_failed_send(pipe, kernel_events):
    nl = socket(AF_NETLINK, SOCK_RAW, 0)
    if nl == -1:
        pytest.skip("no AF_NETLINK sockets on this system")
    try:
        assert send(nl, message([rights(pipe[0])])) == (-1, errno.EINVAL)
    finally:
        close(nl)
    assert_failed_send(kernel_events(), errno.EINVAL)


def test_gone_peer_is_a_failed_send(pipe, kernel_events):
    a, b = dgram_pair()
    close(b)
    try:
        assert send(a, message([rights(pipe[0])])) == (-1, errno.ECONNREFUSED)
    finally:
        close(a)
    assert_failed_send(kernel_events(), errno.ECONNREFUSED)


def test_unconnected_is_a_failed_send(pipe, kernel_events):
    s = socket(AF_UNIX, SOCK_DGRAM, 0)
    assert s != -1
    try:
        assert send(s, message([rights(pipe[0])])) == (-1, errno.ENOTCONN)
    finally:
        close(s)
    assert_failed_send(kernel_events(), errno.ENOTCONN)


def test_cmsg_len_too_short_moves_nothing(pair, pipe, kernel_events):
    """CMSG_OK fails before any fd is looked at: no successful send, no receive."""
    assert send(pair[0], message([rights(pipe[0])], cmsg_lens=[8])) == (-1, errno.EINVAL)
    events = kernel_events()
    assert recvs(events) == [] and all(not s.ok for s in sends(events))


def test_udp_ignores_scm_rights_nothing_is_installed(pipe, kernel_events):
    """On UDP the kernel drops SCM_RIGHTS silently: the receiver installs nothing.

    (A send event may appear: the tracepoint backend reads the user's control
    data, which does hold an SCM_RIGHTS message; no receive follows it.)
    """
    receiver, addr = udp_loopback()
    sender = socket(AF_INET, SOCK_DGRAM, 0)
    try:
        msg = message([rights(pipe[0])], payload=b"udp")
        msg.set_name(addr)
        assert send(sender, msg) == (3, 0)
        got = receive(receiver, controllen=CMSG_SPACE(INT))
        close_all(got.fds)
        assert got.ret == 3 and got.fds == []
    finally:
        close_all([receiver, sender])
    events = kernel_events()
    assert [r for r in recvs(events) if r.fds] == []
