"""Every way a buffer reaches a structure keeps it alive or is refused.

ctypes copies structures byte for byte (``(iovec * 1)(iov)``, ``arr[0] =
iov``, ``vec[0] = mm``) and gives no hook on the copy, so the C layer checks
at call time: ``sendmsg``/``recvmsg``/``sendmmsg``/``recvmmsg``/``send``/
``recv``/``read``/``write``/``memcpy``... hand the kernel (or libc) only
memory that a live object reachable from their arguments holds.  Each
scenario runs in a child interpreter under ``PYTHONMALLOC=debug -X dev``,
where a write into freed or foreign memory is caught by the debug allocator;
the child reports what each call returned, and the tests check it against
what C with these rules must give.  Every scenario crashed, sent foreign
bytes or wrote into an immutable object before these checks.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from ctypes import POINTER, addressof, byref, c_char, c_int, c_void_p, cast, pointer
from pathlib import Path
from typing import Any, Dict

import pytest

from rawsys.c import (
    MSG_DONTWAIT,
    SO_TYPE,
    SOL_SOCKET,
    get_errno,
    getsockopt,
    iovec,
    mmsghdr,
    msghdr,
    recvfrom,
    recvmmsg,
    sendmsg,
    sockaddr_un,
    socklen_t,
    timespec,
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")

SCENARIOS = r'''
import ctypes, errno, gc, json, os, sys, weakref
from ctypes import c_char_p
from rawsys.c import *
from rawsys.c.syscalls import SYS_recvmsg, SYS_sendmsg, syscall

results = {}
sv = (c_int * 2)()
assert socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) == 0
a, b = sv[0], sv[1]


def churn():
    """Free, then reuse freed memory with junk the debug allocator would notice."""
    gc.collect()
    junk = [bytearray(b"\xee" * n) for n in range(1, 600)]
    junk += [(c_char * n)() for n in range(1, 200)]
    del junk
    gc.collect()


def drain():
    got = []
    while True:
        try:
            got.append(os.read(b, 65536))
        except BlockingIOError:
            return got


def buffer(data):
    """A ctypes buffer holding *data*, and a weak reference to it."""
    buf = (c_char * len(data)).from_buffer_copy(data)
    return buf, weakref.ref(buf)


def scenario(function):
    drain()
    try:
        outcome = function()
    except Exception as exc:  # reported, checked by the tests
        outcome = {"raised": type(exc).__name__, "message": str(exc)}
    outcome = dict(outcome or {})
    outcome["queued"] = [chunk.decode("latin-1") for chunk in drain()]
    results[function.__name__] = outcome
    return function


def sent(n):
    return {"returned": n, "errno": get_errno() if n == -1 else 0}


def raw_address_msg(data):
    """A msghdr whose one iovec holds a bare address of *data*, and the buffer there.

    The buffer is alive (the caller holds it) but nothing in the msghdr refers to it.
    """
    iobuf = (c_char * len(data))(*data)
    io = iovec()
    io.iov_base = addressof(iobuf)
    io.iov_len = len(data)
    msg = msghdr()
    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    return msg, iobuf


@scenario
def array_of_a_copy():
    buf, alive = buffer(b"array copy")
    iov = iovec()
    iov.set_buffer(buf)
    del buf
    arr = (iovec * 1)(iov)
    del iov
    churn()
    msg = msghdr()
    msg.msg_iov = cast(arr, POINTER(iovec))
    msg.msg_iovlen = 1
    return {"alive": alive() is not None, **sent(sendmsg(a, msg, 0))}


@scenario
def item_assignment():
    buf, alive = buffer(b"item assignment")
    iov = iovec()
    iov.set_buffer(buf)
    del buf
    arr = (iovec * 2)()
    arr[1] = iov
    del iov
    churn()
    msg = msghdr()
    msg.set_iov(arr)
    return {"alive": alive() is not None, **sent(sendmsg(a, msg, 0))}


@scenario
def mmsghdr_item_assignment():
    buf, alive = buffer(b"mmsghdr copy")
    iov = iovec()
    iov.set_buffer(buf)
    mm = mmsghdr()
    mm.msg_hdr.set_iov([iov])
    del buf, iov
    vec = (mmsghdr * 1)()
    vec[0] = mm
    del mm
    churn()
    return {"alive": alive() is not None, **sent(sendmmsg(a, vec, 1, 0))}


@scenario
def set_buffer_after_set_iov():
    """msg.set_iov([iov]) copies the iovec: the copy keeps the first buffer."""
    first, alive = buffer(b"first buffer")
    iov = iovec()
    iov.set_buffer(first)
    msg = msghdr()
    msg.set_iov([iov])
    del first
    iov.set_buffer(bytearray(b"other"))
    churn()
    return {"alive": alive() is not None, **sent(sendmsg(a, msg, 0))}


@scenario
def recvmsg_after_set_buffer():
    """recvmsg writes into the buffer the msghdr's copy points at, still alive."""
    first, alive = buffer(bytes(16))
    iov = iovec()
    iov.set_buffer(first)
    msg = msghdr()
    msg.set_iov([iov])
    del first
    other = bytearray(16)
    iov.set_buffer(other)
    churn()
    os.write(a, b"into the first")
    n = recvmsg(b, msg, 0)
    kept = alive()
    return {"alive": kept is not None, "returned": n,
            "first": bytes(kept).decode() if kept is not None else None,
            "other": bytes(other).decode("latin-1")}


