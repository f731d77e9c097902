"""asyncio versions of rawsys's descriptor-passing calls, and streams that carry fds.

Each coroutine does what its blocking twin in ``rawsys`` does on a blocking
socket -- same arguments, same results, same errors, same ownership -- without
blocking the event loop: it makes the call with ``MSG_DONTWAIT`` at once, and
while the kernel answers ``EAGAIN`` it waits for the socket through the
running loop's ``add_reader``/``add_writer`` and calls again.  Any loop with
``add_reader``/``add_writer`` works (the default selector loop, uvloop).

* The socket must be non-blocking (``sock.setblocking(False)``), as for
  ``loop.sock_recv``; a blocking socket object raises ``ValueError`` (asyncio
  checks this only in debug mode; rawsys always does).  An int fd is accepted
  in any mode: ``MSG_DONTWAIT`` keeps every call from blocking.
* Received fds are the caller's and close-on-exec unless ``cloexec=False``;
  ``MSG_CTRUNC`` raises ``ControlTruncatedError`` owning the fds that arrived.
* Sent fds stay the caller's; once a send coroutine returns the kernel holds
  its own references, so the caller may close them.
* Cancellation (``task.cancel()``, ``asyncio.wait_for``, ``asyncio.timeout``)
  leaks no fd and leaves no reader or writer registered.  A receiving
  coroutine is suspended only *before* its ``recvmsg``: cancelled there, it
  has received nothing, and a message that arrived meanwhile stays queued in
  the socket for the next receive.  Between the ``recvmsg`` that installs fds
  and the return that hands them over there is no ``await``, so no
  cancellation can fall in between.
* Several coroutines may wait on one socket at once (e.g. workers sharing a
  datagram socket): each message goes to exactly one of them.

On a ``SOCK_STREAM`` socket ``send_fds`` sends all of the data, as a blocking
socket does (the fds travel with its first byte); if it is cancelled after
part of the data went out, the peer has that part and the fds, and the byte
stream is out of step: close the connection.  For byte streams with fds the
streams below are the better tool.

Streams: ``open_unix_connection``/``start_unix_server`` give an
``FdStreamReader``/``FdStreamWriter`` pair shaped like asyncio's streams;
``writer.write(data, fds=[...])`` sends fds with bytes and
``reader.take_fds()``/``reader.read_with_fds(n)`` return the fds that came
with the bytes read.  See ``rawsys.aio_streams``.
"""

from __future__ import annotations

import errno
import socket as _socket
from functools import partial
from typing import Any, Iterable, List, Sequence, Tuple

from rawsys import ControlMessage, Message, ScmRights
from rawsys import recv_fds as _recv_fds
from rawsys import recv_fds_batch as _recv_fds_batch
from rawsys import recv_message as _recv_message
from rawsys import send_fds as _send_fds
from rawsys import send_fds_batch as _send_fds_batch
from rawsys import send_message as _send_message
from rawsys._readiness import call_when_ready, check_nonblocking, fd_of
from rawsys.aio_streams import (
    FdServer,
    FdStreamReader,
    FdStreamWriter,
    open_unix_connection,
    start_unix_server,
)
from rawsys.errors import Received

_MSG_DONTWAIT = _socket.MSG_DONTWAIT


def _nonblocking_flags(sock: Any, flags: Any) -> int:
    """*flags* with ``MSG_DONTWAIT``, after the checks asyncio's ``sock_*`` methods make."""
    check_nonblocking(sock)
    if not isinstance(flags, int):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    return flags | _MSG_DONTWAIT


def _socket_type(sock: Any) -> int:
    """``SO_TYPE`` of *sock* (a socket object, an int fd or anything with ``fileno()``)."""
    if isinstance(sock, _socket.socket):
        return int(sock.type)
    probe = _socket.socket(fileno=fd_of(sock))  # reads family and type from the kernel
    try:
        return int(probe.type)
    finally:
        probe.detach()  # the fd stays the caller's


async def _send_all(sock: Any, data: bytes, send: Any, control: Any, carries_fds: bool,
                    flags: int, address: Any) -> int:
    """Send *data* with its control data, then the rest of the data without it.

    One ``sendmsg`` carries the control data (the fds go with its first byte);
    on a stream socket the kernel may take only part of the data, and the
    rest follows with plain sends.  Datagram sockets send all or nothing.
    """
    if not data and carries_fds and _socket_type(sock) == _socket.SOCK_STREAM:
        # The kernel would return 0 and drop the fds without a word.
        raise ValueError("a stream socket carries fds only with data: send at least one byte")
    sent: int = await call_when_ready(sock, True, partial(send, sock, (data,), control,
                                                          flags, address))
    total = len(data)
    if sent < total:
        view = memoryview(data)
        while sent < total:
            sent += await call_when_ready(sock, True, partial(
                _send_fds, sock, (view[sent:],), (), flags, address))
    return sent


async def send_fds(sock: Any, buffers: Iterable[Any], fds: Iterable[int], flags: int = 0,
                   address: Any = None) -> int:
    """Send *fds* with the data in *buffers*; return the number of bytes sent.

    ``rawsys.send_fds`` for asyncio.  The fds stay the caller's (closing
    them once this returns is safe).  On a ``SOCK_STREAM`` socket all of the
    data is sent, as on a blocking socket, and empty data with fds raises
    ``ValueError`` (the kernel would drop the fds silently).
    """
    flags = _nonblocking_flags(sock, flags)
    data = b"".join(buffers)
    fd_list = fds if type(fds) is list or type(fds) is tuple else list(fds)
    return await _send_all(sock, data, _send_fds, fd_list, bool(fd_list), flags, address)


