"""Arguments checked before shared state, results as CPython's, truncation errors that copy.

* A rejected call never changes what a later call sends (the pooled buffers
  are written only after every argument is known good).
* fds given as bytes-like objects mean what CPython's ``array("i", fds)`` makes
  of them.
* Edge cases that once gave wrong results: SO_PASSCRED with recv_fds_batch, a
  pidfd the kernel could not install, ``set_passcred(sock, 2**32)``.
* ``ControlTruncatedError`` survives ``copy.copy`` and pickle, owning nothing.
"""

from __future__ import annotations

import array
import contextlib
import copy
import errno
import gc
import os
import pickle
import resource
import socket
import sys
from typing import Any, Callable, Iterator, List, Tuple

import pytest

import rawsys
from rawsys.control import RIGHTS1_HEADER, build_control, received_fds

pytestmark = pytest.mark.usefixtures("fd_leak_check")

Pair = Tuple[socket.socket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)  # CPython's recv_fds ignores MSG_DONTWAIT: never wait in a test
    yield a, b
    a.close()
    b.close()


def _inodes(fds: List[int]) -> List[int]:
    return [os.fstat(fd).st_ino for fd in fds]


def _receive_all(b: socket.socket) -> List[int]:
    """The inodes of the fds of the next message (up to 16), closed after looking."""
    _msg, fds, flags, _addr = socket.recv_fds(b, 16, 16, socket.MSG_DONTWAIT)
    assert not flags & socket.MSG_CTRUNC
    try:
        return _inodes(fds)
    finally:
        for fd in fds:
            os.close(fd)


# --- a failed call leaves nothing behind -------------------------------------------

BAD_FDS: List[Callable[[int], Any]] = [
    lambda r: [r, "bad"],
    lambda r: [r, None],
    lambda r: (r, 1.5),
    lambda r: [r, 2**40],
    lambda r: [r, r, "bad"],
    lambda r: [r, r, r, 2**70],
    lambda r: [r] * 254,  # the kernel refuses (EINVAL): SCM_MAX_FD is 253
    lambda r: iter([r, "bad"]),
    lambda r: b"\x00\x00\x00",
]


@pytest.mark.parametrize("bad", range(len(BAD_FDS)))
@pytest.mark.parametrize("sender", ["send_fds", "send_fds_batch", "send_message"])
def test_a_rejected_send_never_changes_a_later_send(pair: Pair, pipe: Tuple[int, int],
                                                    bad: int, sender: str) -> None:
    a, b = pair
    r, w = pipe
    rawsys.send_fd(a, r)  # the pooled one-fd layout is in place
    assert _receive_all(b) == _inodes([r])
    fds = BAD_FDS[bad](r)
    with pytest.raises((TypeError, ValueError, OverflowError, OSError)) as info:
        if sender == "send_fds":
            rawsys.send_fds(a, [b"x"], fds)
        elif sender == "send_fds_batch":
            rawsys.send_fds_batch(a, [([b"y"], fds)])
        else:
            rawsys.send_message(a, [b"x"], [rawsys.ScmRights(tuple(fds) if not isinstance(
                fds, bytes) else fds)])
    assert type(info.value).__name__ not in ("error", "ArgumentError", "IndexError")
    # Nothing of the rejected call went out, and every later send is exact.
    with pytest.raises(BlockingIOError):
        socket.recv_fds(b, 16, 16, socket.MSG_DONTWAIT)
    for _ in range(3):
        rawsys.send_fd(a, w)
        assert _receive_all(b) == _inodes([w])
        rawsys.send_fds(a, [b"x"], [w, r])
        assert _receive_all(b) == _inodes([w, r])
        rawsys.send_fds_batch(a, [([b"x"], [w])])
        assert _receive_all(b) == _inodes([w])


def test_a_rejected_address_never_changes_a_later_send(pair: Pair,
                                                       pipe: Tuple[int, int]) -> None:
    a, b = pair
    r, _w = pipe
    for address in ((), 42, "/" + "x" * 200):
        with pytest.raises((TypeError, OSError)):
            rawsys.send_fds(a, [b"x"], [r, r], 0, address)
        rawsys.send_fd(a, r)
        assert _receive_all(b) == _inodes([r])


