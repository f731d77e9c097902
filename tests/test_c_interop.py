"""Passing fds between rawsys and a C program, both ways.

``tests/csrc/fdpass.c`` inherits one end of a socketpair (``pass_fds``) and
sends or receives descriptors the way C code does: one fd in a union-aligned
control buffer, or an array of fds ``memcpy``'d into one ``SCM_RIGHTS``
header.  The Python end uses rawsys only.  Every transfer is proven by data
written through the transferred descriptors.
"""

from __future__ import annotations

import os
import subprocess
from ctypes import POINTER, c_int, c_ubyte, cast, memmove, sizeof
from pathlib import Path
from typing import Any, Iterator

import pytest

from rawsys.c.cmsg import CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE
from rawsys.c.constants import (
    AF_UNIX,
    MSG_CTRUNC,
    SCM_RIGHTS,
    SOCK_DGRAM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_SOCKET,
)
from rawsys.c.libc import close, get_errno, recvmsg, sendmsg, socketpair
from rawsys.c.structs import iovec, msghdr

pytestmark = pytest.mark.usefixtures("fd_leak_check")

KINDS = {"DGRAM": SOCK_DGRAM, "STREAM": SOCK_STREAM, "SEQPACKET": SOCK_SEQPACKET}
TIMEOUT = 60  # only so a broken build cannot hang the run; nothing waits on time


@pytest.fixture(scope="module")
def fdpass(build_c: Any) -> Path:
    return build_c("fdpass.c")  # type: ignore[no-any-return]


@pytest.fixture(params=sorted(KINDS))
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    sv = (c_int * 2)()
    assert socketpair(AF_UNIX, KINDS[request.param], 0, sv) == 0
    yield sv[0], sv[1]
    close(sv[0])
    close(sv[1])


def start(fdpass: Path, mode: str, sock: int, arg: object) -> subprocess.Popen[str]:
    return subprocess.Popen([fdpass, mode, str(sock), str(arg)], pass_fds=[sock],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return out


def py_send_fds(sock: int, fds: list[int], data: bytes) -> int:
    buf = bytearray(data)
    iov = iovec()
    iov.set_buffer(buf)
    control = (c_ubyte * CMSG_SPACE(len(fds) * sizeof(c_int)))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_level = SOL_SOCKET
    cmsg.contents.cmsg_type = SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(len(fds) * sizeof(c_int))
    array = (c_int * len(fds))(*fds)
    memmove(CMSG_DATA(cmsg), array, sizeof(array))
    return sendmsg(sock, msg, 0)


def py_recv_fds(sock: int, maxfds: int) -> tuple[bytes, list[int], int]:
    buf = bytearray(64)
    iov = iovec()
    iov.set_buffer(buf)
    control = (c_ubyte * CMSG_SPACE(maxfds * sizeof(c_int)))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    n = recvmsg(sock, msg, 0)
    assert n >= 0, os.strerror(get_errno())
    fds: list[int] = []
    cmsg = CMSG_FIRSTHDR(msg)
    while cmsg is not None:
        if (cmsg.contents.cmsg_level, cmsg.contents.cmsg_type) == (SOL_SOCKET, SCM_RIGHTS):
            data = cast(CMSG_DATA(cmsg), POINTER(c_int))
            fds += [data[i] for i in range((cmsg.contents.cmsg_len - CMSG_LEN(0)) // 4)]
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return bytes(buf[:n]), fds, msg.msg_flags


def read_to_eof(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 256):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("count", [1, 4, 16])
def test_c_sends_python_receives(fdpass: Path, pair: tuple[int, int], count: int) -> None:
    """C sends pipe write ends.

    One with the classic send_fd of cmsg(3); several as an int array copied into CMSG_DATA.
    """
    py_end, c_end = pair
    proc = start(fdpass, "send", c_end, count)
    try:
        data, fds, flags = py_recv_fds(py_end, count)
        try:
            assert data == (b"1" if count == 1 else b"N") and flags == 0
            assert len(fds) == count
            for i, fd in enumerate(fds):
                assert os.write(fd, f"python wrote {i}".encode()) > 0
        finally:
            for fd in fds:
                os.close(fd)
    finally:
        out = finish(proc)
    assert out.splitlines() == [f"pipe {i}: python wrote {i}" for i in range(count)]


def test_c_sends_an_open_file(fdpass: Path, pair: tuple[int, int], tmp_path: Path) -> None:
    """The classic fd-passing program: the sender opens a file, the receiver reads it."""
    py_end, c_end = pair
    path = tmp_path / "hello.txt"
    path.write_bytes(b"content read through a descriptor C opened\n")
    proc = start(fdpass, "sendfile", c_end, path)
    data, fds, _flags = py_recv_fds(py_end, 1)
    try:
        assert data == b"1" and len(fds) == 1
        assert read_to_eof(fds[0]) == path.read_bytes()
    finally:
        for fd in fds:
            os.close(fd)
        out = finish(proc)
    assert out.startswith("sent fd ")


@pytest.mark.parametrize("count", [1, 4, 16])
def test_python_sends_c_receives(fdpass: Path, pair: tuple[int, int], count: int) -> None:
    py_end, c_end = pair
    pipes = [os.pipe() for _ in range(count)]
    try:
        assert py_send_fds(py_end, [w for _r, w in pipes], b"P") == 1
        for _r, w in pipes:  # in flight now: closing our copies is safe
            os.close(w)
        proc = start(fdpass, "recv", c_end, count)
        out = finish(proc)
        assert out.splitlines() == ["data P flags 0", f"received {count}"]
        for i, (r, _w) in enumerate(pipes):
            assert read_to_eof(r) == f"C{i}".encode()
    finally:
        for r, _w in pipes:
            os.close(r)


def test_c_sees_ctrunc_when_python_sends_too_many(fdpass: Path,
                                                  pair: tuple[int, int]) -> None:
    """C asks for room for 1 fd (CMSG_SPACE fits 2); Python sends 5: MSG_CTRUNC in C."""
    py_end, c_end = pair
    r, w = os.pipe()
    try:
        assert py_send_fds(py_end, [w] * 5, b"T") == 1
        os.close(w)
        out = finish(start(fdpass, "recv", c_end, 1))
        lines = out.splitlines()
        assert lines[0] == f"data T flags {MSG_CTRUNC}"
        assert lines[1] == "received 2"
        assert read_to_eof(r) == b"C0C1"
    finally:
        os.close(r)
