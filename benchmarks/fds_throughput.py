#!/usr/bin/env python3
"""fds_throughput: how fast 1 byte + 1 fd a message goes over an AF_UNIX DGRAM socketpair.

Contestants, all in one run and one process (sender and receiver alternate,
every received fd is closed):

  C loop          seed 003's send_fd/recv_fd in C, built here with gcc
  CPython         socket.send_fds / socket.recv_fds
  rawsys          rawsys.send_fds / rawsys.recv_fds
  rawsys batched  rawsys.send_fds_batch / recv_fds_batch, 64 messages a call
  literal C port  seed 003's C ported line by line onto rawsys's C layer
                  (msghdr, iovec and control buffer built on every call)

Figures are transfers per second and ratios from this one run (no absolute
claims: the machine's other load moves them together).  --rss runs 1,000,000
transfers through rawsys and reports the growth of the resident set;
--fork measures a child sending to its parent (seed 003's main, repeated).

usage: fds_throughput.py [-n TRANSFERS] [--rss] [--fork] [--rounds R]

examples:
  fds_throughput.py              # the table, 200,000 transfers a contestant
  fds_throughput.py -n 1000000   # longer run
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
from ctypes import POINTER, addressof, byref, c_char, c_int, cast, pointer, sizeof
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import rawsys
from rawsys.c import CMSG_DATA, CMSG_LEN, iovec, msghdr
from rawsys.c.constants import SCM_RIGHTS, SOL_SOCKET

BATCH = 64
CSRC = Path(__file__).resolve().parent / "csrc"

C_LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "seed003_fd.h"

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int sv[2], p[2];
    struct timespec t0, t1;
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 || pipe(p) < 0)
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        int fd;
        if (send_fd(sv[0], p[0]) != 1)
            return 2;
        fd = recv_fd(sv[1]);
        if (fd < 0)
            return 3;
        close(fd);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
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

/* Reference only: the same workload with sendmmsg/recvmmsg, 64 a call, in C.
 * The kernel's per-message work bounds what any batching can gain. */
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
    clock_gettime(CLOCK_MONOTONIC, &t0);
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
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.9f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
"""


# --- seed 003 ported line by line onto the C layer (structs built every call) -------
# The literal port is the one in examples/: the benchmark measures the very code a
# reader of the seed runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from send_fd_fork import control_buffer as control_union  # noqa: E402
from send_fd_fork import recv_fd as literal_recv_fd  # noqa: E402
from send_fd_fork import send_fd as literal_send_fd  # noqa: E402

# --- the contestants --------------------------------------------------------------

Loop = Callable[[socket.socket, socket.socket, int, int], None]


def loop_cpython(a: socket.socket, b: socket.socket, fd: int, n: int) -> None:
    send_fds, recv_fds, close = socket.send_fds, socket.recv_fds, os.close
    data = [b"x"]
    fds = [fd]
    for _ in range(n):
        send_fds(a, data, fds)
        close(recv_fds(b, 1, 1)[1][0])


def loop_rawsys(a: socket.socket, b: socket.socket, fd: int, n: int) -> None:
    send_fds, recv_fds, close = rawsys.send_fds, rawsys.recv_fds, os.close
    data = [b"x"]
    fds = [fd]
    for _ in range(n):
        send_fds(a, data, fds)
        close(recv_fds(b, 1, 1)[1][0])


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


def loop_floor(a: socket.socket, b: socket.socket, fd: int, n: int) -> None:
    """Reference only: raw prototyped libc calls on structures built once, no checks.

    The least any ctypes-based send/recv pair can cost; rawsys's overhead is
    what it adds on top of this.
    """
    from rawsys.c.libc import LIBC

    sendmsg_c, recvmsg_c, close = LIBC["sendmsg"], LIBC["recvmsg"], os.close
    sa, sb = a.fileno(), b.fileno()
    sbuf, rbuf = (c_char * 1)(b"x"), (c_char * 1)()
    sio, rio = iovec(addressof(sbuf), 1), iovec(addressof(rbuf), 1)
    su, ru = control_union(), control_union()
    su.cmsg.cmsg_len = CMSG_LEN(sizeof(c_int))
    su.cmsg.cmsg_level = SOL_SOCKET
    su.cmsg.cmsg_type = SCM_RIGHTS
    cast(CMSG_DATA(byref(su.cmsg)), POINTER(c_int))[0] = fd
    smsg, rmsg = msghdr(), msghdr()
    smsg.msg_iov, smsg.msg_iovlen = pointer(sio), 1
    smsg.msg_control, smsg.msg_controllen = addressof(su.buf), sizeof(su.buf)
    rmsg.msg_iov, rmsg.msg_iovlen = pointer(rio), 1
    rmsg.msg_control = addressof(ru.buf)
    received = c_int.from_address(addressof(ru.buf) + CMSG_LEN(0))
    for _ in range(n):
        sendmsg_c(sa, smsg, 0)
        rmsg.msg_controllen = sizeof(ru.buf)
        recvmsg_c(sb, rmsg, 0x40000000)  # MSG_CMSG_CLOEXEC, as rawsys
        close(received.value)


