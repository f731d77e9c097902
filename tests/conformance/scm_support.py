"""Building and reading control messages through rawsys's C layer, for the conformance tests.

Everything here goes through ``rawsys`` (``msghdr``, ``cmsghdr``, ``CMSG_*``,
libc's ``sendmsg``/``recvmsg``) and returns what C sees: return values,
``errno``, ``msg_flags`` and the control messages as ``(level, type, data)``.
No function here raises for a failed call; every fd a receive installs is
returned to the caller, who closes it (``close_all``).
"""

from __future__ import annotations

import errno
import os
import struct
from ctypes import Array, c_ubyte
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from rawsys.c import (
    AF_INET,
    AF_UNIX,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_LEN,
    CMSG_NXTHDR,
    CMSG_SPACE,
    INADDR_LOOPBACK,
    MSG_DONTWAIT,
    SCM_CREDENTIALS,
    SCM_RIGHTS,
    SOCK_DGRAM,
    SOL_SOCKET,
    bind,
    byref,
    c_int,
    close,
    cmsghdr,
    get_errno,
    htonl,
    iovec,
    memmove,
    msghdr,
    recvmsg,
    sendmsg,
    set_errno,
    sizeof,
    sockaddr_in,
    socket,
    socketpair,
    socklen_t,
    syscall,
    ucred,
)
from rawsys.c.libc import LIBC
from rawsys.c.syscalls import SYSCALLS

# (cmsg_level, cmsg_type, data) and, optionally, a cmsg_len written instead of CMSG_LEN(len(data))
Cmsg = Tuple[int, int, bytes]


def fds_data(fds: Sequence[int]) -> bytes:
    """The data of an SCM_RIGHTS message: the fds as C ints."""
    return struct.pack(f"={len(fds)}i", *fds)


def creds_data(pid: int, uid: int, gid: int) -> bytes:
    """The data of an SCM_CREDENTIALS message: a ``struct ucred``."""
    cred = ucred(pid, uid, gid)
    return bytes(memoryview(cred).cast("B"))


def control_buffer(
    cmsgs: Sequence[Cmsg],
    cmsg_lens: Sequence[int | None] | None = None,
    controllen: int | None = None,
) -> Array[c_ubyte]:
    """A control buffer holding *cmsgs* laid out as ``CMSG_NXTHDR`` walks them.

    ``cmsg_lens[i]``, when given and not None, is written as the i-th
    ``cmsg_len`` instead of the correct ``CMSG_LEN(len(data))``.  The buffer
    is ``controllen`` bytes (default: the sum of the ``CMSG_SPACE``s).
    """
    total = sum(CMSG_SPACE(len(d)) for _, _, d in cmsgs)
    size = total if controllen is None else controllen
    if size < total:
        raise ValueError(f"controllen {size} is smaller than the {total} bytes the cmsgs take")
    buf = (c_ubyte * max(size, 1))()
    offset = 0
    for i, (level, type_, data) in enumerate(cmsgs):
        hdr = cmsghdr.from_buffer(buf, offset)
        length = cmsg_lens[i] if cmsg_lens is not None and cmsg_lens[i] is not None else None
        hdr.cmsg_len = CMSG_LEN(len(data)) if length is None else length
        hdr.cmsg_level = level
        hdr.cmsg_type = type_
        memmove(CMSG_DATA(hdr), data, len(data))
        offset += CMSG_SPACE(len(data))
    return buf


def message(
    cmsgs: Sequence[Cmsg] = (),
    payload: bytes = b"x",
    cmsg_lens: Sequence[int | None] | None = None,
    controllen: int | None = None,
) -> msghdr:
    """A ``msghdr`` with *payload* in one iovec and *cmsgs* in its control buffer."""
    msg = msghdr()
    io = iovec()
    io.set_buffer(payload, len(payload))
    msg.set_iov([io])
    if cmsgs:
        msg.set_control(control_buffer(cmsgs, cmsg_lens, controllen))
    return msg


def rights(*fds: int) -> Cmsg:
    return (SOL_SOCKET, SCM_RIGHTS, fds_data(fds))


def send(sock: int, msg: msghdr, flags: int = 0, *, unchecked: bool = False) -> Tuple[int, int]:
    """``sendmsg``: ``(return value, errno)``; errno is 0 on success.

    ``unchecked`` calls libc's sendmsg directly, past the C layer's memory
    checks, for lengths the C layer refuses before the call (a
    ``msg_controllen`` beyond the control buffer) but the kernel itself
    rejects before reading anything.
    """
    set_errno(0)
    if unchecked:
        ret = LIBC["sendmsg"](sock, byref(msg), flags)
    else:
        ret = sendmsg(sock, msg, flags)
    return ret, (get_errno() if ret == -1 else 0)


