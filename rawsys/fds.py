"""Passing descriptors: drop-ins for ``socket.send_fds``/``socket.recv_fds``, the one-fd pair.

``send_fds``/``recv_fds`` take CPython's arguments and return CPython's
values; they call libc's ``sendmsg``/``recvmsg`` through ctypes on
preallocated ``msghdr``/``iovec``/control buffers (a small pool, so the calls
are thread-safe and reentrant without allocating those per call).  Where
CPython is wrong they differ:

* ``flags`` and ``address`` are honoured (``MSG_PEEK``, ``MSG_DONTWAIT``);
* received fds are close-on-exec (``MSG_CMSG_CLOEXEC``) unless
  ``cloexec=False`` is passed;
* ``MSG_CTRUNC`` raises ``ControlTruncatedError``, which owns the fds that
  did arrive until the caller takes them;
* fds given to an ``AF_INET``/``AF_INET6`` socket raise
  ``FdPassingUnsupportedError`` (the kernel would drop them silently).

Every argument is converted and checked before a pooled buffer is written,
so a call that raises leaves nothing behind that a later call could send.

Ownership: every fd the kernel installs in this process is either returned
to the caller (who closes it) or closed here before an exception leaves --
also when the exception is a signal handler's ``KeyboardInterrupt``, and
when a second one lands in the cleanup (see ``_sockutil.release_fds``).
``send_fds`` never closes the fds it sends; they stay the caller's.
"""

from __future__ import annotations

import _socket
import array
import ctypes
import errno
import socket as _pysocket
import struct
import sys
from ctypes import addressof, byref, c_char, pointer
from functools import partial
from operator import add
from typing import Any, Iterable, List, Tuple

from rawsys._sockutil import (
    SOCKADDR_STORAGE_SIZE,
    Waiter,
    address_arg,
    block_signals,
    c_int_arg,
    decode_address,
    family_of,
    fd_and_flags,
    fileno,
    handle_errno,
    new_sigset,
    release_fds,
    restore_signals,
    sendmsg_once,
)
from rawsys.c.cmsg import CMSG_LEN, CMSG_SPACE
from rawsys.c.constants import (
    AF_INET,
    AF_INET6,
    MSG_CMSG_CLOEXEC,
    MSG_CTRUNC,
    SCM_MAX_FD,
    SCM_RIGHTS,
    SOL_SOCKET,
)
from rawsys.c.libc import LIBC, LIBC_FAST
from rawsys.c.structs import iovec, msghdr
from rawsys.control import CMSGHDR, HDR_SIZE, RIGHTS1_HEADER, received_fds, rights_payload
from rawsys.errors import ControlTruncatedError, FdPassingUnsupportedError, Received

_sendmsg = LIBC["sendmsg"]
_recvmsg = LIBC["recvmsg"]
# Unprototyped twins: only range-checked ints and prebuilt byref()s go in.
_sendmsg_fast = LIBC_FAST["sendmsg"]
_recvmsg_fast = LIBC_FAST["recvmsg"]
_get_errno = ctypes.get_errno

_DATA_CAP = 65536  # pooled states keep data buffers up to this size
_CTRL_CAP = CMSG_SPACE(4 * (SCM_MAX_FD + 1)) + CMSG_SPACE(12) + CMSG_SPACE(4)
_RIGHTS1 = struct.Struct("=Qiii")  # a cmsghdr followed by one int: the common case
_LEN_RIGHTS1 = CMSG_LEN(4)
_SPACE_RIGHTS1 = CMSG_SPACE(4)
_pack_rights1 = _RIGHTS1.pack_into
_HDR = CMSGHDR
_SocketType = _socket.socket
_PySocketType = _pysocket.socket  # what socket.socket() and socketpair() return
_raw_family = _socket.socket.family.__get__  # the C getter: an int, no enum conversion
# Families whose generic SOL_SOCKET handler accepts SCM_RIGHTS and drops it.
_NO_RIGHTS = frozenset((AF_INET, AF_INET6))
# CPython sizes the control buffer CMSG_LEN(maxfds * sizeof(int)): the kernel
# then installs at most maxfds fds.  recv_fds does the same.
_RECV_ROOM = [CMSG_LEN(4 * n) for n in range(SCM_MAX_FD + 1)]
_BYTE = [bytes((i,)) for i in range(256)]  # the one-byte bytes objects
_MAXFDS_LIMIT = (2**31 - 1 - HDR_SIZE) // 4  # beyond this CMSG_LEN overflows, as in CPython


