"""The pure control-data parser: unit cases, round trips, and hypothesis fuzzing."""

from __future__ import annotations

import socket
import struct
from typing import List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawsys import (
    ControlDataError,
    ControlMessage,
    IpTtl,
    ScmCredentials,
    ScmPidfd,
    ScmRights,
    TruncatedControl,
    UnknownControl,
    build_control,
    fds_in,
    parse_control,
)
from rawsys.c import CMSG_LEN, CMSG_SPACE

INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)

MESSAGES = st.one_of(
    st.lists(INT32, max_size=8).map(lambda fds: ScmRights(tuple(fds))),
    st.builds(ScmCredentials, INT32, UINT32, UINT32),
    st.builds(ScmPidfd, INT32),
    st.builds(IpTtl, INT32),
    st.builds(UnknownControl, st.integers(2, 2**31 - 1), INT32, st.binary(max_size=24)),
)


def header(length: int, level: int, ctype: int) -> bytes:
    return struct.pack("=Qii", length, level, ctype)


def test_empty_buffer() -> None:
    assert parse_control(b"") == []
    assert fds_in(b"") == []


def test_one_rights_message_as_the_kernel_writes_it() -> None:
    data = header(CMSG_LEN(8), socket.SOL_SOCKET, socket.SCM_RIGHTS) + struct.pack("=ii", 5, 6)
    assert parse_control(data) == [ScmRights((5, 6))]
    assert fds_in(data) == [5, 6]


def test_matches_cpython_cmsg_sizes() -> None:
    assert len(build_control([ScmRights((1,))])) == socket.CMSG_SPACE(4) == CMSG_SPACE(4)


def test_header_shorter_than_a_header_is_an_error() -> None:
    with pytest.raises(ControlDataError):
        parse_control(header(8, socket.SOL_SOCKET, socket.SCM_RIGHTS))
    assert fds_in(header(8, socket.SOL_SOCKET, socket.SCM_RIGHTS)) == []


def test_header_running_past_the_buffer_is_an_error() -> None:
    data = header(CMSG_LEN(8), socket.SOL_SOCKET, socket.SCM_RIGHTS) + struct.pack("=i", 7)
    with pytest.raises(ControlDataError):
        parse_control(data)
    assert fds_in(data) == [7]  # cleanup still finds the whole int inside


def test_trailing_bytes_shorter_than_a_header_are_padding() -> None:
    data = build_control([ScmRights((3,))]) + bytes(7)
    assert parse_control(data) == [ScmRights((3,))]


def test_truncated_credentials_as_put_cmsg_leaves_them() -> None:
    data = header(20, socket.SOL_SOCKET, socket.SCM_CREDENTIALS) + struct.pack("=i", 42)
    assert parse_control(data) == [TruncatedControl(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                                    struct.pack("=i", 42))]


def test_partial_int_in_rights_is_ignored_like_cpython() -> None:
    data = header(CMSG_LEN(6), socket.SOL_SOCKET, socket.SCM_RIGHTS) + struct.pack("=ih", 9, 0)
    assert parse_control(data + bytes(2)) == [ScmRights((9,))]


def test_ttl_and_unknown() -> None:
    data = build_control([IpTtl(64), UnknownControl(99, 1, b"abc")])
    assert parse_control(data) == [IpTtl(64), UnknownControl(99, 1, b"abc")]


def test_wrong_type_input() -> None:
    with pytest.raises(TypeError):
        parse_control("not bytes")  # type: ignore[arg-type]


@given(st.lists(MESSAGES, max_size=6))
def test_round_trip(messages: List[ControlMessage]) -> None:
    data = build_control(messages)
    assert parse_control(data) == messages
    assert parse_control(bytearray(data)) == messages
    assert parse_control(memoryview(data)) == messages
    # A negative number is not an fd (a pidfd of -errno: the kernel failed to install it).
    expected = [fd for m in messages if isinstance(m, ScmRights) for fd in m.fds if fd >= 0]
    expected_pidfd = [m.fd for m in messages if isinstance(m, ScmPidfd) and m.fd >= 0]
    assert sorted(fds_in(data)) == sorted(expected + expected_pidfd)


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_random_bytes_return_or_raise_the_documented_error(data: bytes) -> None:
    try:
        messages = parse_control(data)
    except ControlDataError:
        messages = None
    found = fds_in(data)  # never raises
    if messages is not None:
        payload = sum(len(m.data) for m in messages if isinstance(m, (UnknownControl,
                                                                      TruncatedControl)))
        assert payload <= len(data)
        rights = [fd for m in messages if isinstance(m, ScmRights) for fd in m.fds]
        pidfds = [m.fd for m in messages if isinstance(m, ScmPidfd)]
        assert sorted(found) == sorted(rights + pidfds)


@settings(max_examples=500)
@given(st.lists(MESSAGES, max_size=4), st.binary(min_size=1, max_size=64),
       st.integers(0, 200))
def test_never_reads_past_the_buffer(messages: List[ControlMessage], tail: bytes,
                                     cut: int) -> None:
    """A slice of a bigger buffer parses exactly like a copy of the slice."""
    whole = build_control(messages) + tail
    cut = min(cut, len(whole))
    view = memoryview(whole)[:cut]
    copy = bytes(whole[:cut])
    try:
        expected: object = parse_control(copy)
    except ControlDataError as exc:
        expected = type(exc)
    try:
        got: object = parse_control(view)
    except ControlDataError as exc:
        got = type(exc)
    assert got == expected
    assert fds_in(view) == fds_in(copy)


def test_parser_does_not_close_anything() -> None:
    """A parser seeing SCM_RIGHTS must not touch the fds: 0, 1, 2 survive."""
    data = build_control([ScmRights((0, 1, 2))])
    parse_control(data)
    fds_in(data)
    import os

    for fd in (0, 1, 2):
        os.fstat(fd)
