"""Cancelling rawsys.aio at every await point leaks no fd and leaves nothing registered.

Each coroutine suspends only on a readiness future.  The tests cancel it
there in the two ways that can happen:

* *parked*: cancelled while it waits (nothing has arrived);
* *woken*: the socket turned ready -- a message with fds is queued, the
  loop's callback has woken the task -- and the cancellation lands before
  the task resumes.  The coroutine must not receive: the message stays
  queued in the socket (the kernel's), and the next receive gets it.

Coroutines that wait several times (sending more than the socket buffer
holds) are cancelled at each of their waits in turn, until one run
completes.  After each cancellation: no reader or writer is registered,
``/proc/self/fd`` holds exactly the fds the test expects, and nothing was
lost or duplicated on the wire.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Awaitable, Callable, Dict, List

import pytest
from aio_helpers import LOOPS, open_fds, run, until
from test_aio_functions import close, drain_all, pair

import rawsys
import rawsys.aio as aio

pytestmark = [pytest.mark.usefixtures("fd_leak_check"),
              pytest.mark.parametrize("loop_kind", LOOPS)]

RECEIVERS: Dict[str, Callable[[socket.socket], Awaitable[Any]]] = {
    "recv_fds": lambda sock: aio.recv_fds(sock, 8, 4),
    "recv_fd": lambda sock: aio.recv_fd(sock),
    "recv_fds_batch": lambda sock: aio.recv_fds_batch(sock, 4, 8, 4),
    "recv_message": lambda sock: aio.recv_message(sock, 8, 4),
}


@pytest.mark.parametrize("mode", ["parked", "woken"])
@pytest.mark.parametrize("receiver", sorted(RECEIVERS))
def test_cancelled_receive_takes_nothing_and_loses_nothing(loop_kind: str, receiver: str,
                                                           mode: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        r, w = os.pipe()
        baseline = len(open_fds())
        task = asyncio.ensure_future(RECEIVERS[receiver](b))
        await until(lambda: loop.watched(b.fileno()))
        if mode == "parked":
            task.cancel()
        else:
            loop.cancel_at_wakeup(task, 1, b.fileno())
            await aio.send_fds(a, [b"m"], [w])  # queued: its fd is in flight, the kernel's
        with pytest.raises(asyncio.CancelledError):
            await task
        loop.clear_hooks()
        assert loop.wakeups == (1 if mode == "woken" else 0)
        assert not loop.watched(b.fileno())
        assert len(open_fds()) == baseline  # nothing was installed in this process
        if mode == "parked":
            await aio.send_fds(a, [b"m"], [w])
        msg, fds, _flags, _address = await aio.recv_fds(b, 8, 4)  # the message is still there
        assert msg == b"m" and len(fds) == 1
        os.write(fds[0], b"alive")
        assert os.read(r, 5) == b"alive"
        close(a, b, r, w, *fds)
    run(loop_kind, main)


def test_a_message_left_queued_is_dropped_with_the_socket(loop_kind: str) -> None:
    """Where a cancelled receive leaves a message: the kernel holds its fds, then drops them."""
    async def main(loop: Any) -> None:
        a, b = pair()
        r, w = os.pipe()
        task = asyncio.ensure_future(aio.recv_fds(b, 8, 1))
        await until(lambda: loop.watched(b.fileno()))
        loop.cancel_at_wakeup(task, 1, b.fileno())
        await aio.send_fds(a, [b"m"], [w])
        os.close(w)  # the message's copy is the only write end left
        with pytest.raises(asyncio.CancelledError):
            await task
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):  # a writer exists: the one in flight
            os.read(r, 1)
        close(a, b)
        assert os.read(r, 1) == b""  # EOF: the kernel dropped it with the socket
        os.close(r)
    run(loop_kind, main)


def test_closing_a_suspended_coroutine_unregisters(loop_kind: str) -> None:
    """A coroutine closed without cancellation (garbage collection) cleans up too."""
    async def main(loop: Any) -> None:
        a, b = pair()
        coro = aio.recv_fds(b, 8, 1)
        future = coro.send(None)  # runs to its first suspension
        assert isinstance(future, asyncio.Future) and loop.watched(b.fileno())
        coro.close()
        assert not loop.watched(b.fileno())
        close(a, b)
    run(loop_kind, main)


def test_many_waiters_cancelled_one_by_one(loop_kind: str) -> None:
    """The shared registration goes away with the last waiter, not before."""
    async def main(loop: Any) -> None:
        a, b = pair()
        tasks = [asyncio.ensure_future(aio.recv_fds(b, 8, 1)) for _ in range(5)]
        await until(lambda: loop.watched(b.fileno()))
        for task in tasks[:-1]:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert loop.watched(b.fileno())
        await aio.send_fds(a, [b"last"], [])
        assert (await tasks[-1])[0] == b"last"
        assert not loop.watched(b.fileno())
        close(a, b)
    run(loop_kind, main)


SENDERS: Dict[str, Callable[[socket.socket, bytes, List[int]], Awaitable[Any]]] = {
    "send_fds": lambda sock, data, fds: aio.send_fds(sock, [data], fds),
    "send_message": lambda sock, data, fds: aio.send_message(sock, [data],
                                                             [rawsys.ScmRights(tuple(fds))]),
}


@pytest.mark.parametrize("mode", ["parked", "woken"])
@pytest.mark.parametrize("sender", sorted(SENDERS))
def test_cancelled_stream_send_at_every_wait(loop_kind: str, sender: str, mode: str) -> None:
    """Sending 1 MiB waits many times; cancel at the 1st, 2nd, ... until one run completes."""
    payload = os.urandom(1 << 20)

    async def attempt(loop: Any, n: int) -> bool:
        a, b = pair(socket.SOCK_STREAM)
        r, w = os.pipe()
        baseline = len(open_fds())
        task = asyncio.ensure_future(SENDERS[sender](a, payload, [w]))
        if mode == "parked":
            loop.cancel_at_registration(task, n, a.fileno())
        else:
            loop.cancel_at_wakeup(task, n, a.fileno())
        received, fds = b"", []
        while not task.done():  # the peer reads whenever the sender waits
            await until(lambda: task.done() or loop.watched(a.fileno()))
            got = drain_all(b)
            received += got[0]
            fds += got[1]
            await asyncio.sleep(0)
        loop.clear_hooks()
        completed = not task.cancelled()
        got = drain_all(b)
        received += got[0]
        fds += got[1]
        assert not loop.watched(a.fileno()) and not loop.watched(b.fileno())
        if completed:
            assert task.result() == len(payload) and received == payload
        else:
            assert payload.startswith(received)  # what went out, in order, once
        # The fds went with the first byte, exactly once; the sender's are untouched.
        assert len(fds) == (1 if received else 0)
        assert len(open_fds()) == baseline + len(fds)
        for fd in fds:
            os.write(fd, b"ok")
            assert os.read(r, 2) == b"ok"
        close(a, b, r, w, *fds)
        return completed

    async def main(loop: Any) -> int:
        for n in range(1, 500):
            if await attempt(loop, n):
                return n
        raise AssertionError("the send never completed")

    waits = run(loop_kind, main)
    assert waits > 2  # several await points were exercised


@pytest.mark.parametrize("mode", ["parked", "woken"])
def test_cancelled_batch_send(loop_kind: str, mode: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair(socket.SOCK_SEQPACKET)
        r, w = os.pipe()
        queued = 0
        while True:  # fill the socket with messages
            try:
                rawsys.send_fds(a, [b"f" * 1024], [], socket.MSG_DONTWAIT)
                queued += 1
            except BlockingIOError:
                break
        baseline = len(open_fds())
        task = asyncio.ensure_future(aio.send_fds_batch(a, [([b"x"], [w])] * 3))
        await until(lambda: loop.watched(a.fileno()))
        if mode == "parked":
            task.cancel()
        else:
            loop.cancel_at_wakeup(task, 1, a.fileno())
            for _ in range(queued):
                rawsys.recv_fds(b, 2048, 1)
        with pytest.raises(asyncio.CancelledError):
            await task
        loop.clear_hooks()
        assert not loop.watched(a.fileno())
        assert len(open_fds()) == baseline
        got = await asyncio.gather(*[aio.recv_fds(b, 2048, 1)
                                     for _ in range(queued if mode == "parked" else 0)])
        assert all(not fds for _m, fds, _f, _a in got)
        with pytest.raises(BlockingIOError):  # the cancelled batch sent nothing
            rawsys.recv_fds(b, 2048, 1)
        close(a, b, r, w)
    run(loop_kind, main)
