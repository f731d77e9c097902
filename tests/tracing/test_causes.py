"""Why an fd went missing: each cause reproduced, and named by the live tracer.

``csrc/lostfd.c`` and ``csrc/lostfd.py`` make a parent send pipe fds to its
child over a unix socketpair, then lose them one way each (control buffer
too small or absent, read/recv without control buffer, a zero-length
SOCK_STREAM send, the receiving socket closed or its process exited with the
message queued, a full fd table, close-on-exec then exec).  The tracer runs
filtered on the program's name; its ``lost`` records (the ``--json``
output's, from :class:`LostEvent.to_json`) must name the cause, the sender
(pid and fd, as the program printed them), the file (the pipe's inode, as
``fstat`` gave it) and, where the kernel shows one, the receiver.

Pure tests of the linking rules come first (no kernel needed); the live ones
are marked ``kernel_matrix`` so that ``./dev kernels`` runs them on every
backend.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from tracing_helpers import forced_backend, require_live_tracing

from rawsys.trace.events import (
    FileIdentity,
    LossReason,
    LossReport,
    LostEvent,
    RecvEvent,
    SendEvent,
    Transfer,
)
from rawsys.trace.matcher import Matcher, Verdict
from rawsys.trace.session import Session

CSRC = Path(__file__).parent / "csrc"
C_NAME = "lostfd-c-causes"  # 15 characters: the most a comm holds, and -n takes
PY_NAME = "lostfd-py"


# ------------------------------------------------------------------ pure rules
def _file(address: int, inode: int = 1) -> FileIdentity:
    return FileIdentity(address, inode, 0o10600, 2, "")


def _send(fds: tuple[int, ...], files: tuple[FileIdentity, ...], ts: int,
          sock_file: int = 0) -> SendEvent:
    return SendEvent(pid=1, tid=1, comm="snd", sock=3, fds=fds, files=files,
                     flags=frozenset(), ok=True, errno=0, ret=1, syscall="sendmsg",
                     msg_index=0, backend="test", timestamp_ns=ts, sock_file=sock_file)


def _recv(fds: tuple[int, ...], files: tuple[FileIdentity, ...], ts: int,
          flags: frozenset[str] = frozenset(), sock_file: int = 0,
          ev_flags: int = 0) -> RecvEvent:
    return RecvEvent(pid=2, tid=2, comm="rcv", sock=4, fds=fds, files=files, flags=flags,
                     ok=True, errno=0, ret=1, syscall="recvmsg", msg_index=0, backend="test",
                     timestamp_ns=ts, sock_file=sock_file, ev_flags=ev_flags,
                     cloexec=tuple(False for _ in fds))


def test_a_slow_receive_is_linked_not_split() -> None:
    m = Matcher(grace_ns=2_000_000_000)
    assert m.feed(_send((5,), (_file(0xA),), 1_000_000_000)) == []
    (t,) = m.feed(_recv((9,), (_file(0xA),), 300_000_000_000))  # five minutes later
    assert isinstance(t, Transfer) and t.matched and (t.send_fd, t.recv_fd) == (5, 9)
    assert m.flush() == []


def test_a_reused_file_address_never_links_to_a_stale_send() -> None:
    m = Matcher()
    m.feed(_send((5,), (_file(0xA, inode=100),), 1))  # its fd was lost unseen
    (t,) = m.feed(_send((6,), (_file(0xA, inode=200),), 2)) or m.feed(
        _recv((9,), (_file(0xA, inode=200),), 3))
    assert isinstance(t, Transfer) and t.send is not None and t.send_fd == 6


def test_a_receive_cut_short_names_the_fds_that_did_not_fit() -> None:
    m = Matcher()
    m.feed(_send((5, 6), (_file(0xA), _file(0xB)), 1, sock_file=0x77))
    out = m.feed(_recv((9,), (_file(0xA),), 2, frozenset({"CTRUNC"})))
    transfer, lost = out
    assert isinstance(transfer, Transfer) and transfer.send_fd == 5
    assert isinstance(lost, LostEvent)
    assert (lost.reason, lost.fd, lost.fit, lost.file.address) == ("ctrunc", 6, 1, 0xB)
    assert lost.receiver is not None and lost.receiver.pid == 2


def test_a_receive_without_control_buffer_is_linked_through_the_peer_socket() -> None:
    m = Matcher()
    m.feed(_send((5,), (_file(0xA),), 1, sock_file=0x77))
    (lost,) = m.feed(_recv((), (), 2, frozenset({"CTRUNC"}), sock_file=0x77))
    assert isinstance(lost, LostEvent)
    assert (lost.reason, lost.pid, lost.fd, lost.fit) == ("ctrunc", 1, 5, 0)
    assert m.flush() == []  # not also NOSEND, nor in flight


def test_pending_sends_are_capped_and_evictions_counted() -> None:
    m = Matcher(max_pending=2)
    out: list[Verdict] = []
    for i in range(3):
        out += m.feed(_send((i,), (_file(0x10 + i),), i))
    assert m.evicted == 1
    assert [(v.send_fd, v.in_flight) for v in out if isinstance(v, Transfer)] == [(0, True)]


def test_a_loss_report_consumes_its_send() -> None:
    m = Matcher()
    m.feed(_send((5,), (_file(0xA),), 1))
    report = LossReport(pid=2, tid=2, comm="rcv", sock=4, fds=(-1,), files=(_file(0xA),),
                        flags=frozenset(), ok=True, errno=0, ret=1, syscall="read",
                        msg_index=0, backend="test", timestamp_ns=2,
                        reason=LossReason.READ_WITHOUT_CONTROL)
    (lost,) = m.feed(report)
    assert isinstance(lost, LostEvent) and (lost.reason, lost.pid, lost.fd) == (
        "read-without-control", 1, 5)
    j = lost.to_json()
    assert set(j) >= {"event", "reason", "pid", "tid", "comm", "fd", "file", "receiver", "time"}
    assert j["receiver"] == {"pid": 2, "tid": 2, "comm": "rcv", "sock": 4}
    datetime.datetime.fromisoformat(str(j["time"]))
    assert m.flush() == []


# ------------------------------------------------------------------ live
@pytest.fixture(scope="module")
def c_program(build_c: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = build_c(CSRC / "lostfd.c")
    dest = tmp_path_factory.mktemp("lostfd") / C_NAME  # its comm is then C_NAME
    dest.write_bytes(exe.read_bytes())
    dest.chmod(0o755)
    return dest


@pytest.fixture(scope="module")
def c_session() -> Iterator[Session]:
    require_live_tracing()
    with Session(comm=C_NAME, backend=forced_backend()) as s:
        yield s


@pytest.fixture(scope="module")
def py_session() -> Iterator[Session]:
    require_live_tracing()
    with Session(comm=PY_NAME, backend=forced_backend()) as s:
        yield s


def run_and_trace(s: Session, argv: list[str], want: Callable[[list[Verdict]], bool],
                  timeout: float = 10.0) -> tuple[dict[str, list[tuple[int, ...]]], list[Verdict]]:
    """Run a reproducer; the roles it printed and the verdicts the tracer gave."""
    s.drain()
    m = Matcher()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    roles: dict[str, list[tuple[int, ...]]] = {}
    for line in res.stdout.splitlines():
        words = line.split()
        roles.setdefault(words[0], []).append(tuple(int(w) for w in words[2::2]))
    verdicts: list[Verdict] = []
    deadline = time.monotonic() + timeout
    while not want(verdicts) and time.monotonic() < deadline:
        # In the order they happened, as Session.transfers feeds them (the
        # anomaly ring, read first, holds the losses).
        for ev in sorted(s.poll(0.1), key=lambda e: e.timestamp_ns):
            verdicts += m.feed(ev)
    return roles, verdicts


def losses(verdicts: list[Verdict]) -> list[LostEvent]:
    return [v for v in verdicts if isinstance(v, LostEvent)]


# cause -> (reason, lost fds (index into the fds sent), installed first, receiver shown)
CAUSES = {
    "ctrunc": ("ctrunc", [1], 1, True),
    "nocontrol": ("ctrunc", [0], 0, True),
    "read": ("read-without-control", [0], 0, True),
    "recv": ("read-without-control", [0], 0, True),
    "zero": ("zero-length-stream", [0], 0, False),
    "close": ("socket-closed", [0], 0, True),
    "exit": ("socket-closed", [0], 0, True),
    "emfile": ("emfile", [1], 1, True),
    "exec": ("closed-on-exec", [0], 1, True),
}


def check_cause(s: Session, argv: list[str], cause: str, name: str) -> None:
    reason, lost_idx, installed, shows_receiver = CAUSES[cause]
    roles, verdicts = run_and_trace(
        s, argv, lambda vs: len(losses(vs)) >= len(lost_idx))
    sent = roles["sender"]
    (receiver,) = roles["receiver"]
    got = losses(verdicts)
    assert len(got) == len(lost_idx), f"{cause}: {verdicts}"
    for lost, i in zip(got, lost_idx):
        sender_pid, fd, ino = sent[i]
        j = lost.to_json()
        assert j["event"] == "lost" and j["reason"] == reason, j
        assert (j["pid"], j["fd"], j["comm"]) == (sender_pid, fd, name), j
        assert lost.file.inode == ino and lost.file.kind == "pipe", j
        datetime.datetime.fromisoformat(str(j["time"]))
        if shows_receiver:
            assert isinstance(j["receiver"], dict), j
            assert j["receiver"]["pid"] == receiver[0] and j["receiver"]["comm"] == name, j
        else:
            assert j["receiver"] is None, j
        if reason in ("ctrunc", "emfile"):
            assert j["fit"] == installed, j
    transfers = [v for v in verdicts if isinstance(v, Transfer) and v.matched]
    assert len(transfers) == installed, f"{cause}: {verdicts}"


@pytest.mark.kernel_matrix
@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_c_program_loss_is_named(cause: str, c_session: Session, c_program: Path) -> None:
    check_cause(c_session, [str(c_program), cause], cause, C_NAME)


@pytest.mark.kernel_matrix
@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_python_program_loss_is_named(cause: str, py_session: Session) -> None:
    check_cause(py_session, [sys.executable, str(CSRC / "lostfd.py"), cause], cause, PY_NAME)


@pytest.mark.kernel_matrix
def test_a_slow_receiver_is_linked_and_in_flight_until_then(py_session: Session) -> None:
    """The receiver takes the fd 3 s after it was sent: while it waits the send
    is in flight (not lost, no NORECV), and then it is one linked transfer."""
    s = py_session
    s.drain()
    linked, early = Matcher(), Matcher()
    proc = subprocess.Popen([sys.executable, str(CSRC / "lostfd.py"), "slow"],
                            stdout=subprocess.PIPE, text=True)
    verdicts: list[Verdict] = []
    start = time.monotonic()
    flushed: list[Verdict] | None = None
    sent = False
    # Generous: a Python program starts slowly in the kernel matrix's emulated VMs.
    while time.monotonic() - start < 120 and not any(
            isinstance(v, Transfer) and v.matched for v in verdicts):
        for ev in s.poll(0.1):
            verdicts += linked.feed(ev)
            if flushed is None:
                early.feed(ev)
                sent = sent or isinstance(ev, SendEvent)
        if flushed is None and sent:
            # Tracing stops while the fd waits in the queue (the receiver
            # sleeps 3 s after the send).
            flushed = early.flush()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    ((sender_pid, fd, ino),) = [tuple(int(w) for w in line.split()[2::2])
                                for line in out.splitlines() if line.startswith("sender")]
    assert flushed is not None
    (pending,) = flushed
    assert isinstance(pending, Transfer) and pending.in_flight and pending.send_fd == fd
    (t,) = verdicts
    assert isinstance(t, Transfer) and t.matched and t.send is not None
    assert (t.send.pid, t.send_fd, t.file.inode) == (sender_pid, fd, ino)
    assert t.recv is not None and t.recv.timestamp_ns - t.send.timestamp_ns > 2_000_000_000


def test_losses_read_before_their_send_wait_for_it() -> None:
    """Losses travel in the anomaly ring, read first: a receive cut short and a
    loss report that arrive before their send are linked when it comes."""
    m = Matcher()
    assert m.feed(_recv((), (), 5, frozenset({"CTRUNC"}), sock_file=0x77)) == []
    (lost,) = m.feed(_send((5,), (_file(0xA),), 4, sock_file=0x77))
    assert isinstance(lost, LostEvent) and (lost.reason, lost.pid, lost.fd) == ("ctrunc", 1, 5)
    report = LossReport(pid=2, tid=2, comm="rcv", sock=4, fds=(-1,), files=(_file(0xB),),
                        flags=frozenset(), ok=True, errno=0, ret=0, syscall="close",
                        msg_index=0, backend="test", timestamp_ns=7,
                        reason=LossReason.SOCKET_CLOSED)
    assert m.feed(report) == []
    (closed,) = m.feed(_send((6,), (_file(0xB),), 6))
    assert isinstance(closed, LostEvent) and (closed.reason, closed.fd) == ("socket-closed", 6)
    assert m.flush() == []


@pytest.mark.kernel_matrix
def test_cli_json_and_table_name_the_cause(c_program: Path) -> None:
    """rawsys-trace itself, as a user runs it: --json has one "lost" record per
    fd lost (sender, reason, receiver) and, at the end, the fds still in flight;
    the table has a LOST line with the reason in words."""
    require_live_tracing()
    import json
    import select
    import signal

    def start(*extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rawsys.trace", "-n", C_NAME, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2])
        assert proc.stderr is not None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if select.select([proc.stderr], [], [], 0.5)[0]:
                line = proc.stderr.readline()
                assert line, "rawsys-trace exited before tracing"
                if line.startswith("Tracing"):
                    return proc
        proc.kill()
        raise AssertionError("rawsys-trace did not start")

    backend = forced_backend()
    extra = ("--backend", backend) if backend else ()
    tracers = [start("--json", *extra), start(*extra)]
    runs = [subprocess.run([str(c_program), cause], capture_output=True, text=True,
                           check=True, timeout=60).stdout for cause in ("read", "zero")]
    runs.append(subprocess.run([str(c_program), "exit"], capture_output=True, text=True,
                               check=True, timeout=60).stdout)
    # The receiver of this one waits for its stdin to close: the tracers stop
    # while its fd is queued, however long they take to.
    held = subprocess.Popen([str(c_program), "hold"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert held.stdout is not None
    held_sender = held.stdout.readline().split()
    assert held_sender[0] == "sender"
    time.sleep(1.0)
    for t in tracers:
        t.send_signal(signal.SIGINT)
    outs = [t.communicate(timeout=60)[0] for t in tracers]
    held.communicate(timeout=60)  # closes its stdin: the fd is received now
    records = [json.loads(line) for line in outs[0].splitlines()]
    lost = {r["reason"]: r for r in records if r["event"] == "lost"}
    assert set(lost) == {"read-without-control", "zero-length-stream", "socket-closed"}
    for text, reason in zip(runs, ("read-without-control", "zero-length-stream")):
        sender = [line.split() for line in text.splitlines() if line.startswith("sender")][0]
        assert (lost[reason]["pid"], lost[reason]["fd"]) == (int(sender[2]), int(sender[4]))
        assert lost[reason]["file"]["inode"] == int(sender[6])
    assert lost["zero-length-stream"]["receiver"] is None
    assert lost["read-without-control"]["receiver"]["comm"] == C_NAME
    (flying,) = [r for r in records if r["event"] == "transfer"]
    assert flying["in_flight"] and flying["receiver"] is None
    assert (flying["sender"]["pid"], flying["sender"]["fd"]) == (
        int(held_sender[2]), int(held_sender[4]))
    table = outs[1].splitlines()
    for words in ("read without control buffer", "zero-length stream send",
                  "receiving socket closed"):
        assert sum(" LOST " in line and line.endswith(f"({words})") for line in table) == 1
    assert sum(" INFLIGHT " in line for line in table) == 1
