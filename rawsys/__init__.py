"""rawsys: pass file descriptors over Unix sockets from Python, safely.

``rawsys`` is the Pythonic layer: drop-ins for ``socket.send_fds`` and
``socket.recv_fds`` that raise ``OSError`` with the kernel's errno, batching
(``sendmmsg``/``recvmmsg``), credentials, general control messages and a
pure parser of control data.

The C layer is a separate namespace, ``rawsys.c``: ``from rawsys.c import *``
gives ported C code what ``#include <sys/socket.h>`` gives C (the structures,
the ``CMSG_*`` macros, the libc calls with C's ``-1``/``errno`` convention and
the constants).  The tracer is ``rawsys.trace`` (``rawsys-trace``).
"""

from __future__ import annotations

from rawsys.batch import recv_fds_batch, send_fds_batch
from rawsys.control import (
    ControlDataError,
    ControlMessage,
    IpTtl,
    ScmCredentials,
    ScmPidfd,
    ScmRights,
    TruncatedControl,
    UnknownControl,
    build_control,
    fds_in,
    parse_control,
)
from rawsys.creds import (
    get_passcred,
    own_credentials,
    peer_credentials,
    peer_pidfd,
    pidfd_supported,
    send_credentials,
    set_passcred,
    set_passpidfd,
)
from rawsys.errors import (
    ControlTruncatedError,
    FdPassingUnsupportedError,
    PidfdUnsupportedError,
)
from rawsys.fds import recv_fd, recv_fds, send_fd, send_fds
from rawsys.messages import Message, control_space, recv_message, send_message

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # drop-ins for socket.send_fds/recv_fds, and the classic one-fd pair
    "send_fds", "recv_fds", "send_fd", "recv_fd",
    # one sendmmsg/recvmmsg
    "send_fds_batch", "recv_fds_batch",
    # credentials and peer identity
    "set_passcred", "get_passcred", "peer_credentials", "own_credentials", "send_credentials",
    "set_passpidfd", "peer_pidfd", "pidfd_supported",
    # any control message
    "Message", "control_space", "send_message", "recv_message",
    # the pure parser of control data
    "parse_control", "fds_in", "build_control", "ControlDataError", "ControlMessage",
    "ScmRights", "ScmCredentials", "ScmPidfd", "IpTtl", "UnknownControl", "TruncatedControl",
    # errors
    "ControlTruncatedError", "FdPassingUnsupportedError", "PidfdUnsupportedError",
]
