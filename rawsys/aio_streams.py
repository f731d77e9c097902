"""asyncio streams over Unix stream sockets that carry file descriptors with the bytes.

asyncio's own ``StreamReader`` reads a Unix socket with ``recv``, and the
kernel discards any fds that came with the bytes, without a word.  These
streams read with ``recvmsg`` and keep every fd that arrives:

* ``open_unix_connection(path)`` / ``open_unix_connection(sock=s)`` and
  ``start_unix_server(client_connected_cb, path)`` work like asyncio's and
  give an ``FdStreamReader``/``FdStreamWriter`` pair;
* ``writer.write(data, fds=[...])`` sends the fds with the first byte of
  *data*; the caller may close its fds as soon as ``write`` returns (fds that
  cannot be handed to the kernel at once are duplicated and the duplicates
  are closed once sent);
* the reader has asyncio's reading methods (``read``, ``readexactly``,
  ``readuntil``, ``readline``, ``async for``), ``take_fds()`` to take the fds
  that came with the bytes read so far, and ``read_with_fds(n)`` which
  returns ``(data, fds)`` the way ``recv_fds`` does.

When fds become available.  On a stream socket the kernel attaches the fds
of a ``sendmsg`` to the first byte it sent, and a read that reaches that
byte gets them -- but the read may also hold bytes written before it without
fds (the kernel glues those in front), and it never holds bytes of a later
write.  So the reader knows that the fds belong to some byte of the last
write in what it received, not which byte; it releases them with the *last*
byte of that read, which always belongs to the write that carried them.
The guarantee: fds come out of ``take_fds()`` in the order they were sent,
never before some byte of the write that carried them has been read, and at
the latest once its last byte has.  A protocol that reads a frame and then
calls ``take_fds()`` gets exactly that frame's fds.

Ownership: fds received belong to the reader until taken; whatever was
never taken is closed when the stream is closed (with a ``ResourceWarning``,
as the process never saw them) or when the reader is collected.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import stat
import warnings
from collections import deque
from typing import Any, Awaitable, Callable, Deque, List, Optional, Set, Tuple, Union

from rawsys import ControlTruncatedError
from rawsys import recv_fds as _recv_fds
from rawsys import send_fds as _send_fds
from rawsys._readiness import call_when_ready, forget, when_ready
from rawsys.c.constants import SCM_MAX_FD

_DEFAULT_LIMIT = 2**16  # asyncio's stream limit
_CHUNK = 2**16  # bytes asked of one recvmsg
_HIGH_WATER = 2**16  # write buffer sizes at which drain() waits / stops waiting (asyncio's)
_LOW_WATER = 2**14
_COALESCE = 2**18  # plain bytes sent together in one sendmsg
_MSG_DONTWAIT = socket.MSG_DONTWAIT
_CONNECT_RETRY_MAX = 0.05  # seconds between connect attempts while the backlog is full

ClientConnected = Callable[["FdStreamReader", "FdStreamWriter"], Optional[Awaitable[None]]]
StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def _close_all(fds: List[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _check_stream_socket(sock: socket.socket) -> None:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"expected a socket.socket, not {type(sock).__name__}")
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ValueError("fd streams need an AF_UNIX SOCK_STREAM socket; for SOCK_DGRAM and "
                         "SOCK_SEQPACKET use rawsys.aio.send_fds/recv_fds")


class FdStreamReader:
    """asyncio's ``StreamReader`` reading methods, plus the fds that came with the bytes.

    Made by ``open_unix_connection``/``start_unix_server``.  It reads from
    the socket only when a read method needs more bytes (so a peer that
    writes faster than the application reads is held back by the socket's
    own buffer).  Only one coroutine may wait in a read method at a time
    (``RuntimeError`` otherwise, as with asyncio's reader).
    """

    def __init__(self, sock: socket.socket, limit: int = _DEFAULT_LIMIT, *,
                 cloexec: bool = True) -> None:
        if limit <= 0:
            raise ValueError("Limit cannot be <= 0")
        self._sock = sock
        self._limit = limit
        self._cloexec = cloexec
        self._buffer = bytearray()
        self._offset = 0  # stream offset of _buffer[0]: bytes returned so far
        self._received = 0  # stream offset of the end of _buffer
        self._pending: Deque[Tuple[int, List[int]]] = deque()  # (release offset, fds)
        self._released: List[int] = []
        self._eof = False
        self._closed = False
        # While _fill waits: the readiness future, and the loop and fd it is for.
        self._waiting: asyncio.Future[None] | None = None
        self._waiting_on: Tuple[asyncio.AbstractEventLoop, int] | None = None
        self._busy = False

    # -- receiving ----------------------------------------------------------------

    async def _fill(self, caller: str) -> None:
        """Receive once (waiting for the socket if need be) into the buffer."""
        if self._busy:
            raise RuntimeError(f"{caller}() called while another coroutine is already "
                               "waiting for incoming data")
        self._busy = True
        try:
            loop = asyncio.get_running_loop()
            while not self._closed:
                try:
                    data, fds, _flags, _address = _recv_fds(
                        self._sock, _CHUNK, SCM_MAX_FD, _MSG_DONTWAIT, cloexec=self._cloexec)
                except (BlockingIOError, InterruptedError):
                    pass
                except ControlTruncatedError as exc:
                    # Only an extra control message (SO_PASSCRED, ...) can eat the
                    # room kept for SCM_MAX_FD fds.  What arrived stays in the stream.
                    (data, fds, _flags, _address), = exc.take()
                    self._store(data, fds)
                    raise
                else:
                    self._store(data, fds)
                    return
                fd = self._sock.fileno()
                future = when_ready(loop, fd, False)
                self._waiting, self._waiting_on = future, (loop, fd)
                try:
                    await future
                finally:
                    self._waiting = self._waiting_on = None
                    forget(loop, fd, False, future)
            self._eof = True
        finally:
            self._busy = False

    def _store(self, data: bytes, fds: List[int]) -> None:
        if not data:
            self._eof = True
            self._released.extend(fds)  # not on a stream socket; kept all the same
            return
        self._buffer += data
        self._received += len(data)
        if fds:
            self._pending.append((self._received, fds))

    def _consume(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._offset += size
        pending = self._pending
        while pending and pending[0][0] <= self._offset:
            self._released.extend(pending.popleft()[1])
        return data

    # -- asyncio's reading methods ------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to *n* bytes (``-1``: until EOF); ``b""`` at EOF."""
        if n == 0:
            return b""
        if n < 0:
            while not self._eof:
                await self._fill("read")
            return self._consume(len(self._buffer))
        if not self._buffer and not self._eof:
            await self._fill("read")
        return self._consume(min(n, len(self._buffer)))

    async def readexactly(self, n: int) -> bytes:
        """Exactly *n* bytes; ``asyncio.IncompleteReadError`` if EOF comes first."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while len(self._buffer) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(self._consume(len(self._buffer)), n)
            await self._fill("readexactly")
        return self._consume(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Bytes up to and including *separator*, with asyncio's errors.

        ``asyncio.IncompleteReadError`` at EOF (the partial data consumed),
        ``asyncio.LimitOverrunError`` past the limit (the data left in the
        buffer).
        """
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("Separator should be at least one-byte string")
        offset = 0
        while True:
            buflen = len(self._buffer)
            if buflen - offset >= seplen:
                found = self._buffer.find(separator, offset)
                if found != -1:
                    break
                offset = buflen + 1 - seplen
                if offset > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", offset)
            if self._eof:
                raise asyncio.IncompleteReadError(self._consume(len(self._buffer)), None)
            await self._fill("readuntil")
        if found > self._limit:
            raise asyncio.LimitOverrunError(
                "Separator is found, but chunk is longer than limit", found)
        return self._consume(found + seplen)

    async def readline(self) -> bytes:
        """One line with its ``\\n``; at EOF the partial line (or ``b""``).

        Past the limit: ``ValueError``, the overlong line dropped (its fds, if
        any, are kept for ``take_fds``).
        """
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            if self._buffer.startswith(b"\n", exc.consumed):
                self._consume(exc.consumed + 1)
            else:
                self._consume(len(self._buffer))
            raise ValueError(exc.args[0]) from None

    def at_eof(self) -> bool:
        """True when the buffer is empty and EOF was received."""
        return self._eof and not self._buffer

    def __aiter__(self) -> FdStreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if line == b"":
            raise StopAsyncIteration
        return line

    # -- the fds ------------------------------------------------------------------

    def take_fds(self) -> List[int]:
        """The fds released by the bytes read so far, in the order sent; now the caller's."""
        fds, self._released = self._released, []
        return fds

    async def read_with_fds(self, n: int) -> Tuple[bytes, List[int]]:
        """``(data, fds)``: like ``recv_fds`` on the socket, from the stream.

        *data* is up to *n* bytes (``b""`` at EOF), ending no later than the
        byte that releases the next fds; *fds* are every fd released and not
        yet taken, now the caller's.
        """
        if n <= 0:
            raise ValueError("read_with_fds size must be positive")
        if not self._buffer and not self._eof:
            await self._fill("read_with_fds")
        size = min(n, len(self._buffer))
        if self._pending:
            size = min(size, self._pending[0][0] - self._offset)
        return self._consume(size), self.take_fds()

    # -- closing ------------------------------------------------------------------

    def _held(self) -> List[int]:
        released: List[int] = getattr(self, "_released", [])
        pending: Deque[Tuple[int, List[int]]] = getattr(self, "_pending", deque())
        fds = released + [fd for _end, group in pending for fd in group]
        self._released = []
        pending.clear()
        return fds

    def _connection_closing(self) -> List[int]:
        """The writer is about to close the socket: stop waiting on it; hand over held fds."""
        self._closed = True
        future, waiting_on = self._waiting, self._waiting_on
        if future is not None and waiting_on is not None:
            # Unregister before the fd is closed (its number may be reused at once).
            forget(waiting_on[0], waiting_on[1], False, future)
            if not future.done():
                future.set_result(None)
        return self._held()

    def __del__(self) -> None:
        _close_all(self._held())


class FdStreamWriter:
    """asyncio's ``StreamWriter`` for a Unix stream socket, with fds.

    ``write(data, fds=...)`` never blocks: what the kernel does not take at
    once is buffered and sent as the socket drains; ``await drain()`` waits
    while the buffer is above its high-water mark.  Closing the writer
    closes the socket (after the buffer is sent) and every fd the reader
    still holds.
    """

    def __init__(self, sock: socket.socket, reader: FdStreamReader | None) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._reader = reader
        self._loop = asyncio.get_running_loop()
        # Each item: [bytes still to send, duplicated fds to send with them or None].
        self._queue: Deque[List[Any]] = deque()
        self._buffered = 0
        self._paused = False
        self._drain_waiters: List[asyncio.Future[None]] = []
        self._writable: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._eof = False
        self._closing = False
        self._closed: asyncio.Future[None] = self._loop.create_future()

    # -- writing ------------------------------------------------------------------

    def write(self, data: Any, fds: Any = ()) -> None:
        """Send *data*, with *fds* on its first byte; buffer what cannot go now.

        The fds stay the caller's, who may close them as soon as this
        returns: those the kernel did not take at once are duplicated here
        (``F_DUPFD_CLOEXEC``) and the duplicates are closed once sent.  (As
        with any close, closing a duplicate drops the process's POSIX record
        locks on that file.)  Raises at once, sending nothing, for bad fds
        (``TypeError``, ``OSError`` ``EBADF``), more than ``SCM_MAX_FD`` fds
        (``EINVAL``) or fds without data (``ValueError``: a stream socket
        carries fds only with bytes).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        fd_list = list(fds)
        for fd in fd_list:
            if not isinstance(fd, int):
                raise TypeError(f"fds must be ints, not {type(fd).__name__}")
        if len(fd_list) > SCM_MAX_FD:
            raise OSError(errno.EINVAL, f"more than SCM_MAX_FD ({SCM_MAX_FD}) fds in one write")
        if fd_list and not len(data):
            raise ValueError("a stream socket carries fds only with data: write at least one byte")
        self._check_writable()
        if not len(data):
            return
        sent = 0
        if not self._queue:
            try:
                sent = _send_fds(self._sock, (data,), fd_list, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if _is_connection_error(exc):
                    self._fail(exc)
                raise
            if sent == len(data):
                return
            if sent:
                fd_list = []  # they went with the first byte
        dups = _dup_all(fd_list) if fd_list else None
        self._queue.append([bytes(memoryview(data)[sent:]), dups])
        self._buffered += len(data) - sent
        if self._buffered > _HIGH_WATER:
            self._paused = True
        self._watch()

    def writelines(self, data: Any) -> None:
        """``write`` each bytes object of *data* (no fds)."""
        for chunk in data:
            self.write(chunk)

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise RuntimeError("write() after close()")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")

    def _watch(self) -> None:
        if self._writable is None:
            future = when_ready(self._loop, self._fd, True)
            future.add_done_callback(self._on_writable)
            self._writable = future

    def _unwatch(self) -> None:
        future, self._writable = self._writable, None
        if future is not None:
            forget(self._loop, self._fd, True, future)
            future.cancel()

    def _on_writable(self, future: asyncio.Future[None]) -> None:
        if future is not self._writable:
            return  # unwatched meanwhile
        self._writable = None
        self._flush()

    def _flush(self) -> None:
        """Send from the head of the queue until it is empty or the socket is full."""
        queue = self._queue
        while queue:
            head = queue[0]
            if head[1] is not None:
                buffers = [head[0]]  # fds: a sendmsg of its own, starting at this byte
            else:
                buffers = []
                size = 0
                for item in queue:
                    if item[1] is not None or size >= _COALESCE:
                        break
                    buffers.append(item[0])
                    size += len(item[0])
            try:
                sent = _send_fds(self._sock, buffers, head[1] or (), _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._fail(exc)
                return
            if head[1] is not None:
                _close_all(head[1])  # the kernel holds its own references now
                head[1] = None
            self._buffered -= sent
            while sent:
                item = queue[0]
                if sent >= len(item[0]):
                    sent -= len(item[0])
                    queue.popleft()
                else:
                    item[0] = item[0][sent:]
                    sent = 0
            if queue:
                break  # the kernel took less than offered: the socket is full
        if self._paused and self._buffered <= _LOW_WATER:
            self._paused = False
            self._wake_drainers()
        if queue:
            self._watch()
            return
        if self._closing:
            self._finish_close()
        elif self._eof:
            self._shutdown()

    def _fail(self, exc: BaseException) -> None:
        """A connection error: nothing more can be sent; drop the buffer."""
        if self._error is None:
            self._error = exc
        self._drop_queue()
        self._wake_drainers()
        if self._closing:
            self._finish_close()

    def _drop_queue(self) -> None:
        self._unwatch()
        for _data, dups in self._queue:
            if dups:
                _close_all(dups)
        self._queue.clear()
        self._buffered = 0
        self._paused = False

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark; raise a connection error."""
        while True:
            if self._error is not None:
                raise self._error
            if self._closed.done():
                raise ConnectionResetError("Connection lost")
            if not self._paused:
                return
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._drain_waiters:
                    self._drain_waiters.remove(waiter)

    def write_eof(self) -> None:
        """Shut down the sending side once the buffer is sent (``shutdown(SHUT_WR)``)."""
        if self._eof or self._closing:
            return
        self._eof = True
        if not self._queue:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fail(exc)

    def can_write_eof(self) -> bool:
        return True

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Close the stream once the buffer is sent; ``wait_closed()`` waits for it."""
        if self._closing:
            return
        self._closing = True
        if not self._queue:
            self._finish_close()

    def abort(self) -> None:
        """Close now, dropping the buffer (buffered fds are closed unsent)."""
        self._closing = True
        self._drop_queue()
        self._finish_close()

    def _finish_close(self) -> None:
        if self._closed.done():
            return
        self._drop_queue()
        held = self._reader._connection_closing() if self._reader is not None else []
        self._sock.close()
        self._closed.set_result(None)
        self._wake_drainers()
        _close_all(held)
        if held:  # last: a warnings filter may turn this into an exception
            warnings.warn(f"closed {len(held)} received fd(s) that were never taken "
                          f"(FdStreamReader.take_fds)", ResourceWarning, stacklevel=3)

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        """Wait until the socket is closed."""
        await asyncio.shield(self._closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"socket"``, ``"sockname"``, ``"peername"`` as asyncio's transports give them."""
        try:
            if name == "socket":
                return self._sock
            if name == "sockname":
                return self._sock.getsockname()
            if name == "peername":
                return self._sock.getpeername()
        except OSError:
            pass
        return default

    def __del__(self) -> None:
        for _data, dups in getattr(self, "_queue", ()):
            if dups:
                _close_all(dups)


def _is_connection_error(exc: OSError) -> bool:
    """Errors that end the connection, as opposed to a bad argument of one write."""
    return isinstance(exc, ConnectionError) or exc.errno in (errno.ENOTCONN, errno.ESHUTDOWN)


def _dup_all(fds: List[int]) -> List[int]:
    """Close-on-exec duplicates of *fds*; on error none is left open."""
    dups: List[int] = []
    try:
        for fd in fds:
            dups.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0))
    except BaseException:
        _close_all(dups)
        raise
    return dups


