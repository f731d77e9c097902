"""Passing fds with the C layer, written the way C writes it.

Every message is built by hand: an ``iovec`` with at least one byte, a
``msghdr``, a control buffer sized with ``CMSG_SPACE``, headers filled through
``CMSG_FIRSTHDR``/``CMSG_NXTHDR`` and the fds ``memcpy``'d into ``CMSG_DATA``.
A received pipe fd is written through (or read from) to prove it works.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from ctypes import POINTER, byref, c_int, c_ubyte, cast, memmove, pointer, sizeof
from typing import Iterator

import pytest

from rawsys.c.cmsg import CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE
from rawsys.c.constants import (
    AF_UNIX,
    FD_CLOEXEC,
    MSG_CMSG_CLOEXEC,
    MSG_CTRUNC,
    MSG_DONTWAIT,
    MSG_PEEK,
    MSG_TRUNC,
    SCM_CREDENTIALS,
    SCM_RIGHTS,
    SO_PASSCRED,
    SOCK_DGRAM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_SOCKET,
)
from rawsys.c.libc import (
    close,
    get_errno,
    pipe2,
    recvmmsg,
    recvmsg,
    sendmmsg,
    sendmsg,
    setsockopt,
    socketpair,
)
from rawsys.c.structs import iovec, mmsghdr, msghdr, ucred

pytestmark = pytest.mark.usefixtures("fd_leak_check")

SOCK_TYPES = {"DGRAM": SOCK_DGRAM, "STREAM": SOCK_STREAM, "SEQPACKET": SOCK_SEQPACKET}


@pytest.fixture(params=sorted(SOCK_TYPES))
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    sv = (c_int * 2)()
    assert socketpair(AF_UNIX, SOCK_TYPES[request.param], 0, sv) == 0
    yield sv[0], sv[1]
    assert close(sv[0]) == 0
    assert close(sv[1]) == 0


@pytest.fixture
def dgram_pair() -> Iterator[tuple[int, int]]:
    sv = (c_int * 2)()
    assert socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0
    yield sv[0], sv[1]
    close(sv[0])
    close(sv[1])


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    fds = (c_int * 2)()
    assert pipe2(fds, 0) == 0
    yield fds[0], fds[1]
    close(fds[0])
    close(fds[1])


# --- C-style helpers: what a C program's send_fds/recv_fds look like ---------------------


def send_fds(sock: int, fds: list[int], data: bytes = b"*", groups: int = 1) -> int:
    """sendmsg *data* with *fds* split over *groups* SCM_RIGHTS headers."""
    buf = bytearray(data)
    iov = (iovec * 1)()
    iov[0].set_buffer(buf)
    chunks = [fds[i::groups] for i in range(groups)]
    space = sum(CMSG_SPACE(len(chunk) * sizeof(c_int)) for chunk in chunks)
    control = (c_ubyte * space)()
    msg = msghdr()
    msg.set_iov(iov)
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    for chunk in chunks:
        assert cmsg is not None
        cmsg.contents.cmsg_level = SOL_SOCKET
        cmsg.contents.cmsg_type = SCM_RIGHTS
        cmsg.contents.cmsg_len = CMSG_LEN(len(chunk) * sizeof(c_int))
        array = (c_int * len(chunk))(*chunk)
        memmove(CMSG_DATA(cmsg), array, sizeof(array))
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return sendmsg(sock, msg, 0)


class Received:
    def __init__(self, nbytes: int, data: bytes, fds: list[int], flags: int,
                 creds: list[tuple[int, int, int]], headers: list[tuple[int, int]]) -> None:
        self.nbytes, self.data, self.fds, self.flags = nbytes, data, fds, flags
        self.creds, self.headers = creds, headers

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)


def recv_fds(sock: int, maxfds: int, bufsize: int = 64, flags: int = 0,
             extra_control: int = 0) -> Received:
    """recvmsg with room for *maxfds* fds; collects every header of the reply."""
    buf = bytearray(bufsize)
    iov = iovec()
    iov.set_buffer(buf)
    space = (CMSG_SPACE(maxfds * sizeof(c_int)) if maxfds else 0) + extra_control
    control = (c_ubyte * space)() if space else None
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    n = recvmsg(sock, byref(msg), flags)
    assert n >= 0, os.strerror(get_errno())
    fds: list[int] = []
    creds: list[tuple[int, int, int]] = []
    headers: list[tuple[int, int]] = []
    cmsg = CMSG_FIRSTHDR(pointer(msg))
    while cmsg is not None:
        h = cmsg.contents
        headers.append((h.cmsg_level, h.cmsg_type))
        if (h.cmsg_level, h.cmsg_type) == (SOL_SOCKET, SCM_RIGHTS):
            count = (h.cmsg_len - CMSG_LEN(0)) // sizeof(c_int)
            data = cast(CMSG_DATA(cmsg), POINTER(c_int))
            fds += [data[i] for i in range(count)]
        elif (h.cmsg_level, h.cmsg_type) == (SOL_SOCKET, SCM_CREDENTIALS):
            cred = cast(CMSG_DATA(cmsg), POINTER(ucred)).contents
            creds.append((cred.pid, cred.uid, cred.gid))
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return Received(n, bytes(buf[: max(n, 0)]), fds, msg.msg_flags, creds, headers)


def assert_pipe_works(write_end: int, read_end: int, payload: bytes) -> None:
    assert os.write(write_end, payload) == len(payload)
    assert os.read(read_end, 100) == payload


# --- the round trips ----------------------------------------------------------------------


def test_one_pipe_fd(pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    a, b = pair
    r, w = pipe
    assert send_fds(a, [w], b"x") == 1
    got = recv_fds(b, 1)
    try:
        assert (got.nbytes, got.data, got.flags) == (1, b"x", 0)
        assert len(got.fds) == 1 and got.fds[0] not in (r, w)
        assert_pipe_works(got.fds[0], r, b"through the received fd")
    finally:
        got.close_fds()


def test_received_fd_is_the_lowest_free(pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    a, b = pair
    r, w = pipe
    # The lowest fd free now, as the kernel's get_unused_fd_flags will pick it.
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    assert send_fds(a, [w]) == 1
    got = recv_fds(b, 1)
    try:
        assert got.fds == [probe]
    finally:
        got.close_fds()


def test_several_fds_in_one_message(pair: tuple[int, int]) -> None:
    a, b = pair
    pipes = [os.pipe() for _ in range(5)]
    try:
        assert send_fds(a, [w for _r, w in pipes], b"five") == 4
        got = recv_fds(b, 5)
        try:
            assert got.data == b"five" and got.flags == 0
            assert len(got.fds) == 5
            for i, ((r, _w), fd) in enumerate(zip(pipes, got.fds)):
                assert_pipe_works(fd, r, f"pipe {i}".encode())
        finally:
            got.close_fds()
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_several_scm_rights_headers(pair: tuple[int, int]) -> None:
    """Three SCM_RIGHTS headers in one message; the kernel delivers the fds in order."""
    a, b = pair
    pipes = [os.pipe() for _ in range(6)]
    try:
        writers = [w for _r, w in pipes]
        assert send_fds(a, writers, b"3h", groups=3) == 2
        got = recv_fds(b, 6)
        try:
            order = [writers[i::3] for i in range(3)]
            expected_readers = [pipes[writers.index(w)][0] for chunk in order for w in chunk]
            assert len(got.fds) == 6
            for fd, r in zip(got.fds, expected_readers):
                assert_pipe_works(fd, r, b"ok")
        finally:
            got.close_fds()
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_rights_and_credentials_headers(pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    """Sender adds SCM_CREDENTIALS after SCM_RIGHTS; receiver walks both headers."""
    a, b = pair
    r, w = pipe
    on = c_int(1)
    assert setsockopt(b, SOL_SOCKET, SO_PASSCRED, on, sizeof(on)) == 0
    data = bytearray(b"c")
    iov = iovec()
    iov.set_buffer(data)
    control = (c_ubyte * (CMSG_SPACE(sizeof(c_int)) + CMSG_SPACE(sizeof(ucred))))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int))
    cast(CMSG_DATA(cmsg), POINTER(c_int))[0] = w
    cmsg = CMSG_NXTHDR(msg, cmsg)
    assert cmsg is not None
    cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_CREDENTIALS
    cmsg.contents.cmsg_len = CMSG_LEN(sizeof(ucred))
    me = ucred(os.getpid(), os.getuid(), os.getgid())
    memmove(CMSG_DATA(cmsg), byref(me), sizeof(me))
    assert CMSG_NXTHDR(msg, cmsg) is None
    assert sendmsg(a, msg, 0) == 1
    got = recv_fds(b, 1, extra_control=CMSG_SPACE(sizeof(ucred)))
    try:
        assert got.flags == 0
        assert sorted(got.headers) == [(SOL_SOCKET, SCM_RIGHTS), (SOL_SOCKET, SCM_CREDENTIALS)]
        assert got.creds == [(os.getpid(), os.getuid(), os.getgid())]
        assert len(got.fds) == 1
        assert_pipe_works(got.fds[0], r, b"creds")
    finally:
        got.close_fds()


def test_across_fork(pair: tuple[int, int]) -> None:
    """The child makes a pipe, sends its write end and exits; the parent writes through it."""
    a, b = pair
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            close(b)
            fds = (c_int * 2)()
            if pipe2(fds, 0) == 0 and send_fds(a, [fds[1]], b"c") == 1:
                close(fds[1])
                # Wait for what the parent writes through the fd we sent, then check it.
                got = os.read(fds[0], 100)
                status = 0 if got == b"from the parent" else 2
        finally:
            os._exit(status)
    got = recv_fds(b, 1)
    try:
        assert got.data == b"c" and len(got.fds) == 1
        assert os.write(got.fds[0], b"from the parent") == len(b"from the parent")
    finally:
        got.close_fds()
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_fork_child_receives(pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    """The other direction: the parent sends, the child receives and writes through the fd."""
    a, b = pair
    r, w = pipe
    child = os.fork()
    if child == 0:  # pragma: no cover
        status = 1
        try:
            os.close(w)
            got = recv_fds(b, 1)
            if len(got.fds) == 1:
                os.write(got.fds[0], b"from the child")
                status = 0
        finally:
            os._exit(status)
    assert send_fds(a, [w]) == 1
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(r, 100) == b"from the child"


def test_msg_cmsg_cloexec(pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    a, b = pair
    _r, w = pipe
    assert send_fds(a, [w]) == 1
    assert send_fds(a, [w]) == 1
    plain = recv_fds(b, 1)
    cloexec = recv_fds(b, 1, flags=MSG_CMSG_CLOEXEC)
    try:
        assert fcntl.fcntl(plain.fds[0], fcntl.F_GETFD) & FD_CLOEXEC == 0
        assert fcntl.fcntl(cloexec.fds[0], fcntl.F_GETFD) & FD_CLOEXEC == FD_CLOEXEC
    finally:
        plain.close_fds()
        cloexec.close_fds()


def test_control_buffer_too_small_truncates(pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    """Room for fewer fds than sent: those that fit are installed and MSG_CTRUNC is set.

    CMSG_SPACE(sizeof(int)) is 24 bytes on LP64, so the kernel fits two fds in it.
    """
    a, b = pair
    _r, w = pipe
    fits = (CMSG_SPACE(sizeof(c_int)) - CMSG_LEN(0)) // sizeof(c_int)
    assert send_fds(a, [w] * (fits + 2)) == 1
    got = recv_fds(b, 1)
    try:
        assert got.flags & MSG_CTRUNC
        assert len(got.fds) == fits
    finally:
        got.close_fds()


def test_no_control_buffer_drops_fds(pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    a, b = pair
    _r, w = pipe
    before = set(os.listdir("/proc/self/fd"))
    assert send_fds(a, [w]) == 1
    got = recv_fds(b, 0)
    assert got.flags & MSG_CTRUNC and got.fds == [] and got.data == b"*"
    assert set(os.listdir("/proc/self/fd")) == before


def test_msg_peek_gives_clones(dgram_pair: tuple[int, int], pipe: tuple[int, int]) -> None:
    a, b = dgram_pair
    r, w = pipe
    assert send_fds(a, [w]) == 1
    peeked = recv_fds(b, 1, flags=MSG_PEEK)
    real = recv_fds(b, 1)
    try:
        assert len(peeked.fds) == 1 and len(real.fds) == 1
        assert peeked.fds != real.fds
        assert_pipe_works(peeked.fds[0], r, b"peek")
        assert_pipe_works(real.fds[0], r, b"real")
    finally:
        peeked.close_fds()
        real.close_fds()


def test_msg_trunc_on_a_long_datagram(dgram_pair: tuple[int, int]) -> None:
    a, b = dgram_pair
    assert send_fds(a, [], b"0123456789") == 10
    got = recv_fds(b, 0, bufsize=4)
    assert got.data == b"0123" and got.flags & MSG_TRUNC


def test_sendmmsg_recvmmsg(dgram_pair: tuple[int, int]) -> None:
    """Three datagrams with one fd each in one sendmmsg; one recvmmsg gets all three."""
    a, b = dgram_pair
    pipes = [os.pipe() for _ in range(3)]
    keep = []
    try:
        out = (mmsghdr * 3)()
        for i, (_r, w) in enumerate(pipes):
            payload = bytearray(f"m{i}".encode() * (i + 1))
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
            cast(CMSG_DATA(cmsg), POINTER(c_int))[0] = w
            keep.append(hdr)
        assert sendmmsg(a, out, 3, 0) == 3
        assert [out[i].msg_len for i in range(3)] == [2, 4, 6]

        into = (mmsghdr * 4)()
        buffers = [bytearray(16) for _ in range(4)]
        for i in range(4):
            iov = iovec()
            iov.set_buffer(buffers[i])
            into[i].msg_hdr.set_iov([iov])
            into[i].msg_hdr.set_control((c_ubyte * CMSG_SPACE(sizeof(c_int)))())
        # MSG_DONTWAIT: the three datagrams are queued already; a fourth is not waited for.
        assert recvmmsg(b, into, 4, MSG_DONTWAIT, None) == 3
        for i, (r, _w) in enumerate(pipes):
            hdr = into[i].msg_hdr
            assert into[i].msg_len == 2 * (i + 1)
            assert bytes(buffers[i][: into[i].msg_len]) == f"m{i}".encode() * (i + 1)
            cmsg = CMSG_FIRSTHDR(hdr)
            assert cmsg is not None and cmsg.contents.cmsg_type == SCM_RIGHTS
            fd = cast(CMSG_DATA(cmsg), POINTER(c_int))[0]
            try:
                assert_pipe_works(fd, r, b"mmsg")
            finally:
                os.close(fd)
        assert recvmmsg(b, into, 4, MSG_DONTWAIT, None) == -1
        assert get_errno() == errno.EAGAIN
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_msghdr_by_value_pointer_and_byref(dgram_pair: tuple[int, int],
                                           pipe: tuple[int, int]) -> None:
    """sendmsg takes msg, pointer(msg) or byref(msg), as C takes &msg."""
    a, b = dgram_pair
    _r, w = pipe
    data = bytearray(b"p")
    iov = iovec()
    iov.set_buffer(data)
    control = (c_ubyte * CMSG_SPACE(sizeof(c_int)))()
    msg = msghdr()
    msg.set_iov(iov)
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(byref(msg))
    assert cmsg is not None
    cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int))
    cast(CMSG_DATA(cmsg), POINTER(c_int))[0] = w
    for form in (msg, pointer(msg), byref(msg)):
        assert sendmsg(a, form, 0) == 1
        got = recv_fds(b, 1)
        assert len(got.fds) == 1
        got.close_fds()


def test_bad_fd_in_rights_is_ebadf(dgram_pair: tuple[int, int]) -> None:
    a, _b = dgram_pair
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    for bad in (-1, closed):
        assert send_fds(a, [bad]) == -1
        assert get_errno() == errno.EBADF


def test_cmsg_len_past_the_buffer_is_einval(dgram_pair: tuple[int, int],
                                            pipe: tuple[int, int]) -> None:
    a, _b = dgram_pair
    _r, w = pipe
    data = bytearray(b"e")
    iov = iovec()
    iov.set_buffer(data)
    control = (c_ubyte * CMSG_SPACE(sizeof(c_int)))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_RIGHTS
    cast(CMSG_DATA(cmsg), POINTER(c_int))[0] = w
    for bad_len in (0, CMSG_LEN(0) - 1, CMSG_SPACE(sizeof(c_int)) + 1):
        cmsg.contents.cmsg_len = bad_len
        assert sendmsg(a, msg, 0) == -1
        assert get_errno() == errno.EINVAL, bad_len
    assert ctypes.sizeof(control) == CMSG_SPACE(sizeof(c_int))