@scenario
def copy_that_lost_its_buffer():
    """A copy ctypes does not see (from_buffer_copy) of a dead iovec: EFAULT, not sent."""
    buf, alive = buffer(b"gone" * 256)  # malloc'd: not where the small clone will be
    iov = iovec()
    iov.set_buffer(buf)
    raw = bytes(iov)
    del iov, buf
    churn()
    clone = iovec.from_buffer_copy(raw)
    msg = msghdr()
    msg.msg_iov = pointer(clone)
    msg.msg_iovlen = 1
    return {"alive": alive() is not None, **sent(sendmsg(a, msg, 0))}


@scenario
def item_copy_then_repointed():
    """arr[0] = iov shares iov's keep; re-pointing iov drops it: refused, not sent."""
    buf, alive = buffer(b"old" * 300)
    iov = iovec()
    iov.set_buffer(buf)
    arr = (iovec * 1)()
    arr[0] = iov
    del buf
    iov.set_buffer(bytearray(b"new"))
    churn()
    msg = msghdr()
    msg.set_iov(arr)
    return {"alive": alive() is not None, **sent(sendmsg(a, msg, 0))}


@scenario
def raw_address():
    msg, _iobuf = raw_address_msg(b"raw")
    return sent(sendmsg(a, msg, 0))


@scenario
def cast_address():
    """io.iov_base = cast(iobuf, c_void_p): ctypes keeps iobuf, so it is known."""
    iobuf = (c_char * 4)(*b"cast")
    io = iovec()
    io.iov_base = cast(iobuf, c_void_p)
    io.iov_len = 4
    msg = msghdr()
    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    return sent(sendmsg(a, msg, 0))


@scenario
def iov_len_past_the_buffer():
    iobuf = bytearray(b"short")
    io = iovec()
    io.set_buffer(iobuf)
    io.iov_len = 4096
    msg = msghdr()
    msg.set_iov(io)
    return sent(recvmsg(b, msg, 0))


@scenario
def send_c_char_p():
    return sent(send(a, c_char_p(b"hello world!"), 8, 0))


@scenario
def send_c_char_p_past_the_string():
    return sent(send(a, c_char_p(b"hello"), 64, 0))


@scenario
def recv_into_c_char_p():
    os.write(a, b"must stay queued")
    text = c_char_p(b"hello")
    n = recv(b, text, 8, 0)
    return {"returned": n, "value": text.value.decode()}


@scenario
def recv_negative_byref_offset():
    os.write(a, b"must stay queued")
    buf = (c_char * 128)()
    return sent(recv(b, byref(buf, -64), 64, 0))


