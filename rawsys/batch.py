"""Many messages per system call: ``sendmmsg``/``recvmmsg`` versions of send_fds/recv_fds.

``send_fds_batch(sock, items)`` sends every ``(buffers, fds)`` pair of
*items* with one ``sendmmsg`` and returns how many messages went (the kernel
may stop early; an error after the first message is reported only by the
next call, see ``sendmmsg(2)``).  ``recv_fds_batch(sock, count, bufsize,
maxfds)`` receives up to *count* messages with one ``recvmmsg`` and returns
``recv_fds``-shaped tuples.

Same rules as ``rawsys.fds``: fds received are close-on-exec unless
``cloexec=False``, a message with
``MSG_CTRUNC`` raises ``ControlTruncatedError`` holding *every* message of
the call (``index`` says which one was truncated), and every fd the kernel
installed is returned or closed, also when an exception interrupts.
The headers, iovecs and buffers are preallocated and pooled per shape.
"""

from __future__ import annotations

import array
import ctypes
import struct
import sys
from ctypes import addressof, c_char
from functools import partial
from itertools import accumulate, repeat
from operator import add, itemgetter
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from rawsys._sockutil import (
    SOCKADDR_STORAGE_SIZE,
    Waiter,
    block_signals,
    c_int_arg,
    decode_address,
    family_of,
    fileno,
    handle_errno,
    new_sigset,
    release_fds,
    restore_signals,
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
from rawsys.c.libc import LIBC_FAST
from rawsys.c.structs import iovec, mmsghdr, msghdr
from rawsys.control import CMSGHDR, HDR_SIZE, received_fds, rights_payload
from rawsys.errors import ControlTruncatedError, Received
from rawsys.fds import _NO_RIGHTS, _no_rights

# Unprototyped (see LIBC_FAST): only checked C ints, prebuilt byref()s and None.
_sendmmsg = LIBC_FAST["sendmmsg"]
_recvmmsg = LIBC_FAST["recvmmsg"]
_get_errno = ctypes.get_errno
_UIO_MAXIOV = 1024  # <linux/uio.h>: the kernel caps vlen here
_MM = ctypes.sizeof(mmsghdr)
_POOLED_BYTES = 1 << 20  # larger data buffers are not kept for reuse
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
_SPACE1 = CMSG_SPACE(4)
_SPACE1_I = _SPACE1 // 4  # ints from one 1-fd control message to the next
_FD1_I = HDR_SIZE // 4  # int index of the fd in a 1-fd control message
_MM_Q = _MM // 8  # unsigned longs in an mmsghdr
_CONTROL_Q = _CONTROL_AT // 8
_MM_I = _MM // 4  # ints in an mmsghdr
_NAMELEN_I = (_HDR_OFF + _offset(msghdr, "msg_namelen")) // 4
_FLAGS_I = (_HDR_OFF + _offset(msghdr, "msg_flags")) // 4
_MSGLEN_I = _offset(mmsghdr, "msg_len") // 4
_CLEN_Q = (_HDR_OFF + _offset(msghdr, "msg_controllen")) // 8


class _SendBatch:
    """``count`` mmsghdrs, each with one iovec into a data buffer, over one control buffer.

    The arrays are also seen as flat ``unsigned long`` / ``int`` memoryviews,
    so a whole column (every ``iov_len``, every ``msg_control``) is written
    with one strided slice assignment instead of one ctypes store a message.
    """

    __slots__ = ("count", "mm", "mm_ba", "mm_q", "iov_ba", "iov_q", "data", "data_addr",
                 "ctrl", "ctrl_i", "ctrl_addr", "ones", "last_lens", "keep", "mm_ref")

    def __init__(self, count: int, ctrl_size: int, data_size: int) -> None:
        self.count = count
        self.mm_ba = bytearray(_MM * count)
        self.mm = (mmsghdr * count).from_buffer(self.mm_ba)
        self.mm_ref = ctypes.byref(self.mm)
        self.mm_q = memoryview(self.mm_ba).cast("Q")
        self.iov_ba = bytearray(ctypes.sizeof(iovec) * count)
        iov_array = (iovec * count).from_buffer(self.iov_ba)
        self.iov_q = memoryview(self.iov_ba).cast("Q")
        self.ctrl = bytearray(max(ctrl_size, CMSG_SPACE(4) * count))
        ctrl_c = (c_char * len(self.ctrl)).from_buffer(self.ctrl)
        self.ctrl_addr = addressof(ctrl_c)
        self.ctrl_i = memoryview(self.ctrl).cast("i")
        self.data = bytearray(max(data_size, 1))
        data_c = (c_char * len(self.data)).from_buffer(self.data)
        self.data_addr = addressof(data_c)
        base = addressof(iov_array)
        for i in range(count):
            hdr = self.mm[i].msg_hdr
            hdr.msg_iov = ctypes.cast(base + i * ctypes.sizeof(iovec), ctypes.POINTER(iovec))
            hdr.msg_iovlen = 1
        self.ones = False  # control laid out as one fd a message (headers written)
        self.last_lens: List[int] = []  # iovecs as last written
        self.keep = (iov_array, ctrl_c, data_c)

    def layout_ones(self) -> None:
        """Every message one SCM_RIGHTS with one fd, CMSG_SPACE(4) apart."""
        for i in range(self.count):
            _RIGHTS1.pack_into(self.ctrl, i * _SPACE1, _LEN1, SOL_SOCKET, SCM_RIGHTS, -1)
        self.mm_q[_CONTROL_Q :: _MM_Q] = array.array(
            "Q", range(self.ctrl_addr, self.ctrl_addr + _SPACE1 * self.count, _SPACE1))
        self.mm_q[_CONTROL_Q + 1 :: _MM_Q] = array.array("Q", [_SPACE1]) * self.count
        self.ones = True


_SEND_POOL: List[_SendBatch] = []


_first = itemgetter(0)
_second = itemgetter(1)
_ONE_FD_TYPES = frozenset((list, tuple))


def send_fds_batch(sock: Any, items: Iterable[Tuple[Iterable[Any], Iterable[int]]],
                   flags: int = 0) -> int:
    """Send each ``(buffers, fds)`` of *items* as one message, all in one ``sendmmsg``.

    Returns how many messages the kernel took (at most 1024 per call, its
    ``UIO_MAXIOV``).  If the first message fails the call raises ``OSError``
    with the errno; a failure after some were sent just stops there (the
    next call reports it).  Each message's fds are converted as ``send_fds``
    converts them (CPython's ``array("i", fds)``), every item before any
    pooled buffer is written.  The fds stay the caller's.
    """
    fd = fileno(sock)
    flags = c_int_arg(flags, "flags")
    if type(items) is not list:
        items = list(items)
    items = items[:_UIO_MAXIOV]
    n = len(items)
    if n == 0:
        return 0
    datas = [b"".join(buffers) for buffers, _fds in items]  # also: each item a pair
    fdls = list(map(_second, items))
    first: array.array[int] | None = None
    rights: List[bytes] = []
    # The common case: lists or tuples (not bytes, which array() reads as raw
    # ints) of one fd each, all C ints; sum == n with no empty one means one each.
    if _ONE_FD_TYPES.issuperset(map(type, fdls)) and sum(map(len, fdls)) == n:
        try:
            first = array.array("i", list(map(_first, fdls)))  # from a list: ~13 ns/message less
        except (TypeError, OverflowError, IndexError):
            first = None
    if first is None:
        rights = list(map(rights_payload, fdls))  # CPython's conversion and errors
    if (first is not None or any(rights)) and family_of(sock, fd) in _NO_RIGHTS:
        raise _no_rights()
    lens = list(map(len, datas))
    total = sum(lens)
    ctrl_size = _SPACE1 * n if first is not None else sum(CMSG_SPACE(len(r)) for r in rights if r)
    # Every argument is known good from here on: the pooled state may be written.
    try:
        state: _SendBatch | None = _SEND_POOL.pop()
    except IndexError:
        state = None
    if state is None or state.count < n or len(state.ctrl) < ctrl_size or (
            len(state.data) < total):
        state = _SendBatch(max(n, 64), ctrl_size, max(total, 64 * 64))
    try:
        if total:
            state.data[:total] = b"".join(datas)
        if lens != state.last_lens[:n]:
            state.last_lens = []  # until the iovecs below are all written
            iov_q = state.iov_q
            iov_q[0 : 2 * n : 2] = array.array("Q", accumulate(lens[:-1], initial=state.data_addr))
            iov_q[1 : 2 * n : 2] = array.array("Q", lens)
            state.last_lens = lens
        if first is not None:
            if not state.ones:
                state.layout_ones()
            state.ctrl_i[_FD1_I : _FD1_I + _SPACE1_I * n : _SPACE1_I] = first
        else:
            _layout_general(state, rights)
        waiter: Waiter | None = None
        while True:
            sent: int = _sendmmsg(fd, state.mm_ref, n, flags)
            if sent >= 0:
                return sent
            waiter = handle_errno(_get_errno(), sock, fd, flags, True, waiter)
    finally:
        if len(state.data) <= _POOLED_BYTES:
            _SEND_POOL.append(state)


def _layout_general(state: _SendBatch, rights: List[bytes]) -> None:
    """Control messages of any sizes, packed back to back (a message without fds: none).

    *rights* are checked payloads (``rights_payload``), one a message.
    """
    state.ones = False
    ctrl = state.ctrl
    pointers = array.array("Q")
    lengths = array.array("Q")
    offset = 0
    for payload in rights:
        if payload:
            end = offset + HDR_SIZE + len(payload)
            CMSGHDR.pack_into(ctrl, offset, HDR_SIZE + len(payload), SOL_SOCKET, SCM_RIGHTS)
            ctrl[offset + HDR_SIZE : end] = payload
            space = CMSG_SPACE(len(payload))
            pointers.append(state.ctrl_addr + offset)
            lengths.append(space)
            offset += space
        else:
            pointers.append(0)
            lengths.append(0)
    n = len(rights)
    state.mm_q[_CONTROL_Q : _CONTROL_Q + _MM_Q * n : _MM_Q] = pointers
    state.mm_q[_CONTROL_Q + 1 : _CONTROL_Q + 1 + _MM_Q * n : _MM_Q] = lengths


class _RecvBatch:
    """``count`` mmsghdrs with a data, control and name slot each, and a reset template."""

    __slots__ = ("count", "bufsize", "room", "stride", "mm", "mm_ba", "mm_i", "mm_u",
                 "mm_q", "template", "data", "dview", "ctrl", "ctrl_i", "names", "keep", "mm_ref",
                 "sigmask")

    def __init__(self, count: int, bufsize: int, room: int) -> None:
        self.count = count
        self.bufsize = bufsize
        self.room = room
        self.stride = CMSG_ALIGN(room)
        self.mm_ba = bytearray(_MM * count)
        self.mm = (mmsghdr * count).from_buffer(self.mm_ba)
        self.mm_ref = ctypes.byref(self.mm)
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
        self.mm_i = memoryview(self.mm_ba).cast("i")
        self.mm_u = memoryview(self.mm_ba).cast("I")
        self.mm_q = memoryview(self.mm_ba).cast("Q")
        self.ctrl_i = memoryview(self.ctrl).cast("i")
        self.sigmask = new_sigset()  # the signal mask saved while cleaning up after an exception


_RECV_POOL: Dict[Tuple[int, int, int], List[_RecvBatch]] = {}


def _check_args(count: Any, bufsize: Any, maxfds: Any) -> None:
    for name, value in (("count", count), ("bufsize", bufsize), ("maxfds", maxfds)):
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if count < 0:
        raise ValueError("negative count in recv_fds_batch()")
    if bufsize < 0:
        raise ValueError("negative buffer size in recv_fds_batch()")
    if bufsize > sys.maxsize:  # as recvmsg's C ssize_t
        raise OverflowError("recv_fds_batch() bufsize out of range")
    if maxfds < 0 or maxfds > (2**31 - 1 - HDR_SIZE) // 4:
        raise OverflowError("recv_fds_batch() maxfds out of range")


def _installed(state: _RecvBatch, count: int) -> List[int]:
    """Every fd in the control slots of the messages the kernel filled in (pure)."""
    found: List[int] = []
    for i in range(count):
        _namelen, used, _flags, msg_len = _RESULT.unpack_from(state.mm_ba, i * _MM)
        if msg_len != _NOT_RECEIVED:
            start = i * state.stride
            rights, pidfds = received_fds(state.ctrl[start : start + state.room], used)
            found += rights + pidfds
    return found


def _fds_of(results: List[Received]) -> List[int]:
    return [fd for result in results for fd in result[1]]


def _fds_of_all(results: List[Received], pidfds: List[int]) -> List[int]:
    return _fds_of(results) + pidfds


def _settle(state: _RecvBatch, count: int, handed: bool, results: List[Received],
            owned: List[int], pidfds: List[int]) -> None:
    """Close what this call owns after an exception; idempotent.

    Before the hand-over the fds are in *state*'s control slots (reset to the
    template forgets them); after it, in *results* (and *owned*, the list a
    ``ControlTruncatedError`` holds) and *pidfds*, whose ``clear`` forgets them.
    """
    if handed:
        release_fds(partial(_fds_of_all, results, pidfds), results.clear, owned.clear,
                    pidfds.clear)
    elif state.mm_u[_MSGLEN_I] != _NOT_RECEIVED:  # the kernel fills message 0 first
        release_fds(partial(_installed, state, count),
                    partial(state.mm_ba.__setitem__, slice(None), state.template))


_FILLED: Dict[Tuple[str, int, int], array.array[int]] = {}
_BYTE = [bytes((i,)) for i in range(256)]  # the one-byte bytes objects


def _filled(code: str, value: int, count: int) -> array.array[int]:
    """An array of *count* copies of *value* (cached), to compare a column against."""
    key = (code, value, count)
    column = _FILLED.get(key)
    if column is None:
        if len(_FILLED) > 256:
            _FILLED.clear()
        column = _FILLED[key] = array.array(code, [value]) * count
    return column


def _all_plain(state: _RecvBatch, got: int, added: int, bufsize: int) -> List[Received] | None:
    """The results if every message is plain -- no address, no flags, and either no
    control data or exactly one fd -- read column by column; else ``None``.

    A column is a strided memoryview over the mmsghdr (or control) array;
    comparing it with a filled array is one C-level loop, no int objects.
    """
    if state.mm_i[_FLAGS_I : _FLAGS_I + _MM_I * got : _MM_I] != _filled("i", added, got):
        return None
    if state.mm_u[_NAMELEN_I : _NAMELEN_I + _MM_I * got : _MM_I] != _filled("I", 0, got):
        return None
    used = state.mm_q[_CLEN_Q : _CLEN_Q + _MM_Q * got : _MM_Q]
    if used == _filled("Q", _LEN1, got):
        step = state.stride // 4
        end = step * got
        ctrl_i = state.ctrl_i
        if (ctrl_i[0:end:step] != _filled("i", _LEN1, got)
                or ctrl_i[2:end:step] != _filled("i", SOL_SOCKET, got)
                or ctrl_i[3:end:step] != _filled("i", SCM_RIGHTS, got)):
            return None
        ones: List[int] | None = ctrl_i[_FD1_I : _FD1_I + end : step].tolist()
    elif used == _filled("Q", 0, got):
        ones = None
    else:
        return None
    lens = state.mm_u[_MSGLEN_I : _MSGLEN_I + _MM_I * got : _MM_I]
    blob = state.dview[: bufsize * got].tobytes()
    if bufsize == 1 and lens == _filled("I", 1, got):
        datas = list(map(_BYTE.__getitem__, blob))
    else:
        starts = range(0, bufsize * got, bufsize)
        datas = list(map(blob.__getitem__, map(slice, starts, map(add, starts, lens.tolist()))))
    if ones is not None:  # each tuple and its one-fd list made in one loop
        return [(data, [fd], 0, None) for data, fd in zip(datas, ones)]
    return list(zip(datas, ([] for _ in range(got)), repeat(0, got), repeat(None, got)))


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
    flags = c_int_arg(flags, "flags")
    if type(count) is not int or type(bufsize) is not int or type(maxfds) is not int or (
            count < 0 or not 0 <= bufsize <= sys.maxsize or not 0 <= maxfds <= SCM_MAX_FD):
        _check_args(count, bufsize, maxfds)
        maxfds = min(maxfds, SCM_MAX_FD)
    count = min(count, _UIO_MAXIOV)
    if count == 0:
        return []
    added = MSG_CMSG_CLOEXEC if cloexec and not flags & MSG_CMSG_CLOEXEC else 0
    flags |= added
    if wait_for_one:
        flags |= MSG_WAITFORONE
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
    put_back = pool.append if len(state.data) <= _POOLED_BYTES else _drop
    raising = False  # set just before raising our ControlTruncatedError
    handed = False  # until the fds move from the control slots to `results`
    results: List[Received] = _NO_RESULTS
    owned: List[int] = _NO_FDS
    pidfds: List[int] = _NO_FDS
    try:
        waiter: Waiter | None = None
        while True:
            got: int = _recvmmsg(fd, state.mm_ref, count, flags, None)
            if got >= 0:
                break
            waiter = handle_errno(_get_errno(), sock, fd, flags, False, waiter)
        fast = _all_plain(state, got, added, bufsize)
        truncated: ControlTruncatedError | None = None
        if fast is None:
            fast, truncated, found_pidfds = _decode_all(state, got, added, bufsize)
            if truncated is not None:
                owned = _fds_of(fast)
            pidfds = found_pidfds
        # The hand-over: from here `results` owns the fds.  The reset just
        # after puts back the room, name lengths and msg_len sentinels, so the
        # control slots no longer count as holding fds.
        results = fast
        handed = True
        state.mm_ba[:] = state.template
        if pidfds:
            release_fds(pidfds.copy, pidfds.clear)
        put_back(state)
        if truncated is not None:
            truncated.own(owned)  # the exception owns every fd of the call
            raising = True
            try:
                raise truncated
            finally:
                truncated = None  # no cycle through this frame: the handler's end closes it
        return results
    # A bare except: no name to look up, so on 3.9/3.10 (which may run a
    # signal handler before any instruction that looks a name up) nothing
    # can interrupt between the exception and the block below.
    except:  # noqa: E722
        if raising:
            raise  # our ControlTruncatedError: it owns the fds that arrived
        # As in recv_fds: every signal blocked first, in C, then the
        # idempotent _settle tried until a handler already due has run.
        try:
            block_signals(state.sigmask)
        except:  # noqa: E722
            pass  # a handler already due ran after the block: the block holds
        try:
            try:
                _settle(state, count, handed, results, owned, pidfds)
            except BaseException:
                try:
                    _settle(state, count, handed, results, owned, pidfds)
                except BaseException:
                    _settle(state, count, handed, results, owned, pidfds)
        finally:
            restore_signals(state.sigmask)
        if not handed:
            put_back(state)
        raise


def _decode_all(state: _RecvBatch, got: int, added: int, bufsize: int
                ) -> Tuple[List[Received], ControlTruncatedError | None, List[int]]:
    """Every received message decoded (the general case of ``recv_fds_batch``).

    Returns the results, a ``ControlTruncatedError`` if a message has
    ``MSG_CTRUNC`` (built owning nothing: the caller hands the fds over), and
    the ``SCM_PIDFD`` fds, which ``recv_fds_batch`` closes as ``recv_fds``
    does.  Pure: reads the state, closes nothing.
    """
    results: List[Received] = []
    all_pidfds: List[int] = []
    truncated = -1
    mm_ba = state.mm_ba
    ctrl = state.ctrl
    stride = state.stride
    room = state.room
    dview = state.dview
    names = state.names
    result = _RESULT.unpack_from
    for i in range(got):
        namelen, used, msg_flags, msg_len = result(mm_ba, i * _MM)
        if used:
            start = i * stride
            rights, pidfds = received_fds(ctrl[start : start + room], used)
            all_pidfds += pidfds
        else:
            rights = []
        msg_flags &= ~added
        data_at = i * bufsize
        data = dview[data_at : data_at + (msg_len if msg_len <= bufsize else bufsize)].tobytes()
        if namelen:
            name_at = i * SOCKADDR_STORAGE_SIZE
            address = decode_address(bytes(names[name_at : name_at + namelen]))
        else:
            address = None
        if msg_flags & MSG_CTRUNC and truncated < 0:
            truncated = i
        results.append((data, rights, msg_flags, address))
    if truncated >= 0:
        return results, ControlTruncatedError(results, truncated, owns=False), all_pidfds
    return results, None, all_pidfds


_NO_RESULTS: List[Received] = []  # placeholders before the hand-over; never appended to
_NO_FDS: List[int] = []


def _drop(state: _RecvBatch) -> None:
    """Where an oversized state goes after the call: nowhere."""


__all__ = ["send_fds_batch", "recv_fds_batch"]
