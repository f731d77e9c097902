"""The pooled buffers under threads: no message or fd crosses from one caller to another."""

from __future__ import annotations

import gc
import os
import socket
import threading
from typing import Any, List, Tuple

import pytest

from rawsys import ControlTruncatedError, recv_fds, recv_fds_batch, send_fds, send_fds_batch

pytestmark = pytest.mark.usefixtures("fd_leak_check")

ROUNDS = 2000


def worker(index: int, errors: List[BaseException]) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    mine = os.fstat(r).st_ino
    tag = b"t%d" % index
    try:
        for i in range(ROUNDS):
            if i % 4 == 3:
                send_fds_batch(a, [([tag], [r])] * 4)
                results = recv_fds_batch(b, 4, 8, 1)
                got = [(m, fds) for m, fds, _f, _a in results]
            else:
                send_fds(a, [tag], [r])
                m, fds, _f, _a = recv_fds(b, 8, 1)
                got = [(m, fds)]
            for msg, fds in got:
                try:
                    assert msg == tag, (msg, tag)
                    assert len(fds) == 1 and os.fstat(fds[0]).st_ino == mine
                finally:
                    for fd in fds:
                        os.close(fd)
    except BaseException as exc:  # reported to the main thread
        errors.append(exc)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def test_threads_do_not_share_buffers() -> None:
    errors: List[BaseException] = []
    threads = [threading.Thread(target=worker, args=(i, errors)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_blocked_receiver_does_not_block_other_threads() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    result: List[Tuple[bytes, List[int], int, Any]] = []
    try:
        blocked = threading.Thread(target=lambda: result.append(recv_fds(b, 8, 1)))
        blocked.start()  # waits in recvmsg with the GIL released
        send_fds(c, [b"other"], [r])
        _m, fds, _f, _a = recv_fds(d, 8, 1)
        for fd in fds:
            os.close(fd)
        send_fds(a, [b"wake"], [r])
        blocked.join(10)
        assert not blocked.is_alive()
        msg, fds, _f, _a = result[0]
        for fd in fds:
            os.close(fd)
        assert msg == b"wake"
    finally:
        for s in (a, b, c, d):
            s.close()
        os.close(r)
        os.close(w)


def test_dropped_truncation_error_closes_its_fds() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        send_fds(a, [b"x"], [r, w])
        before = len(os.listdir("/proc/self/fd"))
        err: ControlTruncatedError | None = None
        try:
            recv_fds(b, 1, 1)
        except ControlTruncatedError as exc:
            err = exc
        assert err is not None and len(err.fds) == 1
        assert len(os.listdir("/proc/self/fd")) == before + 1
        del err
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def test_large_bufsize_uses_a_one_off_buffer() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        payload = os.urandom(300_000)
        sender = threading.Thread(target=send_fds, args=(a, [payload], [r]))
        sender.start()
        chunks: List[bytes] = []
        fds: List[int] = []
        while sum(len(chunk) for chunk in chunks) < len(payload):
            m, got, _f, _a = recv_fds(b, 1 << 20, 1)
            chunks.append(m)
            fds += got
        sender.join()
        for fd in fds:
            os.close(fd)
        assert b"".join(chunks) == payload and len(fds) == 1
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)
