"""The tracer at full speed: the bulk ring reader, fast decoding, anomalies, stopping.

The pure parts run anywhere: :class:`RingReader` walks a file laid out like a
BPF ring buffer's mapping, and the one-fd decoding fast path is compared
field for field with the general way (the ``--json`` stream is compared with
the general output in test_jsonstream.py).  The live parts (root, the distribution's bcc)
flood a ring too small to hold the flood and check that every CTRUNC receive
still arrives with exact totals, and that ``rawsys-trace`` stops at once
with a backlog in its ring instead of draining it.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tracing_helpers import forced_backend, require_live_tracing

from rawsys.trace import events
from rawsys.trace.events import (
    FILE_RECORD_SIZE,
    HEADER_SIZE,
    ONE_FD_SIZE,
    RawEvent,
    RecvEvent,
    SendEvent,
)
from rawsys.trace.reader import RingReader

ROOT = Path(__file__).resolve().parents[2]
PAGE = mmap.PAGESIZE


# ------------------------------------------------------------------ records
def _record(kind: int = 1, syscall: int = 1, ret: int = 1, msg_flags: int = 0,
            call_flags: int = 0, nfds: int = 1, name: bytes = b"", comm: bytes = b"fdloop",
            fd_flags: int = 0, ev_flags: int = events.EV_FLAG_REF_IS_FILE_REF,
            ts: int = 123456789, address: int = 0xFFFF888012345678,
            mode: int = 0o010600) -> bytes:
    e = RawEvent()
    e.ts_ns, e.ret, e.pid, e.tid, e.comm, e.sock = ts, ret, 42, 43, comm, 3
    e.call_flags, e.msg_flags, e.kind, e.syscall = call_flags, msg_flags, kind, syscall
    e.ev_flags, e.nfds, e.fds_seen = ev_flags, nfds, nfds
    for i in range(nfds):
        f = e.files[i]
        f.file, f.ino, f.ref_raw, f.fd = address + i if address else 0, 1000 + i, 1, 5 + i
        f.mode, f.fd_flags, f.name = mode, fd_flags, name
    return bytes(e)[:HEADER_SIZE + nfds * FILE_RECORD_SIZE]


SEND, RECV = int(events.EventKind.SEND), int(events.EventKind.RECV)
RECVMSG = int(events.Syscall.RECVMSG)
VARIED = [
    _record(),
    _record(kind=RECV, syscall=RECVMSG, msg_flags=int(socket.MSG_CTRUNC)),
    _record(ret=-9),  # a failed send: errno 9, ok false
    _record(nfds=2),  # two fds: the general way
    _record(nfds=0, kind=RECV, syscall=RECVMSG, msg_flags=int(socket.MSG_CTRUNC)),
    _record(name=b'a"b\\\xff\n', mode=0o100644),  # JSON escapes, bad UTF-8
    _record(comm=b"\xc3\xa9t\xe9"),
    _record(fd_flags=events.FD_FLAG_CLOEXEC, kind=RECV, syscall=RECVMSG,
            call_flags=int(socket.MSG_CMSG_CLOEXEC) | int(socket.MSG_PEEK)),
    _record(ev_flags=0),  # f_count rather than file_ref_t
    _record(address=0),  # fd not open: refcount 0
    _record(syscall=int(events.Syscall.SENDMMSG), ts=2**64 - 1),
]


# ------------------------------------------------------------------ the ring walker
class FakeRing:
    """A file laid out like a ring buffer map's mmap: consumer page, producer page, data twice."""

    def __init__(self, tmp_path: Path, data_pages: int = 4) -> None:
        self.size = data_pages * PAGE
        self.path = tmp_path / "ring"
        self.path.write_bytes(bytes(2 * PAGE + 2 * self.size))
        self.fd = os.open(self.path, os.O_RDWR)
        self.producer = 0

    def put(self, payload: bytes, *, busy: bool = False, discard: bool = False) -> None:
        """Append one record at the producer position (written in both copies of the data)."""
        length = len(payload) | (1 << 31 if busy else 0) | (1 << 30 if discard else 0)
        record = length.to_bytes(4, "little") + bytes(4) + payload
        record += bytes(-len(record) % 8)
        off = self.producer % self.size
        for copy in (0, self.size):
            for i in range(len(record)):  # wraps within each copy
                pos = 2 * PAGE + copy + (off + i) % self.size
                os.pwrite(self.fd, record[i:i + 1], pos)
        self.producer += len(record)
        os.pwrite(self.fd, self.producer.to_bytes(8, "little"), PAGE)

    def consumer(self) -> int:
        return int.from_bytes(os.pread(self.fd, 8, 0), "little")

    def close(self) -> None:
        os.close(self.fd)


