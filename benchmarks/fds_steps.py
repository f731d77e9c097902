"""What each guarantee of rawsys.send_fds/recv_fds costs: the same pair built up step by step.

Benchmark-local code (``fds_throughput.py`` times it; nothing in rawsys
imports it).  Each step is the previous one plus one guarantee, written the
way rawsys writes it, so the difference between two steps' times in one run
is that guarantee's price per send+receive pair:

  floor       un-prototyped libc sendmsg/recvmsg on prebuilt byref() msghdrs,
              a fixed one-fd control buffer, no checks (the least a ctypes
              caller can pay; inlined in the loop, no function call)
  api         CPython's signatures: functions taking (sock, buffers, fds) and
              (sock, bufsize, maxfds), data joined and pointed at, the fd
              stored in the control buffer, (data, [fd], 0, None) returned
  validated   + every argument checked before the shared buffers are
              touched: types and C ranges, SCM_MAX_FD, the socket's family
              (AF_INET/AF_INET6 would drop the fds), the control room sized
              by maxfds as CPython sizes it
  cloexec     + MSG_CMSG_CLOEXEC on receive, stripped from the flags returned
  ctrunc      + the reply checked: msg_flags (MSG_CTRUNC raises), the control
              header recognised as one SCM_RIGHTS fd or walked, msg_namelen
  owned       + ownership and reentrancy: a buffer pool (pop/append), errno
              checked with a retry helper, and try/except/finally that closes
              fds installed before an exception and resets the msg_flags
              sentinel

Only the single-fd, single-buffer shape is built out (what the benchmark
sends); any other shape raises ``NotImplementedError`` rather than being
measured wrongly.
"""

from __future__ import annotations

import _socket
import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from ctypes import addressof, byref, c_char, pointer
from typing import Any, Callable, List, Tuple

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
from rawsys.c.structs import iovec, msghdr

# Un-prototyped libc calls (no argtypes): ctypes passes ints as C ints and a
# byref() as its pointer, converting nothing else.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
sendmsg_raw = _LIBC.sendmsg
recvmsg_raw = _LIBC.recvmsg
sendmsg_raw.argtypes = recvmsg_raw.argtypes = None
sendmsg_raw.restype = recvmsg_raw.restype = ctypes.c_ssize_t
_get_errno = ctypes.get_errno
# The same calls without use_errno: ctypes then skips saving errno around each
# call, but the errno of a failure is lost -- information only (see the table).
_LIBC_NO_ERRNO = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
sendmsg_no_errno = _LIBC_NO_ERRNO.sendmsg
recvmsg_no_errno = _LIBC_NO_ERRNO.recvmsg
sendmsg_no_errno.argtypes = recvmsg_no_errno.argtypes = None
sendmsg_no_errno.restype = recvmsg_no_errno.restype = ctypes.c_ssize_t

HDR = CMSG_LEN(0)  # sizeof(struct cmsghdr)
ROOM1 = CMSG_LEN(4)  # CPython's control room for maxfds=1
SPACE1 = CMSG_SPACE(4)
CTRL_CAP = CMSG_SPACE(4 * SCM_MAX_FD)
DATA_CAP = 65536
NAME_CAP = 128  # sizeof(struct sockaddr_storage)
_CMSGHDR = struct.Struct("=Qii")  # struct cmsghdr on LP64 Linux
_HDR_RIGHTS1 = _CMSGHDR.pack(ROOM1, SOL_SOCKET, SCM_RIGHTS)
_FD_I = HDR // 4  # int index of the first fd after the header
_BYTE = [bytes((i,)) for i in range(256)]
_SocketType = socket.socket
_family = _socket.socket.family.__get__  # the C getter: an int, no enum
_NO_RIGHTS = frozenset((AF_INET, AF_INET6))
_ROOM = [CMSG_LEN(4 * n) for n in range(SCM_MAX_FD + 1)]
_NOT_CLOEXEC = ~MSG_CMSG_CLOEXEC
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

