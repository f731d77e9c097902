"""Events the probes report, as the kernel writes them and as Python sees them.

The wire layout is defined once, here, as ctypes structures (``RawEvent``
header followed by ``RawFile`` records); ``rawsys.trace.bpf.program`` renders the BPF
C ``struct`` declarations from these same definitions, so the two sides
cannot drift.  :func:`decode_event` is a pure function over bytes.

A ``SendEvent`` is one message given to ``sendmsg``/``sendmmsg`` that carried
``SCM_RIGHTS`` fds; a ``RecvEvent`` is one message returned by
``recvmsg``/``recvmmsg`` that brought fds (or was cut short: ``CTRUNC``).
Each names the kernel ``struct file`` of every fd (:class:`FileIdentity`): the
same address on both ends of a transfer is what links them.
"""

from __future__ import annotations

import ctypes
import datetime
import enum
import stat
import struct
import time
from ctypes import c_char, c_int32, c_int64, c_uint8, c_uint16, c_uint32, c_uint64
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from rawsys.c import constants

__all__ = [
    "EventKind",
    "FileIdentity",
    "LossReason",
    "LossReport",
    "LostEvent",
    "LostParty",
    "RawEvent",
    "RawFile",
    "RecvEvent",
    "SendEvent",
    "Syscall",
    "TraceEvent",
    "Transfer",
    "decode_event",
    "decode_events",
    "decode_path",
    "file_kind",
    "iso_time",
    "refs_from_raw",
]

COMM_LEN = 16  # TASK_COMM_LEN, include/linux/sched.h
NAME_LEN = 32  # bytes of the dentry name kept per file (NUL included)
FD_SLOTS = constants.SCM_MAX_FD  # one message never carries more (include/net/scm.h)


class EventKind(enum.IntEnum):
    SEND = 1
    RECV = 2
    LOST = 3  # the kernel dropped the files of the records (reason in RawEvent.reason)


class LossReason(enum.IntEnum):
    """Why the kernel dropped fds in flight, as the probes saw it (``RawEvent.reason``)."""

    CTRUNC = 1  # recvmsg's control buffer too small or absent (MSG_CTRUNC)
    READ_WITHOUT_CONTROL = 2  # read/readv/recv/recvfrom took the message: no control buffer
    ZERO_LENGTH_STREAM = 3  # SOCK_STREAM send of 0 data bytes: no skb carries the fds
    SOCKET_CLOSED = 4  # the receiving socket was released with the message queued
    EMFILE = 5  # the receiver's fd table was full (RLIMIT_NOFILE)
    CLOSED_ON_EXEC = 6  # received with close-on-exec, then the receiver exec'd

    @property
    def label(self) -> str:
        """``read-without-control``: the name JSON and the table show."""
        return self.name.lower().replace("_", "-")


LOSS_WORDS = {
    LossReason.CTRUNC: "control buffer too small",
    LossReason.READ_WITHOUT_CONTROL: "read without control buffer",
    LossReason.ZERO_LENGTH_STREAM: "zero-length stream send",
    LossReason.SOCKET_CLOSED: "receiving socket closed",
    LossReason.EMFILE: "receiver's fd table full",
    LossReason.CLOSED_ON_EXEC: "closed on exec",
}


class Syscall(enum.IntEnum):
    SENDMSG = 1
    SENDMMSG = 2
    RECVMSG = 3
    RECVMMSG = 4
    # Where fds in flight are lost (LOST events only).
    READ = 5  # read, readv or recvfrom (recv): no control buffer
    CLOSE = 6  # close of the last reference to the receiving socket
    EXIT = 7  # the receiving process exited (its fd table closed)
    EXECVE = 8  # execve/execveat closed the close-on-exec fds


# Bits of RawFile.fd_flags.
FD_FLAG_CLOEXEC = 1
# Bits of RawEvent.ev_flags.
EV_FLAG_FDS_DROPPED = 1  # more SCM_RIGHTS fds than records (never for valid messages)
EV_FLAG_REF_IS_FILE_REF = 2  # ref_raw is a file_ref_t (6.13+): references = raw + 1
EV_FLAG_FD_TABLE_FULL = 4  # a receive cut short (MSG_CTRUNC) found the fd table full: EMFILE
# Bits of a file path record's flags (the file_paths map of files.bpf.h).
PATH_FLAG_TRUNCATED = 1  # deeper or longer than the probes walk: the root end is missing


