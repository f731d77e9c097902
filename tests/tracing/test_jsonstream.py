"""``--json`` linked on raw records (:class:`JsonStream`) against the general way.

The general way is what ``rawsys-trace --json`` did for every batch: decode
each record, feed the events to the :class:`Matcher` in the order they
happened, and print through :class:`Printer`.  Both are run over the same
batches of records, each with its own matcher, and must write the same
text, line for line: sends and receives, transfers, lost fds, and leave the
same pending state (in flight at the end, evictions).
"""

from __future__ import annotations

import io
import json
import random
import socket

from rawsys.trace import events
from rawsys.trace.events import (
    FILE_RECORD_SIZE,
    HEADER_SIZE,
    FileIdentity,
    RawEvent,
    decode_events,
)
from rawsys.trace.jsonstream import JsonStream
from rawsys.trace.matcher import Matcher
from rawsys.trace.output import Printer, WallClock
from rawsys.trace.session import HeldAnomalies

SEND, RECV, LOST = (int(k) for k in events.EventKind)
SENDMSG, RECVMSG = int(events.Syscall.SENDMSG), int(events.Syscall.RECVMSG)
SOCK_FILE = 0xFFFF888000AA0000
PIPE, REG = 0o010600, 0o100644
CLOCK = WallClock(offset_ns=1_796_000_000_123_456_789)


def _rec(kind: int, ts: int, files: list[tuple[int, int, int]], *, pid: int = 100,
         tid: int = 0, comm: bytes = b"fdloop", sock: int = 3, ret: int = 1,
         call_flags: int = 0, msg_flags: int = 0, fd_flags: int = 0, reason: int = 0,
         sock_file: int = SOCK_FILE, mode: int = PIPE, name: bytes = b"",
         syscall: int = 0) -> bytes:
    """A record as the probes write it; *files*: (address, inode, fd) each."""
    e = RawEvent()
    e.ts_ns, e.ret, e.pid, e.tid, e.comm, e.sock = ts, ret, pid, tid or pid, comm, sock
    e.call_flags, e.msg_flags, e.kind = call_flags, msg_flags, kind
    e.syscall = syscall or (SENDMSG if kind == SEND else RECVMSG)
    e.ev_flags, e.reason, e.sock_file = events.EV_FLAG_REF_IS_FILE_REF, reason, sock_file
    e.nfds = e.fds_seen = len(files)
    for i, (address, ino, fd) in enumerate(files):
        f = e.files[i]
        f.file, f.ino, f.ref_raw, f.fd, f.mode, f.fd_flags = address, ino, 1, fd, mode, fd_flags
        f.name = name
    return bytes(e)[:HEADER_SIZE + len(files) * FILE_RECORD_SIZE]


def _path_of(f: FileIdentity) -> str:
    return f"/tmp/file-{f.inode}" if f.address else ""


def _general(batches: list[list[bytes]], matcher: Matcher) -> list[str]:
    """Each batch as the command printed it before: decode, match, Printer.show."""
    out = io.StringIO()
    printer = Printer(out, CLOCK, as_json=True, path_of=_path_of)
    for n, records in enumerate(batches):
        final = n == len(batches) - 1
        evs = decode_events(records, "tracepoint")
        verdicts = []
        for ev in sorted(evs, key=lambda e: e.timestamp_ns):
            verdicts.extend(matcher.feed(ev))
        verdicts += matcher.flush() if final else matcher.expire(10**12)
        printer.show([ev for ev in evs if ev.event != "loss"], verdicts)
    return out.getvalue().splitlines()


def _fast(batches: list[list[bytes]], matcher: Matcher) -> tuple[list[str], JsonStream]:
    stream = JsonStream(matcher, CLOCK, "tracepoint", _path_of)
    text = "".join(stream.batch(records, 10**12, final=n == len(batches) - 1)
                   for n, records in enumerate(batches))
    return text.splitlines(), stream


def _compare(batches: list[list[bytes]], max_pending: int = 65536) -> list[dict[str, object]]:
    slow_m, fast_m = Matcher(max_pending=max_pending), Matcher(max_pending=max_pending)
    slow = _general(batches, slow_m)
    fast, stream = _fast(batches, fast_m)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert json.loads(a) == json.loads(b)  # field for field (clearer diffs) ...
        assert a == b  # ... and byte for byte
    assert fast_m.evicted == slow_m.evicted
    assert fast_m.pending == slow_m.pending == 0
    return [json.loads(line) for line in fast]


