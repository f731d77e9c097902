#!/usr/bin/env python3
"""Pass an open file from a child process to its parent: the classic send_fd/recv_fd.

A line-by-line port, through rawsys's C layer, of the program that ends a
Chinese blog post on passing descriptors between processes, built on the
classic ``send_fd``/``recv_fd`` pair (``cmsg(3)``): ``socketpair``
makes a pair of connected ``AF_UNIX`` datagram sockets, ``fork`` makes a
child, the child opens a file and sends its descriptor with ``send_fd``, the
parent receives a descriptor of its own with ``recv_fd``, reads the file
through it and prints ``I got fd N`` followed by the content, exactly as the
C program prints it.  N is the lowest descriptor free in the parent, not the
child's number.

Without a path the example writes a small temporary file with known content
and removes it afterwards.  ``--trace`` (root, bcc) prints the kernel's view
of the transfer after the normal output.

usage: send_fd_fork.py [--trace] [PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from ctypes import Union
from typing import List

from _trace import Trace, add_trace_argument, traced

from rawsys.c import (
    AF_UNIX,
    CMSG_DATA,
    CMSG_LEN,
    CMSG_SPACE,
    NULL,
    O_RDWR,
    POINTER,
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
    iovec,
    msghdr,
    perror,
    pointer,
    read,
    recvmsg,
    sendmsg,
    sizeof,
    socketpair,
)

BUFSIZ = 8192  # <stdio.h>, glibc
DEMO_CONTENT = b"hello from the child: this text was read through a passed descriptor"


class control_buffer(Union):
    """``union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr cmsg; }``.

    The union gives ``buf`` the alignment of ``struct cmsghdr``.
    """

    _fields_ = [
        # char buf[...]: c_ubyte, because ctypes hands out a c_char array field
        # as a bytes copy, and the kernel must see the union's own memory.
        ("buf", c_ubyte * CMSG_SPACE(sizeof(c_int))),
        ("cmsg", cmsghdr),
    ]


def send_fd(fd: int, fd_to_send: int) -> int:
    """``void send_fd(int fd, int fd_to_send)``, the version with the union.

    Returns what ``sendmsg`` returned (the C discards it; here the caller checks).
    """
    msg = msghdr()
    iobuf = (c_char * 1)(b"x")  # at least one byte of real data goes with the fd
    io = iovec()
    io.set_buffer(iobuf)  # io.iov_base = iobuf; io.iov_len = sizeof(iobuf)
    u = control_buffer()

    u.cmsg.cmsg_level = SOL_SOCKET
    u.cmsg.cmsg_type = SCM_RIGHTS
    u.cmsg.cmsg_len = CMSG_LEN(sizeof(c_int))
    cast(CMSG_DATA(byref(u.cmsg)), POINTER(c_int))[0] = fd_to_send  # the payload

    msg.msg_name = NULL
    msg.msg_namelen = 0
    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    msg.set_control(u.buf)  # msg_control = u.buf; msg_controllen = sizeof(u.buf)

    return sendmsg(fd, byref(msg), 0)


def recv_fd(fd: int) -> int:
    """``int recv_fd(int fd)``: the fd in the first control message.

    Returns -1 (with ``errno`` set) if ``recvmsg`` failed, as the C would if it
    checked.  The received fd belongs to the caller, who closes it.
    """
    msg = msghdr()
    iobuf = (c_char * 1)()
    io = iovec()
    io.set_buffer(iobuf)  # io.iov_base = iobuf; io.iov_len = sizeof(iobuf)
    u = control_buffer()

    msg.msg_name = NULL
    msg.msg_namelen = 0
    msg.msg_iov = pointer(io)
    msg.msg_iovlen = 1
    msg.set_control(u.buf)  # msg_control = u.buf; msg_controllen = sizeof(u.buf)
    if recvmsg(fd, byref(msg), 0) == -1:
        return -1
    return int(cast(CMSG_DATA(byref(u.cmsg)), POINTER(c_int))[0])


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", help="file the child opens (default: a temp file)")
    add_trace_argument(parser)
    args = parser.parse_args(argv)

    path = args.path
    cleanup = None
    if path is None:
        handle, path = tempfile.mkstemp(prefix="rawsys-send_fd_fork-")
        os.write(handle, DEMO_CONTENT)
        os.close(handle)
        cleanup = path
    elif not os.path.isfile(path):
        parser.error(f"{path}: not a regular file")

    try:
        with traced(args.trace) as trace:
            return parent_and_child(path, trace)
    finally:
        if cleanup is not None:
            os.unlink(cleanup)


def parent_and_child(path: str, trace: Trace) -> int:
    """``int main(void)``: the fork and the two sides."""
    pipefd = (c_int * 2)()
    if socketpair(AF_UNIX, SOCK_DGRAM, 0, pipefd) == -1:
        perror("socketpair")
        return 1

    sys.stdout.flush()  # the child must not print the parent's buffered output
    pid = trace.fork()  # fork(); with --trace the child is traced from its first call
    if pid == 0:
        status = 0
        try:
            close(pipefd[0])
            # open(path, O_RDWR); Python adds O_CLOEXEC (PEP 446), a flag of this
            # process's fd table that does not travel with the file.
            fd = os.open(path, O_RDWR)
            if send_fd(pipefd[1], fd) == -1:
                perror("sendmsg")
                status = 1
            close(fd)  # the kernel holds the file while it is in flight
            close(pipefd[1])
        except BaseException as exc:  # never return into the parent's code
            print(f"child: {exc}", file=sys.stderr)
            status = 1
        finally:
            os._exit(status)  # exit(0), without running the parent's cleanups

    close(pipefd[1])
    fd = recv_fd(pipefd[0])
    if fd == -1:
        perror("recvmsg")
        close(pipefd[0])
        os.waitpid(pid, 0)
        return 1
    buf = create_string_buffer(BUFSIZ)  # char buf[BUFSIZ]; memset(buf, '\0', ...)
    n = read(fd, buf, sizeof(buf) - 1)  # one byte short: the C's %s needs a NUL
    if n == -1:
        perror("read")
    print(f"I got fd {fd}\n{buf.value.decode(errors='replace')}")
    close(fd)
    close(pipefd[0])
    _, status = os.waitpid(pid, 0)
    return 0 if n != -1 and os.waitstatus_to_exitcode(status) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
