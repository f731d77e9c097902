"""What the stateful test runs: operations on rawsys and on CPython's socket module.

An ``Op`` is one call of a public send or receive function of rawsys, with
symbolic arguments (``F(2)`` is the channel's third file, ``Peer()`` the
receiving socket's address) so that the same operation can run on any
``Channel``.  ``compare`` makes the call twice (``run_side``): through rawsys
on the channel's rawsys socket pair, and through CPython's ``socket.sendmsg``
/ ``recvmsg`` (what ``socket.send_fds``/``recv_fds`` call) on the parallel
CPython pair; each time it then reads what arrived on the wire with CPython.
It returns the differences between the two ``Outcome``s, described.

Where rawsys differs from CPython on purpose (documented in its docstrings)
the CPython side is adjusted here, each place saying why: ``flags`` and
``address`` are honoured (CPython's ``send_fds``/``recv_fds`` drop them, so
the oracle calls ``sendmsg``/``recvmsg`` itself); received fds are
close-on-exec (the oracle passes ``MSG_CMSG_CLOEXEC``); ``MSG_CTRUNC`` raises
``ControlTruncatedError`` holding what arrived; ``recv_fd`` of a message
without an fd raises ``OSError(EBADMSG)``; fds for an ``AF_INET`` socket raise
``FdPassingUnsupportedError``; ``recv_fds``/``recv_fds_batch`` return no
credentials and close a pidfd.
"""

from __future__ import annotations

import array
import errno
import fcntl
import itertools
import os
import select
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import rawsys
from rawsys import (
    ControlTruncatedError,
    FdPassingUnsupportedError,
    ScmCredentials,
    ScmRights,
    UnknownControl,
)

SCM_MAX_FD = 253  # include/net/scm.h
UCRED_SIZE = 12  # sizeof(struct ucred)
BIG = 70000  # more than rawsys's pooled data buffer (64 KiB): its general paths
DRAIN_BUFSIZE = BIG + 16
DRAIN_ROOM = (socket.CMSG_SPACE(UCRED_SIZE) + socket.CMSG_SPACE(4 * SCM_MAX_FD)
              + socket.CMSG_SPACE(4))
# Plain ints: an operation with the enum socket.MSG_* gives "flags | MSG_X" an enum's masking.
MSG_CMSG_CLOEXEC = int(socket.MSG_CMSG_CLOEXEC)
MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
MSG_CTRUNC = int(socket.MSG_CTRUNC)
# <asm-generic/socket.h>, <linux/socket.h> (Linux 6.5+); not in every Python's socket module.
SO_PASSPIDFD = 76
SCM_PIDFD = 0x04
FILES = 6  # fds per channel that operations send: the ends of three pipes

# (st_dev, st_ino, access mode, close-on-exec): which open file an fd is.
Identity = Tuple[int, int, int, bool]


def identity(fd: int) -> Identity:
    st = os.fstat(fd)
    mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    return (st.st_dev, st.st_ino, mode, not os.get_inheritable(fd))


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------- symbols


@dataclass(frozen=True)
class F:
    """The channel's file number ``index`` (an open pipe end)."""

    index: int

    def __repr__(self) -> str:
        return f"F{self.index}"


@dataclass(frozen=True)
class Packed:
    """fds given as a bytes-like object: the native ints of ``fds``, then ``extra`` bytes."""

    fds: Tuple[Any, ...]
    kind: str = "bytes"  # bytes, bytearray or memoryview
    extra: bytes = b""

    def __repr__(self) -> str:
        return f"{self.kind}(ints{self.fds!r}{' + ' + repr(self.extra) if self.extra else ''})"


@dataclass(frozen=True)
class Iter:
    """A one-shot iterator over ``items`` (fds given as a generator)."""

    items: Tuple[Any, ...]

    def __repr__(self) -> str:
        return f"iter({list(self.items)!r})"


@dataclass(frozen=True)
class Repeat:
    """``count`` copies of one fd (too many fds, or the most allowed)."""

    fd: Any
    count: int

    def __repr__(self) -> str:
        return f"[{self.fd!r}] * {self.count}"


@dataclass(frozen=True)
class Peer:
    """The address of the socket that receives on this channel (UDP: its port + offset)."""

    port_offset: int = 0

    def __repr__(self) -> str:
        return f"Peer(port{self.port_offset:+})" if self.port_offset else "Peer()"


@dataclass(frozen=True)
class Chunk:
    """One buffer: ``data`` as ``kind`` (bytes, bytearray, memoryview), or ``BIG`` bytes."""

    data: bytes
    kind: str = "bytes"

    def __repr__(self) -> str:
        if len(self.data) > 16:
            return f"{self.kind}({self.data[:1]!r} * {len(self.data)})"
        return repr(self.data) if self.kind == "bytes" else f"{self.kind}({self.data!r})"


# ---------------------------------------------------------------- channels


class Pair:
    """A sender and a receiver, connected; *kind* is ``unix`` (``AF_UNIX`` datagrams, the
    receiver bound to an abstract name), ``passcred`` (the same with ``SO_PASSCRED`` on the
    receiver), ``pidfd`` (with ``SO_PASSPIDFD``, where the kernel has it: Linux 6.5+; else
    a plain pair, on which both sides still must agree), ``stream`` (an ``AF_UNIX``
    stream pair: no message boundaries, fds ride with the bytes) or ``udp`` (``AF_INET``
    datagrams on 127.0.0.1).
    """

    _names = itertools.count()

    def __init__(self, kind: str) -> None:
        self.address: Any
        if kind == "udp":
            self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.receiver.bind(("127.0.0.1", 0))
            self.address = self.receiver.getsockname()
            self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sender.bind(("127.0.0.1", 0))
            self.sender.connect(self.address)
            self.sender_address: Any = self.sender.getsockname()
            return
        self.sender_address = None
        if kind == "stream":
            self.sender, self.receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.address = None
            return
        self.sender, self.receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.address = f"\0rawsys-stateful-{os.getpid()}-{next(self._names)}"
        self.receiver.bind(self.address)
        if kind == "passcred":
            self.receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if kind == "pidfd":
            try:
                self.receiver.setsockopt(socket.SOL_SOCKET, SO_PASSPIDFD, 1)
            except OSError:  # ENOPROTOOPT before Linux 6.5
                pass

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()