def _flood(n: int, start_ts: int = 1_000_000, files: int = 3) -> list[bytes]:
    """Routine one-fd transfers over a few files; some receives stamped before their send."""
    out = []
    for i in range(n):
        address, ino = 0xFFFF888001000000 + 0x100 * (i % files), 500 + i % files
        ts = start_ts + 1000 * i
        send = _rec(SEND, ts, [(address, ino, 7)], pid=100 + i % 2, comm=b"sender")
        recv_ts = ts + 400 if i % 5 else ts - 10  # the receive's exit came first
        recv = _rec(RECV, recv_ts, [(address, ino, 9 + i % 3)], pid=200, comm=b"recv\xe9r",
                    mode=REG if i % 7 == 0 else PIPE, name=b"f" if i % 7 == 0 else b"")
        out += [send, recv]
    return out


def test_routine_flood_split_in_batches_is_the_general_way() -> None:
    records = _flood(200)
    batches = [records[i:i + 37] for i in range(0, len(records), 37)]  # pairs split
    parsed = _compare(batches)
    assert sum(p["event"] == "transfer" for p in parsed) == 200
    assert sum(p["event"] in ("send", "recv") for p in parsed) == 400


def test_anomalies_amid_routine_records_are_the_general_way() -> None:
    ctrunc = int(socket.MSG_CTRUNC)
    peek = int(socket.MSG_PEEK)
    a, b, c = 0xFFFF888002000000, 0xFFFF888002000100, 0xFFFF888002000200
    batches = [
        _flood(20) + [
            # A receive cut short before any fd, read (anomaly ring) before its send.
            _rec(RECV, 2_000_100, [], msg_flags=ctrunc, pid=200, sock_file=SOCK_FILE + 8),
            _rec(SEND, 2_000_000, [(a, 1, 7)], sock_file=SOCK_FILE + 8),
            # A peek, then the real receive.
            _rec(SEND, 2_000_200, [(b, 2, 7)]),
            _rec(RECV, 2_000_300, [(b, 2, 11)], call_flags=peek, pid=200),
        ],
        [
            _rec(RECV, 2_000_400, [(b, 2, 12)], pid=200),
            _rec(SEND, 2_000_500, [(c, 3, 4)], ret=-9),  # a failed send
            # Two fds in one message; one receive takes both.
            _rec(SEND, 2_000_600, [(a + 8, 4, 5), (a + 16, 5, 6)]),
            _rec(RECV, 2_000_700, [(a + 8, 4, 13), (a + 16, 5, 14)], pid=200),
            # Read without a control buffer: the loss names the pending sender.
            _rec(SEND, 2_000_800, [(c, 6, 8)], pid=101),
            _rec(LOST, 2_000_900, [(c, 6, -1)], pid=200, reason=2, syscall=5),
            # Close-on-exec: received, then the receiver execs.
            _rec(SEND, 2_001_000, [(c + 8, 7, 8)]),
            _rec(RECV, 2_001_100, [(c + 8, 7, 15)], pid=200,
                 fd_flags=events.FD_FLAG_CLOEXEC, call_flags=int(socket.MSG_CMSG_CLOEXEC)),
        ] + _flood(10, start_ts=2_002_000),
        [
            _rec(LOST, 2_100_000, [(c + 8, 7, 15)], pid=200, reason=6, syscall=8),
            # A receive whose send is never seen (NOSEND), sends left in flight.
            _rec(RECV, 2_100_100, [(c + 24, 8, 16)], pid=200),
            _rec(SEND, 2_100_200, [(c + 32, 9, 3)]),
            _rec(SEND, 2_100_300, [(c + 40, 10, 3)]),
        ] + _flood(6, start_ts=2_200_000),
    ]
    parsed = _compare(batches)
    reasons = sorted(str(p["reason"]) for p in parsed if p["event"] == "lost")
    assert reasons == ["closed-on-exec", "ctrunc", "read-without-control"]
    # The two sends never received, at the end (the receive alone: no record).
    flying = [p for p in parsed if p["event"] == "transfer" and p.get("in_flight")]
    assert [p["file"]["inode"] for p in flying] == [9, 10]  # type: ignore[index]