class RawFile(ctypes.Structure):
    """One fd and the ``struct file`` it names (``struct fd_file`` in the BPF C)."""

    _fields_ = [
        ("file", c_uint64),  # kernel address of the struct file; 0: fd not open
        ("ino", c_uint64),  # f_inode->i_ino
        ("ref_raw", c_uint64),  # f_ref (file_ref_t) or f_count, as stored
        ("fd", c_int32),
        ("mode", c_uint16),  # f_inode->i_mode
        ("fd_flags", c_uint16),  # FD_FLAG_*
        ("name", c_char * NAME_LEN),  # f_path.dentry->d_name, may be empty
    ]


_HEADER_FIELDS: list[tuple[str, Any]] = [
    ("ts_ns", c_uint64),  # bpf_ktime_get_ns()
    ("ret", c_int64),  # syscall return value (negative errno on failure)
    ("pid", c_uint32),
    ("tid", c_uint32),
    ("comm", c_char * COMM_LEN),
    ("sock", c_int32),
    ("call_flags", c_uint32),  # the flags argument
    ("msg_flags", c_uint32),  # msg_flags written back (receive side)
    ("controllen", c_uint32),
    ("kind", c_uint8),  # EventKind
    ("syscall", c_uint8),  # Syscall
    ("ev_flags", c_uint8),  # EV_FLAG_*
    ("reason", c_uint8),  # LossReason of a LOST event, else 0
    ("msg_index", c_uint16),  # index in the mmsghdr vector
    ("nfds", c_uint16),  # records that follow
    ("fds_seen", c_uint16),  # SCM_RIGHTS fds found in the control data
    ("queued", c_uint16),  # files the kernel had queued (kprobe backends), else 0
    ("pad1", c_uint32),
    ("sock_file", c_uint64),  # send: its socket's struct file; lost: the peer socket's, or 0
]


class RawEventHeader(ctypes.Structure):
    """The fixed part of ``struct fd_event``, for decoding."""

    _fields_ = _HEADER_FIELDS


class RawEvent(ctypes.Structure):
    """One event (``struct fd_event``): the header, then ``nfds`` of ``files`` used."""

    _fields_ = [*_HEADER_FIELDS, ("files", RawFile * FD_SLOTS)]


HEADER_SIZE: int = ctypes.sizeof(RawEventHeader)
FILE_RECORD_SIZE: int = ctypes.sizeof(RawFile)


def refs_from_raw(raw: int, file_ref: bool) -> int:
    """References a ``struct file`` holds, from the raw counter the probe read.

    Since 6.13 the counter is a ``file_ref_t`` (include/linux/file_ref.h) that
    stores *references - 1*: 0 is one reference, values from 2**63 up mean
    saturated/released/dead.  Before, ``f_count`` was a plain count.  A
    released or dead file returns 0.
    """
    if not file_ref:
        return raw
    if raw >= 1 << 63:
        return 0
    return raw + 1


def file_kind(mode: int) -> str:
    """``socket``, ``pipe``, ``file``, ``dir``, ``chr``, ``blk``, ``link`` or ``anon``."""
    if mode == 0:
        return "anon"
    fmt = stat.S_IFMT(mode)
    return {
        stat.S_IFSOCK: "socket",
        stat.S_IFIFO: "pipe",
        stat.S_IFREG: "file",
        stat.S_IFDIR: "dir",
        stat.S_IFCHR: "chr",
        stat.S_IFBLK: "blk",
        stat.S_IFLNK: "link",
    }.get(fmt, "anon")


@dataclass(frozen=True)
class FileIdentity:
    """A kernel ``struct file``: what an fd number names, equal on both ends."""

    address: int
    inode: int
    mode: int
    refcount: int  # references held when the probe looked (in flight: +1 per queued skb)
    name: str  # dentry name ("" for pipes, sockets and other anonymous files)
    path: str = ""  # full path, resolved in the kernel from the dentry chain ("" if none)

    @property
    def kind(self) -> str:
        return file_kind(self.mode)

    @property
    def label(self) -> str:
        """A short human name: the dentry name, else ``pipe:[ino]``-style."""
        if self.address == 0:
            return "-"
        if self.name and self.kind in ("file", "dir", "chr", "blk", "link"):
            return self.name
        if self.name and self.kind == "anon":
            return f"anon_inode:{self.name}"
        return f"{self.kind}:[{self.inode}]"

    def to_json(self) -> dict[str, object]:
        return {
            "address": f"0x{self.address:x}",
            "inode": self.inode,
            "kind": self.kind,
            "name": self.name,
            "refcount": self.refcount,
        }


