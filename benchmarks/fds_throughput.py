#!/usr/bin/env python3
"""fds_throughput: how fast 1 byte + 1 fd a message goes over an AF_UNIX DGRAM socketpair.

Contestants, all in one run and one process (sender and receiver alternate,
every received fd is closed):

  C loop          the classic send_fd/recv_fd pair of cmsg(3), in C
                  (csrc/send_recv_fd.h), built here with gcc -O2
  CPython         socket.send_fds / socket.recv_fds
  rawsys          rawsys.send_fds / rawsys.recv_fds
  rawsys batched  rawsys.send_fds_batch / recv_fds_batch, 64 messages a call
  C batched       the same workload with sendmmsg/recvmmsg, 64 a call, in C:
                  the limit for rawsys batched
  literal C port  examples/send_fd_fork.py's send_fd/recv_fd, the C pair ported
                  line by line onto rawsys's C layer (msghdr, iovec and control
                  buffer built on every call); information only

and, in the same rounds, where rawsys's time goes: the ctypes floor
(un-prototyped libc sendmsg/recvmsg on prebuilt byref() structures, no
checks: the least a ctypes caller can pay), then that pair with one
guarantee added at a time (fds_steps.py), up to rawsys itself.  Each step is
timed with the real calls and with Python stand-ins for sendmsg/recvmsg that
write what the kernel writes (rawsys's own calls swapped in its modules'
globals): the second gives Python's share alone, and each step's cost is its
Python ns per transfer minus the step above it.

Figures are transfers per second of CPU time, ns of CPU time per transfer
(one send + one receive) and ratios from this one run.  CPU time, not wall
time: sender and receiver run in one thread, so the thread's CPU clock counts
all their work, in Python and in the kernel, and none of the time the
machine's other load takes the core (on a shared machine that alone moved
wall-clock rounds by tens of percent).  Rounds are interleaved and each
contestant's best round is kept.  --rss runs 1,000,000 transfers through
rawsys and reports the growth of the resident set; --fork measures a child
sending to its parent (wall clock: two processes).

usage: fds_throughput.py [-n TRANSFERS] [--rounds R] [--quick] [--rss] [--fork]

examples:
  fds_throughput.py              # the tables: 21 rounds of 10,000 transfers a contestant
  fds_throughput.py -n 50000     # longer rounds
  fds_throughput.py --quick      # a smoke run (seconds; figures meaningless)
  fds_throughput.py --rss        # memory over 1M transfers
  fds_throughput.py --fork       # cross-process variant
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import fds_steps

import rawsys

BATCH = 64
CSRC = Path(__file__).resolve().parent / "csrc"

C_LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "send_recv_fd.h"

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int sv[2], p[2];
    struct timespec t0, t1;
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 || pipe(p) < 0)
        return 1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long i = 0; i < n; i++) {
        int fd;
        if (send_fd(sv[0], p[0]) != 1)
            return 2;
        fd = recv_fd(sv[1]);
        if (fd < 0)
            return 3;
        close(fd);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    printf("%.9f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
"""


C_BATCH = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define B 64