def test_evictions_at_the_cap_are_the_general_way() -> None:
    sends = [_rec(SEND, 1000 + i, [(0xFFFF888003000000 + 8 * i, i, 5)]) for i in range(12)]
    recvs = [_rec(RECV, 5000 + i, [(0xFFFF888003000000 + 8 * i, i, 6)], pid=200)
             for i in range(12)]
    batches = [sends[:5], sends[5:] + recvs[:3], recvs[3:]]
    parsed = _compare(batches, max_pending=4)
    # The 8 oldest sends were evicted (in flight): only the last 4 link.
    linked = [p for p in parsed if p["event"] == "transfer" and p["receiver"] is not None]
    assert len(linked) == 4
    evicted = [p for p in parsed if p["event"] == "transfer" and p["receiver"] is None]
    assert [p["sender"]["fd"] for p in evicted] == [5] * 8  # type: ignore[index]
    assert all(p["in_flight"] for p in evicted)


def test_in_flight_at_the_end_reach_the_matcher() -> None:
    matcher = Matcher()
    stream = JsonStream(matcher, CLOCK, "tracepoint", _path_of)
    stream.batch([_rec(SEND, 10, [(0xFFFF888004000000, 1, 5)])], 10**12)
    assert stream.pending() == 1 and matcher.pending == 0  # held as a record
    stream.batch([], 10**12, final=True)
    assert matcher.pending == 0 and stream.pending() == 0


def test_a_close_on_exec_receive_linked_here_names_its_sender_at_exec() -> None:
    address = 0xFFFF888005000000
    cloexec = {"fd_flags": events.FD_FLAG_CLOEXEC, "call_flags": int(socket.MSG_CMSG_CLOEXEC)}
    batches = [
        [_rec(SEND, 10, [(address, 1, 5)], pid=100),
         _rec(RECV, 20, [(address, 1, 8)], pid=200, **cloexec)],  # type: ignore[arg-type]
        [_rec(LOST, 30, [(address, 1, 8)], pid=200, reason=6, syscall=8)],
    ]
    parsed = _compare(batches)
    (lost,) = [p for p in parsed if p["event"] == "lost"]
    assert (lost["reason"], lost["pid"], lost["fd"]) == ("closed-on-exec", 100, 5)
    (linked,) = [p for p in parsed if p["event"] == "transfer"]
    assert linked["flags"] == ["CLOEXEC"]
    matcher = Matcher()
    stream = JsonStream(matcher, CLOCK, "tracepoint", _path_of)
    stream.batch(batches[0], 10**12)
    assert len(matcher._delivered) == 1 and matcher.pending == 0  # linked by the stream


def _lagging_reads(n: int, ctrunc_every: int, batch: int, lag: int) -> list[tuple[list[bytes],
                                                                                    list[bytes]]]:
    """The C loop of benchmarks/trace_overhead.py (send, receive, one receive in
    *ctrunc_every* cut short) as a reader *lag* records behind the probes reads
    it: at each poll, the anomaly ring whole (up to the probes' position),
    then *batch* routine records.  Returns (anomalies, routine) per poll."""
    pipe, ino, sock = 0xFFFF888006000000, 321, SOCK_FILE + 0x40
    ctrunc = int(socket.MSG_CTRUNC)
    stream: list[tuple[bool, bytes]] = []  # (an anomaly, the record) as the probes write them
    for i in range(n):
        ts = 10_000_000 + 4000 * i
        stream.append((False, _rec(SEND, ts, [(pipe, ino, 5)], sock_file=sock)))
        if i % ctrunc_every == ctrunc_every - 1:
            stream.append((True, _rec(RECV, ts + 2000, [], msg_flags=ctrunc, sock=4,
                                      sock_file=sock)))
        else:
            stream.append((False, _rec(RECV, ts + 2000, [(pipe, ino, 6)], sock=4,
                                       sock_file=sock)))
    routine = [r for anomaly, r in stream if not anomaly]
    reads: list[tuple[list[bytes], list[bytes]]] = []
    handed = 0  # anomalies read so far
    for start in range(0, len(routine), batch):
        written = start + batch + lag  # records the probes have written by then
        anomalies = [r for anomaly, r in stream[:written] if anomaly][handed:]
        handed += len(anomalies)
        reads.append((anomalies, routine[start:start + batch]))
    return reads


