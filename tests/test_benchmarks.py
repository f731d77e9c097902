"""The fd-passing benchmark runs, and its stepwise variants do what rawsys does.

No timing is asserted (the machine is shared; speed is reported as ratios by
``benchmarks/fds_throughput.py`` itself).  What is checked: a ``--quick`` run
completes with every row; each step of ``benchmarks/fds_steps.py`` returns
rawsys's result for the benchmark's message and gives the receiver an fd that
works and is close-on-exec from the CLOEXEC step on; the MSG_CTRUNC step
raises with the fds that arrived; and the stand-ins reach rawsys's own calls,
so the table's "Python ns" column times rawsys and not the kernel.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"

sys.path.insert(0, str(BENCHMARKS))
import fds_steps  # noqa: E402
import fds_throughput  # noqa: E402

import rawsys  # noqa: E402

pytestmark = pytest.mark.usefixtures("fd_leak_check")

@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket, int, int]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        yield a, b, r, w
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def test_quick_run_prints_every_row() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "fds_throughput.py"), "--quick"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in (fds_throughput.CPYTHON_ROW, fds_throughput.RAWSYS_ROW,
                fds_throughput.BATCHED_ROW, fds_throughput.FLOOR_ROW,
                *(label for label, _send, _recv in fds_steps.STEPS),
                "= rawsys.send_fds/recv_fds", "rawsys / CPython", "batched / C batched"):
        assert row in out, f"{row!r} missing from:\n{out}"
    assert "not timed" not in out, out
    rawsys_line = next(line for line in out.splitlines()
                       if line.startswith("= rawsys.send_fds/recv_fds"))
    assert "n/a" not in rawsys_line, out


@pytest.mark.parametrize("label", [label for label, _s, _r in fds_steps.STEPS])
def test_each_step_passes_a_working_fd(label: str, pair: Tuple[socket.socket, ...]) -> None:
    a, b, r, w = pair
    index = [lab for lab, _s, _r in fds_steps.STEPS].index(label)
    _label, send, recv = fds_steps.STEPS[index]
    assert send(a, [b"x"], [w]) == 1
    data, fds, flags, address = recv(b, 1, 1)
    assert (data, len(fds), flags, address) == (b"x", 1, 0, None)
    try:
        os.write(fds[0], b"z")
        assert os.read(r, 1) == b"z"
        cloexec_from = [lab for lab, _s, _r in fds_steps.STEPS].index(
            "+ CLOEXEC (MSG_CMSG_CLOEXEC)")
        assert os.get_inheritable(fds[0]) is (index < cloexec_from)
    finally:
        os.close(fds[0])


def test_ctrunc_step_raises_holding_the_fds(pair: Tuple[socket.socket, ...]) -> None:
    a, b, r, w = pair
    socket.send_fds(a, [b"y"], [r, w])
    with pytest.raises(fds_steps.Truncated) as caught:
        fds_steps.recv_owned(b, 1, 1)
    data, fds, _flags, _address = caught.value.reply
    assert data == b"y" and len(fds) == 1
    os.close(fds[0])


def test_stand_ins_reach_rawsys() -> None:
    costs = fds_throughput.python_costs(50, 1)
    assert fds_throughput.RAWSYS_ROW in costs
    # rawsys still passes real fds afterwards: the swap was undone.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        rawsys.send_fds(a, [b"x"], [w])
        _data, fds, _flags, _address = rawsys.recv_fds(b, 1, 1)
        os.write(fds[0], b"q")
        os.close(fds[0])
        assert os.read(r, 1) == b"q"
    finally:
        for s in (a, b):
            s.close()
        os.close(r)
        os.close(w)
