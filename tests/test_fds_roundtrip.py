"""Round trips of rawsys.send_fds/recv_fds and friends, compared with CPython's where they agree."""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from typing import Any, Iterator, List, Tuple

import pytest

import rawsys
import rawsys.fds
from rawsys import (
    ControlTruncatedError,
    ScmCredentials,
    ScmRights,
    recv_fd,
    recv_fds,
    recv_fds_batch,
    recv_message,
    send_fd,
    send_fds,
    send_fds_batch,
    send_message,
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")

Pair = Tuple[socket.socket, socket.socket]


@pytest.fixture(params=[socket.SOCK_DGRAM, socket.SOCK_STREAM, socket.SOCK_SEQPACKET])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    a, b = socket.socketpair(socket.AF_UNIX, request.param)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def dgram() -> Iterator[Pair]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe() -> Iterator[Tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def close_all(fds: List[int]) -> None:
    for fd in fds:
        os.close(fd)


def assert_same_pipe(received_r: int, w: int) -> None:
    """Prove a received fd works: write through the original, read through the copy."""
    os.write(w, b"ping")
    assert os.read(received_r, 4) == b"ping"


def cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


@pytest.mark.parametrize("sender", ["rawsys", "cpython"])
@pytest.mark.parametrize("receiver", ["rawsys", "cpython"])
def test_interoperates_with_cpython(pair: Pair, pipe: Tuple[int, int], sender: str,
                                    receiver: str) -> None:
    a, b = pair
    r, w = pipe
    send = send_fds if sender == "rawsys" else socket.send_fds
    recv = recv_fds if receiver == "rawsys" else socket.recv_fds
    assert send(a, [b"ab", b"c"], [r, w]) == 3
    msg, fds, flags, address = recv(b, 16, 4)
    try:
        assert msg == b"abc"
        assert len(fds) == 2 and flags == 0
        assert all(fd not in (r, w) for fd in fds)
        assert_same_pipe(fds[0], w)
        if a.type != socket.SOCK_STREAM:
            assert address is None
    finally:
        close_all(fds)


def test_same_result_shape_as_cpython(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    r, _w = pipe
    socket.send_fds(a, [b"x"], [r])
    theirs = socket.recv_fds(b, 4, 1)
    send_fds(a, [b"x"], [r])
    ours = recv_fds(b, 4, 1)
    try:
        assert type(ours) is type(theirs) is tuple
        assert [type(v) for v in ours] == [type(v) for v in theirs]
        assert ours[0] == theirs[0] and ours[2] == theirs[2] and ours[3] == theirs[3]
    finally:
        close_all(theirs[1] + ours[1])


def test_int_fds_and_socket_objects_both_work(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds(a.fileno(), [b"x"], [pipe[0]])
    _msg, fds, _flags, _addr = recv_fds(b.fileno(), 1, 1)
    close_all(fds)
    assert len(fds) == 1


def test_received_fds_are_cloexec_by_default(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds(a, [b"x"], [pipe[0]])
    _msg, fds, flags, _addr = recv_fds(b, 1, 1)
    try:
        assert cloexec(fds[0])
        assert flags == 0  # the kernel's echo of MSG_CMSG_CLOEXEC is not shown
    finally:
        close_all(fds)


def test_cloexec_opt_out(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds(a, [b"x"], [pipe[0]])
    _msg, fds, _flags, _addr = recv_fds(b, 1, 1, cloexec=False)
    try:
        assert not cloexec(fds[0])
    finally:
        close_all(fds)


def test_cpython_does_not_set_cloexec(dgram: Pair, pipe: Tuple[int, int]) -> None:
    """The difference rawsys fixes, pinned: CPython's received fds are inheritable."""
    a, b = dgram
    socket.send_fds(a, [b"x"], [pipe[0]])
    _msg, fds, _flags, _addr = socket.recv_fds(b, 1, 1)
    try:
        assert not cloexec(fds[0])
    finally:
        close_all(fds)


def test_msg_peek_gives_clones_then_the_real_read(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    r, w = pipe
    send_fds(a, [b"peek"], [r])
    msg1, peeked, _f1, _a1 = recv_fds(b, 8, 1, socket.MSG_PEEK)
    msg2, real, _f2, _a2 = recv_fds(b, 8, 1)
    try:
        assert msg1 == msg2 == b"peek"
        assert len(peeked) == len(real) == 1 and peeked[0] != real[0]
        assert_same_pipe(peeked[0], w)
        assert_same_pipe(real[0], w)
    finally:
        close_all(peeked + real)
    with pytest.raises(BlockingIOError):
        recv_fds(b, 8, 1, socket.MSG_DONTWAIT)  # the peek did not leave a second copy


def test_cpython_ignores_flags(dgram: Pair) -> None:
    """python/cpython#107898, pinned: CPython's recv_fds drops MSG_DONTWAIT and blocks."""
    _a, b = dgram
    b.settimeout(0.05)
    with pytest.raises(socket.timeout):
        socket.recv_fds(b, 1, 1, socket.MSG_DONTWAIT)  # waits: flag ignored
    with pytest.raises(BlockingIOError):
        recv_fds(b, 1, 1, socket.MSG_DONTWAIT)  # rawsys honours it


def test_socket_timeout_is_respected(dgram: Pair) -> None:
    """The exception CPython raises: socket.timeout (not TimeoutError on 3.9)."""
    _a, b = dgram
    b.settimeout(0.05)
    with pytest.raises(socket.timeout) as theirs:
        socket.recv_fds(b, 1, 1)
    with pytest.raises(socket.timeout) as ours:
        recv_fds(b, 1, 1)
    assert type(ours.value) is type(theirs.value)
    assert ours.value.args == theirs.value.args == ("timed out",)


def test_send_waits_for_room_then_times_out(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    a.setblocking(False)
    sent = 0
    with pytest.raises(BlockingIOError):
        while True:  # fill the peer's queue
            send_fds(a, [b"f"], [pipe[0]])
            sent += 1
    a.settimeout(0.05)
    with pytest.raises(socket.timeout):
        send_fds(a, [b"f"], [pipe[0]])
    for _ in range(sent):
        close_all(recv_fds(b, 1, 1)[1])


def test_recv_with_timeout_gets_a_late_message(dgram: Pair, pipe: Tuple[int, int]) -> None:
    import threading

    a, b = dgram
    b.settimeout(5)
    timer = threading.Timer(0.05, send_fds, args=(a, [b"late"], [pipe[0]]))
    timer.start()
    try:
        msg, fds, _flags, _addr = recv_fds(b, 8, 1)
    finally:
        timer.join()
    close_all(fds)
    assert msg == b"late" and len(fds) == 1


def test_address_is_honoured_and_returned(pipe: Tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path_a, path_b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            a.bind(path_a)
            b.bind(path_b)
            assert send_fds(a, [b"to b"], [pipe[0]], 0, path_b) == 4
            msg, fds, _flags, address = recv_fds(b, 8, 1)
            close_all(fds)
            assert msg == b"to b" and len(fds) == 1
            assert address == path_a
            a.sendto(b"plain", path_b)
            a.sendto(b"plain", path_b)
            assert recv_fds(b, 8, 1)[3] == socket.recv_fds(b, 8, 1)[3] == path_a
        finally:
            a.close()
            b.close()


def test_every_scm_rights_header_is_collected(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    r, w = pipe
    send_message(a, [b"two"], [ScmRights((r,)), ScmRights((w, r))])
    _msg, fds, _flags, _addr = recv_fds(b, 8, 8)
    close_all(fds)
    assert len(fds) == 3


def test_ctrunc_raises_and_owns_the_fds_that_arrived(dgram: Pair,
                                                     pipe: Tuple[int, int]) -> None:
    a, b = dgram
    r, w = pipe
    send_fds(a, [b"x"], [r, w, r, w])
    with pytest.raises(ControlTruncatedError) as info:
        recv_fds(b, 1, 1)
    err = info.value
    assert isinstance(err, OSError) and err.msg_flags & socket.MSG_CTRUNC
    assert len(err.fds) == 1 and err.msg == b"x"
    taken = err.take_fds()
    try:
        assert_same_pipe(taken[0], w)
    finally:
        close_all(taken)
    err.close()  # nothing left to close: taken fds are the caller's


def test_ctrunc_fds_not_taken_are_closed(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds(a, [b"x"], [pipe[0]] * 3)
    try:
        recv_fds(b, 1, 2)
    except OSError as err:  # a generic handler: the fds must not leak
        assert isinstance(err, ControlTruncatedError)
        fds = err.fds
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_cpython_hides_ctrunc_in_flags(dgram: Pair, pipe: Tuple[int, int]) -> None:
    """What CPython does, pinned: a partial list and a flag few callers check."""
    a, b = dgram
    socket.send_fds(a, [b"x"], [pipe[0]] * 3)
    _msg, fds, flags, _addr = socket.recv_fds(b, 1, 1)
    close_all(fds)
    assert len(fds) == 1 and flags & socket.MSG_CTRUNC


def test_exception_mid_parse_closes_installed_fds(dgram: Pair, pipe: Tuple[int, int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = dgram
    send_fds(a, [b"x"], [pipe[0], pipe[1]])
    before = set(os.listdir("/proc/self/fd"))

    real = rawsys.fds.received_fds
    calls = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        # The first walk (decoding the reply) is interrupted; the cleanup's walk is not.
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(rawsys.fds, "received_fds", interrupted)
    with pytest.raises(KeyboardInterrupt):
        recv_fds(b, 1, 2)
    assert set(os.listdir("/proc/self/fd")) == before


def test_send_fd_recv_fd_seed_pair(pair: Pair, pipe: Tuple[int, int]) -> None:
    a, b = pair
    r, w = pipe
    assert send_fd(a, r) == 1
    got = recv_fd(b)
    try:
        assert got != r
        assert_same_pipe(got, w)
    finally:
        os.close(got)


def test_recv_fd_without_fd_is_an_error(dgram: Pair) -> None:
    a, b = dgram
    a.send(b"x")
    with pytest.raises(OSError) as info:
        recv_fd(b)
    assert info.value.errno == 74  # EBADMSG


def test_lowest_free_fd_is_used(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    probe = os.dup(0)
    os.close(probe)  # probe is now the lowest free number
    send_fd(a, pipe[1])
    got = recv_fd(b)
    os.close(got)
    assert got == probe


def test_large_message_and_many_fds(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    payload = os.urandom(100_000)
    send_fds(a, [payload], [pipe[0]] * 253)
    msg, fds, _flags, _addr = recv_fds(b, 200_000, 253)
    close_all(fds)
    assert msg == payload and len(fds) == 253


def test_msg_trunc_is_reported_like_cpython(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds(a, [b"abcdef"], [pipe[0]])
    msg, fds, flags, _addr = recv_fds(b, 2, 1)
    close_all(fds)
    assert msg == b"ab" and flags & socket.MSG_TRUNC and len(fds) == 1


def test_bufsize_zero_reads_fds_only(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds(a, [b"abc"], [pipe[0]])
    msg, fds, flags, _addr = recv_fds(b, 0, 1)
    close_all(fds)
    assert msg == b"" and len(fds) == 1 and flags & socket.MSG_TRUNC


def test_credentials_and_peercred(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    me = rawsys.own_credentials()
    assert rawsys.peer_credentials(a) == me
    rawsys.set_passcred(b)
    assert rawsys.get_passcred(b)
    rawsys.send_credentials(a, [b"id"], fds=[pipe[0]])
    m = recv_message(b, 8, 1, credentials=True)
    close_all(m.fds)
    assert m.data == b"id" and m.credentials == me and len(m.fds) == 1
    a.send(b"implicit")  # SO_PASSCRED: the kernel attaches them anyway
    m = recv_message(b, 16, 0, credentials=True)
    assert m.credentials == ScmCredentials(os.getpid(), os.getuid(), os.getgid())


def test_claiming_a_missing_pid_is_esrch(dgram: Pair) -> None:
    a, _b = dgram
    with pytest.raises(OSError) as info:
        rawsys.send_credentials(a, [b"x"], ScmCredentials(2**22 + 12345, os.getuid(),
                                                           os.getgid()))
    assert info.value.errno in (3, 1)  # ESRCH (root) or EPERM (unprivileged)


def test_pidfd_options(dgram: Pair) -> None:
    a, b = dgram
    if not rawsys.pidfd_supported(a):
        with pytest.raises(rawsys.PidfdUnsupportedError):
            rawsys.set_passpidfd(b)
        return
    peer = rawsys.peer_pidfd(a)
    os.close(peer)
    rawsys.set_passpidfd(b)
    a.send(b"who")
    m = recv_message(b, 8, 0, pidfd=True)
    assert m.pidfd is not None
    os.close(m.pidfd)
    a.send(b"again")  # recv_fds has no place for it: closes it rather than leak
    msg, fds, _flags, _addr = recv_fds(b, 8, 2)
    assert msg == b"again" and fds == []


def test_pidfd_error_mapping() -> None:
    from rawsys.creds import pidfd_error

    assert isinstance(pidfd_error(92, "SO_PEERPIDFD"), rawsys.PidfdUnsupportedError)  # ENOPROTOOPT
    err = pidfd_error(9, "SO_PEERPIDFD")
    assert type(err) is not rawsys.PidfdUnsupportedError and err.errno == 9


def test_batch_round_trip(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    r, w = pipe
    items = [([b"m%d" % i], [r] * (i % 3)) for i in range(10)]
    assert send_fds_batch(a, items) == 10
    results = recv_fds_batch(b, 16, 8, 2)
    try:
        assert [m for m, _f, _fl, _a in results] == [b"m%d" % i for i in range(10)]
        assert [len(f) for _m, f, _fl, _a in results] == [i % 3 for i in range(10)]
        assert all(cloexec(fd) for _m, f, _fl, _a in results for fd in f)
    finally:
        close_all([fd for _m, f, _fl, _a in results for fd in f])


def test_batch_ctrunc_holds_every_message(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds_batch(a, [([b"a"], [pipe[0]]), ([b"b"], [pipe[0]] * 3), ([b"c"], [pipe[1]])])
    with pytest.raises(ControlTruncatedError) as info:
        recv_fds_batch(b, 3, 1, 1)
    err = info.value
    assert err.index == 1 and len(err.results) == 3
    results = err.take()
    close_all([fd for _m, f, _fl, _a in results for fd in f])
    assert [len(f) for _m, f, _fl, _a in results] == [1, 1, 1]


def test_batch_of_nothing(dgram: Pair) -> None:
    a, b = dgram
    assert send_fds_batch(a, []) == 0
    assert recv_fds_batch(b, 0, 1, 1) == []


def test_fork_cross_process(dgram: Pair) -> None:
    """The classic fd-passing program: a child opens a file, sends its fd; the parent reads it."""
    a, b = dgram
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(b"passed-fd content")
        tmp.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                fd = os.open(tmp.name, os.O_RDONLY)
                send_fd(a, fd)
                os._exit(0)
            except BaseException:
                os._exit(1)
        got = recv_fd(b)
        try:
            assert os.pread(got, 100, 0) == b"passed-fd content"
        finally:
            os.close(got)
        assert os.waitpid(pid, 0)[1] == 0
