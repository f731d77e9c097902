"""What the C layer does with sizes, types and fds it is handed.

Where a Python buffer's size is known, a length past its end is refused with
``BufferOverflowDetected`` *before* the call (the check glibc's ``__recv_chk``
makes); the tests prove no call happened by checking the data is still queued.
Read-only buffers are refused where the kernel would write; wrong types raise
``TypeError``/``ValueError``/``OverflowError``; nasty inputs run in a
subprocess that must exit normally.  ``errno``, ``strerror`` and ``perror``
are compared with C's.
"""

from __future__ import annotations

import array
import ctypes
import errno
import mmap
import os
import socket as pysocket
import subprocess
import sys
import threading
from ctypes import POINTER, byref, c_char, c_int, c_ubyte, c_void_p, cast, pointer, sizeof
from typing import Any, Callable, Iterator

import pytest

from rawsys.c.buffers import BufferOverflowDetected, buffer_pointer
from rawsys.c.cmsg import CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE
from rawsys.c.constants import (
    AF_UNIX,
    MSG_DONTWAIT,
    SO_PASSCRED,
    SO_TYPE,
    SOCK_DGRAM,
    SOL_SOCKET,
)
from rawsys.c.libc import (
    close,
    get_errno,
    getsockopt,
    perror,
    pipe2,
    read,
    recv,
    recvfrom,
    recvmmsg,
    recvmsg,
    send,
    sendmmsg,
    sendmsg,
    sendto,
    set_errno,
    setsockopt,
    socket,
    socketpair,
    strerror,
    write,
)
from rawsys.c.structs import cmsghdr, iovec, mmsghdr, msghdr, sockaddr_un, socklen_t

pytestmark = pytest.mark.usefixtures("fd_leak_check")


@pytest.fixture
def dgram() -> Iterator[tuple[int, int]]:
    sv = (c_int * 2)()
    assert socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0
    yield sv[0], sv[1]
    close(sv[0])
    close(sv[1])


def still_queued(sock: int, expected: bytes) -> bool:
    return os.read(sock, 100) == expected


# --- lengths past the end of the buffer ---------------------------------------------------


SIZED_BUFFERS: dict[str, Callable[[], Any]] = {
    "bytearray": lambda: bytearray(8),
    "ctypes array": lambda: (c_char * 8)(),
    "ctypes int array": lambda: (c_int * 2)(),
    "array.array": lambda: array.array("b", bytes(8)),
    "memoryview": lambda: memoryview(bytearray(8)),
    "byref at offset 4": lambda: byref((c_char * 12)(), 4),
}


@pytest.mark.parametrize("kind", sorted(SIZED_BUFFERS))
@pytest.mark.parametrize("call", ["recv", "read", "recvfrom"])
def test_reading_past_the_buffer_is_refused(dgram: tuple[int, int], kind: str,
                                            call: str) -> None:
    a, b = dgram
    assert os.write(a, b"queued") == 6
    buf = SIZED_BUFFERS[kind]()
    operations = {
        "recv": lambda: recv(b, buf, 9, 0),
        "read": lambda: read(b, buf, 9),
        "recvfrom": lambda: recvfrom(b, buf, 9, 0, None, None),
    }
    with pytest.raises(BufferOverflowDetected, match="buffer overflow detected"):
        operations[call]()
    assert still_queued(b, b"queued")


def test_exact_size_is_accepted(dgram: tuple[int, int]) -> None:
    a, b = dgram
    for kind, make in SIZED_BUFFERS.items():
        assert os.write(a, b"12345678") == 8
        assert recv(b, make(), 8, 0) == 8, kind


@pytest.mark.parametrize("call", ["send", "write", "sendto"])
def test_writing_past_the_buffer_is_refused(dgram: tuple[int, int], call: str) -> None:
    a, b = dgram
    data = b"abc"
    operations = {
        "send": lambda: send(a, data, 4, 0),
        "write": lambda: write(a, data, 4),
        "sendto": lambda: sendto(a, data, 4, 0, None, 0),
    }
    with pytest.raises(BufferOverflowDetected):
        operations[call]()
    assert recv(b, bytearray(8), 8, MSG_DONTWAIT) == -1 and get_errno() == errno.EAGAIN


