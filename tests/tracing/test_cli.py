"""``rawsys-trace`` / ``python -m rawsys.trace``: arguments, --ebpf, and live runs.

Live runs start the tracer as a separate process, wait for its ``Tracing``
line on stderr, make transfers in a helper process (Python) or in a C program
(the classic send_fd/recv_fd pair of cmsg(3)), then stop the tracer with
SIGTERM or SIGINT (or let ``-d`` end it) and check stdout field by field.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from tracing_helpers import (
    TRACEPOINT_ATTACHMENTS,
    TRACEPOINT_PROGRAMS,
    bpf_prog_ids,
    bpf_prog_names,
    build_fdpass,
    own_bpf_prog_ids,
    parse_roles,
    require_live_tracing,
    tracepoint_attachments,
    wait_gone,
)

import rawsys
from rawsys.trace.bpf.prelude import Filters, ProgramError
from rawsys.trace.cli import HEADER, build_parser, format_transfer, main
from rawsys.trace.events import (
    PATH_FLAG_TRUNCATED,
    FileIdentity,
    RecvEvent,
    SendEvent,
    TraceEvent,
    Transfer,
    decode_path,
)
from rawsys.trace.output import (
    IntervalSummary,
    Printer,
    WallClock,
    event_json,
    file_column,
    format_lost,
    lost_json,
    transfer_json,
)

TRACER = [sys.executable, "-m", "rawsys.trace"]
JSON_KEYS = {"event", "pid", "tid", "comm", "sock", "fds", "files", "flags", "backend"}

HELPER = r"""
import array, os, socket, sys
from rawsys.c.constants import MSG_PEEK


def recv_fds(sock, flags=0):
    # socket.recv_fds ignores its flags argument (CPython 3.11): use recvmsg.
    _, anc, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(4 * 4), flags)
    return [fd for _, _, data in anc for fd in array.array("i", data)]


sys.stdin.readline()                                   # wait until the tracer is ready
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
r, w = os.pipe()
socket.send_fds(a, [b"x"], [r, w])
got = recv_fds(b)
print("plain", r, w, *got, flush=True)
socket.send_fds(a, [b"x"], [r])
peeked = recv_fds(b, MSG_PEEK)
real = recv_fds(b)
print("peek", *peeked, *real, flush=True)
for fd in got + peeked + real + [r, w]:
    os.close(fd)
