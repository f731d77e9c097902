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

``--mode sustained`` runs the loop for ``--seconds`` (30) at full speed
instead, under ``rawsys-trace --json -p PID``, and stops the tracer with
SIGINT the moment the loop ends, as a user would: it prints the events
produced (the tracer's exact in-kernel counts), written and dropped, the
reader's rate over the producer's, the tracer's RSS growth from its
``Tracing`` line to the end, and how long it took to exit after the signal.
``--mode anomalies`` is the same flood with one receive in ``--ctrunc-every``
(1000) cut short (MSG_CTRUNC): each must be reported.  ``--mode all`` runs
the three.

Needs root and the distribution's bcc.  Usage::

    sudo .venv/bin/python benchmarks/trace_overhead.py [--count 100000] [--runs 3]
        [--backend kprobe|fentry|tracepoint] [--json FILE]
        [--mode burst|sustained|anomalies|all] [--seconds 30] [--ctrunc-every 1000]

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

# What both loops begin with: the includes, and start(), which makes the
# socketpair and the pipe, says "ready PID" to this script and waits for its
# "go" (start_loop, below).
PRELUDE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "send_recv_fd.h"

static int start(int sv[2], int p[2])
{
    char line[16];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 || pipe(p) < 0) {
        perror("setup");
        return -1;
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof(line), stdin))   /* wait for "go" */
        return -1;
    return 0;
}
"""

LOOP_C = PRELUDE_C + r"""

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 100000;
    int sv[2], p[2];
    struct timespec t0, t1;
    if (start(sv, p) < 0)
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


# The same loop for a time instead of a count (the sustained modes), with a
# receive cut short every CTRUNC_EVERY transfers (0: never): the message's fd
# is sent as usual and received with no room for control data, so the kernel
# sets MSG_CTRUNC and closes the fd -- the anomaly the tracer must report.
FLOOD_C = PRELUDE_C + r"""

static int recv_truncated(int fd)
{
    struct msghdr msg;
    char iobuf[1];
    struct iovec io = { .iov_base = iobuf, .iov_len = sizeof(iobuf) };
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    if (recvmsg(fd, &msg, 0) != 1 || !(msg.msg_flags & MSG_CTRUNC))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 30.0;
    long ctrunc_every = argc > 2 ? atol(argv[2]) : 0;
    int sv[2], p[2];
    struct timespec t0, t1;
    long done = 0, truncated = 0;
    if (start(sv, p) < 0)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        for (int k = 0; k < 1000; k++, done++) {
            if (send_fd(sv[0], p[0]) != 1) { perror("send_fd"); return 1; }
            if (ctrunc_every && done % ctrunc_every == ctrunc_every - 1) {
                if (recv_truncated(sv[1]) < 0) { perror("recv_truncated"); return 1; }
                truncated++;
                continue;
            }
            int fd = recv_fd(sv[1]);
            if (fd < 0) { perror("recv_fd"); return 1; }
            close(fd);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9 >= seconds)
            break;
    }
    printf("elapsed_ns %lld transfers %ld ctrunc %ld\n",
           (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
           done, truncated);
    return 0;
}
"""


def build(tmp: Path, source: str = LOOP_C, name: str = "fdloop") -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("trace_overhead: gcc is needed to build the loop")
    src, exe = tmp / f"{name}.c", tmp / name
    src.write_text(source)
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-I", str(ROOT / "benchmarks" / "csrc"),
                    "-o", str(exe), str(src)], check=True)
    return exe


