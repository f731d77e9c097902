"""Waiting on the running asyncio loop until a socket is readable or writable.

Internal to ``rawsys.aio`` and ``rawsys.aio_streams``.  The rule that keeps
cancellation from leaking descriptors lives here: the loop's reader/writer
callback only *wakes* the waiting coroutine; the ``recvmsg`` that installs
fds runs afterwards, in the coroutine, with no ``await`` between it and the
``return`` that hands the fds over.  A coroutine cancelled while it waits has
received nothing: a message that arrived meanwhile stays queued in the
socket, where the kernel owns its fds (and closes them with the socket).
The loop's own ``sock_recv`` does it the other way round -- its callback
reads and stores the result in a future -- so a cancellation landing between
the two loses what was read; with fds that would be a leak.

Several coroutines may wait on one fd at once (a pool of workers receiving
from one datagram socket): they share one ``add_reader``/``add_writer``
registration, every one is woken when the fd is ready, and those that find
nothing to read go back to waiting.  The registration is removed as soon as
nobody waits, so a cancelled coroutine leaves no reader or writer behind.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable, Dict, List, Tuple, TypeVar

T = TypeVar("T")
_Key = Tuple[asyncio.AbstractEventLoop, int, bool]


class _Waiters:
    """The futures waiting for one fd to be ready in one direction, on one loop."""

    __slots__ = ("key", "futures")

    def __init__(self, key: _Key) -> None:
        self.key = key
        self.futures: List[asyncio.Future[None]] = []

    def _register(self) -> None:
        loop, fd, writing = self.key
        if writing:
            loop.add_writer(fd, self._ready)
        else:
            loop.add_reader(fd, self._ready)

    def _unregister(self) -> None:
        loop, fd, writing = self.key
        if _WAITERS.get(self.key) is self:
            del _WAITERS[self.key]
        if loop.is_closed():
            return
        if writing:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)

    def _ready(self) -> None:
        """The loop's callback: wake every waiter, and stop watching the fd."""
        futures, self.futures = self.futures, []
        self._unregister()
        for future in futures:
            if not future.done():
                future.set_result(None)

    def discard(self, future: asyncio.Future[None]) -> None:
        try:
            self.futures.remove(future)
        except ValueError:
            return  # already woken
        if not self.futures:
            self._unregister()


_WAITERS: Dict[_Key, _Waiters] = {}


def when_ready(loop: asyncio.AbstractEventLoop, fd: int, writing: bool) -> asyncio.Future[None]:
    """A future that gets a result when *fd* is readable (or writable).

    Give it back with ``forget`` if you stop waiting before it is done.
    """
    key = (loop, fd, writing)
    waiters = _WAITERS.get(key)
    if waiters is None:
        waiters = _WAITERS[key] = _Waiters(key)
    future: asyncio.Future[None] = loop.create_future()
    waiters.futures.append(future)
    if len(waiters.futures) == 1:
        try:
            waiters._register()
        except BaseException:
            waiters.futures.clear()
            del _WAITERS[key]
            raise
    return future


def forget(loop: asyncio.AbstractEventLoop, fd: int, writing: bool,
           future: asyncio.Future[None]) -> None:
    """Stop waiting with *future*; the fd is unwatched when nobody else waits."""
    waiters = _WAITERS.get((loop, fd, writing))
    if waiters is not None:
        waiters.discard(future)


async def wait_ready(loop: asyncio.AbstractEventLoop, fd: int, writing: bool) -> None:
    """Wait until *fd* is readable (or writable); on cancellation leave nothing registered."""
    future = when_ready(loop, fd, writing)
    try:
        await future
    finally:
        forget(loop, fd, writing, future)


def fd_of(sock: Any) -> int:
    """The fd of *sock*, an int or anything with ``fileno()``."""
    if isinstance(sock, int):
        return sock
    fd: int = sock.fileno()
    return fd


def check_nonblocking(sock: object) -> None:
    """Refuse what asyncio's ``sock_*`` methods refuse: TLS sockets and blocking sockets.

    asyncio checks the blocking mode only in debug mode; rawsys.aio always
    does, for one rule instead of two.  An int fd is accepted in any mode:
    every call passes ``MSG_DONTWAIT``, so it cannot block the loop.
    """
    if isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    gettimeout = getattr(sock, "gettimeout", None)
    if gettimeout is not None and gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


async def call_when_ready(sock: Any, writing: bool, call: Callable[[], T]) -> T:
    """``call()`` now; while it raises ``BlockingIOError``, wait for readiness and call again.

    *call* must not block (it is a system call with ``MSG_DONTWAIT`` on a
    non-blocking socket).  Its result is returned in the same step of the
    task that made the call: no cancellation can come between.
    """
    try:
        return call()
    except (BlockingIOError, InterruptedError):
        pass
    loop = asyncio.get_running_loop()
    fd = fd_of(sock)
    while True:
        await wait_ready(loop, fd, writing)
        try:
            return call()
        except (BlockingIOError, InterruptedError):
            continue


__all__ = ["when_ready", "forget", "wait_ready", "fd_of", "check_nonblocking",
           "call_when_ready"]
