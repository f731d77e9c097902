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
import sys
from ctypes import addressof, c_char, pointer
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterable, List, Sequence

from rawsys._sockutil import (
    SOCKADDR_STORAGE_SIZE,
    Waiter,
    address_arg,
    block_signals,
    decode_address,
    fd_and_flags,
    handle_errno,
    new_sigset,
    release_fds,
    restore_signals,
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
    parse_control,
    received_fds,
)
from rawsys.errors import ControlTruncatedError

_sendmsg = LIBC["sendmsg"]
_recvmsg = LIBC["recvmsg"]
_UCRED_SIZE = 12  # sizeof(struct ucred)
_MAXFDS_LIMIT = (2**31 - 1 - 16) // 4  # as recv_fds: beyond, CMSG_LEN(4 * maxfds) overflows


@dataclass
class Message:
    """One received message and everything that came with it.

    ``fds`` (from every ``SCM_RIGHTS``) and ``pidfd`` (``SCM_PIDFD``) are
    owned by the caller.  ``control`` is the full decoded control data.
    ``pidfd_errno`` is the errno when an ``SCM_PIDFD`` came but the kernel
    could not install the pidfd (``EMFILE`` at the fd limit; ``pidfd`` is
    then ``None``: a negative number is never handed out as an fd).
    """

    data: bytes
    fds: List[int]
    credentials: ScmCredentials | None
    pidfd: int | None
    msg_flags: int
    address: Any
    control: List[ControlMessage] = field(default_factory=list)
    pidfd_errno: int | None = None


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

    Every argument is converted and checked before the call (fds in
    ``ScmRights`` as ``send_fds`` converts them; out-of-range fields raise
    ``OverflowError`` naming the field).  ``ScmCredentials`` needs
    ``SO_PASSCRED``-style permission checks: a pid/uid/gid the sender may not
    claim is ``EPERM``, a pid that does not exist ``ESRCH``.  Descriptors in
    ``ScmRights`` stay the caller's.
    """
    fd, flags = fd_and_flags(sock, flags)
    data = b"".join(buffers)
    ctrl = build_control(list(control))
    return sendmsg_once(sock, fd, data, ctrl, address_arg(sock, fd, address), flags)


def _size_arg(value: Any, name: str) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return int(value)


def recv_message(sock: Any, bufsize: int, maxfds: int = 0, flags: int = 0, *,
                 credentials: bool = False, pidfd: bool = False, extra_control: int = 0,
                 cloexec: bool = True) -> Message:
    """``recvmsg`` with room for *maxfds* fds and the asked-for extras; decode it all.

    *credentials* reserves room for ``SCM_CREDENTIALS`` (enable
    ``SO_PASSCRED`` on the receiving socket first: ``rawsys.set_passcred``),
    *pidfd* for ``SCM_PIDFD`` (``rawsys.set_passpidfd``), *extra_control*
    bytes for anything else (e.g. ``CMSG_SPACE(4)`` for ``IP_TTL``).  Received
    fds are close-on-exec unless ``cloexec=False``.  ``MSG_CTRUNC`` raises
    ``ControlTruncatedError`` (its fds include a pidfd that arrived).  When
    the kernel could not install the pidfd (``EMFILE``, ...), ``pidfd`` is
    ``None`` and ``pidfd_errno`` says why.
    """
    fd, flags = fd_and_flags(sock, flags)
    bufsize = _size_arg(bufsize, "bufsize")
    maxfds = _size_arg(maxfds, "maxfds")
    extra_control = _size_arg(extra_control, "extra_control")
    if bufsize < 0:
        raise ValueError("negative buffer size in recv_message()")
    if bufsize > sys.maxsize:  # as recvmsg's C ssize_t
        raise OverflowError("recv_message() bufsize out of range")
    if not 0 <= maxfds <= _MAXFDS_LIMIT:  # CPython's CMSG_LEN(maxfds * 4) overflows beyond
        raise OverflowError("recv_message() maxfds out of range")
    if not 0 <= extra_control <= 2**31 - 1:
        raise OverflowError("recv_message() extra_control out of range")
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
    sigmask = new_sigset()  # the signal mask saved while cleaning up after an exception
    # Every argument is known good from here on.
    raising = False  # set just before raising our ControlTruncatedError
    handed = False  # until the fds move from the control buffer to `owned`
    owned: List[int] = _NO_FDS
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
        pidfd_errno: int | None = None
        for item in control:
            if isinstance(item, ScmRights):
                fds.extend(item.fds)
            elif isinstance(item, ScmCredentials):
                creds = item
            elif isinstance(item, ScmPidfd):
                if item.fd >= 0:
                    pid_fd = item.fd
                else:  # the kernel writes -errno when it cannot install the pidfd
                    pidfd_errno = -item.fd
        msg_flags = msg.msg_flags & ~added
        data = data_c.raw[: min(received, bufsize)]
        namelen = msg.msg_namelen
        address = decode_address(name_c.raw[:namelen]) if namelen else None
        everything = fds + ([pid_fd] if pid_fd is not None else [])
        if msg_flags & MSG_CTRUNC:
            truncated: ControlTruncatedError | None = ControlTruncatedError(
                [(data, everything, msg_flags, address)], owns=False)
            result = None
        else:
            truncated = None
            result = Message(data, fds, creds, pid_fd, msg_flags, address, control, pidfd_errno)
        # The hand-over: from here `owned` owns the fds; the buffer is forgotten just after.
        owned = everything
        handed = True
        msg.msg_flags = -1
        if truncated is not None:
            truncated.own(owned)  # the exception owns the fds that arrived
            raising = True
            try:
                raise truncated
            finally:
                truncated = None  # no cycle through this frame: the handler's end closes it
        return result  # type: ignore[return-value]  # a Message when not truncated
    # A bare except: no name to look up, so on 3.9/3.10 (which may run a
    # signal handler before any instruction that looks a name up) nothing
    # can interrupt between the exception and the block below.
    except:  # noqa: E722
        if raising:
            raise  # our ControlTruncatedError: it owns the fds that arrived
        # As in recv_fds: every signal blocked first, in C, then the
        # idempotent _settle tried until a handler already due has run.
        try:
            block_signals(sigmask)
        except:  # noqa: E722
            pass  # a handler already due ran after the block: the block holds
        try:
            try:
                _settle(msg, ctrl_c, handed, owned)
            except BaseException:
                try:
                    _settle(msg, ctrl_c, handed, owned)
                except BaseException:
                    _settle(msg, ctrl_c, handed, owned)
        finally:
            restore_signals(sigmask)
        raise


_NO_FDS: List[int] = []  # placeholder before the hand-over; never appended to


def _installed(msg: msghdr, ctrl_c: Any) -> List[int]:
    """Every fd the ``recvmsg`` on *msg* installed (none once its result was taken)."""
    if msg.msg_flags == -1:
        return []
    rights, pidfds = received_fds(ctrl_c, min(msg.msg_controllen, len(ctrl_c)))
    return rights + pidfds


def _settle(msg: msghdr, ctrl_c: Any, handed: bool, owned: List[int]) -> None:
    """Close what ``recv_message`` owns after an exception; idempotent."""
    if handed:
        release_fds(owned.copy, owned.clear)
    elif msg.msg_flags != -1:  # else recvmsg failed: nothing installed
        release_fds(partial(_installed, msg, ctrl_c), partial(setattr, msg, "msg_flags", -1))


__all__ = ["Message", "control_space", "send_message", "recv_message"]
