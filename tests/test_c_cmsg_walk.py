"""CMSG_FIRSTHDR/CMSG_NXTHDR against C on thousands of buffers.

``tests/csrc/cmsg_walk.c`` walks control buffers given on stdin and prints the
offsets of the headers it visits, plus what ``CMSG_NXTHDR`` returns for a
header at every 4-byte offset of the buffer.  It is built twice: with ``-O2``
(glibc's inline ``__cmsg_nxthdr`` from <bits/socket.h>) and calling libc's
out-of-line ``__cmsg_nxthdr``.  The Python side walks the same bytes with
rawsys's macros and, through ctypes, with libc's ``__cmsg_nxthdr``.  All four
must agree on every buffer.

Run with ``-s`` to see how many buffers were compared.
"""

from __future__ import annotations

import ctypes
import random
import shutil
import struct
import subprocess
from ctypes import POINTER, c_uint64, c_void_p
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawsys.c.cmsg import CMSG_ALIGN, CMSG_FIRSTHDR, CMSG_LEN, CMSG_NXTHDR
from rawsys.c.libc import LIBC
from rawsys.c.structs import cmsghdr, msghdr

SIZE_MAX = 2**64 - 1
INT_MAX = 2**31 - 1
HDR = ctypes.sizeof(cmsghdr)
MAX_WALK = 100_000
SEED = 20260521


@dataclass(frozen=True)
class Case:
    misalign: int
    control: bytes

    def line(self) -> str:
        return f"{self.misalign} {len(self.control)} {self.control.hex() or '-'}\n"


# --- the buffers ------------------------------------------------------------------------


def header(cmsg_len: int, level: int = 1, type_: int = 1) -> bytes:
    return struct.pack("=Qii", cmsg_len & SIZE_MAX, level, type_)


def well_formed(rng: random.Random, count: int) -> bytes:
    """*count* control messages laid out as CMSG_SPACE apart, with random data."""
    out = bytearray()
    for _ in range(count):
        datalen = rng.choice([0, 1, 3, 4, 8, 12, 16, 20, rng.randrange(0, 64)])
        out += header(CMSG_LEN(datalen), rng.choice([0, 1, 41]), rng.randrange(0, 5))
        out += rng.randbytes(datalen)
        out += bytes(CMSG_ALIGN(len(out)) - len(out))
    return bytes(out)


def adversarial_lengths(offset: int, controllen: int) -> list[int]:
    """cmsg_len values that probe NXTHDR's checks for a header at *offset*."""
    remaining = controllen - offset
    values = [0, 1, 7, 8, 15, 16, 17, 23, 24, 25, 31, 32, 33,
              remaining, remaining + 1, remaining - 1, remaining - 8, remaining - 15,
              remaining - 16, remaining - 17, remaining + 7, remaining + 8,
              SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 7, SIZE_MAX - 8, SIZE_MAX - 15, SIZE_MAX - 16,
              INT_MAX, INT_MAX + 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**63 + 1]
    # lengths whose alignment or sum with the pointer wraps around the address space
    values += [SIZE_MAX - offset, SIZE_MAX - remaining, 2**64 - remaining, 2**64 - 16,
               2**64 - CMSG_ALIGN(remaining), SIZE_MAX - 6]
    return [v & SIZE_MAX for v in values]


def with_length(control: bytes, offset: int, cmsg_len: int) -> bytes:
    if offset + 8 > len(control):
        return control
    return control[:offset] + struct.pack("=Q", cmsg_len) + control[offset + 8:]