# --- bytes-like fds: CPython's array("i", fds) -------------------------------------

def _as_bytes(fds: List[int]) -> bytes:
    return array.array("i", fds).tobytes()


@pytest.mark.parametrize("make", [
    lambda r, w: _as_bytes([r]),
    lambda r, w: bytearray(_as_bytes([r, w])),
    lambda r, w: array.array("i", [w, r]),
    lambda r, w: memoryview(bytes([r, w])),  # a memoryview of bytes iterates as ints
])
def test_bytes_like_fds_as_cpython(pair: Pair, pipe: Tuple[int, int],
                                   make: Callable[[int, int], Any]) -> None:
    a, b = pair
    r, w = pipe
    socket.send_fds(a, [b"x"], make(r, w))
    expected = _receive_all(b)
    rawsys.send_fds(a, [b"x"], make(r, w))
    assert _receive_all(b) == expected
    rawsys.send_fds_batch(a, [([b"x"], make(r, w))])
    assert _receive_all(b) == expected


def test_bytes_fds_not_a_whole_int_is_valueerror_as_in_cpython(pair: Pair,
                                                               pipe: Tuple[int, int]) -> None:
    a, _b = pair
    data = _as_bytes([pipe[0]]) + b"\x00\x01\x02"
    with pytest.raises(ValueError) as cpython:
        socket.send_fds(a, [b"x"], data)
    with pytest.raises(ValueError) as ours:
        rawsys.send_fds(a, [b"x"], data)
    assert str(ours.value) == str(cpython.value)


@pytest.mark.parametrize("fds", [[None], [1.5], ["3"], [2**40], [2**70], "ab", None, 5])
def test_bad_fds_raise_cpythons_exception_and_message(pair: Pair, fds: Any) -> None:
    a, _b = pair
    with pytest.raises(Exception) as cpython:
        socket.send_fds(a, [b"x"], fds)
    with pytest.raises(Exception) as ours:
        rawsys.send_fds(a, [b"x"], fds)
    assert type(ours.value) is type(cpython.value)
    assert str(ours.value) == str(cpython.value)


# --- wrong results that became right -----------------------------------------------

def test_port_beyond_65535_is_never_delivered_elsewhere() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        with pytest.raises(OverflowError, match="port"):
            rawsys.send_fds(sender, [b"x"], [], 0, ("127.0.0.1", port + 65536))
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(8)
        rawsys.send_fds(sender, [b"ok"], [], 0, ("127.0.0.1", port))
        receiver.setblocking(True)
        assert receiver.recv(8) == b"ok"
    finally:
        receiver.close()
        sender.close()


def test_set_passcred_beyond_int_leaves_the_option_alone(pair: Pair) -> None:
    a, _b = pair
    rawsys.set_passcred(a, True)
    with pytest.raises(OverflowError, match="enable"):
        rawsys.set_passcred(a, 2**32)  # ctypes alone would make it 0: SO_PASSCRED off
    assert rawsys.get_passcred(a)


def test_recv_fds_batch_with_passcred_truncates_like_recv_fds(pair: Pair,
                                                              pipe: Tuple[int, int]) -> None:
    a, b = pair
    rawsys.set_passcred(b)
    for maxfds in (0, 1, 2):
        socket.send_fds(a, [b"x"], [pipe[0]])
        socket.send_fds(a, [b"x"], [pipe[0]])
        with pytest.raises(rawsys.ControlTruncatedError) as single:
            rawsys.recv_fds(b, 10, maxfds)
        with pytest.raises(rawsys.ControlTruncatedError) as batched:
            rawsys.recv_fds_batch(b, 1, 10, maxfds)
        assert batched.value.msg == single.value.msg == b"x"
        assert len(batched.value.fds) == len(single.value.fds)
        single.value.close()
        batched.value.close()
    # With room for both (recv_message), the credentials and the fd arrive.
    socket.send_fds(a, [b"x"], [pipe[0]])
    got = rawsys.recv_message(b, 10, 1, credentials=True)
    assert got.credentials == rawsys.own_credentials()
    assert _inodes(got.fds) == _inodes([pipe[0]])
    for fd in got.fds:
        os.close(fd)


