"""send_fds_batch/recv_fds_batch beyond the common case: layouts, sizes, addresses, errors."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import List, Tuple

import pytest

import rawsys.batch
from rawsys import ControlTruncatedError, recv_fds, recv_fds_batch, send_fds, send_fds_batch

pytestmark = pytest.mark.usefixtures("fd_leak_check")

Pair = Tuple[socket.socket, socket.socket]


def close_results(results: List[Tuple[bytes, List[int], int, object]]) -> None:
    for _msg, fds, _flags, _addr in results:
        for fd in fds:
            os.close(fd)


def same_file(fd1: int, fd2: int) -> bool:
    s1, s2 = os.fstat(fd1), os.fstat(fd2)
    return (s1.st_dev, s1.st_ino) == (s2.st_dev, s2.st_ino)


def test_layouts_switch_between_calls(dgram: Pair, pipe: Tuple[int, int]) -> None:
    """One fd a message, then mixed counts, then one again: headers rewritten each time."""
    a, b = dgram
    r, w = pipe
    shapes: List[List[List[int]]] = [
        [[r]] * 5, [[r, w], [], [w], [r, w, r]], [[w]] * 7, [[]] * 3, [[r]] * 2,
    ]
    for shape in shapes:
        items = [([b"%d" % i], fds) for i, fds in enumerate(shape)]
        assert send_fds_batch(a, items) == len(items)
        results = recv_fds_batch(b, len(items), 8, 3)
        try:
            assert [m for m, _f, _fl, _a in results] == [b"%d" % i for i in range(len(items))]
            for (_m, got, _fl, _a), sent in zip(results, shape):
                assert len(got) == len(sent)
                assert all(same_file(g, s) for g, s in zip(got, sent))
        finally:
            close_results(results)


def test_varying_data_lengths(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    payloads = [b"", b"a", b"bb" * 100, os.urandom(5000), b"c"]
    assert send_fds_batch(a, [([p[:3], p[3:]], [pipe[0]]) for p in payloads]) == 5
    results = recv_fds_batch(b, 5, 6000, 1)
    close_results(results)
    assert [m for m, _f, _fl, _a in results] == payloads


def test_data_truncated_to_bufsize_sets_msg_trunc(dgram: Pair) -> None:
    a, b = dgram
    send_fds_batch(a, [([b"abcdef"], []), ([b"x"], [])])
    results = recv_fds_batch(b, 2, 3, 0)
    assert results[0][0] == b"abc" and results[0][2] & socket.MSG_TRUNC
    assert results[1][0] == b"x" and results[1][2] == 0


def test_iterators_of_fds_and_buffers(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    items = iter([(iter([b"a", b"b"]), iter([pipe[0]])), ((b"c",), {pipe[1]})])
    assert send_fds_batch(a, items) == 2
    results = recv_fds_batch(b, 2, 4, 1)
    close_results(results)
    assert [(m, len(f)) for m, f, _fl, _a in results] == [(b"ab", 1), (b"c", 1)]


def test_more_than_the_pooled_capacity(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sent = send_fds_batch(a, [([b"m"], [pipe[0]])] * 200)
    received = 0
    while received < sent:
        results = recv_fds_batch(b, 150, 1, 1)
        close_results(results)
        received += len(results)
    assert received == sent > 64


def test_addresses_are_returned(pipe: Tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            a.bind(os.path.join(tmp, "a"))
            b.bind(os.path.join(tmp, "b"))
            a.connect(os.path.join(tmp, "b"))
            send_fds_batch(a, [([b"1"], [pipe[0]]), ([b"2"], [])])
            results = recv_fds_batch(b, 2, 1, 1)
            close_results(results)
            assert [addr for _m, _f, _fl, addr in results] == [os.path.join(tmp, "a")] * 2
        finally:
            a.close()
            b.close()


def test_peek_then_read(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds_batch(a, [([b"p"], [pipe[0]])] * 3)
    peeked = recv_fds_batch(b, 3, 1, 1, socket.MSG_PEEK)
    real = recv_fds_batch(b, 3, 1, 1)
    close_results(peeked)
    close_results(real)
    assert len(real) == 3 and peeked  # a peek sees the head of the queue
    with pytest.raises(BlockingIOError):
        recv_fds_batch(b, 3, 1, 1, socket.MSG_DONTWAIT)


def test_wait_for_one_returns_what_is_queued(dgram: Pair) -> None:
    a, b = dgram
    send_fds_batch(a, [([b"only"], [])])
    results = recv_fds_batch(b, 64, 8, 0)
    assert [m for m, _f, _fl, _a in results] == [b"only"]


def test_interrupted_batch_closes_every_installed_fd(dgram: Pair, pipe: Tuple[int, int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = dgram
    send_fds_batch(a, [([b"x"], [pipe[0], pipe[1]])] * 4)
    before = set(os.listdir("/proc/self/fd"))

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rawsys.batch, "_all_plain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        recv_fds_batch(b, 4, 1, 2)
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_failed_call_does_not_close_earlier_results(dgram: Pair,
                                                      pipe: Tuple[int, int]) -> None:
    """Pooled state from a successful call must not be mistaken for new fds later."""
    a, b = dgram
    send_fds_batch(a, [([b"x"], [pipe[0]])] * 2)
    results = recv_fds_batch(b, 2, 1, 1)
    with pytest.raises(BlockingIOError):
        recv_fds_batch(b, 2, 1, 1, socket.MSG_DONTWAIT)
    for _m, fds, _fl, _a in results:
        os.fstat(fds[0])  # still open: ours
    close_results(results)


def test_ctrunc_in_batch_then_clean_call(dgram: Pair, pipe: Tuple[int, int]) -> None:
    a, b = dgram
    send_fds_batch(a, [([b"a"], [pipe[0]] * 2)])
    with pytest.raises(ControlTruncatedError) as info:
        recv_fds_batch(b, 1, 1, 1)
    info.value.close()
    send_fds(a, [b"b"], [pipe[0]])
    _m, fds, flags, _a = recv_fds(b, 1, 1)
    for fd in fds:
        os.close(fd)
    assert flags == 0 and len(fds) == 1


def test_stream_socket_batch(pipe: Tuple[int, int]) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        assert send_fds_batch(a, [([b"s1"], [pipe[0]]), ([b"s2"], [pipe[1]])]) == 2
        results = recv_fds_batch(b, 2, 4, 1)
        close_results(results)
        assert [m for m, _f, _fl, _a in results] == [b"s1", b"s2"]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("bufsize", [1, 3, 16])
@pytest.mark.parametrize("shape", ["one fd each", "no fds", "mixed"])
def test_column_fast_path_agrees_with_the_per_message_path(
        dgram: Pair, pipe: Tuple[int, int], monkeypatch: pytest.MonkeyPatch, bufsize: int,
        shape: str) -> None:
    a, b = dgram
    def fds_of(i: int) -> List[int]:
        if shape == "one fd each":
            return [pipe[i % 2]]
        return [] if shape == "no fds" else [pipe[0]] * (i % 3)

    items = [([b"m" * (1 + i % 4)], fds_of(i)) for i in range(9)]
    outcomes = []
    for slow in (False, True):
        if slow:
            monkeypatch.setattr(rawsys.batch, "_all_plain", lambda *args: None)
        send_fds_batch(a, items)
        results = recv_fds_batch(b, 9, bufsize, 2)
        outcomes.append([(m, [os.fstat(fd).st_ino for fd in f], fl, ad)
                         for m, f, fl, ad in results])
        close_results(results)
    assert outcomes[0] == outcomes[1]
