#!/usr/bin/env python3
"""What tracing costs a program that passes fds as fast as it can.

Builds with gcc, into a temporary directory, a loop of the classic
send_fd/recv_fd pair of cmsg(3) (``csrc/send_recv_fd.h``): one byte and one
fd per message over an AF_UNIX SOCK_DGRAM socketpair, sender and receiver
alternating in one process, every received fd closed.  Runs it untraced,
then traced by PID with ``rawsys-trace --json -p PID`` (the command users
run, its output written to a file), and prints, from one run of each
(``--runs``: the median of several):

* events seen vs expected (one send and one receive per transfer),
* events lost in the kernel (target 0),
* traced/untraced throughput ratio (target >= 0.6),
* time from starting ``rawsys-trace`` to its ``Tracing`` line (target <= 1.5 s).

With ``--runs N`` the whole sequence is repeated N times and the figures of
the median run (by ratio) are printed, then each run's ratio: the machine is
shared, and one run can be off by several hundredths.

Needs root and the distribution's bcc.  Usage::

    sudo .venv/bin/python benchmarks/trace_overhead.py [--count 100000] [--runs 3]
        [--backend kprobe|fentry|tracepoint] [--json FILE]

``--backend`` forces the tracer's backend; ``--json FILE`` also writes the
median run's figures there (the kernel matrix reads them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "send_recv_fd.h"

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 100000;
    int sv[2], p[2];
    char line[16];
    struct timespec t0, t1;
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 || pipe(p) < 0) {
        perror("setup");
        return 1;
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin))   /* wait for "go" */
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < count; i++) {
        if (send_fd(sv[0], p[0]) != 1) { perror("send_fd"); return 1; }
        int fd = recv_fd(sv[1]);
        if (fd < 0) { perror("recv_fd"); return 1; }
        close(fd);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("elapsed_ns %lld\n",
           (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
"""


def build(tmp: Path) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("trace_overhead: gcc is needed to build the loop")
    src, exe = tmp / "fdloop.c", tmp / "fdloop"
    src.write_text(LOOP_C)
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-I", str(ROOT / "benchmarks" / "csrc"),
                    "-o", str(exe), str(src)], check=True)
    return exe


def start_loop(exe: Path, count: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([str(exe), str(count)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    if len(ready) != 2 or ready[0] != "ready":
        raise SystemExit(f"trace_overhead: the loop did not start: {ready}")
    return proc, int(ready[1])


def finish_loop(proc: subprocess.Popen[str]) -> float:
    """Send "go", wait for the loop; its own measure of the loop, in seconds."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.close()
    out = proc.stdout.read()
    proc.stdout.close()
    if proc.wait() != 0:
        raise SystemExit("trace_overhead: the loop failed")
    m = re.search(r"elapsed_ns (\d+)", out)
    if not m:
        raise SystemExit(f"trace_overhead: no timing from the loop: {out!r}")
    return int(m.group(1)) / 1e9


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def wait_for_tracing(proc: subprocess.Popen[bytes], timeout: float = 300.0) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("Tracing"):
                    return line
    proc.kill()
    raise SystemExit(f"trace_overhead: rawsys-trace did not start: {buf.decode(errors='replace')}")


def one_run(exe: Path, tmp: Path, count: int, backend: str | None = None) -> dict[str, float]:
    """Untraced, traced by PID, untraced again: one set of figures."""
    # Untraced before and after the traced run: the machine's speed drifts
    # (other work, frequency); the traced run is compared with their mean.
    proc, _ = start_loop(exe, count)
    untraced_before = finish_loop(proc)

    proc, pid = start_loop(exe, count)
    out_path = tmp / "events.jsonl"
    with open(out_path, "wb") as out:
        t0 = time.monotonic()
        forced = ["--backend", backend] if backend else []
        tracer = subprocess.Popen(
            [sys.executable, "-m", "rawsys.trace", "--json", "-p", str(pid), *forced],
            stdout=out, stderr=subprocess.PIPE, cwd=ROOT,
        )
        wait_for_tracing(tracer)
        startup = time.monotonic() - t0
        go = time.monotonic()
        traced = finish_loop(proc)
        # Let the tracer drain its ring buffer, then stop it like Ctrl-C.
        expected = 2 * count
        last, idle_since = -1, time.monotonic()
        while time.monotonic() - idle_since < 5.0:
            time.sleep(0.05)
            n = count_lines(out_path)
            if n != last:
                last, idle_since = n, time.monotonic()
            if n >= expected:
                break
        drained = idle_since - go
        tracer.send_signal(signal.SIGINT)
        _, err = tracer.communicate(timeout=60)
    seen = count_lines(out_path)
    proc, _ = start_loop(exe, count)
    untraced_after = finish_loop(proc)
    m = re.search(r"Lost events: (\d+)", err.decode(errors="replace"))
    lost = int(m.group(1)) if m else -1
    untraced = (untraced_before + untraced_after) / 2
    return {
        "untraced": untraced, "before": untraced_before, "after": untraced_after,
        "traced": traced, "seen": seen, "expected": expected, "lost": lost,
        "drained": drained, "startup": startup,
        "ratio": untraced / traced if traced > 0 else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="transfers per run")
    ap.add_argument("--runs", type=int, default=1,
                    help="independent runs (each traced run between two untraced ones); "
                         "figures of the median run by ratio, and every run's ratio")
    ap.add_argument("--backend", choices=("kprobe", "fentry", "tracepoint"),
                    help="force the tracer's backend (default: doctor's choice)")
    ap.add_argument("--json", type=Path, metavar="FILE",
                    help="also write the median run's figures to FILE as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("trace_overhead: needs root (eBPF); skipped", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="rawsys-bench-") as d:
        tmp = Path(d)
        exe = build(tmp)
        runs = [one_run(exe, tmp, args.count, args.backend) for _ in range(max(1, args.runs))]

    by_ratio = sorted(runs, key=lambda r: r["ratio"])
    r = by_ratio[len(by_ratio) // 2]
    count = args.count
    if args.json is not None:
        args.json.write_text(json.dumps({"count": count, "runs": len(runs), **r}))
    several = f" per run, {len(runs)} runs" if len(runs) > 1 else ""
    print(f"transfers               {count}{several}")
    print(f"untraced                {count / r['untraced']:12.0f} transfers/s "
          f"(before {count / r['before']:.0f}, after {count / r['after']:.0f})")
    print(f"traced by PID           {count / r['traced']:12.0f} transfers/s "
          f"({2 * count / r['traced']:.0f} events/s)")
    print(f"events seen / expected  {int(r['seen'])} / {int(r['expected'])}")
    print(f"lost events             {int(r['lost'])}  (target 0)")
    print(f"reader (--json to file) {r['seen'] / r['drained']:12.0f} events/s "
          f"(all {int(r['seen'])} written {r['drained']:.2f} s after the loop started)")
    print(f"traced/untraced ratio   {r['ratio']:.2f}  (target >= 0.6)")
    print(f"start-up to 'Tracing'   {r['startup']:.2f} s  (target <= 1.5 s)")
    if len(runs) > 1:
        print("every run, in order:")
        for i, x in enumerate(runs, 1):
            print(f"  run {i}: ratio {x['ratio']:.2f}  start-up {x['startup']:.2f} s  "
                  f"lost {int(x['lost'])}  events {int(x['seen'])}/{int(x['expected'])}  "
                  f"(untraced {count / x['before']:.0f} / {count / x['after']:.0f}, "
                  f"traced {count / x['traced']:.0f} transfers/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