_CONTROLLEN_AT = msghdr.msg_controllen.offset
_NAMELEN_AT = msghdr.msg_namelen.offset
_FLAGS_AT = msghdr.msg_flags.offset
_RESULT = struct.Struct(f"=I{_CONTROLLEN_AT - _NAMELEN_AT - 4}xQi")  # namelen, controllen, flags


class _iovec_bytes(ctypes.Structure):
    """``struct iovec`` with a ``char *`` base: a bytes object is pointed at, not copied."""

    _fields_ = [("iov_base", ctypes.c_char_p), ("iov_len", ctypes.c_size_t)]


class Buffers:
    """One prebuilt sending msghdr and one receiving msghdr with their buffers.

    The receiving msghdr lives in a bytearray so that its result fields are
    reset and read through memoryviews, without ctypes attribute stores.
    """

    def __init__(self) -> None:
        self.data = bytearray(DATA_CAP)
        self.ctrl = bytearray(CTRL_CAP)
        self.ctrl_i = memoryview(self.ctrl).cast("i")
        self.name = bytearray(NAME_CAP)
        self.send_ctrl = bytearray(CTRL_CAP)
        self.send_ctrl[:HDR] = _HDR_RIGHTS1
        self.send_fd = memoryview(self.send_ctrl)[HDR : HDR + 4].cast("i")
        self._c = [(c_char * len(b)).from_buffer(b)
                   for b in (self.data, self.ctrl, self.name, self.send_ctrl)]
        data_c, ctrl_c, name_c, send_ctrl_c = self._c
        self.iov = iovec(addressof(data_c), 1)
        self.msg_ba = bytearray(ctypes.sizeof(msghdr))
        msg = msghdr.from_buffer(self.msg_ba)
        msg.msg_iov, msg.msg_iovlen = pointer(self.iov), 1
        msg.msg_control = addressof(ctrl_c)
        msg.msg_name = addressof(name_c)
        msg.msg_flags = -1
        self.msg = msg
        self.msg_q = memoryview(self.msg_ba).cast("Q")
        self.msg_i = memoryview(self.msg_ba).cast("i")
        self.recv_ref = byref(msg)
        self.recv_len = 1
        self.send_iov = _iovec_bytes(b"x", 1)
        self.send_data: bytes | None = b"x"
        self.send_msg = send = msghdr()
        send.msg_iov = ctypes.cast(pointer(self.send_iov), ctypes.POINTER(iovec))
        send.msg_iovlen = 1
        send.msg_control = addressof(send_ctrl_c)
        send.msg_controllen = SPACE1
        self.send_ref = byref(send)
        # msghdr bytes msg_namelen..msg_flags of the usual reply -- no address,
        # flags MSG_CMSG_CLOEXEC, one fd -- for maxfds 1 and for more.
        self.plain_one = self._plain_reply(ROOM1)
        self.plain_more = self._plain_reply(SPACE1)

    def _plain_reply(self, controllen: int) -> bytes:
        reply = bytearray(self.msg_ba[_NAMELEN_AT : _FLAGS_AT + 4])  # pointers as they are
        struct.pack_into("=I", reply, 0, 0)
        struct.pack_into("=Qi", reply, _CONTROLLEN_AT - _NAMELEN_AT, controllen,
                         MSG_CMSG_CLOEXEC)
        return bytes(reply)


CONTROLLEN_Q = _CONTROLLEN_AT // 8
NAMELEN_I = _NAMELEN_AT // 4
FLAGS_I = _FLAGS_AT // 4

_B = Buffers()
_POOL: List[Buffers] = [Buffers(), Buffers()]


