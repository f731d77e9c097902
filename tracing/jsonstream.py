"""``--json`` from raw records: the events, the transfers they complete and the lost fds.

The general way decodes every record into an event object, feeds it to the
:class:`~rawsys.trace.matcher.Matcher` and formats each record through a
dict and ``json.dumps``: about 12 µs an event, a tenth of what the fastest
fd-passer produces.  Most records are routine: one fd, a successful send, or
a plain receive of a file whose send is pending.  :class:`JsonStream` links
those on the raw record itself: a send waits as a ``(key, record)`` pair in
a dict keyed by the file's address and inode, a receive takes the oldest
one for its key, and the lines are formatted from one ``struct`` unpack with
the repeating parts (command names, file identities, the per-second part of
ISO times) rendered once and cached.

Everything else goes to the matcher, decoded: failed sends, receives cut
short (``MSG_CTRUNC``), peeks, loss reports, records of several fds,
receives whose send is not pending here, sends a waiting receive or loss is
keyed on.  Before the matcher sees one of them, the sends pending here it
could take are handed to it (decoded), with every one older: the oldest of
each of the event's files (after the matcher's own), a cut's oldest message
from its socket, all of them before a send that stays pending.  Its pending
sends are then always older than the ones here, and its state is what
feeding it every event would have made: the same pairs, the same losses,
the same in-flight sends at the end, the same evictions at the cap (the
oldest send, the matcher's if it has any, else the oldest here, handed to
it to be shown in flight).  So records a full ring refused cost about
themselves: a send whose receive was refused waits here (evicted at the
cap), and the pairs after it are still linked here.  A
close-on-exec receive is linked here, and its pair, decoded, handed to the
matcher to keep for a later exec, as if it had linked it.  The text is the
general way's, byte for byte, in the same order (the tests compare both on
the same records): per batch, each send and receive record in the order
read, then the transfers, then the lost fds, in the order the events
happened.
"""

from __future__ import annotations

import datetime
import json
from collections import deque
from typing import Any, Callable, NamedTuple

from rawsys.trace.events import (
    EV_FLAG_REF_IS_FILE_REF,
    FD_FLAG_CLOEXEC,
    ONE_FD_SIZE,
    ONE_FD_STRUCT,
    EventKind,
    FileIdentity,
    LossReason,
    LossReport,
    LostEvent,
    RecvEvent,
    SendEvent,
    Syscall,
    TraceEvent,
    Transfer,
    _flag_names,
    decode_event,
    decode_events,
    file_kind,
    refs_from_raw,
)
from rawsys.trace.matcher import Matcher, _Half, _Msg
from rawsys.trace.output import (
    NAMED_KINDS,
    WallClock,
    event_json,
    file_column,
    lost_json,
    transfer_json,
)

__all__ = ["JsonStream"]

_SEND = int(EventKind.SEND)
_RECV = int(EventKind.RECV)
_SYSCALL = {
    int(Syscall.SENDMSG): "sendmsg",
    int(Syscall.SENDMMSG): "sendmmsg",
    int(Syscall.RECVMSG): "recvmsg",
    int(Syscall.RECVMMSG): "recvmmsg",
}
_CACHE_MAX = 65536  # entries per cache; cleared when full (the output stays the same)
_LINE_CACHE_MAX = 4096

PathOf = Callable[[FileIdentity], str]