@dataclass(frozen=True)
class _EventBase:
    pid: int
    tid: int
    comm: str
    sock: int  # the socket fd the call was made on
    fds: tuple[int, ...]  # fd numbers in the caller's table (sender's or receiver's)
    files: tuple[FileIdentity, ...]  # one per fd, same order
    flags: frozenset[str]
    ok: bool
    errno: int  # 0 when ok
    ret: int
    syscall: str  # "sendmsg", "sendmmsg", "recvmsg", "recvmmsg"
    msg_index: int
    backend: str
    timestamp_ns: int  # CLOCK_MONOTONIC, as bpf_ktime_get_ns()
    fds_seen: int = 0
    queued: int = 0
    cloexec: tuple[bool, ...] = field(default=())  # per fd: close-on-exec set in that table
    sock_file: int = 0  # send: its socket's struct file; loss: the peer socket's (0: unknown)
    ev_flags: int = 0  # EV_FLAG_* as the probe wrote them

    @property
    def event(self) -> str:
        raise NotImplementedError

    def to_json(self) -> dict[str, object]:
        return {
            "event": self.event,
            "pid": self.pid,
            "tid": self.tid,
            "comm": self.comm,
            "sock": self.sock,
            "fds": list(self.fds),
            "files": [f.to_json() for f in self.files],
            "flags": sorted(self.flags),
            "ok": self.ok,
            "errno": self.errno,
            "ret": self.ret,
            "syscall": self.syscall,
            "msg_index": self.msg_index,
            "backend": self.backend,
            "timestamp_ns": self.timestamp_ns,
            "cloexec": list(self.cloexec),
        }


@dataclass(frozen=True)
class SendEvent(_EventBase):
    """One message with ``SCM_RIGHTS`` handed to sendmsg/sendmmsg (``ok`` False: it failed)."""

    @property
    def event(self) -> str:
        return "send"


@dataclass(frozen=True)
class RecvEvent(_EventBase):
    """One message returned by recvmsg/recvmmsg with fds installed, or cut short (CTRUNC)."""

    @property
    def event(self) -> str:
        return "recv"


@dataclass(frozen=True)
class LossReport(_EventBase):
    """The kernel dropped fds in flight: what a probe saw where it happened.

    ``pid``/``tid``/``comm`` are the process whose action lost them (the
    receiver, or the sender for ``zero-length-stream``); ``files`` are the
    files dropped where the kernel showed them (``fds``: the actor's fd
    numbers, -1 where it had none); ``queued`` is, for ``ctrunc`` and
    ``emfile``, how many fds were installed before the rest were dropped.
    :class:`rawsys.trace.matcher.Matcher` turns a report into one
    :class:`LostEvent` per fd, naming the sender.
    """

    reason: LossReason = LossReason.CTRUNC

    @property
    def event(self) -> str:
        return "loss"

    def to_json(self) -> dict[str, object]:
        out = super().to_json()
        out["reason"] = self.reason.label
        return out


TraceEvent = Union[SendEvent, RecvEvent, LossReport]


def iso_time(monotonic_ns: int) -> str:
    """A CLOCK_MONOTONIC time (``bpf_ktime_get_ns()``) as an ISO 8601 wall-clock time (UTC)."""
    offset = time.time_ns() - time.monotonic_ns()
    when = datetime.datetime.fromtimestamp((monotonic_ns + offset) / 1e9, datetime.timezone.utc)
    return when.isoformat(timespec="microseconds")


@dataclass(frozen=True)
class LostParty:
    """The process whose action lost an fd (the receiver, mostly)."""

    pid: int
    tid: int
    comm: str
    sock: int | None  # its socket fd, where it had one

    def to_json(self) -> dict[str, object]:
        return {"pid": self.pid, "tid": self.tid, "comm": self.comm, "sock": self.sock}