def _floor(send: Any, recv: Any) -> Callable[[socket.socket, socket.socket, int, int], None]:
    def loop(a: socket.socket, b: socket.socket, fd: int, n: int) -> None:
        bufs = Buffers()
        close = os.close
        sa, sb = a.fileno(), b.fileno()
        sref, rref = bufs.send_ref, bufs.recv_ref
        bufs.send_fd[0] = fd
        msg_q, ctrl_i = bufs.msg_q, bufs.ctrl_i
        for _ in range(n):
            send(sa, sref, 0)
            msg_q[CONTROLLEN_Q] = ROOM1  # the kernel rewrites it on every call
            recv(sb, rref, 0)
            close(ctrl_i[_FD_I])

    return loop


# The floor: raw calls on prebuilt byref()s, inlined, nothing checked.
floor_loop = _floor(sendmsg_raw, recvmsg_raw)
# The floor without errno capture (not a usable pair: a failure's errno is lost).
floor_loop_no_errno = _floor(sendmsg_no_errno, recvmsg_no_errno)


def _one_fd(fds: Any) -> None:
    if len(fds) != 1:
        raise NotImplementedError("the stepwise variants are built for one fd a message")


# --- api: CPython's signatures, nothing checked ------------------------------------

def send_api(sock: Any, buffers: Any, fds: Any, flags: int = 0, address: Any = None) -> int:
    data = b"".join(buffers)
    s = _B
    if data is not s.send_data:
        s.send_iov.iov_base = data
        s.send_iov.iov_len = len(data)
        s.send_data = data
    s.send_fd[0] = fds[0]
    sent: int = sendmsg_raw(sock.fileno(), s.send_ref, flags)
    return sent


def recv_api(sock: Any, bufsize: int, maxfds: int, flags: int = 0) -> Any:
    s = _B
    if bufsize != s.recv_len:
        s.iov.iov_len = bufsize
        s.recv_len = bufsize
    s.msg_q[CONTROLLEN_Q] = ROOM1
    received = recvmsg_raw(sock.fileno(), s.recv_ref, flags)
    if received == 1:
        return _BYTE[s.data[0]], [s.ctrl_i[_FD_I]], 0, None
    return bytes(s.data[:received]), [s.ctrl_i[_FD_I]], 0, None


# --- validated: + every argument checked before a shared buffer is written ----------

def send_validated(sock: Any, buffers: Any, fds: Any, flags: int = 0,
                   address: Any = None) -> int:
    cls = type(fds)
    if (address is not None or (cls is not list and cls is not tuple)
            or type(flags) is not int or not _INT_MIN <= flags <= _INT_MAX):
        raise NotImplementedError("general path")
    cls = type(sock)
    if cls is _SocketType:
        fd = sock.fileno()
    elif cls is int and _INT_MIN <= sock <= _INT_MAX:
        fd = sock
    else:
        raise NotImplementedError("general path")
    nfds = len(fds)
    if nfds > SCM_MAX_FD:
        raise NotImplementedError("general path")
    data = b"".join(buffers)
    if nfds and _family(sock) in _NO_RIGHTS:
        raise OSError(errno.EOPNOTSUPP, "SCM_RIGHTS on an AF_INET/AF_INET6 socket")
    s = _B
    if data is not s.send_data:
        if len(data) > DATA_CAP:
            raise NotImplementedError("general path")
        s.send_iov.iov_base = data
        s.send_iov.iov_len = len(data)
        s.send_data = data
    if nfds == 1:
        try:
            s.send_fd[0] = fds[0]
        except (TypeError, ValueError):
            raise TypeError("an fd must be a C int") from None
    else:
        _one_fd(fds)
    sent: int = sendmsg_raw(fd, s.send_ref, flags)
    return sent


def _recv_checked(sock: Any, bufsize: Any, maxfds: Any, flags: Any) -> int:
    if (type(bufsize) is not int or type(maxfds) is not int or type(flags) is not int
            or not 0 <= bufsize <= DATA_CAP or not 0 <= maxfds <= SCM_MAX_FD
            or not _INT_MIN <= flags <= _INT_MAX):
        raise NotImplementedError("general path")
    cls = type(sock)
    if cls is _SocketType:
        return int(sock.fileno())
    if cls is int and _INT_MIN <= sock <= _INT_MAX:
        return int(sock)
    raise NotImplementedError("general path")


