#!/usr/bin/env python3
"""Send an array of ``NUM_FD`` descriptors in one ``SCM_RIGHTS`` message.

A port of the ``NUM_FD`` snippet of a Chinese blog post on ``struct msghdr``
and ``struct cmsghdr``: ``int myfds[NUM_FD]`` goes into one control message, sized with
``CMSG_SPACE(sizeof(myfds))`` in a union aligned for ``struct cmsghdr``, its
length set with ``CMSG_LEN(sizeof(int) * NUM_FD)`` and the payload copied
with ``memcpy`` into ``CMSG_DATA(cmsg)``.  The post stops at building the
message; here it is also sent over an ``AF_UNIX`` datagram socketpair and
received, and each received descriptor is checked by reading through it.

The descriptors sent are the read ends of ``NUM_FD`` pipes, pipe *i* holding
the text ``pipe i``.  The output lists the numbers sent and the numbers
received: the receiver gets the lowest free numbers, in the sender's order.

usage: send_fd_array.py [--trace] [-n NUM_FD]
"""

from __future__ import annotations

import argparse
import sys
from ctypes import Array, Union
from typing import List

from _trace import add_trace_argument, traced

from rawsys.c import (
    AF_UNIX,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_LEN,
    CMSG_NXTHDR,
    CMSG_SPACE,
    MSG_CTRUNC,
    POINTER,
    SCM_MAX_FD,
    SCM_RIGHTS,
    SOCK_DGRAM,
    SOL_SOCKET,
    byref,
    c_char,
    c_int,
    c_ubyte,
    cast,
    close,
    cmsghdr,
    create_string_buffer,
    get_errno,
    iovec,
    memcpy,
    msghdr,
    perror,
    pipe2,
    pointer,
    read,
    recvmsg,
    sendmsg,
    sizeof,
    socketpair,
    strerror,
    write,
)

NUM_FD = 3


def control_union(nfds: int) -> type[Union]:
    """``union { char buf[CMSG_SPACE(sizeof(myfds))]; struct cmsghdr align; }``."""

    class u_t(Union):
        _fields_ = [
            ("buf", c_ubyte * CMSG_SPACE(sizeof(c_int) * nfds)),
            ("align", cmsghdr),
        ]

    return u_t


def send_fds(sock: int, myfds: Array[c_int]) -> int:
    """The post's snippet: every fd of *myfds* in one SCM_RIGHTS message."""
    num_fd = len(myfds)
    msg = msghdr()  # struct msghdr msg = { 0 };
    iobuf = (c_char * 1)(b"x")
    io = iovec()
    io.set_buffer(iobuf)  # io.iov_base = iobuf; io.iov_len = sizeof(iobuf)
    u = control_union(num_fd)()

    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    msg.set_control(u.buf)  # msg_control = u.buf; msg_controllen = sizeof(u.buf)

    cmsg = CMSG_FIRSTHDR(byref(msg))
    assert cmsg is not None  # the buffer holds a header by construction
    cmsg.contents.cmsg_level = SOL_SOCKET
    cmsg.contents.cmsg_type = SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int) * num_fd)
    fdptr = cast(CMSG_DATA(cmsg), POINTER(c_int))  # initialize the payload
    memcpy(fdptr, myfds, num_fd * sizeof(c_int))

    return sendmsg(sock, byref(msg), 0)


def recv_fds(sock: int, max_fds: int) -> List[int]:
    """Receive one message and return every fd of its SCM_RIGHTS messages.

    The caller owns (and closes) every fd returned.  Raises ``OSError`` if
    ``recvmsg`` fails and ``RuntimeError`` if the kernel truncated the control
    data (the fds that fit are closed first).
    """
    msg = msghdr()
    iobuf = (c_char * 1)()
    io = iovec()
    io.set_buffer(iobuf)  # io.iov_base = iobuf; io.iov_len = sizeof(iobuf)
    u = control_union(max_fds)()
    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    msg.set_control(u.buf)  # msg_control = u.buf; msg_controllen = sizeof(u.buf)
    if recvmsg(sock, byref(msg), 0) == -1:
        err = get_errno()
        raise OSError(err, strerror(err))
    fds: List[int] = []
    cmsg = CMSG_FIRSTHDR(byref(msg))
    while cmsg is not None:
        c = cmsg.contents
        if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_RIGHTS:
            count = (c.cmsg_len - CMSG_LEN(0)) // sizeof(c_int)
            data = cast(CMSG_DATA(cmsg), POINTER(c_int))
            fds.extend(int(data[i]) for i in range(count))
        cmsg = CMSG_NXTHDR(byref(msg), cmsg)
    if msg.msg_flags & MSG_CTRUNC:
        for fd in fds:
            close(fd)
        raise RuntimeError("MSG_CTRUNC: the control buffer was too small")
    return fds




def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--num-fd", type=int, default=NUM_FD,
                        help=f"how many descriptors to send (1..{SCM_MAX_FD}, default {NUM_FD})")
    add_trace_argument(parser)
    args = parser.parse_args(argv)
    num_fd = args.num_fd
    if not 1 <= num_fd <= SCM_MAX_FD:
        parser.error(f"--num-fd must be between 1 and SCM_MAX_FD ({SCM_MAX_FD}), not {num_fd}")

    with traced(args.trace):
        sv = (c_int * 2)()
        if socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == -1:
            perror("socketpair")
            return 1
        myfds = (c_int * num_fd)()  # int myfds[NUM_FD]
        write_ends: List[int] = []
        status = 0
        try:
            for i in range(num_fd):
                p = (c_int * 2)()
                if pipe2(p, 0) == -1:
                    perror("pipe2")
                    return 1
                myfds[i] = p[0]
                write_ends.append(p[1])
                text = f"pipe {i}".encode()
                write(p[1], text, len(text))
            if send_fds(sv[0], myfds) == -1:
                perror("sendmsg")
                return 1
            got = recv_fds(sv[1], num_fd)
            print(f"sent {num_fd} fds: {' '.join(str(fd) for fd in myfds)}")
            print(f"got  {len(got)} fds: {' '.join(str(fd) for fd in got)}")
            for i, fd in enumerate(got):
                buf = create_string_buffer(32)
                n = read(fd, buf, sizeof(buf) - 1)
                content = buf.value.decode()
                if n == -1 or content != f"pipe {i}":
                    status = 1
                if i < 8 or i == len(got) - 1:
                    print(f"fd {fd} reads: {content}")
                close(fd)
            if len(got) != num_fd:
                status = 1
        finally:
            for fd in (*[myfds[i] for i in range(len(write_ends))], *write_ends):
                close(fd)
            close(sv[0])
            close(sv[1])
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
