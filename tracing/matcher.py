"""Link sends to receives by the kernel ``struct file`` they carry.

An fd in flight is a reference to one ``struct file``: the address the sender
resolved is the address the receiver gets.  :class:`Matcher` pairs each fd
of a successful send with the next receive of the same file address, in
order (the same file sent twice is received twice).  A ``MSG_PEEK`` receive
gets clones and leaves the message queued: it is paired with the pending
send without consuming it, so the real read that follows is paired too.

Events can arrive out of order: a receiver may return from ``recvmsg``
before the sender's ``sendmsg`` exit is reported.  Receives therefore wait
for their send as well; whatever is still alone after ``grace_ns`` (or at
:meth:`Matcher.flush`) is reported unmatched.  Failed sends are never
transfers; they are reported once, unmatched, so a caller can show them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from rawsys.trace.events import FileIdentity, RecvEvent, SendEvent, TraceEvent, Transfer

__all__ = ["Matcher"]


@dataclass
class _Half:
    event: TraceEvent
    fd: int
    file: FileIdentity
    seen_ns: int
    peeked: bool = False  # a send some PEEK has already been paired with


class Matcher:
    """Feed events in arrival order; get :class:`Transfer` records back."""

    def __init__(self, grace_ns: int = 2_000_000_000) -> None:
        self.grace_ns = grace_ns
        self._sends: OrderedDict[int, deque[_Half]] = OrderedDict()
        self._recvs: OrderedDict[int, deque[_Half]] = OrderedDict()
        self._last_ns = 0

    def feed(self, event: TraceEvent) -> list[Transfer]:
        """Pair *event* with what is pending; returns the transfers completed, then the expired."""
        self._last_ns = max(self._last_ns, event.timestamp_ns)
        out: list[Transfer] = []
        if isinstance(event, SendEvent):
            if not event.ok:
                for fd, f in zip(event.fds, event.files):
                    out.append(Transfer(event, None, fd, None, f))
                if not event.fds:
                    out.append(Transfer(event, None, None, None, _NO_FILE))
            else:
                for fd, f in zip(event.fds, event.files):
                    out.extend(self._on_send(_Half(event, fd, f, event.timestamp_ns)))
        else:
            if not event.fds:
                # Cut short before any fd was installed (CTRUNC without room).
                out.append(Transfer(None, event, None, None, _NO_FILE))
            for fd, f in zip(event.fds, event.files):
                out.extend(self._on_recv(_Half(event, fd, f, event.timestamp_ns)))
        out.extend(self.expire(self._last_ns))
        return out

    def _on_send(self, half: _Half) -> list[Transfer]:
        if half.file.address == 0:
            return [Transfer(half.event, None, half.fd, None, half.file)]  # type: ignore[arg-type]
        out: list[Transfer] = []
        waiting = self._recvs.get(half.file.address)
        # Receives seen before their send: peeks first pair without consuming.
        while waiting:
            r = waiting.popleft()
            out.append(self._transfer(half, r))
            if not _is_peek(r.event):
                if not waiting:
                    del self._recvs[half.file.address]
                return out
            half.peeked = True
        if waiting is not None and not waiting:
            del self._recvs[half.file.address]
        self._sends.setdefault(half.file.address, deque()).append(half)
        return out

    def _on_recv(self, half: _Half) -> list[Transfer]:
        if half.file.address == 0:
            return [Transfer(None, half.event, None, half.fd, half.file)]  # type: ignore[arg-type]
        pending = self._sends.get(half.file.address)
        if pending:
            s = pending[0]
            if _is_peek(half.event):
                s.peeked = True
            else:
                pending.popleft()
                if not pending:
                    del self._sends[half.file.address]
            return [self._transfer(s, half)]
        self._recvs.setdefault(half.file.address, deque()).append(half)
        return []

    @staticmethod
    def _transfer(s: _Half, r: _Half) -> Transfer:
        assert isinstance(s.event, SendEvent) and isinstance(r.event, RecvEvent)
        return Transfer(s.event, r.event, s.fd, r.fd, r.file)

    def expire(self, now_ns: int) -> list[Transfer]:
        """Halves alone for longer than ``grace_ns`` before *now_ns*, as unmatched transfers."""
        limit = now_ns - self.grace_ns
        out: list[Transfer] = []
        for table, is_send in ((self._sends, True), (self._recvs, False)):
            for addr in list(table):
                q = table[addr]
                while q and q[0].seen_ns < limit:
                    out.append(_alone(q.popleft(), is_send))
                if not q:
                    del table[addr]
        return out

    def flush(self) -> list[Transfer]:
        """Everything still pending, as unmatched transfers."""
        out: list[Transfer] = []
        for table, is_send in ((self._sends, True), (self._recvs, False)):
            for q in table.values():
                out.extend(_alone(h, is_send) for h in q)
            table.clear()
        return out

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._sends.values()) + sum(len(q) for q in self._recvs.values())


_NO_FILE = FileIdentity(address=0, inode=0, mode=0, refcount=0, name="")


def _is_peek(ev: TraceEvent) -> bool:
    return "PEEK" in ev.flags


def _alone(h: _Half, is_send: bool) -> Transfer:
    if is_send:
        assert isinstance(h.event, SendEvent)
        return Transfer(h.event, None, h.fd, None, h.file)
    assert isinstance(h.event, RecvEvent)
    return Transfer(None, h.event, None, h.fd, h.file)