a.close(); b.close()
sys.stdin.readline()                                   # stay alive until told
"""


def _wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 30.0) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(prefix):
                return line
    proc.kill()
    raise AssertionError(f"no line starting {prefix!r} on stderr; saw {seen}")


@pytest.fixture
def helper() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HELPER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


def _start_tracer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*TRACER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])


def _finish(proc: subprocess.Popen[str], sig: int | None) -> tuple[str, str]:
    if sig is not None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return out, err


# ---------------------------------------------------------------- no kernel
def test_help_has_examples_and_typed_pids(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert "examples:" in (parser.epilog or "") and "rawsys-trace -p 181" in (parser.epilog or "")
    assert build_parser().parse_args(["-p", "12", "-p", "13", "-t", "5"]).pid == [12, 13]
    for bad, message in (
        (["-p", "12;drop"], "PID must be an integer"),
        (["-p", "0"], "out of range"),
        (["-t", "-4"], "out of range"),
        (["-d", "0"], "duration must be positive"),
        (["--backend", "x"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(bad)
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    help_text = build_parser().format_help()
    assert "--ebpf" not in help_text  # hidden, as in bcc tools


def test_bad_comm_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-n", "x" * 16, "--ebpf"])
    assert info.value.code == 2
    assert "longer than the 15 bytes the kernel keeps" in capsys.readouterr().err


def test_name_uid_and_version_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["-n", "x" * 15, "-u", "0", "-u", "1000", "-x", "-i", "2"])
    assert args.name == "x" * 15 and args.uid == [0, 1000] and args.failed
    assert args.interval == 2.0
    for bad, message in (
        (["-u", "root"], "UID must be an integer"),
        (["-u", "-1"], "out of range"),
        (["-u", str(2**32 - 1)], "out of range"),
        (["-n", ""], "non-empty"),
        (["-i", "0"], "duration must be positive"),
    ):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args(bad)
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"rawsys-trace {rawsys.__version__}\n"


def test_name_is_matched_in_user_space_so_a_full_length_name_loads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # -n is a substring of either end's comm: the program carries no name compare.
    assert main(["--ebpf", "--backend", "tracepoint", "-n", "x" * 15]) == 0
    out = capsys.readouterr().out
    assert "#define FILTER_COMM 0\n" in out and "#define FILTER_UID 0\n" in out


def test_uid_filter_is_a_map_in_the_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ebpf", "--backend", "tracepoint", "-u", "4243"]) == 0
    out = capsys.readouterr().out
    assert "#define FILTER_UID 1\n" in out and "BPF_HASH(uid_filter" in out
    assert "4243" not in out  # UIDs go to a map at run time, like PIDs
    assert Filters.of(uids=[0, 7]).map_entries()["uid_filter"] == (0, 7)
    with pytest.raises(ProgramError, match="UID"):
        Filters.of(uids=[-1])


def test_ebpf_prints_the_generated_program(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ebpf", "--backend", "tracepoint", "-p", "4242"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("/* rawsys-trace, tracepoint backend")
    assert "#define SCM_RIGHTS 1\n" in out and "#define FILTER_PID 1\n" in out
    assert "TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg)" in out
    assert "4242" not in out  # PIDs go to a map at run time, never into the C text


# A fixed clock: 2026-01-02T03:04:05.678901 UTC at ktime 1_000_000_000.
CLOCK = WallClock(offset_ns=1767323045_678901_000 - 1_000_000_000)
PIPE = FileIdentity(address=0xFFFF1, inode=117764, mode=0o10600, refcount=2, name="")
PTS = FileIdentity(address=0xFFFF2, inode=4, mode=0o20620, refcount=3, name="1",
                   path="/dev/pts/1")


def _event(kind: type[SendEvent] | type[RecvEvent], pid: int, comm: str, fd: int,
           file: FileIdentity, ts: int, *, flags: frozenset[str] = frozenset(),
           errno: int = 0) -> TraceEvent:
    return kind(pid=pid, tid=pid + 1, comm=comm, sock=3, fds=(fd,), files=(file,),
                flags=flags, ok=not errno, errno=errno, ret=-errno if errno else 1,
                syscall="sendmsg" if kind is SendEvent else "recvmsg", msg_index=0,
                backend="tracepoint", timestamp_ns=ts)


def _transfer(send_comm: str = "tmux: client", recv_comm: str = "tmux: server",
              file: FileIdentity = PTS, flags: frozenset[str] = frozenset()) -> Transfer:
    s = _event(SendEvent, 4321, send_comm, 0, file, 1_000_000_000)
    r = _event(RecvEvent, 1234, recv_comm, 17, file, 1_500_000_000, flags=flags)
    return Transfer(s, r, 0, 17, file)


def test_header_fits_80_columns() -> None:
    assert HEADER.endswith(" FILE") and len(HEADER) - len("FILE") < 80
    assert HEADER.split() == ["TIME", "SPID", "SCOMM", "SFD", "RPID", "RCOMM", "RFD", "FLAGS",
                              "FILE"]
    assert format_transfer.__doc__


def test_row_shows_whole_comm_event_time_and_whole_path_last() -> None:
    long_path = FileIdentity(address=1, inode=9, mode=0o100644, refcount=1, name="f",
                             path="/srv/" + "d" * 90 + "/f")
    cases = ((PTS, "/dev/pts/1"), (PIPE, "pipe:[117764]"), (long_path, long_path.path))
    for file, shown in cases:
        row = format_transfer(_transfer(file=file), CLOCK)
        assert row.endswith(" " + shown)  # last and whole, however long
        assert len(row) - len(shown) <= HEADER.index("FILE") < 80
        assert "tmux: client" in row and "tmux: server" in row
        assert row.index(shown) == HEADER.index("FILE")
    # TIME is the receive's own wall-clock time, in local time like bcc's tools.
    row = format_transfer(_transfer(), CLOCK)
    local = time.strftime("%H:%M:%S", time.localtime(CLOCK.wall_ns(1_500_000_000) // 10**9))
    assert row.startswith(local + " ")
    # -T: seconds since tracing began.
    assert format_transfer(_transfer(), CLOCK, start_ns=500_000_000, timestamp=True).startswith(
        "1.000    ")
    # Columns line up under the header.
    cells = format_transfer(_transfer(), CLOCK)
    assert cells[HEADER.index("SFD") + 2] == "0" and cells[HEADER.index("RFD") + 1:][:2] == "17"


def test_file_column_is_what_proc_shows() -> None:
    sock = FileIdentity(address=1, inode=5, mode=0o140777, refcount=1, name="")
    anon = FileIdentity(address=1, inode=6, mode=0, refcount=1, name="[eventfd]")
    gone = FileIdentity(address=0, inode=0, mode=0, refcount=0, name="")
    named_no_path = FileIdentity(address=1, inode=7, mode=0o100644, refcount=1, name="x.txt")
    assert [file_column(f) for f in (PIPE, sock, anon, gone, PTS, named_no_path)] == [
        "pipe:[117764]", "socket:[5]", "anon_inode:[eventfd]", "-", "/dev/pts/1", "x.txt"]


def test_wall_clock_converts_kernel_time() -> None:
    assert CLOCK.iso(1_000_000_000) == "2026-01-02T03:04:05.678901+00:00"
    live = WallClock()
    now = time.monotonic_ns()
    assert abs(live.wall_ns(now) - time.time_ns()) < 50_000_000


def test_json_transfer_has_both_sides_file_and_iso_times() -> None:
    t = _transfer()
    record = transfer_json(t, CLOCK)
    assert record["event"] == "transfer"
    assert record["time"] == "2026-01-02T03:04:06.178901+00:00"  # the receive's
    assert record["sender"] == {"pid": 4321, "tid": 4322, "comm": "tmux: client", "fd": 0,
                                "sock": 3, "time": "2026-01-02T03:04:05.678901+00:00"}
    assert record["receiver"]["comm"] == "tmux: server"  # type: ignore[index]
    assert record["receiver"]["fd"] == 17  # type: ignore[index]
    assert record["file"] == {"address": "0xffff2", "inode": 4, "kind": "chr", "name": "1",
                              "path": "/dev/pts/1", "refcount": 3}
    assert t.send is not None
    send = event_json(t.send, CLOCK)
    assert send["time"] == "2026-01-02T03:04:05.678901+00:00"
    assert send["files"] == [record["file"]]  # the same file on both records
    json.dumps(record)


def test_printer_filters_by_name_substring_and_failures() -> None:
    import io

    ok = _transfer()
    other = _transfer("python3", "python3", PIPE)
    failed_send = _event(SendEvent, 5, "python3", 77, FileIdentity(0, 0, 0, 0, ""), 2, errno=9)
    failed = Transfer(failed_send, None, 77, None, failed_send.files[0])  # type: ignore[arg-type]
    ctrunc = _transfer("a", "b", PIPE, frozenset({"CTRUNC"}))

    def shown(**kw: object) -> list[str]:
        out = io.StringIO()
        Printer(out, CLOCK, **kw).show([], [ok, other, failed, ctrunc])  # type: ignore[arg-type]
        return out.getvalue().splitlines()

    assert len(shown()) == 4
    assert [r.split()[2:4] for r in shown(name="mux: s")] == [["tmux:", "client"]]
    rows = shown(failures_only=True)
    assert [("FAILED:EBADF" in r, "CTRUNC" in r) for r in rows] == [(True, False), (False, True)]
    out = io.StringIO()
    Printer(out, CLOCK, as_json=True, name="tmux").show([ok.send, ok.recv], [ok, other])
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["send", "recv", "transfer"]


def test_interval_summary_counts_pairs_and_losses_sorted() -> None:
    import io

    summary = IntervalSummary()
    lost = Transfer(_transfer().send, None, 0, None, PTS)
    summary.add([_transfer()] * 3 + [_transfer("python3", "python3", PIPE)] + [lost] * 2)
    summary.add([_transfer("a", "b", PIPE, frozenset({"CTRUNC"}))])  # this fd arrived
    failed_send = _event(SendEvent, 5, "c", 77, FileIdentity(0, 0, 0, 0, ""), 2, errno=9)
    summary.add([Transfer(failed_send, None, 77, None, failed_send.files[0])])  # type: ignore
    lines = summary.lines("03:04:05")
    assert lines[0] == "03:04:05  transfers 5, losses 3"
    assert lines[2].split() == ["3", "4321", "tmux:", "client", "->", "1234", "tmux:", "server"]
    assert lines[3].split()[0] == "1"
    assert lines[-2:] == [f"{2:>8}  no-receive-seen", f"{1:>8}  send-failed:EBADF"]
    record = summary.to_json("t", 5.0)
    assert record["losses"] == [{"reason": "no-receive-seen", "count": 2},
                                {"reason": "send-failed:EBADF", "count": 1}]
    out = io.StringIO()
    p = Printer(out, CLOCK, interval=1.0)
    p.start_at(0)
    p.show([], [_transfer()])
    p.tick(500_000_000)
    assert out.getvalue() == ""  # the interval is not over
    p.tick(1_000_000_000)
    assert "transfers 1, losses 0" in out.getvalue()


def test_doctor_subcommand() -> None:
    res = subprocess.run([*TRACER, "doctor"], capture_output=True, text=True, timeout=60)
    assert res.returncode in (0, 1), res.stderr
    assert "tracepoint" in res.stdout


# ---------------------------------------------------------------- live
def test_json_stdout_is_only_events_and_sigterm_stops_cleanly(
    helper: subprocess.Popen[str],
) -> None:
    require_live_tracing()
    assert helper.stdin is not None and helper.stdout is not None
    tracer = _start_tracer("--json", "-p", str(helper.pid))
    try:
        line = _wait_for_line(tracer, "Tracing")
        assert "backend" in line
        during = own_bpf_prog_ids(tracer.pid)
        assert during <= bpf_prog_ids()
        # sendmsg's entry and the exits of the four syscalls, each attached once
        attached = tracepoint_attachments(tracer.pid)
        assert {i for i, _ in attached} == during
        assert sorted(tp for _, tp in attached) == sorted(TRACEPOINT_ATTACHMENTS)
        assert sorted(bpf_prog_names(during).values()) == sorted(TRACEPOINT_PROGRAMS)
        helper.stdin.write("go\n")
        helper.stdin.flush()
        plain = helper.stdout.readline().split()
        peek = helper.stdout.readline().split()
        time.sleep(0.5)
        out, err = _finish(tracer, signal.SIGTERM)
    finally:
        if tracer.poll() is None:
            tracer.kill()
    assert tracer.returncode == 0, err
    assert "Lost events: 0" in err
    records = [json.loads(line) for line in out.splitlines()]  # every line is JSON
    assert all("time" in r and r["time"].endswith("+00:00") for r in records)
    events = [e for e in records if e["event"] in ("send", "recv")]
    transfers = [t for t in records if t["event"] == "transfer"]
    assert all(JSON_KEYS <= set(e) for e in events)
    assert {e["pid"] for e in events} == {helper.pid}
    r, w, got1, got2 = (int(x) for x in plain[1:])
    sends = [e for e in events if e["event"] == "send"]
    recvs = [e for e in events if e["event"] == "recv"]
    assert [s["fds"] for s in sends] == [[r, w], [r]]
    assert [x["fds"] for x in recvs] == [[got1, got2], [int(peek[1])], [int(peek[2])]]
    assert recvs[0]["files"] == [
        {**f, "refcount": recvs[0]["files"][i]["refcount"]} for i, f in enumerate(sends[0]["files"])
    ]
    # One transfer record per fd received, after the receive that completed it.
    assert [(t["sender"]["fd"], t["receiver"]["fd"]) for t in transfers] == [
        (r, got1), (w, got2), (r, int(peek[1])), (r, int(peek[2]))]
    assert all(t["sender"]["pid"] == t["receiver"]["pid"] == helper.pid for t in transfers)
    assert transfers[0]["file"]["path"] == f"pipe:[{sends[0]['files'][0]['inode']}]"
    assert transfers[0]["time"] == recvs[0]["time"]
    assert transfers[0]["sender"]["time"] == sends[0]["time"]
    assert records.index(transfers[0]) > records.index(recvs[0])
    assert [("PEEK" in x["flags"]) for x in recvs] == [False, True, False]
    assert {e["backend"] for e in events} == {"tracepoint"}
    # The tracer's programs are gone once it has exited.
    assert not wait_gone(during)
    helper.stdin.write("bye\n")
    helper.stdin.flush()


def test_live_view_links_c_sender_and_receiver_across_fork(
    build_c: Callable[..., Path], tmp_path: Path
) -> None:
    require_live_tracing()
    # A command name of 15 bytes, the most the kernel keeps, matched by a part of it.
    exe = tmp_path / "fdpass-15-bytes"
    build_fdpass(build_c, tmp_path).rename(exe)
    data = tmp_path / "passed.txt"
    data.write_text("passed")
    tracer = _start_tracer("-n", "pass-15-by", "-T")
    try:
        _wait_for_line(tracer, "Tracing")
        res = subprocess.run([str(exe), "fork", str(data)], capture_output=True, text=True,
                             check=True)
        time.sleep(0.5)
        out, err = _finish(tracer, signal.SIGINT)
    finally:
        if tracer.poll() is None:
            tracer.kill()
    assert tracer.returncode == 0, err
    roles = parse_roles(res.stdout)
    lines = out.splitlines()
    assert lines[0] == HEADER
    (row,) = lines[1:]
    cols = row.split()
    spid, sfd = roles["sender"]
    rpid, rfd = roles["receiver"]
    name = exe.name
    assert cols[1:8] == [str(spid), name, str(sfd), str(rpid), name, str(rfd), "-"]
    assert row[HEADER.index("FILE"):] == str(data)  # the full path, resolved in the kernel
    assert float(cols[0]) < 5  # -T counts from the Tracing line
    assert "Lost events: 0" in err


def test_duration_ends_the_trace() -> None:
    require_live_tracing()
    start = time.monotonic()
    res = subprocess.run([*TRACER, "-d", "1", "-p", str(os.getpid())], capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    assert res.stderr.startswith("Tracing") or "\nTracing" in res.stderr
    assert "Lost events: 0" in res.stderr
    assert res.stdout.splitlines() == [HEADER]
    assert time.monotonic() - start < 30


def test_paths_kept_leaf_first_are_turned_round() -> None:
    assert decode_path(b"1\0pts\0dev\0") == "/dev/pts/1"
    assert decode_path(b"") == "/"  # the root itself
    assert decode_path(b"f\0d\0", PATH_FLAG_TRUNCATED) == ".../d/f"  # the root end is missing
    assert decode_path(b"caf\xc3\xa9\0") == "/caf\u00e9"


def test_lost_rows_and_records_name_sender_receiver_file_and_reason() -> None:
    import io

    from rawsys.trace.events import LostEvent, LostParty

    lost = LostEvent(reason="read-without-control", pid=4321, tid=4321, comm="tmux: client",
                     fd=5, file=PTS, receiver=LostParty(1234, 1234, "tmux: server", 4),
                     timestamp_ns=1_500_000_000, syscall="read")
    row = format_lost(lost, CLOCK)
    assert row.split()[1:9] == ["4321", "tmux:", "client", "5", "1234", "tmux:", "server", "-"]
    assert row[HEADER.index("FLAGS"):].startswith("LOST ")
    assert row[HEADER.index("FILE"):] == f"/dev/pts/1  ({lost.words})"
    record = lost_json(lost, CLOCK)
    assert record["time"] == "2026-01-02T03:04:06.178901+00:00"
    assert record["file"]["path"] == "/dev/pts/1"  # type: ignore[index]
    assert record["receiver"] == {"pid": 1234, "tid": 1234, "comm": "tmux: server", "sock": 4}
    # -x keeps losses; -n matches the receiver's name too; -i counts them per cause.
    out = io.StringIO()
    Printer(out, CLOCK, failures_only=True, name="server").show([], [_transfer("a", "b"), lost])
    assert [line[HEADER.index("FLAGS"):][:4] for line in out.getvalue().splitlines()] == ["LOST"]
    p = Printer(io.StringIO(), CLOCK, interval=1.0)
    p.show([], [lost, lost])
    assert p.summary.losses == {"read-without-control": 2}
