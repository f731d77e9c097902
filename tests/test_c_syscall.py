"""libc's calls and the raw ``syscall`` path give the same results.

Every operation runs twice, once through rawsys's libc wrappers and once
through ``syscall(SYS_..., ...)``, on fresh but identical sockets; the return
value, ``errno``, the bytes received, ``msg_flags`` and the control headers
must be the same.  The syscall numbers are checked against <sys/syscall.h>.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import subprocess
from ctypes import POINTER, byref, c_char, c_int, c_ubyte, c_void_p, cast, sizeof
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from rawsys.c import syscalls
from rawsys.c.cmsg import CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE
from rawsys.c.constants import (
    AF_UNIX,
    MSG_DONTWAIT,
    MSG_PEEK,
    MSG_TRUNC,
    SCM_RIGHTS,
    SOCK_DGRAM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_SOCKET,
)
from rawsys.c.libc import (
    close,
    get_errno,
    recv,
    recvfrom,
    recvmmsg,
    recvmsg,
    send,
    sendmmsg,
    sendmsg,
    sendto,
    set_errno,
    socketpair,
)
from rawsys.c.structs import iovec, mmsghdr, msghdr
from rawsys.c.syscalls import (
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    syscall,
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")

Outcome = tuple[int, int]  # (return value, errno or 0)


def c_call(function: Callable[..., int], *args: Any) -> Outcome:
    """Call like C: clear errno first, read it only on failure."""
    set_errno(0)
    result = function(*args)
    return result, (get_errno() if result == -1 else 0)


# --- the two paths -----------------------------------------------------------------------


class LibcPath:
    name = "libc"

    def send(self, fd: Any, buf: Any, n: int, flags: int) -> Outcome:
        return c_call(send, fd, buf, n, flags)

    def recv(self, fd: Any, buf: Any, n: int, flags: int) -> Outcome:
        return c_call(recv, fd, buf, n, flags)

    def sendmsg(self, fd: Any, msg: msghdr, flags: int) -> Outcome:
        return c_call(sendmsg, fd, msg, flags)

    def recvmsg(self, fd: Any, msg: msghdr, flags: int) -> Outcome:
        return c_call(recvmsg, fd, msg, flags)

    def sendmmsg(self, fd: Any, vec: Any, n: int, flags: int) -> Outcome:
        return c_call(sendmmsg, fd, vec, n, flags)

    def recvmmsg(self, fd: Any, vec: Any, n: int, flags: int) -> Outcome:
        return c_call(recvmmsg, fd, vec, n, flags, None)


class RawPath:
    """No send/recv system calls on x86-64/aarch64: libc uses sendto/recvfrom with NULLs."""

    name = "syscall"

    def send(self, fd: Any, buf: Any, n: int, flags: int) -> Outcome:
        return c_call(syscall, SYS_sendto, fd, buf, n, flags, None, 0)

    def recv(self, fd: Any, buf: Any, n: int, flags: int) -> Outcome:
        return c_call(syscall, SYS_recvfrom, fd, buf, n, flags, None, None)

    def sendmsg(self, fd: Any, msg: msghdr, flags: int) -> Outcome:
        return c_call(syscall, SYS_sendmsg, fd, byref(msg), flags)

    def recvmsg(self, fd: Any, msg: msghdr, flags: int) -> Outcome:
        return c_call(syscall, SYS_recvmsg, fd, byref(msg), flags)

    def sendmmsg(self, fd: Any, vec: Any, n: int, flags: int) -> Outcome:
        return c_call(syscall, SYS_sendmmsg, fd, vec, n, flags)

    def recvmmsg(self, fd: Any, vec: Any, n: int, flags: int) -> Outcome:
        return c_call(syscall, SYS_recvmmsg, fd, vec, n, flags, None)


PATHS = [LibcPath(), RawPath()]


class Pair:
    def __init__(self, kind: int) -> None:
        sv = (c_int * 2)()
        assert socketpair(AF_UNIX, kind, 0, sv) == 0
        self.a, self.b = sv[0], sv[1]

    def close(self) -> None:
        close(self.a)
        close(self.b)


@pytest.fixture
def pairs() -> Iterator[Callable[[int], Pair]]:
    made: list[Pair] = []

    def make(kind: int = SOCK_DGRAM) -> Pair:
        made.append(Pair(kind))
        return made[-1]

    yield make
    for pair in made:
        pair.close()


def both_paths(scenario: Callable[[Any], object]) -> list[object]:
    """Run *scenario* once per path; return the results for comparison."""
    return [scenario(path) for path in PATHS]


# --- numbers -----------------------------------------------------------------------------


def c_numbers(build_c: Any) -> dict[str, int]:
    out = subprocess.run([build_c("sysnums.c")], capture_output=True, text=True,
                         check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_syscall_numbers_match_sys_syscall_h(build_c: Any) -> None:
    numbers = c_numbers(build_c)
    table = {name: value for name, value in numbers.items() if not name.startswith("SYS_")}
    assert syscalls.SYSCALLS == table
    for name, value in table.items():
        assert getattr(syscalls, f"SYS_{name}", value) == value


def test_socketcall_subcalls_match_linux_net_h(build_c: Any) -> None:
    numbers = c_numbers(build_c)
    subcalls = {name: value for name, value in numbers.items() if name.startswith("SYS_")}
    assert len(subcalls) == 20
    for name, value in subcalls.items():
        assert getattr(syscalls, name) == value, name
    assert syscalls.SYS_RECV == 10


def _header_numbers(path: Path) -> dict[str, int]:
    text = path.read_text()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^#define __NR_(\w+)\s+(\d+)\s*$", text, re.M)}


@pytest.mark.parametrize(("arch", "header"), [
    ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    ("aarch64", "/usr/include/asm-generic/unistd.h"),
])
def test_both_tables_match_the_kernel_headers(arch: str, header: str) -> None:
    """Also the table of the architecture we are not running on, from its header."""
    path = Path(header)
    if not path.is_file():
        pytest.skip(f"{header} not installed")
    numbers = _header_numbers(path)
    table = syscalls.SYSCALL_TABLES[arch]
    assert {name: numbers.get(name) for name in table} == table


def test_i386_socketcall_number() -> None:
    path = Path("/usr/include/x86_64-linux-gnu/asm/unistd_32.h")
    if not path.is_file():
        pytest.skip("i386 syscall header not installed")
    assert _header_numbers(path)["socketcall"] == syscalls.SYS_socketcall_i386


# --- same results ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [SOCK_DGRAM, SOCK_STREAM, SOCK_SEQPACKET])
@pytest.mark.parametrize("flags", [0, MSG_PEEK, MSG_DONTWAIT])
def test_send_and_recv(pairs: Callable[[int], Pair], kind: int, flags: int) -> None:
    def scenario(path: Any) -> object:
        pair = pairs(kind)
        payload = bytearray(b"identical results")
        sent = path.send(pair.a, payload, len(payload), 0)
        buf = bytearray(64)
        got = path.recv(pair.b, buf, 10, flags)
        got_again = path.recv(pair.b, buf, 64, MSG_DONTWAIT)
        empty = path.recv(pair.b, buf, 64, MSG_DONTWAIT)
        return sent, got, got_again, bytes(buf), empty

    libc, raw = both_paths(scenario)
    assert libc == raw
    assert libc[-1] == (-1, errno.EAGAIN)  # type: ignore[index]


def test_recv_msg_trunc_reports_the_real_length(pairs: Callable[[int], Pair]) -> None:
    def scenario(path: Any) -> object:
        pair = pairs(SOCK_DGRAM)
        path.send(pair.a, b"0123456789", 10, 0)
        buf = bytearray(4)
        return path.recv(pair.b, buf, 4, MSG_TRUNC), bytes(buf)

    libc, raw = both_paths(scenario)
    assert libc == raw == ((10, 0), b"0123")


def _fd_message(fds: list[int], data: bytes) -> msghdr:
    buf = bytearray(data)
    iov = iovec()
    iov.set_buffer(buf)
    control = (c_ubyte * CMSG_SPACE(len(fds) * sizeof(c_int)))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(len(fds) * sizeof(c_int))
    array = (c_int * len(fds))(*fds)
    ctypes.memmove(CMSG_DATA(cmsg), array, sizeof(array))
    return msg


def _receive_summary(msg: msghdr, buf: bytearray, n: int) -> object:
    """What recvmsg produced; received fds are written through and closed."""
    headers = []
    cmsg = CMSG_FIRSTHDR(msg)
    while cmsg is not None:
        h = cmsg.contents
        fds = []
        if (h.cmsg_level, h.cmsg_type) == (SOL_SOCKET, SCM_RIGHTS):
            data = cast(CMSG_DATA(cmsg), POINTER(c_int))
            for i in range((h.cmsg_len - CMSG_LEN(0)) // sizeof(c_int)):
                fds.append(os.write(data[i], b"!"))  # 1 if the fd works
                os.close(data[i])
        headers.append((h.cmsg_len, h.cmsg_level, h.cmsg_type, fds))
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return bytes(buf[: max(n, 0)]), msg.msg_flags, msg.msg_controllen, headers


@pytest.mark.parametrize("kind", [SOCK_DGRAM, SOCK_STREAM, SOCK_SEQPACKET])
@pytest.mark.parametrize("room", [3, 1, 0])
def test_sendmsg_and_recvmsg_with_fds(pairs: Callable[[int], Pair], kind: int,
                                      room: int) -> None:
    r, w = os.pipe()
    try:
        def scenario(path: Any) -> object:
            pair = pairs(kind)
            sent = path.sendmsg(pair.a, _fd_message([w, w, w], b"fds"), 0)
            buf = bytearray(16)
            iov = iovec()
            iov.set_buffer(buf)
            msg = msghdr()
            msg.set_iov([iov])
            msg.set_control((c_ubyte * CMSG_SPACE(room * sizeof(c_int)))() if room else None)
            got = path.recvmsg(pair.b, msg, 0)
            summary = _receive_summary(msg, buf, got[0])
            # Each fd received wrote one "!" into the pipe.
            expected = sum(sum(h[3]) for h in summary[3])  # type: ignore[index]
            written = os.read(r, 10) if expected else b""
            return sent, got, summary, written

        libc, raw = both_paths(scenario)
        assert libc == raw
    finally:
        os.close(r)
        os.close(w)


def test_sendmmsg_and_recvmmsg(pairs: Callable[[int], Pair]) -> None:
    def scenario(path: Any) -> object:
        pair = pairs(SOCK_DGRAM)
        out = (mmsghdr * 3)()
        for i in range(3):
            iov = iovec()
            iov.set_buffer(bytearray(b"x" * (i + 1)))
            out[i].msg_hdr.set_iov([iov])
        sent = path.sendmmsg(pair.a, out, 3, 0)
        into = (mmsghdr * 4)()
        bufs = [bytearray(8) for _ in range(4)]
        for i in range(4):
            iov = iovec()
            iov.set_buffer(bufs[i])
            into[i].msg_hdr.set_iov([iov])
        got = path.recvmmsg(pair.b, into, 4, MSG_DONTWAIT)
        return (sent, [out[i].msg_len for i in range(3)], got,
                [into[i].msg_len for i in range(4)], [bytes(b) for b in bufs])

    libc, raw = both_paths(scenario)
    assert libc == raw
    assert libc[2] == (3, 0)  # type: ignore[index]


# --- same failures --------------------------------------------------------------------------


def _closed_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


FAILURES: dict[str, tuple[Callable[[Any, Callable[[int], Pair]], Outcome], int]] = {
    "recv on a closed fd": (
        lambda p, pairs: p.recv(_closed_fd(), bytearray(4), 4, 0), errno.EBADF),
    "recv on fd -1": (lambda p, pairs: p.recv(-1, bytearray(4), 4, 0), errno.EBADF),
    "send on a closed fd": (
        lambda p, pairs: p.send(_closed_fd(), b"abcd", 4, 0), errno.EBADF),
    "sendmsg on a closed fd": (
        lambda p, pairs: p.sendmsg(_closed_fd(), msghdr(), 0), errno.EBADF),
    "recvmsg on a closed fd": (
        lambda p, pairs: p.recvmsg(_closed_fd(), msghdr(), 0), errno.EBADF),
    "recvmmsg on a closed fd": (
        lambda p, pairs: p.recvmmsg(_closed_fd(), (mmsghdr * 1)(), 1, 0), errno.EBADF),
    "recv on a non-socket": (
        lambda p, pairs: _recv_on_a_pipe(p), errno.ENOTSOCK),
    "recv with nothing queued": (
        lambda p, pairs: p.recv(pairs(SOCK_DGRAM).b, bytearray(4), 4, MSG_DONTWAIT),
        errno.EAGAIN),
    "recv into an unmapped address": (
        lambda p, pairs: _recv_efault(p, pairs), errno.EFAULT),
    "sendmsg with an fd that is closed": (
        lambda p, pairs: p.sendmsg(pairs(SOCK_DGRAM).a, _fd_message([_closed_fd()], b"x"), 0),
        errno.EBADF),
    "sendmsg with cmsg_len past the buffer": (
        lambda p, pairs: p.sendmsg(pairs(SOCK_DGRAM).a, _bad_len_message(), 0), errno.EINVAL),
    "sendmsg with SCM_MAX_FD + 1 fds": (
        lambda p, pairs: p.sendmsg(pairs(SOCK_DGRAM).a, _fd_message([0] * 254, b"x"), 0),
        errno.EINVAL),
}


def _recv_on_a_pipe(path: Any) -> Outcome:
    r, w = os.pipe()
    try:
        return path.recv(r, bytearray(4), 4, MSG_DONTWAIT)  # type: ignore[no-any-return]
    finally:
        os.close(r)
        os.close(w)


def _recv_efault(path: Any, pairs: Callable[[int], Pair]) -> Outcome:
    pair = pairs(SOCK_DGRAM)
    assert os.write(pair.a, b"data") == 4
    return path.recv(pair.b, c_void_p(8), 4, 0)  # a bare pointer is passed as C would


def _bad_len_message() -> msghdr:
    msg = _fd_message([0], b"x")
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_len = msg.msg_controllen + 1
    return msg


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_failures_give_the_same_errno(pairs: Callable[[int], Pair], case: str) -> None:
    operation, expected = FAILURES[case]
    libc, raw = both_paths(lambda path: operation(path, pairs))
    assert libc == raw == (-1, expected)


def test_errno_is_left_alone_on_success(pairs: Callable[[int], Pair]) -> None:
    """Like C, a successful call does not clear a stale errno, on either path."""
    calls: list[Callable[[int], int]] = [
        lambda fd: send(fd, b"ok", 2, 0),
        lambda fd: syscall(SYS_sendto, fd, b"ok", 2, 0, None, 0),
    ]
    for call in calls:
        pair = pairs(SOCK_DGRAM)
        set_errno(errno.EIO)
        assert call(pair.a) == 2
        assert get_errno() == errno.EIO


def test_syscall_accepts_fileno_objects_and_buffers(pairs: Callable[[int], Pair]) -> None:
    pair = pairs(SOCK_DGRAM)
    with os.fdopen(os.dup(pair.a), "wb", buffering=0) as sender:
        assert syscall(SYS_sendto, sender, b"file object", 11, 0, None, 0) == 11
    buf = (c_char * 32)()
    assert syscall(SYS_recvfrom, pair.b, buf, 32, 0, None, None) == 11
    assert buf.value == b"file object"


def test_recvfrom_with_address_is_the_same(pairs: Callable[[int], Pair]) -> None:
    """recvfrom/sendto with real address arguments on both paths."""
    from rawsys.c.structs import sockaddr_un, socklen_t

    def scenario(path: Any) -> object:
        pair = pairs(SOCK_DGRAM)
        if path.name == "libc":
            sent = c_call(sendto, pair.a, b"addr", 4, 0, None, 0)
        else:
            sent = c_call(syscall, SYS_sendto, pair.a, b"addr", 4, 0, None, 0)
        buf = bytearray(8)
        addr = sockaddr_un()
        addrlen = socklen_t(sizeof(addr))
        if path.name == "libc":
            got = c_call(recvfrom, pair.b, buf, 8, 0, addr, byref(addrlen))
        else:
            got = c_call(syscall, SYS_recvfrom, pair.b, buf, 8, 0, addr, byref(addrlen))
        return sent, got, bytes(buf), addr.sun_family, addrlen.value

    libc, raw = both_paths(scenario)
    assert libc == raw
