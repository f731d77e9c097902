"""The kernel's recvmsg(2) branches for fds, driven from user space through rawsys's C layer.

The kernel's path follows
``recvmsg`` through ``__unix_dgram_recvmsg`` into ``scm_recv``,
``scm_detach_fds`` and ``receive_fd`` (``__receive_fd`` before 6.x).  Each
test provokes one branch and asserts the flag or the installed fds it
implies, counting this process's fds in ``/proc/self/fd`` where "nothing
installed" is the claim.  Checked on 6.18; kernel-version limits are named
where they exist.
"""

from __future__ import annotations

import fcntl
import os

import pytest
from scm_support import (
    close_all,
    lowest_free_fd,
    message,
    open_fd_count,
    receive,
    rights,
    send,
    send_fds,
)

from rawsys.c import (
    CMSG_LEN,
    CMSG_SPACE,
    MSG_CMSG_CLOEXEC,
    MSG_CTRUNC,
    MSG_PEEK,
    MSG_TRUNC,
    SCM_CREDENTIALS,
    SO_PASSCRED,
    SOL_SOCKET,
    c_int,
    cmsghdr,
    setsockopt,
    sizeof,
    ucred,
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")

INT = sizeof(c_int)


def is_cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


def same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# --- scm_recv / scm_detach_fds ------------------------------------------------------


def test_no_control_buffer_sets_ctrunc_and_installs_nothing(pair, pipe):
    """msg_control NULL while fds are queued: scm_recv sets MSG_CTRUNC and drops them."""
    send_fds(pair[0], pipe[0], pipe[1])
    before = open_fd_count()
    got = receive(pair[1], controllen=0)
    close_all(got.fds)
    assert got.ret == 1 and got.data == b"x"
    assert got.msg_flags & MSG_CTRUNC
    assert got.fds == []
    assert open_fd_count() == before


def test_no_fds_no_ctrunc(pair):
    """The control case: nothing queued, no control buffer, no MSG_CTRUNC."""
    assert send(pair[0], message()) == (1, 0)
    got = receive(pair[1], controllen=0)
    assert got.ret == 1 and not got.msg_flags & MSG_CTRUNC


@pytest.mark.parametrize(
    "controllen",
    [
        sizeof(cmsghdr) - 1,  # not even a header: nothing fits
        sizeof(cmsghdr),  # a header and no room for an int
        CMSG_LEN(INT),  # room for exactly one fd
        CMSG_SPACE(INT),  # the alignment padding makes room for two
        CMSG_LEN(3 * INT),  # three
    ],
)
def test_small_control_buffer_gets_the_fds_that_fit_and_ctrunc(pair, pipe, controllen):
    """scm_detach_fds installs (controllen - sizeof(cmsghdr)) / sizeof(int) fds, sets MSG_CTRUNC."""
    sent = 4
    send_fds(pair[0], *[pipe[0]] * sent)
    fit = max(controllen - sizeof(cmsghdr), 0) // INT
    before = open_fd_count()
    got = receive(pair[1], controllen=controllen)
    try:
        assert got.ret == 1
        assert got.msg_flags & MSG_CTRUNC
        assert len(got.fds) == fit
        assert open_fd_count() == before + fit
        assert all(same_file(fd, pipe[0]) for fd in got.fds)
    finally:
        close_all(got.fds)


def test_room_for_all_fds_no_ctrunc(pair, pipe):
    """The boundary: CMSG_SPACE(n * sizeof(int)) holds all n fds and MSG_CTRUNC stays clear."""
    send_fds(pair[0], *[pipe[0]] * 4)
    got = receive(pair[1], controllen=CMSG_SPACE(4 * INT))
    close_all(got.fds)
    assert len(got.fds) == 4 and not got.msg_flags & MSG_CTRUNC


# --- receive_fd ----------------------------------------------------------------------


def test_msg_cmsg_cloexec_sets_fd_cloexec(pair, pipe):
    """MSG_CMSG_CLOEXEC: receive_fd installs with O_CLOEXEC, so FD_CLOEXEC is set (2.6.23+)."""
    assert not is_cloexec(pipe[0])
    send_fds(pair[0], pipe[0], pipe[1])
    got = receive(pair[1], controllen=CMSG_SPACE(2 * INT), flags=MSG_CMSG_CLOEXEC)
    try:
        assert len(got.fds) == 2
        assert all(is_cloexec(fd) for fd in got.fds)
    finally:
        close_all(got.fds)


def test_without_msg_cmsg_cloexec_fd_cloexec_is_clear(pair, pipe):
    """The control case: a plain recvmsg installs without FD_CLOEXEC.

    The sender's fd is close-on-exec (Python's default); that flag belongs to
    the sender's fd table and does not travel.
    """
    os.set_inheritable(pipe[0], False)
    assert is_cloexec(pipe[0])
    send_fds(pair[0], pipe[0])
    got = receive(pair[1], controllen=CMSG_SPACE(INT))
    try:
        assert len(got.fds) == 1 and not is_cloexec(got.fds[0])
    finally:
        close_all(got.fds)


def test_received_number_is_the_lowest_free_fd(pair, pipe):
    """get_unused_fd_flags picks the receiver's lowest free number, not the sender's."""
    high = fcntl.fcntl(pipe[0], fcntl.F_DUPFD, 500)  # the sender's number: 500 or more
    # Open a hole below the current lowest free fd so that the answer is not trivial.
    hole = os.dup(pipe[1])
    above = os.dup(pipe[1])
    os.close(hole)
    try:
        expected = lowest_free_fd()
        assert expected <= hole
        send_fds(pair[0], high)
        got = receive(pair[1], controllen=CMSG_SPACE(INT))
        close_all(got.fds)
        assert got.fds == [expected]
        assert expected != high
    finally:
        close_all([high, above])


def test_received_numbers_fill_the_lowest_free_fds_in_order(pair, pipe):
    """Several fds take the lowest free numbers one after another, in the sender's order."""
    r2, w2 = os.pipe()
    holes = [os.dup(pipe[0]) for _ in range(3)]
    guard = os.dup(pipe[0])
    for h in holes:
        os.close(h)
    try:
        free = sorted(set(range(guard)) - _open_below(guard))[:2]
        send_fds(pair[0], r2, pipe[0])
        got = receive(pair[1], controllen=CMSG_SPACE(2 * INT))
        try:
            assert got.fds == free
            assert same_file(got.fds[0], r2) and same_file(got.fds[1], pipe[0])
        finally:
            close_all(got.fds)
    finally:
        close_all([r2, w2, guard])


def _open_below(limit: int) -> set[int]:
    out = set()
    for fd in range(limit):
        try:
            os.fstat(fd)
        except OSError:
            continue
        out.add(fd)
    return out


# --- __unix_dgram_recvmsg ----------------------------------------------------------


def test_msg_peek_gives_clones_and_the_read_gets_them_again(pair, pipe):
    """MSG_PEEK: scm_fp_dup clones the queued fds; the real read installs them again."""
    send_fds(pair[0], pipe[0])
    before = open_fd_count()
    peeked = receive(pair[1], controllen=CMSG_SPACE(INT), flags=MSG_PEEK)
    real = receive(pair[1], controllen=CMSG_SPACE(INT))
    after = receive(pair[1], controllen=CMSG_SPACE(INT))
    try:
        assert len(peeked.fds) == 1 and len(real.fds) == 1
        assert peeked.fds[0] != real.fds[0]
        assert same_file(peeked.fds[0], pipe[0]) and same_file(real.fds[0], pipe[0])
        assert open_fd_count() == before + 2
        assert after.ret == -1  # the peek did not leave a second message behind
    finally:
        close_all(peeked.fds + real.fds + after.fds)


def test_so_passcred_brings_credentials_with_every_datagram(pair):
    """SO_PASSCRED on the receiver: scm_recv puts an SCM_CREDENTIALS on each datagram."""
    on = c_int(1)
    assert setsockopt(pair[1], SOL_SOCKET, SO_PASSCRED, on, sizeof(on)) == 0
    for _ in range(3):
        assert send(pair[0], message()) == (1, 0)
    me = (os.getpid(), os.getuid(), os.getgid())
    for _ in range(3):
        got = receive(pair[1], controllen=CMSG_SPACE(sizeof(ucred)))
        assert got.ret == 1
        assert [(lvl, typ) for lvl, typ, _ in got.cmsgs] == [(SOL_SOCKET, SCM_CREDENTIALS)]
        assert got.creds == [me]


def test_without_so_passcred_no_credentials(pair):
    """The control case: without SO_PASSCRED a plain datagram brings no control message."""
    assert send(pair[0], message()) == (1, 0)
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(ucred)))
    assert got.ret == 1 and got.cmsgs == []


def test_so_passcred_without_control_buffer_sets_ctrunc(pair):
    """Credentials queued and msg_control NULL: scm_recv sets MSG_CTRUNC."""
    on = c_int(1)
    assert setsockopt(pair[1], SOL_SOCKET, SO_PASSCRED, on, sizeof(on)) == 0
    assert send(pair[0], message()) == (1, 0)
    got = receive(pair[1], controllen=0)
    assert got.ret == 1 and got.msg_flags & MSG_CTRUNC


def test_datagram_larger_than_buffer_sets_msg_trunc(pair, pipe):
    """A datagram longer than the iovecs: the tail is dropped, MSG_TRUNC set, fds still come."""
    payload = b"0123456789abcdef"
    assert send(pair[0], message([rights(pipe[0])], payload=payload)) == (len(payload), 0)
    got = receive(pair[1], controllen=CMSG_SPACE(INT), bufsize=4)
    try:
        assert got.ret == 4 and got.data == payload[:4]
        assert got.msg_flags & MSG_TRUNC
        assert len(got.fds) == 1
    finally:
        close_all(got.fds)


def test_msg_trunc_flag_returns_the_real_length(pair):
    """recvmsg(MSG_TRUNC) on AF_UNIX dgram returns the datagram's full length.

    (checked on 6.18; the man page documents it for AF_UNIX datagrams since 3.4.)
    """
    payload = b"0123456789abcdef"
    assert send(pair[0], message(payload=payload)) == (len(payload), 0)
    got = receive(pair[1], bufsize=4, flags=MSG_TRUNC)
    assert got.ret == len(payload) and got.msg_flags & MSG_TRUNC


def test_datagram_that_fits_has_no_msg_trunc(pair):
    payload = b"0123"
    assert send(pair[0], message(payload=payload)) == (4, 0)
    got = receive(pair[1], bufsize=4)
    assert got.ret == 4 and not got.msg_flags & MSG_TRUNC
