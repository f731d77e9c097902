"""The raw system-call path: ``syscall(SYS_sendmsg, ...)`` straight to the kernel.

Syscall numbers are those of <asm/unistd_64.h> on x86-64 and of
<asm-generic/unistd.h> on aarch64.  Neither architecture has a ``recv`` or
``send`` system call: libc's ``recv(fd, buf, n, flags)`` enters the kernel as
``recvfrom(fd, buf, n, flags, NULL, NULL)`` and ``send`` as ``sendto`` with a
NULL address.

On i386 all socket calls share one system call, ``socketcall`` (number 102),
whose first argument picks the operation (``SYS_RECV`` is 10; <linux/net.h>)
and whose second points at the operation's arguments packed as longs.  rawsys
does not run on i386 (its structures are the 64-bit ones); the sub-call
numbers are here for the walk from ``recv()`` to ``sys_recvfrom`` they document.
"""

from __future__ import annotations

import ctypes
import platform
from ctypes import c_long
from typing import Any, Dict

from rawsys.c.buffers import UnknownMemory, buffer_extent, buffer_pointer
from rawsys.c.libc import LIBC, _check_msghdrs, _efault, _mmsg_vector, _pointer_to, fileno
from rawsys.c.memory import MSGHDR_SIZE
from rawsys.c.structs import mmsghdr, msghdr

_X86_64: Dict[str, int] = {
    "read": 0, "write": 1, "close": 3, "socket": 41, "connect": 42, "accept": 43,
    "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "shutdown": 48,
    "bind": 49, "listen": 50, "getsockname": 51, "getpeername": 52, "socketpair": 53,
    "setsockopt": 54, "getsockopt": 55, "getpid": 39, "accept4": 288, "pipe2": 293,
    "recvmmsg": 299, "sendmmsg": 307, "perf_event_open": 298, "bpf": 321, "membarrier": 324,
}
_AARCH64: Dict[str, int] = {
    "read": 63, "write": 64, "close": 57, "socket": 198, "socketpair": 199, "bind": 200,
    "listen": 201, "accept": 202, "connect": 203, "getsockname": 204, "getpeername": 205,
    "sendto": 206, "recvfrom": 207, "setsockopt": 208, "getsockopt": 209, "shutdown": 210,
    "sendmsg": 211, "recvmsg": 212, "getpid": 172, "accept4": 242, "recvmmsg": 243,
    "sendmmsg": 269, "pipe2": 59, "perf_event_open": 241, "bpf": 280, "membarrier": 283,
}
SYSCALL_TABLES: Dict[str, Dict[str, int]] = {"x86_64": _X86_64, "aarch64": _AARCH64}

_machine = "aarch64" if platform.machine() in ("aarch64", "arm64") else platform.machine()
#: This machine's syscall numbers by name.
SYSCALLS: Dict[str, int] = SYSCALL_TABLES.get(_machine, {})

SYS_read = SYSCALLS.get("read", -1)
SYS_write = SYSCALLS.get("write", -1)
SYS_close = SYSCALLS.get("close", -1)
SYS_getpid = SYSCALLS.get("getpid", -1)
SYS_socket = SYSCALLS.get("socket", -1)
SYS_socketpair = SYSCALLS.get("socketpair", -1)
SYS_bind = SYSCALLS.get("bind", -1)
SYS_connect = SYSCALLS.get("connect", -1)
SYS_listen = SYSCALLS.get("listen", -1)
SYS_accept4 = SYSCALLS.get("accept4", -1)
SYS_shutdown = SYSCALLS.get("shutdown", -1)
SYS_sendto = SYSCALLS.get("sendto", -1)
SYS_recvfrom = SYSCALLS.get("recvfrom", -1)
SYS_sendmsg = SYSCALLS.get("sendmsg", -1)
SYS_recvmsg = SYSCALLS.get("recvmsg", -1)
SYS_sendmmsg = SYSCALLS.get("sendmmsg", -1)
SYS_recvmmsg = SYSCALLS.get("recvmmsg", -1)
SYS_setsockopt = SYSCALLS.get("setsockopt", -1)
SYS_getsockopt = SYSCALLS.get("getsockopt", -1)
SYS_pipe2 = SYSCALLS.get("pipe2", -1)
# Used by the tracer's doctor, which loads and attaches BPF programs itself.
SYS_bpf = SYSCALLS.get("bpf", -1)
SYS_membarrier = SYSCALLS.get("membarrier", -1)
SYS_perf_event_open = SYSCALLS.get("perf_event_open", -1)

