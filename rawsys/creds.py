"""Who is on the other end: ``SO_PASSCRED``, ``SO_PEERCRED``, ``SO_PASSPIDFD``, ``SO_PEERPIDFD``.

``set_passcred`` makes the kernel attach an ``SCM_CREDENTIALS`` message
(``struct ucred``) to every message received on the socket; receive it with
``rawsys.recv_message(..., credentials=True)``.  ``send_credentials`` sends
one explicitly (the kernel checks the sender may claim it).
``peer_credentials`` reads the peer's ``ucred`` as of ``connect``/
``socketpair`` (``SO_PEERCRED``).

The pidfd options need Linux 6.5+; where the kernel lacks them the calls
raise ``PidfdUnsupportedError`` (an ``OSError`` with the kernel's errno,
``ENOPROTOOPT``), never a generic failure.  A pidfd returned here is the
caller's to close (the kernel makes it close-on-exec).
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
from ctypes import byref, c_int, sizeof
from typing import Any, Iterable

from rawsys._sockutil import c_int_arg, fileno, oserror
from rawsys.c.constants import (
    SO_PASSCRED,
    SO_PASSPIDFD,
    SO_PEERCRED,
    SO_PEERPIDFD,
    SOL_SOCKET,
)
from rawsys.c.libc import LIBC
from rawsys.c.structs import socklen_t, ucred
from rawsys.control import ScmCredentials, ScmRights
from rawsys.errors import PidfdUnsupportedError
from rawsys.messages import send_message

_setsockopt = LIBC["setsockopt"]
_getsockopt = LIBC["getsockopt"]


def pidfd_error(e: int, what: str) -> OSError:
    """``PidfdUnsupportedError`` when *e* says the kernel lacks the option, else ``OSError``."""
    if e in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
        return PidfdUnsupportedError(
            e, f"{what} is not supported by this kernel (Linux 6.5+ needed): {os.strerror(e)}"
        )
    return oserror(e)


def _set_int_option(sock: Any, option: int, value: Any, name: str) -> int:
    """setsockopt(SOL_SOCKET, option, int) -> 0 or the errno.

    *value* is checked first (``TypeError``, or ``OverflowError`` naming
    *name* beyond a C ``int``): ctypes would truncate ``2**32`` to 0.
    """
    optval = c_int(c_int_arg(value, name))
    if _setsockopt(fileno(sock), SOL_SOCKET, option, byref(optval), sizeof(optval)) != 0:
        return ctypes.get_errno()
    return 0


def _get_int_option(sock: Any, option: int) -> tuple[int, int]:
    """getsockopt(SOL_SOCKET, option) -> (errno or 0, int value)."""
    optval = c_int(0)
    optlen = socklen_t(sizeof(optval))
    if _getsockopt(fileno(sock), SOL_SOCKET, option, byref(optval), byref(optlen)) != 0:
        return ctypes.get_errno(), 0
    return 0, int(optval.value)


def set_passcred(sock: Any, enable: bool = True) -> None:
    """Turn ``SO_PASSCRED`` on (or off): every received message carries ``SCM_CREDENTIALS``."""
    e = _set_int_option(sock, SO_PASSCRED, enable, "enable")
    if e:
        raise oserror(e)


def get_passcred(sock: Any) -> bool:
    """Whether ``SO_PASSCRED`` is on."""
    e, value = _get_int_option(sock, SO_PASSCRED)
    if e:
        raise oserror(e)
    return bool(value)


def peer_credentials(sock: Any) -> ScmCredentials:
    """``SO_PEERCRED``: the peer's pid/uid/gid as of ``connect``/``socketpair``."""
    cred = ucred()
    optlen = socklen_t(sizeof(cred))
    if _getsockopt(fileno(sock), SOL_SOCKET, SO_PEERCRED, byref(cred), byref(optlen)) != 0:
        raise oserror(ctypes.get_errno())
    return ScmCredentials(int(cred.pid), int(cred.uid), int(cred.gid))


def own_credentials() -> ScmCredentials:
    """This process's pid, uid and gid (what ``send_credentials`` sends by default)."""
    return ScmCredentials(os.getpid(), os.getuid(), os.getgid())


def send_credentials(sock: Any, buffers: Iterable[Any], credentials: ScmCredentials | None = None,
                     fds: Iterable[int] = (), flags: int = 0, address: Any = None) -> int:
    """Send an ``SCM_CREDENTIALS`` message (own pid/uid/gid by default) with *buffers*.

    *fds*, if any, travel in an ``SCM_RIGHTS`` message alongside (they stay
    the caller's).  Claiming a pid/uid/gid the process may not is ``EPERM``;
    a pid that does not exist is ``ESRCH``.
    """
    control: list[Any] = [credentials if credentials is not None else own_credentials()]
    fd_array = array.array("i", fds)  # as send_fds converts fds (CPython's errors)
    if fd_array:
        control.append(ScmRights(tuple(fd_array)))
    return send_message(sock, buffers, control, flags, address)


def set_passpidfd(sock: Any, enable: bool = True) -> None:
    """Turn ``SO_PASSPIDFD`` on: received messages carry an ``SCM_PIDFD`` (Linux 6.5+)."""
    e = _set_int_option(sock, SO_PASSPIDFD, enable, "enable")
    if e:
        raise pidfd_error(e, "SO_PASSPIDFD")


def peer_pidfd(sock: Any) -> int:
    """``SO_PEERPIDFD``: a pidfd for the peer process (Linux 6.5+); the caller closes it."""
    e, value = _get_int_option(sock, SO_PEERPIDFD)
    if e:
        raise pidfd_error(e, "SO_PEERPIDFD")
    return value


def pidfd_supported(sock: Any) -> bool:
    """Whether the kernel knows ``SO_PASSPIDFD`` (reads the option; changes nothing)."""
    e, _value = _get_int_option(sock, SO_PASSPIDFD)
    return e == 0


__all__ = [
    "set_passcred", "get_passcred", "peer_credentials", "own_credentials", "send_credentials",
    "set_passpidfd", "peer_pidfd", "pidfd_supported", "pidfd_error",
]
