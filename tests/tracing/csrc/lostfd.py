"""Each way the kernel drops fds in flight, reproduced in Python (as lostfd.c does in C).

    python lostfd.py CAUSE

The parent (sender) sends the read end of a new pipe (and, for ``ctrunc``
and ``emfile``, its write end) to its forked child (receiver) with
``socket.send_fds``; the child then loses them: ``ctrunc`` (recvmsg with room
for 1 of 2), ``nocontrol`` (recvmsg without control buffer), ``read``
(os.read), ``recv`` (socket.recv on SOCK_STREAM), ``zero`` (the parent sends
0 data bytes on SOCK_STREAM), ``close``, ``exit``, ``emfile`` (RLIMIT_NOFILE
reached), ``exec`` (MSG_CMSG_CLOEXEC, then exec of /bin/true).  And one
that loses nothing: ``slow`` receives properly, but only after 3 seconds.

The process names itself ``lostfd-py`` (prctl PR_SET_NAME) so the tracer
can filter on it, and prints ``sender pid P fd F ino I`` per fd sent and
``receiver pid P``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import sys
import time

PR_SET_NAME = 15  # <linux/prctl.h>
NAME = b"lostfd-py"


def child(cause: str, sock: socket.socket) -> None:
    print(f"receiver pid {os.getpid()}", flush=True)
    if cause == "ctrunc":
        sock.recvmsg(1, socket.CMSG_LEN(4))
    elif cause == "nocontrol":
        sock.recvmsg(1)
    elif cause == "read":
        os.read(sock.fileno(), 16)
    elif cause == "recv":
        sock.recv(16)
    elif cause == "close":
        sock.close()
    elif cause == "emfile":
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
        fd = -1
        while fd < 15:
            fd = os.dup(0)
        os.close(fd)  # fd 15 free: one of the two fits
        sock.recvmsg(1, socket.CMSG_LEN(8))
    elif cause == "slow":
        time.sleep(3)
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        for fd in fds:
            os.close(fd)
    elif cause == "exec":
        sock.recvmsg(1, socket.CMSG_LEN(4), socket.MSG_CMSG_CLOEXEC)
        os.execv("/bin/true", ["true"])
    os._exit(0)  # "exit" and "zero": nothing more


def main() -> int:
    cause = sys.argv[1]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, NAME, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
    kind = socket.SOCK_STREAM if cause in ("recv", "zero") else socket.SOCK_DGRAM
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    fds = [r, w] if cause in ("ctrunc", "emfile") else [r]
    pid = os.fork()
    if pid == 0:
        try:
            a.close()
            os.close(r)
            os.close(w)
            os.close(ready_w)
            os.read(ready_r, 1)  # the message is queued
            child(cause, b)
        finally:
            os._exit(0)
    b.close()
    os.close(ready_r)
    for fd in fds:
        print(f"sender pid {os.getpid()} fd {fd} ino {os.fstat(fd).st_ino}", flush=True)
    socket.send_fds(a, [b"" if cause == "zero" else b"x"], fds)
    os.write(ready_w, b"g")
    os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