@dataclass(frozen=True)
class LostEvent:
    """One fd that left a sender and never reached a receiver's table, and why.

    ``pid``/``tid``/``comm``/``fd`` are the sender's (``None`` when its send
    was not traced); ``receiver`` is the process whose action lost it, or
    ``None`` where the kernel does not show one (``zero-length-stream``:
    nobody received anything).  ``fit``: for ``ctrunc``/``emfile``, how many
    fds of that message were installed.
    """

    reason: str  # LossReason.label
    pid: int | None
    tid: int | None
    comm: str | None
    fd: int | None
    file: FileIdentity
    receiver: LostParty | None
    timestamp_ns: int  # CLOCK_MONOTONIC, when the kernel dropped it
    syscall: str  # where: "recvmsg", "read", "close", "exit", "execve", "sendmsg", ...
    fit: int | None = None
    send: SendEvent | None = None
    backend: str = ""

    @property
    def event(self) -> str:
        return "lost"

    @property
    def words(self) -> str:
        """The reason in words, for the table."""
        text = LOSS_WORDS[LossReason[self.reason.upper().replace("-", "_")]]
        if self.fit is not None and self.reason in ("ctrunc", "emfile"):
            text += f" ({self.fit} fit)"
        return text

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "event": "lost",
            "reason": self.reason,
            "pid": self.pid,
            "tid": self.tid,
            "comm": self.comm,
            "fd": self.fd,
            "file": self.file.to_json(),
            "receiver": None if self.receiver is None else self.receiver.to_json(),
            "time": iso_time(self.timestamp_ns),
            "timestamp_ns": self.timestamp_ns,
            "syscall": self.syscall,
            "backend": self.backend,
        }
        if self.fit is not None:
            out["fit"] = self.fit
        return out


@dataclass(frozen=True)
class Transfer:
    """One fd that went from a sender's table to a receiver's, linked by its ``struct file``.

    ``send`` or ``recv`` is ``None`` for an unmatched half: a send whose
    receive was not seen (still queued, dropped, or the receiver filtered
    out), or a receive whose send was not seen.
    """

    send: SendEvent | None
    recv: RecvEvent | None
    send_fd: int | None
    recv_fd: int | None
    file: FileIdentity
    in_flight: bool = False  # a send still queued when tracing stopped (not lost)

    @property
    def matched(self) -> bool:
        return self.send is not None and self.recv is not None

    @property
    def flags(self) -> frozenset[str]:
        out: set[str] = set()
        if self.recv is not None:
            out |= self.recv.flags
            if self.recv_fd is not None and self.recv_fd in self.recv.fds:
                i = self.recv.fds.index(self.recv_fd)
                if i < len(self.recv.cloexec) and self.recv.cloexec[i]:
                    out.add("CLOEXEC")
        return frozenset(out)

    def to_json(self) -> dict[str, object]:
        def side(ev: TraceEvent | None, fd: int | None) -> dict[str, object] | None:
            if ev is None:
                return None
            return {"pid": ev.pid, "tid": ev.tid, "comm": ev.comm, "fd": fd, "sock": ev.sock}

        return {
            "event": "transfer",
            "matched": self.matched,
            "sender": side(self.send, self.send_fd),
            "receiver": side(self.recv, self.recv_fd),
            "file": self.file.to_json(),
            "flags": sorted(self.flags),
            "in_flight": self.in_flight,
        }


_SYSCALL_NAMES = {s: s.name.lower() for s in Syscall}
_REASONS = {int(r): r for r in LossReason}


# Plain ints: socket's constants are IntFlag members, slow in the hot path.
_FLAG_BITS = (
    ("PEEK", int(constants.MSG_PEEK), False),
    ("CTRUNC", int(constants.MSG_CTRUNC), True),
    ("TRUNC", int(constants.MSG_TRUNC), True),
    ("DONTWAIT", int(constants.MSG_DONTWAIT), False),
)
_CMSG_CLOEXEC = int(constants.MSG_CMSG_CLOEXEC)
_flag_cache: dict[tuple[int, int, int], frozenset[str]] = {}


def _flag_names(kind: EventKind, call_flags: int, msg_flags: int) -> frozenset[str]:
    key = (int(kind), call_flags, msg_flags)
    cached = _flag_cache.get(key)
    if cached is not None:
        return cached
    names: set[str] = set()
    recv = kind == EventKind.RECV
    for name, bit, written_back in _FLAG_BITS:
        if written_back:
            if recv and msg_flags & bit:
                names.add(name)
        elif call_flags & bit:
            names.add(name)
    if recv and call_flags & _CMSG_CLOEXEC:
        names.add("CMSG_CLOEXEC")
    out = frozenset(names)
    if len(_flag_cache) < 4096:
        _flag_cache[key] = out
    return out


_KINDS = {int(k): k for k in EventKind}
_SYSCALLS = {int(s): s for s in Syscall}


# struct formats mirroring RawEventHeader/RawFile, for fast decoding; checked
# against the ctypes layouts (offsets included) when this module is imported.
_HEADER_STRUCT = struct.Struct("<QqII16siIIIBBBBHHHHIQ")
_FILE_STRUCT = struct.Struct("<QQQiHH32s")