# i386: the multiplexed socket system call and its sub-calls (<linux/net.h>).
SYS_socketcall_i386 = 102
SYS_SOCKET = 1
SYS_BIND = 2
SYS_CONNECT = 3
SYS_LISTEN = 4
SYS_ACCEPT = 5
SYS_GETSOCKNAME = 6
SYS_GETPEERNAME = 7
SYS_SOCKETPAIR = 8
SYS_SEND = 9
SYS_RECV = 10
SYS_SENDTO = 11
SYS_RECVFROM = 12
SYS_SHUTDOWN = 13
SYS_SETSOCKOPT = 14
SYS_GETSOCKOPT = 15
SYS_SENDMSG = 16
SYS_RECVMSG = 17
SYS_ACCEPT4 = 18
SYS_RECVMMSG = 19
SYS_SENDMMSG = 20

_MAX_ARGS = 6


# The common base of ctypes instances; ctypes does not export it by name.
_CData: type = ctypes.c_int.__mro__[-2]


def _as_long(arg: Any, keep: list[object]) -> int:
    """*arg* as the long the kernel gets; what must outlive the call goes in *keep*."""
    if arg is None:
        return 0
    if isinstance(arg, bool):
        return int(arg)
    if isinstance(arg, int):
        return arg
    if hasattr(arg, "fileno") and not isinstance(arg, _CData):
        return fileno(arg)
    extent = buffer_extent(arg)  # ctypes objects, byref(), pointers, buffers
    keep.append(extent.keep)
    return extent.address or 0


def _check_memory(number: int, args: tuple[Any, ...]) -> list[object]:
    """The checks the libc wrapper of *number* makes, for the socket and I/O calls.

    The length of a pointer argument is another argument: checked here for
    the calls rawsys wraps; other system calls get the bounds of each object.
    """
    if len(args) < 3:
        return []
    if number in (SYS_sendmsg, SYS_recvmsg):
        if isinstance(args[1], int):
            raise UnknownMemory("msg is a bare address")
        _pointer_to(args[1], msghdr, "msg")
        return _check_msghdrs(args[1], 1, MSGHDR_SIZE, number == SYS_recvmsg, "msg")
    elif number in (SYS_sendmmsg, SYS_recvmmsg):
        if isinstance(args[1], int):
            raise UnknownMemory("msgvec is a bare address")
        _mmsg_vector(args[1], args[2])
        if args[2]:
            return _check_msghdrs(args[1], args[2], ctypes.sizeof(mmsghdr),
                                  number == SYS_recvmmsg, "msgvec")
    elif number in (SYS_sendto, SYS_recvfrom, SYS_read, SYS_write):
        if isinstance(args[1], int) and args[1]:
            raise UnknownMemory("buf is a bare address")
        buffer_pointer(args[1], args[2], writable=number in (SYS_recvfrom, SYS_read))
    return []


def syscall(number: int, *args: Any) -> int:
    """``long syscall(long number, ...);`` — C's return: ``-1`` and ``errno``.

    Arguments may be ints, fds with ``fileno()``, ``None`` (NULL), ctypes
    objects, ``byref()``/``pointer()`` of them (their address), or Python
    buffers.  Pointer arguments are vouched for as the libc calls do (see
    ``rawsys.c.memory``): memory no live object holds gives ``-1``/``EFAULT``
    without a call.  For ``sendmsg``/``recvmsg``/``sendmmsg``/``recvmmsg``/
    ``sendto``/``recvfrom``/``read``/``write`` the whole argument is checked
    (the msghdr walk, the length); their pointer arguments may not be ints.
    Other calls pass an int argument as is: a pointer given as an int there
    is the caller's business, as in C.
    """
    if len(args) > _MAX_ARGS:
        raise TypeError(f"syscall takes at most {_MAX_ARGS} arguments after the number")
    if not isinstance(number, int) or number < 0:
        raise ValueError(f"no such system call number {number!r} on this machine")
    keep: list[object] = []  # buffer views that must live (and pin buffers) through the call
    try:
        keep.extend(_check_memory(number, args))
        longs = [_as_long(a, keep) for a in args]
    except UnknownMemory:
        return _efault()
    for value in longs:
        if not -(2**63) <= value < 2**64:
            raise OverflowError(f"syscall argument {value} does not fit a 64-bit register")
    longs += [0] * (_MAX_ARGS - len(longs))
    return int(LIBC["syscall"](number, *[c_long(v if v < 2**63 else v - 2**64) for v in longs]))


def socketcall_args(*args: Any) -> ctypes.Array[c_long]:
    """The ``unsigned long args[]`` block an i386 ``socketcall`` points at (for study)."""
    keep: list[object] = []
    block = (c_long * len(args))(*[_as_long(a, keep) for a in args])
    if keep:
        block.__dict__["_rawsys_keep"] = keep
    return block


__all__ = [name for name in dir() if name.startswith("SYS_")] + [
    "SYSCALLS", "SYSCALL_TABLES", "syscall", "socketcall_args",
]