class _iovec_bytes(ctypes.Structure):
    """``struct iovec`` with ``iov_base`` typed ``char *``: assigning a ``bytes``
    points it at the object's storage and keeps the object alive, so sends
    need no copy.  Same layout as ``rawsys.c.structs.iovec`` (checked below).
    """

    _fields_ = [("iov_base", ctypes.c_char_p), ("iov_len", ctypes.c_size_t)]


if ctypes.sizeof(_iovec_bytes) != ctypes.sizeof(iovec):  # pragma: no cover
    raise ImportError("_iovec_bytes does not match struct iovec")


class _State:
    """One msghdr with its iovecs, data, control and name buffers (pooled).

    ``msg`` and ``iov`` receive into ``data`` and ``ctrl``; ``send_msg`` and
    ``send_iov`` send straight from a ``bytes`` object, with their own control
    buffer ``send_ctrl`` (so a one-fd header laid out once stays there).
    """

    __slots__ = ("msg", "iov", "send_msg", "send_iov", "data", "view", "ctrl", "ctrl_i",
                 "send_ctrl", "send_fd", "name", "named", "keep", "data_cap", "msg_ba",
                 "msg_q", "msg_i", "msg_ref", "send_ref", "send_data", "send_layout",
                 "recv_len", "ctrl_q", "sigmask")

    def __init__(self, data_cap: int = _DATA_CAP, ctrl_cap: int = _CTRL_CAP) -> None:
        self.data_cap = data_cap
        self.data = bytearray(data_cap)
        self.view = memoryview(self.data)
        self.ctrl = bytearray(ctrl_cap)
        self.ctrl_i = memoryview(self.ctrl).cast("i")
        self.ctrl_q = memoryview(self.ctrl).cast("Q")
        self.send_ctrl = bytearray(ctrl_cap)
        # The fd of a one-fd SCM_RIGHTS message, as a C int in place.
        self.send_fd = memoryview(self.send_ctrl)[HDR_SIZE : HDR_SIZE + 4].cast("i")
        self.name = bytearray(SOCKADDR_STORAGE_SIZE)
        data_c = (c_char * data_cap).from_buffer(self.data) if data_cap else None
        ctrl_c = (c_char * ctrl_cap).from_buffer(self.ctrl)
        send_ctrl_c = (c_char * ctrl_cap).from_buffer(self.send_ctrl)
        name_c = (c_char * SOCKADDR_STORAGE_SIZE).from_buffer(self.name)
        self.iov = iovec()
        self.iov.iov_base = addressof(data_c) if data_c is not None else None
        # The receiving msghdr lives in a bytearray: its result fields are read
        # with one struct call and reset through memoryviews (no ctypes stores).
        self.msg_ba = bytearray(ctypes.sizeof(msghdr))
        self.msg = msg = msghdr.from_buffer(self.msg_ba)
        self.msg_q = memoryview(self.msg_ba).cast("Q")
        self.msg_i = memoryview(self.msg_ba).cast("i")
        msg.msg_iov = pointer(self.iov)
        msg.msg_iovlen = 1
        msg.msg_control = addressof(ctrl_c)
        msg.msg_name = addressof(name_c)
        msg.msg_flags = -1  # see recv_fds
        self.send_iov = _iovec_bytes()
        self.send_msg = send = msghdr()
        send.msg_iov = ctypes.cast(pointer(self.send_iov), ctypes.POINTER(iovec))
        send.msg_iovlen = 1
        send.msg_control = addressof(send_ctrl_c)
        send.msg_name = addressof(name_c)
        self.named = False
        self.keep = (data_c, ctrl_c, send_ctrl_c, name_c, send.msg_iov)
        # For LIBC_FAST: prebuilt &msg, and what the send fields hold, so a call
        # writes only what changed (each ctypes store costs ~40 ns).
        self.msg_ref = byref(msg)
        self.send_ref = byref(send)
        self.send_data: bytes | None = None  # what send_iov.iov_base points at
        # 1: send_ctrl holds a one-fd SCM_RIGHTS header and msg_controllen is
        # CMSG_SPACE(4); 0: no control data; -1: anything else.
        self.send_layout = -1
        self.recv_len = -1  # iov.iov_len
        self.sigmask = new_sigset()  # the signal mask saved while cleaning up after an exception

    def layout_one(self) -> None:
        """A one-fd SCM_RIGHTS header in ``send_ctrl``; the fd goes in ``send_fd``."""
        _pack_rights1(self.send_ctrl, 0, _LEN_RIGHTS1, SOL_SOCKET, SCM_RIGHTS, -1)
        self.send_msg.msg_controllen = _SPACE_RIGHTS1
        self.send_layout = 1


