"""Sending and receiving with typed control messages: credentials, pidfds, rights, TTL.

``send_message`` sends any list of control messages (``ScmRights``,
``ScmCredentials``, ...) built with ``rawsys.control.build_control``;
``recv_message`` receives one message and returns everything that came with
it, decoded by ``rawsys.control.parse_control``.  These are the general
forms; ``send_fds``/``recv_fds`` are the fast special case.

Ownership: the descriptors in ``Message.fds`` and ``Message.pidfd`` are the
caller's to close.  If anything goes wrong after the kernel installed them
(``MSG_CTRUNC``, an exception while decoding, a signal), they are closed
here or handed over inside ``ControlTruncatedError``, as with ``recv_fds``.
"""

from __future__ import annotations

import ctypes
from ctypes import addressof, c_char, pointer
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Sequence

from rawsys._sockutil import (
    SOCKADDR_STORAGE_SIZE,
    Waiter,
    c_int_arg,
    close_quietly,
    decode_address,
    fileno,
    handle_errno,
    sendmsg_once,
)
from rawsys.c.cmsg import CMSG_LEN, CMSG_SPACE
from rawsys.c.constants import MSG_CMSG_CLOEXEC, MSG_CTRUNC, SCM_MAX_FD
from rawsys.c.libc import LIBC
from rawsys.c.structs import iovec, msghdr
from rawsys.control import (
    ControlMessage,
    ScmCredentials,
    ScmPidfd,
    ScmRights,
    build_control,
    fds_in,
    parse_control,
)
from rawsys.errors import ControlTruncatedError

_sendmsg = LIBC["sendmsg"]
_recvmsg = LIBC["recvmsg"]
_UCRED_SIZE = 12  # sizeof(struct ucred)


@dataclass
class Message:
    """One received message and everything that came with it.

    ``fds`` (from every ``SCM_RIGHTS``) and ``pidfd`` (``SCM_PIDFD``) are
    owned by the caller.  ``control`` is the full decoded control data.
    """

    data: bytes
    fds: List[int]
    credentials: ScmCredentials | None
    pidfd: int | None
    msg_flags: int
    address: Any
    control: List[ControlMessage] = field(default_factory=list)


def control_space(maxfds: int = 0, *, credentials: bool = False, pidfd: bool = False,
                  extra: int = 0) -> int:
    """Bytes of control buffer for a message with these items.

    The kernel writes credentials first, then the pidfd, then the rights, and
    installs as many fds as fit what is left: with *credentials* or *pidfd*
    reserved but not sent, more than *maxfds* fds may arrive.
    """
    space = extra
    if credentials:
        space += CMSG_SPACE(_UCRED_SIZE)
    if pidfd:
        space += CMSG_SPACE(4)
    space += CMSG_LEN(4 * min(maxfds, SCM_MAX_FD))
    return space


def send_message(sock: Any, buffers: Iterable[Any], control: Sequence[ControlMessage] = (),
                 flags: int = 0, address: Any = None) -> int:
    """``sendmsg`` with the control messages *control*; return the bytes sent.

    ``ScmCredentials`` needs ``SO_PASSCRED``-style permission checks: a
    pid/uid/gid the sender may not claim is ``EPERM``, a pid that does not
    exist ``ESRCH``.  Descriptors in ``ScmRights`` stay the caller's.
    """
    fd = fileno(sock)
    flags = c_int_arg(flags, "flags")
    data = b"".join(buffers)
    ctrl = build_control(list(control))
    return sendmsg_once(sock, fd, data, bytes(ctrl), address, flags)


def recv_message(sock: Any, bufsize: int, maxfds: int = 0, flags: int = 0, *,
                 credentials: bool = False, pidfd: bool = False, extra_control: int = 0,
                 cloexec: bool = True) -> Message:
    """``recvmsg`` with room for *maxfds* fds and the asked-for extras; decode it all.

    *credentials* reserves room for ``SCM_CREDENTIALS`` (enable
    ``SO_PASSCRED`` on the receiving socket first: ``rawsys.set_passcred``),
    *pidfd* for ``SCM_PIDFD`` (``rawsys.set_passpidfd``), *extra_control*
    bytes for anything else (e.g. ``CMSG_SPACE(4)`` for ``IP_TTL``).  Received
    fds are close-on-exec unless ``cloexec=False``.  ``MSG_CTRUNC`` raises
    ``ControlTruncatedError`` (its fds include a pidfd that arrived).
    """
    fd = fileno(sock)
    flags = c_int_arg(flags, "flags")
    if not isinstance(bufsize, int) or not isinstance(maxfds, int):
        raise TypeError("bufsize and maxfds must be ints")
    if bufsize < 0:
        raise ValueError("negative buffer size in recv_message()")
    if maxfds < 0 or extra_control < 0:
        raise OverflowError("recv_message() maxfds/extra_control out of range")
    added = MSG_CMSG_CLOEXEC if cloexec and not flags & MSG_CMSG_CLOEXEC else 0
    flags |= added
    room = control_space(maxfds, credentials=credentials, pidfd=pidfd, extra=extra_control)
    data_c = (c_char * max(bufsize, 1))()
    ctrl_c = (c_char * room)()
    name_c = (c_char * SOCKADDR_STORAGE_SIZE)()
    iov = iovec(addressof(data_c), bufsize)
    msg = msghdr()
    msg.msg_iov = pointer(iov)
    msg.msg_iovlen = 1
    msg.msg_control = addressof(ctrl_c)
    msg.msg_controllen = room
    msg.msg_name = addressof(name_c)
    msg.msg_namelen = SOCKADDR_STORAGE_SIZE
    msg.msg_flags = -1  # written by the kernel only on success
    try:
        waiter: Waiter | None = None
        while True:
            received = _recvmsg(fd, msg, flags)
            if received >= 0:
                break
            waiter = handle_errno(ctypes.get_errno(), sock, fd, flags, False, waiter)
        control = parse_control(ctrl_c.raw[: msg.msg_controllen])
        fds: List[int] = []
        creds: ScmCredentials | None = None
        pid_fd: int | None = None
        for item in control:
            if isinstance(item, ScmRights):
                fds.extend(item.fds)
            elif isinstance(item, ScmCredentials):
                creds = item
            elif isinstance(item, ScmPidfd):
                pid_fd = item.fd
        msg_flags = msg.msg_flags & ~added
        data = data_c.raw[: min(received, bufsize)]
        namelen = msg.msg_namelen
        address = decode_address(name_c.raw[:namelen]) if namelen else None
        if msg_flags & MSG_CTRUNC:
            owned = fds + ([pid_fd] if pid_fd is not None else [])
            raise ControlTruncatedError([(data, owned, msg_flags, address)])
        return Message(data, fds, creds, pid_fd, msg_flags, address, control)
    except ControlTruncatedError:
        raise  # it owns the fds that arrived
    except BaseException:
        if msg.msg_flags != -1:
            close_quietly(fds_in(ctrl_c.raw[: min(msg.msg_controllen, room)]))
        raise


__all__ = ["Message", "control_space", "send_message", "recv_message"]