def start_loop(exe: Path, *args: object) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([str(exe), *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    if len(ready) != 2 or ready[0] != "ready":
        raise SystemExit(f"trace_overhead: the loop did not start: {ready}")
    return proc, int(ready[1])


def finish_loop(proc: subprocess.Popen[str]) -> float:
    """Send "go", wait for the loop; its own measure of the loop, in seconds."""
    return finish_flood(proc)[0]


def finish_flood(proc: subprocess.Popen[str]) -> tuple[float, int, int]:
    """Send "go", wait for the loop: seconds, transfers, CTRUNC receives (by its own count)."""
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
    t = re.search(r"transfers (\d+) ctrunc (\d+)", out)
    return int(m.group(1)) / 1e9, int(t.group(1)) if t else 0, int(t.group(2)) if t else 0


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


_SEND_OR_RECV = (b'"event": "send"', b'"event": "recv"')


def count_events(path: Path) -> int:
    """The send and receive records (not the transfer, lost or summary ones)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if any(k in line for k in _SEND_OR_RECV))


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
            n = count_events(out_path)
            if n != last:
                last, idle_since = n, time.monotonic()
            if n >= expected:
                break
        drained = idle_since - go
        tracer.send_signal(signal.SIGINT)
        _, err = tracer.communicate(timeout=60)
    seen = count_events(out_path)
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


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of *pid* in KiB (0 once it is gone); *field*: RssAnon for the heap."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def summary_figures(err: str) -> dict[str, int]:
    """The figures of rawsys-trace's closing summary (-1 when a line is missing)."""
    patterns = {
        "produced": r"Events: (\d+) produced",
        "produced_routine": r"produced \((\d+) routine",
        "produced_anomalies": r"routine, (\d+) anomalies",
        "written": r"anomalies\), (\d+) written",
        "routine_dropped": r"Routine events dropped: (\d+)",
        "ring_full": r"\((\d+) refused by the full ring buffer",
        "unread_at_stop": r"(\d+) unread at stop",
        "anomalies_dropped": r"Anomalies dropped: (\d+)",
        "lost": r"Lost events: (\d+)",
    }
    out = {}
    for key, pattern in patterns.items():
        m = re.search(pattern, err)
        out[key] = int(m.group(1)) if m else -1
    return out


def sustained_run(exe: Path, tmp: Path, seconds: float, ctrunc_every: int,
                  backend: str | None = None) -> dict[str, float]:
    """The flood loop for *seconds* under ``rawsys-trace --json``, stopped by SIGINT at its end.

    Untraced first (the producer's own speed), then traced: what the probes
    produced, what the tracer wrote and dropped, the tracer's RSS from its
    ``Tracing`` line to the end, and how long it took to exit after SIGINT.
    """
    proc, _ = start_loop(exe, min(seconds, 5.0), ctrunc_every)
    u_elapsed, u_transfers, _ = finish_flood(proc)

    proc, pid = start_loop(exe, seconds, ctrunc_every)
    out_path = tmp / "flood.jsonl"
    with open(out_path, "wb") as out:
        forced = ["--backend", backend] if backend else []
        tracer = subprocess.Popen(
            [sys.executable, "-m", "rawsys.trace", "--json", "-p", str(pid), *forced],
            stdout=out, stderr=subprocess.PIPE, cwd=ROOT,
        )
        wait_for_tracing(tracer)
        rss_start = rss_kib(tracer.pid)
        rss_peak = rss_start
        anon_start = rss_kib(tracer.pid, "RssAnon")
        anon_peak = anon_start
        go = time.monotonic()
        assert proc.stdin is not None
        # Sample the tracer's memory while the loop runs.
        import threading

        done = threading.Event()

        def sample() -> None:
            nonlocal rss_peak, anon_peak
            while not done.wait(0.25):
                rss_peak = max(rss_peak, rss_kib(tracer.pid))
                anon_peak = max(anon_peak, rss_kib(tracer.pid, "RssAnon"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        elapsed, transfers, truncated = finish_flood(proc)
        rss_peak = max(rss_peak, rss_kib(tracer.pid))
        loop_end = time.monotonic()
        tracer.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        _, err = tracer.communicate(timeout=120)
        stop_latency = time.monotonic() - signalled
        done.set()
        sampler.join()
    text = err.decode(errors="replace")
    figures = summary_figures(text)
    written = count_lines(out_path)
    reported_ctrunc = 0
    with open(out_path, "rb") as f:
        for line in f:
            if b'"CTRUNC"' in line and b'"event": "recv"' in line:  # not its transfers
                reported_ctrunc += 1
    produced = figures["produced"]
    return {
        "seconds": elapsed, "transfers": transfers, "ctrunc_injected": truncated,
        "ctrunc_reported": reported_ctrunc, "untraced_rate": u_transfers / u_elapsed,
        "traced_rate": transfers / elapsed, "expected_events": 2 * transfers,
        "lines_written": written, "stop_latency": stop_latency,
        "rss_start_kib": rss_start, "rss_peak_kib": rss_peak,
        "anon_start_kib": anon_start, "anon_peak_kib": anon_peak,
        "reader_rate": figures["written"] / (loop_end - go), "producer_rate": produced / elapsed,
        "summary": text.strip().splitlines()[-6:],  # type: ignore[dict-item]
        **figures,
    }


def print_sustained(title: str, r: dict) -> None:  # type: ignore[type-arg]
    produced = r["produced"]
    print(f"== {title}: {r['seconds']:.1f} s of the C loop at full speed, "
          "rawsys-trace --json -p PID to a file")
    print(f"untraced loop           {r['untraced_rate']:12.0f} transfers/s")
    print(f"traced loop             {r['traced_rate']:12.0f} transfers/s "
          f"({r['producer_rate']:.0f} events/s)")
    print(f"traced/untraced ratio   {r['traced_rate'] / r['untraced_rate']:.2f}  (target >= 0.6)")
    print(f"events produced         {produced}  (loop's count x2: {int(r['expected_events'])}; "
          f"routine {r['produced_routine']}, anomalies {r['produced_anomalies']})")
    print(f"events written          {r['written']}  ({r['lines_written']} lines; "
          f"{100 * r['written'] / max(1, produced):.0f} % of produced)")
    print(f"routine dropped         {r['routine_dropped']}  (ring full {r['ring_full']}, "
          f"unread at stop {r['unread_at_stop']})")
    print(f"anomalies dropped       {r['anomalies_dropped']}  (target 0)")
    # The summary's "written" counts the probes' events; the file may hold more
    # lines (one per lost fd, from the matcher).
    accounted = r["written"] + r["routine_dropped"] + r["anomalies_dropped"]
    print(f"totals exact            {'yes' if accounted == produced else 'NO'}  "
          f"(written + dropped = {accounted})")
    print(f"reader / producer rate  {r['reader_rate'] / max(1.0, r['producer_rate']):.2f}  "
          f"(reader {r['reader_rate']:.0f} events/s; target >= 1.0, else >= 0.5 written)")
    growth = (r["rss_peak_kib"] - r["rss_start_kib"]) / 1024
    print(f"RSS growth              {growth:.1f} MiB  (from {r['rss_start_kib'] / 1024:.1f} MiB "
          f"at the Tracing line; target <= 64 MiB)")
    anon = (r["anon_peak_kib"] - r["anon_start_kib"]) / 1024
    print(f"  of which the heap     {anon:.1f} MiB  (RssAnon)")
    print(f"stop latency            {r['stop_latency']:.2f} s after SIGINT  (target <= 1 s)")
    if r["ctrunc_injected"]:
        print(f"CTRUNC injected         {r['ctrunc_injected']}")
        print(f"CTRUNC reported         {r['ctrunc_reported']}  (target: every one)")


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
    ap.add_argument("--mode", choices=("burst", "sustained", "anomalies", "all"), default="burst",
                    help="burst: --count transfers, drained (default); sustained: --seconds of "
                         "the loop at full speed, stopped by SIGINT at its end; anomalies: the "
                         "same with a CTRUNC receive every --ctrunc-every transfers; all: each")
    ap.add_argument("--seconds", type=float, default=30.0, help="sustained modes: loop length")
    ap.add_argument("--ctrunc-every", type=int, default=1000,
                    help="anomalies mode: one receive cut short per this many transfers")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("trace_overhead: needs root (eBPF); skipped", file=sys.stderr)
        return 0
    if args.mode != "burst":
        with tempfile.TemporaryDirectory(prefix="rawsys-bench-") as d:
            tmp = Path(d)
            flood = build(tmp, FLOOD_C, "fdflood")
            results = {}
            if args.mode in ("sustained", "all"):
                results["sustained"] = sustained_run(flood, tmp, args.seconds, 0, args.backend)
                print_sustained("sustained", results["sustained"])
            if args.mode in ("anomalies", "all"):
                results["anomalies"] = sustained_run(flood, tmp, args.seconds, args.ctrunc_every,
                                                     args.backend)
                print_sustained(f"flood with anomalies (a CTRUNC receive every "
                                f"{args.ctrunc_every} transfers)", results["anomalies"])
        if args.json is not None:
            args.json.write_text(json.dumps(results))
        if args.mode != "all":
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
