"""CMSG_ALIGN/CMSG_LEN/CMSG_SPACE against the socket module and against C."""

from __future__ import annotations

import socket
import subprocess
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawsys.c.cmsg import CMSG_ALIGN, CMSG_LEN, CMSG_SPACE

SIZE_MAX = 2**64 - 1
INT_MAX = 2**31 - 1

MacroPair = tuple[Callable[[Any], int], Callable[[Any], int]]
PAIRS: dict[str, MacroPair] = {
    "CMSG_LEN": (CMSG_LEN, socket.CMSG_LEN),
    "CMSG_SPACE": (CMSG_SPACE, socket.CMSG_SPACE),
}


def outcome(function: Callable[[Any], int], n: Any) -> tuple[str, object]:
    """What calling *function(n)* gives: its value, or its exception's type and message."""
    try:
        return ("value", function(n))
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        return (type(exc).__name__, str(exc))


def last_accepted(function: Callable[[int], int]) -> int:
    """The largest n the function accepts (they accept a prefix of the naturals)."""
    low, high = 0, 2**64
    while high - low > 1:
        middle = (low + high) // 2
        if outcome(function, middle)[0] == "value":
            low = middle
        else:
            high = middle
    return low


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_equal_to_socket_module_on_a_wide_range(name: str) -> None:
    ours, theirs = PAIRS[name]
    for n in range(0, 70_000):
        assert ours(n) == theirs(n), n


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_same_upper_limit_as_socket_module(name: str) -> None:
    ours, theirs = PAIRS[name]
    limit = last_accepted(theirs)
    assert limit > 2**30  # the limit is near INT_MAX, not something small
    assert last_accepted(ours) == limit
    for n in range(limit - 40, limit + 40):
        assert outcome(ours, n) == outcome(theirs, n), n


EDGE_INPUTS: list[Any] = [
    -1, -8, -(2**31), -(2**63), -(2**63) - 1, -(2**64), INT_MAX, INT_MAX + 1, 2**32,
    2**63 - 1, 2**63, SIZE_MAX, 2**64, 10**40, -(10**40),
    True, False, 1.0, 0.5, "8", b"8", None, [], object(), 3j,
]


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("n", EDGE_INPUTS, ids=repr)
def test_same_errors_as_socket_module(name: str, n: Any) -> None:
    ours, theirs = PAIRS[name]
    assert outcome(ours, n) == outcome(theirs, n)


class Index:
    """An object with __index__, accepted wherever an int is."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_accepts_index_objects_like_socket_module(name: str) -> None:
    ours, theirs = PAIRS[name]
    for value in (0, 4, 17, -1, 2**70):
        assert outcome(ours, Index(value)) == outcome(theirs, Index(value))


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_random_integers_agree_with_socket_module(n: int) -> None:
    for ours, theirs in PAIRS.values():
        assert outcome(ours, n) == outcome(theirs, n)


def test_against_c_macros(build_c: Any) -> None:
    """CMSG_ALIGN everywhere, and CMSG_LEN/CMSG_SPACE where Python accepts n, equal C's."""
    exe = build_c("cmsg_macros.c")
    values = list(range(0, 4096))
    for base in (INT_MAX, 2**32, 2**63, SIZE_MAX):
        values += [(base + delta) % 2**64 for delta in range(-24, 25)]
    text = "".join(f"{v}\n" for v in values)
    lines = subprocess.run(
        [exe], input=text, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(lines) == len(values)
    compared = 0
    for n, line in zip(values, lines):
        c_align, c_len, c_space = map(int, line.split())
        assert CMSG_ALIGN(n) == c_align, n
        if outcome(CMSG_LEN, n)[0] == "value":
            assert CMSG_LEN(n) == c_len, n
            compared += 1
        if outcome(CMSG_SPACE, n)[0] == "value":
            assert CMSG_SPACE(n) == c_space, n
    assert compared >= 4096


def test_cmsg_align_rounds_to_size_t() -> None:
    assert [CMSG_ALIGN(n) for n in range(0, 18)] == [0] + [8] * 8 + [16] * 8 + [24]