# Offsets in the receiving msghdr, in its memoryview units.
def _msghdr_offset(name: str) -> int:
    return int(getattr(msghdr, name).offset)


_NAMELEN_AT = _msghdr_offset("msg_namelen")
_CONTROLLEN_AT = _msghdr_offset("msg_controllen")
_FLAGS_AT = _msghdr_offset("msg_flags")
_NAMELEN_I = _NAMELEN_AT // 4
_CONTROLLEN_Q = _CONTROLLEN_AT // 8
_FLAGS_I = _FLAGS_AT // 4
# (msg_namelen, msg_controllen, msg_flags), read at once after recvmsg.
_RESULT = struct.Struct(f"=I{_CONTROLLEN_AT - _NAMELEN_AT - 4}xQi")
_unpack_result = _RESULT.unpack_from
_RESULT_AT = _NAMELEN_AT
if _CONTROLLEN_AT % 8 or _FLAGS_AT != _CONTROLLEN_AT + 8:  # pragma: no cover
    raise ImportError("unexpected struct msghdr layout")
_FD1_I = HDR_SIZE // 4  # int index of the fd in a one-fd control message
_NOT_CLOEXEC = ~MSG_CMSG_CLOEXEC


# cmsg_level and cmsg_type of a one-fd SCM_RIGHTS header, read as one unsigned long.
_RIGHTS1_LEVEL_TYPE = struct.unpack("=QQ", RIGHTS1_HEADER)[1]
_ZERO = 0  # the default flags: `flags is _ZERO` skips the range test (small ints are shared)




_POOL: List[_State] = [_State() for _ in range(2)]
_put_back = _POOL.append


def _new_state() -> _State:
    return _State()


def _fd_array_error(fds: Any) -> Exception:
    """The exception CPython's ``array('i', fds)`` raises for bad fds."""
    try:
        array.array("i", fds)
    except (TypeError, OverflowError, ValueError) as exc:
        return exc
    return TypeError("fds must be ints")


def send_fds(sock: Any, buffers: Iterable[Any], fds: Iterable[int], flags: int = 0,
             address: Any = None) -> int:
    """Send *fds* with the data in *buffers* in one ``sendmsg``; return the bytes sent.

    CPython's signature; *flags* and *address* are honoured.  *fds* is
    converted as CPython's ``array("i", fds)`` converts it (same values, same
    errors).  The fds stay the caller's (the kernel holds its own references
    while they are in flight, so closing them right after the call is safe).
    Errors raise ``OSError`` with the kernel's errno (``EBADF`` for a bad fd,
    ``EINVAL`` for more than ``SCM_MAX_FD``, ...).
    """
    # The fast path: a socket object or an int fd, flags a C int, a list or
    # tuple of one fd, no address, data up to the pooled size.  Everything
    # else goes through _send_args, which converts and checks it all first.
    if (address is not None
            or (flags is not _ZERO
                and (type(flags) is not int or not -0x80000000 <= flags <= 0x7FFFFFFF))
            or (type(fds) is not list and type(fds) is not tuple)
            or len(fds) != 1):
        return _send(sock, *_send_args(sock, buffers, fds, flags, address))
    cls = type(sock)
    if cls is _PySocketType:
        fd = sock.fileno()  # -1 once closed: the kernel says EBADF
    elif cls is int and -0x80000000 <= sock <= 0x7FFFFFFF:
        fd = sock
    else:
        return _send(sock, *_send_args(sock, buffers, fds, flags, address))
    fd0 = fds[0]  # a list or a tuple here
    if type(fd0) is not int or not -0x80000000 <= fd0 <= 0x7FFFFFFF:
        return _send(sock, *_send_args(sock, buffers, fds, flags, address))
    data = b"".join(buffers)
    if (_raw_family(sock) if cls is _PySocketType else family_of(sock, fd)) in _NO_RIGHTS:
        raise _no_rights()
    size = len(data)
    if size > _DATA_CAP:  # not to be kept alive by the pool
        return _send(sock, fd, flags, data, rights_payload((fd0,)), None)
    # Every argument is known good from here on: the pooled state may be written.
    try:
        state = _POOL.pop()  # list.pop/append are atomic: no lock, and reentrant
    except IndexError:
        state = _new_state()
    try:
        if data is not state.send_data:
            state.send_data = None  # until both fields below are written
            iov = state.send_iov
            iov.iov_base = data  # char *: keeps data alive while pointed at
            iov.iov_len = size
            state.send_data = data
        if state.send_layout != 1:
            state.layout_one()
        state.send_fd[0] = fd0
        sent: int = _sendmsg_fast(fd, state.send_ref, flags)
        if sent < 0:
            waiter: Waiter | None = None
            while sent < 0:
                waiter = handle_errno(_get_errno(), sock, fd, flags, True, waiter)
                sent = _sendmsg_fast(fd, state.send_ref, flags)
        return sent
    finally:
        _put_back(state)