def _layout_problems() -> list[str]:
    """Where the decoding formats disagree with the layouts the probes write (none, normally).

    Each field of a sample record gets its own value; the format must read
    every one back from its own place.
    """
    problems = []
    if HEADER_SIZE != RawEvent.files.offset:
        problems.append(f"the header is {HEADER_SIZE} bytes, files start at "
                        f"{RawEvent.files.offset}")
    for layout, fmt in ((RawEventHeader, _HEADER_STRUCT), (RawFile, _FILE_STRUCT)):
        if fmt.size != ctypes.sizeof(layout):
            problems.append(f"{layout.__name__} is {ctypes.sizeof(layout)} bytes, "
                            f"its format {fmt.format!r} {fmt.size}")
            continue
        sample = layout()
        names = [field[0] for field in layout._fields_]
        for i, name in enumerate(names, 1):
            if not name.startswith("pad"):
                text = isinstance(getattr(sample, name), bytes)
                setattr(sample, name, str(i).encode() if text else i)
        for name, value in zip(names, fmt.unpack(bytes(sample))):
            want = getattr(sample, name)
            got = value.rstrip(b"\0") if isinstance(value, bytes) else value
            if not name.startswith("pad") and got != want:
                problems.append(f"{layout.__name__}.{name}: the format reads {got!r}, "
                                f"the layout holds {want!r}")
    return problems


# Raised, not asserted: python -O must not load a decoder that misreads events.
if _layout_problems():  # pragma: no cover
    raise ImportError("rawsys.trace.events: the decoding formats do not match the event "
                      "layout: " + "; ".join(_layout_problems()))