def test_a_receive_cut_short_read_ahead_of_its_send_is_linked_where_it_happened() -> None:
    """A reader far behind the probes gets each receive cut short hundreds of
    records before its send: held back until the routine records reach it,
    it cuts its own message, and every other receive links to its own send
    (none to a later one, none alone), on both ways."""
    held = HeldAnomalies()
    batches = []
    for anomalies, routine in _lagging_reads(600, 50, batch=64, lag=500):
        batches.append(held.take(anomalies, routine, drained=len(routine) < 64) + routine)
    batches.append(held.take([], [], drained=True))
    assert len(held) == 0
    parsed = _compare(batches)
    lost = [p for p in parsed if p["event"] == "lost"]
    assert len(lost) == 12 and all(p["reason"] == "ctrunc" and p["fd"] == 5 for p in lost)
    linked = [p for p in parsed if p["event"] == "transfer"]
    assert len(linked) == 600 - 12
    for p in linked:  # each receive 2 µs after its own send
        gap = int(p["receiver"]["time"][20:26]) - int(p["sender"]["time"][20:26])  # type: ignore[index]
        assert gap % 1_000_000 == 2  # microseconds, across a second boundary too


def test_anomalies_are_held_until_the_routine_records_reach_them() -> None:
    def rec(ts: int) -> bytes:
        return _rec(SEND, ts, [(0xFFFF888007000000, 1, 5)])

    held = HeldAnomalies(cap=3)
    early, late = rec(150), rec(400)
    assert held.take([early, late], [rec(100), rec(120)], drained=False) == []
    assert len(held) == 2
    # The routine records pass 150: the first is due, not the second.
    assert held.take([], [rec(140), rec(200)], drained=False) == [early]
    # The routine ring drained: every record read so far is due.
    assert held.take([], [rec(300)], drained=True) == [late]
    # Past the cap, the oldest go out early rather than pile up.
    many = [rec(1000 + i) for i in range(5)]
    assert held.take(many, [rec(500)], drained=False) == many[:2]
    assert held.take([], [], drained=True) == many[2:] and len(held) == 0


def test_records_dropped_by_a_full_ring_shift_no_later_pairing() -> None:
    """The C loop (one thread sends, then receives) with records the full ring
    refused: a receive whose send was dropped, or a cut whose message's send
    was, is reported alone; the thread's later sends, made after it returned,
    are not taken for its send, so every other receive links to its own."""
    pipe, ino, sock = 0xFFFF888008000000, 654, SOCK_FILE + 0x80
    ctrunc = int(socket.MSG_CTRUNC)
    records, dropped_sends = [], {7, 8, 30, 44}  # 44: the send of a cut message
    for i in range(60):
        ts = 50_000_000 + 4000 * i
        if i not in dropped_sends:
            records.append(_rec(SEND, ts, [(pipe, ino, 5)], sock_file=sock))
        if i in (19, 44):
            records.append(_rec(RECV, ts + 2000, [], msg_flags=ctrunc, sock=4, sock_file=sock))
        else:
            records.append(_rec(RECV, ts + 2000, [(pipe, ino, 6)], sock=4, sock_file=sock))
    batches = [records[i:i + 25] for i in range(0, len(records), 25)]
    parsed = _compare(batches)
    transfers = [p for p in parsed if p["event"] == "transfer"]
    # Not linked: the receives of sends 7, 8 and 30 (alone: no record), the cuts.
    assert len(transfers) == 60 - 3 - 2
    for p in transfers:  # each receive 2 µs after its own send, none before it
        gap = int(p["receiver"]["time"][20:26]) - int(p["sender"]["time"][20:26])  # type: ignore[index]
        assert gap % 1_000_000 == 2
    lost = sorted((p["fd"] is None, p["reason"]) for p in parsed if p["event"] == "lost")
    assert lost == [(False, "ctrunc"), (True, "ctrunc")]  # 44's send was not seen