def test_socket_options_past_the_value_are_refused(dgram: tuple[int, int]) -> None:
    a, _b = dgram
    value = c_int(1)
    with pytest.raises(BufferOverflowDetected):
        setsockopt(a, SOL_SOCKET, SO_PASSCRED, value, sizeof(value) + 1)
    with pytest.raises(BufferOverflowDetected):
        getsockopt(a, SOL_SOCKET, SO_TYPE, value, byref(socklen_t(sizeof(value) + 4)))
    length = socklen_t(sizeof(value))
    assert getsockopt(a, SOL_SOCKET, SO_TYPE, value, byref(length)) == 0
    assert value.value == SOCK_DGRAM


def test_recvfrom_address_past_the_struct_is_refused(dgram: tuple[int, int]) -> None:
    _a, b = dgram
    addr = sockaddr_un()
    with pytest.raises(BufferOverflowDetected):
        recvfrom(b, bytearray(4), 4, MSG_DONTWAIT, addr, byref(socklen_t(sizeof(addr) + 1)))


def test_helpers_refuse_lengths_past_the_buffer() -> None:
    with pytest.raises(BufferOverflowDetected):
        iovec().set_buffer(bytearray(3), 4)
    with pytest.raises(BufferOverflowDetected):
        msghdr().set_control((c_ubyte * 16)(), 17)
    iov = iovec()
    iov.set_buffer(bytearray(3), 2)
    assert iov.iov_len == 2


def test_int_arrays_too_small_are_refused() -> None:
    """socketpair/pipe2 write two ints: a single int, however passed, is refused."""
    for too_small in ((c_int * 1)(), byref(c_int()), pointer(c_int()), byref((c_int * 4)(), 12)):
        with pytest.raises(BufferOverflowDetected):
            pipe2(too_small, 0)
        with pytest.raises(BufferOverflowDetected):
            socketpair(AF_UNIX, SOCK_DGRAM, 0, too_small)
    # pointer into an array with room, as C would pass &fds[2]
    fds = (c_int * 4)()
    for room in (byref(fds, 8), cast(fds, POINTER(c_int))):
        assert pipe2(room, 0) == 0
    os.close(fds[0])
    os.close(fds[1])
    os.close(fds[2])
    os.close(fds[3])


def test_mmsg_vector_shorter_than_vlen_is_refused(dgram: tuple[int, int]) -> None:
    a, b = dgram
    vec = (mmsghdr * 2)()
    for bad in ((vec, 3), (byref(vec[1]), 2), (pointer(vec[1]), 2), (mmsghdr(), 2)):
        with pytest.raises(BufferOverflowDetected):
            sendmmsg(a, bad[0], bad[1], 0)
        with pytest.raises(BufferOverflowDetected):
            recvmmsg(b, bad[0], bad[1], MSG_DONTWAIT, None)


def test_pointers_into_unknown_memory_are_efault(dgram: tuple[int, int]) -> None:
    """A pointer no live object holds is not handed to the kernel: -1, EFAULT."""
    a, b = dgram
    assert os.write(a, b"x") == 1
    assert recv(b, c_void_p(8), 1, 0) == -1
    assert get_errno() == errno.EFAULT
    live = (c_char * 4)()
    set_errno(0)
    assert recv(b, c_void_p(ctypes.addressof(live)), 1, 0) == -1  # a bare address
    assert get_errno() == errno.EFAULT
    assert still_queued(b, b"x")


# --- resizing, read-only memory ------------------------------------------------------------


def test_bytearray_cannot_be_resized_while_pointed_at() -> None:
    buf = bytearray(b"pinned")
    iov = iovec()
    iov.set_buffer(buf)
    with pytest.raises(BufferError):
        buf.extend(b" and moved")
    with pytest.raises(BufferError):
        del buf[0:3]
    msg = msghdr()
    control = bytearray(32)
    msg.set_control(control)
    with pytest.raises(BufferError):
        control.clear()
    # Released when the structure lets go of it.
    msg.set_control(None)
    control.clear()
    del iov
    buf.extend(b"!")
    assert buf == bytearray(b"pinned!")


