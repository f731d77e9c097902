"""A stateful property test of rawsys's send and receive functions, CPython as the oracle.

Hypothesis drives a state machine that interleaves valid and invalid calls
of every public send/receive function of the Pythonic layer (``send_fds``,
``send_fd``, ``send_message``, ``send_credentials``, ``send_fds_batch``,
``recv_fds``, ``recv_fd``, ``recv_message``, ``recv_fds_batch``) -- also from
several threads at once, each on its own sockets, all sharing rawsys's
pooled buffers.  Each call is made twice: through rawsys on one socket pair,
and through CPython's ``socket`` module on a parallel pair
(``tests/stateful_support.py`` says how each maps).  After every call what
arrived on each wire is read with CPython and compared: the bytes, the
number of fds and each fd's identity (``st_dev``, ``st_ino``, access mode,
close-on-exec), the flags, and the exception class (and errno) where the
call was refused.  A refused call must leave nothing behind: the next valid
call sends exactly what it says.

The run is derandomized and bounded (no example database), so CI sees the
same calls every time; the summary line printed at the end gives the steps
run and the mismatches found.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
import threading
from dataclasses import replace
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from stateful_support import (
    BIG,
    CALLS,
    FILES,
    SCM_MAX_FD,
    Channel,
    Chunk,
    F,
    Iter,
    Op,
    Packed,
    Peer,
    Repeat,
    compare,
    drain,
    open_fd_count,
)

import rawsys
from rawsys import ScmCredentials, ScmRights, UnknownControl

pytestmark = pytest.mark.usefixtures("fd_leak_check")

STATS: Dict[str, int] = {"examples": 0, "steps": 0, "calls": 0, "mismatches": 0}

# ---------------------------------------------------------------- arguments
# Each operation has at most one invalid argument, so the exception it must
# raise does not depend on which argument an implementation checks first.

NOT_AN_INT = ["bad", None, 1.5, b"3"]
FILE = st.builds(F, st.integers(0, FILES - 1))


def chunks() -> st.SearchStrategy[Tuple[Chunk, ...]]:
    chunk = st.builds(Chunk, st.binary(min_size=0, max_size=6),
                      st.sampled_from(["bytes", "bytearray", "memoryview"]))
    big = st.just(Chunk(b"B" * BIG))
    return st.lists(st.one_of(chunk, chunk, chunk, big), min_size=0, max_size=3).map(tuple).filter(
        lambda cs: sum(len(c.data) for c in cs) <= BIG + 20)


SMALL_CHUNKS = st.lists(st.builds(Chunk, st.binary(min_size=1, max_size=6)), min_size=1,
                        max_size=2).map(tuple)
BAD_BUFFERS = st.sampled_from([("text",), (1,), None, 5, b"abc", (b"ok", None)])


def valid_fds() -> st.SearchStrategy[Any]:
    listed = st.lists(FILE, min_size=0, max_size=4)
    return st.one_of(
        listed, listed.map(tuple), listed.map(lambda fs: Iter(tuple(fs))),
        st.builds(Repeat, FILE, st.just(SCM_MAX_FD)),  # the most one message carries
    )


def invalid_fds() -> st.SearchStrategy[Any]:
    bad_item = st.sampled_from(NOT_AN_INT + [2**40, -(2**40), 2**31, -1, 999_999])

    def insert(fs: List[Any], bad: Any, at: int) -> List[Any]:
        return fs[: at % (len(fs) + 1)] + [bad] + fs[at % (len(fs) + 1):]

    with_bad = st.builds(insert, st.lists(FILE, max_size=3), bad_item, st.integers(0, 3))
    return st.one_of(
        with_bad, with_bad.map(tuple),
        st.builds(Repeat, FILE, st.sampled_from([SCM_MAX_FD + 1, 300])),  # too many
        st.builds(Packed, st.lists(FILE, min_size=1, max_size=2).map(tuple),
                  st.sampled_from(["bytes", "bytearray", "memoryview"]),
                  st.sampled_from([b"", b"\x00\x01\x02"])),  # bytes-like fds
        st.sampled_from([None, 5, "ab"]),  # not an iterable of ints
    )


# Plain ints, and once the socket module's enum (rawsys takes both).
SEND_FLAGS = st.sampled_from([0, 0, 0, int(socket.MSG_DONTWAIT), int(socket.MSG_NOSIGNAL),
                              socket.MSG_DONTWAIT])
RECV_FLAGS = st.sampled_from([0, 0, 0, int(socket.MSG_DONTWAIT), int(socket.MSG_PEEK),
                              int(socket.MSG_CMSG_CLOEXEC), socket.MSG_PEEK])
BAD_FLAGS = st.sampled_from(NOT_AN_INT + [2**40, -(2**40), int(socket.MSG_OOB)])
ADDRESS = st.sampled_from([None, None, None, Peer()])
BAD_ADDRESS = st.sampled_from([(), 123, ("127.0.0.1", 80), "/nonexistent/rawsys",
                               "\0rawsys-stateful-nobody"])


# Which pair: datagrams, with SO_PASSCRED, with SO_PASSPIDFD, or a stream.
ON = st.sampled_from([{}, {}, {"passcred": True}, {"passpidfd": True}, {"stream": True}])


def one_bad(valid: Dict[str, st.SearchStrategy[Any]],
            invalid: Dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Dict[str, Any]]:
    """Arguments drawn from *valid*, or with one of them from *invalid* instead."""

    @st.composite
    def draw(draw: Any) -> Dict[str, Any]:
        args = {name: draw(strategy) for name, strategy in valid.items()}
        bad = draw(st.sampled_from([None, None] + sorted(invalid)))
        if bad is not None:
            args[bad] = draw(invalid[bad])
        return args

    return draw()


def _send_fds(a: Dict[str, Any]) -> Op:
    kwargs: Tuple[Tuple[str, Any], ...] = ()
    if a["address"] is not None:
        kwargs = (("address", a["address"]),)
    return Op("send_fds", (a["buffers"], a["fds"], a["flags"]), kwargs, **a["on"])


SEND_FDS = one_bad(
    {"buffers": chunks(), "fds": valid_fds(), "flags": SEND_FLAGS, "address": ADDRESS,
     "on": ON},
    {"buffers": BAD_BUFFERS, "fds": invalid_fds(), "flags": BAD_FLAGS, "address": BAD_ADDRESS},
).map(_send_fds)

SEND_FD = st.one_of(FILE, st.sampled_from(NOT_AN_INT + [2**40, -1, 999_999])).map(
    lambda fd: Op("send_fd", (fd,)))


def _control(rights: Any, creds: Any) -> List[Any]:
    return [c for c in (creds, rights) if c is not None]


def _send_message(a: Dict[str, Any]) -> Op:
    return Op("send_message", (a["buffers"], a["control"], a["flags"], a["address"]),
              **a["on"])


OWN = ScmCredentials(os.getpid(), os.getuid(), os.getgid())
GOOD_CONTROL = st.builds(
    _control,
    st.one_of(st.none(), st.lists(FILE, max_size=3).map(lambda fs: ScmRights(tuple(fs)))),
    st.sampled_from([None, OWN]),
)
BAD_CONTROL = st.sampled_from([
    [ScmRights(("3",))], [ScmRights((2**40,))], [ScmRights((F(0), None))],
    [ScmCredentials(-1, -1, -1)], [ScmCredentials("1", 0, 0)], [ScmCredentials(2**40, 0, 0)],
    [UnknownControl(socket.SOL_SOCKET, 99, b"")], ["junk"], [OWN, ScmRights((1.5,))],
])
SEND_MESSAGE = one_bad(
    {"buffers": chunks(), "control": GOOD_CONTROL, "flags": SEND_FLAGS, "address": ADDRESS,
     "on": ON},
    {"buffers": BAD_BUFFERS, "control": BAD_CONTROL, "flags": BAD_FLAGS,
     "address": BAD_ADDRESS},
).map(_send_message)


def _send_credentials(a: Dict[str, Any]) -> Op:
    return Op("send_credentials", (a["buffers"], a["credentials"], a["fds"], a["flags"],
                                   a["address"]), passcred=True)


SEND_CREDENTIALS = one_bad(
    {"buffers": chunks(), "credentials": st.sampled_from([None, OWN]),
     "fds": st.lists(FILE, max_size=3).map(tuple), "flags": SEND_FLAGS, "address": ADDRESS},
    {"buffers": BAD_BUFFERS, "flags": BAD_FLAGS, "address": BAD_ADDRESS,
     "credentials": st.sampled_from([ScmCredentials(-1, -1, -1), ScmCredentials(0, "0", 0),
                                     ScmCredentials(os.getpid(), 2**40, 0)]),
     "fds": st.sampled_from([("bad",), (F(1), None), (2**40,), (-1,)])},
).map(_send_credentials)


def _batch(a: Dict[str, Any]) -> Op:
    return Op("send_fds_batch", (a["items"], a["flags"]))


BATCH_ITEM = st.tuples(SMALL_CHUNKS, st.lists(FILE, max_size=3).map(tuple))


def _spoil(items: List[Any], bad: Any, at: int) -> List[Any]:
    items = list(items)
    items[at % len(items)] = bad
    return items


BAD_ITEM = st.one_of(
    st.tuples(SMALL_CHUNKS, invalid_fds().filter(lambda f: not isinstance(f, Repeat))),
    st.tuples(BAD_BUFFERS.filter(lambda b: b is not None and b != 5), st.just(())),
    st.sampled_from([None, (), ((b"x",),), ((b"x",), (), ())]),  # not a (buffers, fds) pair
)
SEND_FDS_BATCH = one_bad(
    {"items": st.lists(BATCH_ITEM, min_size=0, max_size=4), "flags": SEND_FLAGS},
    {"items": st.builds(_spoil, st.lists(BATCH_ITEM, min_size=1, max_size=3), BAD_ITEM,
                        st.integers(0, 3)),
     "flags": BAD_FLAGS},
).map(_batch)

# Messages queued (through CPython) before a receive: data and fds.
QUEUED = st.lists(
    st.tuples(SMALL_CHUNKS, st.one_of(st.lists(FILE, max_size=4).map(tuple),
                                      st.just((F(0),) * 10))),
    min_size=1, max_size=3).map(tuple)
BUFSIZE = st.sampled_from([0, 1, 3, 100, BIG + 10])
BAD_BUFSIZE = st.sampled_from(NOT_AN_INT + [-1, 2**63])
MAXFDS = st.sampled_from([0, 1, 2, 4, 10, SCM_MAX_FD, 300])
BAD_MAXFDS = st.sampled_from(NOT_AN_INT + [-1, 2**40])


def _recv_fds(a: Dict[str, Any]) -> Op:
    return Op("recv_fds", (a["bufsize"], a["maxfds"], a["flags"]),
              (("cloexec", a["cloexec"]),), queue=a["queue"], **a["on"])


RECV_FDS = one_bad(
    {"bufsize": BUFSIZE, "maxfds": MAXFDS, "flags": RECV_FLAGS, "cloexec": st.booleans(),
     "queue": QUEUED, "on": ON},
    {"bufsize": BAD_BUFSIZE, "maxfds": BAD_MAXFDS, "flags": BAD_FLAGS},
).map(_recv_fds)

RECV_FD = st.builds(lambda q, on: Op("recv_fd", (), queue=q, **on), QUEUED, ON)


def _recv_message(a: Dict[str, Any]) -> Op:
    return Op("recv_message", (a["bufsize"], a["maxfds"], a["flags"]),
              (("credentials", a["credentials"]), ("pidfd", a["pidfd"]), ("cloexec", a["cloexec"])),
              queue=a["queue"], **a["on"])


RECV_MESSAGE = one_bad(
    {"bufsize": BUFSIZE, "maxfds": MAXFDS, "flags": RECV_FLAGS, "cloexec": st.booleans(),
     "credentials": st.booleans(), "pidfd": st.booleans(), "queue": QUEUED, "on": ON},
    {"bufsize": BAD_BUFSIZE, "maxfds": BAD_MAXFDS, "flags": BAD_FLAGS},
).map(_recv_message)


def _recv_fds_batch(a: Dict[str, Any]) -> Op:
    return Op("recv_fds_batch", (a["count"], a["bufsize"], a["maxfds"], a["flags"]),
              (("cloexec", a["cloexec"]),), queue=a["queue"], **a["on"])


RECV_FDS_BATCH = one_bad(
    {"count": st.sampled_from([0, 1, 2, 3, 8]), "bufsize": BUFSIZE, "maxfds": MAXFDS,
     "flags": st.sampled_from([0, int(socket.MSG_DONTWAIT), int(socket.MSG_CMSG_CLOEXEC)]),
     "cloexec": st.booleans(), "queue": QUEUED, "on": ON},
    {"count": st.sampled_from(NOT_AN_INT + [-1]), "bufsize": BAD_BUFSIZE,
     "maxfds": BAD_MAXFDS, "flags": BAD_FLAGS},
).map(_recv_fds_batch)

# On AF_INET (UDP): addresses CPython checks (a port out of range is OverflowError,
# never another port), no fds (rawsys refuses them: FdPassingUnsupportedError).
BAD_UDP_ADDRESS = st.sampled_from([Peer(65536), Peer(-70000), ("127.0.0.1",),
                                   ("127.0.0.1", "80"), "/tmp/rawsys", ()])


def _udp_send(a: Dict[str, Any]) -> Op:
    kwargs: Tuple[Tuple[str, Any], ...] = (("address", a["address"]),)
    if a["control"]:
        return Op("send_message", (a["buffers"], (), a["flags"]), kwargs, udp=True)
    return Op("send_fds", (a["buffers"], a["fds"], a["flags"]), kwargs, udp=True)


UDP_SEND = one_bad(
    {"buffers": SMALL_CHUNKS, "flags": SEND_FLAGS, "address": st.sampled_from([None, Peer()]),
     "control": st.booleans(), "fds": st.just(())},
    {"buffers": BAD_BUFFERS, "flags": BAD_FLAGS, "address": BAD_UDP_ADDRESS,
     "fds": st.lists(FILE, min_size=1, max_size=2)},
).map(_udp_send)
UDP_QUEUED = st.lists(st.tuples(SMALL_CHUNKS, st.just(())), min_size=1, max_size=2).map(tuple)
UDP_RECV = st.one_of(
    RECV_FDS.map(lambda op: Op(op.name, op.args, op.kwargs, (((Chunk(b"u"),), ()),), udp=True)),
    st.builds(lambda q, n: Op("recv_message", (n, 0), queue=q, udp=True), UDP_QUEUED, BUFSIZE),
)


def or_fileno(ops: st.SearchStrategy[Op]) -> st.SearchStrategy[Op]:
    """*ops*, a quarter of them given to rawsys as the socket's fd number."""
    return st.builds(lambda op, fileno: replace(op, fileno=fileno), ops,
                     st.sampled_from([False, False, False, True]))