def recv_validated(sock: Any, bufsize: int, maxfds: int, flags: int = 0) -> Any:
    # The checks inline, as rawsys has them (a helper call would cost its own ns).
    if (type(bufsize) is not int or type(maxfds) is not int or type(flags) is not int
            or not 0 <= bufsize <= DATA_CAP or not 0 <= maxfds <= SCM_MAX_FD
            or not _INT_MIN <= flags <= _INT_MAX):
        return _recv_checked(sock, bufsize, maxfds, flags)
    cls = type(sock)
    if cls is _SocketType:
        fd = sock.fileno()
    elif cls is int and _INT_MIN <= sock <= _INT_MAX:
        fd = sock
    else:
        fd = _recv_checked(sock, bufsize, maxfds, flags)
    s = _B
    if bufsize != s.recv_len:
        s.iov.iov_len = bufsize
        s.recv_len = bufsize
    s.msg_q[CONTROLLEN_Q] = _ROOM[maxfds]
    received = recvmsg_raw(fd, s.recv_ref, flags)
    if received == 1 and bufsize:
        return _BYTE[s.data[0]], [s.ctrl_i[_FD_I]], 0, None
    return bytes(s.data[:received]), [s.ctrl_i[_FD_I]], 0, None


# --- cloexec: + MSG_CMSG_CLOEXEC, the flag stripped from what is returned ------------

def recv_cloexec(sock: Any, bufsize: int, maxfds: int, flags: int = 0, *,
                 cloexec: bool = True) -> Any:
    if (type(bufsize) is not int or type(maxfds) is not int or type(flags) is not int
            or not 0 <= bufsize <= DATA_CAP or not 0 <= maxfds <= SCM_MAX_FD
            or not _INT_MIN <= flags <= _INT_MAX):
        return _recv_checked(sock, bufsize, maxfds, flags)
    cls = type(sock)
    if cls is _SocketType:
        fd = sock.fileno()
    elif cls is int and _INT_MIN <= sock <= _INT_MAX:
        fd = sock
    else:
        fd = _recv_checked(sock, bufsize, maxfds, flags)
    if cloexec and not flags & MSG_CMSG_CLOEXEC:
        flags |= MSG_CMSG_CLOEXEC
    s = _B
    if bufsize != s.recv_len:
        s.iov.iov_len = bufsize
        s.recv_len = bufsize
    s.msg_q[CONTROLLEN_Q] = _ROOM[maxfds]
    received = recvmsg_raw(fd, s.recv_ref, flags)
    # The flags echo MSG_CMSG_CLOEXEC: not read at this step (the next one
    # reads and strips them), so this step's price is the kernel's and the test.
    if received == 1 and bufsize:
        return _BYTE[s.data[0]], [s.ctrl_i[_FD_I]], 0, None
    return bytes(s.data[:received]), [s.ctrl_i[_FD_I]], 0, None


# --- ctrunc: + the reply checked (MSG_CTRUNC, the control header, the address) -------

def _walk(ctrl: bytearray, used: int) -> List[int]:
    """Every fd of every SCM_RIGHTS header in ctrl[:used]."""
    fds: List[int] = []
    offset = 0
    while used - offset >= HDR:
        cmsg_len, level, ctype = _CMSGHDR.unpack_from(ctrl, offset)
        if cmsg_len < HDR:
            break
        stop = min(offset + cmsg_len, used)
        count = (stop - offset - HDR) >> 2
        if level == SOL_SOCKET and ctype == SCM_RIGHTS and count:
            fds.extend(struct.unpack_from(f"={count}i", ctrl, offset + HDR))
        offset += (cmsg_len + 7) & ~7
    return fds


