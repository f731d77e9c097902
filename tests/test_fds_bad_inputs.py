"""Bad inputs to the fd-passing layer: each with the exception (and errno) it must raise."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Type

import pytest

from rawsys import (
    FdPassingUnsupportedError,
    ScmCredentials,
    ScmRights,
    recv_fd,
    recv_fds,
    recv_fds_batch,
    recv_message,
    send_credentials,
    send_fds,
    send_fds_batch,
    send_message,
    set_passcred,
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")


@dataclass
class World:
    """Sockets and fds a bad call is made against; everything closed afterwards."""

    to_close: List[Any] = field(default_factory=list)

    def keep(self, obj: Any) -> Any:
        self.to_close.append(obj)
        return obj

    def pair(self, kind: int = socket.SOCK_DGRAM) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
        return self.keep(a), self.keep(b)

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.keep(r)
        self.keep(w)
        return r, w

    def udp_unconnected(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.keep(s)
        return s

    def udp6(self) -> socket.socket:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as exc:  # pragma: no cover - a kernel without IPv6
            pytest.skip(f"no AF_INET6 sockets here: {exc}")
        self.keep(s)
        return s

    def closed_fd(self) -> int:
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        return r

    def udp(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.keep(s)
        s.bind(("127.0.0.1", 0))
        s.connect(s.getsockname())
        return s

    def close(self) -> None:
        for obj in self.to_close:
            if isinstance(obj, int):
                try:
                    os.close(obj)
                except OSError:
                    pass
            else:
                obj.close()


@dataclass
class Case:
    name: str
    call: Callable[[World], Any]
    exception: Type[BaseException]
    errno: int | None = None


def _peer_gone(w: World) -> Any:
    a, b = w.pair()
    b.close()
    return send_fds(a, [b"x"], [w.pipe()[0]])


def _stream_peer_gone(w: World) -> Any:
    a, b = w.pair(socket.SOCK_STREAM)
    b.close()
    return send_fds(a, [b"x"], [w.pipe()[0]])


def _unconnected(w: World) -> Any:
    s = w.keep(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    return send_fds(s, [b"x"], [w.pipe()[0]])


def _closed_socket_send(w: World) -> Any:
    a, _b = w.pair()
    a.close()
    return send_fds(a, [b"x"], [w.pipe()[0]])


def _closed_socket_recv(w: World) -> Any:
    _a, b = w.pair()
    b.close()
    return recv_fds(b, 1, 1)


def _netlink(w: World) -> Any:
    s = w.keep(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
    return send_fds(s, [bytes(16)], [w.pipe()[0]])


def _no_fd_in_message(w: World) -> Any:
    a, b = w.pair()
    a.send(b"x")
    return recv_fd(b)


CASES = [
    Case("fd -1", lambda w: send_fds(w.pair()[0], [b"x"], [-1]), OSError, errno.EBADF),
    Case("closed fd", lambda w: send_fds(w.pair()[0], [b"x"], [w.closed_fd()]), OSError,
         errno.EBADF),
    Case("254 fds (SCM_MAX_FD is 253)",
         lambda w: send_fds(w.pair()[0], [b"x"], [w.pipe()[0]] * 254), OSError, errno.EINVAL),
    Case("many fds (1000)", lambda w: send_fds(w.pair()[0], [b"x"], [w.pipe()[0]] * 1000),
         OSError, None),
    Case("send on a non-socket fd", lambda w: send_fds(w.pipe()[1], [b"x"], [0]), OSError,
         errno.ENOTSOCK),
    Case("recv on a non-socket fd", lambda w: recv_fds(w.pipe()[0], 1, 1), OSError,
         errno.ENOTSOCK),
    Case("fds over AF_INET UDP (kernel would drop them)",
         lambda w: send_fds(w.udp(), [b"x"], [w.pipe()[0]]), FdPassingUnsupportedError,
         errno.EOPNOTSUPP),
    Case("fds over AF_INET UDP given as an int fd",
         lambda w: send_fds(w.udp().fileno(), [b"x"], [w.pipe()[0]]),
         FdPassingUnsupportedError, errno.EOPNOTSUPP),
    Case("fds over AF_NETLINK", _netlink, OSError, errno.EINVAL),
    Case("dgram peer gone", _peer_gone, ConnectionRefusedError, errno.ECONNREFUSED),
    Case("stream peer gone", _stream_peer_gone, BrokenPipeError, errno.EPIPE),
    Case("unconnected socket, no address", _unconnected, OSError, errno.ENOTCONN),
    Case("send to a path nobody bound",
         lambda w: send_fds(w.keep(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)), [b"x"],
                            [w.pipe()[0]], 0, "/nonexistent/rawsys.sock"),
         FileNotFoundError, errno.ENOENT),
    Case("AF_UNIX path too long",
         lambda w: send_fds(w.pair()[0], [b"x"], [w.pipe()[0]], 0, "/" + "x" * 200),
         OSError, errno.ENAMETOOLONG),
    Case("address of the wrong type", lambda w: send_fds(w.pair()[0], [b"x"], [0], 0, 42),
         TypeError),
    Case("closed socket object, send", _closed_socket_send, OSError, errno.EBADF),
    Case("closed socket object, recv", _closed_socket_recv, OSError, errno.EBADF),
    Case("negative maxfds", lambda w: recv_fds(w.pair()[1], 1, -1), OverflowError),
    Case("huge maxfds", lambda w: recv_fds(w.pair()[1], 1, 2**40), OverflowError),
    Case("maxfds not an int", lambda w: recv_fds(w.pair()[1], 1, "1"),  # type: ignore[arg-type]
         TypeError),
    Case("negative bufsize", lambda w: recv_fds(w.pair()[1], -1, 1), ValueError),
    Case("bufsize a float", lambda w: recv_fds(w.pair()[1], 1.5, 1),  # type: ignore[arg-type]
         TypeError),
    Case("an fd that is a str", lambda w: send_fds(w.pair()[0], [b"x"], ["3"]),  # type: ignore[list-item]
         TypeError),
    Case("an fd beyond int", lambda w: send_fds(w.pair()[0], [b"x"], [2**40]), OverflowError),
    Case("a buffer that is a str", lambda w: send_fds(w.pair()[0], ["x"], [0]), TypeError),
    Case("sock is a str", lambda w: send_fds("sock", [b"x"], [0]), TypeError),
    Case("sock is None", lambda w: recv_fds(None, 1, 1), TypeError),
    Case("sock an int beyond C int (ctypes would truncate it to fd 0)",
         lambda w: send_fds(2**32, [b"x"], [0]), OverflowError),
    Case("flags beyond C int", lambda w: recv_fds(w.pair()[1], 1, 1, 2**33), OverflowError),
    Case("flags not an int, send",
         lambda w: send_fds(w.pair()[0], [b"x"], [0], "0"),  # type: ignore[arg-type]
         TypeError),
    Case("flags not an int, recv",
         lambda w: recv_fds(w.pair()[1], 1, 1, "0"),  # type: ignore[arg-type]
         TypeError),
    Case("nothing queued with MSG_DONTWAIT",
         lambda w: recv_fds(w.pair()[1], 1, 1, socket.MSG_DONTWAIT), BlockingIOError,
         errno.EAGAIN),
    Case("recv_fd of a message without fd", _no_fd_in_message, OSError, errno.EBADMSG),
    Case("batch: bad fd in the first message",
         lambda w: send_fds_batch(w.pair()[0], [([b"x"], [-1])]), OSError, errno.EBADF),
    Case("batch: negative count", lambda w: recv_fds_batch(w.pair()[1], -1, 1, 1), ValueError),
    # Each of these once gave struct.error, IndexError or ctypes.ArgumentError,
    # or a wrong result; now what CPython raises in the same case.
    Case("fds a 3-byte bytes (array('i', b'...') needs whole ints)",
         lambda w: send_fds(w.pair()[0], [b"x"], b"\x00\x00\x00"), ValueError),
    Case("fds a str", lambda w: send_fds(w.pair()[0], [b"x"], "ab"),  # type: ignore[arg-type]
         TypeError),
    Case("fds None", lambda w: send_fds(w.pair()[0], [b"x"], None),  # type: ignore[arg-type]
         TypeError),
    Case("an fd a float, in a tuple with a good one",
         lambda w: send_fds(w.pair()[0], [b"x"], (w.pipe()[0], 1.5)),  # type: ignore[arg-type]
         TypeError),
    Case("flags None with 300 fds (once a raw ctypes.ArgumentError)",
         lambda w: send_fds(w.pair()[0], [b"x"], [w.pipe()[0]] * 300, None),  # type: ignore[arg-type]
         TypeError),
    Case("flags None, one fd",
         lambda w: send_fds(w.pair()[0], [b"x"], [w.pipe()[0]], None),  # type: ignore[arg-type]
         TypeError),
    Case("flags None, recv", lambda w: recv_fds(w.pair()[1], 1, 1, None),  # type: ignore[arg-type]
         TypeError),
    Case("bufsize beyond ssize_t", lambda w: recv_fds(w.pair()[1], 2**63, 1), OverflowError),
    Case("AF_INET port beyond 65535 (once delivered to port p)",
         lambda w: send_fds(w.udp_unconnected(), [b"x"], [], 0, ("127.0.0.1", 65536 + 9)),
         OverflowError),
    Case("AF_INET negative port",
         lambda w: send_fds(w.udp_unconnected(), [b"x"], [], 0, ("127.0.0.1", -1)),
         OverflowError),
    Case("AF_INET port a str",
         lambda w: send_fds(w.udp_unconnected(), [b"x"], [], 0, ("127.0.0.1", "9")),
         TypeError),
    Case("AF_INET address () (once IndexError)",
         lambda w: send_fds(w.udp_unconnected(), [b"x"], [], 0, ()), TypeError),
    Case("AF_INET address without a port",
         lambda w: send_fds(w.udp_unconnected(), [b"x"], [], 0, ("127.0.0.1",)), TypeError),
    Case("AF_UNIX address ()", lambda w: send_fds(w.pair()[0], [b"x"], [], 0, ()), TypeError),
    Case("AF_INET6 flowinfo 2**40 (once struct.error)",
         lambda w: send_fds(w.udp6(), [b"x"], [], 0, ("::1", 9, 2**40)), OverflowError),
    Case("AF_INET6 scope_id 2**40",
         lambda w: send_fds(w.udp6(), [b"x"], [], 0, ("::1", 9, 0, 2**40)), OverflowError),
    Case("send_message: ScmRights(('3',)) (once struct.error)",
         lambda w: send_message(w.pair()[0], [b"x"], [ScmRights(("3",))]),  # type: ignore[arg-type]
         TypeError),
    Case("send_message: ScmRights((2**40,))",
         lambda w: send_message(w.pair()[0], [b"x"], [ScmRights((2**40,))]), OverflowError),
    Case("send_message: ScmCredentials('1', 0, 0)",
         lambda w: send_message(w.pair()[0], [b"x"],
                                [ScmCredentials("1", 0, 0)]),  # type: ignore[arg-type]
         TypeError),
    Case("send_message: ScmCredentials pid 2**40",
         lambda w: send_message(w.pair()[0], [b"x"], [ScmCredentials(2**40, 0, 0)]),
         OverflowError),
    Case("send_credentials: ScmCredentials(-1, -1, -1) (uid_t is unsigned)",
         lambda w: send_credentials(w.pair()[0], [b"x"], ScmCredentials(-1, -1, -1)),
         OverflowError),
    Case("send_credentials: fds [2**40]",
         lambda w: send_credentials(w.pair()[0], [b"x"], None, [2**40]), OverflowError),
    Case("send_message: AF_INET port beyond 65535",
         lambda w: send_message(w.udp_unconnected(), [b"x"], [], 0, ("127.0.0.1", 70000)),
         OverflowError),
    Case("set_passcred 2**32 (once turned SO_PASSCRED off)",
         lambda w: set_passcred(w.pair()[0], 2**32), OverflowError),
    Case("recv_message: maxfds 2**40", lambda w: recv_message(w.pair()[1], 1, 2**40),
         OverflowError),
    Case("recv_message: bufsize a str",
         lambda w: recv_message(w.pair()[1], "1", 1),  # type: ignore[arg-type]
         TypeError),
    Case("batch: count 0 does not skip the bufsize check",
         lambda w: recv_fds_batch(w.pair()[1], 0, 2**63, 1), OverflowError),
    Case("batch: an item's fds [None]",
         lambda w: send_fds_batch(w.pair()[0], [([b"x"], [None])]),  # type: ignore[list-item]
         TypeError),
    Case("batch: an item's fds a 3-byte bytes",
         lambda w: send_fds_batch(w.pair()[0], [([b"x"], b"\x00\x00\x00")]), ValueError),
    Case("batch: fds over AF_INET UDP",
         lambda w: send_fds_batch(w.udp(), [([b"x"], [w.pipe()[0]])]),
         FdPassingUnsupportedError, errno.EOPNOTSUPP),
]


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 20


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, world: World) -> None:
    with pytest.raises(case.exception) as info:
        case.call(world)
    if case.errno is not None:
        assert isinstance(info.value, OSError)
        assert info.value.errno == case.errno, os.strerror(info.value.errno or 0)


def test_kernel_drops_scm_rights_on_af_inet_udp(world: World) -> None:
    """Why rawsys refuses: CPython's send_fds 'succeeds' and the fd never arrives."""
    s = world.udp()
    r, _w = world.pipe()
    assert socket.send_fds(s, [b"x"], [r]) == 1
    msg, ancdata, _flags, _addr = s.recvmsg(8, socket.CMSG_SPACE(4))
    assert msg == b"x" and ancdata == []


def test_failing_send_leaves_nothing_queued(world: World) -> None:
    a, b = world.pair()
    with pytest.raises(OSError):
        send_fds(a, [b"x"], [world.pipe()[0], -1])
    with pytest.raises(BlockingIOError):
        recv_fds(b, 1, 2, socket.MSG_DONTWAIT)
