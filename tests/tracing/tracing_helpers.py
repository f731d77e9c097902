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


# The tracepoint backend's programs, each attached to the syscall tracepoint of
# its name: sendmsg is probed at entry and exit, recvmsg, sendmmsg and recvmmsg
# only at exit (their arguments read from the registers saved at entry).
TRACEPOINT_ATTACHMENTS = frozenset({
    "sys_enter_sendmsg",
    "sys_exit_sendmsg",
    "sys_exit_recvmsg",
    "sys_exit_sendmmsg",
    "sys_exit_recvmmsg",
})
TRACEPOINT_PROGRAMS = frozenset(f"tracepoint__syscalls__{tp}" for tp in TRACEPOINT_ATTACHMENTS)


def tracepoint_attachments(pid: int) -> dict[int, str]:
    """prog_id -> syscall tracepoint, for each tracepoint a process holds a
    BPF program attached to (``bpftool perf show``)."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "perf", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {
        int(p["prog_id"]): str(p["tracepoint"])
        for p in json.loads(out or "[]")
        if p.get("pid") == pid and p.get("fd_type") == "tracepoint"
    }


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
