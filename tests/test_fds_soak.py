"""Soak: 100,000 transfers of every kind, the process's fd count unchanged at the end."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from rawsys import ControlTruncatedError, recv_fds, recv_fds_batch, send_fds, send_fds_batch

TRANSFERS = 100_000


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_soak_fd_count_is_unchanged() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    before = open_fd_count()
    kinds = {"plain": 0, "truncated": 0, "peeked": 0, "no_room": 0, "failed_send": 0,
             "batch": 0}
    done = 0
    i = 0
    while done < TRANSFERS:
        kind = i % 6
        i += 1
        if kind == 0:  # plain
            send_fds(a, [b"p"], [r])
            _m, fds, _f, _a = recv_fds(b, 1, 1)
            assert len(fds) == 1
            os.close(fds[0])
            kinds["plain"] += 1
        elif kind == 1:  # 4 fds sent, room for 1
            send_fds(a, [b"t"], [r, w, r, w])
            try:
                recv_fds(b, 1, 1)
            except ControlTruncatedError as err:
                assert len(err.fds) == 1
                if i % 2:  # taken and closed by the caller ...
                    for fd in err.take_fds():
                        os.close(fd)
                # ... or closed by the exception when the handler drops it
            else:
                raise AssertionError("4 fds with room for 1 must raise")
            kinds["truncated"] += 1
        elif kind == 2:  # peeked, then read
            send_fds(a, [b"k"], [r, w])
            _m, peeked, _f, _a = recv_fds(b, 1, 2, socket.MSG_PEEK)
            _m, real, _f, _a = recv_fds(b, 1, 2)
            assert len(peeked) == len(real) == 2
            for fd in peeked + real:
                os.close(fd)
            kinds["peeked"] += 1
        elif kind == 3:  # no room at all
            send_fds(a, [b"n"], [r])
            try:
                recv_fds(b, 1, 0)
            except ControlTruncatedError as err:
                assert err.fds == ()
            else:
                raise AssertionError("no room for an fd must raise")
            kinds["no_room"] += 1
        elif kind == 4:  # a failing send
            with pytest.raises(OSError) as failed:
                send_fds(a, [b"f"], [r, -1])
            assert failed.value.errno == errno.EBADF
            kinds["failed_send"] += 1
        else:  # a batch of 8
            assert send_fds_batch(a, [([b"b"], [r])] * 8) == 8
            got = recv_fds_batch(b, 8, 1, 1)
            assert len(got) == 8
            for _m, fds, _f, _a in got:
                os.close(fds[0])
            kinds["batch"] += 1
        done += 1
    after = open_fd_count()
    a.close()
    b.close()
    os.close(r)
    os.close(w)
    assert all(count > 0 for count in kinds.values()), kinds
    print(f"soak: {done} transfers {kinds}, fd delta {after - before}")
    assert after - before == 0, f"fd count changed by {after - before}"
