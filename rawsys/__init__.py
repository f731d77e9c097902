"""rawsys: pass file descriptors over Unix sockets the way C does, from Python.

``from rawsys import *`` gives ported C code what ``#include <sys/socket.h>``
gives C: the structures, the ``CMSG_*`` macros, the libc calls with C's
return conventions and the constants (see ``rawsys.c``).  The Pythonic layer
(``send_fds``/``recv_fds`` and friends) raises ``OSError`` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import rawsys.c
import rawsys.c.constants
from rawsys.c import *  # noqa: F403
from rawsys.c.constants import *  # noqa: F403

__version__ = "0.1.0"

__all__ = ["__version__"]
__all__ += rawsys.c.__all__
if TYPE_CHECKING:  # mypy does not follow rawsys.c's own ``__all__ +=`` of the constants
    __all__ += rawsys.c.constants.__all__

# --- the Pythonic fd-passing layer (issue 3) -----------------------------------
from rawsys.control import (  # noqa: E402
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
from rawsys.errors import (  # noqa: E402
    ControlTruncatedError,
    FdPassingUnsupportedError,
    PidfdUnsupportedError,
)
from rawsys.fds import recv_fd, recv_fds, send_fd, send_fds  # noqa: E402

__all__ += [
    "send_fds", "recv_fds", "send_fd", "recv_fd",
    "ControlTruncatedError", "FdPassingUnsupportedError", "PidfdUnsupportedError",
    "parse_control", "fds_in", "build_control", "ControlDataError", "ControlMessage",
    "ScmRights", "ScmCredentials", "ScmPidfd", "IpTtl", "UnknownControl", "TruncatedControl",
]
from rawsys.batch import recv_fds_batch, send_fds_batch  # noqa: E402
from rawsys.creds import (  # noqa: E402
    get_passcred,
    own_credentials,
    peer_credentials,
    peer_pidfd,
    pidfd_supported,
    send_credentials,
    set_passcred,
    set_passpidfd,
)
from rawsys.messages import Message, control_space, recv_message, send_message  # noqa: E402

__all__ += [
    "send_fds_batch", "recv_fds_batch",
    "set_passcred", "get_passcred", "peer_credentials", "own_credentials", "send_credentials",
    "set_passpidfd", "peer_pidfd", "pidfd_supported",
    "Message", "control_space", "send_message", "recv_message",
]