def send_fds(sock: int, *fds: int, payload: bytes = b"x") -> None:
    """Send *fds* in one SCM_RIGHTS message; raises ``OSError`` if the kernel refuses."""
    ret, err = send(sock, message([rights(*fds)], payload))
    if ret == -1:
        raise OSError(err, os.strerror(err))


@dataclass
class Received:
    """What one ``recvmsg`` gave back."""

    ret: int
    errno: int
    msg_flags: int
    data: bytes
    cmsgs: List[Cmsg] = field(default_factory=list)

    @property
    def fds(self) -> List[int]:
        out: List[int] = []
        for level, type_, data in self.cmsgs:
            if level == SOL_SOCKET and type_ == SCM_RIGHTS:
                out.extend(struct.unpack(f"={len(data) // 4}i", data[: len(data) // 4 * 4]))
        return out

    @property
    def creds(self) -> List[Tuple[int, int, int]]:
        out = []
        for level, type_, data in self.cmsgs:
            if level == SOL_SOCKET and type_ == SCM_CREDENTIALS:
                cred = ucred.from_buffer_copy(data[: sizeof(ucred)])
                out.append((cred.pid, cred.uid, cred.gid))
        return out


def receive(
    sock: int,
    controllen: int = 0,
    flags: int = 0,
    bufsize: int = 64,
) -> Received:
    """``recvmsg`` with a *controllen*-byte control buffer (0: ``msg_control`` NULL).

    ``MSG_DONTWAIT`` is always added, so that a missing datagram is
    ``EAGAIN``, not a hung test.  Every SCM_RIGHTS fd is in ``.fds``; the
    caller closes them.
    """
    msg = msghdr()
    data = bytearray(bufsize)
    io = iovec()
    io.set_buffer(data)
    msg.set_iov([io])
    control = (c_ubyte * max(controllen, 1))()
    if controllen:
        msg.set_control(control, controllen)
    set_errno(0)
    ret = recvmsg(sock, msg, flags | MSG_DONTWAIT)
    if ret == -1:
        return Received(ret, get_errno(), 0, b"")
    cmsgs: List[Cmsg] = []
    cmsg = CMSG_FIRSTHDR(msg)
    while cmsg is not None:
        c = cmsg.contents
        n = c.cmsg_len - CMSG_LEN(0)
        cmsgs.append((c.cmsg_level, c.cmsg_type, bytes(bytearray(CMSG_DATA(cmsg)[:n]))))
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return Received(ret, 0, msg.msg_flags, bytes(data[: min(ret, bufsize)]), cmsgs)


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        close(fd)


def dgram_pair() -> Tuple[int, int]:
    """An ``AF_UNIX`` datagram socketpair; raises ``OSError`` on failure."""
    sv = (c_int * 2)()
    if socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == -1:
        err = get_errno()
        raise OSError(err, os.strerror(err))
    return sv[0], sv[1]


def udp_loopback() -> Tuple[int, sockaddr_in]:
    """A UDP socket bound to 127.0.0.1 on a free port, and its address."""
    fd = socket(AF_INET, SOCK_DGRAM, 0)
    if fd == -1:
        err = get_errno()
        raise OSError(err, os.strerror(err))
    addr = sockaddr_in()
    addr.sin_family = AF_INET
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK)
    addrlen = socklen_t(sizeof(addr))
    if (
        bind(fd, addr, sizeof(addr)) == -1
        or syscall(SYSCALLS["getsockname"], fd, byref(addr), byref(addrlen)) == -1
    ):
        err = get_errno()
        close(fd)
        raise OSError(err, os.strerror(err))
    return fd, addr


def open_fd_count() -> int:
    """Descriptors open in this process (the listing's own fd is not counted)."""
    return len(os.listdir("/proc/self/fd")) - 1


def open_fd_numbers() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:  # the directory fd listdir used, already closed
            continue
        fds.add(fd)
    return fds


def lowest_free_fd() -> int:
    used = open_fd_numbers()
    fd = 0
    while fd in used:
        fd += 1
    return fd


def errname(err: int) -> str:
    return errno.errorcode.get(err, str(err))