class Truncated(OSError):
    """MSG_CTRUNC: ``reply`` holds what did arrive (its fds are the catcher's)."""

    def __init__(self, reply: Any) -> None:
        super().__init__(errno.EMSGSIZE, "control data truncated (MSG_CTRUNC)")
        self.reply = reply


def _slow_reply(s: Buffers, received: int, bufsize: int, added: int) -> Any:
    namelen, used, msg_flags = _RESULT.unpack_from(s.msg_ba, _NAMELEN_AT)
    fds = _walk(s.ctrl, used) if used else []
    if added:
        msg_flags &= _NOT_CLOEXEC
    data = bytes(s.data[: min(received, bufsize)])
    address = bytes(s.name[:namelen]) if namelen else None
    if msg_flags & MSG_CTRUNC:
        raise Truncated((data, fds, msg_flags, address))
    return data, fds, msg_flags, address


def recv_ctrunc(sock: Any, bufsize: int, maxfds: int, flags: int = 0, *,
                cloexec: bool = True) -> Any:
    if (type(bufsize) is not int or type(maxfds) is not int or type(flags) is not int
            or not 0 <= bufsize <= DATA_CAP or not 0 <= maxfds <= SCM_MAX_FD
            or not _INT_MIN <= flags <= _INT_MAX):
        return _recv_checked(sock, bufsize, maxfds, flags)
    cls = type(sock)
    if cls is _SocketType:
        fd = sock.fileno()
    elif cls is int and _INT_MIN <= sock <= _INT_MAX:
        fd = sock
    else:
        fd = _recv_checked(sock, bufsize, maxfds, flags)
    if cloexec and not flags & MSG_CMSG_CLOEXEC:
        added = MSG_CMSG_CLOEXEC
        flags |= MSG_CMSG_CLOEXEC
    else:
        added = 0
    s = _B
    if bufsize != s.recv_len:
        s.iov.iov_len = bufsize
        s.recv_len = bufsize
    s.msg_q[CONTROLLEN_Q] = _ROOM[maxfds]
    s.msg_i[NAMELEN_I] = NAME_CAP
    received = recvmsg_raw(fd, s.recv_ref, flags)
    # The usual reply recognised by two byte compares (as rawsys does):
    # no address, flags exactly MSG_CMSG_CLOEXEC, one SCM_RIGHTS header of one fd.
    if added and s.msg_ba.startswith(
            s.plain_one if maxfds == 1 else s.plain_more, _NAMELEN_AT) and (  # type: ignore[attr-defined]
            s.ctrl.startswith(_HDR_RIGHTS1)):
        if received == 1 and bufsize:
            return _BYTE[s.data[0]], [s.ctrl_i[_FD_I]], 0, None
        return bytes(s.data[: min(received, bufsize)]), [s.ctrl_i[_FD_I]], 0, None
    return _slow_reply(s, received, bufsize, added)


# --- owned: + pool, errno and retry, cleanup on exception ----------------------------

def _retry(e: int) -> None:
    """The retry helper's shape: EINTR retries, anything else raises."""
    if e != errno.EINTR:
        raise OSError(e, os.strerror(e))


def send_owned(sock: Any, buffers: Any, fds: Any, flags: int = 0,
               address: Any = None) -> int:
    cls = type(fds)
    if (address is not None or (cls is not list and cls is not tuple)
            or type(flags) is not int or not _INT_MIN <= flags <= _INT_MAX):
        raise NotImplementedError("general path")
    cls = type(sock)
    if cls is _SocketType:
        fd = sock.fileno()
    elif cls is int and _INT_MIN <= sock <= _INT_MAX:
        fd = sock
    else:
        raise NotImplementedError("general path")
    nfds = len(fds)
    if nfds > SCM_MAX_FD:
        raise NotImplementedError("general path")
    data = b"".join(buffers)
    if nfds and _family(sock) in _NO_RIGHTS:
        raise OSError(errno.EOPNOTSUPP, "SCM_RIGHTS on an AF_INET/AF_INET6 socket")
    try:
        s = _POOL.pop()  # atomic: reentrant and thread-safe without a lock
    except IndexError:
        s = Buffers()
    try:
        if data is not s.send_data:
            if len(data) > DATA_CAP:
                raise NotImplementedError("general path")
            s.send_iov.iov_base = data
            s.send_iov.iov_len = len(data)
            s.send_data = data
        if nfds == 1:
            try:
                s.send_fd[0] = fds[0]
            except (TypeError, ValueError):
                raise TypeError("an fd must be a C int") from None
        else:
            _one_fd(fds)
        sent: int = sendmsg_raw(fd, s.send_ref, flags)
        while sent < 0:
            _retry(_get_errno())
            sent = sendmsg_raw(fd, s.send_ref, flags)
        return sent
    finally:
        _POOL.append(s)