def _streams(sock: socket.socket, limit: int, cloexec: bool) -> Tuple[FdStreamReader,
                                                                       FdStreamWriter]:
    reader = FdStreamReader(sock, limit, cloexec=cloexec)
    return reader, FdStreamWriter(sock, reader)


async def open_unix_connection(path: StrPath | None = None, *,
                               sock: socket.socket | None = None, limit: int = _DEFAULT_LIMIT,
                               cloexec: bool = True) -> Tuple[FdStreamReader, FdStreamWriter]:
    """Connect to the Unix stream socket at *path* (or use the connected *sock*).

    Returns ``(reader, writer)``; the streams own the socket from then on
    (``writer.close()`` closes it).  ``sock=`` suits ``socketpair()`` ends.
    """
    if sock is not None:
        if path is not None:
            raise ValueError("path and sock can not be specified at the same time")
        _check_stream_socket(sock)
        sock.setblocking(False)
        return _streams(sock, limit, cloexec)
    if path is None:
        raise ValueError("no path and no sock specified")
    address = os.fspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        delay = 0.001
        while True:
            try:
                sock.connect(address)
                break
            except InterruptedError:
                continue
            except BlockingIOError:
                # AF_UNIX: the listener's backlog is full.  There is no readiness
                # to wait for (the socket is not connecting): try again shortly.
                await asyncio.sleep(delay)
                delay = min(delay * 2, _CONNECT_RETRY_MAX)
        return _streams(sock, limit, cloexec)
    except BaseException:
        sock.close()
        raise


