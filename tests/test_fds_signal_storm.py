"""Fd ownership under a signal storm: a handler raising every ~100 µs leaks nothing.

A ``SIGALRM`` timer fires every 100 µs; its handler raises while a receiving
call is running, so exceptions land anywhere in it -- before the system call,
between the kernel installing fds and their return, and inside the cleanup
that the first exception started.  Afterwards the fds open in this process
(``/proc/self/fd``) are counted: every fd the kernel installed must have been
returned (and is closed here) or closed by rawsys.  Counts, not timing.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from functools import partial
from typing import Any, Callable, Iterator, List, Tuple

import pytest

import rawsys

MESSAGES = 3000  # receiving calls per function
FDS_PER_MESSAGE = 3
BATCH = 8


class Storm(Exception):
    """What the handler raises."""


_armed = False  # raise only while a rawsys call runs, not in this test's bookkeeping


_RAWSYS = os.path.dirname(rawsys.__file__) + os.sep


def _raise_storm(signum: int, frame: Any) -> None:
    # Only in rawsys's own frames: a handler running in _run right after the
    # call returned would lose the result here, in the test, not in rawsys;
    # one running in pytest's hook for unraisable exceptions, or in some
    # finalizer, would break pytest, not test rawsys.
    if _armed and frame is not None and frame.f_code.co_filename.startswith(_RAWSYS):
        raise Storm


@pytest.fixture
def storm() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    old = signal.signal(signal.SIGALRM, _raise_storm)
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fds_of(result: Any) -> List[int]:
    """The fds of one receiving call's result, whatever its shape."""
    if isinstance(result, rawsys.Message):
        return result.fds + ([result.pidfd] if result.pidfd is not None else [])
    if isinstance(result, list):  # recv_fds_batch
        return [fd for _msg, fds, _flags, _addr in result for fd in fds]
    return list(result[1])


def _run(receive: Callable[[], Any], send: Callable[[], Any], drain: Callable[[], Any],
         pipe_ino: int) -> Tuple[int, int, int]:
    """Receive MESSAGES times under the storm.

    Returns (interrupted calls, fds received intact, fds open afterwards
    minus before).  Every received fd is checked to be the pipe (a wrong or
    closed one would fail ``os.fstat``) and closed with the storm disarmed.
    """
    global _armed
    interrupted = 0
    received = 0
    before = _open_fds()
    for _ in range(MESSAGES):
        try:
            send()
        except BlockingIOError:
            pass  # the queue is full: plenty to receive
        _armed = True
        try:
            result = receive()
            _armed = False  # nothing between the return and this store can raise
        except Storm:
            _armed = False
            interrupted += 1
            continue
        except rawsys.ControlTruncatedError:
            _armed = False
            raise
        fds = _fds_of(result)
        for fd in fds:
            assert os.fstat(fd).st_ino == pipe_ino
            os.close(fd)
        received += len(fds)
    while True:  # what is still queued, without the storm
        try:
            result = drain()
        except BlockingIOError:
            break
        for fd in _fds_of(result):
            os.close(fd)
    return interrupted, received, _open_fds() - before


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket, int]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        yield a, b, r
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def _send_one(a: socket.socket, r: int) -> None:
    rawsys.send_fds(a, [b"x"], [r] * FDS_PER_MESSAGE, socket.MSG_DONTWAIT)


def _send_batch(a: socket.socket, r: int) -> None:
    rawsys.send_fds_batch(a, [([b"x"], [r] * FDS_PER_MESSAGE)] * BATCH, socket.MSG_DONTWAIT)


CALLS = {
    "recv_fds": (lambda b: partial(rawsys.recv_fds, b, 1, FDS_PER_MESSAGE), _send_one,
                 lambda b: rawsys.recv_fds(b, 1, FDS_PER_MESSAGE, socket.MSG_DONTWAIT)),
    "recv_fd_one_fd": (lambda b: partial(rawsys.recv_fds, b, 1, 1),
                       lambda a, r: rawsys.send_fds(a, [b"x"], [r], socket.MSG_DONTWAIT),
                       lambda b: rawsys.recv_fds(b, 1, 1, socket.MSG_DONTWAIT)),
    "recv_message": (lambda b: partial(rawsys.recv_message, b, 1, FDS_PER_MESSAGE), _send_one,
                     lambda b: rawsys.recv_message(b, 1, FDS_PER_MESSAGE, socket.MSG_DONTWAIT)),
    "recv_fds_batch": (lambda b: partial(rawsys.recv_fds_batch, b, BATCH, 1, FDS_PER_MESSAGE),
                       _send_batch,
                       lambda b: rawsys.recv_fds_batch(b, BATCH, 1, FDS_PER_MESSAGE,
                                                       socket.MSG_DONTWAIT)),
}


# CPython 3.9/3.10 check for pending signals before the first instruction of
# every exception handler: a second signal can raise there, before any cleanup
# code runs (measured: up to ~10 calls in 3,000 leak their fds).  3.11 and
# later check only at calls, backward jumps and function starts, which the
# receivers' cleanup is built around.  Known limitation, run but not required.
@pytest.mark.xfail(sys.version_info < (3, 11), strict=False,
                   reason="CPython < 3.11 may run a signal handler at the entry of an except "
                          "clause, before any cleanup: not storm-proof there")
@pytest.mark.parametrize("name", sorted(CALLS))
def test_no_fd_leaks_under_a_100us_signal_storm(name: str, pair: Any, storm: None) -> None:
    a, b, r = pair
    make_receive, send, drain = CALLS[name]
    interrupted, received, leaked = _run(make_receive(b), partial(send, a, r),
                                         partial(drain, b), os.fstat(r).st_ino)
    print(f"{name}: {MESSAGES} calls, {interrupted} interrupted, {received} fds received, "
          f"{leaked} leaked")
    assert leaked == 0
    assert interrupted > 0, "the storm never hit a call: the test proved nothing"
    assert received > 0