def test_read_only_buffers_are_refused_for_writes(dgram: tuple[int, int]) -> None:
    a, b = dgram
    assert os.write(a, b"must stay queued") == 16
    constant = b"immutable bytes!"
    for readonly in (constant, memoryview(constant)):
        with pytest.raises(TypeError):
            recv(b, readonly, 4, 0)
        with pytest.raises(TypeError):
            read(b, readonly, 4)
        with pytest.raises(TypeError):
            recvfrom(b, readonly, 4, 0, None, None)
        with pytest.raises(TypeError):
            getsockopt(b, SOL_SOCKET, SO_TYPE, readonly, byref(socklen_t(4)))
    # msghdr/iovec pointing at bytes are fine to send but refused by recvmsg/recvmmsg.
    iov = iovec()
    iov.set_buffer(constant)
    msg = msghdr()
    msg.set_iov([iov])
    for form in (msg, byref(msg), pointer(msg)):
        with pytest.raises(TypeError):
            recvmsg(b, form, 0)
    ctl = msghdr()
    ctl.set_control(bytes(CMSG_SPACE(4)))
    with pytest.raises(TypeError):
        recvmsg(b, ctl, 0)
    vec = (mmsghdr * 2)()
    vec[1].msg_hdr.set_iov([iov])
    with pytest.raises(TypeError):
        recvmmsg(b, vec, 2, 0, None)
    assert constant == b"immutable bytes!"
    assert still_queued(b, b"must stay queued")
    assert sendmsg(a, msg, 0) == len(constant)
    assert still_queued(b, constant)


# --- types ---------------------------------------------------------------------------------


BAD_CALLS: dict[str, tuple[Callable[[int], object], type[BaseException]]] = {
    "buffer is a str": (lambda fd: recv(fd, "abcd", 4, 0), TypeError),
    "buffer is an int": (lambda fd: recv(fd, 1234, 4, 0), TypeError),
    "buffer not contiguous": (lambda fd: recv(fd, memoryview(bytearray(8))[::2], 4, 0),
                              TypeError),
    "length is a float": (lambda fd: recv(fd, bytearray(4), 1.0, 0), TypeError),
    "length negative": (lambda fd: recv(fd, bytearray(4), -1, 0), ValueError),
    "length past size_t": (lambda fd: recv(fd, c_void_p(8), 2**64, 0), OverflowError),
    "fd is a str": (lambda fd: recv("3", bytearray(4), 1, 0), TypeError),
    "fd is None": (lambda fd: recv(None, bytearray(4), 1, 0), TypeError),
    "fd past int": (lambda fd: recv(2**32 + fd, bytearray(4), 1, 0), OverflowError),
    "flags is a str": (lambda fd: recv(fd, bytearray(4), 1, "x"), TypeError),
    "flags past int": (lambda fd: recv(fd, bytearray(4), 1, 2**40), OverflowError),
    "socket domain str": (lambda fd: socket("AF_UNIX", SOCK_DGRAM, 0), TypeError),
    "msg is a str": (lambda fd: sendmsg(fd, "msg", 0), TypeError),
    "msg is an int": (lambda fd: recvmsg(fd, 0, 0), TypeError),
    "sv is a list": (lambda fd: socketpair(AF_UNIX, SOCK_DGRAM, 0, [0, 0]), TypeError),
    "vlen negative": (lambda fd: sendmmsg(fd, (mmsghdr * 1)(), -1, 0), ValueError),
    "timeout is an int": (lambda fd: recvmmsg(fd, (mmsghdr * 1)(), 1, 0, 5), TypeError),
    "set_iov of ints": (lambda fd: msghdr().set_iov([1, 2]), TypeError),
    "set_iov of an int": (lambda fd: msghdr().set_iov(5), TypeError),
    "set_buffer str": (lambda fd: iovec().set_buffer("abc"), TypeError),
    "set_control str": (lambda fd: msghdr().set_control("abc"), TypeError),
    "FIRSTHDR of None": (lambda fd: CMSG_FIRSTHDR(None), TypeError),
    "FIRSTHDR of NULL": (lambda fd: CMSG_FIRSTHDR(POINTER(msghdr)()), ValueError),
    "NXTHDR of an int": (lambda fd: CMSG_NXTHDR(msghdr(), 5), TypeError),
    "NXTHDR of NULL": (lambda fd: CMSG_NXTHDR(msghdr(), POINTER(cmsghdr)()), ValueError),
    "DATA of None": (lambda fd: CMSG_DATA(None), TypeError),
    "perror of an int": (lambda fd: perror(5), TypeError),  # type: ignore[arg-type]
    "fileno() raises": (lambda fd: recv(BrokenFileno(), bytearray(1), 1, 0), ZeroDivisionError),
    "fileno() returns str": (lambda fd: recv(StrFileno(), bytearray(1), 1, 0), TypeError),
}


