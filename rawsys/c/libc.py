"""libc's socket calls with their C names, argument order and return values.

Every function here returns what C returns: ``-1`` on failure with the error
in ``errno``, read with ``get_errno()``.  Nothing here raises for a failed
call; exceptions are for misuse a C compiler or fortified glibc would catch
(wrong types, a length past the end of a Python buffer).

The prototypes are data: ``SIGNATURES`` maps each C name to its
``(argtypes, restype)``; ``load_libc`` applies the table once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import operator
import os
import sys
import typing
from ctypes import POINTER, c_int, c_long, c_size_t, c_ssize_t, c_uint, c_void_p
from typing import Any, Callable, Dict, List, Tuple

from rawsys.c.buffers import (
    Buffer,
    BufferOverflowDetected,
    Extent,
    UnknownMemory,
    _byref_offset,
    _CArgObject,
    buffer_extent,
    buffer_pointer,
)
from rawsys.c.memory import MSGHDR_SIZE, KnownMemory, check_msghdr, memory_root
from rawsys.c.structs import (
    cmsghdr,
    mmsghdr,
    msghdr,
    socklen_t,
    timespec,
)

Signature = Tuple[List[Any], Any]

# name -> (argtypes, restype), transcribed from the prototypes in
# <sys/socket.h>, <unistd.h>, <fcntl.h> and <signal.h>.  syscall(2) is variadic; it is
# declared with seven longs and always called with all of them, which is how
# the x86-64 and aarch64 calling conventions pass variadic integers anyway.
SIGNATURES: Dict[str, Signature] = {
    "socket": ([c_int, c_int, c_int], c_int),
    "socketpair": ([c_int, c_int, c_int, POINTER(c_int)], c_int),
    "bind": ([c_int, c_void_p, socklen_t], c_int),
    "connect": ([c_int, c_void_p, socklen_t], c_int),
    "listen": ([c_int, c_int], c_int),
    "accept4": ([c_int, c_void_p, POINTER(socklen_t), c_int], c_int),
    "shutdown": ([c_int, c_int], c_int),
    "sendmsg": ([c_int, POINTER(msghdr), c_int], c_ssize_t),
    "recvmsg": ([c_int, POINTER(msghdr), c_int], c_ssize_t),
    "sendmmsg": ([c_int, POINTER(mmsghdr), c_uint, c_int], c_int),
    "recvmmsg": ([c_int, POINTER(mmsghdr), c_uint, c_int, POINTER(timespec)], c_int),
    "send": ([c_int, c_void_p, c_size_t, c_int], c_ssize_t),
    "recv": ([c_int, c_void_p, c_size_t, c_int], c_ssize_t),
    "sendto": ([c_int, c_void_p, c_size_t, c_int, c_void_p, socklen_t], c_ssize_t),
    "recvfrom": ([c_int, c_void_p, c_size_t, c_int, c_void_p, POINTER(socklen_t)], c_ssize_t),
    "setsockopt": ([c_int, c_int, c_int, c_void_p, socklen_t], c_int),
    "getsockopt": ([c_int, c_int, c_int, c_void_p, POINTER(socklen_t)], c_int),
    "close": ([c_int], c_int),
    "read": ([c_int, c_void_p, c_size_t], c_ssize_t),
    "write": ([c_int, c_void_p, c_size_t], c_ssize_t),
    "pipe2": ([POINTER(c_int), c_int], c_int),
    "syscall": ([c_long] * 7, c_long),
    "__cmsg_nxthdr": ([POINTER(msghdr), POINTER(cmsghdr)], POINTER(cmsghdr)),
    # The Pythonic layer's fd cleanup blocks signals with it (rawsys._sockutil).
    "pthread_sigmask": ([c_int, c_void_p, c_void_p], c_int),
}


def load_libc(signatures: Dict[str, Signature] = SIGNATURES, *,
              prototyped: bool = True) -> Dict[str, Any]:
    """Open the C library and return its functions, prototyped from *signatures*.

    With ``prototyped=False`` only the return types are set (``argtypes`` is
    ``None``): see ``LIBC_FAST``.
    """
    name = ctypes.util.find_library("c") or "libc.so.6"
    # A CDLL of its own: ctypes caches one function object per CDLL and name,
    # so the twin must not share the prototyped table's objects.
    lib = ctypes.CDLL(name, use_errno=True)
    functions: Dict[str, Any] = {}
    for fname, (argtypes, restype) in signatures.items():
        function = getattr(lib, fname)
        function.argtypes = argtypes if prototyped else None
        function.restype = restype
        functions[fname] = function
    return functions


#: The prototyped libc functions by C name, for code that wants no checks.
LIBC: Dict[str, Any] = load_libc()

#: The same functions from the same table with ``argtypes = None``, for hot paths.
#: A prototyped call converts each argument through ``c_int.from_param`` and
#: friends, which allocates a ctypes object per argument (~0.25 us a call for
#: ``sendmsg``).  Without a prototype ctypes passes a Python int as a C int
#: and a ``byref()``/pointer/array as its address, with no allocation -- and
#: with no checks at all: an int beyond 32 bits is silently truncated
#: (``ctypes.ArgumentError`` only past 64 bits), a ``str`` or ``bytes`` is
#: passed as a pointer, a float is refused with ``ctypes.ArgumentError``.
#: So callers must range-check first and pass only Python ints that fit a C
#: ``int`` and ``byref()``/pointer/array objects of the prototype's type.
#: The return type still comes from ``SIGNATURES``.
LIBC_FAST: Dict[str, Any] = load_libc(prototyped=False)
_c: Callable[[str], Any] = LIBC.__getitem__


# --- errno ---------------------------------------------------------------------

def get_errno() -> int:
    """``errno`` as the last call through rawsys left it (thread-local)."""
    return ctypes.get_errno()


def set_errno(value: int) -> int:
    """Set ``errno``; returns the old value."""
    return ctypes.set_errno(value)


def strerror(errnum: int) -> str:
    """``strerror(3)``."""
    return os.strerror(errnum)


def perror(s: str | None = None) -> None:
    """``perror(3)``: print *s*, a colon and the text of ``errno`` to stderr."""
    if s is not None and not isinstance(s, str):
        raise TypeError(f"perror takes a str or None, not {type(s).__name__}")
    text = strerror(get_errno())
    sys.stderr.write(f"{s}: {text}\n" if s else f"{text}\n")
    sys.stderr.flush()


# --- argument conversion ---------------------------------------------------------

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_UIO_MAXIOV = 1024  # <linux/uio.h>: the most iovecs, and mmsghdrs, one call takes
_CData: type = ctypes.c_int.__mro__[-2]
_Call = typing.TypeVar("_Call", bound=Callable[..., int])


def _efault_on_unknown_memory(function: _Call) -> _Call:
    """A call handed a pointer into memory no live object holds returns -1/EFAULT."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> int:
        try:
            return function(*args, **kwargs)
        except UnknownMemory:
            return _efault()

    return typing.cast(_Call, call)
_UINT_MAX = 2**32 - 1


def _c_int(value: Any, name: str, low: int = _INT_MIN, high: int = _INT_MAX) -> int:
    """An ``int`` argument, refused if ctypes would silently truncate it.

    ctypes converts 2**32 + 3 to 3 without a word; C at least warns.  Out of
    range is ``OverflowError`` (as ``os`` functions do), a non-integer
    ``TypeError``.
    """
    if type(value) is int and low <= value <= high:  # the common case, first
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not low <= value <= high:
        raise OverflowError(f"{name} {value} does not fit a C {'int' if low else 'unsigned'}")
    return int(value)


def fileno(fd: Fd) -> int:
    """An fd argument: an int, or anything with ``fileno()``."""
    if type(fd) is int and _INT_MIN <= fd <= _INT_MAX:
        return fd
    if isinstance(fd, int) and not isinstance(fd, bool):
        return _c_int(fd, "fd")
    get = getattr(fd, "fileno", None)
    if get is None:
        raise TypeError(f"an fd must be an int or have fileno(), not {type(fd).__name__}")
    result = get()
    if not isinstance(result, int):
        raise TypeError("fileno() did not return an int")
    return _c_int(result, "fd")


def _pointer_to(obj: Any, ctype: Any, name: str) -> Any:
    """Accept ``obj``, ``pointer(obj)`` or ``byref(obj)`` for a ``ctype *`` argument."""
    if obj is None:
        return None
    if isinstance(obj, ctype):
        return ctypes.byref(obj)
    if isinstance(obj, ctypes._Pointer) and issubclass(obj._type_, ctype):
        return obj
    if isinstance(obj, ctypes.Array) and issubclass(obj._type_, ctype):
        return obj
    target = getattr(obj, "_obj", None)
    if isinstance(target, ctype):
        return obj
    if isinstance(target, ctypes.Array) and issubclass(target._type_, ctype):
        # ctypes refuses byref(array) for a POINTER(item) argument; C passes &array[0].
        address = ctypes.addressof(target) + _byref_offset(obj)
        return ctypes.cast(c_void_p(address), POINTER(ctype))
    raise TypeError(f"{name}: expected {ctype.__name__}, a pointer or byref() to one, "
                    f"not {type(obj).__name__}")


def _sized(obj: Any, size: int, name: str, writable: bool) -> Extent:
    """The memory a pointer argument points at, at least *size* bytes of it."""
    extent = buffer_extent(obj)
    if extent.address is None:
        raise UnknownMemory(f"{name} is NULL")
    if writable and not extent.writable:
        raise TypeError(f"{name} points at read-only {extent.what}, which the kernel writes")
    if extent.capacity < size:
        raise BufferOverflowDetected(
            f"buffer overflow detected: {name} needs {size} bytes, "
            f"{extent.capacity} follow in the {extent.what}")
    return extent


def _holder_root(extent: Extent) -> Any:
    holder = extent.keep[1] if type(extent.keep) is tuple else extent.keep
    if not isinstance(holder, _CData):
        raise UnknownMemory(f"{extent.what} is not memory a ctypes object holds")
    return memory_root(holder)


def _check_msghdrs(msg: Any, count: int, stride: int, writing: bool,
                   name: str) -> List[object]:
    """Vouch for *count* msghdrs at *msg* (``stride`` bytes apart) and all they point at.

    Raises ``UnknownMemory`` (the caller returns ``-1``/``EFAULT``),
    ``BufferOverflowDetected`` or ``TypeError``.  Returns the objects holding
    the memory, for the caller to keep until the call returns.
    """
    target: Any = typing.cast(Any, msg)._obj if type(msg) is _CArgObject else msg
    if (type(target) is msghdr and target._b_base_ is None and target._b_needsfree_
            and (target is msg or _byref_offset(msg) == 0)):
        root: Any = target  # the common case, a msghdr owning its memory
        address = ctypes.addressof(target)
    else:
        extent = _sized(msg, (count - 1) * stride + MSGHDR_SIZE if count else 0, name, False)
        root = _holder_root(extent)
        address = typing.cast(int, extent.address)
    known = KnownMemory(root, msg)
    held: List[object] = [root]
    for i in range(min(count, _UIO_MAXIOV)):  # the kernel takes at most UIO_MAXIOV
        check_msghdr(root, address + i * stride, writing, known,
                     name if count == 1 and stride == MSGHDR_SIZE else f"{name}[{i}].msg_hdr",
                     held)
    return held


def _efault() -> int:
    """What C returns for memory the kernel cannot use: -1, errno EFAULT."""
    ctypes.set_errno(errno.EFAULT)
    return -1


def _int_array(obj: Any, count: int, name: str) -> Any:
    pointer = _pointer_to(obj, c_int, name)
    extent = buffer_extent(obj)
    if extent.address is None:
        raise UnknownMemory(f"{name} is NULL")
    length = extent.capacity // ctypes.sizeof(c_int)
    if length < count:
        raise BufferOverflowDetected(f"{name} must hold {count} ints, it holds {length}")
    return pointer


def _socklen(length: int) -> int:
    return _c_int(length, "socklen_t length", 0, _UINT_MAX)


def _socklen_pointer(obj: Any) -> Any:
    pointer = _pointer_to(obj, socklen_t, "addrlen")
    if obj is not None:
        _sized(obj, ctypes.sizeof(socklen_t), "addrlen", True)
    return pointer


def _socklen_value(obj: Any) -> int | None:
    """``*addrlen``, read once the pointer is vouched for."""
    if obj is None:
        return None
    _pointer_to(obj, socklen_t, "addrlen")
    extent = _sized(obj, ctypes.sizeof(socklen_t), "addrlen", True)
    return int(socklen_t.from_address(typing.cast(int, extent.address)).value)


# --- the calls -----------------------------------------------------------------

if typing.TYPE_CHECKING:
    from ctypes import Array, _Pointer
    from ctypes import _CArgObject as ByRef  # what byref() returns

    from _typeshed import FileDescriptorLike, ReadableBuffer

    # What each kind of C argument accepts, as ctypes types: the object itself
    # (passed as its address), pointer() or byref() of it, or an array of it.
    Fd = FileDescriptorLike  # an int, or anything with fileno()
    IntArrayArg = typing.Union[Array[c_int], _Pointer[c_int], ByRef]  # int sv[2]
    MsgArg = typing.Union[msghdr, _Pointer[msghdr], ByRef]  # struct msghdr *
    MmsgArg = typing.Union[mmsghdr, Array[mmsghdr], _Pointer[mmsghdr], ByRef]  # struct mmsghdr *
    TimespecArg = typing.Union[timespec, _Pointer[timespec], ByRef, None]  # struct timespec *
    SocklenArg = typing.Union[socklen_t, _Pointer[socklen_t], ByRef, None]  # socklen_t *
    # struct sockaddr * and an option's void *: any buffer (bytes, bytearray, a
    # ctypes structure or array, c_void_p(address)), byref() of one, or None for
    # NULL.  (Data buffers keep rawsys.c.buffers' Buffer.)
    BufferArg = typing.Union[ReadableBuffer, ByRef, None]


def socket(domain: int, type: int, protocol: int) -> int:
    """``int socket(int domain, int type, int protocol);``"""
    return int(_c("socket")(_c_int(domain, "domain"), _c_int(type, "type"),
                            _c_int(protocol, "protocol")))


@_efault_on_unknown_memory
def socketpair(domain: int, type: int, protocol: int, sv: IntArrayArg) -> int:
    """``int socketpair(int domain, int type, int protocol, int sv[2]);`` — fills *sv*."""
    return int(_c("socketpair")(_c_int(domain, "domain"), _c_int(type, "type"),
                                _c_int(protocol, "protocol"), _int_array(sv, 2, "sv")))


@_efault_on_unknown_memory
def bind(sockfd: Fd, addr: BufferArg, addrlen: int) -> int:
    """``int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen);``"""
    ptr, length, _keep = buffer_pointer(addr, addrlen)
    return int(_c("bind")(fileno(sockfd), ptr, _socklen(length)))


@_efault_on_unknown_memory
def connect(sockfd: Fd, addr: BufferArg, addrlen: int) -> int:
    """``int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen);``"""
    ptr, length, _keep = buffer_pointer(addr, addrlen)
    return int(_c("connect")(fileno(sockfd), ptr, _socklen(length)))


def listen(sockfd: Fd, backlog: int) -> int:
    """``int listen(int sockfd, int backlog);``"""
    return int(_c("listen")(fileno(sockfd), _c_int(backlog, "backlog")))


@_efault_on_unknown_memory
def accept4(sockfd: Fd, addr: BufferArg, addrlen: SocklenArg, flags: int) -> int:
    """``int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);``"""
    ptr, _length, _keep = buffer_pointer(addr, _socklen_value(addrlen), writable=True)
    return int(_c("accept4")(fileno(sockfd), ptr, _socklen_pointer(addrlen),
                             _c_int(flags, "flags")))


def shutdown(sockfd: Fd, how: int) -> int:
    """``int shutdown(int sockfd, int how);``"""
    return int(_c("shutdown")(fileno(sockfd), _c_int(how, "how")))


_sendmsg_fast = LIBC_FAST["sendmsg"]
_recvmsg_fast = LIBC_FAST["recvmsg"]


def _msghdr_call(call: Callable[[int, Any, int], int], sockfd: Fd, msg: MsgArg, flags: int,
                 writable: bool) -> int:
    """``call(sockfd, msg, flags)`` (sendmsg or recvmsg) once every pointer in *msg* is checked."""
    fd, c_flags = fileno(sockfd), _c_int(flags, "flags")
    pointer = _pointer_to(msg, msghdr, "msg")
    try:
        held = _check_msghdrs(msg, 1, MSGHDR_SIZE, writable, "msg")
    except UnknownMemory:
        return _efault()
    result: int = call(fd, pointer, c_flags)  # all checked: see LIBC_FAST
    del held  # alive through the call, whatever other threads do to the structures
    return result


def sendmsg(sockfd: Fd, msg: MsgArg, flags: int) -> int:
    """``ssize_t sendmsg(int sockfd, const struct msghdr *msg, int flags);``

    Every pointer in *msg* (``msg_name``, ``msg_iov`` and each iovec,
    ``msg_control``) must lie in memory a live object reachable from *msg*
    holds, else ``-1`` with ``errno`` ``EFAULT`` and nothing is sent.
    """
    return _msghdr_call(_sendmsg_fast, sockfd, msg, flags, False)


def recvmsg(sockfd: Fd, msg: MsgArg, flags: int) -> int:
    """``ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags);``

    As ``sendmsg``, and every buffer the kernel writes (``msg_name``, the
    iovecs' buffers, ``msg_control``) must be writable: ``bytes`` raises
    ``TypeError``.
    """
    return _msghdr_call(_recvmsg_fast, sockfd, msg, flags, True)


def _mmsg_vector(msgvec: Any, vlen: int) -> Any:
    pointer = _pointer_to(msgvec, mmsghdr, "msgvec")
    if not isinstance(vlen, int) or vlen < 0:
        raise ValueError(f"vlen must be a non-negative int, not {vlen!r}")
    _c_int(vlen, "vlen", 0, _UINT_MAX)
    extent = buffer_extent(msgvec)
    length = extent.capacity // ctypes.sizeof(mmsghdr)
    if extent.address is not None and vlen > length:
        raise BufferOverflowDetected(f"vlen {vlen} is larger than msgvec ({length} entries)")
    return pointer


def sendmmsg(sockfd: Fd, msgvec: MmsgArg, vlen: int, flags: int) -> int:
    """``int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);``

    Each entry's msghdr is checked as ``sendmsg`` checks its *msg*.
    """
    fd, c_flags = fileno(sockfd), _c_int(flags, "flags")
    vector = _mmsg_vector(msgvec, vlen)
    try:
        held = _check_msghdrs(msgvec, vlen, ctypes.sizeof(mmsghdr), False, "msgvec") \
            if vlen else []
    except UnknownMemory:
        return _efault()
    result = int(_c("sendmmsg")(fd, vector, vlen, c_flags))
    del held
    return result


def recvmmsg(sockfd: Fd, msgvec: MmsgArg, vlen: int, flags: int,
             timeout: TimespecArg = None) -> int:
    """``int recvmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags,
    struct timespec *timeout);``

    Each entry's msghdr is checked as ``recvmsg`` checks its *msg*; the
    kernel writes the remaining time into *timeout*, which must be writable.
    """
    fd, c_flags = fileno(sockfd), _c_int(flags, "flags")
    vector = _mmsg_vector(msgvec, vlen)
    timeout_pointer = _pointer_to(timeout, timespec, "timeout")
    try:
        if timeout is not None:
            _sized(timeout, ctypes.sizeof(timespec), "timeout", True)
        held = _check_msghdrs(msgvec, vlen, ctypes.sizeof(mmsghdr), True, "msgvec") \
            if vlen else []
    except UnknownMemory:
        return _efault()
    result = int(_c("recvmmsg")(fd, vector, vlen, c_flags, timeout_pointer))
    del held
    return result


@_efault_on_unknown_memory
def send(sockfd: Fd, buf: Buffer, len: int, flags: int) -> int:
    """``ssize_t send(int sockfd, const void *buf, size_t len, int flags);``"""
    ptr, length, _keep = buffer_pointer(buf, len)
    return int(_c("send")(fileno(sockfd), ptr, length, _c_int(flags, "flags")))


@_efault_on_unknown_memory
def recv(sockfd: Fd, buf: Buffer, len: int, flags: int) -> int:
    """``ssize_t recv(int sockfd, void *buf, size_t len, int flags);``

    Like glibc's fortified ``__recv_chk``, *len* past the end of *buf* is
    refused (``BufferOverflowDetected``) before the call.
    """
    ptr, length, _keep = buffer_pointer(buf, len, writable=True)
    return int(_c("recv")(fileno(sockfd), ptr, length, _c_int(flags, "flags")))


@_efault_on_unknown_memory
def sendto(sockfd: Fd, buf: Buffer, len: int, flags: int, dest_addr: BufferArg,
           addrlen: int) -> int:
    """``ssize_t sendto(int, const void *buf, size_t len, int flags,
    const struct sockaddr *dest_addr, socklen_t addrlen);``"""
    ptr, length, _keep = buffer_pointer(buf, len)
    aptr, alen, _akeep = buffer_pointer(dest_addr, addrlen)
    return int(_c("sendto")(fileno(sockfd), ptr, length, _c_int(flags, "flags"), aptr,
                            _socklen(alen)))


@_efault_on_unknown_memory
def recvfrom(sockfd: Fd, buf: Buffer, len: int, flags: int, src_addr: BufferArg,
             addrlen: SocklenArg) -> int:
    """``ssize_t recvfrom(int, void *buf, size_t len, int flags,
    struct sockaddr *src_addr, socklen_t *addrlen);``"""
    ptr, length, _keep = buffer_pointer(buf, len, writable=True)
    aptr, _alen, _akeep = buffer_pointer(src_addr, _socklen_value(addrlen), writable=True)
    return int(_c("recvfrom")(fileno(sockfd), ptr, length, _c_int(flags, "flags"), aptr,
                              _socklen_pointer(addrlen)))


@_efault_on_unknown_memory
def setsockopt(sockfd: Fd, level: int, optname: int, optval: BufferArg, optlen: int) -> int:
    """``int setsockopt(int sockfd, int level, int optname, const void *optval,
    socklen_t optlen);``"""
    ptr, length, _keep = buffer_pointer(optval, optlen)
    return int(_c("setsockopt")(fileno(sockfd), _c_int(level, "level"),
                                _c_int(optname, "optname"), ptr, _socklen(length)))


@_efault_on_unknown_memory
def getsockopt(sockfd: Fd, level: int, optname: int, optval: BufferArg,
               optlen: SocklenArg) -> int:
    """``int getsockopt(int sockfd, int level, int optname, void *optval,
    socklen_t *optlen);``"""
    ptr, _length, _keep = buffer_pointer(optval, _socklen_value(optlen), writable=True)
    return int(_c("getsockopt")(fileno(sockfd), _c_int(level, "level"),
                                _c_int(optname, "optname"), ptr, _socklen_pointer(optlen)))


def close(fd: Fd) -> int:
    """``int close(int fd);``"""
    return int(_c("close")(fileno(fd)))


@_efault_on_unknown_memory
def read(fd: Fd, buf: Buffer, count: int) -> int:
    """``ssize_t read(int fd, void *buf, size_t count);``"""
    ptr, length, _keep = buffer_pointer(buf, count, writable=True)
    return int(_c("read")(fileno(fd), ptr, length))


@_efault_on_unknown_memory
def write(fd: Fd, buf: Buffer, count: int) -> int:
    """``ssize_t write(int fd, const void *buf, size_t count);``"""
    ptr, length, _keep = buffer_pointer(buf, count)
    return int(_c("write")(fileno(fd), ptr, length))


@_efault_on_unknown_memory
def pipe2(pipefd: IntArrayArg, flags: int) -> int:
    """``int pipe2(int pipefd[2], int flags);`` — fills *pipefd*."""
    return int(_c("pipe2")(_int_array(pipefd, 2, "pipefd"), _c_int(flags, "flags")))


__all__ = [
    "SIGNATURES", "LIBC", "LIBC_FAST", "load_libc", "get_errno", "set_errno", "strerror",
    "perror", "fileno",
    "socket", "socketpair", "bind", "connect", "listen", "accept4", "shutdown",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "send", "recv", "sendto", "recvfrom",
    "setsockopt", "getsockopt", "close", "read", "write", "pipe2",
]