async def recv_fds(sock: Any, bufsize: int, maxfds: int, flags: int = 0, *,
                   cloexec: bool = True) -> Received:
    """Receive up to *maxfds* fds and up to *bufsize* bytes; ``(msg, fds, msg_flags, address)``.

    ``rawsys.recv_fds`` for asyncio: waits until a message (or EOF) is there.
    The fds are the caller's, close-on-exec unless ``cloexec=False``;
    ``MSG_CTRUNC`` raises ``ControlTruncatedError`` holding what arrived.
    """
    flags = _nonblocking_flags(sock, flags)
    return await call_when_ready(sock, False, partial(_recv_fds, sock, bufsize, maxfds, flags,
                                                      cloexec=cloexec))


async def send_fd(sock: Any, fd: int) -> int:
    """Send *fd* with one byte of data (``b"x"``), the classic ``send_fd``; return 1.

    *fd* stays the caller's.
    """
    return await send_fds(sock, (b"x",), (fd,))


async def recv_fd(sock: Any) -> int:
    """Receive one message and return its one fd (the caller closes it); the classic ``recv_fd``.

    Raises ``ControlTruncatedError`` if more than one fd came (all closed
    unless taken), and ``OSError(EBADMSG)`` if the message carried none
    (also at end of file).
    """
    _msg, fds, _flags, _address = await recv_fds(sock, 1, 1)
    if not fds:
        raise OSError(errno.EBADMSG, "recv_fd: the message carried no file descriptor")
    return fds[0]


async def send_fds_batch(sock: Any, items: Iterable[Tuple[Iterable[Any], Iterable[int]]],
                         flags: int = 0) -> int:
    """Send each ``(buffers, fds)`` of *items* as one message with ``sendmmsg``.

    ``rawsys.send_fds_batch`` for asyncio: waits until the kernel takes at
    least one message and returns how many it took (send the rest again).
    Only for message sockets (``SOCK_DGRAM``, ``SOCK_SEQPACKET``): on a
    stream socket ``sendmmsg`` may send part of one message and go on with
    the next, so a stream socket raises ``ValueError``.  The fds stay the
    caller's.
    """
    flags = _nonblocking_flags(sock, flags)
    if _socket_type(sock) == _socket.SOCK_STREAM:
        raise ValueError("send_fds_batch needs a SOCK_DGRAM or SOCK_SEQPACKET socket: on a "
                         "stream socket sendmmsg may send part of a message and go on")
    # Materialised once: a retry after EAGAIN must see the same messages.
    messages = [((b"".join(buffers),), list(fds)) for buffers, fds in items]
    if not messages:
        return 0
    return await call_when_ready(sock, True, partial(_send_fds_batch, sock, messages, flags))


async def recv_fds_batch(sock: Any, count: int, bufsize: int, maxfds: int, flags: int = 0, *,
                         cloexec: bool = True) -> List[Received]:
    """Receive up to *count* messages with one ``recvmmsg``; ``recv_fds`` tuples each.

    ``rawsys.recv_fds_batch`` for asyncio: waits for one message, then takes
    whatever else is queued (``MSG_WAITFORONE``).  The fds are the caller's;
    ``MSG_CTRUNC`` in any message raises ``ControlTruncatedError`` holding
    every message of the call.
    """
    flags = _nonblocking_flags(sock, flags)
    return await call_when_ready(sock, False, partial(
        _recv_fds_batch, sock, count, bufsize, maxfds, flags, cloexec=cloexec))


async def send_message(sock: Any, buffers: Iterable[Any],
                       control: Sequence[ControlMessage] = (), flags: int = 0,
                       address: Any = None) -> int:
    """``rawsys.send_message`` for asyncio: send *buffers* with the control messages *control*.

    Returns the bytes sent; on a stream socket all of them, the control data
    with the first byte.  Descriptors in ``ScmRights`` stay the caller's.
    """
    flags = _nonblocking_flags(sock, flags)
    data = b"".join(buffers)
    control = list(control)
    carries_fds = any(isinstance(item, ScmRights) and item.fds for item in control)
    return await _send_all(sock, data, _send_message, control, carries_fds, flags, address)


async def recv_message(sock: Any, bufsize: int, maxfds: int = 0, flags: int = 0, *,
                       credentials: bool = False, pidfd: bool = False, extra_control: int = 0,
                       cloexec: bool = True) -> Message:
    """``rawsys.recv_message`` for asyncio: one message and everything that came with it.

    ``Message.fds`` and ``Message.pidfd`` are the caller's; ``MSG_CTRUNC``
    raises ``ControlTruncatedError`` holding what arrived.
    """
    flags = _nonblocking_flags(sock, flags)
    return await call_when_ready(sock, False, partial(
        _recv_message, sock, bufsize, maxfds, flags, credentials=credentials, pidfd=pidfd,
        extra_control=extra_control, cloexec=cloexec))


__all__ = [
    "send_fds", "recv_fds", "send_fd", "recv_fd", "send_fds_batch", "recv_fds_batch",
    "send_message", "recv_message",
    "open_unix_connection", "start_unix_server", "FdStreamReader", "FdStreamWriter", "FdServer",
]
