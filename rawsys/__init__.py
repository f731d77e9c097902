"""rawsys: pass file descriptors over Unix sockets the way C does, from Python.

``from rawsys import *`` gives ported C code what ``#include <sys/socket.h>``
gives C: the structures, the ``CMSG_*`` macros, the libc calls with C's
return conventions and the constants (see ``rawsys.c``).  The Pythonic layer
(``send_fds``/``recv_fds`` and friends) raises ``OSError`` instead.
"""

from __future__ import annotations

from rawsys.c import *  # noqa: F403
from rawsys.c import __all__ as _c_all

__version__ = "0.1.0"

__all__ = [*_c_all]
