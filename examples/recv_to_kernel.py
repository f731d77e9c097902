#!/usr/bin/env python3
"""``recv()`` from Python down to the kernel's system call.

A Japanese blog post follows ``recv()`` from glibc down to the kernel: the
fortified inline ``recv`` in ``bits/socket2.h`` calls ``__recv_chk``, which
aborts when ``n`` is larger than the buffer; then ``__libc_recv``, which on
i386 enters the kernel through the multiplexed ``socketcall`` system call
(number 102) with ``SYS_RECV`` (10) and a pointer to its arguments; the
kernel's ``sys_socketcall`` calls ``sys_recv``, which is ``sys_recvfrom``
with a NULL address.

This example shows each step from Python through rawsys's C layer:

1. libc's ``recv`` on an ``AF_UNIX`` socketpair;
2. the same receive as the raw ``syscall(SYS_recvfrom, fd, buf, n, flags,
   NULL, NULL)``: this machine (x86-64 or aarch64) has no ``recv`` system
   call at all;
3. proof from the kernel: a thread blocked inside libc's ``recv`` is, per
   ``/proc/self/task/TID/syscall``, in system call ``recvfrom``, with NULL
   in the two address arguments;
4. the i386 route for reference: the ``socketcall`` arguments block;
5. the fortify check: ``recv(fd, buf, n, 0)`` with ``n`` past the end of
   ``buf`` is refused before any call (``BufferOverflowDetected``), as
   ``__recv_chk`` refuses it in C.

usage: recv_to_kernel.py [--trace]
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from typing import List

from _trace import add_trace_argument, traced

from rawsys.c import (
    AF_UNIX,
    NULL,
    SOCK_DGRAM,
    BufferOverflowDetected,
    SYS_recvfrom,
    c_int,
    close,
    create_string_buffer,
    perror,
    recv,
    send,
    sizeof,
    socketpair,
    syscall,
    syscalls,
)

WAIT_LIMIT_SECONDS = 10.0  # how long to wait for the reader thread to block


def blocked_syscall(tid: int, reader: threading.Thread) -> List[str]:
    """The fields of /proc/self/task/TID/syscall once the thread is blocked in one."""
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while reader.is_alive() and time.monotonic() < deadline:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            fields = f.read().split()
        # "running" while on CPU; "-1 sp pc" when blocked outside a syscall
        if fields and fields[0] not in ("running", "-1"):
            return fields
        time.sleep(0.01)
    raise RuntimeError("the reader thread never blocked in a system call")


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_trace_argument(parser)
    args = parser.parse_args(argv)

    with traced(args.trace):
        sv = (c_int * 2)()
        if socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == -1:
            perror("socketpair")
            return 1
        try:
            status = walk(sv[0], sv[1])
        finally:
            close(sv[0])
            close(sv[1])
        sys.stdout.flush()
    return status


def walk(writer: int, reader: int) -> int:
    buf = create_string_buffer(16)

    # 1. libc's recv(), the function C programs call.
    send(writer, b"via libc recv", 13, 0)
    n = recv(reader, buf, sizeof(buf), 0)
    if n == -1:
        perror("recv")
        return 1
    print(f"1. libc recv(fd, buf, {sizeof(buf)}, 0) = {n}: {buf.raw[:n].decode()}")

    # 2. The raw system call that recv() becomes.
    machine = platform.machine()
    has_recv = "recv" in syscalls.SYSCALLS
    print(f"2. {machine}: a recv system call {'exists' if has_recv else 'does not exist'}; "
          f"recvfrom is number {SYS_recvfrom}")
    send(writer, b"via recvfrom", 12, 0)
    n = syscall(SYS_recvfrom, reader, buf, sizeof(buf), 0, NULL, NULL)
    if n == -1:
        perror("syscall(SYS_recvfrom)")
        return 1
    print(f"   syscall(SYS_recvfrom, fd, buf, {sizeof(buf)}, 0, NULL, NULL) = {n}: "
          f"{buf.raw[:n].decode()}")

    # 3. Where a thread blocked in libc's recv() actually is.
    result: List[int] = []
    thread_buf = create_string_buffer(16)
    tids: List[int] = []
    ready = threading.Event()

    def blocked_reader() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        result.append(recv(reader, thread_buf, sizeof(thread_buf), 0))

    thread = threading.Thread(target=blocked_reader, daemon=True)
    thread.start()
    ready.wait()
    try:
        fields = blocked_syscall(tids[0], thread)
    finally:
        send(writer, b"wake up", 7, 0)
        thread.join()
    number = int(fields[0])
    name = {v: k for k, v in syscalls.SYSCALLS.items()}.get(number, "?")
    print(f"3. a thread blocked in libc recv() is in system call {number} ({name}); "
          f"its address arguments: src_addr={fields[5]} addrlen={fields[6]}")

    # 4. The i386 route: one socketcall for every socket operation.
    block = syscalls.socketcall_args(reader, thread_buf, sizeof(thread_buf), 0)
    print(f"4. i386: syscall({syscalls.SYS_socketcall_i386}, SYS_RECV={syscalls.SYS_RECV}, "
          f"args) with args = {{fd={block[0]}, buf, len={block[2]}, flags={block[3]}}} "
          "-> sys_socketcall -> sys_recv -> sys_recvfrom(..., NULL, NULL)")

    # 5. The fortify check: n larger than the buffer.
    too_many = sizeof(buf) + 1
    try:
        recv(reader, buf, too_many, 0)
    except BufferOverflowDetected as exc:
        print(f"5. recv(fd, buf, {too_many}, 0) with a {sizeof(buf)}-byte buf: refused "
              f"before the call ({type(exc).__name__}: {exc}); C's __recv_chk aborts")
    else:
        print("5. recv with n past the buffer was not refused", file=sys.stderr)
        return 1
    return 0 if result and result[0] == 7 else 1


if __name__ == "__main__":
    sys.exit(main())