def _send_args(sock: Any, buffers: Iterable[Any], fds: Any, flags: Any,
               address: Any) -> Tuple[int, int, bytes, bytes, bytes | None]:
    """Every argument of a send, converted and checked; nothing shared is touched.

    Returns ``(fd, flags, data, rights, name)``: *rights* the ``SCM_RIGHTS``
    payload (native ints, as CPython's ``array("i", fds)`` makes them),
    *name* the encoded address or ``None``.  Raises what CPython raises for
    the same bad argument (``TypeError``, ``ValueError``, ``OverflowError``),
    or ``FdPassingUnsupportedError`` for fds on an ``AF_INET``/``AF_INET6`` socket.
    """
    fd, flags = fd_and_flags(sock, flags)
    data = b"".join(buffers)
    rights = rights_payload(fds)
    if rights:
        family = _raw_family(sock) if isinstance(sock, _SocketType) else family_of(sock, fd)
        if family in _NO_RIGHTS:
            raise _no_rights()
    return fd, flags, data, rights, address_arg(sock, fd, address)


def _send(sock: Any, fd: int, flags: int, data: bytes, rights: bytes,
          name: bytes | None) -> int:
    """One ``sendmsg`` of checked arguments (see ``_send_args``) on a pooled state."""
    if len(rights) > 4 * (SCM_MAX_FD + 1) or len(data) > _DATA_CAP:
        # Beyond the pooled buffers (too many fds: the kernel says EINVAL).
        ctrl = _HDR.pack(HDR_SIZE + len(rights), SOL_SOCKET, SCM_RIGHTS) + rights if rights else b""
        return sendmsg_once(sock, fd, data, ctrl + bytes(-len(ctrl) % 8), name, flags)
    try:
        state = _POOL.pop()
    except IndexError:
        state = _new_state()
    try:
        # The fields are written here unconditionally: forget the fast path's copies first.
        state.send_data = None
        state.send_layout = -1
        msg = state.send_msg
        iov = state.send_iov
        iov.iov_base = data
        iov.iov_len = len(data)
        if rights:
            end = HDR_SIZE + len(rights)
            _HDR.pack_into(state.send_ctrl, 0, end, SOL_SOCKET, SCM_RIGHTS)
            state.send_ctrl[HDR_SIZE:end] = rights
            msg.msg_controllen = CMSG_SPACE(len(rights))
        else:
            msg.msg_controllen = 0
        if name is not None:
            state.name[: len(name)] = name
            msg.msg_namelen = len(name)
            state.named = True
        waiter: Waiter | None = None
        while True:
            sent = _sendmsg(fd, msg, flags)  # the instance: ctypes passes &msg, fastest
            if sent >= 0:
                return int(sent)
            waiter = handle_errno(_get_errno(), sock, fd, flags, True, waiter)
    finally:
        state.send_iov.iov_base = None  # do not keep the payload alive in the pool
        state.send_layout = -1
        if state.named:  # the fast path sends without an address
            state.send_msg.msg_namelen = 0
            state.named = False
        _put_back(state)


def _no_rights() -> FdPassingUnsupportedError:
    return FdPassingUnsupportedError(
        errno.EOPNOTSUPP,
        "SCM_RIGHTS on an AF_INET/AF_INET6 socket: the kernel ignores it and would "
        "send the data without the fds",
    )