ANY_OP = st.one_of(SEND_FDS, SEND_FD, SEND_MESSAGE, SEND_CREDENTIALS, SEND_FDS_BATCH,
                   RECV_FDS, RECV_FD, RECV_MESSAGE, RECV_FDS_BATCH, UDP_SEND, UDP_RECV)
# In threads: no 253-fd messages (four threads' worth at once is many fds).
THREAD_OP = or_fileno(ANY_OP).filter(lambda op: not any(isinstance(a, Repeat) for a in op.args))


# ---------------------------------------------------------------- the machine


def _run_ops(name: str, channel: Channel, ops: List[Op], problems: List[str]) -> None:
    for op in ops:
        try:
            problems.extend(f"{name}: {p}" for p in compare(channel, op))
        except BaseException as exc:  # a crash of the harness or of rawsys: also a finding
            problems.append(f"{name}: {op!r}: {type(exc).__name__}: {exc}")
            return


class FdWire(RuleBasedStateMachine):
    """rawsys and CPython, call by call, on parallel sockets; the wires must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.fds_before = open_fd_count()
        self.channels = [Channel() for _ in range(4)]  # 0: the main thread's
        STATS["examples"] += 1

    def _check(self, problems: List[str]) -> None:
        STATS["steps"] += 1
        if problems:
            STATS["mismatches"] += len(problems)
            raise AssertionError("rawsys and CPython differ:\n" + "\n".join(problems))

    def _one(self, op: Op) -> None:
        STATS["calls"] += 1
        self._check(compare(self.channels[0], op))

    @rule(op=or_fileno(SEND_FDS))
    def send_fds(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(SEND_FD))
    def send_fd(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(SEND_MESSAGE))
    def send_message(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(SEND_CREDENTIALS))
    def send_credentials(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(SEND_FDS_BATCH))
    def send_fds_batch(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(RECV_FDS))
    def recv_fds(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(RECV_FD))
    def recv_fd(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(RECV_MESSAGE))
    def recv_message(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(RECV_FDS_BATCH))
    def recv_fds_batch(self, op: Op) -> None:
        self._one(op)

    @rule(op=or_fileno(st.one_of(UDP_SEND, UDP_RECV)))
    def udp(self, op: Op) -> None:
        self._one(op)

    @rule(plans=st.lists(st.lists(THREAD_OP, min_size=1, max_size=5), min_size=2, max_size=4))
    def threads(self, plans: List[List[Op]]) -> None:
        """Each plan on its own thread and channel, all at once, sharing rawsys's pools."""
        problems: List[str] = []
        start = threading.Barrier(len(plans))

        def worker(i: int, ops: List[Op]) -> None:
            start.wait()
            _run_ops(f"thread {i}", self.channels[i], ops, problems)

        threads = [threading.Thread(target=worker, args=(i, ops)) for i, ops in enumerate(plans)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # switch threads often: interleave inside calls
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        STATS["calls"] += sum(map(len, plans))
        self._check(problems)

    @invariant()
    def wires_empty(self) -> None:
        for channel in self.channels:
            for pair in channel.pairs.values():
                left = drain(pair)
                assert not left, f"left on a wire: {left!r}"

    def teardown(self) -> None:
        for channel in self.channels:
            channel.close()
        after = open_fd_count()
        assert after == self.fds_before, (
            f"{after - self.fds_before} fds more open than before this example")


FdWire.TestCase.settings = settings(
    derandomize=True, database=None, deadline=None, max_examples=120,
    stateful_step_count=30, print_blob=False,
    # No shrinking: it takes minutes on thread steps, and the failure message
    # already names the call and both outcomes, after the steps that led there.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)


def test_rawsys_and_cpython_agree_call_by_call(capsys: pytest.CaptureFixture[str]) -> None:
    """Every step of the state machine: the same outcome through rawsys and through CPython."""
    # A call that blocks fails the run instead of hanging it.
    faulthandler.dump_traceback_later(600, exit=True, file=2)  # the real stderr
    try:
        FdWire.TestCase("runTest").runTest()
    finally:
        faulthandler.cancel_dump_traceback_later()
        with capsys.disabled():
            print(f"\nstateful: {STATS['examples']} examples, {STATS['steps']} steps run, "
                  f"{STATS['calls']} calls on each side, {STATS['mismatches']} mismatches")
            for name in sorted({name for name, _ in CALLS}):
                outcomes = {o: n for (f, o), n in CALLS.items() if f == name}
                print(f"  {name}: " + ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items())))
    assert STATS["steps"] > 0
    # Every function was called, both accepted and refused (a run that never
    # reaches a case cannot find its bugs).
    for name in ["send_fds", "send_fd", "send_message", "send_credentials", "send_fds_batch",
                 "recv_fds", "recv_message", "recv_fds_batch"]:
        assert CALLS[(name, "ok")] and sum(n for (f, o), n in CALLS.items()
                                           if f == name and o != "ok"), name
    assert CALLS[("recv_fd", "ok")]