def test_a_thread_that_received_a_file_and_sends_it_on_is_not_its_own_sender() -> None:
    """A relay receives a file before the original send is written (the sender's
    exit came later), then passes it on: its own send goes to the next receiver,
    the first receive waits for the original send."""
    f, t = (0xFFFF888009000000, 77), 10**12 - 10**6  # within the matcher's grace of 10**12
    batches = [
        [_rec(RECV, t + 1000, [(*f, 6)], pid=300, sock=4),  # the relay's receive
         _rec(SEND, t + 1500, [(*f, 6)], pid=300, sock=5)],  # the relay passes it on
        [_rec(SEND, t + 1200, [(*f, 5)], pid=100, sock=3),  # the original send, read late
         _rec(RECV, t + 2000, [(*f, 9)], pid=400, sock=7)],  # the last receiver
    ]
    parsed = _compare(batches)
    pairs = sorted((p["sender"]["pid"], p["receiver"]["pid"])  # type: ignore[index]
                   for p in parsed if p["event"] == "transfer")
    assert pairs == [(100, 300), (300, 400)]


def _refused_loop(n: int, runs: int, *, receiver_tid: int, cut_every: int,
                  seed: int) -> tuple[list[bytes], int]:
    """The C loop passing one pipe over one socket (*receiver_tid*: 0, the sending
    thread receives too), a receive cut short every *cut_every*, with *runs*
    runs of consecutive records refused by a full ring (sends and receives
    alike, 1 to 40 long) and as many receives refused alone.  Returns the
    records kept and how many were refused."""
    pipe, ino, sock = 0xFFFF88800A000000, 321, SOCK_FILE + 0x100
    ctrunc = int(socket.MSG_CTRUNC)
    written = []
    for i in range(n):
        ts = 70_000_000 + 3000 * i
        written.append(_rec(SEND, ts, [(pipe, ino, 5)], sock_file=sock))
        if i % cut_every == cut_every - 1:
            written.append(_rec(RECV, ts + 1500, [], msg_flags=ctrunc, sock=4, sock_file=sock,
                                tid=receiver_tid))
        else:
            written.append(_rec(RECV, ts + 1500, [(pipe, ino, 6)], sock=4, sock_file=sock,
                                tid=receiver_tid))
    rng = random.Random(seed)
    refused: set[int] = set()
    for _ in range(runs):
        start = rng.randrange(len(written))
        refused.update(range(start, min(len(written), start + rng.randint(1, 40))))
        refused.add(2 * rng.randrange(n) + 1)  # and a receive alone (room made meanwhile)
    return [r for i, r in enumerate(written) if i not in refused], len(refused)


def test_records_refused_in_runs_cost_only_themselves() -> None:
    """The C loop (one thread sends, then receives) while a full ring refuses
    runs of records: sends whose receive was refused stay pending (evicted at
    the cap), receives whose send was refused wait alone.  The pairs that are
    complete are still linked on the raw records: what is decoded is the cuts,
    the receives alone, the evicted sends -- not every record after the first
    refusal -- and the text is the general way's."""
    for seed in (1, 2, 3):
        records, refused = _refused_loop(3000, 40, receiver_tid=0, cut_every=250, seed=seed)
        batches = [records[i:i + 300] for i in range(0, len(records), 300)]
        for cap in (4, 65536):
            parsed = _compare(batches, max_pending=cap)
            assert sum(p["event"] == "transfer" and p["receiver"] is not None
                       and p["sender"] is not None for p in parsed) > 2500
            matcher = Matcher(max_pending=cap)
            _text, stream = _fast(batches, matcher)
            assert (matcher.evicted > 0) == (cap == 4)
            # Each refused record leaves at most one record alone (its pair);
            # an evicted send is decoded to be shown in flight; cuts are anomalies.
            assert stream.decoded <= refused + matcher.evicted + 3000 // 250, (
                seed, cap, stream.decoded, refused, matcher.evicted)


def test_records_refused_in_runs_between_two_threads_are_the_general_way() -> None:
    """The same with the receives made by another thread: a receive whose send
    was refused takes the next send (the matcher cannot tell it is not its
    own), and the pairing stays shifted until a refused receive ends it; those
    records go the general way, the text is the same."""
    for seed in (3, 4):
        records, _refused = _refused_loop(3000, 40, receiver_tid=201, cut_every=250, seed=seed)
        batches = [records[i:i + 300] for i in range(0, len(records), 300)]
        for cap in (4, 65536):
            _compare(batches, max_pending=cap)