def _recv_args(bufsize: Any, maxfds: Any, flags: Any) -> Tuple[int, int, int]:
    """``(bufsize, maxfds, flags)`` checked as CPython's ``recv_fds`` checks them.

    ``maxfds`` above ``SCM_MAX_FD`` reserves room for ``SCM_MAX_FD`` (the
    kernel never sends more in one message).
    """
    for name, value in (("bufsize", bufsize), ("maxfds", maxfds)):
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if bufsize < 0:
        raise ValueError("negative buffer size in recv_fds()")
    if bufsize > sys.maxsize:  # as recvmsg's C ssize_t
        raise OverflowError("recv_fds() bufsize out of range")
    if maxfds < 0 or maxfds > _MAXFDS_LIMIT:
        raise OverflowError("recv_fds() maxfds out of range")
    return int(bufsize), min(int(maxfds), SCM_MAX_FD), c_int_arg(flags, "flags")


def _installed(state: _State) -> List[int]:
    """Every fd the last ``recvmsg`` on *state* installed (none if its result was taken)."""
    if state.msg_i[_FLAGS_I] == -1:
        return []
    rights, pidfds = received_fds(state.ctrl, state.msg_q[_CONTROLLEN_Q])
    return rights + pidfds


def _settle(state: _State, handed: bool, rights: List[int], pidfds: List[int]) -> None:
    """Close what this call owns after an exception; idempotent.

    Before the hand-over the fds are in *state*'s control buffer; after it
    (*handed*), in the lists *rights* and *pidfds*, whose ``clear`` forgets them.
    """
    if handed:
        release_fds(partial(add, rights, pidfds), rights.clear, pidfds.clear)
    elif state.msg_i[_FLAGS_I] != -1:  # else recvmsg failed: nothing installed
        release_fds(partial(_installed, state), partial(state.msg_i.__setitem__, _FLAGS_I, -1))


