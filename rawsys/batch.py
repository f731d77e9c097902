"""Many messages per system call: ``sendmmsg``/``recvmmsg`` versions of send_fds/recv_fds.

``send_fds_batch(sock, items)`` sends every ``(buffers, fds)`` pair of
*items* with one ``sendmmsg`` and returns how many messages went (the kernel
may stop early; an error after the first message is reported only by the
next call, see ``sendmmsg(2)``).  ``recv_fds_batch(sock, count, bufsize,
maxfds)`` receives up to *count* messages with one ``recvmmsg`` and returns
``recv_fds``-shaped tuples.

Same rules as ``rawsys.fds``: fds received are close-on-exec unless
``cloexec=False``, every ``SCM_RIGHTS`` header is collected, a message with
``MSG_CTRUNC`` raises ``ControlTruncatedError`` holding *every* message of
the call (``index`` says which one was truncated), and every fd the kernel
installed is returned or closed, also when an exception interrupts.
The headers, iovecs and buffers are preallocated and pooled per shape.
"""

from __future__ import annotations

import ctypes
import struct
from ctypes import addressof, c_char
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from rawsys._sockutil import (
    SOCKADDR_STORAGE_SIZE,
    Waiter,
    close_quietly,
    decode_address,
    family_of,
    fileno,
    handle_errno,
)
from rawsys.c.cmsg import CMSG_ALIGN, CMSG_LEN, CMSG_SPACE
from rawsys.c.constants import (
    MSG_CMSG_CLOEXEC,
    MSG_CTRUNC,
    MSG_WAITFORONE,
    SCM_MAX_FD,
    SCM_RIGHTS,
    SOL_SOCKET,
)
from rawsys.c.libc import LIBC
from rawsys.c.structs import iovec, mmsghdr, msghdr
from rawsys.control import HDR_SIZE, fds_in
from rawsys.errors import ControlTruncatedError, Received
from rawsys.fds import (
    _NO_RIGHTS,
    _fd_array_error,
    _iovec_bytes,
    collect_fds,
    rights_struct,
)

_sendmmsg = LIBC["sendmmsg"]
_recvmmsg = LIBC["recvmmsg"]
_get_errno = ctypes.get_errno
_CLOEXEC = int(MSG_CMSG_CLOEXEC)
_CTRUNC = int(MSG_CTRUNC)
_WAITFORONE = int(MSG_WAITFORONE)
_SOL_SOCKET = int(SOL_SOCKET)
_SCM_RIGHTS = int(SCM_RIGHTS)
_UIO_MAXIOV = 1024  # <linux/uio.h>: the kernel caps vlen here
_MM = ctypes.sizeof(mmsghdr)
_NOT_RECEIVED = 0xFFFFFFFF  # msg_len sentinel; the kernel overwrites it for each message


def _struct_at(fields: Sequence[Tuple[int, str]], total: int) -> struct.Struct:
    """A Struct reading/writing *fields* ``(offset, code)`` of a *total*-byte record."""
    fmt, pos = "=", 0
    for offset, code in fields:
        fmt += f"{offset - pos}x" if offset > pos else ""
        fmt += code
        pos = offset + struct.calcsize("=" + code)
    return struct.Struct(fmt)


def _offset(cls: Any, name: str) -> int:
    return int(getattr(cls, name).offset)


_HDR_OFF = _offset(mmsghdr, "msg_hdr")
# (msg_namelen, msg_controllen, msg_flags, msg_len) of one mmsghdr, read at once.
_RESULT = _struct_at([
    (_HDR_OFF + _offset(msghdr, "msg_namelen"), "I"),
    (_HDR_OFF + _offset(msghdr, "msg_controllen"), "Q"),
    (_HDR_OFF + _offset(msghdr, "msg_flags"), "i"),
    (_offset(mmsghdr, "msg_len"), "I"),
], _MM)
_CONTROL_AT = _HDR_OFF + _offset(msghdr, "msg_control")  # msg_control, msg_controllen
_CONTROL = struct.Struct("=QQ")
if _offset(msghdr, "msg_controllen") != _offset(msghdr, "msg_control") + 8:  # pragma: no cover
    raise ImportError("msg_control/msg_controllen are not adjacent")
_RIGHTS1 = struct.Struct("=Qiii")
_LEN1 = CMSG_LEN(4)


class _SendBatch:
    """``count`` mmsghdrs, each with one iovec, over one control buffer."""

    __slots__ = ("count", "mm", "mm_ba", "iovs", "ctrl", "ctrl_addr", "keep")

    def __init__(self, count: int, ctrl_size: int) -> None:
        self.count = count
        self.mm_ba = bytearray(_MM * count)
        self.mm = (mmsghdr * count).from_buffer(self.mm_ba)
        iov_array = (_iovec_bytes * count)()
        self.iovs = [iov_array[i] for i in range(count)]
        self.ctrl = bytearray(max(ctrl_size, 1))
        ctrl_c = (c_char * len(self.ctrl)).from_buffer(self.ctrl)
        self.ctrl_addr = addressof(ctrl_c)
        base = addressof(iov_array)
        size = ctypes.sizeof(_iovec_bytes)
        for i in range(count):
            hdr = self.mm[i].msg_hdr
            hdr.msg_iov = ctypes.cast(base + i * size, ctypes.POINTER(iovec))
            hdr.msg_iovlen = 1
        self.keep = (iov_array, ctrl_c)