# ---------------------------------------------------------------- the comparison itself


def _stdin_too(sock: Any, fd: int) -> int:
    return socket.send_fds(sock, [b"x"], [fd, 0])


def _other_file(sock: Any, fd: int) -> int:
    return socket.send_fds(sock, [b"x"], [fd + 1])


def _twice(sock: Any, fd: int) -> int:
    socket.send_fds(sock, [b"x"], [fd])
    return socket.send_fds(sock, [b"x"], [fd])


def _wrong_error(sock: Any, fd: int) -> int:
    raise ValueError(fd)


def _inheritable(sock: Any, bufsize: int, maxfds: int, flags: int = 0,
                 cloexec: bool = True) -> Any:
    return socket.recv_fds(sock, bufsize, maxfds, flags)


@pytest.mark.parametrize("name, fake, op", [
    ("send_fd", _stdin_too, Op("send_fd", (F(0),))),
    ("send_fd", _other_file, Op("send_fd", (F(0),))),
    ("send_fd", _twice, Op("send_fd", (F(0),))),
    ("send_fd", _wrong_error, Op("send_fd", ("bad",))),
    ("recv_fds", _inheritable, Op("recv_fds", (10, 2), queue=(((Chunk(b"x"),), (F(1),)),))),
], ids=["stdin-too", "other-file", "twice", "wrong-error", "not-cloexec"])
def test_the_comparison_sees_a_wrong_implementation(monkeypatch: pytest.MonkeyPatch, name: str,
                                                    fake: Any, op: Op) -> None:
    """The oracle is not vacuous: a send of the wrong fds, or a wrong exception, is reported."""
    monkeypatch.setattr(rawsys, name, fake)
    channel = Channel()
    try:
        assert compare(channel, op)
    finally:
        channel.close()


