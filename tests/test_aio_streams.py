"""rawsys.aio streams: bytes and fds round-trip in order, nothing is silently dropped.

Each test runs on asyncio's selector loop and on uvloop, and checks that no
fd is left open and no reader or writer left registered.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import warnings
from typing import Any, List, Tuple

import pytest
from aio_helpers import LOOPS, open_fds, run, until
from test_aio_functions import KINDS, check_kept, close, fd_kinds, use_received

import rawsys
import rawsys.aio as aio
from rawsys import ControlTruncatedError
from rawsys.aio import FdStreamReader, FdStreamWriter

pytestmark = [pytest.mark.usefixtures("fd_leak_check"),
              pytest.mark.parametrize("loop_kind", LOOPS)]

Streams = Tuple[FdStreamReader, FdStreamWriter, FdStreamReader, FdStreamWriter]


async def streams() -> Streams:
    """Two connected stream ends: (reader A, writer A, reader B, writer B)."""
    a, b = socket.socketpair()
    ra, wa = await aio.open_unix_connection(sock=a)
    rb, wb = await aio.open_unix_connection(sock=b)
    return ra, wa, rb, wb


async def close_all(*writers: FdStreamWriter) -> None:
    for writer in writers:
        writer.close()
        await writer.wait_closed()


def pipe_token_check(read_end: int, received_write_end: int, token: bytes) -> None:
    os.write(received_write_end, token)
    assert os.read(read_end, len(token)) == token


# -- order ----------------------------------------------------------------------------------


def test_bytes_and_fds_round_trip_in_order(loop_kind: str) -> None:
    """Writes of random sizes, some with fds; each frame read gets exactly its own fds."""
    rng = random.Random(1)
    frames = [(rng.choice([1, 7, 100, 5000, 70000, 300000]), rng.randrange(4))
              for _ in range(120)]

    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        kept: List[List[int]] = []  # read ends, per frame

        async def writer() -> None:
            for i, (size, nfds) in enumerate(frames):
                pipes = [os.pipe() for _ in range(nfds)]
                kept.append([r for r, _w in pipes])
                data = (b"%06d" % i * (size // 6 + 1))[:size]
                wa.write(data, fds=[w for _r, w in pipes])
                for _r, w in pipes:
                    os.close(w)  # allowed as soon as write() returns
                if i % 10 == 0:
                    await wa.drain()
            await wa.drain()

        async def reader() -> None:
            for i, (size, nfds) in enumerate(frames):
                data = await rb.readexactly(size)
                assert data == (b"%06d" % i * (size // 6 + 1))[:size]
                fds = rb.take_fds()
                assert len(fds) == nfds, f"frame {i}"
                for read_end, fd in zip(kept[i], fds):
                    pipe_token_check(read_end, fd, b"frame %d" % i)
                    os.close(fd)
                    os.close(read_end)

        await asyncio.gather(writer(), reader())
        await close_all(wa, wb)
        assert ra.at_eof() is False  # A's reader never read; closing it is enough
    run(loop_kind, main)


def test_the_kernel_glues_plain_bytes_before_fds_but_nothing_after(loop_kind: str) -> None:
    """The fact the reader is built on, and the reader's answer to it."""
    async def main(loop: Any) -> None:
        a, b = socket.socketpair()
        r, w = os.pipe()
        a.send(b"plain\n")
        rawsys.send_fds(a, [b"with\n"], [w])
        a.send(b"after\n")
        msg, fds, _f, _a = rawsys.recv_fds(b, 100, 4)
        assert (msg, len(fds)) == (b"plain\nwith\n", 1)  # one read, fds of the 2nd write
        assert rawsys.recv_fds(b, 100, 4)[:2] == (b"after\n", [])
        os.close(fds[0])
        rawsys.send_fds(a, [b"split"], [w])  # a partial read gets them with its first part
        first = rawsys.recv_fds(b, 2, 4)
        assert (first[0], len(first[1])) == (b"sp", 1)
        assert rawsys.recv_fds(b, 100, 4)[:2] == (b"lit", [])
        os.close(first[1][0])

        ra, wa, rb, wb = await streams()
        wa.write(b"plain\n")
        wa.write(b"with\n", fds=[w])
        wa.write(b"after\n")
        assert await rb.readline() == b"plain\n" and rb.take_fds() == []
        assert await rb.readline() == b"with\n"
        got = rb.take_fds()
        assert len(got) == 1
        pipe_token_check(r, got[0], b"the fd of the second line")
        assert await rb.readline() == b"after\n" and rb.take_fds() == []
        await close_all(wa, wb)
        close(a, b, r, w, *got)
    run(loop_kind, main)