class BrokenFileno:
    def fileno(self) -> int:
        return 1 // 0


class StrFileno:
    def fileno(self) -> str:
        return "3"


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_wrong_types_raise(dgram: tuple[int, int], case: str) -> None:
    call, expected = BAD_CALLS[case]
    a, b = dgram
    assert os.write(a, b"q") == 1
    with pytest.raises(expected):
        call(b)
    assert still_queued(b, b"q")


NASTY_SCRIPT = r"""
import ctypes, gc, os, sys
from ctypes import *
from rawsys.c import *
from rawsys.c.buffers import buffer_pointer

sv = (c_int * 2)()
assert socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) == 0  # nothing may block
a, b = sv[0], sv[1]
nasty = [None, 0, -1, 2**31, 2**64, -(2**70), 1.5, "x", b"", b"abc", bytearray(), object(),
         [], {}, (c_int * 0)(), (c_char * 3)(), c_void_p(), POINTER(msghdr)(), msghdr(),
         cmsghdr(), iovec(), mmsghdr(), byref(c_int()), pointer(c_int()), memoryview(b"ro"),
         CMSG_DATA(cmsghdr()), True, NotImplemented, type]
calls = [recv, send, read, write, recvmsg, sendmsg, recvfrom, sendto, setsockopt, getsockopt,
         sendmmsg, recvmmsg, socketpair, pipe2, bind, connect, accept4, listen, shutdown,
         close, socket, CMSG_FIRSTHDR, CMSG_NXTHDR, CMSG_DATA, CMSG_LEN, CMSG_SPACE,
         CMSG_ALIGN, buffer_pointer]
arity = {recv: 4, send: 4, read: 3, write: 3, recvmsg: 3, sendmsg: 3, recvfrom: 6, sendto: 6,
         setsockopt: 5, getsockopt: 5, sendmmsg: 4, recvmmsg: 5, socketpair: 4, pipe2: 2,
         bind: 3, connect: 3, accept4: 4, listen: 2, shutdown: 2, close: 1, socket: 3,
         CMSG_FIRSTHDR: 1, CMSG_NXTHDR: 2, CMSG_DATA: 1, CMSG_LEN: 1, CMSG_SPACE: 1,
         CMSG_ALIGN: 1, buffer_pointer: 2}
fds_before = set(os.listdir("/proc/self/fd"))
tried = 0
for call in calls:
    for bad in nasty:
        for position in range(arity[call]):
            # A valid-looking base call, one argument replaced by something nasty;
            # the fd arguments stay on b with MSG_DONTWAIT so nothing blocks.
            args = [b, bytearray(8), 8, MSG_DONTWAIT, None, None][: arity[call]]
            if call in (close, shutdown, listen, socket, pipe2, socketpair, bind, connect,
                        accept4) and position == 0:
                continue  # closing/creating real fds is not the point here
            args[position] = bad
            tried += 1
            try:
                call(*args)
            except (TypeError, ValueError, OverflowError, BufferError):
                pass
            gc.collect()
print("survived", tried)
"""