def time_loop(loop: Loop, n: int) -> float:
    """Transfers per second of *loop* over a fresh socketpair."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        loop(a, b, r, min(n, 1000))  # warm up
        start = time.perf_counter()
        loop(a, b, r, n)
        return n / (time.perf_counter() - start)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def time_c(n: int, workdir: str, source: str = C_LOOP, name: str = "seed003_loop"
           ) -> float | None:
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


C_REF = "ref: C batched (sendmmsg, 64/call)"
FLOOR_REF = "ref: ctypes floor (raw LIBC calls)"


def table(n: int, rounds: int) -> int:
    contestants: List[Tuple[str, Loop | None, int]] = [
        ("C loop (send_fd/recv_fd, gcc -O2)", None, n),
        ("CPython socket.send_fds/recv_fds", loop_cpython, n),
        ("rawsys.send_fds/recv_fds", loop_rawsys, n),
        (f"rawsys batched ({BATCH}/call)", loop_batched, n - n % BATCH),
        ("literal C port (C layer)", loop_literal, max(n // 4, 1000)),
        (C_REF, None, n - n % BATCH),
        (FLOOR_REF, loop_floor, n),
    ]
    best: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rawsys-bench-") as workdir:
        for _ in range(rounds):  # interleaved rounds; each contestant's best is kept
            for name, loop, count in contestants:
                if loop is not None:
                    rate: float | None = time_loop(loop, count)
                elif name == C_REF:
                    rate = time_c(count, workdir, C_BATCH, "batch_ref")
                else:
                    rate = time_c(count, workdir)
                if rate is not None:
                    best[name] = max(best.get(name, 0.0), rate)
    c_rate = best.get(contestants[0][0])
    cpy = best[contestants[1][0]]
    print(f"{n} transfers a contestant (literal port: {max(n // 4, 1000)}), best of {rounds} "
          "interleaved rounds")
    print(f"{'contestant':38} {'transfers/s':>12} {'vs CPython':>11} {'vs C':>7}")
    for name, _loop, _count in contestants:
        if name not in best:
            print(f"{name:38} {'(no gcc)':>12}")
            continue
        rate = best[name]
        vs_c = f"{rate / c_rate:6.2f}x" if c_rate else "   n/a"
        print(f"{name:38} {rate:12,.0f} {rate / cpy:10.2f}x {vs_c}")
    print()
    targets = [
        ("rawsys / CPython", best[contestants[2][0]] / cpy, 1.1),
        ("batched / C loop", best[contestants[3][0]] / c_rate if c_rate else float("nan"), 1.3),
        ("literal port / CPython", best[contestants[4][0]] / cpy, 0.5),
    ]
    for label, ratio, goal in targets:
        verdict = "met" if ratio >= goal else "NOT met"
        print(f"{label:24} {ratio:6.2f}x  (target >= {goal}x: {verdict})")
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
    parser.add_argument("-n", "--transfers", type=int, default=200_000,
                        help="transfers a contestant (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--rss", action="store_true", help="RSS growth over 1M transfers")
    parser.add_argument("--fork", action="store_true", help="cross-process variant")
    args = parser.parse_args(argv)
    if args.transfers <= 0 or args.rounds <= 0:
        parser.error("--transfers and --rounds must be positive")
    if args.rss:
        return rss(max(args.transfers, 1_000_000) if args.transfers == 200_000 else args.transfers)
    if args.fork:
        return fork(args.transfers, args.rounds)
    return table(args.transfers, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