def test_read_with_fds_stops_where_fds_are_released(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        (r1, w1), (r2, w2) = os.pipe(), os.pipe()
        wa.write(b"aaa")
        wa.write(b"bbb", fds=[w1])
        wa.write(b"ccc", fds=[w2])
        wa.write(b"ddd")
        wa.write_eof()
        first = await rb.read_with_fds(100)
        assert first[0] == b"aaabbb" and len(first[1]) == 1
        second = await rb.read_with_fds(2)
        assert second == (b"cc", [])  # not yet: the fds come with the write's last byte read
        third = await rb.read_with_fds(100)
        assert third[0] == b"c" and len(third[1]) == 1
        assert await rb.read_with_fds(100) == (b"ddd", [])
        assert await rb.read_with_fds(100) == (b"", [])
        pipe_token_check(r1, first[1][0], b"one")
        pipe_token_check(r2, third[1][0], b"two")
        with pytest.raises(ValueError):
            await rb.read_with_fds(0)
        await close_all(wa, wb)
        close(r1, w1, r2, w2, first[1][0], third[1][0])
    run(loop_kind, main)


# -- the writer -----------------------------------------------------------------------------


def test_fds_buffered_behind_a_full_socket_are_duplicates(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        baseline = len(open_fds())
        r, w = os.pipe()
        big = os.urandom(4 << 20)
        wa.write(big)  # the kernel takes a part; the rest is buffered
        wa.write(b"!", fds=[w])  # queued: duplicated
        assert len(open_fds()) == baseline + 2 + 1
        os.close(w)  # the caller's copy may go at once
        drained = asyncio.ensure_future(wa.drain())
        data = await rb.readexactly(len(big) + 1)
        await drained
        assert data == big + b"!"
        fds = rb.take_fds()
        assert len(fds) == 1
        pipe_token_check(r, fds[0], b"duplicate worked")
        os.close(fds[0])
        assert len(open_fds()) == baseline + 1  # the duplicate was closed once sent
        await close_all(wa, wb)
        os.close(r)
    run(loop_kind, main)


def test_drain_waits_for_the_peer(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        wa.write(b"x" * (8 << 20))
        draining = asyncio.ensure_future(wa.drain())
        await until(lambda: loop.watched(wa.get_extra_info("socket").fileno()))
        assert not draining.done()  # nobody reads: the buffer stays above the mark
        total = 0
        while total < 8 << 20:
            total += len(await rb.read(1 << 20))
        await draining
        await close_all(wa, wb)
    run(loop_kind, main)


def test_write_errors_are_immediate_and_send_nothing(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        r, w = os.pipe()
        with pytest.raises(ValueError, match="at least one byte"):
            wa.write(b"", fds=[r])
        with pytest.raises(TypeError):
            wa.write("text")
        with pytest.raises(TypeError):
            wa.write(b"x", fds=["fd"])
        with pytest.raises(OSError) as info:
            wa.write(b"x", fds=[r] * 254)
        assert info.value.errno == 22
        with pytest.raises(OSError) as info:
            wa.write(b"x", fds=[-1])
        assert info.value.errno == 9
        wa.write(b"fine", fds=[w])  # the writer is still usable
        assert await rb.readexactly(4) == b"fine"
        fds = rb.take_fds()
        assert len(fds) == 1
        await close_all(wa, wb)
        close(r, w, *fds)
    run(loop_kind, main)


def test_eof_close_and_writes_after_them(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        wa.write(b"line one\npartial")
        wa.write_eof()
        with pytest.raises(RuntimeError):
            wa.write(b"more")
        assert await rb.readline() == b"line one\n"
        assert await rb.readline() == b"partial"
        assert await rb.readline() == b""
        assert rb.at_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await rb.readexactly(1)
        wb.write(b"reply")  # the other direction still works
        assert await ra.read(100) == b"reply"
        reading = asyncio.ensure_future(ra.read(100))
        await until(lambda: loop.watched(wa.get_extra_info("socket").fileno()))
        wa.close()  # wakes the pending read, which sees EOF
        assert await reading == b""
        await wa.wait_closed()
        assert wa.is_closing()
        with pytest.raises(RuntimeError):
            wa.write(b"after close")
        with pytest.raises(ConnectionResetError):
            await wa.drain()
        await close_all(wb)
    run(loop_kind, main)


def test_peer_gone_breaks_the_writer(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        wb.close()
        await wb.wait_closed()
        r, w = os.pipe()
        with pytest.raises(BrokenPipeError):
            wa.write(b"x", fds=[r])
        with pytest.raises(BrokenPipeError):
            await wa.drain()
        assert await ra.read(10) == b""
        await close_all(wa)
        close(r, w)
    run(loop_kind, main)


def test_fds_never_taken_are_closed_with_a_warning(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        baseline = len(open_fds())
        r, w = os.pipe()
        wa.write(b"take me", fds=[r, w])
        assert await rb.read(100) == b"take me"
        assert len(open_fds()) == baseline + 4  # ours and the reader's
        with pytest.warns(ResourceWarning, match="never taken"):
            wb.close()
        assert len(open_fds()) == baseline + 2 - 1  # the reader's closed, and its socket
        await close_all(wa, wb)
        close(r, w)
    run(loop_kind, main)


def test_abort_closes_buffered_duplicates(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        baseline = len(open_fds())
        r, w = os.pipe()
        wa.write(b"x" * (4 << 20))
        wa.write(b"y", fds=[r, w])
        assert len(open_fds()) == baseline + 4
        wa.abort()
        assert len(open_fds()) == baseline + 2 - 1  # duplicates and the socket closed
        await wa.wait_closed()
        received = b""
        while True:
            chunk = await rb.read(1 << 20)
            if not chunk:
                break
            received += chunk
        assert set(received) <= {ord("x")} and rb.take_fds() == []
        await close_all(wb)
        close(r, w)
    run(loop_kind, main)


# -- the reader -----------------------------------------------------------------------------


def test_truncated_control_data_keeps_the_stream_in_step(loop_kind: str) -> None:
    """SO_PASSCRED's credentials eat room kept for fds: the error says so, nothing is lost."""
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        rawsys.set_passcred(rb_socket := wb.get_extra_info("socket"))
        assert rb_socket is not None
        r, w = os.pipe()
        wa.write(b"many", fds=[r] * 253)
        wa.write(b"next")
        with pytest.raises(ControlTruncatedError) as info:
            await rb.readexactly(8)
        assert info.value.take_fds() == []  # the stream kept them
        assert await rb.readexactly(8) == b"manynext"
        arrived = rb.take_fds()
        assert 0 < len(arrived) < 253
        await close_all(wa, wb)
        close(r, w, *arrived)
    run(loop_kind, main)


def test_limits_and_one_reader_at_a_time(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = socket.socketpair()
        ra, wa = await aio.open_unix_connection(sock=a)
        rb, wb = await aio.open_unix_connection(sock=b, limit=10)
        wa.write(b"0123456789abcdef\nshort\n")
        with pytest.raises(asyncio.LimitOverrunError):
            await rb.readuntil(b"\n")
        with pytest.raises(ValueError):
            await rb.readline()  # drops the long line
        assert await rb.readline() == b"short\n"
        first = asyncio.ensure_future(rb.read(1))
        await until(lambda: loop.watched(b.fileno()))
        with pytest.raises(RuntimeError, match="already waiting"):
            await rb.read(1)
        wa.write(b"!")
        assert await first == b"!"
        with pytest.raises(ValueError):
            await rb.readuntil(b"")
        with pytest.raises(ValueError):
            aio.FdStreamReader(b, limit=0)
        await close_all(wa, wb)
    run(loop_kind, main)


def test_async_iteration_and_read_all(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        wa.write(b"a\nb\nc")
        wa.write_eof()
        assert [line async for line in rb] == [b"a\n", b"b\n", b"c"]
        wb.write(b"everything")
        wb.write_eof()
        assert await ra.read() == b"everything"
        assert await ra.read(0) == b""
        assert wa.get_extra_info("peername") == "" and wa.get_extra_info("nothing", 5) == 5
        assert wa.can_write_eof()
        await close_all(wa, wb)
    run(loop_kind, main)


@pytest.mark.parametrize("mode", ["parked", "woken"])
def test_cancelled_reads_at_every_wait_lose_nothing(loop_kind: str, mode: str) -> None:
    """readexactly over pieces that arrive one per wait, cancelled at each wait in turn."""
    pieces = 12

    async def attempt(loop: Any, n: int) -> bool:
        ra, wa, rb, wb = await streams()
        sock_b = wb.get_extra_info("socket").fileno()
        baseline = len(open_fds())
        pipes = [os.pipe() for _ in range(pieces)]
        task = asyncio.ensure_future(rb.readexactly(pieces * 3))
        if mode == "parked":
            loop.cancel_at_registration(task, n, sock_b)
        else:
            loop.cancel_at_wakeup(task, n, sock_b)
        sent = 0
        while not task.done():
            await until(lambda: task.done() or loop.watched(sock_b))
            if not task.done() and sent < pieces:
                wa.write(b"p%02d" % sent, fds=[pipes[sent][1]])
                sent += 1
            await asyncio.sleep(0)
        loop.clear_hooks()
        assert not loop.watched(sock_b)
        completed = not task.cancelled()
        # Whatever was received is held by the reader, nothing more, nothing less.
        assert len(open_fds()) == baseline + 2 * pieces + len(rb._pending) + len(rb._released)
        while sent < pieces:
            wa.write(b"p%02d" % sent, fds=[pipes[sent][1]])
            sent += 1
        data = task.result() if completed else await rb.readexactly(pieces * 3)
        assert data == b"".join(b"p%02d" % i for i in range(pieces))
        fds = rb.take_fds()
        assert len(fds) == pieces
        for (read_end, _w), fd in zip(pipes, fds):  # in order
            pipe_token_check(read_end, fd, b"in order")
        close(*fds, *[fd for p in pipes for fd in p])
        await close_all(wa, wb)
        return completed

    async def main(loop: Any) -> int:
        for n in range(1, 100):
            if await attempt(loop, n):
                return n
        raise AssertionError("the read never completed")

    assert run(loop_kind, main) > 2


def test_cancelled_drain(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        ra, wa, rb, wb = await streams()
        r, w = os.pipe()
        wa.write(b"z" * (4 << 20))
        wa.write(b"!", fds=[w])
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(wa.drain(), 0.05)
        data = await rb.readexactly((4 << 20) + 1)
        assert data.endswith(b"!")
        fds = rb.take_fds()
        await wa.drain()
        await close_all(wa, wb)
        close(r, w, *fds)
    run(loop_kind, main)


# -- servers --------------------------------------------------------------------------------


def test_fifty_clients_pass_fds_of_every_kind(loop_kind: str, tmp_path: Any) -> None:
    path = str(tmp_path / "server.sock")

    async def handle(reader: FdStreamReader, writer: FdStreamWriter) -> None:
        hello = await reader.readline()
        i = int(hello.split()[1])
        fds = reader.take_fds()
        assert len(fds) == len(KINDS)
        for kind, fd in zip(KINDS, fds):
            use_received(kind, fd, b"%s-%d" % (kind.encode(), i))
            os.close(fd)
        writer.write(b"done\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client(i: int) -> None:
        reader, writer = await aio.open_unix_connection(path)
        kinds = fd_kinds(tmp_path, i)
        writer.write(b"client %d\n" % i, fds=[sent for _k, sent, _kept in kinds])
        for _kind, sent, _kept in kinds:
            os.close(sent)
        assert await reader.readline() == b"done\n"
        assert await reader.read() == b""
        for kind, _sent, kept in kinds:
            check_kept(kind, kept, b"%s-%d" % (kind.encode(), i))
            os.close(kept)
        writer.close()
        await writer.wait_closed()

    async def main(loop: Any) -> None:
        async with await aio.start_unix_server(handle, path) as server:
            assert server.is_serving() and len(server.sockets) == 1
            await asyncio.gather(*[client(i) for i in range(50)])
        assert not server.is_serving() and server.sockets == ()
        assert not os.path.exists(path)  # removed on close
    run(loop_kind, main)


def test_server_replaces_a_stale_socket_and_serves_forever(loop_kind: str, tmp_path: Any) -> None:
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()

    async def echo(reader: FdStreamReader, writer: FdStreamWriter) -> None:
        data, fds = await reader.read_with_fds(100)
        writer.write(data, fds=fds)
        close(*fds)
        await writer.drain()
        writer.close()

    async def main(loop: Any) -> None:
        server = await aio.start_unix_server(echo, path, start_serving=False)
        assert not server.is_serving()
        forever = asyncio.ensure_future(server.serve_forever())
        reader, writer = await aio.open_unix_connection(path)
        r, w = os.pipe()
        writer.write(b"echo", fds=[w])
        data, fds = await reader.read_with_fds(100)
        assert data == b"echo" and len(fds) == 1
        pipe_token_check(r, fds[0], b"came back")
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert not server.is_serving()
        writer.close()
        await writer.wait_closed()
        close(r, w, *fds)
    run(loop_kind, main)


def test_a_failing_handler_is_reported_and_its_connection_aborted(loop_kind: str) -> None:
    async def handle(reader: FdStreamReader, writer: FdStreamWriter) -> None:
        await reader.readexactly(1)
        raise KeyError("handler bug")

    async def main(loop: Any) -> None:
        reported: List[Any] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(b"\0rawsys-aio-test-%d" % os.getpid())  # abstract namespace
        listener.listen()
        server = await aio.start_unix_server(handle, sock=listener)
        reader, writer = await aio.open_unix_connection(listener.getsockname())
        r, w = os.pipe()
        writer.write(b"x", fds=[r, w])
        with pytest.warns(ResourceWarning, match="never taken"):
            assert await reader.read() == b""  # aborted, the fds it never took closed
        assert isinstance(reported[0]["exception"], KeyError)
        server.close()
        await server.wait_closed()
        writer.close()
        await writer.wait_closed()
        close(r, w)
    run(loop_kind, main)


def test_connect_waits_while_the_backlog_is_full(loop_kind: str, tmp_path: Any) -> None:
    path = str(tmp_path / "busy.sock")

    async def main(loop: Any) -> None:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(0)
        first = await aio.open_unix_connection(path)  # queued in the backlog
        second = asyncio.ensure_future(aio.open_unix_connection(path))
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert not second.done()  # it cannot connect before the first is accepted
        conn, _ = listener.accept()
        reader, writer = await second
        conn2, _ = listener.accept()
        for w in (first[1], writer):
            w.close()
            await w.wait_closed()
        close(conn, conn2, listener)
        with pytest.raises(FileNotFoundError):
            await aio.open_unix_connection(str(tmp_path / "nobody"))
    run(loop_kind, main)


def test_wrong_sockets_and_arguments(loop_kind: str) -> None:
    async def main(loop: Any) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            await aio.open_unix_connection(sock=a)
        with pytest.raises(ValueError):
            await aio.open_unix_connection()
        with pytest.raises(ValueError):
            await aio.start_unix_server(lambda r, w: None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(TypeError):
                await aio.open_unix_connection(sock=a.fileno())  # type: ignore[arg-type]
        close(a, b)
    run(loop_kind, main)
