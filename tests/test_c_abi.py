"""The C layer's ABI against C: struct layouts and constants.

``tests/csrc/abi.c`` is compiled with gcc at test time and prints, for every
structure rawsys defines, ``sizeof``/``_Alignof`` and the ``offsetof``/size of
every field, and the value of every constant the C headers define.  The
constants the installed userspace headers lack (``SCM_MAX_FD`` lives in the
kernel's private ``include/net/scm.h``; ``SCM_PIDFD`` and friends are newer
than the headers) are checked against the running kernel's behaviour.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import re
import subprocess
from ctypes import POINTER, c_int, c_ubyte, cast, sizeof
from pathlib import Path
from typing import Any

import pytest

import rawsys
from rawsys.c import constants, structs
from rawsys.c.cmsg import CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE
from rawsys.c.libc import close, get_errno, getsockopt, recvmsg, sendmsg, setsockopt, socketpair
from rawsys.c.structs import iovec, msghdr, socklen_t

pytestmark = pytest.mark.usefixtures("fd_leak_check")

STRUCTS = {
    "iovec": structs.iovec,
    "msghdr": structs.msghdr,
    "cmsghdr": structs.cmsghdr,
    "mmsghdr": structs.mmsghdr,
    "ucred": structs.ucred,
    "sockaddr": structs.sockaddr,
    "sockaddr_un": structs.sockaddr_un,
    "in_addr": structs.in_addr,
    "sockaddr_in": structs.sockaddr_in,
    "timespec": structs.timespec,
}

# Constants no installed userspace header defines; each has a test below that
# pins it some other way.  A constant added to rawsys.c.constants that is
# neither printed by abi.c nor listed here fails test_every_constant_is_checked.
KERNEL_ONLY = {"SCM_MAX_FD", "SCM_SECURITY", "SCM_PIDFD", "SO_PASSPIDFD", "SO_PEERPIDFD"}


class CFacts:
    def __init__(self, text: str) -> None:
        self.structs: dict[str, tuple[int, int]] = {}
        self.fields: dict[str, dict[str, tuple[int, int]]] = {}
        self.consts: dict[str, int] = {}
        for line in text.splitlines():
            kind, name, *values = line.split()
            if kind == "struct":
                self.structs[name] = (int(values[0]), int(values[1]))
                self.fields.setdefault(name, {})
            elif kind == "field":
                struct, field = name.split(".")
                self.fields.setdefault(struct, {})[field] = (int(values[0]), int(values[1]))
            elif kind == "const":
                self.consts[name] = int(values[0])
            else:
                raise AssertionError(f"abi.c printed an unknown line: {line!r}")


@pytest.fixture(scope="module")
def c_facts(build_c: Any) -> CFacts:
    exe = build_c("abi.c")
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    return CFacts(out)


def test_c_program_covers_every_struct(c_facts: CFacts) -> None:
    assert set(c_facts.structs) == set(STRUCTS)


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_size_and_alignment(c_facts: CFacts, name: str) -> None:
    cls = STRUCTS[name]
    assert (sizeof(cls), ctypes.alignment(cls)) == c_facts.structs[name]


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_fields(c_facts: CFacts, name: str) -> None:
    cls = STRUCTS[name]
    python_fields = {
        field_name: (getattr(cls, field_name).offset, getattr(cls, field_name).size)
        for field_name, *_ in cls._fields_
    }
    assert python_fields == c_facts.fields[name]
    # Field order is C's too (a Structure lays fields out in _fields_ order).
    c_order = sorted(c_facts.fields[name], key=lambda f: c_facts.fields[name][f][0])
    assert [f for f, *_ in cls._fields_] == c_order


def test_pointer_fields_are_c_types() -> None:
    """``msg_iov`` is ``POINTER(iovec)``; the ``void *`` fields are ``c_void_p``."""
    types = {name: ftype for name, ftype in structs.msghdr._fields_}
    assert types["msg_iov"] is POINTER(structs.iovec)
    for name in ("msg_name", "msg_control"):
        assert types[name] is ctypes.c_void_p
    assert dict(structs.iovec._fields_)["iov_base"] is ctypes.c_void_p


def test_constants_match_c(c_facts: CFacts) -> None:
    mismatches = {
        name: (getattr(constants, name), value)
        for name, value in c_facts.consts.items()
        if getattr(constants, name) != value
    }
    assert mismatches == {}, "rawsys value, C value"


def test_every_constant_is_checked(c_facts: CFacts) -> None:
    unchecked = set(constants.__all__) - set(c_facts.consts) - KERNEL_ONLY
    assert unchecked == set()
    # The kernel-only ones really are missing from the headers (else compare them).
    assert KERNEL_ONLY.isdisjoint(c_facts.consts)


def test_star_import_gives_the_constants_and_structs() -> None:
    namespace: dict[str, Any] = {}
    exec("from rawsys.c import *", namespace)
    for name in [*constants.__all__, *STRUCTS]:
        assert namespace[name] is getattr(rawsys.c, name)


# --- constants pinned against the kernel ------------------------------------------------


def _kernel_header_define(relpath: str, name: str) -> int | None:
    """The value of ``#define name`` in an installed kernel-headers tree, if any."""
    for root in sorted(glob.glob("/usr/src/linux-headers-*")):
        path = Path(root) / relpath
        if path.is_file():
            match = re.search(rf"^#define\s+{name}\s+(\S+)", path.read_text(), re.M)
            if match:
                return int(match.group(1), 0)
    return None


@pytest.mark.parametrize(
    ("name", "header"),
    [("SCM_MAX_FD", "include/net/scm.h"), ("SCM_SECURITY", "include/linux/socket.h")],
)
def test_kernel_private_constants_match_kernel_headers(name: str, header: str) -> None:
    value = _kernel_header_define(header, name)
    if value is None:
        pytest.skip(f"no kernel headers with {header} under /usr/src")
    assert getattr(constants, name) == value