@scenario
def recv_pointer_past_the_object():
    os.write(a, b"must stay queued")
    return sent(recv(b, pointer(c_int()), 64, 0))


@scenario
def recv_pointer_within_the_object():
    os.write(a, b"abcd")
    target = c_int()
    n = recv(b, pointer(target), 4, 0)
    return {"returned": n, "value": target.value}


@scenario
def recvmsg_into_bytes_through_pointer():
    os.write(a, b"must stay queued")
    constant = b"q"
    iov = iovec()
    iov.set_buffer(constant)
    msg = msghdr()
    msg.msg_iov = pointer(iov)
    msg.msg_iovlen = 1
    n = recvmsg(b, msg, 0)
    return {"returned": n, "q": bytes([113]).decode()}


@scenario
def recvmmsg_into_bytes_through_copy():
    os.write(a, b"must stay queued")
    iov = iovec()
    iov.set_buffer(b"immutable")
    mm = mmsghdr()
    mm.msg_hdr.msg_iov = pointer(iov)
    mm.msg_hdr.msg_iovlen = 1
    vec = (mmsghdr * 1)(mm)
    return sent(recvmmsg(b, vec, 1, 0, None))


@scenario
def recvmsg_name_into_bytes():
    os.write(a, b"must stay queued")
    msg = msghdr()
    msg.set_name(bytes(110))
    data = bytearray(32)
    iov = iovec()
    iov.set_buffer(data)
    msg.set_iov(iov)
    return sent(recvmsg(b, msg, 0))


@scenario
def syscall_recvmsg_into_bytes():
    os.write(a, b"must stay queued")
    iov = iovec()
    iov.set_buffer(b"q")
    msg = msghdr()
    msg.set_iov(iov)
    return sent(syscall(SYS_recvmsg, b, byref(msg), 0))


@scenario
def syscall_sendmsg_raw_address():
    msg, _iobuf = raw_address_msg(b"raw")
    return sent(syscall(SYS_sendmsg, a, byref(msg), 0))


@scenario
def memcpy_past_the_destination():
    dest = (c_char * 4)()
    return {"returned": memcpy(dest, b"12345678", 8)}


@scenario
def memcpy_into_bytes():
    return {"returned": memcpy(b"abcd", bytearray(b"wxyz"), 4)}


@scenario
def memset_through_cmsg_data():
    control = (c_ubyte * CMSG_SPACE(4))()
    msg = msghdr()
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    memset(CMSG_DATA(cmsg), 0x41, 4)
    inside = bytes(control[16:20])
    try:
        memset(CMSG_DATA(cmsg), 0x42, 64)
    except ValueError as exc:
        return {"inside": inside.decode(), "past": type(exc).__name__}
    return {"inside": inside.decode(), "past": "nothing"}


@scenario
def memcpy_from_a_raw_address():
    dest = (c_char * 4)()
    return {"returned": memcpy(dest, c_void_p(addressof(dest)), 4)}


