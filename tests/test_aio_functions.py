"""rawsys.aio coroutines: same results as the blocking calls, on asyncio's loop and uvloop.

Every test runs on both loops (uvloop is skipped only where it is not
installed) and checks at the end that no reader or writer is left
registered and that no fd was left open.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
from typing import Any, List, Tuple

import pytest
from aio_helpers import LOOPS, open_fds, run, until

import rawsys
import rawsys.aio as aio
from rawsys import ControlTruncatedError

pytestmark = [pytest.mark.usefixtures("fd_leak_check"),
              pytest.mark.parametrize("loop_kind", LOOPS)]


def pair(kind: int = socket.SOCK_DGRAM) -> Tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def close(*things: Any) -> None:
    for thing in things:
        if isinstance(thing, int):
            os.close(thing)
        else:
            thing.close()


def assert_pipe_works(read_end: int, write_end: int, payload: bytes) -> None:
    os.write(write_end, payload)
    assert os.read(read_end, len(payload)) == payload


def fill(sock: socket.socket) -> int:
    """Write into *sock* until the kernel says EAGAIN; return the bytes written."""
    total = 0
    chunk = b"f" * 4096
    while True:
        try:
            total += sock.send(chunk)
        except BlockingIOError:
            return total


def drain_all(sock: socket.socket) -> Tuple[bytes, List[int]]:
    """Read what is queued on *sock* (non-blocking), with any fds."""
    data = b""
    fds: List[int] = []
    while True:
        try:
            msg, got, _flags, _addr = rawsys.recv_fds(sock, 1 << 16, 253)
        except BlockingIOError:
            return data, fds
        fds += got
        if not msg:
            return data, fds
        data += msg


# -- round trips -------------------------------------------------------------------------


def test_recv_waits_then_gets_working_fds_close_on_exec(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        r, w = os.pipe()
        receiving = asyncio.ensure_future(aio.recv_fds(b, 16, 4))
        await until(lambda: loop.watched(b.fileno()))  # parked: nothing was sent yet
        assert await aio.send_fds(a, [b"he", b"llo"], [r, w]) == 5
        msg, fds, flags, address = await receiving
        assert (msg, len(fds), flags, address) == (b"hello", 2, 0, None)
        assert all(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for fd in fds)
        assert_pipe_works(fds[0], w, b"read through the received read end")
        assert_pipe_works(r, fds[1], b"written through the received write end")
        close(a, b, r, w, *fds)
    run(loop_kind, main)


def test_cloexec_false_and_flags(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        r, w = os.pipe()
        await aio.send_fds(a, [b"peek"], [r])
        peeked = await aio.recv_fds(b, 16, 1, socket.MSG_PEEK, cloexec=False)
        got = await aio.recv_fds(b, 16, 1)
        assert peeked[0] == got[0] == b"peek"
        assert not fcntl.fcntl(peeked[1][0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert fcntl.fcntl(got[1][0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        close(a, b, r, w, *peeked[1], *got[1])
    run(loop_kind, main)


def test_send_fd_recv_fd_and_a_message_without_fds(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        r, w = os.pipe()
        assert await aio.send_fd(a, w) == 1
        got = await aio.recv_fd(b)
        assert_pipe_works(r, got, b"classic pair")
        await aio.send_fds(a, [b"no fds"], [])
        with pytest.raises(OSError) as info:
            await aio.recv_fd(b)
        assert info.value.errno == errno.EBADMSG
        close(a, b, r, w, got)
    run(loop_kind, main)


def test_datagram_address(loop_kind: str, tmp_path: Any) -> None:
    async def main(loop: Any) -> None:
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(str(tmp_path / "recv"))
        sender.bind(str(tmp_path / "send"))
        receiver.setblocking(False)
        sender.setblocking(False)
        r, w = os.pipe()
        await aio.send_fds(sender, [b"to"], [r], 0, str(tmp_path / "recv"))
        msg, fds, _flags, address = await aio.recv_fds(receiver, 8, 1)
        assert (msg, address) == (b"to", str(tmp_path / "send"))
        close(sender, receiver, r, w, *fds)
    run(loop_kind, main)


def test_int_fd_works_in_any_blocking_mode(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)  # blocking
        r, w = os.pipe()
        receiving = asyncio.ensure_future(aio.recv_fds(b.fileno(), 8, 1))
        await until(lambda: loop.watched(b.fileno()))  # waits without blocking the loop
        await aio.send_fds(a.fileno(), [b"i"], [r])
        msg, fds, _flags, _address = await receiving
        assert msg == b"i" and len(fds) == 1
        close(a, b, r, w, *fds)
    run(loop_kind, main)


def test_stream_send_fds_sends_everything_and_fds_come_with_the_first_byte(
        loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair(socket.SOCK_STREAM)
        r, w = os.pipe()
        payload = os.urandom(3 << 20)  # far more than the socket buffer
        sending = asyncio.ensure_future(aio.send_fds(a, [payload], [w]))
        received = b""
        fds: List[int] = []
        while len(received) < len(payload):
            msg, got, _flags, _addr = await aio.recv_fds(b, 1 << 16, 4)
            if got:
                assert received == b"", "the fds came with a later chunk"
            received += msg
            fds += got
        assert await sending == len(payload)
        assert received == payload and len(fds) == 1
        assert_pipe_works(r, fds[0], b"after 3 MiB")
        close(a, b, r, w, *fds)
    run(loop_kind, main)


def test_send_waits_for_room(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair(socket.SOCK_STREAM)
        r, w = os.pipe()
        filled = fill(a)
        sending = asyncio.ensure_future(aio.send_fds(a, [b"last"], [r]))
        await until(lambda: loop.watched(a.fileno()))
        assert not sending.done()
        data, fds = b"", []
        while not sending.done() or len(data) < filled + 4:
            got = drain_all(b)
            data += got[0]
            fds += got[1]
            await asyncio.sleep(0)
        assert await sending == 4
        assert data.endswith(b"last") and len(fds) == 1
        close(a, b, r, w, *fds)
    run(loop_kind, main)


# -- errors -------------------------------------------------------------------------------


def test_control_truncated_owns_what_arrived(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        pipes = [os.pipe() for _ in range(2)]
        sent = [fd for p in pipes for fd in p]
        before = len(open_fds())
        receiving = asyncio.ensure_future(aio.recv_fds(b, 8, 1))
        await until(lambda: loop.watched(b.fileno()))
        await aio.send_fds(a, [b"four"], sent)
        with pytest.raises(ControlTruncatedError) as info:
            await receiving
        exc = info.value
        assert exc.msg == b"four" and len(exc.fds) == 1
        assert len(open_fds()) == before + 1  # the one that fitted, held by the exception
        exc.close()
        assert len(open_fds()) == before
        with pytest.raises(ControlTruncatedError) as info:  # recv_message and batch too
            await aio.send_fds(a, [b"again"], sent)
            await aio.recv_message(b, 8, 1)
        taken = info.value.take_fds()
        assert len(taken) == 1
        close(a, b, *sent, *taken)
    run(loop_kind, main)


def test_blocking_socket_refused_like_asyncio_debug_mode(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = socket.socketpair()
        r, w = os.pipe()
        with pytest.raises(ValueError, match="non-blocking"):
            await aio.recv_fds(b, 1, 1)
        b.settimeout(5)
        with pytest.raises(ValueError, match="non-blocking"):
            await aio.send_fds(b, [b"x"], [r])
        assert loop.watching_nothing()
        close(a, b, r, w)
    run(loop_kind, main)


def test_bad_arguments_raise_what_the_blocking_calls_raise(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        for args, exc_type in [((b, -1, 1), ValueError), ((b, 1, -1), OverflowError),
                               ((b, "1", 1), TypeError), ((b, 1, 1, "0"), TypeError),
                               ((object(), 1, 1), TypeError)]:
            with pytest.raises(exc_type):
                await aio.recv_fds(*args)
        with pytest.raises(TypeError):
            await aio.send_fds(a, [b"x"], ["not an fd"])  # type: ignore[list-item]
        with pytest.raises(OSError) as info:
            await aio.send_fds(a, [b"x"], [-1])
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError) as info:
            await aio.send_fds(a, [b"x"], [a.fileno()] * 254)
        assert info.value.errno == errno.EINVAL
        closed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        closed.setblocking(False)
        closed.close()
        with pytest.raises(OSError) as info:
            await aio.recv_fds(closed, 1, 1)
        assert info.value.errno == errno.EBADF
        inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inet.setblocking(False)
        with pytest.raises(rawsys.FdPassingUnsupportedError):
            await aio.send_fds(inet, [b"x"], [a.fileno()], 0, ("127.0.0.1", 9))
        close(a, b, inet)
    run(loop_kind, main)


def test_fds_without_data_on_a_stream_socket_refused(loop_kind: str) -> None:
    """The kernel would return 0 and drop them; a datagram carries them fine."""
    async def main(loop: Any) -> None:
        r, w = os.pipe()
        a, b = pair(socket.SOCK_STREAM)
        with pytest.raises(ValueError, match="at least one byte"):
            await aio.send_fds(a, [b""], [r])
        with pytest.raises(ValueError, match="at least one byte"):
            await aio.send_message(a, [], [rawsys.ScmRights((r,))])
        c, d = pair(socket.SOCK_SEQPACKET)
        assert await aio.send_fds(c, [b""], [r]) == 0
        msg, fds, _flags, _addr = await aio.recv_fds(d, 8, 1)
        assert msg == b"" and len(fds) == 1
        close(a, b, c, d, r, w, *fds)
    run(loop_kind, main)


def test_eof_and_peer_errors(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair(socket.SOCK_STREAM)
        receiving = asyncio.ensure_future(aio.recv_fds(b, 8, 1))
        await until(lambda: loop.watched(b.fileno()))
        a.close()
        assert await receiving == (b"", [], 0, None)
        r, w = os.pipe()
        with pytest.raises(BrokenPipeError):
            await aio.send_fds(b, [b"x"], [r])
        c, d = pair(socket.SOCK_DGRAM)
        d.close()
        with pytest.raises(ConnectionRefusedError):
            await aio.send_fds(c, [b"x"], [r])
        close(b, c, r, w)
    run(loop_kind, main)


def test_wait_for_timeout_leaves_nothing_behind(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        before = len(open_fds())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aio.recv_fds(b, 8, 1), 0.05)
        assert not loop.watched(b.fileno()) and len(open_fds()) == before
        fill(a)
        r, w = os.pipe()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aio.send_fds(a, [b"x"], [r]), 0.05)
        assert not loop.watched(a.fileno())
        # Nothing was lost: a message sent now is the next one received.
        drain_all(b)
        await aio.send_fds(a, [b"next"], [r])
        msg, fds, _f, _a = await asyncio.wait_for(aio.recv_fds(b, 8, 1), 60)
        assert msg == b"next"
        close(a, b, r, w, *fds)
    run(loop_kind, main)


# -- batches and messages -------------------------------------------------------------------


def test_batch_round_trip(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair(socket.SOCK_SEQPACKET)
        pipes = [os.pipe() for _ in range(5)]
        receiving = asyncio.ensure_future(aio.recv_fds_batch(b, 8, 16, 2))
        await until(lambda: loop.watched(b.fileno()))
        items = [([b"m%d" % i], [p[1]]) for i, p in enumerate(pipes)]
        assert await aio.send_fds_batch(a, iter(items)) == 5
        results = await receiving
        results += await aio.recv_fds_batch(b, 8, 16, 2) if len(results) < 5 else []
        assert [m for m, _f, _fl, _ad in results] == [b"m%d" % i for i in range(5)]
        for (read_end, _w), (_m, fds, _fl, _ad) in zip(pipes, results):
            assert_pipe_works(read_end, fds[0], b"batched")
            os.close(fds[0])
        assert await aio.send_fds_batch(a, []) == 0
        s, t = pair(socket.SOCK_STREAM)
        with pytest.raises(ValueError, match="SOCK_STREAM|stream"):
            await aio.send_fds_batch(s, items)
        close(a, b, s, t, *[fd for p in pipes for fd in p])
    run(loop_kind, main)


def test_messages_with_credentials(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        rawsys.set_passcred(b)
        r, w = os.pipe()
        receiving = asyncio.ensure_future(
            aio.recv_message(b, 16, 2, credentials=True))
        await until(lambda: loop.watched(b.fileno()))
        creds = rawsys.own_credentials()
        await aio.send_message(a, [b"who"], [rawsys.ScmRights((w,)), creds])
        message = await receiving
        assert message.data == b"who" and message.credentials == creds
        assert_pipe_works(r, message.fds[0], b"with credentials")
        close(a, b, r, w, *message.fds)
    run(loop_kind, main)


# -- concurrency --------------------------------------------------------------------------


KINDS = ["pipe", "socket", "file", "memfd"] + (["eventfd"] if hasattr(os, "eventfd") else [])


def fd_kinds(tmp_path: Any, i: int) -> List[Tuple[str, int, int]]:
    """(kind, fd to send, fd kept to check it) for each of KINDS."""
    kinds = []
    r, w = os.pipe()
    kinds.append(("pipe", w, r))
    s1, s2 = socket.socketpair()
    kinds.append(("socket", s1.detach(), s2.detach()))
    path = tmp_path / f"file{i}"
    kinds.append(("file", os.open(path, os.O_RDWR | os.O_CREAT), os.open(path, os.O_RDONLY)))
    memfd = os.memfd_create(f"rawsys-aio-{i}")
    kinds.append(("memfd", memfd, os.dup(memfd)))
    if "eventfd" in KINDS:  # Python 3.10+
        event = os.eventfd(0)
        kinds.append(("eventfd", event, os.dup(event)))
    return kinds


def use_received(kind: str, fd: int, token: bytes) -> None:
    """Write *token* through a received fd, the way its kind allows."""
    if kind in ("pipe", "socket"):
        os.write(fd, token)
    elif kind in ("file", "memfd"):
        os.pwrite(fd, token, 0)
    else:
        os.eventfd_write(fd, int(token.split(b"-")[1]) + 1)


def check_kept(kind: str, fd: int, token: bytes) -> None:
    """Read *token* back through the fd the sender kept."""
    if kind in ("pipe", "socket"):
        assert os.read(fd, 64) == token
    elif kind in ("file", "memfd"):
        assert os.pread(fd, len(token), 0) == token
    else:
        assert os.eventfd_read(fd) == int(token.split(b"-")[1]) + 1


def test_fifty_concurrent_pairs_pass_fds_of_every_kind(loop_kind: str, tmp_path: Any) -> None:
    async def client(i: int, sock: socket.socket) -> None:
        kinds = fd_kinds(tmp_path, i)
        await aio.send_fds(sock, [b"client-%d" % i], [k[1] for k in kinds])
        for _kind, sent, _kept in kinds:
            os.close(sent)  # the receiver has its own references
        reply, _fds, _fl, _ad = await aio.recv_fds(sock, 16, 0)
        assert reply == b"done"
        for kind, _sent, kept in kinds:
            check_kept(kind, kept, b"%s-%d" % (kind.encode(), i))
            os.close(kept)
        sock.close()

    async def server(sock: socket.socket) -> None:
        msg, fds, _flags, _addr = await aio.recv_fds(sock, 32, 8)
        i = int(msg.split(b"-")[1])
        assert len(fds) == len(KINDS)
        for kind, fd in zip(KINDS, fds):
            use_received(kind, fd, b"%s-%d" % (kind.encode(), i))
            os.close(fd)
        await aio.send_fds(sock, [b"done"], [])
        sock.close()

    async def main(loop: Any) -> None:
        pairs = [pair(socket.SOCK_SEQPACKET) for _ in range(50)]
        await asyncio.gather(*[client(i, a) for i, (a, _b) in enumerate(pairs)],
                             *[server(b) for _a, b in pairs])
    run(loop_kind, main)


def test_workers_sharing_one_socket_each_get_one_message(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = pair()
        pipes = [os.pipe() for _ in range(10)]
        workers = [asyncio.ensure_future(aio.recv_fds(b, 8, 1)) for _ in range(10)]
        await until(lambda: loop.watched(b.fileno()))
        for i, (_r, w) in enumerate(pipes):
            await aio.send_fds(a, [b"%d" % i], [w])
        results = await asyncio.gather(*workers)
        assert sorted(int(m) for m, _f, _fl, _ad in results) == list(range(10))
        for msg, fds, _fl, _ad in results:
            read_end = pipes[int(msg)][0]
            assert_pipe_works(read_end, fds[0], b"worker " + msg)
            os.close(fds[0])
        close(a, b, *[fd for p in pipes for fd in p])
    run(loop_kind, main)