def _send_rights(sock: int, fds: list[int]) -> tuple[int, int]:
    """sendmsg one byte with *fds* in one SCM_RIGHTS; returns (result, errno)."""
    data = bytearray(b"x")
    iov = iovec()
    iov.set_buffer(data)
    n = len(fds)
    control = (c_ubyte * CMSG_SPACE(n * sizeof(c_int)))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_len = CMSG_LEN(n * sizeof(c_int))
    cmsg.contents.cmsg_level = constants.SOL_SOCKET
    cmsg.contents.cmsg_type = constants.SCM_RIGHTS
    array = (c_int * n)(*fds)
    ctypes.memmove(CMSG_DATA(cmsg), array, sizeof(array))
    result = sendmsg(sock, msg, 0)
    return result, get_errno() if result < 0 else 0


def _recv_and_close_all(sock: int, maxfds: int) -> int:
    """recvmsg with room for *maxfds* fds; closes every fd received and returns the count."""
    data = bytearray(16)
    iov = iovec()
    iov.set_buffer(data)
    control = (c_ubyte * CMSG_SPACE(maxfds * sizeof(c_int)))()
    msg = msghdr()
    msg.set_iov([iov])
    msg.set_control(control)
    assert recvmsg(sock, msg, 0) == 1
    received = 0
    cmsg = CMSG_FIRSTHDR(msg)
    while cmsg is not None:
        header = cmsg.contents
        if (header.cmsg_level, header.cmsg_type) == (constants.SOL_SOCKET, constants.SCM_RIGHTS):
            count = (header.cmsg_len - CMSG_LEN(0)) // sizeof(c_int)
            fds = cast(CMSG_DATA(cmsg), POINTER(c_int))
            for i in range(count):
                os.close(fds[i])
            received += count
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return received


def test_scm_max_fd_is_the_kernels_limit() -> None:
    """SCM_MAX_FD fds go through in one message; one more is EINVAL."""
    sv = (c_int * 2)()
    assert socketpair(constants.AF_UNIX, constants.SOCK_DGRAM, 0, sv) == 0
    r, w = os.pipe()
    try:
        limit = constants.SCM_MAX_FD
        assert _send_rights(sv[0], [r] * (limit + 1)) == (-1, errno.EINVAL)
        assert _send_rights(sv[0], [r] * limit) == (1, 0)
        assert _recv_and_close_all(sv[1], limit) == limit
    finally:
        for fd in (sv[0], sv[1], r, w):
            close(fd)


def _is_pidfd(fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"


def test_so_peerpidfd_gives_a_pidfd() -> None:
    sv = (c_int * 2)()
    assert socketpair(constants.AF_UNIX, constants.SOCK_STREAM, 0, sv) == 0
    try:
        value = c_int(-1)
        length = socklen_t(sizeof(value))
        result = getsockopt(sv[0], constants.SOL_SOCKET, constants.SO_PEERPIDFD, value,
                            ctypes.byref(length))
        if result < 0 and get_errno() == errno.ENOPROTOOPT:
            pytest.skip("kernel older than 6.5 (no SO_PEERPIDFD)")
        assert result == 0
        try:
            assert _is_pidfd(value.value)
        finally:
            os.close(value.value)
    finally:
        close(sv[0])
        close(sv[1])


def test_so_passpidfd_brings_an_scm_pidfd_message() -> None:
    sv = (c_int * 2)()
    assert socketpair(constants.AF_UNIX, constants.SOCK_DGRAM, 0, sv) == 0
    try:
        on = c_int(1)
        if setsockopt(sv[1], constants.SOL_SOCKET, constants.SO_PASSPIDFD, on, sizeof(on)) < 0:
            assert get_errno() == errno.ENOPROTOOPT
            pytest.skip("kernel older than 6.5 (no SO_PASSPIDFD)")
        assert os.write(sv[0], b"p") == 1
        data = bytearray(4)
        iov = iovec()
        iov.set_buffer(data)
        control = (c_ubyte * 256)()
        msg = msghdr()
        msg.set_iov([iov])
        msg.set_control(control)
        assert recvmsg(sv[1], msg, 0) == 1
        seen = []
        cmsg = CMSG_FIRSTHDR(msg)
        while cmsg is not None:
            header = cmsg.contents
            seen.append((header.cmsg_level, header.cmsg_type))
            if header.cmsg_type == constants.SCM_PIDFD:
                fd = cast(CMSG_DATA(cmsg), POINTER(c_int))[0]
                try:
                    assert _is_pidfd(fd)
                finally:
                    os.close(fd)
            cmsg = CMSG_NXTHDR(msg, cmsg)
        assert (constants.SOL_SOCKET, constants.SCM_PIDFD) in seen
    finally:
        close(sv[0])
        close(sv[1])


def test_byte_order_helpers_match_socket_module() -> None:
    import random
    import socket

    rng = random.Random(4)
    for _ in range(2000):
        short, long_ = rng.randrange(1 << 16), rng.randrange(1 << 32)
        assert structs.htons(short) == socket.htons(short)
        assert structs.ntohs(short) == socket.ntohs(short)
        assert structs.htonl(long_) == socket.htonl(long_)
        assert structs.ntohl(long_) == socket.ntohl(long_)
    address = structs.sockaddr_in(constants.AF_INET, structs.htons(8080),
                                  structs.in_addr(structs.htonl(constants.INADDR_LOOPBACK)))
    # Port and address are in network order in memory, whatever the host's order.
    assert bytes(address)[2:8] == b"\x1f\x90" + socket.inet_aton("127.0.0.1")
