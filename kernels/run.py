#!/usr/bin/env python3
"""The kernel matrix: the tracer's live tests on every kernel this machine has.

``./dev kernels`` runs this.  It installs what it needs (Debian's
qemu-system-x86, the distribution kernel linux-image-amd64 -- Debian 12's
6.1 -- and busybox-static; virtme-ng from PyPI into its own venv,
``.venv-kernels``), then for each kernel:

* this machine's own: ``kernels/guest.py`` runs directly; backends doctor
  refuses here get their programs loaded through the verifier only;
* each ``/boot/vmlinuz-RELEASE`` with its modules: booted with virtme-ng on
  this machine's own root filesystem (read-only; KVM where it works, software
  emulation otherwise), ``kernels/guest.py`` run inside; every backend must
  attach and pass there.

Results come back through a folder shared read-write with the VM (its
console loses lines and its /tmp is its own).  At the end a table: kernel x
backend -> result, tests passed, start-up time of ``rawsys-trace`` and the
traced/untraced throughput ratio of a C fd-passing loop, both from one run.
Exit status 0 only if every cell passed.

Examples::

    ./dev kernels                       # every kernel, every backend
    ./dev kernels --kernel 6.1          # one kernel (a release or part of one)
    ./dev kernels --kernel host         # this machine's kernel only, no VM
    ./dev kernels --backend kprobe      # one backend (repeatable)
    ./dev kernels --list                # the kernels it would boot
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GUEST = ROOT / "kernels" / "guest.py"
BACKENDS = ("tracepoint", "kprobe", "fentry")
VNG_VENV = ROOT / ".venv-kernels"
VNG_REQUIREMENT = "virtme-ng==1.42"
# qemu, a distribution kernel to boot, and the static busybox virtme-ng puts
# in the guest's initramfs.
PACKAGES = ("qemu-system-x86", "linux-image-amd64", "busybox-static")


def log(msg: str) -> None:
    print(f"kernels: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ set-up
def ensure_packages(names: tuple[str, ...] = PACKAGES) -> None:
    missing = [n for n in names
               if subprocess.run(["dpkg", "-s", n], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"kernels: needs {' '.join(missing)}; run as root to install them")
    log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def ensure_vng() -> Path:
    """virtme-ng in its own venv (not the project's), made once."""
    vng = VNG_VENV / "bin" / "vng"
    if not vng.exists():
        log(f"installing {VNG_REQUIREMENT} into {VNG_VENV.name}")
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VNG_VENV)], check=True)
        subprocess.run([str(VNG_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                        VNG_REQUIREMENT], check=True)
    return vng


@dataclass
class Kernel:
    release: str
    image: str | None  # None: this machine's running kernel

    @property
    def host(self) -> bool:
        return self.image is None


def find_kernels() -> list[Kernel]:
    """This machine's kernel, then every bootable /boot image with its modules."""
    running = platform.release()
    found = [Kernel(running, None)]
    for image in sorted(glob.glob("/boot/vmlinuz-*")):
        release = image[len("/boot/vmlinuz-"):]
        if release != running and os.path.isdir(f"/lib/modules/{release}"):
            found.append(Kernel(release, image))
    return found


def matches(kernel: Kernel, wanted: str) -> bool:
    """'host', a whole release, or its start up to a dot or dash ("6.1" is not 6.18)."""
    if wanted == "host":
        return kernel.host
    r = kernel.release
    return r == wanted or (r.startswith(wanted) and r[len(wanted)] in ".-")


def select(kernels: list[Kernel], wanted: list[str] | None) -> list[Kernel]:
    if not wanted:
        return kernels
    chosen = [k for k in kernels if any(matches(k, w) for w in wanted)]
    if not chosen:
        names = ", ".join(["host", *(k.release for k in kernels if not k.host)])
        raise SystemExit(f"kernels: no kernel matches {', '.join(wanted)}; have: {names}")
    return chosen


# ------------------------------------------------------------------ running
@dataclass
class Row:
    kernel: Kernel
    accel: str
    out: Path
    boot_seconds: float | None = None
    total_seconds: float = 0.0
    note: str = ""
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)


def guest_command(out: Path, backends: list[str], count: int, refused: str) -> list[str]:
    cmd = [sys.executable, str(GUEST), "--out", str(out), "--refused", refused,
           "--count", str(count)]
    for b in backends:
        cmd += ["--backend", b]
    return cmd


def read_cells(row: Row, backends: list[str]) -> None:
    for b in backends:
        try:
            row.cells[b] = json.loads((row.out / f"{b}.json").read_text())
        except (OSError, ValueError):
            row.cells[b] = {"backend": b, "mode": "missing"}