class _Text:
    """Cached fragments of the lines: command names, flags, files, times."""

    def __init__(self, clock: WallClock, backend: str) -> None:
        self.clock = clock
        self.backend = json.dumps(backend)
        self.comm: dict[bytes, str] = {}
        self.flags: dict[tuple[int, int, int], tuple[str, str]] = {}
        self.files: dict[tuple[object, ...], str] = {}
        self.second = -1  # the second of the last time rendered, and its text
        self.prefix = ""

    @staticmethod
    def second_prefix(seconds: int) -> str:
        """``2026-12-02T15:20:01``: :meth:`WallClock.iso` but for the fraction and zone."""
        utc = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        return utc.strftime("%Y-%m-%dT%H:%M:%S")

    def comm_json(self, comm: bytes) -> str:
        c = self.comm.get(comm)
        if c is None:
            if len(self.comm) >= _CACHE_MAX:
                self.comm.clear()
            c = self.comm[comm] = json.dumps(comm.split(b"\0", 1)[0].decode("utf-8", "replace"))
        return c

    def flags_json(self, kind: int, call_flags: int, msg_flags: int) -> tuple[str, str]:
        """The event's ``flags`` and, for a receive, its transfer's (no CMSG_CLOEXEC)."""
        key = (kind, call_flags, msg_flags)
        fl = self.flags.get(key)
        if fl is None:
            if len(self.flags) >= _CACHE_MAX:
                self.flags.clear()
            names = _flag_names(EventKind(kind), call_flags, msg_flags)
            fl = self.flags[key] = (json.dumps(sorted(names)),
                                    json.dumps(sorted(names - {"CMSG_CLOEXEC"})))
        return fl

    def file_json(self, address: int, ino: int, ref_raw: int, mode: int, name: bytes,
                  file_ref: bool, path: str) -> str:
        """A file's record with its ``path`` as :func:`file_column` shows it."""
        key = (address, ino, ref_raw, mode, name, file_ref, path)
        f = self.files.get(key)
        if f is None:
            if len(self.files) >= _CACHE_MAX:
                self.files.clear()
            text = name.split(b"\0", 1)[0].decode("utf-8", "replace")
            identity = FileIdentity(address=address, inode=ino, mode=mode,
                                    refcount=refs_from_raw(ref_raw, file_ref), name=text)
            column = file_column(identity, path)
            f = self.files[key] = (
                f'{{"address": "0x{address:x}", "inode": {ino}, "kind": "{identity.kind}", '
                f'"name": {json.dumps(text)}, "path": {json.dumps(column)}, '
                f'"refcount": {identity.refcount}}}')
        return f