/* The same workload with sendmmsg/recvmmsg, 64 a call, in C: the kernel's
 * per-message work bounds what any batching can gain (rawsys batched's limit). */
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int sv[2], p[2];
    struct mmsghdr sm[B], rm[B];
    struct iovec si[B], ri[B];
    char sd[B], rd[B];
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr cmsg; } sc[B], rc[B];
    struct timespec t0, t1;
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 || pipe(p) < 0)
        return 1;
    memset(sm, 0, sizeof sm);
    memset(rm, 0, sizeof rm);
    memset(sc, 0, sizeof sc);
    for (int i = 0; i < B; i++) {
        sd[i] = 'x';
        si[i].iov_base = &sd[i];
        si[i].iov_len = 1;
        sm[i].msg_hdr.msg_iov = &si[i];
        sm[i].msg_hdr.msg_iovlen = 1;
        sm[i].msg_hdr.msg_control = sc[i].buf;
        sm[i].msg_hdr.msg_controllen = sizeof sc[i].buf;
        sc[i].cmsg.cmsg_len = CMSG_LEN(sizeof(int));
        sc[i].cmsg.cmsg_level = SOL_SOCKET;
        sc[i].cmsg.cmsg_type = SCM_RIGHTS;
        memcpy(CMSG_DATA(&sc[i].cmsg), &p[0], sizeof(int));
        ri[i].iov_base = &rd[i];
        ri[i].iov_len = 1;
        rm[i].msg_hdr.msg_iov = &ri[i];
        rm[i].msg_hdr.msg_iovlen = 1;
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long k = 0; k < n / B; k++) {
        if (sendmmsg(sv[0], sm, B, 0) != B)
            return 2;
        for (int i = 0; i < B; i++) {
            rm[i].msg_hdr.msg_control = rc[i].buf;
            rm[i].msg_hdr.msg_controllen = sizeof rc[i].buf;
        }
        if (recvmmsg(sv[1], rm, B, MSG_CMSG_CLOEXEC, NULL) != B)
            return 3;
        for (int i = 0; i < B; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(&rc[i].cmsg), sizeof(int));
            close(fd);
        }
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    printf("%.9f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
"""



# --- the C pair ported line by line onto the C layer (structs built every call) ----
# The literal port is the one in examples/: the benchmark measures the very code a
# reader of the example runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from send_fd_fork import recv_fd as literal_recv_fd  # noqa: E402
from send_fd_fork import send_fd as literal_send_fd  # noqa: E402

# --- the contestants --------------------------------------------------------------

Loop = Callable[[socket.socket, socket.socket, int, int], None]


def pair_loop(send: Callable[..., int], recv: Callable[..., Tuple[bytes, List[int], int, object]]
              ) -> Loop:
    """A loop of *send*/*recv* with CPython's signatures: 1 byte and 1 fd a message."""

    def loop(a: socket.socket, b: socket.socket, fd: int, n: int) -> None:
        close = os.close
        data = [b"x"]
        fds = [fd]
        for _ in range(n):
            send(a, data, fds)
            close(recv(b, 1, 1)[1][0])

    return loop


loop_cpython = pair_loop(socket.send_fds, socket.recv_fds)
loop_rawsys = pair_loop(rawsys.send_fds, rawsys.recv_fds)


def loop_batched(a: socket.socket, b: socket.socket, fd: int, n: int) -> None:
    send_batch, recv_batch, close = rawsys.send_fds_batch, rawsys.recv_fds_batch, os.close
    items = [([b"x"], [fd])] * BATCH
    for _ in range(n // BATCH):
        send_batch(a, items)
        for _msg, fds, _flags, _addr in recv_batch(b, BATCH, 1, 1):
            close(fds[0])


def loop_literal(a: socket.socket, b: socket.socket, fd: int, n: int) -> None:
    sa, sb, close = a.fileno(), b.fileno(), os.close
    for _ in range(n):
        if literal_send_fd(sa, fd) != 1:
            raise OSError(ctypes.get_errno(), "sendmsg failed")
        got = literal_recv_fd(sb)
        if got < 0:
            raise OSError(ctypes.get_errno(), "recvmsg failed")
        close(got)


def time_loop(loop: Loop, n: int) -> float:
    """Transfers per CPU second of *loop* over a fresh socketpair."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        loop(a, b, r, min(n, 1000))  # warm up
        start = time.thread_time()
        loop(a, b, r, n)
        return n / (time.thread_time() - start)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def time_c(n: int, workdir: str, source: str, name: str) -> float | None:
    """Transfers per second of the C program *source* (built once into *workdir*)."""
    gcc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if gcc is None:
        return None
    src = os.path.join(workdir, f"{name}.c")
    exe = os.path.join(workdir, name)
    if not os.path.exists(exe):
        with open(src, "w") as f:
            f.write(source)
        subprocess.run([gcc, "-O2", "-I", str(CSRC), "-o", exe, src], check=True)
    out = subprocess.run([exe, str(n)], check=True, capture_output=True, text=True).stdout
    return n / float(out)


def libc_functions(module: object, name: str) -> List[object]:
    """The un-prototyped ctypes functions called *name* among *module*'s globals."""
    return [value for value in vars(module).values()
            if isinstance(value, ctypes._CFuncPtr)  # type: ignore[attr-defined]
            and getattr(value, "__name__", None) == name and value.argtypes is None]


def python_costs(n: int, rounds: int) -> Dict[str, float]:
    """ns of Python per transfer of the floor, each step and rawsys, with stand-ins.

    rawsys's un-prototyped ``sendmsg``/``recvmsg`` are swapped for the
    stand-ins in the globals of every loaded rawsys module while it is timed.
    The sockets are non-blocking, so a call that still reaches the kernel
    fails at once; then, or if rawsys's result differs from what the kernel
    would have made it, rawsys's row is left out rather than timed wrongly.
    """
    stand = fds_steps.StandIns(7)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    loops: List[Tuple[str, Callable[[int], None]]] = [
        (FLOOR_ROW, fds_steps.stand_in_floor(stand))]
    pairs = list(fds_steps.STEPS)
    modules = [m for name, m in sorted(sys.modules.items())
               if m is not None and (name == "rawsys" or name.startswith("rawsys."))]
    swaps: List[Tuple[object, object]] = []
    for module in modules:
        swaps += [(f, stand.sendmsg) for f in libc_functions(module, "sendmsg")]
        swaps += [(f, stand.recvmsg) for f in libc_functions(module, "recvmsg")]
    patches = [
        fds_steps.Patched([fds_steps], stand, [(fds_steps.sendmsg_raw, stand.sendmsg),
                                               (fds_steps.recvmsg_raw, stand.recvmsg)]),
        fds_steps.Patched(modules, stand, swaps),
    ]
    best: Dict[str, float] = {}
    try:
        pairs.append((RAWSYS_ROW, rawsys.send_fds, rawsys.recv_fds))
        for name, send, recv in pairs:  # each must return what the kernel would make it
            try:
                send(a, [b"x"], [7])
                got = recv(b, 1, 1)
            except OSError as exc:
                got = exc
            if got != (b"x", [7], 0, None):
                if isinstance(got, tuple):  # the kernel's reply after all: its fds are ours
                    for fd in got[1]:
                        os.close(fd)
                if name == RAWSYS_ROW:
                    print(f"(rawsys's Python share not timed: with the stand-ins it gave "
                          f"{got!r})")
                    break
                raise RuntimeError(f"{name} with stand-ins returned {got!r}")
            loops.append((name, fds_steps.stand_in_pair(send, recv, a, b)))
        for _ in range(rounds):
            for name, loop in loops:
                start = time.thread_time()
                loop(n)
                took = (time.thread_time() - start) / n * 1e9
                best[name] = min(best.get(name, took), took)
    finally:
        for patch in patches:
            patch.restore()
        a.close()
        b.close()
    return best


C_LOOP_ROW = "C loop (send_fd/recv_fd, gcc -O2)"
CPYTHON_ROW = "CPython socket.send_fds/recv_fds"
RAWSYS_ROW = "rawsys.send_fds/recv_fds"
BATCHED_ROW = f"rawsys batched ({BATCH}/call)"
C_BATCH_ROW = f"C batched (sendmmsg/recvmmsg, {BATCH}/call)"
LITERAL_ROW = "literal C port (information only)"
FLOOR_ROW = "ctypes floor (un-prototyped, byref)"
NO_ERRNO_ROW = "(floor without use_errno: errno lost)"


def table(n: int, rounds: int) -> int:
    batched_n = max(n - n % BATCH, BATCH)
    literal_n = max(n // 4, 500)
    # (row, loop or C source, transfers); C programs are (source, binary name).
    contestants: List[Tuple[str, object, int]] = [
        (C_LOOP_ROW, (C_LOOP, "send_recv_fd_loop"), n),
        (CPYTHON_ROW, loop_cpython, n),
        (RAWSYS_ROW, loop_rawsys, n),
        (BATCHED_ROW, loop_batched, batched_n),
        (C_BATCH_ROW, (C_BATCH, "sendmmsg_loop"), batched_n),
        (LITERAL_ROW, loop_literal, literal_n),
        (FLOOR_ROW, fds_steps.floor_loop, n),
        (NO_ERRNO_ROW, fds_steps.floor_loop_no_errno, n),
    ]
    contestants += [(label, pair_loop(send, recv), n) for label, send, recv in fds_steps.STEPS]
    best: Dict[str, float] = {}
    spread: Dict[str, List[float]] = {}
    with tempfile.TemporaryDirectory(prefix="rawsys-bench-") as workdir:
        for _ in range(rounds):  # interleaved rounds; each contestant's best is kept
            for name, how, count in contestants:
                if isinstance(how, tuple):
                    rate = time_c(count, workdir, *how)
                else:
                    rate = time_loop(how, count)  # type: ignore[arg-type]
                if rate is not None:
                    best[name] = max(best.get(name, 0.0), rate)
                    spread.setdefault(name, []).append(rate)
    c_rate = best.get(C_LOOP_ROW)
    cpy = best[CPYTHON_ROW]

    def ns(name: str) -> float:
        return 1e9 / best[name]

    print(f"{n} transfers a contestant a round (literal port: {literal_n}), best of {rounds} "
          "interleaved rounds; a transfer is one send and one receive")
    print(f"{'contestant':42} {'transfers/s':>11} {'ns/xfer':>8} {'vs CPython':>10} "
          f"{'vs C':>6}")
    for name in (C_LOOP_ROW, CPYTHON_ROW, RAWSYS_ROW, BATCHED_ROW, C_BATCH_ROW, LITERAL_ROW):
        if name not in best:
            print(f"{name:42} {'(no gcc)':>11}")
            continue
        vs_c = f"{best[name] / c_rate:5.2f}x" if c_rate else "   n/a"
        print(f"{name:42} {best[name]:11,.0f} {ns(name):8.0f} {best[name] / cpy:9.2f}x "
              f"{vs_c}")
    print()
    py = python_costs(max(n, 2000), rounds)
    print("where rawsys's time goes: each step adds one guarantee to the one above.")
    print("'real' columns: the real calls, as above; 'Python' columns: the same code with")
    print("stand-ins for sendmsg/recvmsg (Python's share alone, without the kernel's noise);")
    print("cost = ns per transfer (send + receive) more than the step above")
    print(f"{'step':42} {'real ns':>8} {'vs CPython':>10} {'Python ns':>9} {'cost ns':>8}")
    steps = [FLOOR_ROW] + [label for label, _send, _recv in fds_steps.STEPS] + [RAWSYS_ROW]
    previous = None
    for name in steps:
        label = "= rawsys.send_fds/recv_fds" if name == RAWSYS_ROW else name
        if name in py:
            python_ns = f"{py[name]:9.0f}"
            cost = f"{py[name] - previous:+8.0f}" if previous is not None else ""
            previous = py[name]
        else:
            python_ns, cost = f"{'n/a':>9}", ""
        print(f"{label:42} {ns(name):8.0f} {best[name] / cpy:9.2f}x {python_ns} {cost:>8}"
              .rstrip())
    print(f"{'CPython socket.send_fds/recv_fds':42} {ns(CPYTHON_ROW):8.0f} {1.0:9.2f}x")
    print(f"{NO_ERRNO_ROW:42} {ns(NO_ERRNO_ROW):8.0f} {best[NO_ERRNO_ROW] / cpy:9.2f}x")
    noise = max((max(r) - min(r)) / max(r) for r in spread.values()) if rounds > 1 else 0.0
    print(f"(real columns: the widest spread between one contestant's rounds was "
          f"{noise:.0%} of its best)")
    print()
    targets: List[Tuple[str, float, float | None]] = [
        ("rawsys / CPython", best[RAWSYS_ROW] / cpy, 1.1),
        ("batched / C batched",
         best[BATCHED_ROW] / best[C_BATCH_ROW] if C_BATCH_ROW in best else float("nan"), 0.9),
        ("floor / CPython", best[FLOOR_ROW] / cpy, None),
        ("literal port / CPython", best[LITERAL_ROW] / cpy, None),
    ]
    for label, ratio, goal in targets:
        verdict = (f"(target >= {goal}x: {'met' if ratio >= goal else 'NOT met'})"
                   if goal is not None else "(information only)")
        print(f"{label:24} {ratio:6.2f}x  {verdict}")
    return 0


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss(n: int) -> int:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        loop_rawsys(a, b, r, 10_000)
        loop_batched(a, b, r, 10_000)
        start_kib = rss_kib()
        t0 = time.perf_counter()
        loop_rawsys(a, b, r, n)
        mid_kib = rss_kib()
        loop_batched(a, b, r, n)
        end_kib = rss_kib()
        took = time.perf_counter() - t0
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)
    print(f"RSS over {n:,} rawsys.send_fds/recv_fds transfers: {start_kib} KiB -> {mid_kib} KiB "
          f"(growth {mid_kib - start_kib} KiB)")
    print(f"RSS over {n:,} batched transfers: {mid_kib} KiB -> {end_kib} KiB "
          f"(growth {end_kib - mid_kib} KiB)")
    print(f"total {2 * n:,} transfers in {took:.1f} s; target: growth < 1024 KiB each: "
          f"{'met' if max(mid_kib - start_kib, end_kib - mid_kib) < 1024 else 'NOT met'}")
    return 0


def fork_rate(name: str, n: int) -> float:
    """A child sends n fds (1 byte each); the parent receives and closes them."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the sender
        code = 0
        try:
            b.close()
            if name == "batched":
                items = [([b"x"], [r])] * BATCH
                for _ in range(n // BATCH):
                    rawsys.send_fds_batch(a, items)
            else:
                send = socket.send_fds if name == "CPython" else rawsys.send_fds
                for _ in range(n):
                    send(a, [b"x"], [r])
        except BaseException:
            code = 1
        os._exit(code)
    a.close()
    start = time.perf_counter()
    try:
        if name == "batched":
            got = 0
            while got < n - n % BATCH:
                for _m, fds, _f, _a in rawsys.recv_fds_batch(b, BATCH, 1, 1):
                    os.close(fds[0])
                    got += 1
            count = got
        else:
            recv = socket.recv_fds if name == "CPython" else rawsys.recv_fds
            for _ in range(n):
                os.close(recv(b, 1, 1)[1][0])
            count = n
        rate = count / (time.perf_counter() - start)
    finally:
        b.close()
        os.close(r)
        os.close(w)
        _pid, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"sender child failed ({status})")
    return rate


def fork(n: int, rounds: int) -> int:
    best: Dict[str, float] = {}
    for _ in range(rounds):
        for name in ("CPython", "rawsys", "batched"):
            best[name] = max(best.get(name, 0.0), fork_rate(name, n))
    print(f"cross-process (child sends, parent receives), {n} transfers, best of {rounds}")
    print(f"{'contestant':36} {'transfers/s':>12} {'vs CPython':>11}")
    for name, rate in best.items():
        print(f"{name:36} {rate:12,.0f} {rate / best['CPython']:10.2f}x")
    return 0


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(__doc__ or "").split("examples:")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--transfers", type=int, default=10_000,
                        help="transfers a contestant a round (default 10000)")
    parser.add_argument("--rounds", type=int, default=21,
                        help="interleaved rounds (default 21)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 rounds of 2000 transfers (figures meaningless)")
    parser.add_argument("--rss", action="store_true", help="RSS growth over 1M transfers")
    parser.add_argument("--fork", action="store_true", help="cross-process variant")
    args = parser.parse_args(argv)
    if args.transfers <= 0 or args.rounds <= 0:
        parser.error("--transfers and --rounds must be positive")
    if args.quick:
        args.transfers, args.rounds = 2000, 2
    if args.rss:
        return rss(1_000_000 if args.transfers == 10_000 else args.transfers)
    if args.fork:
        return fork(args.transfers, args.rounds)
    return table(args.transfers, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