def decode_event(data: bytes, backend: str = "tracepoint") -> TraceEvent:
    """Decode one record as the probes emit it; raises ``ValueError`` on malformed data."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"event of {len(data)} bytes is shorter than its header ({HEADER_SIZE})")
    (ts_ns, ret, pid, tid, comm, sock, call_flags, msg_flags, _controllen, kind_n, syscall_n,
     ev_flags, reason_n, msg_index, nfds, fds_seen, queued, _pad1,
     sock_file) = _HEADER_STRUCT.unpack_from(data)
    kind = _KINDS.get(kind_n)
    syscall = _SYSCALLS.get(syscall_n)
    if kind is None or syscall is None:
        raise ValueError(f"unknown event kind {kind_n} / syscall {syscall_n}")
    if nfds > FD_SLOTS or len(data) < HEADER_SIZE + nfds * FILE_RECORD_SIZE:
        raise ValueError(f"event claims {nfds} files but holds {len(data) - HEADER_SIZE} bytes")
    file_ref = bool(ev_flags & EV_FLAG_REF_IS_FILE_REF)
    fds: list[int] = []
    files: list[FileIdentity] = []
    cloexec: list[bool] = []
    for i in range(nfds):
        address, ino, ref_raw, fd, mode, fd_flags, name = _FILE_STRUCT.unpack_from(
            data, HEADER_SIZE + i * FILE_RECORD_SIZE
        )
        fds.append(fd)
        cloexec.append(bool(fd_flags & FD_FLAG_CLOEXEC))
        files.append(
            FileIdentity(
                address=address,
                inode=ino,
                mode=mode,
                refcount=refs_from_raw(ref_raw, file_ref) if address else 0,
                name=name.split(b"\0", 1)[0].decode("utf-8", "replace"),
            )
        )
    ok = ret >= 0
    fields = dict(
        pid=pid,
        tid=tid,
        comm=comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
        sock=sock,
        fds=tuple(fds),
        files=tuple(files),
        flags=_flag_names(kind, call_flags, msg_flags),
        ok=ok,
        errno=0 if ok else -ret,
        ret=ret,
        syscall=_SYSCALL_NAMES[syscall],
        msg_index=msg_index,
        backend=backend,
        timestamp_ns=ts_ns,
        fds_seen=fds_seen,
        queued=queued,
        cloexec=tuple(cloexec),
        sock_file=sock_file,
        ev_flags=ev_flags,
    )
    if kind is EventKind.SEND:
        return _frozen(SendEvent, fields)
    if kind is EventKind.RECV:
        return _frozen(RecvEvent, fields)
    reason = _REASONS.get(reason_n)
    if reason is None:
        raise ValueError(f"unknown loss reason {reason_n}")
    fields["reason"] = reason
    return _frozen(LossReport, fields)


def decode_path(names: bytes, flags: int = 0) -> str:
    """A path as the probes keep it, names leaf first, each NUL-terminated
    (``b"1\\0pts\\0dev\\0"``), turned round: ``/dev/pts/1``.

    A path the probes cut short (*flags* has ``PATH_FLAG_TRUNCATED``: deeper
    or longer than they walk) starts with ``...`` where its root end is missing.
    """
    parts = [p.decode("utf-8", "replace") for p in names.split(b"\0") if p]
    parts.reverse()
    head = "..." if flags & PATH_FLAG_TRUNCATED else ""
    return head + "/" + "/".join(parts)


# The usual record: the header and one file, in one format (the fast paths).
ONE_FD_SIZE: int = HEADER_SIZE + FILE_RECORD_SIZE
ONE_FD_STRUCT = struct.Struct(_HEADER_STRUCT.format + _FILE_STRUCT.format.lstrip("<"))
if ONE_FD_STRUCT.size != ONE_FD_SIZE:  # pragma: no cover - raised, not asserted (python -O)
    raise ImportError(f"rawsys.trace.events: a one-fd record is {ONE_FD_SIZE} bytes, "
                      f"its format {ONE_FD_STRUCT.size}")
_DECODE_CACHE_MAX = 65536


def decode_events(records: list[bytes], backend: str = "tracepoint") -> list[TraceEvent]:
    """``[decode_event(r, backend) for r in records]``, faster for the usual one-fd record.

    One ``struct`` unpack per record, and the parts that repeat from one event
    to the next (the command name, the file's identity, the flag set) are made
    once and shared: they are immutable.  Equal to the general way, field for
    field (the tests compare them).
    """
    out: list[TraceEvent] = []
    append = out.append
    unpack = ONE_FD_STRUCT.unpack
    comms, files = _decode_comms, _decode_files
    if len(comms) >= _DECODE_CACHE_MAX:
        comms.clear()
    if len(files) >= _DECODE_CACHE_MAX:
        files.clear()
    for r in records:
        if len(r) != ONE_FD_SIZE:
            append(decode_event(r, backend))
            continue
        (ts_ns, ret, pid, tid, comm, sock, call_flags, msg_flags, _controllen, kind_n,
         syscall_n, ev_flags, _reason, msg_index, nfds, fds_seen, queued, _pad1, sock_file,
         address, ino, ref_raw, fd, mode, fd_flags, name) = unpack(r)
        kind = _KINDS.get(kind_n)
        syscall = _SYSCALLS.get(syscall_n)
        if nfds != 1 or kind is None or syscall is None or kind is EventKind.LOST:
            append(decode_event(r, backend))  # the general way (and its errors)
            continue
        c = comms.get(comm)
        if c is None:
            c = comms[comm] = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
        file_ref = bool(ev_flags & EV_FLAG_REF_IS_FILE_REF)
        key = (address, ino, ref_raw, mode, name, file_ref)
        f = files.get(key)
        if f is None:
            f = files[key] = (FileIdentity(
                address=address,
                inode=ino,
                mode=mode,
                refcount=refs_from_raw(ref_raw, file_ref) if address else 0,
                name=name.split(b"\0", 1)[0].decode("utf-8", "replace"),
            ),)
        ok = ret >= 0
        cls: type[SendEvent] | type[RecvEvent] = SendEvent if kind is EventKind.SEND else RecvEvent
        obj: TraceEvent = object.__new__(cls)
        obj.__dict__.update(
            pid=pid,
            tid=tid,
            comm=c,
            sock=sock,
            fds=(fd,),
            files=f,
            flags=_flag_names(kind, call_flags, msg_flags),
            ok=ok,
            errno=0 if ok else -ret,
            ret=ret,
            syscall=_SYSCALL_NAMES[syscall],
            msg_index=msg_index,
            backend=backend,
            timestamp_ns=ts_ns,
            fds_seen=fds_seen,
            queued=queued,
            cloexec=(bool(fd_flags & FD_FLAG_CLOEXEC),),
            sock_file=sock_file,
            ev_flags=ev_flags,
        )
        append(obj)
    return out


_decode_comms: dict[bytes, str] = {}
_decode_files: dict[tuple[int, int, int, int, bytes, bool], tuple[FileIdentity]] = {}

_E = TypeVar("_E")


def _frozen(cls: type[_E], fields: dict[str, object]) -> _E:
    """``cls(**fields)`` for a frozen dataclass, without its slow ``__init__``.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; the reader decodes every event, so the fields
    (all of them, checked by the tests) are put in place at once instead.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj
