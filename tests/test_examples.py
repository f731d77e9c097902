"""Run every example in ``examples/`` and check what it prints.

Each example is run as a subprocess with this interpreter (the venv's) and
``close_fds``, so that its descriptor table starts as 0, 1, 2 plus whatever a
test passes on purpose, and the fd numbers it prints can be predicted the way
the C program of the post it ports predicts them.  ``send_fd_fork.py`` is compared with a C
program of the same shape, built at test time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rawsys.c.syscalls import SYS_RECV, SYSCALLS, SYS_recvfrom, SYS_socketcall_i386

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("[a-z]*.py"))
EVENTS_HEADER = re.compile(r"^--- kernel events \((\d+)\) ---$", re.M)

pytestmark = pytest.mark.usefixtures("fd_leak_check")


def run(
    script: str, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        close_fds=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, (
            f"{script} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def test_every_example_is_tested() -> None:
    """A new example must get its test here (and a line in examples/README.md)."""
    tested = {
        "ip_ttl.py", "recv_to_kernel.py", "send_fd_array.py", "send_fd_fork.py",
        "send_fd_variants.py", "sendmsg_recvmsg_walk.py", "aio_fd_server.py",
    }
    assert set(SCRIPTS) == tested
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in SCRIPTS)


# --- send_fd_fork.py against the same program in C ------------------------------------

SEND_FD_FORK_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The shape of the classic fd-passing program (fork, send_fd/recv_fd of
   cmsg(3)), written for this test: the child opens argv[1] and passes it;
   the parent prints the fd number and the text. */
static int pass(int sock, int fd)
{
    char byte = 'x';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr hdr; } ctl;
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int take(int sock)
{
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr hdr; } ctl;
    struct msghdr msg = { 0 };
    int fd = -1;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    if (recvmsg(sock, &msg, 0) < 0)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c == NULL || c->cmsg_type != SCM_RIGHTS)
        return -1;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

int main(int argc, char **argv)
{
    int sv[2];
    if (argc != 2 || socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        int fd = open(argv[1], O_RDWR);
        int rc = fd < 0 || pass(sv[1], fd) < 0;
        close(fd);
        close(sv[1]);
        _exit(rc);
    }
    close(sv[1]);
    int fd = take(sv[0]);
    if (fd < 0)
        return 1;
    char buf[BUFSIZ];
    memset(buf, 0, sizeof(buf));
    if (read(fd, buf, sizeof(buf) - 1) < 0)
        return 1;
    printf("I got fd %d\n%s\n", fd, buf);
    close(fd);
    close(sv[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
"""


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "passed.txt"
    path.write_text("a line read through a descriptor from another process")
    return path


def test_send_fd_fork_prints_what_the_c_prints(build_c, text_file: Path) -> None:
    exe = build_c(SEND_FD_FORK_C)
    c_out = subprocess.run([str(exe), str(text_file)], capture_output=True, text=True,
                           check=True, close_fds=True).stdout
    py_out = run("send_fd_fork.py", str(text_file)).stdout
    assert py_out == c_out
    # 0, 1, 2 open; socketpair gives 3 and 4; the parent closes 4: the fd arrives as 4.
    assert py_out == f"I got fd 4\n{text_file.read_text()}\n"


def test_send_fd_fork_number_is_the_parents_lowest_free_fd(build_c, text_file: Path) -> None:
    """With fd 3 taken, socketpair gives 4 and 5, the parent closes 5 and receives 5."""
    exe = build_c(SEND_FD_FORK_C)
    # sh opens fd 3 on /dev/null, then execs the program with 0-3 open
    with_fd3 = ["sh", "-c", 'exec "$@" 3</dev/null', "sh"]
    c_out = subprocess.run([*with_fd3, str(exe), str(text_file)], capture_output=True,
                           text=True, check=True, close_fds=True).stdout
    py = subprocess.run([*with_fd3, sys.executable, str(EXAMPLES / "send_fd_fork.py"),
                         str(text_file)], capture_output=True, text=True, check=True,
                        close_fds=True, cwd=REPO)
    assert py.stdout == c_out
    assert py.stdout.splitlines()[0] == "I got fd 5"


def test_send_fd_fork_default_file() -> None:
    out = run("send_fd_fork.py").stdout.splitlines()
    assert out[0] == "I got fd 4"
    assert out[1].startswith("hello from the child")


