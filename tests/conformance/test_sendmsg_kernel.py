"""The kernel's sendmsg(2) branches for fds, driven from user space through rawsys's C layer.

The kernel's path follows
``sendmsg`` through ``____sys_sendmsg`` (control data copied in) and
``unix_dgram_sendmsg`` into ``__scm_send`` and ``scm_fp_copy``.  Each test
here provokes one branch and asserts the errno or the outcome that branch
implies.  Unless a test says otherwise, the branch has been in the kernel in
this form since long before 5.4 and was checked here on 6.18.
"""

from __future__ import annotations

import errno
import os
import struct

import pytest
from scm_support import (
    close_all,
    creds_data,
    dgram_pair,
    errname,
    fds_data,
    message,
    open_fd_count,
    receive,
    rights,
    send,
    udp_loopback,
)

from rawsys.c import (
    AF_INET,
    AF_NETLINK,
    AF_UNIX,
    CMSG_LEN,
    CMSG_SPACE,
    IPPROTO_IP,
    IPPROTO_TCP,
    SCM_CREDENTIALS,
    SCM_MAX_FD,
    SCM_RIGHTS,
    SOCK_DGRAM,
    SOCK_RAW,
    SOCK_STREAM,
    SOL_SOCKET,
    c_int,
    close,
    cmsghdr,
    pipe2,
    sendto,
    sizeof,
    socket,
    socketpair,
    ucred,
)
from rawsys.c.memory import BufferOverflowDetected

pytestmark = pytest.mark.usefixtures("fd_leak_check")

NETLINK_ROUTE = 0  # <linux/netlink.h>


def assert_errno(result: tuple[int, int], expected: int) -> None:
    ret, err = result
    assert ret == -1, f"sendmsg succeeded ({ret}); expected {errname(expected)}"
    assert err == expected, f"errno {errname(err)}, expected {errname(expected)}"


def assert_nothing_queued(sock: int) -> None:
    got = receive(sock, controllen=CMSG_SPACE(4 * 4))
    close_all(got.fds)
    assert got.ret == -1 and got.errno == errno.EAGAIN, f"a message was queued: {got}"


# --- CMSG_OK in __scm_send ---------------------------------------------------------


@pytest.mark.parametrize("cmsg_len", [0, 1, sizeof(cmsghdr) - 1])
def test_cmsg_len_smaller_than_header_is_einval(pair, pipe, cmsg_len):
    """CMSG_OK fails when cmsg_len < sizeof(struct cmsghdr): __scm_send returns -EINVAL."""
    msg = message([rights(pipe[0])], cmsg_lens=[cmsg_len])
    assert_errno(send(pair[0], msg), errno.EINVAL)
    assert_nothing_queued(pair[1])


def test_cmsg_len_past_the_buffer_is_einval(pair, pipe):
    """CMSG_OK fails when cmsg_len runs past msg_controllen: -EINVAL."""
    controllen = CMSG_SPACE(sizeof(c_int))
    msg = message([rights(pipe[0])], cmsg_lens=[controllen + sizeof(c_int)])
    assert msg.msg_controllen == controllen
    assert_errno(send(pair[0], msg), errno.EINVAL)
    assert_nothing_queued(pair[1])


def test_cmsg_len_exactly_the_buffer_is_accepted(pair, pipe):
    """The boundary of the previous test: cmsg_len == CMSG_LEN(sizeof(int)) is fine."""
    ret, err = send(pair[0], message([rights(pipe[0])]))
    assert (ret, err) == (1, 0)
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(c_int)))
    close_all(got.fds)
    assert len(got.fds) == 1


# --- scm_fp_copy ----------------------------------------------------------------


def test_scm_max_fd_fds_are_accepted(pair, pipe):
    """SCM_MAX_FD (253) fds in one message: scm_fp_copy takes them all.

    SCM_MAX_FD is 253 since Linux 2.6.38; it was 255 before.
    """
    assert SCM_MAX_FD == 253
    before = open_fd_count()
    ret, err = send(pair[0], message([rights(*[pipe[0]] * SCM_MAX_FD)]))
    assert (ret, err) == (1, 0), errname(err)
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(c_int) * SCM_MAX_FD))
    try:
        assert len(got.fds) == SCM_MAX_FD
        assert open_fd_count() == before + SCM_MAX_FD
    finally:
        close_all(got.fds)