def recv_fds(sock: Any, bufsize: int, maxfds: int, flags: int = 0, *,
             cloexec: bool = True) -> Received:
    """Receive up to *maxfds* fds and up to *bufsize* bytes in one ``recvmsg``.

    Returns CPython's ``(msg, fds, msg_flags, address)``; the fds are the
    caller's to close, and are close-on-exec unless ``cloexec=False``.
    *flags* are passed to the kernel (``MSG_PEEK`` gives the peeker its own
    copies of the fds; the real read gets new ones).  If ``MSG_CTRUNC`` is
    set -- more fds were sent than *maxfds*, or other control data did not
    fit -- ``ControlTruncatedError`` is raised holding what arrived.  An
    ``SCM_PIDFD`` that arrives (``SO_PASSPIDFD``) is closed; use
    ``rawsys.recv_message`` to keep it.
    """
    if (type(bufsize) is not int or type(maxfds) is not int or type(flags) is not int
            or not 0 <= bufsize <= _DATA_CAP or not 0 <= maxfds <= SCM_MAX_FD
            or not -0x80000000 <= flags <= 0x7FFFFFFF):
        bufsize, maxfds, flags = _recv_args(bufsize, maxfds, flags)
    cls = type(sock)
    if cls is _PySocketType:
        fd = sock.fileno()  # -1 once closed: the kernel says EBADF
    elif cls is int and -0x80000000 <= sock <= 0x7FFFFFFF:
        fd = sock
    else:
        fd = fileno(sock)
    if cloexec and not flags & MSG_CMSG_CLOEXEC:
        added = MSG_CMSG_CLOEXEC
        flags |= MSG_CMSG_CLOEXEC
    else:
        added = 0
    # Every argument is known good from here on.
    if bufsize <= _DATA_CAP:
        put_back = _put_back
        try:
            state = _POOL.pop()
        except IndexError:
            state = _new_state()
    else:
        state = _State(bufsize)  # one-off: dropped after the call
        put_back = _drop
    msg_i = state.msg_i
    raising = False  # set just before raising our ControlTruncatedError
    handed = False  # until the fds move from the control buffer to the lists below
    rights: List[int] = _NO_FDS
    pidfds: List[int] = _NO_FDS
    try:
        if bufsize != state.recv_len:
            state.iov.iov_len = bufsize
            state.recv_len = bufsize
        # The kernel rewrites both on every successful call.
        msg_q = state.msg_q
        msg_q[_CONTROLLEN_Q] = _RECV_ROOM[maxfds]
        msg_i[_NAMELEN_I] = SOCKADDR_STORAGE_SIZE
        received: int = _recvmsg_fast(fd, state.msg_ref, flags)
        if received < 0:
            waiter: Waiter | None = None
            while received < 0:
                waiter = handle_errno(_get_errno(), sock, fd, flags, False, waiter)
                received = _recvmsg_fast(fd, state.msg_ref, flags)
        ctrl_q = state.ctrl_q
        if (added and msg_i[_FLAGS_I] == MSG_CMSG_CLOEXEC and not msg_i[_NAMELEN_I]
                and ctrl_q[1] == _RIGHTS1_LEVEL_TYPE and ctrl_q[0] == _LEN_RIGHTS1
                and _LEN_RIGHTS1 <= msg_q[_CONTROLLEN_Q] <= _SPACE_RIGHTS1):
            # The usual reply, recognised by a few integer compares: flags
            # only the CLOEXEC echo, no address, one SCM_RIGHTS header with
            # one fd and nothing after it (what received_fds would find).
            if received == 1 and bufsize:
                data = _BYTE[state.data[0]]
            else:
                data = state.view[: received if received <= bufsize else bufsize].tobytes()
            rights = [state.ctrl_i[_FD1_I]]
            # The hand-over: from here the list owns the fd (the buffer is
            # forgotten just after; cleanup in between closes the list's).
            handed = True
            msg_i[_FLAGS_I] = -1
            put_back(state)
            return data, rights, 0, None
        namelen, used, msg_flags = _unpack_result(state.msg_ba, _RESULT_AT)
        found_rights, found_pidfds = received_fds(state.ctrl, used) if used else ([], [])
        if added:
            msg_flags &= _NOT_CLOEXEC  # the kernel echoes MSG_CMSG_CLOEXEC
        if received == 1 and bufsize:
            data = _BYTE[state.data[0]]
        else:
            data = state.view[: received if received <= bufsize else bufsize].tobytes()
        address = decode_address(bytes(state.name[:namelen])) if namelen else None
        truncated = (ControlTruncatedError([(data, found_rights, msg_flags, address)], owns=False)
                     if msg_flags & MSG_CTRUNC else None)
        rights = found_rights
        pidfds = found_pidfds
        handed = True  # the hand-over, as above
        msg_i[_FLAGS_I] = -1
        if pidfds:  # recv_fds does not return them (recv_message does)
            release_fds(pidfds.copy, pidfds.clear)
        put_back(state)
        if truncated is not None:
            truncated.own(rights)  # the exception owns the fds that arrived
            raising = True
            try:
                raise truncated
            finally:
                truncated = None  # no cycle through this frame: the handler's end closes it
        return data, rights, msg_flags, address
    # A bare except: no name to look up, so on 3.9/3.10 (which may run a
    # signal handler before any instruction that looks a name up) nothing
    # can interrupt between the exception and the block below.
    except:  # noqa: E722
        if raising:
            raise  # our ControlTruncatedError: it owns the fds that arrived
        # Cleanup that a signal handler raising again cannot cut short: every
        # signal blocked first, in C; then only a handler already due can
        # raise, once, so the idempotent _settle is simply tried again.
        try:
            block_signals(state.sigmask)
        except:  # noqa: E722
            pass  # a handler already due ran after the block: the block holds
        try:
            try:
                _settle(state, handed, rights, pidfds)
            except BaseException:
                try:
                    _settle(state, handed, rights, pidfds)
                except BaseException:
                    _settle(state, handed, rights, pidfds)
        finally:
            restore_signals(state.sigmask)
        if not handed:
            put_back(state)
        raise


_NO_FDS: List[int] = []  # placeholder before the hand-over; never appended to


def _drop(state: _State) -> None:
    """Where a one-off state goes after the call: nowhere."""


def send_fd(sock: Any, fd: int) -> int:
    """The classic ``send_fd``: send *fd* with one byte of data (``b"x"``).

    Returns the bytes sent (1).  *fd* stays the caller's.
    """
    return send_fds(sock, (b"x",), (fd,))


def recv_fd(sock: Any) -> int:
    """The classic ``recv_fd``: receive one message and return its one fd (caller closes it).

    Raises ``ControlTruncatedError`` if more than one fd came (all closed
    unless taken), and ``OSError(EBADMSG)`` if the message carried none.
    """
    _msg, fds, _flags, _address = recv_fds(sock, 1, 1)
    if not fds:
        raise OSError(errno.EBADMSG, "recv_fd: the message carried no file descriptor")
    return fds[0]

__all__ = ["send_fds", "recv_fds", "send_fd", "recv_fd"]
