"""What a fresh machine shows a new user: no bcc, no kernel headers, no tracefs, no cache.

CI is root and installs bcc and the headers and mounts tracefs before the
suite runs, so the paths where those are missing would never run there if the
tests looked at this machine's state.  These hide them for real, in a private
mount namespace (the ``fresh_machine`` fixture of ``conftest.py``), and run the
library, the tracer's commands and an example the way a new user meets them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Callable, List

import pytest

from rawsys.trace.system.bccloader import BccUnavailable, find_distribution_bcc
from rawsys.trace.system.headers import kernel_headers

FreshMachine = Callable[..., List["subprocess.CompletedProcess[str]"]]
TRACER = [sys.executable, "-m", "rawsys.trace"]
SETUP = [*TRACER, "setup", "--no-install"]


def installed_bcc_and_headers() -> None:
    """The state right after ``apt-get install python3-bpfcc linux-headers-amd64``."""
    try:
        find_distribution_bcc()
    except BccUnavailable as e:
        pytest.skip(f"needs the distribution's bcc installed: {e}")
    headers = kernel_headers()
    if not headers.usable:
        pytest.skip(f"needs kernel headers installed: {headers.reason}")


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_the_library_needs_none_of_it(fresh_machine: FreshMachine) -> None:
    code = """
import os, socket, sys
import rawsys, rawsys.c
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
r, w = os.pipe()
rawsys.send_fds(a, [b"x"], [r])
msg, fds, _flags, _addr = rawsys.recv_fds(b, 1, 1)
os.write(w, b"ok")
print(msg.decode(), os.read(fds[0], 2).decode(), "bcc" in sys.modules)
"""
    [proc] = fresh_machine([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["x", "ok", "False"]


def test_doctor_names_each_missing_piece_and_how_to_get_it(fresh_machine: FreshMachine) -> None:
    [proc] = fresh_machine([*TRACER, "doctor", "--json"])
    no_traceback(proc)
    assert proc.returncode == 1  # nothing can trace here
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    missing = {name: checks[name]["detail"] for name in ("bcc", "kernel headers", "tracefs")
               if checks[name]["ok"] is False}
    assert set(missing) == {"bcc", "kernel headers", "tracefs"}, checks
    assert "python3-bpfcc" in missing["bcc"]
    assert "linux-headers" in missing["kernel headers"]
    assert "mount -t tracefs" in missing["tracefs"]


def test_the_tracer_refuses_and_says_what_to_run(fresh_machine: FreshMachine) -> None:
    [proc] = fresh_machine([*TRACER, "-d", "1"])
    no_traceback(proc)
    assert proc.returncode == 1
    assert "rawsys-trace setup" in proc.stderr


def test_an_example_runs_untraced_and_says_why(fresh_machine: FreshMachine) -> None:
    [proc] = fresh_machine([sys.executable, "examples/send_fd_fork.py", "--trace"])
    assert proc.returncode == 0, proc.stderr
    assert "--trace needs bcc" in proc.stderr and "running untraced" in proc.stderr
    assert "hello from the child" in proc.stdout
    assert "--- kernel events" not in proc.stdout


def test_first_setup_mounts_tracefs_then_tracing_works(fresh_machine: FreshMachine) -> None:
    """As after ``apt-get install python3-bpfcc linux-headers-amd64``: tracefs
    not mounted yet, the cache empty."""
    installed_bcc_and_headers()
    setup, doctor = fresh_machine(SETUP, [*TRACER, "doctor", "--json"], hide=("tracefs",))
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "mount tracefs on /sys/kernel/tracing: done" in setup.stdout
    assert "kernel facts from BTF: done" in setup.stdout  # the cache really was empty
    no_traceback(doctor)
    assert doctor.returncode == 0, doctor.stdout
    checks = {c["name"]: c["ok"] for c in json.loads(doctor.stdout)["checks"]}
    assert checks["tracefs"] is True and checks["bcc compile"] is True


def test_second_setup_changes_nothing(fresh_machine: FreshMachine) -> None:
    """The set-up is idempotent from the very first run on a fresh machine."""
    installed_bcc_and_headers()
    first, second = fresh_machine(SETUP, SETUP, hide=("tracefs",))
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    changed = [line for line in second.stdout.splitlines()
               if not line.split(": ", 1)[-1].startswith(("already", "skipped"))]
    assert changed == [], second.stdout
