"""rawsys's C layer: what ``#include <sys/socket.h>`` gives a C program.

Structures (``msghdr``, ``cmsghdr``, ``iovec``, ...), the ``CMSG_*`` macros,
the libc calls with C's return conventions (``-1`` and ``errno``), the raw
``syscall`` path and the constants.  ``from rawsys.c import *`` is the
``#include``; a few ctypes names come along (``sizeof``, ``cast``,
``POINTER``, ``byref``, ``c_int``...) so ported code reads like C.

Memory rules (details in ``rawsys.c.memory``): every pointer handed to the
kernel, directly or inside a ``msghdr``/``iovec``/``mmsghdr``, must lie in a
live object the call can reach -- one set through the ``set_*`` helpers (kept
alive by the structure and by ctypes' copies of it), or one ctypes itself
keeps (``pointer(iov)``, ``cast(buf, c_void_p)``, a ``c_char_p``'s string).
Otherwise the call returns ``-1`` with ``errno`` ``EFAULT`` and the kernel is
not called.  A length past the end of a known buffer raises
``BufferOverflowDetected``; a read-only buffer (``bytes``, ``c_char_p``)
where the kernel writes raises ``TypeError``; a negative ``byref`` offset
raises ``ValueError``.  ``memcpy``/``memmove``/``memset`` are checked the same
way and raise (``UnknownMemory`` for memory nobody holds).
"""

from __future__ import annotations

from ctypes import (
    POINTER,
    addressof,
    byref,
    c_char,
    c_int,
    c_size_t,
    c_ubyte,
    c_uint,
    c_void_p,
    cast,
    create_string_buffer,
    pointer,
    sizeof,
)

from rawsys.c.buffers import BufferOverflowDetected, UnknownMemory, memcpy, memmove, memset
from rawsys.c.cmsg import CMSG_ALIGN, CMSG_DATA, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR, CMSG_SPACE
from rawsys.c.constants import *  # noqa: F403
from rawsys.c.libc import (
    accept4,
    bind,
    close,
    connect,
    get_errno,
    getsockopt,
    listen,
    perror,
    pipe2,
    read,
    recv,
    recvfrom,
    recvmmsg,
    recvmsg,
    send,
    sendmmsg,
    sendmsg,
    sendto,
    set_errno,
    setsockopt,
    shutdown,
    socket,
    socketpair,
    strerror,
    write,
)
from rawsys.c.structs import (
    UnsupportedABIError,
    cmsghdr,
    gid_t,
    htonl,
    htons,
    in_addr,
    iovec,
    mmsghdr,
    msghdr,
    ntohl,
    ntohs,
    pid_t,
    sockaddr,
    sockaddr_in,
    sockaddr_un,
    socklen_t,
    timespec,
    ucred,
    uid_t,
)
from rawsys.c.syscalls import (
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    syscall,
)

NULL = None

__all__ = [
    # structures and types
    "iovec", "msghdr", "cmsghdr", "mmsghdr", "ucred", "sockaddr", "sockaddr_un", "in_addr",
    "sockaddr_in", "timespec", "socklen_t", "pid_t", "uid_t", "gid_t",
    "htons", "htonl", "ntohs", "ntohl", "UnsupportedABIError", "BufferOverflowDetected",
    "UnknownMemory",
    # macros
    "CMSG_ALIGN", "CMSG_SPACE", "CMSG_LEN", "CMSG_FIRSTHDR", "CMSG_NXTHDR", "CMSG_DATA",
    # calls
    "socket", "socketpair", "bind", "connect", "listen", "accept4", "shutdown", "sendmsg",
    "recvmsg", "sendmmsg", "recvmmsg", "send", "recv", "sendto", "recvfrom", "setsockopt",
    "getsockopt", "close", "read", "write", "pipe2", "get_errno", "set_errno", "strerror",
    "perror", "syscall", "SYS_sendmsg", "SYS_recvmsg", "SYS_sendmmsg", "SYS_recvmmsg",
    "SYS_sendto", "SYS_recvfrom",
    # the ctypes vocabulary C ports need
    "POINTER", "addressof", "byref", "c_char", "c_int", "c_size_t", "c_ubyte", "c_uint",
    "c_void_p", "cast", "create_string_buffer", "memcpy", "memmove", "memset", "pointer",
    "sizeof", "NULL",
    # rawsys.c.constants.__all__, written out: type checkers follow only a literal
    # __all__ through `from rawsys.c import *` (test_c_abi checks that none is missing)
    "AF_INET", "AF_INET6", "AF_LOCAL", "AF_NETLINK", "AF_UNIX", "AF_UNSPEC", "FD_CLOEXEC",
    "INADDR_ANY", "INADDR_LOOPBACK", "IPPROTO_IP", "IPPROTO_TCP", "IPPROTO_UDP", "IP_RECVTTL",
    "IP_TTL", "MSG_CMSG_CLOEXEC", "MSG_CONFIRM", "MSG_CTRUNC", "MSG_DONTROUTE", "MSG_DONTWAIT",
    "MSG_EOR", "MSG_ERRQUEUE", "MSG_MORE", "MSG_NOSIGNAL", "MSG_OOB", "MSG_PEEK", "MSG_TRUNC",
    "MSG_WAITALL", "MSG_WAITFORONE", "O_CLOEXEC", "O_NONBLOCK", "O_RDONLY", "O_RDWR",
    "O_WRONLY", "PF_INET", "PF_UNIX", "SCM_CREDENTIALS", "SCM_MAX_FD", "SCM_PIDFD",
    "SCM_RIGHTS", "SCM_SECURITY", "SHUT_RD", "SHUT_RDWR", "SHUT_WR", "SOCK_CLOEXEC",
    "SOCK_DGRAM", "SOCK_NONBLOCK", "SOCK_RAW", "SOCK_SEQPACKET", "SOCK_STREAM", "SOL_SOCKET",
    "SO_ERROR", "SO_PASSCRED", "SO_PASSPIDFD", "SO_PASSSEC", "SO_PEERCRED", "SO_PEERPIDFD",
    "SO_RCVBUF", "SO_SNDBUF", "SO_TYPE",
]