def recv_owned(sock: Any, bufsize: int, maxfds: int, flags: int = 0, *,
               cloexec: bool = True) -> Any:
    if (type(bufsize) is not int or type(maxfds) is not int or type(flags) is not int
            or not 0 <= bufsize <= DATA_CAP or not 0 <= maxfds <= SCM_MAX_FD
            or not _INT_MIN <= flags <= _INT_MAX):
        return _recv_checked(sock, bufsize, maxfds, flags)
    cls = type(sock)
    if cls is _SocketType:
        fd = sock.fileno()
    elif cls is int and _INT_MIN <= sock <= _INT_MAX:
        fd = sock
    else:
        fd = _recv_checked(sock, bufsize, maxfds, flags)
    if cloexec and not flags & MSG_CMSG_CLOEXEC:
        added = MSG_CMSG_CLOEXEC
        flags |= MSG_CMSG_CLOEXEC
    else:
        added = 0
    try:
        s = _POOL.pop()
    except IndexError:
        s = Buffers()
    msg_i = s.msg_i
    try:
        if bufsize != s.recv_len:
            s.iov.iov_len = bufsize
            s.recv_len = bufsize
        s.msg_q[CONTROLLEN_Q] = _ROOM[maxfds]
        msg_i[NAMELEN_I] = NAME_CAP
        received = recvmsg_raw(fd, s.recv_ref, flags)
        while received < 0:
            _retry(_get_errno())
            received = recvmsg_raw(fd, s.recv_ref, flags)
        if added and s.msg_ba.startswith(
                s.plain_one if maxfds == 1 else s.plain_more, _NAMELEN_AT) and (
                s.ctrl.startswith(_HDR_RIGHTS1)):
            if received == 1 and bufsize:
                return _BYTE[s.data[0]], [s.ctrl_i[_FD_I]], 0, None
            return bytes(s.data[: min(received, bufsize)]), [s.ctrl_i[_FD_I]], 0, None
        return _slow_reply(s, received, bufsize, added)
    except Truncated:
        raise  # it owns the fds that arrived
    except BaseException:
        if msg_i[FLAGS_I] != -1:  # fds were installed: close them before leaving
            for got in _walk(s.ctrl, min(s.msg_q[CONTROLLEN_Q], CTRL_CAP)):
                os.close(got)
        raise
    finally:
        msg_i[FLAGS_I] = -1  # the sentinel: a pooled state never holds stale fds
        _POOL.append(s)


Send = Callable[..., int]
Recv = Callable[..., Any]

# (label, send, recv): each the previous plus one guarantee.
STEPS: List[Tuple[str, Send, Recv]] = [
    ("+ drop-in API (call, args in, tuple out)", send_api, recv_api),
    ("+ argument validation", send_validated, recv_validated),
    ("+ CLOEXEC (MSG_CMSG_CLOEXEC)", send_validated, recv_cloexec),
    ("+ CTRUNC check, control walk", send_validated, recv_ctrunc),
    ("+ ownership: pool, errno, cleanup", send_owned, recv_owned),
]


