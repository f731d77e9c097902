#!/usr/bin/env python3
"""What ``rawsys-trace --json`` costs per event in-process, without a kernel.

Builds the records the probes write for the C loop of ``trace_overhead.py``
(one pipe fd sent and received per message, sender and receiver in one
process; ``--ctrunc-every N``: every Nth receive cut short, as its
anomaly mode does) -- or reads them from ``--records FILE`` (records as the
ring holds them, each preceded by its little-endian ``u32`` length, as a loop of
``Session.poll_raw`` writes them) -- and turns them into
``--json`` text in batches of ``--batch`` records (``--lag N``: as a reader
N records behind the probes gets them, each anomaly read ahead held back
until the routine records reach it, as ``Session.poll_raw`` does;
``--no-hold``: handed out at once, as it did before; ``--refuse F``: a
fraction F of them refused by a full ring, in runs of consecutive records,
sends and receives alike; ``--refuse-recv F``: and a fraction F of the
receives alone, their sends left pending up to the matchers' cap,
``--max-pending``; ``--refuse-send F``: sends alone), alternately:

* the general way: decode every record, feed the matcher, ``Printer.show``;
* :class:`rawsys.trace.jsonstream.JsonStream` (what ``--json`` runs).

Prints events/s of each (best of ``--repeat``), their ratio, and checks that
both wrote the same text.  Time on a shared machine is noisy: the ratio, from
one run, is the figure to read.

Usage::

    .venv/bin/python benchmarks/json_path.py [--events 200000] [--batch 4096]
        [--ctrunc-every 0] [--repeat 3] [--records FILE] [--lag 0 [--no-hold]]
        [--refuse 0.0 [--refuse-run 50]] [--refuse-recv 0.0] [--refuse-send 0.0]
        [--max-pending 65536]
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import struct
import time
from pathlib import Path

from rawsys.trace import events
from rawsys.trace.events import (
    FILE_RECORD_SIZE,
    HEADER_SIZE,
    ONE_FD_SIZE,
    RawEvent,
    decode_events,
)
from rawsys.trace.jsonstream import JsonStream
from rawsys.trace.matcher import Matcher
from rawsys.trace.output import Printer, WallClock
from rawsys.trace.session import HeldAnomalies


def loop_records(n_events: int, ctrunc_every: int) -> list[list[bytes]]:
    """The C loop's records, as (anomaly ring, routine ring) reads would give them."""
    pipe, sock_file = 0xFFFF888012340000, 0xFFFF888056780000

    def rec(kind: int, ts: int, nfds: int, msg_flags: int = 0) -> bytes:
        e = RawEvent()
        e.ts_ns, e.ret, e.pid, e.tid, e.comm, e.sock = ts, 1, 4242, 4242, b"fdloop", 3 + kind
        e.kind, e.syscall, e.msg_flags = kind, 1 if kind == 1 else 3, msg_flags
        e.ev_flags, e.sock_file = events.EV_FLAG_REF_IS_FILE_REF, sock_file
        e.nfds = e.fds_seen = nfds
        for i in range(nfds):
            f = e.files[i]
            f.file, f.ino, f.ref_raw, f.fd, f.mode = pipe, 77, 1, 3 + kind * 2, 0o010600
        return bytes(e)[:HEADER_SIZE + nfds * FILE_RECORD_SIZE]

    out: list[bytes] = []
    ts = 10**12
    for i in range(n_events // 2):
        out.append(rec(1, ts, 1))
        if ctrunc_every and i % ctrunc_every == ctrunc_every - 1:
            out.append(rec(2, ts + 900, 0, int(socket.MSG_CTRUNC)))
        else:
            out.append(rec(2, ts + 900, 1))
        ts += 2000
    return [out]


def lagging_polls(records: list[bytes], batch: int, lag: int, held: bool) -> list[list[bytes]]:
    """*records* (in the order the probes wrote them) as polls of a reader *lag*
    records behind get them: the anomaly ring whole, then *batch* routine
    records; *held*: with the anomalies held back as ``Session.poll_raw`` does
    (else handed out at once, as it did before)."""
    anomaly = [len(r) != ONE_FD_SIZE for r in records]
    routine = [r for r, a in zip(records, anomaly) if not a]
    hold = HeldAnomalies()
    polls, handed = [], 0
    for start in range(0, len(routine), batch):
        got = routine[start:start + batch]
        written = max(handed, min(len(records), start + batch + lag))  # by the probes
        fresh = [r for r, a in zip(records[handed:written], anomaly[handed:written]) if a]
        handed = written
        due = hold.take(fresh, got, len(got) < batch) if held else fresh
        polls.append(due + got)
    polls.append(hold.take([], [], drained=True))
    return polls


def refused(records: list[bytes], rate: float, run: int, seed: int = 1) -> list[bytes]:
    """*records* less those a full ring refuses: runs of *run* consecutive records
    (sends and receives alike; the run's length drawn from 1 to 2*run-1), about
    *rate* of all of them, at places drawn with *seed*."""
    if rate <= 0:
        return records
    rng = random.Random(seed)
    out, i = [], 0
    p_start = rate / run / max(1e-9, 1 - rate)  # a run starts after a kept record
    while i < len(records):
        if rng.random() < p_start:
            i += rng.randint(1, 2 * run - 1)
            continue
        out.append(records[i])
        i += 1
    return out


def read_records(path: Path) -> list[list[bytes]]:
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return [out]


KIND_AT = RawEvent.kind.offset  # a record's EventKind byte
MAX_PENDING = [65536]  # the matchers' cap (--max-pending)


def general(batches: list[list[bytes]], clock: WallClock) -> str:
    out = io.StringIO()
    printer = Printer(out, clock, as_json=True)
    matcher = Matcher(max_pending=MAX_PENDING[0])
    for n, records in enumerate(batches):
        evs = decode_events(records, "tracepoint")
        verdicts = []
        for ev in sorted(evs, key=lambda e: e.timestamp_ns):
            verdicts.extend(matcher.feed(ev))
        verdicts += matcher.flush() if n == len(batches) - 1 else matcher.expire(0)
        printer.show([ev for ev in evs if ev.event != "loss"], verdicts)
    return out.getvalue()


decoded = [0, 0]  # records the last JsonStream decoded (the general way, inside it), evicted


def fast(batches: list[list[bytes]], clock: WallClock) -> str:
    matcher = Matcher(max_pending=MAX_PENDING[0])
    stream = JsonStream(matcher, clock, "tracepoint", lambda f: "")
    text = "".join(stream.batch(records, 0, final=n == len(batches) - 1)
                   for n, records in enumerate(batches))
    decoded[:] = [stream.decoded, matcher.evicted]
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--ctrunc-every", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--records", type=Path)
    ap.add_argument("--lag", type=int, default=0,
                    help="read as a reader this many records behind the probes would: the "
                         "anomaly ring whole at each poll, then --batch routine records")
    ap.add_argument("--no-hold", action="store_true",
                    help="with --lag: hand the anomalies out at once (as poll_raw did before)")
    ap.add_argument("--refuse", type=float, default=0.0,
                    help="drop this fraction of the records, in runs, as a full ring refuses them")
    ap.add_argument("--refuse-run", type=int, default=50,
                    help="with --refuse: the mean length of a run of refused records")
    ap.add_argument("--refuse-recv", type=float, default=0.0,
                    help="and this fraction of the receives refused alone (their sends stay "
                         "pending until evicted)")
    ap.add_argument("--refuse-send", type=float, default=0.0,
                    help="and this fraction of the sends refused alone (their receives wait "
                         "alone for the matcher's grace)")
    ap.add_argument("--max-pending", type=int, default=65536, help="the matchers' cap")
    args = ap.parse_args()
    MAX_PENDING[0] = args.max_pending
    (records,) = (read_records(args.records) if args.records
                  else loop_records(args.events, args.ctrunc_every))
    records = refused(records, args.refuse, args.refuse_run)
    for kind, rate in ((2, args.refuse_recv), (1, args.refuse_send)):
        if rate:
            rng = random.Random(kind)
            records = [r for r in records if r[KIND_AT] != kind or rng.random() >= rate]
    if args.lag:
        batches = lagging_polls(records, args.batch, args.lag, held=not args.no_hold)
    else:
        batches = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]
    clock = WallClock(offset_ns=1_796_000_000_000_000_000)
    best = {"general": float("inf"), "jsonstream": float("inf")}
    texts = {}
    for _ in range(args.repeat):
        for name, fn in (("general", general), ("jsonstream", fast)):
            t0 = time.perf_counter()
            texts[name] = fn(batches, clock)
            best[name] = min(best[name], time.perf_counter() - t0)
    n = len(records)
    for name, seconds in best.items():
        print(f"{name:<12} {n / seconds:>10.0f} events/s  ({seconds:.3f} s for {n} events, "
              f"{seconds / n * 1e6:.2f} us each)")
    print(f"ratio        {best['general'] / best['jsonstream']:.1f}x  "
          f"(same text: {'yes' if texts['general'] == texts['jsonstream'] else 'NO'}, "
          f"{texts['general'].count(chr(10))} lines; jsonstream decoded {decoded[0]} records, "
          f"{decoded[1]} sends evicted)")


if __name__ == "__main__":
    main()
