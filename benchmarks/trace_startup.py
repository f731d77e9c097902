"""How long rawsys-trace takes to start, next to bcc's minimal tracepoint program.

Each run starts two fresh interpreters (the same one as this script), one
after the other: one starts a tracing session as ``rawsys-trace`` does
(``rawsys.trace.session.Session.start``: bcc imported, the kernel facts and
doctor's verdict from their caches, the program rendered, compiled, loaded
through the verifier, attached, the ring buffer opened), the other does
what the smallest bcc tool does, one empty program on
``syscalls:sys_enter_sendmsg``.  Each reports when each phase ended; the
table gives the median of each phase over the runs, and the ratio of the
totals (from starting the interpreter to every probe attached), measured
in the same run on the same machine.  The verifier's work (instructions
processed per program) is printed too: unlike time, it does not depend on
how busy the machine is.

Usage (as root, with bcc; on a shared machine under the CPU lock)::

    flock /work/coord/cpu.lock .venv/bin/python benchmarks/trace_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

PHASES = ("interpreter", "import", "facts", "compile", "load", "attach")
LABELS = {
    "interpreter": "interpreter start",
    "import": "import (rawsys, bcc)",
    "facts": "kernel facts, text",
    "compile": "compile (clang)",
    "load": "load (verifier)",
    "attach": "attach",
}
MINIMAL = b"TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return 0; }"
TARGET = 2.0


def child_rawsys(backend: str | None) -> dict[str, float]:
    t0 = time.monotonic()
    from rawsys.trace.session import Session

    imported = time.monotonic() - t0
    s = Session(backend=backend)
    s.start()
    phases = dict(s.start_phases)
    phases["import"] = phases.get("import", 0.0) + imported
    phases["_started"] = t0
    phases["_backend"] = 0.0
    print(json.dumps({"phases": phases, "backend": s.backend}), flush=True)
    s.close()
    return phases


def child_bcc() -> dict[str, float]:
    t0 = time.monotonic()
    from rawsys.trace.system.bccloader import load_bcc

    bcc = load_bcc()
    t1 = time.monotonic()
    base: Any = bcc.BPF

    class Deferred(base):  # type: ignore[misc]
        """bcc's BPF, its program loaded and attached below (timed apart)."""

        def _trace_autoload(self) -> None:
            pass

    b = Deferred(text=MINIMAL)
    t2 = time.monotonic()
    fn = b.load_func(b"tracepoint__syscalls__sys_enter_sendmsg", bcc.BPF.TRACEPOINT)
    t3 = time.monotonic()
    b.attach_tracepoint(tp=b"syscalls:sys_enter_sendmsg", fn_name=fn.name)
    t4 = time.monotonic()
    phases = {"import": t1 - t0, "facts": 0.0, "compile": t2 - t1, "load": t3 - t2,
              "attach": t4 - t3, "_started": t0}
    print(json.dumps({"phases": phases}), flush=True)
    b.cleanup()
    return phases


# A stopped rawsys-trace leaves the kernel's release of its probes to a helper
# process for about half a second (rawsys.trace.system.release); a start
# measured meanwhile shares the machine with it (bcc's minimal compile took
# 0.72-0.81 s right after a rawsys-trace run, 0.37-0.47 s otherwise).
SETTLE = 1.0


def run_child(which: str, backend: str | None) -> tuple[dict[str, float], str | None]:
    time.sleep(SETTLE)
    cmd = [sys.executable, __file__, "--child", which]
    if backend:
        cmd += ["--backend", backend]
    spawned = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    phases = {k: v for k, v in report["phases"].items() if not k.startswith("_")}
    # CLOCK_MONOTONIC is shared by every process: the child's first
    # timestamp tells how long its interpreter took to reach the script.
    phases["interpreter"] = report["phases"]["_started"] - spawned
    phases["total"] = sum(phases.get(p, 0.0) for p in PHASES)
    return phases, report.get("backend")


def verifier_work(backend: str | None) -> tuple[str, dict[str, int], int]:
    """(backend, instructions the verifier processed per program, instructions
    bcc compiled in all: programs and bpf_loop callbacks)."""
    from rawsys.trace.bpf import program
    from rawsys.trace.session import Session
    from rawsys.trace.system.bccloader import load_bcc

    bcc = load_bcc()
    from bcc.libbcc import lib  # once load_bcc() has found the distribution's bcc

    s = Session(backend=backend)
    b = program.compile_program(bcc, s.program_text())
    try:
        names = [lib.bpf_function_name(b.module, i) for i in range(lib.bpf_num_functions(b.module))]
        compiled = sum(lib.bpf_function_size(b.module, n) for n in names) // 8
        return s.backend or "?", program.verifier_work(b, bcc), compiled
    finally:
        b.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of both (default 3)")
    ap.add_argument("--backend", choices=("tracepoint", "kprobe", "fentry"),
                    help="force a backend (default: doctor's choice, as rawsys-trace)")
    ap.add_argument("--child", choices=("rawsys", "bcc"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "rawsys":
        child_rawsys(args.backend)
        return 0
    if args.child == "bcc":
        child_bcc()
        return 0
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    backend = None
    # A first start of each, not counted: after a change of the facts or a
    # reboot, the caches are written then (the README gives that cost).
    run_child("rawsys", args.backend)
    run_child("bcc", None)
    for i in range(args.runs):
        # Alternate which goes first, so neither always runs on a warmer machine.
        order = ("rawsys", "bcc") if i % 2 == 0 else ("bcc", "rawsys")
        for which in order:
            phases, b = run_child(which, args.backend)
            (ours if which == "rawsys" else theirs).append(phases)
            backend = b or backend

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows)

    print(f"start-up, median of {args.runs} runs (seconds); rawsys-trace backend {backend}")
    print(f"{'phase':24s} {'rawsys-trace':>12s} {'bcc minimal':>12s}")
    for p in PHASES:
        print(f"{LABELS[p]:24s} {med(ours, p):12.3f} {med(theirs, p):12.3f}")
    total_ours, total_theirs = med(ours, "total"), med(theirs, "total")
    print(f"{'total':24s} {total_ours:12.3f} {total_theirs:12.3f}")
    ratio = total_ours / total_theirs
    verdict = "met" if ratio <= TARGET else "not met"
    print(f"ratio rawsys-trace / bcc minimal: {ratio:.2f}  (target <= {TARGET:.0f}: {verdict})")
    print("every run, in order:")
    for i, (o, t) in enumerate(zip(ours, theirs), 1):
        print(f"  run {i}: rawsys-trace {o['total']:.3f} s (compile {o['compile']:.3f}, "
              f"load {o['load']:.3f})  bcc {t['total']:.3f} s  ratio {o['total'] / t['total']:.2f}")
    name, work, compiled = verifier_work(args.backend)
    print(f"verifier work, instructions processed ({name} backend): {sum(work.values())} in all")
    for fn, n in work.items():
        print(f"  {fn:48s} {n:9d}")
    # bcc's compile grows with the program it compiles: what the target leaves for it.
    compile_ours, compile_theirs = med(ours, "compile"), med(theirs, "compile")
    per_k = (compile_ours - compile_theirs) / compiled * 1000
    budget = TARGET * total_theirs - (total_ours - compile_ours)
    room = (budget - compile_theirs) / per_k * 1000 if per_k > 0 else float("inf")
    print(f"compiled: {compiled} BPF instructions; bcc's compile beyond its minimal "
          f"program's: {per_k * 1000:.0f} ms per 1000 instructions")
    print(f"the target leaves {budget:.3f} s for the compile (the other phases as measured): "
          f"room for about {max(room, 0):.0f} instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