@contextlib.contextmanager
def _fd_limit_reached() -> Iterator[None]:
    """No fd can be allocated inside: RLIMIT_NOFILE lowered, the free numbers below it taken."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    fillers: List[int] = []
    try:
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_pidfd_the_kernel_could_not_install_is_not_an_fd(pair: Pair,
                                                           pipe: Tuple[int, int]) -> None:
    a, b = pair
    if not rawsys.pidfd_supported(b):
        pytest.skip("SO_PASSPIDFD needs Linux 6.5+; this kernel lacks it")
    rawsys.set_passpidfd(b)
    a.send(b"x")
    rawsys.send_fds(a, [b"y"], [pipe[0]])
    with _fd_limit_reached():
        got = rawsys.recv_message(b, 10, 1, pidfd=True)
        with pytest.raises(rawsys.ControlTruncatedError) as info:
            rawsys.recv_message(b, 10, 1, pidfd=True)
    assert got.pidfd is None and got.pidfd_errno == errno.EMFILE
    assert got.fds == []
    assert all(fd >= 0 for fd in info.value.fds)  # -EMFILE never listed as an fd
    info.value.close()


def test_recv_fds_with_passpidfd_at_the_fd_limit_returns_no_negative_fd(
        pair: Pair) -> None:
    a, b = pair
    if not rawsys.pidfd_supported(b):
        pytest.skip("SO_PASSPIDFD needs Linux 6.5+; this kernel lacks it")
    rawsys.set_passpidfd(b)
    a.send(b"x")
    with _fd_limit_reached():
        msg, fds, _flags, _addr = rawsys.recv_fds(b, 10, 1)
    assert msg == b"x" and fds == []


def test_the_one_fd_shortcut_agrees_with_the_walk() -> None:
    data = bytearray(build_control([rawsys.ScmRights((7,))]))
    assert data.startswith(RIGHTS1_HEADER)
    for used in range(len(data) + 1):
        fast = received_fds(data, used)
        walked = received_fds(memoryview(data), used)  # not a bytearray: no shortcut
        assert fast == walked


# --- ControlTruncatedError: copy, pickle, no noise ---------------------------------

@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    seen: List[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


def _truncated(pair: Pair, pipe: Tuple[int, int]) -> rawsys.ControlTruncatedError:
    a, b = pair
    rawsys.send_fds(a, [b"x"], [pipe[0]] * 3)
    with pytest.raises(rawsys.ControlTruncatedError) as info:
        rawsys.recv_fds(b, 1, 2)
    return info.value


def test_control_truncated_error_copies_and_pickles_owning_nothing(
        pair: Pair, pipe: Tuple[int, int], unraisable: List[Any]) -> None:
    err = _truncated(pair, pipe)
    assert len(err.fds) == 2
    copies = [copy.copy(err), copy.deepcopy(err), pickle.loads(pickle.dumps(err))]
    for other in copies:
        assert isinstance(other, rawsys.ControlTruncatedError)
        assert other.errno == err.errno == errno.EMSGSIZE
        assert (other.msg, other.fds, other.msg_flags, other.address) == (
            err.msg, err.fds, err.msg_flags, err.address)
        assert other.take_fds() == []  # the numbers only: the original owns the fds
        other.close()
    del copies
    gc.collect()
    assert _inodes(list(err.fds)) == _inodes([pipe[0]] * 2)  # still open
    fds = err.take_fds()
    for fd in fds:
        os.close(fd)
    del err
    gc.collect()
    assert unraisable == []


def test_control_truncated_error_never_complains_when_collected(unraisable: List[Any]) -> None:
    half = rawsys.ControlTruncatedError.__new__(rawsys.ControlTruncatedError)
    del half
    with pytest.raises(TypeError):
        rawsys.ControlTruncatedError()  # type: ignore[call-arg]
    gc.collect()
    assert unraisable == []
