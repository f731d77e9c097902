"""Helpers shared by the tracer's live tests (imported by test_session/test_cli).

``require_live_tracing()`` skips only where the capability truly does not
exist (not root, no distribution bcc, no syscall tracepoints), naming it; in
CI (root, ``python3-bpfcc``, tracefs mounted by ``./dev``) nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

FDPASS_C = Path(__file__).parent / "csrc" / "fdpass.c"
TRACEFS_EVENTS = "/sys/kernel/tracing/events/syscalls/sys_enter_sendmsg"

# The kernel matrix (kernels/run.py) runs the live tests once per backend,
# naming it here; unset, the sessions take doctor's choice.
BACKEND_ENV = "RAWSYS_TEST_BACKEND"


def forced_backend() -> str | None:
    """The backend the live tests' sessions must use (``$RAWSYS_TEST_BACKEND``), or None."""
    from rawsys.trace.bpf.program import BACKENDS

    value = os.environ.get(BACKEND_ENV) or None
    if value is not None and value not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={value!r}: choose from {', '.join(BACKENDS)}")
    return value


def require_live_tracing() -> None:
    if os.geteuid() != 0:
        pytest.skip("live tracing needs root (CAP_BPF/CAP_PERFMON); CI runs as root")
    from rawsys.trace.system.bccloader import BccUnavailable, load_bcc

    try:
        load_bcc()
    except BccUnavailable as e:
        pytest.skip(f"the distribution's bcc is not installed: {e}")
    if not os.path.isdir(TRACEFS_EVENTS):
        pytest.skip(f"no syscall tracepoints ({TRACEFS_EVENTS} missing: tracefs not mounted?)")


def bpf_prog_ids() -> set[int]:
    """Ids of every BPF program loaded in the kernel (``bpftool prog show``)."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


# Every backend also watches where fds in flight are lost (causes.bpf.h):
# read-like calls, close, exec and exit, as (category, tracepoint).
CAUSE_TRACEPOINTS = frozenset(
    {("syscalls", f"sys_{side}_{call}") for side in ("enter", "exit")
     for call in ("read", "readv", "recvfrom")}
    | {("syscalls", "sys_enter_close"), ("syscalls", "sys_enter_execve"),
       ("syscalls", "sys_enter_execveat"), ("sched", "sched_process_exit"),
       ("sched", "sched_process_exec")}
)
# readv and recvfrom's exits, readv's entry and execveat's run the program of
# read's or execve's (one program attached to each: the same fields).
SHARED_CAUSE_TRACEPOINTS = frozenset(
    {("syscalls", "sys_enter_readv"), ("syscalls", "sys_exit_readv"),
     ("syscalls", "sys_exit_recvfrom"), ("syscalls", "sys_enter_execveat")}
)
CAUSE_PROGRAMS = frozenset(
    f"tracepoint__{cat}__{tp}" for cat, tp in CAUSE_TRACEPOINTS - SHARED_CAUSE_TRACEPOINTS
)

# The tracepoint backend's programs, each attached to the syscall tracepoint of
# its name: sendmsg is probed at entry and exit, recvmsg, sendmmsg and recvmmsg
# only at exit (their arguments read from the registers saved at entry).
TRANSFER_TRACEPOINTS = frozenset({
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
    "sys_exit_recvmsg",
    "sys_exit_sendmmsg",
    "sys_exit_recvmmsg",
})
TRACEPOINT_ATTACHMENTS = TRANSFER_TRACEPOINTS | {tp for _, tp in CAUSE_TRACEPOINTS}
TRACEPOINT_PROGRAMS = (
    frozenset(f"tracepoint__syscalls__{tp}" for tp in TRANSFER_TRACEPOINTS) | CAUSE_PROGRAMS
)

# The kprobe and fentry backends take every syscall's entry and exit from the
# tracepoints, and the SCM_RIGHTS path from the kernel functions.
SCM_TRACEPOINT_ATTACHMENTS = frozenset(
    f"sys_{side}_{call}"
    for side in ("enter", "exit")
    for call in ("sendmsg", "recvmsg", "sendmmsg", "recvmmsg")
) | {tp for _, tp in CAUSE_TRACEPOINTS}


def scm_receive_function() -> str:
    """The kernel function that installs each received fd, told apart without
    the tracer's own logic: ``__receive_fd`` from 5.9 until 6.8 renamed it
    ``receive_fd`` (a two-argument ``receive_fd`` exists beside it before)."""
    with open("/proc/kallsyms", encoding="ascii", errors="replace") as f:
        names = {line.split()[2] for line in f if line.count(" ") == 2}
    return "__receive_fd" if "__receive_fd" in names else "receive_fd"


def kprobe_attachments(pid: int) -> dict[int, tuple[str, str]]:
    """prog_id -> (``kprobe``/``kretprobe``, kernel function) for each kprobe a
    process holds a BPF program attached to (``bpftool perf show``)."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "perf", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {
        int(p["prog_id"]): (str(p["fd_type"]), str(p["func"]))
        for p in json.loads(out or "[]")
        if p.get("pid") == pid and p.get("fd_type") in ("kprobe", "kretprobe")
    }


def tracepoint_attachments(pid: int) -> list[tuple[int, str]]:
    """(prog_id, tracepoint) for each tracepoint a process holds a BPF program
    attached to (``bpftool perf show``); a program may be attached to several."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "perf", "show"], capture_output=True, text=True,
                         check=True).stdout
    return [
        (int(p["prog_id"]), str(p["tracepoint"]))
        for p in json.loads(out or "[]")
        if p.get("pid") == pid and p.get("fd_type") == "tracepoint"
    ]


def bpf_prog_names(ids: set[int]) -> dict[int, str]:
    """prog_id -> full program name (from its BTF, via ``bpftool prog show``)."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {int(p["id"]): str(p["name"]) for p in json.loads(out or "[]") if int(p["id"]) in ids}


def own_bpf_prog_ids(pid: int | str = "self") -> set[int]:
    """Ids of the BPF programs a process holds fds to (``prog_id`` in fdinfo).

    Exact even while other processes load programs of their own.
    """
    ids: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return ids
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{name}", encoding="ascii") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def wait_gone(ids: set[int], timeout: float = 5.0) -> set[int]:
    """Those of *ids* still loaded after up to *timeout* s (the kernel frees a
    program after an RCU grace period once its last reference goes)."""
    deadline = time.monotonic() + timeout
    left = ids & bpf_prog_ids()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = ids & bpf_prog_ids()
    return left


def build_fdpass(build_c: Callable[..., Path], dest_dir: Path) -> Path:
    """The classic send_fd/recv_fd pair (cmsg(3)) in C, built with gcc, as ``dest_dir/fdpass``.

    Copied to that name so its comm is ``fdpass`` (the ``-n`` filter).
    """
    exe = build_c(FDPASS_C)
    dest = dest_dir / "fdpass"
    shutil.copy(exe, dest)
    return dest


def parse_roles(stdout: str) -> dict[str, tuple[int, int]]:
    """``{"sender": (pid, fd), "receiver": (pid, fd)}`` from fdpass's output."""
    roles: dict[str, tuple[int, int]] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] == "pid" and parts[3] == "fd":
            roles[parts[0]] = (int(parts[2]), int(parts[4]))
    return roles