def test_ring_reader_walks_records_skips_discarded_stops_at_busy(tmp_path: Path) -> None:
    ring = FakeRing(tmp_path)
    reader = RingReader(ring.fd, ring.size)
    try:
        assert reader.read() == []
        ring.put(b"a" * 5)
        ring.put(b"b" * 16, discard=True)
        ring.put(b"c" * 136)
        assert reader.read() == [b"a" * 5, b"c" * 136]
        assert ring.consumer() == ring.producer  # the room is handed back
        ring.put(b"d" * 8)
        busy_at = ring.producer
        ring.put(b"e" * 8, busy=True)
        assert reader.read() == [b"d" * 8]
        assert ring.consumer() == busy_at  # not past a record still being written
        assert reader.pending_bytes() == ring.producer - busy_at
    finally:
        reader.close()
        ring.close()


def test_ring_reader_usual_size_runs_limits_and_wrap_around(tmp_path: Path) -> None:
    ring = FakeRing(tmp_path, data_pages=1)
    reader = RingReader(ring.fd, ring.size)
    try:
        # Fill most of the ring, consume it, then write records across the end.
        for _ in range(ring.size // 144 - 2):
            ring.put(bytes(136))
        assert len(reader.read(None, 136)) == ring.size // 144 - 2
        payloads = [bytes([i]) * 136 for i in range(6)]
        for p in payloads:
            ring.put(p)
        assert reader.read(2, 136) == payloads[:2]  # the limit holds
        ring.put(b"x" * 24)  # another size: the run is broken, walked one by one
        ring.put(payloads[0])
        assert reader.read(None, 136) == [*payloads[2:], b"x" * 24, payloads[0]]
        ring.put(payloads[1])
        assert reader.skip() == 1 and reader.read() == []
        # Skipping runs of the usual size at once, then the rest one by one.
        for p in payloads:
            ring.put(p)
        ring.put(b"y" * 16, discard=True)
        ring.put(payloads[0])
        busy_at = ring.producer
        ring.put(payloads[1], busy=True)
        assert reader.skip(136) == 7
        assert ring.consumer() == busy_at  # not past a record still being written
    finally:
        reader.close()
        ring.close()


def test_ring_reader_refuses_a_size_that_is_no_ring() -> None:
    with pytest.raises(ValueError):
        RingReader(0, 3 * PAGE)


# ------------------------------------------------------------------ live
def _flood(a: socket.socket, b: socket.socket, fd: int, transfers: int,
           ctrunc_every: int) -> int:
    """Pass *fd* *transfers* times; every *ctrunc_every*-th receive cut short. How many were."""
    truncated = 0
    for i in range(transfers):
        socket.send_fds(a, [b"x"], [fd])
        if i % ctrunc_every == ctrunc_every - 1:
            _, _, flags, _ = b.recvmsg(1)  # no room for control data: MSG_CTRUNC
            assert flags & socket.MSG_CTRUNC
            truncated += 1
        else:
            _, fds, _, _ = socket.recv_fds(b, 1, 1)
            for got in fds:
                os.close(got)
    return truncated


def test_anomalies_survive_a_flood_that_overflows_the_ring() -> None:
    """A 64 KiB routine ring, never read during a flood 20 times its size."""
    require_live_tracing()
    from rawsys.trace.session import Session

    r, w = os.pipe()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with Session(pids=[os.getpid()], backend=forced_backend(), ring_pages=16) as s:
            truncated = _flood(a, b, r, 6000, 97)
            s.detach()
            got = s.drain()
            totals = s.totals()
    finally:
        for x in (a, b):
            x.close()
        os.close(r)
        os.close(w)
    ctrunc = [e for e in got if isinstance(e, RecvEvent) and "CTRUNC" in e.flags]
    assert truncated == 6000 // 97
    assert len(ctrunc) == truncated  # every one, though routine events were dropped
    assert totals.lost_routine > 0, "the flood did not overflow the ring: the test proves nothing"
    assert totals.anomalies_dropped == 0
    assert totals.produced_anomalies == truncated
    # Exact totals: every routine event produced was read or counted as dropped.
    assert totals.produced_routine == 2 * 6000 - truncated
    assert totals.read_routine + totals.routine_dropped == totals.produced_routine
    assert len(got) == totals.read_routine + totals.read_anomalies
    # Per process and direction: the events read and those the ring refused.
    pid = os.getpid()
    dropped = totals.dropped_per_process
    assert sum(n for n, _ in dropped.values()) == totals.lost_routine
    assert set(dropped) <= {(pid, "send"), (pid, "recv")}
    for side, cls in (("send", SendEvent), ("recv", RecvEvent)):
        read = sum(isinstance(e, cls) for e in got)
        assert read + dropped.get((pid, side), (0, 0))[0] == 6000


FLOOD_PY = r"""
import os, socket, sys, time
r, w = os.pipe()
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
n = 0
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(1000):
        socket.send_fds(a, [b"x"], [r])
        if n % 500 == 499:
            b.recvmsg(1)
        else:
            for fd in socket.recv_fds(b, 1, 1)[1]:
                os.close(fd)
        n += 1
print("transfers", n, flush=True)
"""


def test_stop_is_prompt_with_a_backlog_and_says_what_it_dropped(tmp_path: Path) -> None:
    """SIGINT while the ring holds a backlog: rawsys-trace stops at once instead of draining.

    The tracer is paused (SIGSTOP) while a flood fills its ring, then asked
    to stop.  It must write whole lines only, report every CTRUNC, and
    account for every event produced: written, or counted as dropped.
    """
    require_live_tracing()
    flood = subprocess.Popen([sys.executable, "-c", FLOOD_PY, "6"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert flood.stdin is not None and flood.stdout is not None
    pid = int(flood.stdout.readline().split()[1])
    out_path = tmp_path / "out.jsonl"
    forced = ["--backend", b] if (b := forced_backend()) else []
    with open(out_path, "wb") as out:
        tracer = subprocess.Popen([sys.executable, "-m", "rawsys.trace", "--json", "-p", str(pid),
                                   *forced], stdout=out, stderr=subprocess.PIPE, cwd=ROOT)
        try:
            assert tracer.stderr is not None
            seen: list[str] = []
            while not (seen and seen[-1].startswith("Tracing")):
                line = tracer.stderr.readline().decode()
                assert line, f"rawsys-trace did not start: {seen}"
                seen.append(line)
            flood.stdin.write("go\n")
            flood.stdin.flush()
            time.sleep(1.0)
            tracer.send_signal(signal.SIGSTOP)  # the ring fills while the reader sleeps
            time.sleep(3.0)
            tracer.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            tracer.send_signal(signal.SIGCONT)
            err = tracer.communicate(timeout=60)[1].decode()
            stopped_after = time.monotonic() - t0
        finally:
            if tracer.poll() is None:
                tracer.kill()
                tracer.wait()
            flood.communicate(timeout=60)
    assert tracer.returncode == 0, err
    lines = out_path.read_bytes().splitlines()
    parsed = [json.loads(x) for x in lines]  # whole lines only: none cut by the signal
    figures = {k: int(v) for k, v in (
        ("produced", _figure(err, r"Events: (\d+) produced")),
        ("anomalies", _figure(err, r"routine, (\d+) anomalies")),
        ("written", _figure(err, r"anomalies\), (\d+) written")),
        ("dropped", _figure(err, r"Routine events dropped: (\d+)")),
        ("unread", _figure(err, r"(\d+) unread at stop")),
        ("anomalies_dropped", _figure(err, r"Anomalies dropped: (\d+)")),
    )}
    # Records as written, one "lost" line per fd each CTRUNC receive dropped,
    # one "transfer" line per fd received and, at the end, one per fd still
    # in flight (no receiver).
    records = [p for p in parsed if p["event"] not in ("lost", "transfer")]
    assert all(p["in_flight"] == (p["receiver"] is None)
               for p in parsed if p["event"] == "transfer")
    lost = [p for p in parsed if p["event"] == "lost"]
    assert figures["written"] == len(records)
    assert [p["reason"] for p in lost] == ["ctrunc"] * figures["anomalies"]
    assert figures["unread"] > 0, f"nothing was left to drop: the test proves nothing\n{err}"
    assert figures["written"] + figures["dropped"] == figures["produced"], err
    assert figures["anomalies_dropped"] == 0
    assert sum("CTRUNC" in p["flags"] for p in records) == figures["anomalies"] > 0
    # Generous: draining this backlog took tens of seconds; stopping takes about one.
    assert stopped_after < 10, f"stopped {stopped_after:.1f} s after SIGINT"


def _figure(text: str, pattern: str) -> str:
    import re

    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in the summary:\n{text}"
    return m.group(1)


def test_raw_event_header_size_is_a_multiple_of_eight() -> None:
    """The fast ring path needs one-fd records 8-byte aligned (ring records are)."""
    assert ctypes.sizeof(events.RawEventHeader) % 8 == 0 and ONE_FD_SIZE % 8 == 0


def test_decode_events_is_decode_event_field_for_field() -> None:
    from rawsys.trace.events import decode_event, decode_events

    for backend in ("tracepoint", "fentry"):
        fast = decode_events(VARIED + VARIED, backend)  # the second time from the caches
        slow = [decode_event(r, backend) for r in VARIED + VARIED]
        assert fast == slow
        assert [type(e) for e in fast] == [type(e) for e in slow]
        assert [e.__dict__ for e in fast] == [e.__dict__ for e in slow]