class Channel:
    """The sockets and files one thread uses: a rawsys pair and a CPython pair of each kind.

    ``files`` are the ends of three pipes (six distinct identities); the
    pairs are keyed by side (``rawsys``, ``cpython``) and ``Pair`` kind.
    """

    def __init__(self) -> None:
        self.files: List[int] = []
        for _ in range(FILES // 2):
            self.files.extend(os.pipe())
        self.pairs: Dict[Tuple[str, str], Pair] = {
            (side, kind): Pair(kind)
            for side in ("rawsys", "cpython")
            for kind in ("unix", "passcred", "pidfd", "stream", "udp")
        }

    def close(self) -> None:
        for pair in self.pairs.values():
            pair.close()
        for fd in self.files:
            os.close(fd)
        self.files = []

    def resolve(self, value: Any, pair: Pair) -> Any:
        """*value* with every symbol replaced by what it stands for on *pair*."""
        if isinstance(value, F):
            return self.files[value.index]
        if isinstance(value, Peer):
            if isinstance(pair.address, tuple):
                return (pair.address[0], pair.address[1] + value.port_offset)
            return pair.address
        if isinstance(value, Chunk):
            return {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[
                value.kind](value.data)
        if isinstance(value, Packed):
            raw = array.array("i", [self.resolve(v, pair) for v in value.fds]).tobytes()
            raw += value.extra
            return {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[
                value.kind](raw)
        if isinstance(value, Iter):
            return iter([self.resolve(v, pair) for v in value.items])
        if isinstance(value, Repeat):
            return [self.resolve(value.fd, pair)] * value.count
        if isinstance(value, ScmRights):
            return ScmRights(tuple(self.resolve(v, pair) for v in value.fds))
        if isinstance(value, list):
            return [self.resolve(v, pair) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v, pair) for v in value)
        return value


# ---------------------------------------------------------------- what arrived


@dataclass(frozen=True)
class Wire:
    """One message as it arrived: data, fds by identity, flags, credentials, sender."""

    data: bytes
    fds: Tuple[Identity, ...]
    flags: int = 0
    creds: Tuple[int, int, int] | None = None
    address: Any = None
    pidfd: Any = None  # an SCM_PIDFD's Identity, or ("failed", errno)

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 16 else f"{self.data[:1]!r} * {len(self.data)}"
        extra = ""
        if self.flags:
            extra += f", flags={self.flags:#x}"
        if self.creds is not None:
            extra += f", creds={self.creds}"
        if self.address is not None:
            extra += f", address={self.address!r}"
        if self.pidfd is not None:
            extra += f", pidfd={self.pidfd!r}"
        return f"Wire({data!r}, {len(self.fds)} fds {list(self.fds)}{extra})"


_sender = threading.local()  # the address of the pair's sender, while a call runs


def _address(address: Any) -> Any:
    """*address*; the pair's sender (on either side's pair) as ``"SENDER"``."""
    if address and address == getattr(_sender, "address", None):
        return "SENDER"
    return address or None  # an unnamed AF_UNIX sender: None or ''


def identities(fds: Sequence[int]) -> Tuple[Identity, ...]:
    """The identities of *fds*, which are then closed (they were received here)."""
    try:
        return tuple(identity(fd) for fd in fds)
    finally:
        for fd in fds:
            os.close(fd)


def from_ancdata(data: bytes, ancdata: List[Tuple[int, int, bytes]], flags: int,
                 address: Any, strip: int) -> Wire:
    """A ``Wire`` from what ``socket.recvmsg`` returned; closes the fds received."""
    fds: List[int] = []
    creds = None
    pidfd: Any = None
    for level, ctype, payload in ancdata:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        elif level == socket.SOL_SOCKET and ctype == socket.SCM_CREDENTIALS and (
                len(payload) >= UCRED_SIZE):
            pid, uid, gid = array.array("i", payload[:UCRED_SIZE])
            creds = (pid, uid, gid)
        elif level == socket.SOL_SOCKET and ctype == SCM_PIDFD and len(payload) >= 4:
            (value,) = array.array("i", payload[:4])
            pidfd = identities([value])[0] if value >= 0 else ("failed", -value)
    return Wire(data, identities(fds), flags & ~strip, creds, _address(address), pidfd)


_SYNC = b"\0rawsys-stateful-sync"
_SETTLE_SECONDS = 10.0


def wait_readable(pair: Pair) -> None:
    """On UDP, wait until a datagram is queued (loopback may deliver after sendmsg returns)."""
    if pair.sender_address is not None:
        select.select([pair.receiver], [], [], _SETTLE_SECONDS)


def drain(pair: Pair) -> Tuple[Wire, ...]:
    """Every message queued on *pair*'s receiver, read with CPython's ``recvmsg``.

    On UDP a marker datagram sent last marks the end, so a datagram still in
    the loopback device is not missed.
    """
    udp = pair.sender_address is not None
    if udp:
        pair.sender.send(_SYNC)
    got: List[Wire] = []
    while True:
        try:
            data, anc, flags, address = pair.receiver.recvmsg(
                DRAIN_BUFSIZE, DRAIN_ROOM, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            if not udp:
                return tuple(got)
            if not select.select([pair.receiver], [], [], _SETTLE_SECONDS)[0]:
                raise AssertionError("the UDP marker datagram did not arrive") from None
            continue
        if udp and data == _SYNC:
            return tuple(got)
        got.append(from_ancdata(data, anc, flags, address, MSG_CMSG_CLOEXEC))


# ---------------------------------------------------------------- operations


@dataclass(frozen=True)
class Op:
    """One call: ``name`` in rawsys with ``args``/``kwargs`` (symbols resolved per channel).

    ``queue``: messages (buffers, fds) sent with CPython before a receive.
    ``passcred``, ``passpidfd``: run on the pairs whose receiver has ``SO_PASSCRED``,
    ``SO_PASSPIDFD``; ``stream``: on the ``SOCK_STREAM`` pairs;
    ``udp``: on the ``AF_INET`` pairs.  ``fileno``: rawsys is given the socket's
    fd number (which it accepts) where CPython is given the socket object.
    """

    name: str
    args: Tuple[Any, ...]
    kwargs: Tuple[Tuple[str, Any], ...] = ()
    queue: Tuple[Tuple[Tuple[Any, ...], Tuple[Any, ...]], ...] = ()
    passcred: bool = False
    passpidfd: bool = False
    stream: bool = False
    udp: bool = False
    fileno: bool = False

    @property
    def kind(self) -> str:
        if self.udp:
            return "udp"
        if self.stream:
            return "stream"
        return "passcred" if self.passcred else "pidfd" if self.passpidfd else "unix"

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        call = f"{self.name}({'sock.fileno()' if self.fileno else 'sock'}, {', '.join(parts)})"
        if self.queue:
            call = f"[queued {list(self.queue)!r}] " + call
        return call + {"unix": "", "passcred": " [SO_PASSCRED]", "pidfd": " [SO_PASSPIDFD]",
                       "stream": " [SOCK_STREAM]", "udp": " [UDP]"}[self.kind]


@dataclass
class Outcome:
    """What one side did: the exception (class, errno) or the value, and the wire after."""

    error: Tuple[str, int | None] | None = None
    value: Any = None
    wire: Tuple[Wire, ...] = ()

    def __repr__(self) -> str:
        head = f"raised {self.error[0]}(errno={self.error[1]})" if self.error else (
            f"returned {self.value!r}")
        return f"{head}; then on the wire: {list(self.wire)!r}"


def _error(exc: BaseException) -> Tuple[str, int | None]:
    return (type(exc).__name__, exc.errno if isinstance(exc, OSError) else None)


def _ancdata_for(control: Sequence[Any]) -> List[Tuple[int, int, bytes]]:
    """CPython's ancillary data for rawsys control messages, built as CPython builds fds."""
    anc = []
    for item in control:
        if isinstance(item, ScmRights):
            anc.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", item.fds).tobytes()))
        elif isinstance(item, ScmCredentials):
            payload = array.array("i", [item.pid]).tobytes()
            payload += array.array("I", [item.uid, item.gid]).tobytes()
            anc.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS, payload))
        elif isinstance(item, UnknownControl):
            anc.append((item.level, item.type, item.data))
        else:
            anc.append(item)  # sendmsg raises TypeError for what is not a triple
    return anc


def _check_c_int(value: Any) -> None:
    """Raise what CPython's ``sendmsg``/``recvmsg`` raise for a bad ``flags`` ("i" format)."""
    array.array("i", [value])


def _rights(fds: Any) -> List[Tuple[int, int, Any]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]


# The CPython side of each send: the return value (what sendmsg returned).
def _cp_send_fds(sock: socket.socket, buffers: Any, fds: Any, flags: Any = 0,
                 address: Any = None) -> Any:
    anc = _rights(fds)  # socket.send_fds's own conversion, before sendmsg
    if sock.family != socket.AF_UNIX and len(anc[0][2]):
        # rawsys refuses where the kernel would drop the fds silently.
        raise FdPassingUnsupportedError(errno.EOPNOTSUPP, "no fds on AF_INET")
    return sock.sendmsg(buffers, anc, flags, address)


def _cp_send_fd(sock: socket.socket, fd: Any) -> Any:
    return socket.send_fds(sock, [b"x"], [fd])


def _cp_send_message(sock: socket.socket, buffers: Any, control: Any = (), flags: Any = 0,
                     address: Any = None) -> Any:
    return sock.sendmsg(buffers, _ancdata_for(list(control)), flags, address)


def _cp_send_credentials(sock: socket.socket, buffers: Any, credentials: Any = None,
                         fds: Any = (), flags: Any = 0, address: Any = None) -> Any:
    if credentials is None:
        credentials = ScmCredentials(os.getpid(), os.getuid(), os.getgid())
    control: List[Any] = [credentials]
    fd_list = list(fds)
    if fd_list:
        control.append(ScmRights(tuple(fd_list)))
    return _cp_send_message(sock, buffers, control, flags, address)


def _cp_send_fds_batch(sock: socket.socket, items: Any, flags: Any = 0) -> Any:
    # sendmmsg: every message is built before the one system call; an error on
    # the first message raises, a later one ends the batch (sendmmsg(2)).
    _check_c_int(flags)
    built = []
    for buffers, fds in items:
        buffers = [memoryview(b) for b in buffers]
        fds = array.array("i", fds)
        built.append((buffers, _rights(fds) if fds else []))
    sent = 0
    for buffers, anc in built:
        try:
            sock.sendmsg(buffers, anc, flags)
        except OSError:
            if sent == 0:
                raise
            break
        sent += 1
    return sent


def _cp_recvmsg(sock: socket.socket, bufsize: Any, room: int, flags: Any,
                cloexec: bool) -> Wire:
    strip = 0
    if cloexec and isinstance(flags, int) and -(2**31) <= flags < 2**31 and (
            not flags & MSG_CMSG_CLOEXEC):
        flags = int(flags) | MSG_CMSG_CLOEXEC
        strip = MSG_CMSG_CLOEXEC
    data, anc, msg_flags, address = sock.recvmsg(bufsize, room, flags)
    return from_ancdata(data, anc, msg_flags, address, strip)


def _truncated(wires: List[Wire], message: bool = False) -> Any:
    """rawsys raises ControlTruncatedError where a message has MSG_CTRUNC.

    recv_fds and recv_fds_batch return neither credentials nor a pidfd (they
    close it); recv_message returns both, and its ControlTruncatedError holds
    the pidfd after the other fds.
    """
    if any(w.flags & MSG_CTRUNC for w in wires):
        return ("ControlTruncatedError", [
            Wire(w.data, w.fds + ((w.pidfd,) if message and _installed(w.pidfd) else ()),
                 w.flags, None, w.address) for w in wires])
    if message:
        return wires
    return [Wire(w.data, w.fds, w.flags, None, w.address) for w in wires]


def _installed(pidfd: Any) -> bool:
    return pidfd is not None and pidfd[0] != "failed"


def _cp_recv_fds(sock: socket.socket, bufsize: Any, maxfds: Any, flags: Any = 0,
                 cloexec: bool = True) -> Any:
    room = socket.CMSG_LEN(maxfds * 4)  # what socket.recv_fds asks for
    return _truncated([_cp_recvmsg(sock, bufsize, room, flags, cloexec)])


def _cp_recv_fd(sock: socket.socket) -> Any:
    got = _truncated([_cp_recvmsg(sock, 1, socket.CMSG_LEN(4), 0, True)])
    if isinstance(got, tuple):
        return got
    if not got[0].fds:
        raise OSError(errno.EBADMSG, "no fd")
    return got[0].fds[0]


def _cp_recv_message(sock: socket.socket, bufsize: Any, maxfds: Any = 0, flags: Any = 0, *,
                     credentials: bool = False, pidfd: bool = False, extra_control: int = 0,
                     cloexec: bool = True) -> Any:
    if extra_control < 0:
        raise OverflowError("extra_control")
    socket.CMSG_LEN(maxfds * 4)  # maxfds as socket.recv_fds takes it
    room = socket.CMSG_LEN(4 * min(maxfds, SCM_MAX_FD)) + extra_control
    if credentials:
        room += socket.CMSG_SPACE(UCRED_SIZE)
    if pidfd:
        room += socket.CMSG_SPACE(4)
    got = _truncated([_cp_recvmsg(sock, bufsize, room, flags, cloexec)], message=True)
    return got if isinstance(got, tuple) else got[0]


def _cp_recv_fds_batch(sock: socket.socket, count: Any, bufsize: Any, maxfds: Any,
                       flags: Any = 0, *, cloexec: bool = True) -> Any:
    if not isinstance(count, int):
        raise TypeError("count")
    if count < 0:
        raise ValueError("count")  # as a negative bufsize
    socket.CMSG_LEN(maxfds * 4)  # maxfds as socket.recv_fds takes it
    room = socket.CMSG_LEN(4 * min(maxfds, SCM_MAX_FD))
    if count == 0:  # no recvmsg: check its arguments as it would
        _check_c_int(flags)
        array.array("q", [bufsize])  # its "n" format: TypeError, OverflowError
        if bufsize < 0:
            raise ValueError("negative buffer size")
        return []
    # MSG_WAITFORONE: wait for the first message, then take what is queued.
    wires = [_cp_recvmsg(sock, bufsize, room, flags, cloexec)]
    while len(wires) < count:
        try:
            wires.append(_cp_recvmsg(sock, bufsize, room, int(flags) | MSG_DONTWAIT, cloexec))
        except BlockingIOError:
            break
    return _truncated(wires)


CPYTHON: Dict[str, Callable[..., Any]] = {
    "send_fds": _cp_send_fds,
    "send_fd": _cp_send_fd,
    "send_message": _cp_send_message,
    "send_credentials": _cp_send_credentials,
    "send_fds_batch": _cp_send_fds_batch,
    "recv_fds": _cp_recv_fds,
    "recv_fd": _cp_recv_fd,
    "recv_message": _cp_recv_message,
    "recv_fds_batch": _cp_recv_fds_batch,
}
SENDS = ("send_fds", "send_fd", "send_message", "send_credentials", "send_fds_batch")


def _rawsys_value(name: str, value: Any) -> Any:
    """rawsys's return value in the oracle's terms; received fds are identified and closed."""
    if name == "recv_fds":
        data, fds, flags, address = value
        return [Wire(data, identities(fds), flags, None, _address(address))]
    if name == "recv_fds_batch":
        return [Wire(d, identities(fds), fl, None, _address(a)) for d, fds, fl, a in value]
    if name == "recv_fd":
        return identities([value])[0]
    if name == "recv_message":
        creds = value.credentials
        pidfd: Any = None
        if value.pidfd is not None:
            pidfd = identities([value.pidfd])[0]
        elif getattr(value, "pidfd_errno", None) is not None:
            pidfd = ("failed", value.pidfd_errno)
        return Wire(value.data, identities(value.fds), value.msg_flags,
                    None if creds is None else (creds.pid, creds.uid, creds.gid),
                    _address(value.address), pidfd)
    return value


def _queue(channel: Channel, pair: Pair, op: Op) -> None:
    for buffers, fds in op.queue:
        buffers = channel.resolve(buffers, pair)
        fds = channel.resolve(fds, pair)
        pair.sender.sendmsg(list(buffers), _rights(fds) if fds else [])
    if op.queue:
        wait_readable(pair)


def run_side(channel: Channel, op: Op, side: str) -> Outcome:
    """Make *op*'s call on *side*'s pair of *channel*; read the wire after it."""
    pair = channel.pairs[(side, op.kind)]
    _sender.address = pair.sender_address
    _queue(channel, pair, op)
    sending = op.name in SENDS
    sock: Any = pair.sender if sending else pair.receiver
    if op.fileno and side == "rawsys":
        sock = sock.fileno()
    args = channel.resolve(op.args, pair)
    kwargs = {k: channel.resolve(v, pair) for k, v in op.kwargs}
    call = getattr(rawsys, op.name) if side == "rawsys" else CPYTHON[op.name]
    outcome = Outcome()
    try:
        value = call(sock, *args, **kwargs)
    except ControlTruncatedError as exc:
        if side != "rawsys":
            raise
        results = exc.take()
        outcome.value = ("ControlTruncatedError", [
            Wire(d, identities(fds), fl, None, _address(a)) for d, fds, fl, a in results])
    except Exception as exc:  # every exception is an outcome to compare
        outcome.error = _error(exc)
    else:
        outcome.value = _rawsys_value(op.name, value) if side == "rawsys" else value
    outcome.wire = drain(pair)
    return outcome


def sent_identities(channel: Channel, op: Op) -> Tuple[Identity, ...] | None:
    """The identities of the files *op* sends, when its fds are all channel files."""
    if op.name == "send_fd":
        fds: Any = op.args[:1]
    elif op.name == "send_fds" or (op.name == "send_credentials" and len(op.args) >= 3):
        fds = op.args[1] if op.name == "send_fds" else op.args[2]
    else:
        return None
    if isinstance(fds, Iter):
        fds = fds.items
    if not isinstance(fds, (list, tuple)) or not all(isinstance(f, F) for f in fds):
        return None
    out = []
    for f in fds:
        dev, ino, mode, _cloexec = identity(channel.files[f.index])
        out.append((dev, ino, mode, True))  # drained with MSG_CMSG_CLOEXEC
    return tuple(out)


# Calls compared, by function and by CPython's outcome ("ok" or the exception's name).
CALLS: Counter[Tuple[str, str]] = Counter()
_calls_lock = threading.Lock()


def compare(channel: Channel, op: Op) -> List[str]:
    """Run *op* on both sides of *channel*; the differences, described (none: agreement)."""
    theirs = run_side(channel, op, "cpython")
    ours = run_side(channel, op, "rawsys")
    with _calls_lock:
        CALLS[(op.name, theirs.error[0] if theirs.error else "ok")] += 1
    problems = []
    if ours.error != theirs.error:
        problems.append("exception")
    elif ours.value != theirs.value:
        problems.append("result")
    if ours.wire != theirs.wire:
        problems.append("wire")
    expected = sent_identities(channel, op)
    if expected is not None and not ours.error and not theirs.error:
        if op.kind == "stream":  # one read may not be one send; no bytes, no fds
            got = [tuple(fd for w in ours.wire for fd in w.fds)]
            expected = expected if ours.value else ()
        else:
            got = [w.fds for w in ours.wire]
        if got != [expected]:
            problems.append("fds sent")
    if not problems:
        return []
    return [f"{op!r}: {' and '.join(problems)} differ\n"
            f"    rawsys:  {ours!r}\n    CPython: {theirs!r}"]