class JsonStream:
    """The ``--json`` text of batches of records, linked through *matcher*.

    Holds the routine sends still waiting for their receive; :meth:`batch`
    returns one batch's text, ``final=True`` (the last batch) also ends the
    matcher's pending state as :meth:`Matcher.flush` does.
    """

    def __init__(self, matcher: Matcher, clock: WallClock, backend: str,
                 path_of: PathOf) -> None:
        self.matcher = matcher
        self.clock = clock
        self.backend = backend
        self.path_of = path_of
        self._text = _Text(clock, backend)
        self._pending: dict[tuple[int, int], deque[int]] = {}  # file key -> send numbers
        # send number -> (record, its side of a transfer record, file key, socket),
        # oldest first
        self._order: dict[int, tuple[bytes, str, tuple[int, int], int]] = {}
        self._shapes: dict[bytes, _Shape | None] = {}  # by the record after its timestamp
        self._named_shapes: dict[tuple[bytes, str], _Shape | None] = {}  # and its file's path
        self._seq = 0
        self._low = 1  # no send pending here is numbered below it
        # (file key, socket, thread) -> the time from which no receive or cut
        # waiting in the matcher takes such a send (waiting ones only expire
        # until the matcher is fed again; a thread's later sends are later).
        self._no_taker: dict[tuple[tuple[int, int], int, int], int] = {}
        self.decoded = 0  # records decoded into objects (for the general way)

    # ------------------------------------------------------------- the state
    def _materialise(self, verdicts: list[Transfer | LostEvent], transfers: list[str],
                     upto: int | None = None) -> None:
        """Hand the sends pending here to the matcher, oldest first: every one, or
        those up to send number *upto*.  The matcher's pending sends stay older
        than every send pending here (they are handed over only as the oldest)."""
        if not self._order or (upto is not None and upto <= 0):
            return
        out: list[Transfer | LostEvent] = []
        m = self.matcher
        if upto is None:
            records = [r for r, _side, _key, _sock in self._order.values()]
            self._order.clear()
            self._pending.clear()
        else:
            records = []
            by_number, pending = self._order, self._pending
            while by_number:
                seq = self._oldest()
                if seq > upto:
                    break
                r, _side, key, _sock = by_number.pop(seq)
                records.append(r)
                q = pending[key]
                q.popleft()  # the oldest of its file too
                if not q:
                    del pending[key]
        self.decoded += len(records)
        for ev in decode_events(records, self.backend):
            assert isinstance(ev, SendEvent)
            # Matcher._on_send for a send no receive waits for: pending, by socket.
            msg = _Msg(ev)
            half = _Half(ev, ev.fds[0], ev.files[0], ev.timestamp_ns, msg)
            msg.halves.append(half)
            m._add_pending(half, out)
            if msg.waiting and ev.sock_file:
                m._by_sock.setdefault(ev.sock_file, deque()).append(msg)
        self._general(out, verdicts, transfers)

    def _oldest(self) -> int:
        """The number of the oldest send pending here (there is one): numbers only
        grow, so the search goes on from the last one found (a dict's first key
        is found past every key removed before it)."""
        seq, by_number = self._low, self._order
        while seq not in by_number:
            seq += 1
        self._low = seq
        return seq

    def _needed(self, ev: TraceEvent) -> int | None:
        """The newest of the sends pending here the matcher needs (all before it
        too) to take *ev* as if it had been fed every send: 0 none, None all."""
        m = self.matcher
        if isinstance(ev, SendEvent):
            if not ev.ok or all(not f.address for f in ev.files):
                return 0  # nothing pending after it, nothing pending taken
            if len(ev.files) == 1 and m.links_send(ev):
                return 0  # linked to what waits: nothing of it pending
            return None  # pending after the sends pending here
        if isinstance(ev, LossReport) and ev.reason is LossReason.CLOSED_ON_EXEC:
            return 0  # its sender is a delivery the matcher remembers
        upto = 0
        counts: dict[tuple[int, int], int] = {}
        for f in ev.files:
            if f.address:
                key = (f.address, f.inode)
                counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            n -= len(m._sends.get(key, ()))  # the matcher's are the oldest of the file
            q = self._pending.get(key)
            if n > 0 and q:
                upto = max(upto, q[min(n, len(q)) - 1])
        if (isinstance(ev, RecvEvent) and ev.sock_file and ev.sock_file not in m._by_sock
                and "CTRUNC" in ev.flags and "PEEK" not in ev.flags):
            # Cut short, none of its fds linked: the oldest message pending from its peer.
            for seq, (_r, _side, _key, sock) in self._order.items():
                if sock == ev.sock_file:
                    upto = max(upto, seq)
                    break
        return upto

    def _may_take(self, ev: TraceEvent) -> None:
        """*ev* went to the matcher: forget that no receive or cut waiting there
        takes the sends it could wait for (only *ev* itself can have started to
        wait: feeding, expiring and handing over sends only end waits)."""
        no_taker = self._no_taker
        if isinstance(ev, SendEvent) or not no_taker:
            return
        if len(no_taker) > _CACHE_MAX:
            no_taker.clear()
            return
        keys = {(f.address, f.inode) for f in ev.files}
        sock_file = ev.sock_file if isinstance(ev, RecvEvent) else None
        mine = ev.tid if isinstance(ev, RecvEvent) else None
        for nk, since in list(no_taker.items()):
            key, sock, tid = nk
            if key in keys or sock == sock_file:
                if tid == mine:  # a receive never takes its thread's later sends
                    no_taker[nk] = max(since, ev.timestamp_ns + 1)
                else:
                    del no_taker[nk]

    def pending(self) -> int:
        return len(self._order) + self.matcher.pending

    # ------------------------------------------------------------- a batch
    def _shape(self, record: bytes, path: str | None) -> _Shape | None:
        """What a record's line and transfer side look like, but for its times;
        None when the record goes the general way.  *path*: the file's, for a
        named file (None: not looked up yet)."""
        (ts_ns, ret, pid, tid, comm, sock, call_flags, msg_flags, _controllen, kind,
         syscall, ev_flags, _reason, msg_index, nfds, _seen, _queued, _pad1,
         sock_file, address, ino, ref_raw, fd, mode, fd_flags, name) = ONE_FD_STRUCT.unpack(record)
        call = _SYSCALL.get(syscall)
        if nfds != 1 or call is None or kind not in (_SEND, _RECV) or ret < 0 or not address:
            return None
        names = _flag_names(EventKind(kind), call_flags, msg_flags)
        if kind == _RECV and ("PEEK" in names or "CTRUNC" in names):
            return None  # paired without consuming, or cut short
        cloexec = bool(kind == _RECV and fd_flags & FD_FLAG_CLOEXEC)
        text = self._text
        named = file_kind(mode) in NAMED_KINDS
        if named and path is None:
            return _Shape(kind, (address, ino), sock_file, tid, "", "", "", mode, cloexec)
        fl, transfer_fl = text.flags_json(kind, call_flags, msg_flags)
        if cloexec:  # Transfer.flags: the fd arrived close-on-exec
            transfer_fl = json.dumps(sorted((names | {"CLOEXEC"}) - {"CMSG_CLOEXEC"}))
        f = text.file_json(address, ino, ref_raw, mode, name,
                           bool(ev_flags & EV_FLAG_REF_IS_FILE_REF), path or "")
        c = text.comm_json(comm)
        head = (
            f'{{"backend": {text.backend}, "cloexec": '
            f'[{"true" if fd_flags & FD_FLAG_CLOEXEC else "false"}]'
            f', "comm": {c}, "errno": 0, '
            f'"event": "{"send" if kind == _SEND else "recv"}", "fds": [{fd}]'
            f', "files": [{f}], "flags": {fl}, "msg_index": {msg_index}'
            f', "ok": true, "pid": {pid}, "ret": {ret}, "sock": {sock}'
            f', "syscall": "{call}", "tid": {tid}, "time": "'
        )
        side = f'{{"comm": {c}, "fd": {fd}, "pid": {pid}, "sock": {sock}, "tid": {tid}, "time": "'
        transfer = (f'{{"event": "transfer", "file": {f}, "flags": {transfer_fl}, '
                    f'"in_flight": false, "receiver": ' if kind == _RECV else "")
        return _Shape(kind, (address, ino), sock_file, tid, head, side, transfer,
                      -1 if named else 0, cloexec)

    def batch(self, records: list[bytes], now_ns: int, *, final: bool = False) -> str:
        """One batch's lines, each ending in a newline (as :class:`Printer` writes them)."""
        m = self.matcher
        clock = self.clock
        backend = self.backend
        shapes, named_shapes = self._shapes, self._named_shapes
        offset = clock.offset_ns
        text = self._text
        path_cache: dict[tuple[int, int], str] = {}
        lines: list[str] = []
        transfers: list[str] = []  # then the lost fds' lines
        verdicts: list[Transfer | LostEvent] = []  # the general way's, in order
        general: dict[int, TraceEvent] = {}  # record index -> decoded event
        simple: list[_Shape | None] = []
        times: list[str] = []
        second, prefix = text.second, text.prefix
        stamps = [int.from_bytes(r[:8], "little") for r in records]

        # Each record's own line, in the order read.
        for i, r in enumerate(records):
            shape = None
            if len(r) == ONE_FD_SIZE:
                rest = r[8:]
                shape = shapes.get(rest, _UNSEEN)
                if shape is _UNSEEN:
                    if len(shapes) >= _LINE_CACHE_MAX:
                        shapes.clear()
                    shape = shapes[rest] = self._shape(r, None)
                if shape is not None and shape.mode:  # a named file: its path is part of it
                    p = path_cache.get(shape.key)
                    if p is None:
                        address, ino = shape.key
                        p = path_cache[shape.key] = self.path_of(FileIdentity(
                            address=address, inode=ino, mode=shape.mode, refcount=0, name=""))
                    nkey = (rest, p)
                    shape = named_shapes.get(nkey)
                    if shape is None:
                        if len(named_shapes) >= _LINE_CACHE_MAX:
                            named_shapes.clear()
                        shape = named_shapes[nkey] = self._shape(r, p)
            simple.append(shape)
            if shape is None:
                times.append("")
                ev = decode_event(r, backend)
                self.decoded += 1
                general[i] = ev
                if ev.event != "loss":
                    lines.append(json.dumps(event_json(ev, clock, self.path_of), sort_keys=True))
                    lines.append("\n")
                continue
            ts_ns = stamps[i]
            sec, ns = divmod(ts_ns + offset, 1_000_000_000)
            if sec != second:
                second, prefix = sec, text.second_prefix(sec)
            when = f"{prefix}.{ns // 1000:06d}+00:00"
            times.append(when)
            lines.append(f'{shape.head}{when}", "timestamp_ns": {ts_ns}}}\n')
        text.second, text.prefix = second, prefix

        # Linking, in the order the events happened (as Session.transfers feeds them).
        order = sorted(range(len(records)), key=stamps.__getitem__)
        pending, by_number = self._pending, self._order
        # The matcher's dicts (never replaced, only changed), its latest time.
        m_recvs, m_cut, m_sends = m._recvs, m._cut_waiting, m._sends
        last_ns = m._last_ns
        seq = self._seq
        no_taker = self._no_taker
        for i in order:
            shape = simple[i]
            if shape is not None:
                ts_ns = stamps[i]
                if ts_ns > last_ns:
                    last_ns = ts_ns
                key = shape.key
                if shape.kind == _SEND:
                    routine = key not in m_recvs and shape.sock_file not in m_cut
                    if not routine:
                        # Receives and cuts wait, but perhaps none of them for this send.
                        nk = (key, shape.sock_file, shape.tid)
                        since = no_taker.get(nk)
                        routine = since is not None and ts_ns >= since
                        if not routine and not m.takes_send(key, shape.sock_file, shape.tid,
                                                            ts_ns):
                            no_taker[nk] = ts_ns
                            routine = True
                    if routine:
                        seq += 1
                        q = pending.get(key)
                        if q is None:
                            q = pending[key] = deque()
                        q.append(seq)
                        by_number[seq] = (records[i], shape.side + times[i], key,
                                          shape.sock_file)
                        if m_recvs or m_cut or len(by_number) + len(m._order) > m.max_pending:
                            m._last_ns = last_ns
                            if len(by_number) + len(m._order) > m.max_pending:
                                # The oldest pending send is evicted (in flight), the
                                # matcher's when it has any (they are the oldest).
                                if not m._order:
                                    self._materialise(verdicts, transfers, self._oldest())
                                evicted: list[Transfer | LostEvent] = []
                                m._evict_oldest(evicted)
                                self._general(evicted, verdicts, transfers)
                            self._general(m.expire(last_ns), verdicts, transfers)
                        continue
                elif key not in m_sends:
                    q = pending.get(key)
                    if q:
                        send_record, send_side, _key, _sock = by_number.pop(q.popleft())
                        if not q:
                            del pending[key]
                        if shape.cloexec:
                            self._remember_delivery(send_record, records[i])
                        when = times[i]
                        transfers.append(f'{shape.transfer}{shape.side}{when}"}}, "sender": '
                                         f'{send_side}"}}, "time": "{when}"}}\n')
                        if m_recvs or m_cut:
                            m._last_ns = last_ns
                            self._general(m.expire(last_ns), verdicts, transfers)
                        continue
                ev = general[i] = decode_events([records[i]], backend)[0]
                self.decoded += 1
            else:
                ev = general[i]
            m._last_ns = last_ns  # feed() keeps the latest of it and the event's
            self._materialise(verdicts, transfers, self._needed(ev))
            self._may_take(ev)  # what waits may change
            self._general(m.feed(ev), verdicts, transfers)
            last_ns = m._last_ns
        if m._last_ns < last_ns:
            m._last_ns = last_ns
        self._seq = seq
        if final:
            self._materialise(verdicts, transfers)
            self._general(m.flush(), verdicts, transfers)
        else:
            self._general(m.expire(now_ns), verdicts, transfers)
        for v in verdicts:
            if isinstance(v, LostEvent):
                lf = v.file
                p = self.path_of(lf) if lf.address and lf.kind in NAMED_KINDS else ""
                transfers.append(json.dumps(lost_json(v, clock, p), sort_keys=True) + "\n")
        return "".join(lines) + "".join(transfers)

    def _remember_delivery(self, send: bytes, recv: bytes) -> None:
        """A close-on-exec fd installed: the matcher keeps its send for the receiver's
        next exec (a ``closed-on-exec`` loss names that sender), as it does for the
        receives it links itself."""
        s_ev, r_ev = decode_events([send, recv], self.backend)
        self.decoded += 2
        assert isinstance(s_ev, SendEvent)
        msg = _Msg(s_ev)
        s_half = _Half(s_ev, s_ev.fds[0], s_ev.files[0], s_ev.timestamp_ns, msg, done=True)
        msg.halves.append(s_half)
        self.matcher._remember_delivery(
            s_half, _Half(r_ev, r_ev.fds[0], r_ev.files[0], r_ev.timestamp_ns))

    def _general(self, got: list[Transfer | LostEvent], verdicts: list[Transfer | LostEvent],
                 transfers: list[str]) -> None:
        """The matcher's verdicts: kept in order, linked and in-flight transfers written."""
        for v in got:
            verdicts.append(v)
            if isinstance(v, Transfer) and (v.matched or v.in_flight):
                f = v.file
                p = self.path_of(f) if f.address and f.kind in NAMED_KINDS else ""
                record = transfer_json(v, self.clock, p)
                transfers.append(json.dumps(record, sort_keys=True) + "\n")


class _Shape(NamedTuple):
    """A routine record's text but for its times, and what linking needs of it."""

    kind: int
    key: tuple[int, int]  # the file's address and inode
    sock_file: int
    tid: int
    head: str  # its own line up to its time
    side: str  # its side of a transfer record up to its time
    transfer: str  # a receive's: the transfer record up to the receiver's side
    mode: int  # a named file's mode, whose path is still to be looked up; -1 done; else 0
    cloexec: bool  # a receive that installed the fd close-on-exec (kept for a later exec)


_UNSEEN: Any = object()
