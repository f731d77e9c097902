"""What the Python-layer socket functions share: fd arguments, errno, waiting, addresses.

Internal to rawsys.  One error policy: a failed call becomes
``OSError(e, os.strerror(e))`` so Python picks the subclass
(``BrokenPipeError``, ``ConnectionRefusedError``, ...).  ``EINTR`` is retried
by the callers (signal handlers run in between, as PEP 475 wants).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: the C half of signal
import _socket
import ctypes
import errno
import operator
import os
import select
import signal
import socket as _pysocket
import struct
import time
from collections import deque
from ctypes import addressof, byref, c_int, pointer
from functools import partial
from itertools import chain
from operator import methodcaller
from typing import Any, Callable, List

from rawsys.c.constants import AF_INET, AF_INET6, AF_UNIX, MSG_DONTWAIT, SOL_SOCKET
from rawsys.c.libc import LIBC
from rawsys.c.structs import iovec, msghdr, socklen_t

SO_DOMAIN: int = _pysocket.SO_DOMAIN
# sizeof(struct sockaddr_storage) (<bits/socket.h>): room for any address.
SOCKADDR_STORAGE_SIZE = 128
_SUN_PATH_OFFSET = 2  # offsetof(struct sockaddr_un, sun_path)
_SUN_PATH_MAX = 108
_SA_FAMILY = struct.Struct("=H")
_getsockopt = LIBC["getsockopt"]
_raw_family = _socket.socket.family.__get__  # the C getter: an int, no enum conversion


INT_MIN = -(2**31)
INT_MAX = 2**31 - 1


def fileno(sock: Any) -> int:
    """An fd argument: an int, or anything with ``fileno()`` (a closed socket gives -1).

    ctypes would silently truncate an int beyond a C ``int`` (2**32 + 3 would
    become fd 3): that is ``OverflowError`` here.
    """
    if isinstance(sock, bool) or not (isinstance(sock, int) or hasattr(sock, "fileno")):
        raise TypeError(f"expected a socket or an int fd, not {type(sock).__name__}")
    fd = sock if isinstance(sock, int) else sock.fileno()
    if not isinstance(fd, int):
        raise TypeError("fileno() did not return an int")
    return c_int_arg(fd, "fd")


def c_int_arg(value: Any, name: str) -> int:
    """*value* as a C ``int``: ``TypeError`` if not an integer, ``OverflowError`` if out of range.

    Integers are taken as CPython's argument parser takes them (``__index__``,
    so ``True`` is 1 and ``1.0`` is refused); ctypes would convert an
    out-of-range int to ``c_int`` by truncation, silently.
    """
    if type(value) is not int:
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if not INT_MIN <= value <= INT_MAX:
        raise OverflowError(f"{name} {value} does not fit a C int")
    return int(value)


def oserror(e: int) -> OSError:
    """``OSError`` for errno *e*; Python maps it to the matching subclass."""
    return OSError(e, os.strerror(e))


def family_of(sock: Any, fd: int) -> int:
    """The address family of *sock*: from the socket object, else ``SO_DOMAIN``.

    Returns -1 when the kernel cannot say (not a socket, closed fd): the
    system call that follows reports the real error.
    """
    if isinstance(sock, _socket.socket):
        return int(_raw_family(sock))
    value = c_int(-1)
    size = socklen_t(ctypes.sizeof(value))
    if _getsockopt(fd, SOL_SOCKET, SO_DOMAIN, byref(value), byref(size)) != 0:
        return -1
    return int(value.value)


def timeout_of(sock: Any, flags: int) -> float | None:
    """How long a call on *sock* may wait for readiness, or ``None`` to give up now.

    A socket object with a timeout (``settimeout(5)``) is non-blocking at fd
    level; CPython's methods then wait with ``poll``.  rawsys does the same,
    unless the caller asked for ``MSG_DONTWAIT``.
    """
    if flags & MSG_DONTWAIT:
        return None
    gettimeout = getattr(sock, "gettimeout", None)
    if gettimeout is None:
        return None
    timeout = gettimeout()
    if timeout is None or timeout <= 0:
        return None
    return float(timeout)


class Waiter:
    """Waits for readiness after ``EAGAIN`` on a socket with a timeout."""

    __slots__ = ("deadline",)

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout

    def wait(self, fd: int, writing: bool) -> None:
        """Block until *fd* is ready or raise ``socket.timeout`` at the deadline.

        ``socket.timeout`` is what the socket module raises: an alias of
        ``TimeoutError`` since 3.10, an ``OSError`` subclass of its own on 3.9.
        """
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _pysocket.timeout("timed out")
        poller = select.poll()
        poller.register(fd, select.POLLOUT if writing else select.POLLIN)
        if not poller.poll(remaining * 1000):
            raise _pysocket.timeout("timed out")


def handle_errno(e: int, sock: Any, fd: int, flags: int, writing: bool,
                 waiter: Waiter | None) -> Waiter | None:
    """After a failed call: return the waiter to retry with, or raise the error.

    ``EINTR`` retries at once (signal handlers have run by then and may have
    raised); ``EAGAIN`` on a socket with a timeout waits for readiness.
    """
    if e == errno.EINTR:
        return waiter
    if e == errno.EAGAIN:
        if waiter is None:
            timeout = timeout_of(sock, flags)
            if timeout is None:
                raise oserror(e)
            waiter = Waiter(timeout)
        waiter.wait(fd, writing)
        return waiter
    raise oserror(e)


def encode_address(family: int, address: Any) -> bytes:
    """A ``struct sockaddr`` for *address*, as CPython's ``getsockaddrarg`` builds it."""
    if family == AF_UNIX or (family == -1 and isinstance(address, (str, bytes, os.PathLike))):
        if isinstance(address, (bytearray, memoryview)):
            address = bytes(address)
        if not isinstance(address, (str, bytes, os.PathLike)):
            raise TypeError(f"AF_UNIX address must be str, bytes or a path, not "
                            f"{type(address).__name__}")
        path = os.fsencode(address)
        if len(path) > _SUN_PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, "AF_UNIX path too long")
        return _SA_FAMILY.pack(AF_UNIX) + path
    if family == AF_INET:
        if not isinstance(address, tuple) or len(address) != 2:
            raise TypeError("AF_INET address must be a pair (host, port)")
        host, port = _host_and_port(address)
        return (_SA_FAMILY.pack(AF_INET) + _PORT.pack(port)
                + _pysocket.inet_pton(AF_INET, _resolve(host, AF_INET)) + bytes(8))
    if family == AF_INET6:
        if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
            raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
        host, port = _host_and_port(address)
        flowinfo = _index_arg(address[2], "flowinfo") if len(address) > 2 else 0
        scope = _index_arg(address[3], "scope_id") if len(address) > 3 else 0
        if not 0 <= flowinfo <= 0xFFFFF:
            raise OverflowError("flowinfo must be 0-1048575.")
        if not 0 <= scope <= 0xFFFFFFFF:
            raise OverflowError("scope_id must be 0-4294967295.")
        return (_SA_FAMILY.pack(AF_INET6) + _PORT_FLOW.pack(port, flowinfo)
                + _pysocket.inet_pton(AF_INET6, _resolve(host, AF_INET6).split("%")[0])
                + _SCOPE.pack(scope))
    raise OSError(errno.EAFNOSUPPORT, f"addresses of family {family} are not supported")


_PORT = struct.Struct("!H")
_PORT_FLOW = struct.Struct("!HI")
_SCOPE = struct.Struct("=I")


def _index_arg(value: Any, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None


def _host_and_port(address: tuple[Any, ...]) -> tuple[Any, int]:
    """The host and the checked port of an AF_INET/AF_INET6 address (CPython's errors)."""
    host = address[0]
    if not isinstance(host, (str, bytes, bytearray)):
        raise TypeError(f"host must be str or bytes, not {type(host).__name__}")
    port = _index_arg(address[1], "port")
    if not 0 <= port <= 0xFFFF:
        raise OverflowError("port must be 0-65535.")
    return host, port


def _resolve(host: Any, family: int) -> str:
    """*host* as a numeric address string of *family* (a name is looked up)."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("idna")
    return str(_pysocket.getaddrinfo(host, 0, family, _pysocket.SOCK_DGRAM)[0][4][0])


def decode_address(raw: bytes) -> Any:
    """The Python form of a ``struct sockaddr`` (CPython's ``makesockaddr``)."""
    if not raw:
        return None
    if len(raw) < 2:
        return raw
    family = _SA_FAMILY.unpack_from(raw)[0]
    if family == AF_UNIX:
        path = raw[_SUN_PATH_OFFSET:]
        if path[:1] == b"\0":
            return path  # abstract namespace: bytes, as CPython returns them
        end = path.find(b"\0")
        return os.fsdecode(path if end < 0 else path[:end])
    if family == AF_INET and len(raw) >= 8:
        port = struct.unpack_from("!H", raw, 2)[0]
        return (_pysocket.inet_ntop(AF_INET, raw[4:8]), port)
    if family == AF_INET6 and len(raw) >= 28:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        scope = struct.unpack_from("=I", raw, 24)[0]
        return (_pysocket.inet_ntop(AF_INET6, raw[8:24]), port, flowinfo, scope)
    return (family, raw[2:])


def close_quietly(fds: Any) -> None:
    """Close every fd in *fds*, ignoring errors (cleanup paths)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


__all__ = [
    "SOCKADDR_STORAGE_SIZE", "INT_MIN", "INT_MAX", "fileno", "c_int_arg", "oserror",
    "family_of", "timeout_of", "Waiter", "handle_errno", "encode_address", "decode_address",
    "close_quietly",
]


def fd_and_flags(sock: Any, flags: Any) -> tuple[int, int]:
    """The fd of *sock* (an int or anything with ``fileno()``) and *flags*, both C ints.

    Out-of-range values raise ``OverflowError``, wrong types ``TypeError``.
    """
    if type(sock) is int and INT_MIN <= sock <= INT_MAX:
        fd = sock
    else:
        try:
            fd = sock.fileno()
        except AttributeError:
            fd = fileno(sock)  # raises the TypeError or OverflowError
        if type(fd) is not int:
            fd = fileno(sock)
    if type(flags) is not int or not INT_MIN <= flags <= INT_MAX:
        flags = c_int_arg(flags, "flags")
    return fd, flags


def sendmsg_once(sock: Any, fd: int, data: bytes, ctrl: bytes, name: bytes | None,
                 flags: int) -> int:
    """One ``sendmsg`` of *data* with control bytes *ctrl* to the encoded address *name*.

    For the uncommon sends (any control data, oversized fd lists), on buffers
    built for this call from arguments already checked; retries ``EINTR`` and
    honours socket timeouts like the pooled paths.
    """
    data_c = ctypes.create_string_buffer(data, len(data))
    ctrl_c = ctypes.create_string_buffer(ctrl, len(ctrl))
    iov = iovec(addressof(data_c), len(data))
    msg = msghdr()
    msg.msg_iov = pointer(iov)
    msg.msg_iovlen = 1
    if ctrl:
        msg.msg_control = addressof(ctrl_c)
        msg.msg_controllen = len(ctrl)
    name_c = None
    if name is not None:
        name_c = ctypes.create_string_buffer(name, len(name))
        msg.msg_name = addressof(name_c)
        msg.msg_namelen = len(name)
    waiter: Waiter | None = None
    while True:
        sent = LIBC["sendmsg"](fd, msg, flags)
        if sent >= 0:
            return int(sent)
        waiter = handle_errno(ctypes.get_errno(), sock, fd, flags, True, waiter)


def address_arg(sock: Any, fd: int, address: Any) -> bytes | None:
    """*address* encoded for *sock*'s family, or ``None`` (checked before any buffer is touched)."""
    if address is None:
        return None
    return encode_address(family_of(sock, fd), address)


# Cleanup after an exception, when the kernel has installed fds: signal
# handlers must not cut it short.  With every signal blocked in this thread,
# only a handler whose signal had already arrived can still run (and raise),
# once; callers therefore call release_fds a few times in nested
# ``try``/``except`` and it is idempotent.
_ALL_SIGNALS = signal.valid_signals()

# The receivers' except clauses block every signal *first*, before calling
# any Python function (each call is a point where a handler may run and
# raise).  signal.pthread_sigmask cannot do that: it runs the handlers that
# are due before it returns the old mask, so a raise loses the mask to
# restore.  libc's pthread_sigmask through ctypes runs no handler; it writes
# the old mask into the caller's buffer before anything can raise.
_pthread_sigmask = LIBC["pthread_sigmask"]
SigSet = ctypes.c_char * 128  # sigset_t: glibc's 1024 bits
_FULL_SIGSET = SigSet(*([b"\xff"] * 128))  # sigfillset (glibc keeps its own two out)
block_signals: Callable[[Any], int] = partial(_pthread_sigmask, signal.SIG_BLOCK, _FULL_SIGSET)
"""``block_signals(saved)``: block every signal in this thread, the old mask into *saved*
(a ``SigSet``); a C-level callable, so no handler runs between the block and the save."""
_setmask = partial(_pthread_sigmask, signal.SIG_SETMASK)
# What a SigSet holds when block_signals has not saved a mask in it: no real
# mask has every bit set (SIGKILL and SIGSTOP cannot be blocked), and the
# kernel writes the first 8 bytes (its sigset size) of the old mask.
_NOT_SAVED = b"\xff" * 8


def new_sigset() -> Any:
    """A ``SigSet`` for ``block_signals``, marked as holding no saved mask."""
    saved = SigSet()
    ctypes.memmove(saved, _NOT_SAVED, 8)
    return saved


def restore_signals(saved: Any) -> None:
    """Put back the mask ``block_signals`` saved in *saved*, if it did; mark *saved* unused.

    (On 3.9/3.10 a handler may raise before ``block_signals`` is even called:
    then nothing was saved and the mask is left as it is.)
    """
    if saved.raw[:8] != _NOT_SAVED:
        try:
            _setmask(saved, None)
        finally:
            ctypes.memmove(saved, _NOT_SAVED, 8)
_sigmask = _signal.pthread_sigmask  # the C function: signal.pthread_sigmask wraps it in Python
_closerange = os.closerange
_drain: Callable[[Any], None] = deque(maxlen=0).extend


def release_fds(find: Callable[[], List[int]], *forget: Callable[[], Any]) -> None:
    """Close the fds ``find()`` lists, with every signal blocked meanwhile.

    *find* is pure: it reads which fds are still owned (``[]`` once released).
    Each *forget* -- a C-level callable such as a list's ``clear`` or a
    ``partial`` of a memoryview's ``__setitem__`` -- records that they are
    released; they run in the same C-level pass as the closes
    (``os.closerange`` per fd, errors ignored), so no Python code, hence no
    signal handler, runs between forgetting the fds and closing the last of
    them: a repeated call after an interruption neither leaks one nor closes
    one twice.
    """
    # signal.pthread_sigmask runs the handlers of signals already due before
    # it returns, and may raise from there: read the mask first (a no-op
    # block, harmless to lose), then block, inside the try that restores it.
    old = _sigmask(signal.SIG_BLOCK, ())
    try:
        _sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
        fds = find()
        _drain(chain(map(_call, forget), map(_closerange, fds, map(_plus_one, fds))))
    finally:
        _sigmask(signal.SIG_SETMASK, old)


_call = methodcaller("__call__")
_plus_one = (1).__add__