_SEND_POOL: List[_SendBatch] = []


def send_fds_batch(sock: Any, items: Iterable[Tuple[Iterable[Any], Iterable[int]]],
                   flags: int = 0) -> int:
    """Send each ``(buffers, fds)`` of *items* as one message, all in one ``sendmmsg``.

    Returns how many messages the kernel took (at most 1024 per call, its
    ``UIO_MAXIOV``).  If the first message fails the call raises ``OSError``
    with the errno; a failure after some were sent just stops there.  The
    fds stay the caller's.
    """
    fd = fileno(sock)
    batch = [(b"".join(buffers), fds if type(fds) is list or type(fds) is tuple else list(fds))
             for buffers, fds in items][:_UIO_MAXIOV]
    n = len(batch)
    if n == 0:
        return 0
    ctrl_size = 0
    for _data, fds in batch:
        if fds:
            ctrl_size += CMSG_SPACE(4 * len(fds))
    if ctrl_size and family_of(sock, fd) in _NO_RIGHTS:
        from rawsys.fds import _no_rights
        raise _no_rights()
    state = None
    try:
        state = _SEND_POOL.pop()
    except IndexError:
        pass
    if state is None or state.count < n or len(state.ctrl) < ctrl_size:
        state = _SendBatch(max(n, 64), max(ctrl_size, CMSG_SPACE(4) * 64))
    try:
        mm_ba = state.mm_ba
        ctrl = state.ctrl
        ctrl_addr = state.ctrl_addr
        iovs = state.iovs
        pack_control = _CONTROL.pack_into
        offset = 0
        at = _CONTROL_AT
        for i in range(n):
            data, fds = batch[i]
            iov = iovs[i]
            iov.iov_base = data
            iov.iov_len = len(data)
            nfds = len(fds)
            if nfds == 1:
                try:
                    _RIGHTS1.pack_into(ctrl, offset, _LEN1, _SOL_SOCKET, _SCM_RIGHTS, fds[0])
                except struct.error:
                    raise _fd_array_error(fds) from None
                pack_control(mm_ba, at, ctrl_addr + offset, 24)
                offset += 24
            elif nfds:
                try:
                    rights_struct(nfds).pack_into(ctrl, offset, HDR_SIZE + 4 * nfds,
                                                  _SOL_SOCKET, _SCM_RIGHTS, *fds)
                except struct.error:
                    raise _fd_array_error(fds) from None
                space = CMSG_SPACE(4 * nfds)
                pack_control(mm_ba, at, ctrl_addr + offset, space)
                offset += space
            else:
                pack_control(mm_ba, at, 0, 0)
            at += _MM
        waiter: Waiter | None = None
        while True:
            sent = _sendmmsg(fd, state.mm, n, flags)
            if sent >= 0:
                return int(sent)
            waiter = handle_errno(_get_errno(), sock, fd, flags, True, waiter)
    finally:
        _SEND_POOL.append(state)


class _RecvBatch:
    """``count`` mmsghdrs with a data, control and name slot each, and a reset template."""

    __slots__ = ("count", "bufsize", "room", "stride", "mm", "mm_ba", "template", "data",
                 "dview", "ctrl", "names", "keep")

    def __init__(self, count: int, bufsize: int, room: int) -> None:
        self.count = count
        self.bufsize = bufsize
        self.room = room
        self.stride = CMSG_ALIGN(room)
        self.mm_ba = bytearray(_MM * count)
        self.mm = (mmsghdr * count).from_buffer(self.mm_ba)
        self.data = bytearray(max(bufsize * count, 1))
        self.dview = memoryview(self.data)
        self.ctrl = bytearray(self.stride * count)
        self.names = bytearray(SOCKADDR_STORAGE_SIZE * count)
        iov_array = (iovec * count)()
        data_c = (c_char * len(self.data)).from_buffer(self.data)
        ctrl_c = (c_char * len(self.ctrl)).from_buffer(self.ctrl)
        names_c = (c_char * len(self.names)).from_buffer(self.names)
        for i in range(count):
            iov_array[i].iov_base = addressof(data_c) + i * bufsize
            iov_array[i].iov_len = bufsize
            entry = self.mm[i]
            hdr = entry.msg_hdr
            hdr.msg_iov = ctypes.cast(addressof(iov_array) + i * ctypes.sizeof(iovec),
                                      ctypes.POINTER(iovec))
            hdr.msg_iovlen = 1
            hdr.msg_control = addressof(ctrl_c) + i * self.stride
            hdr.msg_controllen = room
            hdr.msg_name = addressof(names_c) + i * SOCKADDR_STORAGE_SIZE
            hdr.msg_namelen = SOCKADDR_STORAGE_SIZE
            entry.msg_len = _NOT_RECEIVED
        self.template = memoryview(bytes(self.mm_ba))
        self.keep = (iov_array, data_c, ctrl_c, names_c)


