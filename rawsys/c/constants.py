"""Constants of <sys/socket.h>, <netinet/in.h> and <fcntl.h>.

Every value comes from Python's ``socket``/``os`` modules where Python has
it, as a plain ``int`` (``socket`` hands out enum members, whose operators
cost more on hot paths and whose repr is not C's).  The few Python 3.11
lacks are written here once, each with the header it is copied from; nothing
else in the project (the BPF C included) defines them again.
"""

from __future__ import annotations

import os
import socket as _socket

# --- address families and socket types (<bits/socket.h>) -------------------
AF_UNSPEC: int = int(_socket.AF_UNSPEC)
AF_UNIX: int = int(_socket.AF_UNIX)
AF_LOCAL: int = int(_socket.AF_UNIX)
AF_INET: int = int(_socket.AF_INET)
AF_INET6: int = int(_socket.AF_INET6)
AF_NETLINK: int = int(_socket.AF_NETLINK)
PF_UNIX: int = AF_UNIX
PF_INET: int = AF_INET

SOCK_STREAM: int = int(_socket.SOCK_STREAM)
SOCK_DGRAM: int = int(_socket.SOCK_DGRAM)
SOCK_RAW: int = int(_socket.SOCK_RAW)
SOCK_SEQPACKET: int = int(_socket.SOCK_SEQPACKET)
SOCK_NONBLOCK: int = int(_socket.SOCK_NONBLOCK)
SOCK_CLOEXEC: int = int(_socket.SOCK_CLOEXEC)

# --- levels and options ---------------------------------------------------
SOL_SOCKET: int = int(_socket.SOL_SOCKET)
SO_TYPE: int = int(_socket.SO_TYPE)
SO_ERROR: int = int(_socket.SO_ERROR)
SO_RCVBUF: int = int(_socket.SO_RCVBUF)
SO_SNDBUF: int = int(_socket.SO_SNDBUF)
SO_PASSCRED: int = int(_socket.SO_PASSCRED)
SO_PEERCRED: int = int(_socket.SO_PEERCRED)
SO_PASSSEC: int = int(_socket.SO_PASSSEC)
# <asm-generic/socket.h> (Linux 6.5+); Python 3.11 does not export them.
SO_PASSPIDFD: int = 76
SO_PEERPIDFD: int = 77

# --- control message types (<bits/socket.h>, <linux/socket.h>) -------------
SCM_RIGHTS: int = int(_socket.SCM_RIGHTS)
SCM_CREDENTIALS: int = int(_socket.SCM_CREDENTIALS)
# <linux/socket.h>: SCM_SECURITY 0x03, SCM_PIDFD 0x04 (Linux 6.5+).
SCM_SECURITY: int = 0x03
SCM_PIDFD: int = 0x04
# include/net/scm.h: the most fds the kernel accepts in one SCM_RIGHTS message.
SCM_MAX_FD: int = 253

# --- message flags (<bits/socket.h>) ------------------------------------------
MSG_OOB: int = int(_socket.MSG_OOB)
MSG_PEEK: int = int(_socket.MSG_PEEK)
MSG_DONTROUTE: int = int(_socket.MSG_DONTROUTE)
MSG_CTRUNC: int = int(_socket.MSG_CTRUNC)
MSG_TRUNC: int = int(_socket.MSG_TRUNC)
MSG_DONTWAIT: int = int(_socket.MSG_DONTWAIT)
MSG_EOR: int = int(_socket.MSG_EOR)
MSG_WAITALL: int = int(_socket.MSG_WAITALL)
MSG_CONFIRM: int = int(_socket.MSG_CONFIRM)
MSG_ERRQUEUE: int = int(_socket.MSG_ERRQUEUE)
MSG_NOSIGNAL: int = int(_socket.MSG_NOSIGNAL)
MSG_MORE: int = int(_socket.MSG_MORE)
MSG_CMSG_CLOEXEC: int = int(_socket.MSG_CMSG_CLOEXEC)
# <bits/socket.h>: MSG_WAITFORONE 0x10000 (recvmmsg only).
MSG_WAITFORONE: int = 0x10000

SHUT_RD: int = int(_socket.SHUT_RD)
SHUT_WR: int = int(_socket.SHUT_WR)
SHUT_RDWR: int = int(_socket.SHUT_RDWR)

# --- IP level (<netinet/in.h>) ----------------------------------------------
IPPROTO_IP: int = int(_socket.IPPROTO_IP)
IPPROTO_UDP: int = int(_socket.IPPROTO_UDP)
IPPROTO_TCP: int = int(_socket.IPPROTO_TCP)
IP_TTL: int = int(_socket.IP_TTL)
# <linux/in.h>: IP_RECVTTL 12; Python 3.11 does not export it.
IP_RECVTTL: int = 12
INADDR_LOOPBACK: int = 0x7F000001
INADDR_ANY: int = 0

# --- <fcntl.h> ---------------------------------------------------------------
O_CLOEXEC: int = os.O_CLOEXEC
O_NONBLOCK: int = os.O_NONBLOCK
O_RDONLY: int = os.O_RDONLY
O_WRONLY: int = os.O_WRONLY
O_RDWR: int = os.O_RDWR
FD_CLOEXEC: int = 1  # <fcntl.h>; fcntl.FD_CLOEXEC has the same value.

__all__ = [
    "AF_INET",
    "AF_INET6",
    "AF_LOCAL",
    "AF_NETLINK",
    "AF_UNIX",
    "AF_UNSPEC",
    "FD_CLOEXEC",
    "INADDR_ANY",
    "INADDR_LOOPBACK",
    "IPPROTO_IP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IP_RECVTTL",
    "IP_TTL",
    "MSG_CMSG_CLOEXEC",
    "MSG_CONFIRM",
    "MSG_CTRUNC",
    "MSG_DONTROUTE",
    "MSG_DONTWAIT",
    "MSG_EOR",
    "MSG_ERRQUEUE",
    "MSG_MORE",
    "MSG_NOSIGNAL",
    "MSG_OOB",
    "MSG_PEEK",
    "MSG_TRUNC",
    "MSG_WAITALL",
    "MSG_WAITFORONE",
    "O_CLOEXEC",
    "O_NONBLOCK",
    "O_RDONLY",
    "O_RDWR",
    "O_WRONLY",
    "PF_INET",
    "PF_UNIX",
    "SCM_CREDENTIALS",
    "SCM_MAX_FD",
    "SCM_PIDFD",
    "SCM_RIGHTS",
    "SCM_SECURITY",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SOCK_CLOEXEC",
    "SOCK_DGRAM",
    "SOCK_NONBLOCK",
    "SOCK_RAW",
    "SOCK_SEQPACKET",
    "SOCK_STREAM",
    "SOL_SOCKET",
    "SO_ERROR",
    "SO_PASSCRED",
    "SO_PASSPIDFD",
    "SO_PASSSEC",
    "SO_PEERCRED",
    "SO_PEERPIDFD",
    "SO_RCVBUF",
    "SO_SNDBUF",
    "SO_TYPE",
]