def test_nasty_inputs_do_not_crash(tmp_path: Any) -> None:
    script = tmp_path / "nasty.py"
    script.write_text(NASTY_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("survived ")
    assert int(result.stdout.split()[1]) > 1000


# --- fd arguments ----------------------------------------------------------------------


def test_fd_arguments_accept_fileno_objects() -> None:
    left, right = pysocket.socketpair(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    with left, right:
        assert send(left, b"via socket objects", 18, 0) == 18
        buf = bytearray(32)
        assert recv(right, buf, 32, 0) == 18
        assert bytes(buf[:18]) == b"via socket objects"
        r, w = os.pipe()
        with os.fdopen(r, "rb", buffering=0) as reader, os.fdopen(w, "wb", buffering=0) as wr:
            assert write(wr, b"file objects", 12) == 12
            assert read(reader, buf, 12) == 12
            assert bytes(buf[:12]) == b"file objects"
        msg = msghdr()
        iov = iovec()
        iov.set_buffer(b"m")
        msg.set_iov([iov])
        assert sendmsg(left, msg, 0) == 1
        assert right.recv(1) == b"m"


# --- errno, strerror, perror ------------------------------------------------------------


ERRNO_C = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv)
{
    if (argc == 3) {  /* perror mode: ERRNO PREFIX ("-" for NULL) */
        errno = atoi(argv[1]);
        perror(strcmp(argv[2], "-") == 0 ? NULL : argv[2]);
        return 0;
    }
    for (int e = 0; e < 140; e++)
        printf("%d %s\n", e, strerror(e));
    return 0;
}
"""


def test_strerror_matches_c(build_c: Any) -> None:
    out = subprocess.run([build_c(ERRNO_C)], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        number, text = line.split(" ", 1)
        assert strerror(int(number)) == text


@pytest.mark.parametrize("prefix", ["recv", "", None, "with: colon"])
@pytest.mark.parametrize("err", [errno.EBADF, errno.EAGAIN, 0, 9999])
def test_perror_matches_c(build_c: Any, capsys: pytest.CaptureFixture[str],
                          prefix: str | None, err: int) -> None:
    exe = build_c(ERRNO_C)
    c_text = subprocess.run([exe, str(err), "-" if prefix is None else prefix],
                            capture_output=True, text=True, check=True).stderr
    set_errno(err)
    perror(prefix)
    assert capsys.readouterr().err == c_text


def test_errno_after_a_failed_call_is_the_kernels(dgram: tuple[int, int]) -> None:
    _a, b = dgram
    set_errno(0)
    assert recv(b, bytearray(1), 1, MSG_DONTWAIT) == -1
    assert get_errno() == errno.EAGAIN
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    assert close(closed) == -1
    assert get_errno() == errno.EBADF


def test_errno_is_per_thread(dgram: tuple[int, int]) -> None:
    _a, b = dgram
    set_errno(0)
    assert recv(b, bytearray(1), 1, MSG_DONTWAIT) == -1
    seen: list[int] = []

    def other() -> None:
        closed = os.open(os.devnull, os.O_RDONLY)
        os.close(closed)
        close(closed)
        seen.append(get_errno())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [errno.EBADF]
    assert get_errno() == errno.EAGAIN


def test_buffer_pointer_addresses_are_the_buffers() -> None:
    raw = (c_char * 8)(*b"abcdefgh")
    address, length, _keep = buffer_pointer(raw)
    assert (address, length) == (ctypes.addressof(raw), 8)
    address, length, keep = buffer_pointer(bytearray(b"xyz"))
    assert length == 3 and ctypes.string_at(address, 3) == b"xyz"
    address, length, _keep = buffer_pointer(byref(raw, 5))
    assert (address, length) == (ctypes.addressof(raw) + 5, 3)
    mapping = mmap.mmap(-1, 4096)
    address, length, keep = buffer_pointer(mapping, 10)
    assert length == 10
    del keep
    mapping.close()


def test_cmsg_nxthdr_outside_the_buffer_is_null() -> None:
    """A header pointer past the control buffer gives NULL without being read."""
    control = (c_ubyte * CMSG_SPACE(4))()
    msg = msghdr()
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_len = CMSG_LEN(4)
    outside = cast(c_void_p(ctypes.addressof(control) + sizeof(control)), POINTER(cmsghdr))
    assert CMSG_NXTHDR(msg, outside) is None
    unmapped = cast(c_void_p(16), POINTER(cmsghdr))
    assert CMSG_NXTHDR(msg, unmapped) is None
