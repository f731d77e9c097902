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

from rawsys.trace.cli import HEADER, build_parser, format_transfer, main

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
    assert main(["-n", "x" * 20, "--ebpf"]) == 2
    assert "longer than the kernel keeps" in capsys.readouterr().err


def test_ebpf_prints_the_generated_program(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ebpf", "--backend", "tracepoint", "-p", "4242"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("/* rawsys-trace, tracepoint backend")
    assert "#define SCM_RIGHTS 1\n" in out and "#define FILTER_PID 1\n" in out
    assert "TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg)" in out
    assert "4242" not in out  # PIDs go to a map at run time, never into the C text


def test_header_fits_80_columns() -> None:
    assert len(HEADER) < 80
    assert format_transfer.__doc__


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
        assert set(attached) == during
        assert sorted(attached.values()) == sorted(TRACEPOINT_ATTACHMENTS)
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
    events = [json.loads(line) for line in out.splitlines()]  # every line is JSON
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
    exe = build_fdpass(build_c, tmp_path)
    data = tmp_path / "passed.txt"
    data.write_text("passed")
    tracer = _start_tracer("-n", "fdpass", "-T")
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
    assert cols[1:7] == [str(spid), "fdpass", str(sfd), str(rpid), "fdpass", str(rfd)]
    assert cols[7] == "passed.txt" and cols[8] == str(data.stat().st_ino)
    assert cols[9] == "-"
    assert len(row) < 80
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
