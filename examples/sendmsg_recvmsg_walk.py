#!/usr/bin/env python3
"""A walk through the kernel's sendmsg/recvmsg paths for SCM_RIGHTS.

Two Chinese blog posts read the kernel's code: one follows ``sendmsg(2)``
(``____sys_sendmsg`` → ``unix_dgram_sendmsg`` → ``__scm_send`` →
``scm_fp_copy``), the other ``recvmsg(2)`` (``unix_dgram_recvmsg`` →
``scm_recv`` → ``scm_detach_fds`` → ``receive_fd``).  Each step below
makes one transfer (or one refused ``sendmsg``) over an ``AF_UNIX`` datagram
socketpair through rawsys's C layer and prints what user space sees; with
``--trace`` (root, bcc) the kernel-side events of these same transfers are
printed afterwards.

Steps: one fd across; three fds into ``CMSG_SPACE(sizeof(int))`` (two fit,
``MSG_CTRUNC``); no control
buffer at all; ``MSG_PEEK`` then the real read; ``MSG_CMSG_CLOEXEC``; and
the refusals of ``__scm_send``/``scm_fp_copy``: a closed fd (``EBADF``),
``SCM_MAX_FD + 1`` fds (``EINVAL``), a ``cmsg_len`` shorter than a header
(``EINVAL``).

usage: sendmsg_recvmsg_walk.py [--trace]
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import sys
from ctypes import Array
from typing import List, Tuple

from _trace import add_trace_argument, traced

from rawsys.c import (
    AF_UNIX,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_LEN,
    CMSG_NXTHDR,
    CMSG_SPACE,
    MSG_CMSG_CLOEXEC,
    MSG_CTRUNC,
    MSG_DONTWAIT,
    MSG_PEEK,
    POINTER,
    SCM_MAX_FD,
    SCM_RIGHTS,
    SOCK_DGRAM,
    SOL_SOCKET,
    c_int,
    c_ubyte,
    cast,
    close,
    cmsghdr,
    get_errno,
    iovec,
    memcpy,
    msghdr,
    perror,
    pipe2,
    recvmsg,
    sendmsg,
    sizeof,
    socketpair,
)


def rights_message(fds: List[int], cmsg_len: int | None = None) -> msghdr:
    """A one-byte message whose control buffer holds one SCM_RIGHTS with *fds*."""
    msg = msghdr()
    io = iovec()
    io.set_buffer(bytearray(b"x"), 1)
    msg.set_iov([io])
    control = (c_ubyte * CMSG_SPACE(sizeof(c_int) * max(len(fds), 1)))()
    msg.set_control(control)
    cmsg = CMSG_FIRSTHDR(msg)
    assert cmsg is not None
    cmsg.contents.cmsg_level = SOL_SOCKET
    cmsg.contents.cmsg_type = SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int) * len(fds)) if cmsg_len is None else cmsg_len
    array = (c_int * len(fds))(*fds)
    memcpy(CMSG_DATA(cmsg), array, sizeof(array))
    return msg


def receive(sock: int, room_for: int, flags: int = 0) -> Tuple[int, int, List[int]]:
    """recvmsg with a control buffer for *room_for* fds (0: none); (ret, msg_flags, fds)."""
    msg = msghdr()
    data = bytearray(16)
    io = iovec()
    io.set_buffer(data)
    msg.set_iov([io])
    if room_for:
        msg.set_control((c_ubyte * CMSG_SPACE(sizeof(c_int) * room_for))())
    ret = recvmsg(sock, msg, flags | MSG_DONTWAIT)
    fds: List[int] = []
    if ret == -1:
        return ret, 0, fds
    cmsg = CMSG_FIRSTHDR(msg)
    while cmsg is not None:
        c = cmsg.contents
        if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_RIGHTS:
            n = (c.cmsg_len - CMSG_LEN(0)) // sizeof(c_int)
            ints = cast(CMSG_DATA(cmsg), POINTER(c_int))
            fds.extend(int(ints[i]) for i in range(n))
        cmsg = CMSG_NXTHDR(msg, cmsg)
    return ret, msg.msg_flags, fds


def flag_names(flags: int) -> str:
    names = [name for name, bit in (("MSG_CTRUNC", MSG_CTRUNC),) if flags & bit]
    return "|".join(names) or "0"


def refused(label: str, sock: int, msg: msghdr, expected: int) -> int:
    """Send a message the kernel must refuse; report errno."""
    ret = sendmsg(sock, msg, 0)
    err = get_errno() if ret == -1 else 0
    got = errno.errorcode.get(err, str(err)) if ret == -1 else f"accepted ({ret})"
    print(f"{label}: sendmsg = {ret}, errno {got}")
    return 0 if ret == -1 and err == expected else 1


def walk(sv: Array[c_int], pipefd: Array[c_int]) -> int:
    tx, rx = sv[0], sv[1]
    p = pipefd[0]
    status = 0

    # 1. one fd across: scm_fp_copy takes a reference, receive_fd installs it.
    sendmsg(tx, rights_message([p]), 0)
    ret, flags, fds = receive(rx, 1)
    print(f"one fd: sent fd {p}, recvmsg = {ret}, flags {flag_names(flags)}, got fds {fds}")
    status |= 0 if len(fds) == 1 else 1
    for fd in fds:
        close(fd)

    # 2. three fds into CMSG_SPACE(sizeof(int)): scm_detach_fds installs as many as
    # fit in msg_controllen - sizeof(struct cmsghdr), which the alignment padding
    # of CMSG_SPACE makes two, not one, and sets MSG_CTRUNC.
    fit = (CMSG_SPACE(sizeof(c_int)) - sizeof(cmsghdr)) // sizeof(c_int)
    sendmsg(tx, rights_message([p, p, p]), 0)
    ret, flags, fds = receive(rx, 1)
    print(f"three fds into CMSG_SPACE(sizeof(int)) = {CMSG_SPACE(sizeof(c_int))} bytes: "
          f"got fds {fds}, flags {flag_names(flags)}")
    status |= 0 if len(fds) == fit and flags & MSG_CTRUNC else 1
    for fd in fds:
        close(fd)

    # 3. no control buffer: scm_recv drops the fds and sets MSG_CTRUNC.
    sendmsg(tx, rights_message([p]), 0)
    ret, flags, fds = receive(rx, 0)
    print(f"no control buffer: recvmsg = {ret}, got fds {fds}, flags {flag_names(flags)}")
    status |= 0 if not fds and flags & MSG_CTRUNC else 1

    # 4. MSG_PEEK: the peeker gets clones, the real read gets the fds again.
    sendmsg(tx, rights_message([p]), 0)
    _, _, peeked = receive(rx, 1, MSG_PEEK)
    _, _, real = receive(rx, 1)
    print(f"MSG_PEEK: peek got fds {peeked}, then the read got fds {real}")
    status |= 0 if len(peeked) == 1 and len(real) == 1 else 1
    for fd in peeked + real:
        close(fd)

    # 5. MSG_CMSG_CLOEXEC: receive_fd installs with O_CLOEXEC.
    sendmsg(tx, rights_message([p]), 0)
    _, _, fds = receive(rx, 1, MSG_CMSG_CLOEXEC)
    cloexec = [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fd in fds]
    print(f"MSG_CMSG_CLOEXEC: got fds {fds}, FD_CLOEXEC {cloexec}")
    status |= 0 if cloexec == [True] else 1
    for fd in fds:
        close(fd)

    # 6. The refusals of __scm_send and scm_fp_copy.
    closed = (c_int * 2)()
    pipe2(closed, 0)
    close(closed[0])
    close(closed[1])
    status |= refused(f"closed fd {closed[0]}", tx, rights_message([closed[0]]), errno.EBADF)
    status |= refused(f"{SCM_MAX_FD + 1} fds", tx, rights_message([p] * (SCM_MAX_FD + 1)),
                      errno.EINVAL)
    status |= refused(f"cmsg_len {sizeof(cmsghdr) - 1}", tx,
                      rights_message([p], cmsg_len=sizeof(cmsghdr) - 1), errno.EINVAL)
    return status


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_trace_argument(parser)
    args = parser.parse_args(argv)

    with traced(args.trace):
        sv = (c_int * 2)()
        pipefd = (c_int * 2)()
        if socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == -1:
            perror("socketpair")
            return 1
        if pipe2(pipefd, 0) == -1:
            perror("pipe2")
            close(sv[0])
            close(sv[1])
            return 1
        try:
            status = walk(sv, pipefd)
        finally:
            for fd in (*sv, *pipefd):
                close(fd)
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