json.dump(results, sys.stdout)
'''


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Dict[str, Any]]:
    script = tmp_path_factory.mktemp("graphs") / "scenarios.py"
    script.write_text(SCENARIOS)
    env = dict(os.environ, PYTHONMALLOC="debug")
    result = subprocess.run([sys.executable, "-X", "dev", str(script)], capture_output=True,
                            text=True, env=env, stdin=subprocess.DEVNULL, check=False,
                            timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    found: Dict[str, Dict[str, Any]] = json.loads(result.stdout)
    return found


EFAULT = errno.EFAULT
STILL_QUEUED = ["must stay queued"]


def test_an_array_made_from_a_copy_keeps_the_buffer(outcomes: Dict[str, Any]) -> None:
    assert outcomes["array_of_a_copy"] == {
        "alive": True, "returned": 10, "errno": 0, "queued": ["array copy"]}


def test_item_assignment_keeps_the_buffer(outcomes: Dict[str, Any]) -> None:
    assert outcomes["item_assignment"] == {
        "alive": True, "returned": 15, "errno": 0, "queued": ["item assignment"]}


def test_mmsghdr_item_assignment_keeps_the_buffer(outcomes: Dict[str, Any]) -> None:
    assert outcomes["mmsghdr_item_assignment"] == {
        "alive": True, "returned": 1, "errno": 0, "queued": ["mmsghdr copy"]}


def test_set_iov_copies_keep_the_first_buffer(outcomes: Dict[str, Any]) -> None:
    assert outcomes["set_buffer_after_set_iov"] == {
        "alive": True, "returned": 12, "errno": 0, "queued": ["first buffer"]}
    assert outcomes["recvmsg_after_set_buffer"] == {
        "alive": True, "returned": 14, "first": "into the first\x00\x00",
        "other": "\x00" * 16, "queued": []}


def test_copies_that_lost_their_buffer_are_efault(outcomes: Dict[str, Any]) -> None:
    for name in ("copy_that_lost_its_buffer", "item_copy_then_repointed"):
        assert outcomes[name] == {"alive": False, "returned": -1, "errno": EFAULT,
                                  "queued": []}, name


def test_a_bare_address_is_efault_and_a_cast_is_known(outcomes: Dict[str, Any]) -> None:
    assert outcomes["raw_address"] == {"returned": -1, "errno": EFAULT, "queued": []}
    assert outcomes["cast_address"] == {"returned": 4, "errno": 0, "queued": ["cast"]}


def test_iov_len_past_the_buffer_is_refused(outcomes: Dict[str, Any]) -> None:
    outcome = outcomes["iov_len_past_the_buffer"]
    assert outcome["raised"] == "BufferOverflowDetected"
    assert "msg.msg_iov[0].iov_base" in outcome["message"]


def test_c_char_p_is_the_string(outcomes: Dict[str, Any]) -> None:
    assert outcomes["send_c_char_p"] == {"returned": 8, "errno": 0, "queued": ["hello wo"]}
    assert outcomes["send_c_char_p_past_the_string"]["raised"] == "BufferOverflowDetected"
    refused = outcomes["recv_into_c_char_p"]
    assert refused["raised"] == "TypeError" and "c_char_p" in refused["message"]
    assert refused["queued"] == STILL_QUEUED


def test_byref_and_pointer_are_bounded_by_their_object(outcomes: Dict[str, Any]) -> None:
    negative = outcomes["recv_negative_byref_offset"]
    assert negative["raised"] == "ValueError" and "negative" in negative["message"]
    assert negative["queued"] == STILL_QUEUED
    past = outcomes["recv_pointer_past_the_object"]
    assert past["raised"] == "BufferOverflowDetected" and past["queued"] == STILL_QUEUED
    assert outcomes["recv_pointer_within_the_object"] == {
        "returned": 4, "value": int.from_bytes(b"abcd", sys.byteorder), "queued": []}


@pytest.mark.parametrize("name", ["recvmsg_into_bytes_through_pointer",
                                  "recvmmsg_into_bytes_through_copy",
                                  "recvmsg_name_into_bytes", "syscall_recvmsg_into_bytes"])
def test_immutable_buffers_are_never_written(outcomes: Dict[str, Any], name: str) -> None:
    outcome = outcomes[name]
    assert outcome["raised"] == "TypeError", outcome
    assert "read-only" in outcome["message"]
    assert outcome["queued"] == STILL_QUEUED


def test_syscall_walks_the_msghdr_too(outcomes: Dict[str, Any]) -> None:
    assert outcomes["syscall_sendmsg_raw_address"] == {
        "returned": -1, "errno": EFAULT, "queued": []}


def test_memcpy_and_memset_are_bounds_checked(outcomes: Dict[str, Any]) -> None:
    assert outcomes["memcpy_past_the_destination"]["raised"] == "BufferOverflowDetected"
    assert outcomes["memcpy_into_bytes"]["raised"] == "TypeError"
    assert outcomes["memset_through_cmsg_data"] == {
        "inside": "AAAA", "past": "BufferOverflowDetected", "queued": []}
    assert outcomes["memcpy_from_a_raw_address"]["raised"] == "UnknownMemory"


# --- in-process checks of the pointer arguments the kernel writes through -------------

NOWHERE = 8  # an address no object holds (the zero page)


def test_dangling_length_pointers_are_efault(c_dgram: tuple[int, int]) -> None:
    """recvfrom/getsockopt/accept4 read and write *addrlen: never through a stray pointer."""
    a, b = c_dgram
    os.write(a, b"queued")
    stray = cast(c_void_p(NOWHERE), POINTER(socklen_t))
    assert recvfrom(b, bytearray(8), 8, MSG_DONTWAIT, sockaddr_un(), stray) == -1
    assert get_errno() == EFAULT
    assert getsockopt(b, SOL_SOCKET, SO_TYPE, c_int(), stray) == -1
    assert get_errno() == EFAULT
    assert os.read(b, 100) == b"queued"


def test_dangling_timeout_is_efault(c_dgram: tuple[int, int]) -> None:
    """recvmmsg writes the time left into *timeout: a stray one is refused."""
    a, b = c_dgram
    os.write(a, b"queued")
    vec = (mmsghdr * 1)()
    buf = bytearray(8)
    iov = iovec()
    iov.set_buffer(buf)
    vec[0].msg_hdr.set_iov(iov)
    stray = cast(c_void_p(NOWHERE), POINTER(timespec))
    assert recvmmsg(b, vec, 1, MSG_DONTWAIT, stray) == -1
    assert get_errno() == EFAULT
    assert os.read(b, 100) == b"queued"
    good = timespec(1, 0)
    os.write(a, b"now")
    assert recvmmsg(b, vec, 1, MSG_DONTWAIT, good) == 1
    assert bytes(buf[:3]) == b"now"


def test_every_form_of_the_msghdr_argument_is_walked(c_dgram: tuple[int, int]) -> None:
    """msg, byref(msg), pointer(msg), an mmsghdr's msg_hdr view: all checked."""
    a, b = c_dgram
    iobuf = (c_char * 3).from_buffer_copy(b"raw")
    io = iovec()
    io.iov_base = addressof(iobuf)
    io.iov_len = 3
    msg = msghdr()
    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    vec = (mmsghdr * 2)()
    vec[1].msg_hdr.msg_iov = pointer(io)
    vec[1].msg_hdr.msg_iovlen = 1
    for form in (msg, byref(msg), pointer(msg), vec[1].msg_hdr, byref(vec[1].msg_hdr)):
        assert sendmsg(a, form, 0) == -1, form
        assert get_errno() == EFAULT
    io.set_buffer(iobuf)
    for form in (msg, byref(msg), pointer(msg), vec[1].msg_hdr, byref(vec[1].msg_hdr)):
        assert sendmsg(a, form, 0) == 3, form
        assert os.read(b, 10) == b"raw"


def test_memmove_into_cmsg_data_of_a_from_buffer_header() -> None:
    """CMSG_DATA of ``cmsghdr.from_buffer(buf, offset)`` is bounded by *buf*, not the header."""
    from ctypes import c_ubyte

    from rawsys.c import CMSG_DATA, CMSG_LEN, CMSG_SPACE, BufferOverflowDetected, cmsghdr, memmove

    buf = (c_ubyte * (2 * CMSG_SPACE(4)))()
    hdr = cmsghdr.from_buffer(buf, CMSG_SPACE(4))
    hdr.cmsg_len = CMSG_LEN(4)
    memmove(CMSG_DATA(hdr), b"\x01\x02\x03\x04", 4)
    assert bytes(buf[CMSG_SPACE(4) + CMSG_LEN(0):][:4]) == b"\x01\x02\x03\x04"
    with pytest.raises(BufferOverflowDetected):
        memmove(CMSG_DATA(hdr), bytes(9), 9)  # 8 bytes of buf follow the header
