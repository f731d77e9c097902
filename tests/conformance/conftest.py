"""Fixtures shared by the conformance tests: a datagram socketpair and a pipe."""

from __future__ import annotations

from typing import Iterator

import pytest
from scm_support import close_all, dgram_pair

from rawsys.c import c_int, pipe2


@pytest.fixture
def pair() -> Iterator[tuple[int, int]]:
    """A connected AF_UNIX SOCK_DGRAM pair, closed afterwards."""
    a, b = dgram_pair()
    yield a, b
    close_all([a, b])


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read end, write end), closed afterwards: the file that gets passed."""
    fds = (c_int * 2)()
    assert pipe2(fds, 0) == 0
    yield fds[0], fds[1]
    close_all([fds[0], fds[1]])