# ---------------------------------------------------------------- cases it found
# The first failures the state machine found, as fixed sequences: the same
# comparison, readable on their own.


def _agree(*ops: Op) -> None:
    channel = Channel()
    try:
        problems = [p for op in ops for p in compare(channel, op)]
    finally:
        channel.close()
    assert not problems, "rawsys and CPython differ:\n" + "\n".join(problems)


@pytest.mark.parametrize("bad", [
    [F(0), "bad"], [F(0), None], (F(0), 1.5), [F(0), 2**40], [F(0), F(1), "bad"],
    Repeat(F(0), SCM_MAX_FD + 1),
], ids=repr)
def test_found_rejected_send_fds_then_send_fd_sends_one_fd(bad: Any) -> None:
    """A refused send_fds leaves nothing behind: the next send_fd sends exactly its fd."""
    _agree(Op("send_fd", (F(2),)), Op("send_fds", ((Chunk(b"x"),), bad, 0)),
           Op("send_fd", (F(3),)), Op("send_fds", ((Chunk(b"y"),), [F(4)], 0)))


@pytest.mark.parametrize("fds", [
    Packed((F(0),)), Packed((F(0), F(1)), "bytearray"), Packed((F(1),), "memoryview"),
    Packed((F(0),), "bytes", b"\x00\x01\x02"),
], ids=repr)
def test_found_bytes_like_fds_as_cpython(fds: Packed) -> None:
    """fds as a bytes-like object: CPython's ``array("i", fds)`` reads native ints."""
    _agree(Op("send_fds", ((Chunk(b"x"),), fds, 0)),
           Op("send_fds_batch", ([((Chunk(b"x"),), fds)], 0)))


