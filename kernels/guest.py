#!/usr/bin/env python3
"""One row of the kernel matrix: run inside the kernel under test.

Started by ``kernels/run.py`` inside a VM booted on another kernel (or
directly, for this machine's own kernel).  For each backend it asks
``rawsys-trace doctor`` whether this kernel lets it attach, then

* ``live``: the tracing tests marked ``kernel_matrix`` with that backend
  forced (``RAWSYS_TEST_BACKEND``), and one run of
  ``benchmarks/trace_overhead.py`` with it (start-up time and the
  traced/untraced ratio of a C fd-passing loop);
* ``verifier``: where doctor says the backend cannot attach and
  ``--refused verify`` is given (this machine: no kprobes, fentry refused),
  its programs compiled and loaded through the verifier only (the tests
  marked ``kernel_verifier``);
* ``refused``: otherwise a refusal is the cell's result, a failure.

Everything goes to files in ``--out`` (the console of a VM loses lines; its
/tmp is its own): ``started.json`` at once, ``kernel.json`` (doctor's
report), ``BACKEND.json`` per backend (with ``BACKEND.xml``, pytest's JUnit
report, and the logs), ``done`` last.  Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tracepoint", "kprobe", "fentry")
DOCTOR_ROWS = {"kprobe": "kprobes", "fentry": "fentry", "tracepoint": "syscall tracepoints"}
TESTS = {"live": "kernel_matrix", "verifier": "kernel_verifier"}
# Collecting only the files that hold them saves a minute per run under emulation.
TEST_FILES = {"live": ("test_session.py", "test_causes.py"), "verifier": ("test_probes.py",)}


def uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as f:
        return float(f.read().split()[0])


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def child_env(scratch: Path, backend: str | None = None) -> dict[str, str]:
    """The tests' environment: caches in scratch (the VM's root is read-only)."""
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(scratch / "cache")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(scratch / "hypothesis")
    if backend is not None:
        env["RAWSYS_TEST_BACKEND"] = backend
    return env


def doctor(scratch: Path) -> dict[str, Any]:
    start = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "rawsys.trace", "doctor", "--json"],
        capture_output=True, text=True, cwd=ROOT, env=child_env(scratch), timeout=600,
    )
    try:
        report: dict[str, Any] = json.loads(res.stdout)
    except ValueError:
        report = {"error": f"doctor exited {res.returncode}: {res.stderr[-2000:]}", "checks": []}
    report["seconds"] = round(time.monotonic() - start, 2)
    return report


def junit_summary(path: Path) -> dict[str, Any]:
    """Counts and per-test outcome and time from a JUnit XML report."""
    tests: list[dict[str, Any]] = []
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return {"error": f"no JUnit report: {e}", "tests": tests}
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:500]
        tests.append({
            "name": case.get("name", "?"),
            "outcome": outcome,
            "seconds": float(case.get("time") or 0),
            "message": message,
        })
    counts = {k: sum(t["outcome"] == k for t in tests)
              for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": tests}


def warm_imports(scratch: Path) -> None:
    """Import pytest, bcc and the tracer once, before the per-backend runs fork.

    Under emulation, over the VM's 9p root, a new Python takes about a
    minute to import pytest and the tracer: each backend's run is a fork of
    this process instead of a new one.  Best effort: a failed import is left
    to the run, which reports it.
    """
    os.environ.update(child_env(scratch))
    os.chdir(ROOT)
    try:
        import pytest  # noqa: F401

        import rawsys.trace.session  # noqa: F401
        from rawsys.trace.system.bccloader import load_bcc

        load_bcc()
    except Exception as e:  # the forked runs import again and fail with the details
        print(f"kernels/guest.py: warm-up import failed: {e!r}", file=sys.stderr)


def run_tests(backend: str, mode: str, out: Path, scratch: Path, timeout: float) -> dict[str, Any]:
    """pytest's run of the backend's tests, in a forked child (see warm_imports)."""
    xml = out / f"{backend}.xml"
    args = [
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-q", "-m", TESTS[mode],
        *(f"tests/tracing/{name}" for name in TEST_FILES[mode]),
        f"--junitxml={xml}", "-o", "junit_family=xunit2",
        f"--basetemp={scratch / ('pytest-' + backend)}",
    ]
    if mode == "verifier":
        args += ["-k", backend]  # test_kprobe_programs_..., test_fentry_programs_...
    start = time.monotonic()
    log_path = out / f"{backend}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: pytest, then _exit with its status
        status = 70
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.environ.update(child_env(scratch, backend))
            import pytest

            status = int(pytest.main(args))
        except BaseException as e:
            print(f"kernels/guest.py: pytest did not run: {e!r}", flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    rc = wait_child(pid, timeout)
    if rc is None:
        with open(log_path, "a") as log:
            log.write(f"\nkernels/guest.py: pytest killed after {timeout:.0f} s\n")
        rc = -1
    return {"rc": rc, "seconds": round(time.monotonic() - start, 2), **junit_summary(xml)}


def wait_child(pid: int, timeout: float) -> int | None:
    """The child's exit status (negative: killed by that signal), or None when it
    ran past timeout and was killed."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.2)


def run_overhead(backend: str, out: Path, scratch: Path, count: int,
                 timeout: float) -> dict[str, Any]:
    path = out / f"{backend}-overhead.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "trace_overhead.py"),
           "--count", str(count), "--backend", backend, "--json", str(path)]
    start = time.monotonic()
    with open(out / f"{backend}-overhead.log", "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=child_env(scratch), stdout=log,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    result: dict[str, Any] = {"rc": rc, "seconds": round(time.monotonic() - start, 2)}
    try:
        result.update(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder the results are written to")
    ap.add_argument("--backend", action="append", choices=BACKENDS,
                    help="a backend to test (repeatable; default: all three)")
    ap.add_argument("--refused", choices=("fail", "verify"), default="fail",
                    help="a backend doctor refuses: a failed cell, or its programs verifier-loaded")
    ap.add_argument("--count", type=int, default=10_000,
                    help="transfers of the overhead benchmark (0: skip it)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = uptime()
    write_json(out / "started.json", {"release": platform.release(), "uptime": started})
    with tempfile.TemporaryDirectory(prefix="rawsys-kernels-") as d:
        scratch = Path(d)
        report = doctor(scratch)
        warm_imports(scratch)
        write_json(out / "kernel.json", {
            "release": platform.release(),
            "uptime_at_start": started,
            "doctor": report,
        })
        rows = {c["name"]: c for c in report.get("checks", [])}
        for backend in args.backend or BACKENDS:
            row = rows.get(DOCTOR_ROWS[backend], {})
            allowed = row.get("ok") is True
            mode = "live" if allowed else ("verifier" if args.refused == "verify" else "refused")
            cell: dict[str, Any] = {
                "backend": backend,
                "mode": mode,
                "doctor": f"{row.get('value', '?')}: {row.get('detail', report.get('error', ''))}",
            }
            if mode != "refused":
                cell["tests"] = run_tests(backend, mode, out, scratch, args.timeout)
            if mode == "live" and args.count > 0:
                cell["overhead"] = run_overhead(backend, out, scratch, args.count, args.timeout)
            write_json(out / f"{backend}.json", cell)
    (out / "done").write_text(f"{uptime() - started:.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