def test_more_than_scm_max_fd_is_einval(pair, pipe):
    """SCM_MAX_FD + 1 fds: scm_fp_copy refuses with -EINVAL, nothing is queued."""
    msg = message([rights(*[pipe[0]] * (SCM_MAX_FD + 1))])
    assert_errno(send(pair[0], msg), errno.EINVAL)
    assert_nothing_queued(pair[1])


def test_fds_over_two_messages_past_scm_max_fd_are_einval(pair, pipe):
    """Two SCM_RIGHTS messages share one list: 200 + 54 > SCM_MAX_FD is -EINVAL too."""
    msg = message([rights(*[pipe[0]] * 200), rights(*[pipe[0]] * 54)])
    assert_errno(send(pair[0], msg), errno.EINVAL)
    assert_nothing_queued(pair[1])


@pytest.mark.parametrize("bad_fd", [-1, -100])
def test_negative_fd_is_ebadf(pair, pipe, bad_fd):
    """A negative fd in the array: fget_raw fails, scm_fp_copy returns -EBADF."""
    msg = message([rights(pipe[0], bad_fd)])
    assert_errno(send(pair[0], msg), errno.EBADF)
    assert_nothing_queued(pair[1])


def test_closed_fd_is_ebadf(pair, pipe):
    """An fd that was open and is closed: -EBADF, and the good fds before it are not leaked."""
    spare = os.dup(pipe[0])
    os.close(spare)
    before = open_fd_count()
    msg = message([rights(pipe[0], spare)])
    assert_errno(send(pair[0], msg), errno.EBADF)
    assert open_fd_count() == before
    assert_nothing_queued(pair[1])


def test_a_file_closed_right_after_sendmsg_arrives_intact(pair):
    """In flight, the kernel holds its own reference: closing the sender's fd is safe."""
    fds = (c_int * 2)()
    assert pipe2(fds, 0) == 0
    read_end, write_end = fds[0], fds[1]
    inode = os.fstat(read_end).st_ino
    assert send(pair[0], message([rights(read_end)])) == (1, 0)
    close(read_end)  # the sender's last descriptor of the read end
    os.write(write_end, b"still here")
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(c_int)))
    try:
        assert len(got.fds) == 1
        assert os.fstat(got.fds[0]).st_ino == inode
        assert os.read(got.fds[0], 64) == b"still here"
    finally:
        close_all([*got.fds, write_end])


def test_an_unlinked_file_closed_right_after_sendmsg_arrives_intact(pair, tmp_path):
    """A regular file: sent, closed and unlinked by the sender, read whole by the receiver."""
    path = tmp_path / "in-flight.txt"
    path.write_bytes(b"content of a file nobody can open any more")
    fd = os.open(path, os.O_RDONLY)
    assert send(pair[0], message([rights(fd)])) == (1, 0)
    close(fd)
    path.unlink()
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(c_int)))
    try:
        assert len(got.fds) == 1
        assert os.fstat(got.fds[0]).st_nlink == 0
        assert os.pread(got.fds[0], 100, 0) == b"content of a file nobody can open any more"
    finally:
        close_all(got.fds)


def test_zero_bytes_on_a_stream_socket_carry_no_fds(pipe):
    """The fd-passing posts' advice to send one byte at least: SOCK_STREAM fds need data to ride on.

    unix_stream_sendmsg queues one skb per chunk of data; with no data there
    is no skb, sendmsg returns 0 and the fds are dropped.  A datagram of zero
    bytes, by contrast, is still a datagram and carries them.
    """
    sv = (c_int * 2)()
    assert socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0
    try:
        assert send(sv[0], message([rights(pipe[0])], payload=b"")) == (0, 0)
        got = receive(sv[1], controllen=CMSG_SPACE(sizeof(c_int)))
        close_all(got.fds)
        assert got.ret == -1 and got.errno == errno.EAGAIN and got.fds == []
    finally:
        close_all([sv[0], sv[1]])


def test_zero_bytes_on_a_datagram_socket_carry_the_fds(pair, pipe):
    assert send(pair[0], message([rights(pipe[0])], payload=b"")) == (0, 0)
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(c_int)))
    close_all(got.fds)
    assert got.ret == 0 and len(got.fds) == 1


# --- the cmsg_level / cmsg_type switch of __scm_send --------------------------------


@pytest.mark.parametrize("cmsg_type", [0, 0x03, 99, 0x7FFFFFFF])
def test_unknown_sol_socket_type_is_einval(pair, cmsg_type):
    """An unknown cmsg_type at SOL_SOCKET hits the default branch: -EINVAL.

    0x03 is SCM_SECURITY, which can be received but never sent.
    """
    msg = message([(SOL_SOCKET, cmsg_type, fds_data([0]))])
    assert_errno(send(pair[0], msg), errno.EINVAL)


@pytest.mark.parametrize("level", [IPPROTO_IP, IPPROTO_TCP, 12345])
def test_other_levels_are_ignored(pair, pipe, level):
    """__scm_send skips cmsgs whose level is not SOL_SOCKET: the send succeeds, nothing rides."""
    msg = message([(level, SCM_RIGHTS, fds_data([pipe[0]]))])
    assert send(pair[0], msg) == (1, 0)
    before = open_fd_count()
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(c_int)))
    close_all(got.fds)
    assert got.ret == 1 and got.cmsgs == [] and open_fd_count() == before


# --- SCM_RIGHTS on other families --------------------------------------------------


def test_scm_rights_on_netlink_is_einval(pipe):
    """netlink_sendmsg calls scm_send; __scm_send refuses SCM_RIGHTS off PF_UNIX: -EINVAL."""
    nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)
    if nl == -1:
        pytest.skip("no AF_NETLINK sockets on this system")
    try:
        assert_errno(send(nl, message([rights(pipe[0])])), errno.EINVAL)
    finally:
        close(nl)


def test_scm_rights_on_udp_is_silently_ignored(pipe):
    """On AF_INET UDP, __sock_cmsg_send passes SCM_RIGHTS over: no error, no fds.

    ip_cmsg_send hands SOL_SOCKET cmsgs to __sock_cmsg_send, whose switch
    lists SCM_RIGHTS and SCM_CREDENTIALS as "semantically SOL_UNIX" and
    ignores them.  The datagram arrives, without fds.  Version: holds where
    that switch has those two cases (checked on 6.18); a kernel whose
    __sock_cmsg_send lacked them refused the message with EINVAL instead.
    """
    receiver, addr = udp_loopback()
    sender = socket(AF_INET, SOCK_DGRAM, 0)
    try:
        msg = message([rights(pipe[0])], payload=b"udp")
        msg.set_name(addr)
        assert send(sender, msg) == (3, 0)
        before = open_fd_count()
        got = receive(receiver, controllen=CMSG_SPACE(sizeof(c_int)))
        close_all(got.fds)
        assert got.ret == 3 and got.data == b"udp"
        assert got.fds == [] and open_fd_count() == before
    finally:
        close_all([receiver, sender])


# --- SCM_CREDENTIALS -------------------------------------------------------------


def own_creds() -> bytes:
    return creds_data(os.getpid(), os.getuid(), os.getgid())


@pytest.mark.parametrize("delta", [-4, 4, 8])
def test_credentials_with_wrong_cmsg_len_are_einval(pair, delta):
    """cmsg_len != CMSG_LEN(sizeof(struct ucred)): -EINVAL."""
    good = CMSG_LEN(sizeof(ucred))
    data = own_creds() + bytes(8)
    msg = message([(SOL_SOCKET, SCM_CREDENTIALS, data)], cmsg_lens=[good + delta])
    assert_errno(send(pair[0], msg), errno.EINVAL)


def test_own_credentials_are_accepted(pair):
    """The control case: one's own pid, uid and gid go through."""
    msg = message([(SOL_SOCKET, SCM_CREDENTIALS, own_creds())])
    assert send(pair[0], msg) == (1, 0)
    got = receive(pair[1], controllen=CMSG_SPACE(sizeof(ucred)))
    assert got.ret == 1


def unused_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


@pytest.mark.skipif(
    os.geteuid() != 0,
    reason="claiming a pid other than one's own needs CAP_SYS_ADMIN (scm_check_creds); run as root",
)
def test_credentials_of_a_pid_that_does_not_exist_are_esrch(pair):
    """Allowed to claim any pid (CAP_SYS_ADMIN), a pid with no process: find_get_pid → -ESRCH."""
    msg = message(
        [(SOL_SOCKET, SCM_CREDENTIALS, creds_data(unused_pid(), os.getuid(), os.getgid()))]
    )
    assert_errno(send(pair[0], msg), errno.ESRCH)


NOBODY = 65534


def errno_in_child(sock: int, creds: bytes, drop_to: int | None) -> int:
    """Fork; the child drops to uid/gid *drop_to* (if given) and sends *creds*; its errno."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        code = 255
        try:
            if drop_to is not None:
                os.setgroups([])
                os.setgid(drop_to)
                os.setuid(drop_to)
            claimed = bytearray(creds)
            if not claimed:  # fill in the child's own pid, claim uid 0
                claimed = bytearray(creds_data(os.getpid(), 0, os.getgid()))
            ret, err = send(sock, message([(SOL_SOCKET, SCM_CREDENTIALS, bytes(claimed))]))
            os.write(w, struct.pack("=i", 0 if ret != -1 else err))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = os.read(r, 4)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and len(data) == 4, "the child failed"
    return int(struct.unpack("=i", data)[0])


def test_another_users_uid_as_non_root_is_eperm(pair):
    """A process without CAP_SETUID claiming uid 0: scm_check_creds → -EPERM."""
    drop_to = NOBODY if os.geteuid() == 0 else None
    err = errno_in_child(pair[0], b"", drop_to)
    assert err == errno.EPERM, errname(err)


def test_another_pid_as_non_root_is_eperm(pair):
    """A process without CAP_SYS_ADMIN claiming its parent's pid: -EPERM."""
    drop_to = NOBODY if os.geteuid() == 0 else None
    uid = NOBODY if drop_to is not None else os.getuid()
    gid = NOBODY if drop_to is not None else os.getgid()
    err = errno_in_child(pair[0], creds_data(os.getpid(), uid, gid), drop_to)
    assert err == errno.EPERM, errname(err)


# --- ____sys_sendmsg and unix_dgram_sendmsg ----------------------------------------


@pytest.mark.parametrize("controllen", [2**31, 2**32 + 16, 2**63])
def test_controllen_over_int_max_is_enobufs(pair, pipe, controllen):
    """msg_controllen > INT_MAX: ____sys_sendmsg returns -ENOBUFS before copying anything.

    (Lengths up to INT_MAX but beyond net.core.optmem_max fail with -ENOBUFS
    too, one step later, when sock_kmalloc refuses the copy; the control
    buffer here is small, so a kernel that read it would fault instead.)
    """
    msg = message([rights(pipe[0])])
    msg.msg_controllen = controllen
    assert_errno(send(pair[0], msg, unchecked=True), errno.ENOBUFS)
    assert_nothing_queued(pair[1])
    # The C layer's own sendmsg refuses the length before the kernel sees it.
    with pytest.raises(BufferOverflowDetected):
        send(pair[0], msg)
    assert_nothing_queued(pair[1])


def test_send_to_a_gone_peer_is_econnrefused(pipe):
    """The peer of a connected dgram socket is closed: unix_dgram_sendmsg → -ECONNREFUSED.

    The kernel then forgets the dead peer: the next send is -ENOTCONN.
    """
    a, b = dgram_pair()
    close(b)
    try:
        assert_errno(send(a, message([rights(pipe[0])])), errno.ECONNREFUSED)
        assert_errno(send(a, message([rights(pipe[0])])), errno.ENOTCONN)
    finally:
        close(a)


def test_unconnected_without_address_is_enotconn(pipe):
    """No peer and no msg_name: unix_dgram_sendmsg → -ENOTCONN."""
    s = socket(AF_UNIX, SOCK_DGRAM, 0)
    assert s != -1
    try:
        assert_errno(send(s, message([rights(pipe[0])])), errno.ENOTCONN)
    finally:
        close(s)


def test_udp_control_case_sendto():
    """Sanity for the UDP helper: a plain sendto arrives (so the ignore test means something)."""
    receiver, addr = udp_loopback()
    sender = socket(AF_INET, SOCK_DGRAM, 0)
    try:
        assert sendto(sender, b"hi", 2, 0, addr, sizeof(addr)) == 2
        assert receive(receiver).data == b"hi"
    finally:
        close_all([receiver, sender])