@pytest.mark.parametrize("creds", [
    ScmCredentials("1", 0, 0), ScmCredentials(2**40, 0, 0), ScmCredentials(-1, -1, -1),
    ScmCredentials(os.getpid(), "0", 0),
], ids=["pid-str", "pid-2**40", "all--1", "uid-str"])
def test_found_bad_credentials_raise_what_cpython_raises(creds: ScmCredentials) -> None:
    _agree(Op("send_message", ((Chunk(b"x"),), [creds]), passcred=True),
           Op("send_credentials", ((Chunk(b"x"),), creds), passcred=True),
           Op("send_credentials", ((Chunk(b"x"),), None, (2**40,)), passcred=True))


def test_found_recv_fds_batch_with_passcred_truncates_as_recv_fds() -> None:
    queued = (((Chunk(b"x"),), (F(0),)),)
    _agree(Op("recv_fds_batch", (1, 10, 0), queue=queued, passcred=True),
           Op("recv_fds", (10, 0), queue=queued, passcred=True))


def test_found_recv_message_refuses_maxfds_as_recv_fds() -> None:
    queued = (((Chunk(b"x"),), (F(0),)),)
    _agree(Op("recv_fds", (10, 2**40), queue=queued),
           Op("recv_message", (10, 2**40), queue=queued))


@pytest.mark.parametrize("address", [
    Peer(65536), Peer(-70000), (), ("127.0.0.1",), ("127.0.0.1", "80"),
], ids=repr)
def test_found_bad_inet_address_raises_what_cpython_raises(address: Any) -> None:
    """A port out of range is never another port; a bad address shape is a TypeError."""
    _agree(Op("send_fds", ((Chunk(b"x"),), [], 0), (("address", address),), udp=True),
           Op("send_message", ((Chunk(b"x"),), (), 0, address), udp=True))


def test_found_recv_fds_batch_checks_bufsize_whatever_the_count() -> None:
    """``count=0`` receives nothing, but its arguments are checked as for any count."""
    queued = (((Chunk(b"x"),), ()),)
    _agree(Op("recv_fds_batch", (1, 2**63, 1), queue=queued),
           Op("recv_fds_batch", (0, 2**63, 1), queue=queued))
