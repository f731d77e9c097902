"""Buffers set through the helpers live as long as the structure.

Each test hands a buffer to ``iovec.set_buffer``/``msghdr.set_iov``/
``set_control``/``set_name``, drops every reference of its own, runs
``gc.collect()``, checks through a weak reference that the buffer is still
alive *before* anything touches the memory, and then sends through the
structure and checks the bytes arrive intact.
"""

from __future__ import annotations

import ctypes
import gc
import os
import socket
import weakref
from ctypes import POINTER, c_char, c_int, c_ubyte, cast, pointer, sizeof
from typing import Any, Iterator

import pytest

from rawsys.c.cmsg import CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_SPACE
from rawsys.c.constants import AF_UNIX, MSG_DONTWAIT, SCM_RIGHTS, SOCK_DGRAM, SOL_SOCKET
from rawsys.c.libc import close, recvmmsg, recvmsg, sendmmsg, sendmsg, socketpair
from rawsys.c.structs import iovec, mmsghdr, msghdr

pytestmark = pytest.mark.usefixtures("fd_leak_check")

PAYLOAD = b"survives the garbage collector"


@pytest.fixture
def dgram_pair() -> Iterator[tuple[int, int]]:
    sv = (c_int * 2)()
    assert socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0
    yield sv[0], sv[1]
    close(sv[0])
    close(sv[1])


def churn() -> None:
    """Collect, then allocate and free enough to reuse freed memory."""
    gc.collect()
    junk = [bytearray(b"\xee" * n) for n in range(1, 400)]
    junk += [(c_char * n)() for n in range(1, 400)]
    del junk
    gc.collect()


def filled_iovec(data: bytes) -> tuple[iovec, weakref.ref[Any]]:
    buf = (c_char * len(data)).from_buffer_copy(data)
    iov = iovec()
    iov.set_buffer(buf)
    return iov, weakref.ref(buf)


def recv_payload(sock: int) -> bytes:
    return os.read(sock, 100)  # read(2) on a datagram socket takes one datagram


def test_iovec_buffer_survives(dgram_pair: tuple[int, int]) -> None:
    a, b = dgram_pair
    iov, alive = filled_iovec(PAYLOAD)
    msg = msghdr()
    msg.set_iov([iov])
    del iov
    churn()
    assert alive() is not None
    assert sendmsg(a, msg, 0) == len(PAYLOAD)
    assert recv_payload(b) == PAYLOAD


def test_iovec_array_survives(dgram_pair: tuple[int, int]) -> None:
    """The array set_iov builds from a list is kept, not only the list's items."""
    a, b = dgram_pair
    msg = msghdr()
    iovs = [filled_iovec(PAYLOAD[:10]), filled_iovec(PAYLOAD[10:])]
    msg.set_iov([iov for iov, _ in iovs])
    alive = [ref for _, ref in iovs]
    del iovs
    churn()
    assert all(ref() is not None for ref in alive)
    assert sendmsg(a, msg, 0) == len(PAYLOAD)
    assert recv_payload(b) == PAYLOAD


def test_control_buffer_survives(dgram_pair: tuple[int, int]) -> None:
    a, b = dgram_pair
    r, w = os.pipe()
    try:
        msg = msghdr()
        iov, _ = filled_iovec(b"c")
        msg.set_iov([iov])
        control = (c_ubyte * CMSG_SPACE(sizeof(c_int)))()
        alive = weakref.ref(control)
        msg.set_control(control)
        cmsg = CMSG_FIRSTHDR(msg)
        assert cmsg is not None
        cmsg.contents.cmsg_level, cmsg.contents.cmsg_type = SOL_SOCKET, SCM_RIGHTS
        cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int))
        cast(CMSG_DATA(cmsg), POINTER(c_int))[0] = w
        del control, cmsg, iov
        churn()
        assert alive() is not None
        assert sendmsg(a, msg, 0) == 1
        with socket.socket(fileno=os.dup(b)) as receiver:
            data, fds, _flags, _addr = socket.recv_fds(receiver, 10, 1)
        try:
            assert data == b"c" and len(fds) == 1
            assert os.write(fds[0], b"w") == 1 and os.read(r, 1) == b"w"
        finally:
            for fd in fds:
                os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def test_mmsghdr_item_buffers_survive(dgram_pair: tuple[int, int]) -> None:
    """Helpers called on ``vec[i].msg_hdr`` (a temporary view) keep buffers for ``vec``."""
    a, b = dgram_pair
    out = (mmsghdr * 2)()
    refs = []
    for i in range(2):
        iov, ref = filled_iovec(PAYLOAD + bytes([48 + i]))
        out[i].msg_hdr.set_iov([iov])
        refs.append(ref)
    into = (mmsghdr * 2)()
    for i in range(2):
        buf = (c_char * 64)()
        refs.append(weakref.ref(buf))
        iov = iovec()
        iov.set_buffer(buf)
        into[i].msg_hdr.set_iov(iov)
        into[i].msg_hdr.set_control((c_ubyte * 64)())
    del iov, buf
    churn()
    assert all(ref() is not None for ref in refs)
    assert sendmmsg(a, out, 2, 0) == 2
    assert recvmmsg(b, into, 2, MSG_DONTWAIT, None) == 2
    for i in range(2):
        hdr = into[i].msg_hdr
        got = ctypes.string_at(hdr.msg_iov[0].iov_base, into[i].msg_len)
        assert got == PAYLOAD + bytes([48 + i])


def test_helpers_through_pointer_contents_keep_for_the_pointee(
        dgram_pair: tuple[int, int]) -> None:
    a, b = dgram_pair
    msg = msghdr()
    iov, alive = filled_iovec(PAYLOAD)
    pointer(msg).contents.set_iov([iov])
    del iov
    churn()
    assert alive() is not None
    assert sendmsg(a, msg, 0) == len(PAYLOAD)
    into = msghdr()
    buf = bytearray(64)
    riov = iovec()
    riov.set_buffer(buf)
    into.set_iov(riov)
    del riov
    churn()
    assert recvmsg(b, into, 0) == len(PAYLOAD)
    assert bytes(buf[: len(PAYLOAD)]) == PAYLOAD


def test_resetting_a_field_releases_the_old_buffer() -> None:
    msg = msghdr()
    first = (c_ubyte * 32)()
    alive = weakref.ref(first)
    msg.set_control(first)
    del first
    gc.collect()
    assert alive() is not None
    msg.set_control(None)
    gc.collect()
    assert alive() is None
    assert (msg.msg_control, msg.msg_controllen) == (None, 0)


def test_assigning_a_struct_field_copies_what_it_keeps(dgram_pair: tuple[int, int]) -> None:
    """``vec[0].msg_hdr = hdr`` as C writes it: the copy keeps hdr's buffers alive."""
    a, b = dgram_pair
    vec = (mmsghdr * 1)()
    hdr = msghdr()
    iov, alive = filled_iovec(PAYLOAD)
    hdr.set_iov([iov])
    vec[0].msg_hdr = hdr
    del hdr, iov
    churn()
    assert alive() is not None
    assert sendmmsg(a, vec, 1, 0) == 1
    assert recv_payload(b) == PAYLOAD
