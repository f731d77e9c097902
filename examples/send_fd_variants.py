#!/usr/bin/env python3
"""The two ways the classic ``send_fd`` builds its control buffer, and ``recv_fd``.

A Chinese blog post on passing descriptors between processes writes
``send_fd(int fd, int fd_to_send)`` twice:

1. with the control buffer inside a ``union`` whose other member is a
   ``struct cmsghdr``, so that the buffer is aligned for the header
   (``send_fd`` in ``send_fd_fork.py``);
2. with a plain ``char buf[CMSG_SPACE(sizeof(int))]`` and the header found
   with ``CMSG_FIRSTHDR(&msg)`` (``send_fd_firsthdr`` below).

Both are received with the post's ``recv_fd`` (also in ``send_fd_fork.py``).
The example sends, over one ``AF_UNIX`` datagram ``socketpair``, the read end
of a pipe with each version, then proves the received number is a working
descriptor by writing into the pipe and reading back through it; the post's
point that any kind of descriptor can travel is shown with a socket too.

usage: send_fd_variants.py [--trace]
"""

from __future__ import annotations

import argparse
import sys
from ctypes import Array
from typing import Callable, List

from _trace import add_trace_argument, traced
from send_fd_fork import recv_fd, send_fd

from rawsys.c import (
    AF_UNIX,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_LEN,
    CMSG_SPACE,
    NULL,
    POINTER,
    SCM_RIGHTS,
    SOCK_DGRAM,
    SOCK_STREAM,
    SOL_SOCKET,
    byref,
    c_char,
    c_int,
    c_ubyte,
    cast,
    close,
    create_string_buffer,
    iovec,
    msghdr,
    perror,
    pipe2,
    pointer,
    read,
    sendmsg,
    sizeof,
    socketpair,
    write,
)


def send_fd_firsthdr(fd: int, fd_to_send: int) -> int:
    """The second ``send_fd``: a plain buffer and ``CMSG_FIRSTHDR``.

    ``char buf[...]`` is a ``c_ubyte`` array: ctypes arrays are aligned at
    least as strictly as C's ``malloc``, so the header fits without the union.
    """
    msg = msghdr()
    iobuf = (c_char * 1)(b"x")
    io = iovec()
    io.set_buffer(iobuf)  # io.iov_base = iobuf; io.iov_len = sizeof(iobuf)

    buf = (c_ubyte * CMSG_SPACE(sizeof(c_int)))()

    msg.msg_name = NULL
    msg.msg_namelen = 0
    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    msg.set_control(buf)  # msg_control = buf; msg_controllen = sizeof(buf)

    cmsg = CMSG_FIRSTHDR(byref(msg))  # or cmsg = (struct cmsghdr *) buf
    assert cmsg is not None  # msg_controllen holds a header by construction
    cmsg.contents.cmsg_level = SOL_SOCKET
    cmsg.contents.cmsg_type = SCM_RIGHTS
    cmsg.contents.cmsg_len = CMSG_LEN(sizeof(c_int))
    cast(CMSG_DATA(cmsg), POINTER(c_int))[0] = fd_to_send

    return sendmsg(fd, byref(msg), 0)


def pass_pipe(name: str, sender: Callable[[int, int], int], sv: Array[c_int]) -> int:
    """Send a pipe's read end with *sender*, receive it, read through it."""
    pipefd = (c_int * 2)()
    if pipe2(pipefd, 0) == -1:
        perror("pipe2")
        return 1
    status = 0
    if sender(sv[0], pipefd[0]) == -1:
        perror(f"{name}: sendmsg")
        status = 1
    else:
        got = recv_fd(sv[1])
        if got == -1:
            perror(f"{name}: recvmsg")
            status = 1
        else:
            message = b"through the pipe"
            write(pipefd[1], message, len(message))
            buf = create_string_buffer(64)
            n = read(got, buf, sizeof(buf) - 1)
            print(f"{name}: sent pipe read end fd {pipefd[0]}, got fd {got}, "
                  f"read {n} bytes: {buf.value.decode()}")
            close(got)
    close(pipefd[0])
    close(pipefd[1])
    return status


def pass_socket(sv: Array[c_int]) -> int:
    """Any descriptor can travel: send one end of a stream socketpair."""
    inner = (c_int * 2)()
    if socketpair(AF_UNIX, SOCK_STREAM, 0, inner) == -1:
        perror("socketpair")
        return 1
    status = 0
    if send_fd(sv[0], inner[0]) == -1:
        perror("send_fd: sendmsg")
        status = 1
    else:
        got = recv_fd(sv[1])
        if got == -1:
            perror("recv_fd: recvmsg")
            status = 1
        else:
            write(got, b"ping", 4)
            buf = create_string_buffer(8)
            n = read(inner[1], buf, sizeof(buf) - 1)
            print(f"socket: sent stream socket fd {inner[0]}, got fd {got}, "
                  f"its peer read {n} bytes: {buf.value.decode()}")
            close(got)
    close(inner[0])
    close(inner[1])
    return status


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_trace_argument(parser)
    args = parser.parse_args(argv)

    with traced(args.trace):
        sv = (c_int * 2)()
        if socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == -1:
            perror("socketpair")
            return 1
        status = pass_pipe("send_fd (union)", send_fd, sv)
        status |= pass_pipe("send_fd (CMSG_FIRSTHDR)", send_fd_firsthdr, sv)
        status |= pass_socket(sv)
        close(sv[0])
        close(sv[1])
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