def cases(seed: int = SEED) -> Iterator[Case]:
    rng = random.Random(seed)
    # 1. every controllen 0..200 with random bytes, several times, every misalignment.
    for controllen in range(0, 201):
        for misalign in (0, 0, 0, 1, 4, 7):
            yield Case(misalign, rng.randbytes(controllen))
    # 2. random bytes whose 8-byte words are small, plausible cmsg_len values.
    for _ in range(2000):
        controllen = rng.randrange(0, 260)
        words = [rng.choice([0, 8, 12, 16, 17, 20, 24, 28, 32, 40, 48, rng.randrange(0, 80)])
                 for _ in range(controllen // 8 + 1)]
        raw = b"".join(struct.pack("=Q", w) for w in words)[:controllen]
        yield Case(rng.choice([0, 0, 0, 4]), raw)
    # 3. well-formed sequences, exact, cut short, or followed by junk.
    for _ in range(2500):
        body = well_formed(rng, rng.randrange(0, 7))
        shape = rng.randrange(4)
        if shape == 1 and body:
            body = body[: rng.randrange(0, len(body))]
        elif shape == 2:
            body += rng.randbytes(rng.randrange(1, 40))
        elif shape == 3 and body:
            body = body[: len(body) - rng.randrange(0, 8)]  # last message without tail padding
        yield Case(0, body)
    # 4. well-formed sequences with one header's cmsg_len made adversarial.
    for _ in range(800):
        body = well_formed(rng, rng.randrange(1, 6))
        if rng.random() < 0.5:
            body += rng.randbytes(rng.randrange(0, 20))
        offsets = [0]
        while True:
            (cmsg_len,) = struct.unpack_from("=Q", body, offsets[-1])
            nxt = offsets[-1] + CMSG_ALIGN(cmsg_len)
            if nxt + HDR > len(body):
                break
            offsets.append(nxt)
        offset = rng.choice(offsets)
        for value in adversarial_lengths(offset, len(body)):
            yield Case(0, with_length(body, offset, value))
    # 5. a single header at the start with every adversarial length, controllen 16..96.
    for controllen in range(HDR, 97):
        filler = rng.randbytes(controllen)
        for value in adversarial_lengths(0, controllen):
            yield Case(0, with_length(filler, 0, value))


# --- the four walkers -------------------------------------------------------------------


@dataclass(frozen=True)
class Walk:
    visited: tuple[int, ...]
    next_from: tuple[int | None, ...]


def parse_c_output(line: str) -> Walk:
    walk_part, next_part = line.split(";")
    visited = walk_part.split()[1:]
    assert "loop" not in visited, "the C walk did not end"
    nexts = next_part.split()[1:]
    return Walk(tuple(int(o) for o in visited),
                tuple(None if o == "x" else int(o) for o in nexts))


def run_c_walker(exe: Path, batch: list[Case]) -> list[Walk]:
    result = subprocess.run([exe], input="".join(c.line() for c in batch),
                            capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert len(lines) == len(batch)
    return [parse_c_output(line) for line in lines]


class PythonWalker:
    """Walks a Case with rawsys's macros, or with libc's __cmsg_nxthdr via ctypes."""

    def __init__(self) -> None:
        self.storage = (c_uint64 * (4096 // 8 + 2))()  # 8-byte aligned, reused
        base = ctypes.addressof(self.storage)
        assert base % 8 == 0
        self.base = base
        self.libc_nxthdr = LIBC["__cmsg_nxthdr"]

    def _msg(self, case: Case) -> tuple[msghdr, int]:
        control = self.base + case.misalign
        assert case.misalign + len(case.control) <= ctypes.sizeof(self.storage)
        ctypes.memmove(control, case.control, len(case.control))
        msg = msghdr()
        msg.msg_control = control
        msg.msg_controllen = len(case.control)
        return msg, control

    def walk(self, case: Case, use_libc: bool) -> Walk:
        msg, control = self._msg(case)
        end = control + len(case.control)

        def offset_of(pointer: Any) -> int | None:
            if not pointer:
                return None
            address = ctypes.cast(pointer, c_void_p).value
            assert address is not None
            if not use_libc:
                # rawsys must never hand out a header that sticks out of the buffer.
                assert control <= address and address + HDR <= end
            return address - control

        def nxt(cmsg: Any) -> Any:
            if use_libc:
                return self.libc_nxthdr(ctypes.byref(msg), cmsg)
            return CMSG_NXTHDR(msg, cmsg)

        visited = []
        cmsg = CMSG_FIRSTHDR(msg)
        while cmsg:
            offset = offset_of(cmsg)
            assert offset is not None
            visited.append(offset)
            assert len(visited) < MAX_WALK, "the walk did not end"
            cmsg = nxt(cmsg)
        next_from = []
        for start in range(0, len(case.control) - HDR + 1, 4):
            here = ctypes.cast(c_void_p(control + start), POINTER(cmsghdr))
            next_from.append(offset_of(nxt(here)))
        return Walk(tuple(visited), tuple(next_from))


# --- the comparisons --------------------------------------------------------------------


@pytest.fixture(scope="module")
def walkers(build_c: Any) -> dict[str, Path]:
    return {
        "C -O2 inline CMSG_NXTHDR": build_c("cmsg_walk.c", "-O2"),
        "C libc __cmsg_nxthdr": build_c("cmsg_walk.c", "-O2", "-DCALL_LIBC"),
    }


def test_inline_build_really_inlines(walkers: dict[str, Path]) -> None:
    """The -O2 build must not call libc's __cmsg_nxthdr, or it tests nothing new."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm (binutils) to inspect the walker's symbols")
    inline = subprocess.run([nm, "-u", walkers["C -O2 inline CMSG_NXTHDR"]],
                            capture_output=True, text=True, check=True).stdout
    libc = subprocess.run([nm, "-u", walkers["C libc __cmsg_nxthdr"]],
                          capture_output=True, text=True, check=True).stdout
    assert "__cmsg_nxthdr" not in inline
    assert "__cmsg_nxthdr" in libc


def compare(walkers: dict[str, Path], batch: list[Case]) -> list[str]:
    """Walk *batch* four ways; return a description of every disagreement."""
    results = {name: run_c_walker(exe, batch) for name, exe in walkers.items()}
    python = PythonWalker()
    results["rawsys CMSG_NXTHDR"] = [python.walk(case, use_libc=False) for case in batch]
    results["ctypes libc __cmsg_nxthdr"] = [python.walk(case, use_libc=True) for case in batch]
    reference = results["C -O2 inline CMSG_NXTHDR"]
    problems = []
    for name, walks in results.items():
        for case, expected, got in zip(batch, reference, walks):
            if got != expected:
                problems.append(f"{name}: {case.line().strip()}\n  C: {expected}\n  got: {got}")
    return problems


def test_walk_matches_c_on_thousands_of_buffers(walkers: dict[str, Path]) -> None:
    batch = list(cases())
    assert len(batch) >= 5000
    problems = compare(walkers, batch)
    headers = sum(len(case.control) // 4 for case in batch)
    print(f"\nCMSG walk: {len(batch)} control buffers compared with C (inline and libc "
          f"__cmsg_nxthdr), ~{headers} CMSG_NXTHDR start offsets, "
          f"{len(problems)} mismatches")
    assert problems[:5] == [] and len(problems) == 0


def test_cases_cover_the_adversarial_shapes() -> None:
    """The generated buffers include the shapes the issue asks for (guards the generator)."""
    batch = list(cases())
    lengths = {len(c.control) for c in batch}
    assert set(range(0, 201)) <= lengths
    first_lengths = {struct.unpack_from("=Q", c.control)[0] for c in batch if len(c.control) >= 8}
    for value in (0, 1, 15, 16, 17, SIZE_MAX, SIZE_MAX - 7, INT_MAX):
        assert value in first_lengths
    exact_fit = [c for c in batch if len(c.control) >= HDR
                 and struct.unpack_from("=Q", c.control)[0] == len(c.control)]
    one_over = [c for c in batch if len(c.control) >= HDR
                and struct.unpack_from("=Q", c.control)[0] == len(c.control) + 1]
    assert len(exact_fit) >= 50 and len(one_over) >= 50
    assert {c.misalign for c in batch} >= {0, 1, 4, 7}


control_bytes = st.one_of(
    st.binary(max_size=160),
    st.lists(
        st.tuples(st.sampled_from([0, 1, 15, 16, 17, 20, 24, 31, 32, 40, SIZE_MAX, SIZE_MAX - 7,
                                   INT_MAX, 2**63]) | st.integers(0, SIZE_MAX),
                  st.binary(min_size=8, max_size=8),
                  st.binary(max_size=24)),
        max_size=6,
    ).map(lambda parts: b"".join(struct.pack("=Q", n) + rest + data for n, rest, data in parts)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 7), control_bytes), min_size=1, max_size=60))
def test_walk_matches_c_on_generated_buffers(walkers: dict[str, Path],
                                             buffers: list[tuple[int, bytes]]) -> None:
    batch = [Case(misalign, control) for misalign, control in buffers]
    assert compare(walkers, batch) == []