def run_host(kernel: Kernel, out: Path, backends: list[str], count: int) -> Row:
    row = Row(kernel, "host", out)
    start = time.monotonic()
    log(f"{kernel.release} (this machine): running the tests")
    subprocess.run(guest_command(out, backends, count, "verify"), cwd=ROOT, check=False)
    row.total_seconds = time.monotonic() - start
    read_cells(row, backends)
    return row


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def boot(vng: Path, kernel: Kernel, out: Path, command: list[str], kvm: bool, timeout: float,
         args: argparse.Namespace) -> tuple[int | None, float | None, float, str]:
    """Boot kernel with command as init's job: (exit status or None on timeout,
    seconds until the guest started the command, total seconds, console tail)."""
    assert kernel.image is not None
    cmd = [str(vng), "--run", kernel.image, "--force-9p", "--memory", args.memory,
           "--cpus", str(args.cpus), "--rodir", f"{ROOT}={ROOT}", "--rwdir", f"{out}={out}",
           "--cwd", str(ROOT), "--exec", shlex.join(command)]
    if not kvm:
        cmd.insert(3, "--disable-kvm")
    env = {**os.environ, "PATH": f"{vng.parent}:{os.environ.get('PATH', '')}"}
    console = out / "console.log"
    start = time.monotonic()
    booted: float | None = None
    with open(console, "wb") as f:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        rc: int | None = None
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            if booted is None and (out / "started.json").exists():
                booted = time.monotonic() - start
            if time.monotonic() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)  # qemu and vng: this group is ours
                proc.wait()
                rc = None
                break
    if booted is None and (out / "started.json").exists():
        booted = time.monotonic() - start
    tail = console.read_text(errors="replace")[-3000:]
    return rc, booted, time.monotonic() - start, tail


def run_vm(vng: Path, kernel: Kernel, out: Path, backends: list[str], args: argparse.Namespace,
           accel: dict[str, Any]) -> Row:
    command = guest_command(out, backends, args.count, "fail")
    if accel.get("kvm") is None:
        accel["kvm"] = kvm_usable()
    if accel["kvm"]:
        log(f"{kernel.release}: booting with KVM")
        rc, booted, total, tail = boot(vng, kernel, out, command, True, args.timeout, args)
        if booted is None and rc not in (None, 0) and total < 60:
            # e.g. qemu: "failed to set MSR 0x10a": this machine's KVM cannot run a guest.
            why = next((ln for ln in tail.splitlines() if "error" in ln.lower()), tail[-200:])
            accel.update(kvm=False, why=why.strip())
            log(f"KVM does not work here ({accel['why']}); software emulation instead")
            shutil.rmtree(out)
            out.mkdir()
    if not accel["kvm"]:
        log(f"{kernel.release}: booting under software emulation (slow)")
        rc, booted, total, tail = boot(vng, kernel, out, command, False, args.timeout, args)
    row = Row(kernel, "kvm" if accel["kvm"] else "tcg", out, booted, total)
    if rc is None:
        row.note = f"timed out after {args.timeout:.0f} s"
    elif not (out / "done").exists():
        row.note = f"the guest stopped early (exit {rc}); console: {out / 'console.log'}"
    if row.note:
        log(f"{kernel.release}: {row.note}\n{tail[-1500:]}")
    read_cells(row, backends)
    return row


# ------------------------------------------------------------------ report
def verdict(cell: dict[str, Any]) -> tuple[bool, str]:
    """(passed, what the cell shows in the result column)."""
    mode = cell.get("mode")
    tests = cell.get("tests", {})
    counts = tests.get("counts", {})
    if mode == "missing":
        return False, "NO RESULT"
    if mode == "refused":
        return False, "REFUSED"
    # A skip is a failure here: every test of the set can run where the cell runs.
    ok = (tests.get("rc") == 0 and counts.get("passed", 0) > 0
          and not counts.get("failed") and not counts.get("error") and not counts.get("skipped"))
    if mode == "live" and "overhead" in cell:
        ok = ok and cell["overhead"].get("rc") == 0
    word = "pass" if ok else "FAIL"
    return ok, word if mode == "live" else f"{word} (verifier)"


