"""Link sends to receives by the kernel ``struct file`` they carry; name every loss.

An fd in flight is a reference to one ``struct file``: the address the sender
resolved is the address the receiver gets.  :class:`Matcher` pairs each fd
of a successful send with the next receive of the same file, in order (the
same file sent twice is received twice).  A file is known by its address
*and* inode: once the kernel frees a ``struct file`` its address can be
reused for another file, which then never links to a stale send of the old
one.  A ``MSG_PEEK`` receive gets clones and leaves the message queued: it
is paired with the pending send without consuming it.

A send waits for its receive as long as it takes (no timer): each fd that
left a sender is eventually received (a :class:`Transfer`), reported lost
(a :class:`LostEvent`, with the cause the probes saw), or still in flight
when tracing stops (:meth:`Matcher.flush`: ``in_flight``).  Losses come from
the kernel side: a receive cut short (``MSG_CTRUNC``: the fds of its message
that were not installed; ``EMFILE`` when the probes found the fd table
full), and :class:`LossReport` events (read without control buffer,
zero-length stream send, socket closed with the message queued, close-on-exec
fds closed by exec).  A receive cut short before any fd was installed is
linked to the oldest message pending from the socket connected to it.

Receives and losses can be reported before their send (the receiver's
``recvmsg`` may return before the sender's ``sendmsg`` exit is written;
anomalies travel in their own ring, read first): a receive or a loss alone
waits ``grace_ns`` of later events for its send, then shows ``NOSEND`` (a
loss: no sender), its send having happened before tracing began or the
sender being filtered out.  It never takes a send its own thread made after
it returned (a thread's calls follow one another): when the ring refused its
send, the thread's next send is not taken for it, and the pairings after it
do not shift by one.

Pending sends are capped (``max_pending`` fds, :data:`MAX_PENDING` by
default): past it the oldest is evicted, shown as in flight, and counted
in :attr:`Matcher.evicted`.  Failed sends are never transfers; they are
reported once, unmatched, so a caller can show them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Union

from rawsys.trace.events import (
    FileIdentity,
    LossReason,
    LossReport,
    LostEvent,
    LostParty,
    RecvEvent,
    SendEvent,
    TraceEvent,
    Transfer,
)

__all__ = ["MAX_PENDING", "Matcher", "Verdict"]

MAX_PENDING = 65536  # fds of sends waiting for their receive, at most
_MAX_DELIVERED = 4096  # close-on-exec fds received, remembered for a later exec

Verdict = Union[Transfer, LostEvent]
_Key = tuple[int, int]  # (struct file address, inode)


@dataclass(eq=False)
class _Msg:
    """One sent message: its fds still waiting for a receive."""

    event: SendEvent
    waiting: int = 0
    halves: list[_Half] = field(default_factory=list)


@dataclass(eq=False)
class _Half:
    event: TraceEvent
    fd: int
    file: FileIdentity
    seen_ns: int
    msg: _Msg | None = None
    peeked: bool = False  # a send some PEEK has already been paired with
    done: bool = False  # linked, lost or evicted: no longer pending


@dataclass
class _Waiting:
    recvs: deque[_Half] = field(default_factory=deque)


def _key(f: FileIdentity) -> _Key:
    return (f.address, f.inode)



def _installed_cloexec(r: _Half) -> bool:
    """The fd of receive half *r* was installed with close-on-exec (its own flag,
    not another fd's of the same message)."""
    event = r.event
    assert isinstance(event, RecvEvent)
    return any(fd == r.fd and flag for fd, flag in zip(event.fds, event.cloexec))

class Matcher:
    """Feed events in arrival order; get :class:`Transfer` and :class:`LostEvent` records."""

    def __init__(self, grace_ns: int = 2_000_000_000, max_pending: int = MAX_PENDING) -> None:
        if max_pending <= 0:
            raise ValueError(f"max_pending must be positive, got {max_pending}")
        self.grace_ns = grace_ns
        self.max_pending = max_pending
        self.evicted = 0  # pending sends dropped to stay within max_pending
        self._sends: dict[_Key, deque[_Half]] = {}
        self._order: OrderedDict[int, _Half] = OrderedDict()  # every pending send, oldest first
        self._by_sock: dict[int, deque[_Msg]] = {}  # messages by their socket's struct file
        self._recvs: dict[_Key, deque[_Half]] = {}
        # Receives cut short before any fd, whose message is not seen yet, by peer socket.
        self._cut_waiting: dict[int, deque[RecvEvent]] = {}
        self._delivered: OrderedDict[tuple[int, int, int], _Half] = OrderedDict()
        self._last_ns = 0

    # ----------------------------------------------------------------- feed
    def feed(self, event: TraceEvent) -> list[Verdict]:
        """Pair *event* with what is pending; returns what it completed, then the expired."""
        self._last_ns = max(self._last_ns, event.timestamp_ns)
        out: list[Verdict] = []
        if isinstance(event, SendEvent):
            self._on_send(event, out)
        elif isinstance(event, RecvEvent):
            self._on_recv(event, out)
        else:
            self._on_loss(event, out)
        out.extend(self.expire(self._last_ns))
        return out

    def _on_send(self, event: SendEvent, out: list[Verdict]) -> None:
        if not event.ok:
            for fd, f in zip(event.fds, event.files):
                out.append(Transfer(event, None, fd, None, f))
            if not event.fds:
                out.append(Transfer(event, None, None, None, _NO_FILE))
            return
        msg = _Msg(event)
        cut: RecvEvent | None = None  # a receive of this message cut short, seen before it
        for fd, f in zip(event.fds, event.files):
            half = _Half(event, fd, f, event.timestamp_ns, msg)
            msg.halves.append(half)
            if f.address == 0:
                out.append(Transfer(event, None, fd, None, f))
                continue
            waiting = self._recvs.get(_key(f))
            # Receives reported before their send: peeks pair without consuming.
            linked = False
            while waiting:
                i = _first_taker(waiting, event)
                if i is None:
                    break
                r = waiting[i]
                del waiting[i]
                if isinstance(r.event, LossReport):
                    out.append(_lost(r.event.reason.label, half, r.event,
                                     _loss_party(r.event), r.file))
                    linked = True
                    break
                out.append(self._transfer(half, r))
                if not _is_peek(r.event):
                    linked = True
                    if isinstance(r.event, RecvEvent):
                        if _installed_cloexec(r):
                            self._remember_delivery(half, r)
                        if "CTRUNC" in r.event.flags:
                            cut = r.event
                    break
                half.peeked = True
            if waiting is not None and not waiting:
                del self._recvs[_key(f)]
            if not linked:
                self._add_pending(half, out)
        if msg.waiting and event.sock_file:
            self._by_sock.setdefault(event.sock_file, deque()).append(msg)
            early = self._cut_waiting.get(event.sock_file)
            i = _first_cut_taker(early, event) if cut is None and early else None
            if early and i is not None:
                cut = early[i]  # cut short before any fd: this message
                del early[i]
                if not early:
                    del self._cut_waiting[event.sock_file]
        if cut is not None:
            self._cut_short(cut, msg, out)

    def takes_send(self, key: _Key, sock_file: int, tid: int, timestamp_ns: int) -> bool:
        """Whether a one-fd send of file *key* on *sock_file*, made by *tid* at
        *timestamp_ns*, would be taken by a receive or a cut waiting here."""
        for r in self._recvs.get(key, ()):
            if _could_be_its_send(tid, timestamp_ns, r.event):
                return True
        return any(_could_be_its_send(tid, timestamp_ns, c)
                   for c in self._cut_waiting.get(sock_file, ()))

    def links_send(self, event: SendEvent) -> bool:
        """Whether the one fd of successful send *event* is taken (linked or lost)
        by a receive or loss waiting here, rather than left pending."""
        f = event.files[0]
        for r in self._recvs.get(_key(f), ()):
            if _could_be_its_send(event.tid, event.timestamp_ns, r.event) and (
                    isinstance(r.event, LossReport) or not _is_peek(r.event)):
                return True
        return False

    def _cut_short(self, event: RecvEvent, msg: _Msg | None, out: list[Verdict]) -> None:
        """Receive *event* came back with MSG_CTRUNC: *msg*'s fds it did not install are lost."""
        reason = "emfile" if event.ev_flags & _FD_TABLE_FULL else "ctrunc"
        receiver = LostParty(event.pid, event.tid, event.comm, event.sock)
        if msg is None:
            out.append(_lost(reason, None, event, receiver, _NO_FILE, fit=len(event.fds)))
            return
        for h in [h for h in msg.halves if not h.done and id(h) in self._order]:
            self._drop(h)
            out.append(_lost(reason, h, event, receiver, h.file, fit=len(event.fds)))

    def _add_pending(self, half: _Half, out: list[Verdict]) -> None:
        self._sends.setdefault(_key(half.file), deque()).append(half)
        self._order[id(half)] = half
        if half.msg is not None:
            half.msg.waiting += 1
        while len(self._order) > self.max_pending:
            self._evict_oldest(out)

    def _evict_oldest(self, out: list[Verdict]) -> None:
        """The oldest pending send makes room: shown in flight, counted as evicted."""
        _, old = self._order.popitem(last=False)
        self._drop(old)
        self.evicted += 1
        out.append(_in_flight(old))

    def _drop(self, half: _Half) -> None:
        """*half* is no longer pending (linked, lost or evicted)."""
        half.done = True
        self._order.pop(id(half), None)
        q = self._sends.get(_key(half.file))
        if q is not None:
            try:
                q.remove(half)
            except ValueError:
                pass
            if not q:
                del self._sends[_key(half.file)]
        msg = half.msg
        if msg is not None:
            msg.waiting -= 1
            if msg.waiting <= 0:
                self._forget_msg(msg)

    def _forget_msg(self, msg: _Msg) -> None:
        q = self._by_sock.get(msg.event.sock_file)
        if q is None:
            return
        try:
            q.remove(msg)
        except ValueError:
            pass
        if not q:
            del self._by_sock[msg.event.sock_file]

    def _pending_send(self, f: FileIdentity) -> _Half | None:
        q = self._sends.get(_key(f))
        return q[0] if q else None

    def _on_recv(self, event: RecvEvent, out: list[Verdict]) -> None:
        peek = _is_peek(event)
        msg: _Msg | None = None
        for i, (fd, f) in enumerate(zip(event.fds, event.files)):
            half = _Half(event, fd, f, event.timestamp_ns)
            if f.address == 0:
                out.append(Transfer(None, event, None, fd, f))
                continue
            s = self._pending_send(f)
            if s is None:
                self._recvs.setdefault(_key(f), deque()).append(half)
                continue
            out.append(self._transfer(s, half))
            msg = msg or s.msg
            if peek:
                s.peeked = True
                continue
            self._drop(s)
            if i < len(event.cloexec) and event.cloexec[i]:
                self._remember_delivery(s, half)
        if "CTRUNC" not in event.flags or peek:
            if not event.fds:
                out.append(Transfer(None, event, None, None, _NO_FILE))
            return
        # Cut short: the fds of the message that were not installed are lost.
        if msg is None and event.sock_file:
            q = self._by_sock.get(event.sock_file)
            msg = q[0] if q else None
        if msg is None and event.fds:
            return  # its fds wait for their send, which settles the rest (_on_send)
        if msg is None and event.sock_file:
            # Its send may be reported after it: it waits, like a receive.
            self._cut_waiting.setdefault(event.sock_file, deque()).append(event)
            return
        self._cut_short(event, msg, out)

    def _on_loss(self, report: LossReport, out: list[Verdict]) -> None:
        reason = report.reason
        receiver = _loss_party(report)
        for fd, f in zip(report.fds, report.files):
            sender: _Half | None = None
            if reason is LossReason.CLOSED_ON_EXEC:
                sender = self._delivered.pop((report.pid, fd, f.address), None)
            elif f.address:
                sender = self._pending_send(f)
                if sender is None:
                    # Its send may be reported after it (losses travel in
                    # their own ring, read first): it waits like a receive.
                    loss = _Half(report, fd, f, report.timestamp_ns)
                    self._recvs.setdefault(_key(f), deque()).append(loss)
                    continue
                self._drop(sender)
            out.append(_lost(reason.label, sender, report, receiver, f))

    def _remember_delivery(self, s: _Half, r: _Half) -> None:
        """A close-on-exec fd installed: its send is kept for the receiver's next exec."""
        self._delivered[(r.event.pid, r.fd, r.file.address)] = s
        while len(self._delivered) > _MAX_DELIVERED:
            self._delivered.popitem(last=False)

    @staticmethod
    def _transfer(s: _Half, r: _Half) -> Transfer:
        assert isinstance(s.event, SendEvent) and isinstance(r.event, RecvEvent)
        return Transfer(s.event, r.event, s.fd, r.fd, r.file)

    # --------------------------------------------------------------- ending
    def expire(self, now_ns: int) -> list[Verdict]:
        """Receives alone for longer than ``grace_ns`` before *now_ns*: ``NOSEND``.

        Sends never expire: a slow receiver is linked whenever it comes.
        """
        limit = now_ns - self.grace_ns
        out: list[Verdict] = []
        for key in list(self._recvs):
            q = self._recvs[key]
            while q and q[0].seen_ns < limit:
                out.append(_alone_recv(q.popleft()))
            if not q:
                del self._recvs[key]
        for sock_file in list(self._cut_waiting):
            cq = self._cut_waiting[sock_file]
            while cq and cq[0].timestamp_ns < limit:
                self._cut_short(cq.popleft(), None, out)
            if not cq:
                del self._cut_waiting[sock_file]
        return out

    def flush(self) -> list[Verdict]:
        """Everything still pending: sends in flight, receives without their send."""
        out: list[Verdict] = [_in_flight(h) for h in self._order.values()]
        for q in self._recvs.values():
            out.extend(_alone_recv(h) for h in q)
        for cq in self._cut_waiting.values():
            for ev in cq:
                self._cut_short(ev, None, out)
        self._cut_waiting.clear()
        self._sends.clear()
        self._order.clear()
        self._by_sock.clear()
        self._recvs.clear()
        return out

    @property
    def pending(self) -> int:
        return (len(self._order) + sum(len(q) for q in self._recvs.values())
                + sum(len(q) for q in self._cut_waiting.values()))


_NO_FILE = FileIdentity(address=0, inode=0, mode=0, refcount=0, name="")
_FD_TABLE_FULL = 4  # events.EV_FLAG_FD_TABLE_FULL


def _could_be_its_send(tid: int, timestamp_ns: int, waiting: TraceEvent) -> bool:
    """Whether a send by thread *tid* at *timestamp_ns* can be the one a receive
    (or loss) seen before it waits for: not a send the receiving thread itself
    made after that receive returned (a thread's calls follow one another; the
    send of a message a thread received was made before, or by another thread)."""
    return not (isinstance(waiting, RecvEvent) and waiting.tid == tid
                and waiting.timestamp_ns < timestamp_ns)


def _first_taker(waiting: deque[_Half], send: SendEvent) -> int | None:
    """The first of the *waiting* receives and losses *send* can be the send of."""
    for i, r in enumerate(waiting):
        if _could_be_its_send(send.tid, send.timestamp_ns, r.event):
            return i
    return None


def _first_cut_taker(early: deque[RecvEvent], send: SendEvent) -> int | None:
    """The first of the *early* receives cut short whose message *send* can be."""
    for i, c in enumerate(early):
        if _could_be_its_send(send.tid, send.timestamp_ns, c):
            return i
    return None


def _is_peek(ev: TraceEvent) -> bool:
    return "PEEK" in ev.flags


def _lost(reason: str, sender: _Half | None, where: TraceEvent, receiver: LostParty | None,
          f: FileIdentity, fit: int | None = None) -> LostEvent:
    send = sender.event if sender is not None and isinstance(sender.event, SendEvent) else None
    if isinstance(where, LossReport) and where.reason is LossReason.ZERO_LENGTH_STREAM \
            and send is None:
        # The report itself is the sender's (its send was not seen on its own).
        return LostEvent(reason, where.pid, where.tid, where.comm, None, f, None,
                         where.timestamp_ns, where.syscall, fit, None, where.backend)
    return LostEvent(
        reason=reason,
        pid=None if send is None else send.pid,
        tid=None if send is None else send.tid,
        comm=None if send is None else send.comm,
        fd=None if sender is None else sender.fd,
        file=f,
        receiver=receiver,
        timestamp_ns=where.timestamp_ns,
        syscall=where.syscall,
        fit=fit,
        send=send,
        backend=where.backend,
    )


def _loss_party(report: LossReport) -> LostParty | None:
    """The process whose action lost the fds (None: a zero-length send, nobody received)."""
    if report.reason is LossReason.ZERO_LENGTH_STREAM:
        return None
    return LostParty(report.pid, report.tid, report.comm,
                     report.sock if report.sock >= 0 else None)


def _in_flight(h: _Half) -> Transfer:
    assert isinstance(h.event, SendEvent)
    return Transfer(h.event, None, h.fd, None, h.file, in_flight=True)


def _alone_recv(h: _Half) -> Verdict:
    """A receive whose send was not seen (NOSEND), or a loss whose send was not."""
    if isinstance(h.event, LossReport):
        return _lost(h.event.reason.label, None, h.event, _loss_party(h.event), h.file)
    assert isinstance(h.event, RecvEvent)
    return Transfer(None, h.event, None, h.fd, h.file)