class FdServer:
    """A listening Unix stream socket handing each connection to a callback.

    Shaped like ``asyncio.Server``: ``close()``, ``wait_closed()``,
    ``serve_forever()``, ``start_serving()``, ``is_serving()``, ``sockets``,
    ``async with``.  Closing stops accepting and closes the listening socket
    (and removes its path if it is still the one bound); connections
    already accepted carry on.
    """

    def __init__(self, sock: socket.socket, client_connected_cb: ClientConnected, limit: int,
                 cloexec: bool, bound: Tuple[str | bytes, int] | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = sock
        self._callback = client_connected_cb
        self._limit = limit
        self._cloexec = cloexec
        self._bound = bound  # (path, inode) to unlink on close
        self._accepting: asyncio.Task[None] | None = None
        self._handlers: Set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._serving_forever: asyncio.Future[None] | None = None

    @property
    def sockets(self) -> Tuple[socket.socket, ...]:
        return () if self._sock is None else (self._sock,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._accepting is not None and not self._accepting.done()

    async def start_serving(self) -> None:
        """Start accepting connections (``start_unix_server`` does it by default)."""
        self._start()
        await asyncio.sleep(0)

    def _start(self) -> None:
        if self._sock is None:
            raise RuntimeError("the server is closed")
        if self._accepting is None:
            self._accepting = self._loop.create_task(self._accept_loop(self._sock))
            self._accepting.add_done_callback(self._accept_loop_done)

    async def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _address = await call_when_ready(sock, False, sock.accept)
            except ConnectionAbortedError:
                continue  # the client gave up before it was accepted
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: let handlers finish, as asyncio does.
                    self._loop.call_exception_handler({
                        "message": "rawsys.aio server: accept() failed; retrying in 1 s",
                        "exception": exc})
                    await asyncio.sleep(1)
                    continue
                raise
            self._connection_made(conn)
            await asyncio.sleep(0)  # let the handler start; a flood cannot starve the loop

    def _connection_made(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            reader, writer = _streams(conn, self._limit, self._cloexec)
        except BaseException:
            conn.close()
            raise
        try:
            result = self._callback(reader, writer)
        except Exception as exc:
            self._handler_failed(exc, writer)
            return
        if asyncio.iscoroutine(result):
            task = self._loop.create_task(result)
            self._handlers.add(task)
            task.add_done_callback(lambda done: self._handler_done(done, writer))

    def _handler_done(self, task: asyncio.Task[None], writer: FdStreamWriter) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._handler_failed(task.exception(), writer)
        self._maybe_done()

    def _handler_failed(self, exc: BaseException | None, writer: FdStreamWriter) -> None:
        self._loop.call_exception_handler({
            "message": "Unhandled exception in client_connected_cb", "exception": exc})
        writer.abort()

    def _accept_loop_done(self, task: asyncio.Task[None]) -> None:
        # The loop's finally has unregistered the socket: closing it now is safe.
        if not task.cancelled() and task.exception() is not None:
            self._loop.call_exception_handler({
                "message": "rawsys.aio server: accept loop failed",
                "exception": task.exception()})
        self._close_socket()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        if self._bound is not None:
            path, inode = self._bound
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._sock is None and not self._handlers and not self._done.done():
            self._done.set_result(None)

    def close(self) -> None:
        """Stop accepting and close the listening socket (connections carry on)."""
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()
        if self._accepting is not None and not self._accepting.done():
            self._accepting.cancel()  # the socket closes when the task has stopped
        elif self._accepting is None:
            self._close_socket()

    async def wait_closed(self) -> None:
        """Wait until the listening socket is closed and every handler coroutine has ended."""
        await asyncio.shield(self._done)

    async def serve_forever(self) -> None:
        """Accept until cancelled; then close the server."""
        if self._serving_forever is not None:
            raise RuntimeError("the server is already being awaited on serve_forever()")
        self._start()
        forever = self._serving_forever = self._loop.create_future()
        try:
            await forever  # only ever cancelled: by the caller or by close()
        except asyncio.CancelledError:
            self._serving_forever = None
            self.close()
            await self.wait_closed()
            raise

    async def __aenter__(self) -> FdServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


def _is_abstract(address: str | bytes) -> bool:
    return address[:1] in ("\0", b"\0")


async def start_unix_server(client_connected_cb: ClientConnected, path: StrPath | None = None,
                            *, sock: socket.socket | None = None, limit: int = _DEFAULT_LIMIT,
                            backlog: int = 100, start_serving: bool = True,
                            cloexec: bool = True) -> FdServer:
    """Listen on *path* (or the listening *sock*); call *client_connected_cb(reader, writer)*.

    As ``asyncio.start_unix_server``: the callback may be a coroutine
    function (run as a task); an exception from it is reported to the
    loop's exception handler and aborts that connection.  A stale socket
    file at *path* is replaced.  The server owns the listening socket.
    """
    bound: Tuple[str | bytes, int] | None = None
    if sock is None:
        if path is None:
            raise ValueError("no path and no sock specified")
        address = os.fspath(path)
        if not _is_abstract(address):
            try:
                if stat.S_ISSOCK(os.stat(address).st_mode):
                    os.remove(address)
            except FileNotFoundError:
                pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            if not _is_abstract(address):
                bound = (address, os.stat(address).st_ino)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    else:
        if path is not None:
            raise ValueError("path and sock can not be specified at the same time")
        _check_stream_socket(sock)
        sock.setblocking(False)
    server = FdServer(sock, client_connected_cb, limit, cloexec, bound)
    if start_serving:
        await server.start_serving()
    return server


__all__ = ["FdStreamReader", "FdStreamWriter", "FdServer", "open_unix_connection",
           "start_unix_server"]