_RECV_POOL: Dict[Tuple[int, int, int], List[_RecvBatch]] = {}


def _check_args(count: Any, bufsize: Any, maxfds: Any) -> None:
    for name, value in (("count", count), ("bufsize", bufsize), ("maxfds", maxfds)):
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if count < 0:
        raise ValueError("negative count in recv_fds_batch()")
    if bufsize < 0:
        raise ValueError("negative buffer size in recv_fds_batch()")
    if maxfds < 0 or maxfds > (2**31 - 1 - HDR_SIZE) // 4:
        raise OverflowError("recv_fds_batch() maxfds out of range")


def _installed(state: _RecvBatch, count: int) -> List[int]:
    """Every fd in the control slots of the messages the kernel filled in."""
    found: List[int] = []
    for i in range(count):
        _namelen, used, _flags, msg_len = _RESULT.unpack_from(state.mm_ba, i * _MM)
        if msg_len != _NOT_RECEIVED:
            start = i * state.stride
            found += fds_in(memoryview(state.ctrl)[start : start + min(used, state.room)])
    return found


def recv_fds_batch(sock: Any, count: int, bufsize: int, maxfds: int, flags: int = 0, *,
                   cloexec: bool = True, wait_for_one: bool = True) -> List[Received]:
    """Receive up to *count* messages with one ``recvmmsg``; ``recv_fds`` tuples each.

    By default (``wait_for_one=True``, i.e. ``MSG_WAITFORONE``) the call waits
    for one message and then takes whatever else is queued; with
    ``wait_for_one=False`` a blocking socket waits for all *count*.  Each
    message has room for *maxfds* fds; the fds are the caller's and
    close-on-exec unless ``cloexec=False``.
    """
    fd = fileno(sock)
    if type(count) is not int or type(bufsize) is not int or type(maxfds) is not int or (
            count < 0 or bufsize < 0 or not 0 <= maxfds <= SCM_MAX_FD):
        _check_args(count, bufsize, maxfds)
        maxfds = min(maxfds, SCM_MAX_FD)
    count = min(count, _UIO_MAXIOV)
    if count == 0:
        return []
    added = _CLOEXEC if cloexec and not flags & _CLOEXEC else 0
    flags |= added
    if wait_for_one:
        flags |= _WAITFORONE
    room = CMSG_LEN(4 * maxfds)
    key = (count, bufsize, room)
    pool = _RECV_POOL.get(key)
    if pool is None:
        if len(_RECV_POOL) > 16:
            _RECV_POOL.clear()
        pool = _RECV_POOL.setdefault(key, [])
    try:
        state = pool.pop()
    except IndexError:
        state = _RecvBatch(count, bufsize, room)
    try:
        waiter: Waiter | None = None
        while True:
            got = _recvmmsg(fd, state.mm, count, flags, None)
            if got >= 0:
                break
            waiter = handle_errno(_get_errno(), sock, fd, flags, False, waiter)
        results: List[Received] = []
        truncated = -1
        mm_ba = state.mm_ba
        ctrl = state.ctrl
        stride = state.stride
        dview = state.dview
        names = state.names
        result = _RESULT.unpack_from
        rights1 = _RIGHTS1.unpack_from
        for i in range(got):
            namelen, used, msg_flags, msg_len = result(mm_ba, i * _MM)
            start = i * stride
            if used:
                cmsg_len, level, ctype, first = rights1(ctrl, start)
                if cmsg_len == _LEN1 and used <= 24 and ctype == _SCM_RIGHTS and (
                        level == _SOL_SOCKET):
                    fds = [first]
                else:
                    fds = collect_fds(memoryview(ctrl)[start : start + used], used)
            else:
                fds = []
            msg_flags &= ~added
            data_at = i * bufsize
            data = dview[data_at : data_at + (msg_len if msg_len <= bufsize else bufsize)].tobytes()
            if namelen:
                name_at = i * SOCKADDR_STORAGE_SIZE
                address = decode_address(bytes(names[name_at : name_at + namelen]))
            else:
                address = None
            if msg_flags & _CTRUNC and truncated < 0:
                truncated = i
            results.append((data, fds, msg_flags, address))
        if truncated >= 0:
            raise ControlTruncatedError(results, truncated)
        return results
    except ControlTruncatedError:
        raise  # it owns the fds that arrived
    except BaseException:
        close_quietly(_installed(state, count))
        raise
    finally:
        # Pooled states are clean: room, name length and the msg_len sentinels
        # back, so cleanup in the next call never reads this call's fds.
        state.mm_ba[:] = state.template
        pool.append(state)


__all__ = ["send_fds_batch", "recv_fds_batch"]
