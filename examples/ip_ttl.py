#!/usr/bin/env python3
"""Read the TTL of a received UDP datagram from its control messages.

A port of the ``IP_TTL`` snippet of a Chinese blog post on ``struct msghdr``
and ``struct cmsghdr``: walk the control messages of a received datagram with ``CMSG_FIRSTHDR`` and
``CMSG_NXTHDR`` until the one at level ``IPPROTO_IP`` of type ``IP_TTL``, and
read the ``int`` in its ``CMSG_DATA``.  The post leaves out where the
datagram comes from; here it is real: a UDP socket on 127.0.0.1 with
``IP_RECVTTL`` switched on receives a datagram from a second socket.

On loopback the TTL is the sender's: the system default
(``/proc/sys/net/ipv4/ip_default_ttl``, normally 64), or the value given
with ``--ttl``, which the sender sets with ``setsockopt(IP_TTL)``.

usage: ip_ttl.py [--trace] [--ttl N]
"""

from __future__ import annotations

import argparse
import sys
from typing import List

from _trace import add_trace_argument, traced

from rawsys.c import (
    AF_INET,
    CMSG_DATA,
    CMSG_FIRSTHDR,
    CMSG_NXTHDR,
    CMSG_SPACE,
    INADDR_LOOPBACK,
    IP_RECVTTL,
    IP_TTL,
    IPPROTO_IP,
    POINTER,
    SOCK_DGRAM,
    bind,
    byref,
    c_char,
    c_int,
    c_ubyte,
    cast,
    close,
    htonl,
    iovec,
    msghdr,
    ntohs,
    perror,
    pointer,
    recvmsg,
    sendto,
    setsockopt,
    sizeof,
    sockaddr_in,
    socket,
    socklen_t,
    syscall,
)
from rawsys.c.syscalls import SYSCALLS

SYS_getsockname = SYSCALLS["getsockname"]  # libc's getsockname is this system call


def received_ttl(msgh: msghdr) -> int:
    """The post's loop: the IP_TTL of a received message, or -1 if none came."""
    cmsg = CMSG_FIRSTHDR(byref(msgh))
    while cmsg is not None:
        if cmsg.contents.cmsg_level == IPPROTO_IP and cmsg.contents.cmsg_type == IP_TTL:
            ttlptr = cast(CMSG_DATA(cmsg), POINTER(c_int))
            return int(ttlptr[0])
        cmsg = CMSG_NXTHDR(byref(msgh), cmsg)
    # cmsg == NULL: IP_TTL not enabled, a buffer too small, or an I/O error
    return -1


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttl", type=int, default=None,
                        help="TTL the sender sets with IP_TTL (1..255; default: the system's)")
    add_trace_argument(parser)
    args = parser.parse_args(argv)
    if args.ttl is not None and not 1 <= args.ttl <= 255:
        parser.error(f"--ttl must be between 1 and 255, not {args.ttl}")

    with traced(args.trace):
        receiver = socket(AF_INET, SOCK_DGRAM, 0)
        sender = socket(AF_INET, SOCK_DGRAM, 0)
        try:
            if receiver == -1 or sender == -1:
                perror("socket")
                return 1
            addr = sockaddr_in()
            addr.sin_family = AF_INET
            addr.sin_port = 0  # any free port
            addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK)
            if bind(receiver, addr, sizeof(addr)) == -1:
                perror("bind")
                return 1
            addrlen = socklen_t(sizeof(addr))
            if syscall(SYS_getsockname, receiver, byref(addr), byref(addrlen)) == -1:
                perror("getsockname")
                return 1
            on = c_int(1)
            if setsockopt(receiver, IPPROTO_IP, IP_RECVTTL, on, sizeof(on)) == -1:
                perror("setsockopt(IP_RECVTTL)")
                return 1
            if args.ttl is not None:
                ttl = c_int(args.ttl)
                if setsockopt(sender, IPPROTO_IP, IP_TTL, ttl, sizeof(ttl)) == -1:
                    perror("setsockopt(IP_TTL)")
                    return 1

            payload = b"ttl probe"
            if sendto(sender, payload, len(payload), 0, addr, sizeof(addr)) == -1:
                perror("sendto")
                return 1

            msgh = msghdr()
            data = (c_char * 64)()
            io = iovec()
            io.set_buffer(data)  # io.iov_base = data; io.iov_len = sizeof(data)
            control = (c_ubyte * CMSG_SPACE(sizeof(c_int)))()
            msgh.msg_iov = pointer(io)
            msgh.msg_iovlen = 1
            msgh.set_control(control)  # msg_control = control; msg_controllen = sizeof(control)
            n = recvmsg(receiver, byref(msgh), 0)
            if n == -1:
                perror("recvmsg")
                return 1
            ttl_value = received_ttl(msgh)
            print(f"received {n} bytes on 127.0.0.1:{ntohs(addr.sin_port)}: "
                  f"{data.raw[:n].decode()}")
            if ttl_value == -1:
                print("no IP_TTL control message", file=sys.stderr)
                return 1
            print(f"IP_TTL {ttl_value}")
        finally:
            for fd in (receiver, sender):
                if fd != -1:
                    close(fd)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