def test_send_fd_fork_refuses_a_missing_file(tmp_path: Path) -> None:
    result = run("send_fd_fork.py", str(tmp_path / "missing"), check=False)
    assert result.returncode == 2
    assert "not a regular file" in result.stderr


# --- the send_fd variants -------------------------------------------------------------

def test_send_fd_variants() -> None:
    lines = run("send_fd_variants.py").stdout.splitlines()
    pattern = re.compile(r"^(.+): sent .* fd (\d+), got fd (\d+), .*read (\d+) bytes: (.*)$")
    seen = {}
    for line in lines:
        m = pattern.match(line)
        assert m, line
        name, sent, got, n, text = m.groups()
        seen[name] = text
        assert sent != got  # the receiver's number, not the sender's
        assert int(n) == len(text)
    assert seen == {
        "send_fd (union)": "through the pipe",
        "send_fd (CMSG_FIRSTHDR)": "through the pipe",
        "socket": "ping",
    }


# --- msghdr and cmsghdr ---------------------------------------------------------------

@pytest.mark.parametrize("num_fd", [1, 3, 253])
def test_send_fd_array(num_fd: int) -> None:
    out = run("send_fd_array.py", "-n", str(num_fd)).stdout
    sent = re.search(r"^sent (\d+) fds: (.*)$", out, re.M)
    got = re.search(r"^got  (\d+) fds: (.*)$", out, re.M)
    assert sent and got
    assert int(sent.group(1)) == int(got.group(1)) == num_fd
    got_fds = [int(x) for x in got.group(2).split()]
    # lowest free fds, in order: one block of consecutive numbers
    assert got_fds == list(range(got_fds[0], got_fds[0] + num_fd))
    reads = re.findall(r"^fd (\d+) reads: pipe (\d+)$", out, re.M)
    assert reads and all(got_fds[int(i)] == int(fd) for fd, i in reads)
    assert reads[-1][1] == str(num_fd - 1)


@pytest.mark.parametrize("bad", ["0", "254", "-3"])
def test_send_fd_array_refuses_bad_counts(bad: str) -> None:
    result = run("send_fd_array.py", "-n", bad, check=False)
    assert result.returncode == 2 and "between 1 and SCM_MAX_FD" in result.stderr


def test_ip_ttl_default() -> None:
    default = int(Path("/proc/sys/net/ipv4/ip_default_ttl").read_text())
    out = run("ip_ttl.py").stdout
    assert re.search(r"^received 9 bytes on 127\.0\.0\.1:\d+: ttl probe$", out, re.M)
    assert out.splitlines()[-1] == f"IP_TTL {default}"


@pytest.mark.parametrize("ttl", [1, 7, 255])
def test_ip_ttl_set_by_the_sender(ttl: int) -> None:
    assert run("ip_ttl.py", "--ttl", str(ttl)).stdout.splitlines()[-1] == f"IP_TTL {ttl}"


def test_ip_ttl_refuses_bad_ttl() -> None:
    result = run("ip_ttl.py", "--ttl", "256", check=False)
    assert result.returncode == 2 and "between 1 and 255" in result.stderr


# --- recv() down to the kernel --------------------------------------------------------

def test_recv_to_kernel() -> None:
    out = run("recv_to_kernel.py").stdout
    assert "1. libc recv(fd, buf, 16, 0) = 13: via libc recv" in out
    assert "a recv system call does not exist" in out and "recv" not in SYSCALLS
    assert f"recvfrom is number {SYS_recvfrom}" in out
    assert "= 12: via recvfrom" in out
    assert (f"in system call {SYS_recvfrom} (recvfrom); its address arguments: "
            "src_addr=0x0 addrlen=0x0") in out
    assert f"syscall({SYS_socketcall_i386}, SYS_RECV={SYS_RECV}, args)" in out
    assert SYS_socketcall_i386 == 102 and SYS_RECV == 10
    assert "recv(fd, buf, 17, 0) with a 16-byte buf: refused before the call" in out
    assert "BufferOverflowDetected" in out


# --- sendmsg/recvmsg, kernel side -----------------------------------------------------

def test_sendmsg_recvmsg_walk() -> None:
    out = run("sendmsg_recvmsg_walk.py").stdout
    assert re.search(r"^one fd: sent fd \d+, recvmsg = 1, flags 0, got fds \[\d+\]$", out, re.M)
    assert re.search(r"^three fds into CMSG_SPACE\(sizeof\(int\)\) = 24 bytes: "
                     r"got fds \[\d+, \d+\], flags MSG_CTRUNC$", out, re.M)
    assert "no control buffer: recvmsg = 1, got fds [], flags MSG_CTRUNC" in out
    peek = re.search(r"^MSG_PEEK: peek got fds \[(\d+)\], then the read got fds \[(\d+)\]$",
                     out, re.M)
    assert peek and peek.group(1) != peek.group(2)
    assert re.search(r"^MSG_CMSG_CLOEXEC: got fds \[\d+\], FD_CLOEXEC \[True\]$", out, re.M)
    assert re.search(r"^closed fd \d+: sendmsg = -1, errno EBADF$", out, re.M)
    assert "254 fds: sendmsg = -1, errno EINVAL" in out
    assert "cmsg_len 15: sendmsg = -1, errno EINVAL" in out


# --- asyncio: aio_fd_server.py --------------------------------------------------------

@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_aio_fd_server(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed (pip install uvloop)")
    out = run("aio_fd_server.py", "-n", "6", *(["--uvloop"] if loop == "uvloop" else [])).stdout
    lines = out.splitlines()
    for i in range(6):
        assert lines[i] == (f"client {i}: OPEN file{i}.txt -> OK file{i}.txt: "
                            f"contents of file {i}, read through a passed descriptor")
    assert lines[6] == "client 6: OPEN missing.txt -> ERR missing.txt"
    assert lines[7] == "6 files served through 6 passed descriptors, 0 failure(s)"


# --- --trace --------------------------------------------------------------------------

EVENT_LINE = re.compile(
    r"^(?P<kind>send|recv) (?P<call>\w+)\s+pid (?P<pid>\d+)\s+sock (?P<sock>\d+)\s+"
    r"(?P<result>\w+)\s+fds (?P<fds>.*?)  flags (?P<flags>\S+)", re.M)
TRANSFER_LINE = re.compile(
    r"^transfer pid (\d+) fd (\d+) -> pid (\d+) fd (\d+)  file (\S+) 0x([0-9a-f]+)", re.M)


def untraceable_reason() -> str | None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        from _trace import why_untraceable

        return why_untraceable()
    finally:
        sys.path.remove(str(EXAMPLES))


def traced_run(script: str, *args: str) -> tuple[str, list[dict[str, str]], str]:
    """Run with --trace; (normal output, event lines as dicts, the events section)."""
    reason = untraceable_reason()
    result = run(script, *args, "--trace")
    if reason is not None:
        if os.geteuid() == 0:
            pytest.fail(f"as root the tracer must run here: {reason}")
        assert "running untraced" in result.stderr
        assert not EVENTS_HEADER.search(result.stdout)
        pytest.skip(f"--trace needs root; the example said so: {result.stderr.strip()}")
    match = EVENTS_HEADER.search(result.stdout)
    assert match, f"no events section:\n{result.stdout}\n{result.stderr}"
    section = result.stdout[match.start():]
    events = [m.groupdict() for m in EVENT_LINE.finditer(section)]
    assert int(match.group(1)) == len(events)
    return result.stdout[: match.start()], events, section


def fds_of(event: dict[str, str]) -> list[int]:
    return [int(x.replace("(cloexec)", "")) for x in event["fds"].split()
            if x[0].isdigit()]


def test_trace_send_fd_fork(text_file: Path) -> None:
    """Two processes: the child's send and the parent's receive, linked by one kernel file."""
    out, events, section = traced_run("send_fd_fork.py", str(text_file))
    got_fd = int(re.match(r"I got fd (\d+)", out).group(1))  # type: ignore[union-attr]
    assert out.endswith(f"{text_file.read_text()}\n")
    sends = [e for e in events if e["kind"] == "send"]
    recvs = [e for e in events if e["kind"] == "recv"]
    assert len(sends) == 1 and len(recvs) == 1
    assert sends[0]["pid"] != recvs[0]["pid"]  # the child sent, the parent received
    assert fds_of(recvs[0]) == [got_fd]
    transfers = TRANSFER_LINE.findall(section)
    assert len(transfers) == 1
    spid, _sfd, rpid, rfd, name, _addr = transfers[0]
    assert (spid, rpid, int(rfd)) == (sends[0]["pid"], recvs[0]["pid"], got_fd)
    assert name == text_file.name


def test_trace_send_fd_array() -> None:
    out, events, section = traced_run("send_fd_array.py", "-n", "5")
    got = [int(x) for x in re.search(r"^got  5 fds: (.*)$", out, re.M).group(1).split()]  # type: ignore[union-attr]
    assert [e["kind"] for e in events] == ["send", "recv"]
    assert len(fds_of(events[0])) == 5 and fds_of(events[1]) == got
    assert len(TRANSFER_LINE.findall(section)) == 5


def test_trace_send_fd_variants() -> None:
    _, events, section = traced_run("send_fd_variants.py")
    assert [e["kind"] for e in events] == ["send", "recv"] * 3
    assert len(TRANSFER_LINE.findall(section)) == 3


def test_trace_sendmsg_recvmsg_walk() -> None:
    """The kernel's side of each step: truncation, the CLOEXEC install, the failed sends."""
    _, events, _ = traced_run("sendmsg_recvmsg_walk.py")
    recvs = [e for e in events if e["kind"] == "recv"]
    sends = [e for e in events if e["kind"] == "send"]
    ctrunc = [e for e in recvs if "CTRUNC" in e["flags"].split(",")]
    assert [len(fds_of(e)) for e in ctrunc] == [2, 0]  # two fit; no buffer: none
    assert any("PEEK" in e["flags"].split(",") for e in recvs)
    cloexec = [e for e in recvs if "CMSG_CLOEXEC" in e["flags"].split(",")]
    assert len(cloexec) == 1 and "(cloexec)" in cloexec[0]["fds"]
    assert [e["result"] for e in sends if e["result"] != "ok"] == ["EBADF", "EINVAL"]


def test_trace_aio_fd_server() -> None:
    """One process: each file's send by the server linked to its receive by a client."""
    _, events, section = traced_run("aio_fd_server.py", "-n", "3")
    sends = [e for e in events if e["kind"] == "send"]
    recvs = [e for e in events if e["kind"] == "recv" and fds_of(e)]
    assert len(sends) == len(recvs) == 3
    assert all("DONTWAIT" in e["flags"].split(",") for e in sends + recvs)
    names = sorted(m[4] for m in TRANSFER_LINE.findall(section))
    assert names == ["file0.txt", "file1.txt", "file2.txt"]


@pytest.mark.parametrize("script", ["ip_ttl.py", "recv_to_kernel.py"])
def test_trace_without_fds_reports_nothing(script: str) -> None:
    """No SCM_RIGHTS travels in these: the tracer, which reports fd transfers, stays silent."""
    _, events, _ = traced_run(script)
    assert events == []


def test_every_example_is_traced() -> None:
    traced_tests = {
        "send_fd_fork.py", "send_fd_array.py", "send_fd_variants.py",
        "sendmsg_recvmsg_walk.py", "ip_ttl.py", "recv_to_kernel.py", "aio_fd_server.py",
    }
    assert traced_tests == set(SCRIPTS)


def test_trace_without_root_says_why(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Not root: --trace prints the reason on stderr, runs the body, prints no events."""
    if os.geteuid() != 0:
        result = run("send_fd_variants.py", "--trace")
        assert "--trace needs root" in result.stderr and "running untraced" in result.stderr
        assert not EVENTS_HEADER.search(result.stdout)
        return
    # As root (CI), pretend otherwise in-process: the examples' python lives
    # under /root, which an unprivileged user could not even execute.
    sys.path.insert(0, str(EXAMPLES))
    try:
        import _trace
    finally:
        sys.path.remove(str(EXAMPLES))
    monkeypatch.setattr(_trace.os, "geteuid", lambda: 1000)
    ran = []
    with _trace.traced(True) as trace:
        ran.append(trace.active)
    captured = capsys.readouterr()
    assert ran == [False]
    assert "--trace needs root" in captured.err and "running untraced" in captured.err
    assert not EVENTS_HEADER.search(captured.out)