def _mixed(seed: int) -> list[list[bytes]]:
    """Records over three files, two sockets and two threads, some stamped before
    those read earlier: mostly sends and receives (as if the ring had refused
    some of either), and cuts with and without fds, peeks, losses, two-fd
    sends, failed sends, close-on-exec receives; in batches of 1 to 40."""
    rng = random.Random(seed)
    files = [(0xFFFF88800B000000 + 0x100 * k, 900 + k) for k in range(3)]
    socks = [SOCK_FILE + 0x1000, SOCK_FILE + 0x2000]
    ctrunc, peek = int(socket.MSG_CTRUNC), int(socket.MSG_PEEK)
    records, ts = [], 10**9
    for _ in range(rng.randint(20, 300)):
        ts += rng.randint(1, 3000)
        f, g = rng.choice(files), rng.choice(files)
        kw = {"sock_file": rng.choice(socks), "tid": rng.choice([100, 100, 101])}
        stamp = ts - rng.randint(0, 5000) if rng.random() < 0.1 else ts
        x = rng.random()
        if x < 0.45:
            records.append(_rec(SEND, stamp, [(*f, 5)], **kw))
        elif x < 0.85:
            records.append(_rec(RECV, stamp, [(*f, 6)], **kw))
        elif x < 0.89:
            records.append(_rec(RECV, stamp, [], msg_flags=ctrunc, **kw))
        elif x < 0.91:
            records.append(_rec(RECV, stamp, [(*f, 6)], msg_flags=ctrunc, **kw))
        elif x < 0.93:
            records.append(_rec(RECV, stamp, [(*f, 6)], call_flags=peek, **kw))
        elif x < 0.95:
            records.append(_rec(LOST, stamp, [(*f, -1)], reason=2, syscall=5, tid=kw["tid"]))
        elif x < 0.97:
            records.append(_rec(SEND, stamp, [(*f, 5), (*g, 7)], **kw))
        elif x < 0.98:
            records.append(_rec(SEND, stamp, [(*f, 5)], ret=-9, **kw))
        else:
            records.append(_rec(RECV, stamp, [(*f, 6)], fd_flags=events.FD_FLAG_CLOEXEC,
                                call_flags=int(socket.MSG_CMSG_CLOEXEC), **kw))
    batches, i = [], 0
    while i < len(records):
        n = rng.randint(1, 40)
        batches.append(records[i:i + n])
        i += n
    return batches


def test_unpaired_sends_and_receives_amid_anomalies_are_the_general_way() -> None:
    """What the matcher is handed of the sends pending here (those it could take,
    and every older one) leaves it where feeding it every event would: the
    same pairs, cuts, losses and evictions, whatever the mix."""
    for seed in range(60):
        batches = _mixed(seed)
        for cap in (2, 5, 65536):
            _compare(batches, max_pending=cap)


def test_a_receive_alone_does_not_make_its_threads_next_sends_ask_the_matcher() -> None:
    """The C loop with sends refused alone: each receive whose send was refused
    waits in the matcher (alone at the end), and the same thread's later sends
    are not its send -- known without asking the matcher, whose answer means
    a look at every receive waiting."""
    records, written = [], 0
    pipe, ino = 0xFFFF88800C000000, 432
    for i in range(2000):
        ts = 80_000_000 + 3000 * i
        if i % 20 != 7:
            records.append(_rec(SEND, ts, [(pipe, ino, 5)]))
        records.append(_rec(RECV, ts + 1500, [(pipe, ino, 6)], sock=4))
        written += 2
    batches = [records[i:i + 256] for i in range(0, len(records), 256)]
    parsed = _compare(batches)
    assert sum(p["event"] == "transfer" and p["sender"] is not None for p in parsed) == 1900
    matcher, asked = Matcher(), []
    real = matcher.takes_send
    matcher.takes_send = lambda *a: asked.append(a) or real(*a)  # type: ignore[method-assign]
    _text, stream = _fast(batches, matcher)
    assert stream.decoded == 100  # the receives alone
    assert len(asked) <= 2, len(asked)