def format_table(rows: list[Row]) -> str:
    head = (f"{'kernel':<18} {'accel':<5} {'backend':<10} {'result':<15} {'tests':>6} "
            f"{'start-up':>9} {'ratio':>6} {'time':>6}")
    lines = [head, "-" * len(head)]
    notes: list[str] = []
    for row in rows:
        for backend, cell in row.cells.items():
            _, word = verdict(cell)
            counts = cell.get("tests", {}).get("counts", {})
            total = sum(counts.values())
            tests = f"{counts.get('passed', 0)}/{total}" if total else "-"
            over = cell.get("overhead", {})
            startup = f"{over['startup']:.1f} s" if "startup" in over else "-"
            ratio = f"{over['ratio']:.2f}" if "ratio" in over else "-"
            seconds = cell.get("tests", {}).get("seconds", 0) + over.get("seconds", 0)
            lines.append(f"{row.kernel.release[:18]:<18} {row.accel:<5} {backend:<10} "
                         f"{word:<15} {tests:>6} {startup:>9} {ratio:>6} {seconds:>5.0f}s")
            if cell.get("mode") in ("refused", "verifier"):
                notes.append(f"{row.kernel.release} {backend}: doctor says {cell.get('doctor')}")
            for t in cell.get("tests", {}).get("tests", []):
                if t["outcome"] in ("failed", "error"):
                    notes.append(f"{row.kernel.release} {backend}: {t['name']} {t['outcome']}: "
                                 f"{t['message'][:200]}")
            if over.get("lost"):
                notes.append(f"{row.kernel.release} {backend}: {over['lost']:.0f} events lost "
                             f"in the overhead run ({over.get('seen', 0):.0f}/"
                             f"{over.get('expected', 0):.0f} seen)")
    for row in rows:
        if not row.kernel.host:
            boot = f"{row.boot_seconds:.0f} s" if row.boot_seconds is not None else "never"
            notes.append(f"{row.kernel.release}: VM ({row.accel}) to userspace in {boot}, "
                         f"{row.total_seconds / 60:.1f} min in all" +
                         (f"; {row.note}" if row.note else ""))
    return "\n".join(lines + [""] + notes)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n".join(__doc__.split("Examples::")[1].splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--kernel", action="append", metavar="RELEASE",
                    help="'host' or (part of) a release; repeatable (default: every kernel)")
    ap.add_argument("--backend", action="append", choices=BACKENDS,
                    help="a backend; repeatable (default: all three)")
    ap.add_argument("--list", action="store_true", help="list the kernels and exit")
    ap.add_argument("--no-install", action="store_true",
                    help="install nothing (use what is there)")
    ap.add_argument("--count", type=int, default=10_000,
                    help="transfers of each overhead run (0: no overhead run)")
    # With the cause tests (tests/tracing/test_causes.py), Debian's 6.1 under
    # software emulation took 484 s (tracepoint) and 849 s (kprobe) after a
    # 55 s boot: 1500 s cut fentry off.
    ap.add_argument("--timeout", type=float, default=3000.0, help="seconds per VM")
    ap.add_argument("--memory", default="3G", help="guest memory (qemu -m)")
    ap.add_argument("--cpus", type=int, default=2, help="guest CPUs")
    ap.add_argument("--out", type=Path, help="results folder (default: a new one in /tmp)")
    args = ap.parse_args()
    if not args.no_install:
        ensure_packages()
    kernels = select(find_kernels(), args.kernel)
    if args.list:
        for k in kernels:
            print(f"{k.release}\t{'this machine' if k.host else k.image}")
        return 0
    if os.geteuid() != 0:
        raise SystemExit("kernels: live tracing needs root")
    vng = VNG_VENV / "bin" / "vng" if args.no_install else ensure_vng()
    out = args.out or Path(tempfile.mkdtemp(prefix="rawsys-kernels-"))
    backends = list(dict.fromkeys(args.backend or BACKENDS))
    rows: list[Row] = []
    accel: dict[str, Any] = {}
    vm_seconds = 0.0
    for k in kernels:
        kout = out / ("host" if k.host else k.release)
        kout.mkdir(parents=True, exist_ok=True)
        if k.host:
            rows.append(run_host(k, kout, backends, args.count))
        else:
            row = run_vm(vng, k, kout, backends, args, accel)
            vm_seconds += row.total_seconds
            rows.append(row)
    table = format_table(rows)
    if any(not k.host for k in kernels):
        table += f"\nVMs in all: {vm_seconds / 60:.1f} min"
        if accel.get("why"):
            table += f" (software emulation: KVM failed: {accel['why']})"
    print(table)
    (out / "matrix.txt").write_text(table + "\n")
    (out / "matrix.json").write_text(json.dumps(
        [{"kernel": r.kernel.release, "accel": r.accel, "boot_seconds": r.boot_seconds,
          "total_seconds": r.total_seconds, "note": r.note, "cells": r.cells} for r in rows],
        indent=1))
    print(f"results in {out}")
    passed = sum(verdict(c)[0] for r in rows for c in r.cells.values())
    failed = sum(len(r.cells) for r in rows) - passed
    print(f"kernels: {passed} passed, {failed} failed")
    return 0 if not failed and all(not r.note for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