# --- stand-ins: the Python side alone ------------------------------------------------
# On a shared machine the kernel's share of a transfer moves by hundreds of ns
# between rounds, more than a guarantee costs.  With sendmsg/recvmsg replaced by
# stand-ins that write what the kernel writes for the benchmark's message (one
# byte, one SCM_RIGHTS fd, no address, MSG_CMSG_CLOEXEC echoed), the Python side
# of each step is timed on its own, to a few ns.  The stand-ins cost the same in
# every variant, so differences between steps are exact Python costs.

class StandIns:
    """Python stand-ins for un-prototyped ``sendmsg``/``recvmsg(fd, byref(msg), flags)``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._views: dict[int, Tuple[Any, Any, Any]] = {}

    def sendmsg(self, sockfd: int, ref: Any, flags: int) -> int:
        return 1

    def recvmsg(self, sockfd: int, ref: Any, flags: int) -> int:
        views = self._views.get(id(ref))
        if views is None:
            views = self._learn(ref)
        msg_q, msg_i, _ref = views
        # The kernel's msg_controllen: one CMSG_LEN(4) header, padded when room allows.
        msg_q[CONTROLLEN_Q] = ROOM1 if msg_q[CONTROLLEN_Q] < SPACE1 else SPACE1
        msg_i[NAMELEN_I] = 0
        msg_i[FLAGS_I] = flags & MSG_CMSG_CLOEXEC
        return 1

    def _learn(self, ref: Any) -> Tuple[Any, Any, Any]:
        """Views of the msghdr behind *ref*; its buffers get the message once."""
        msg = ref._obj
        raw = memoryview((c_char * ctypes.sizeof(msghdr)).from_address(addressof(msg)))
        control = _CMSGHDR.pack(ROOM1, SOL_SOCKET, SCM_RIGHTS) + struct.pack("=i", self.fd)
        ctypes.memmove(msg.msg_control, control, len(control))
        ctypes.memmove(msg.msg_iov[0].iov_base, b"x", 1)
        raw = raw.cast("B")
        views = (raw.cast("Q"), raw.cast("i"), ref)  # ref kept: its id stays unique
        self._views[id(ref)] = views
        return views


Loop = Callable[[int], None]


def stand_in_floor(stand: StandIns) -> Loop:
    """The floor's loop with the stand-ins (and no close: nothing was installed)."""
    bufs = Buffers()
    send, recv = stand.sendmsg, stand.recvmsg
    sref, rref = bufs.send_ref, bufs.recv_ref
    msg_q, ctrl_i = bufs.msg_q, bufs.ctrl_i

    def loop(n: int, _keep: Buffers = bufs) -> None:  # _keep: the buffers the refs point at
        for _ in range(n):
            send(3, sref, 0)
            msg_q[CONTROLLEN_Q] = ROOM1
            recv(4, rref, 0)
            ctrl_i[_FD_I]

    return loop


def stand_in_pair(send: Send, recv: Recv, a: socket.socket, b: socket.socket) -> Loop:
    def loop(n: int) -> None:
        data = [b"x"]
        fds = [7]
        for _ in range(n):
            send(a, data, fds)
            recv(b, 1, 1)[1][0]

    return loop


class Patched:
    """Swap the stand-ins in for the libc functions in *modules*' globals.

    A global is swapped when it *is* one of the given functions, so a module
    that holds them under any name is covered; ``swapped`` counts them.
    """

    def __init__(self, modules: List[Any], stand: StandIns,
                 functions: List[Tuple[Any, Any]]) -> None:
        self.changes: List[Tuple[Any, str, Any]] = []
        for module in modules:
            for name, value in list(vars(module).items()):
                for real, stand_in in functions:
                    if value is real:
                        self.changes.append((module, name, value))
                        setattr(module, name, stand_in)
        self.swapped = len(self.changes)

    def restore(self) -> None:
        for module, name, value in self.changes:
            setattr(module, name, value)


if __name__ == "__main__":  # ./dev bench runs every script here
    print("fds_steps: the stepwise variants that fds_throughput.py times (run that one)")
