"""The exceptions of rawsys's Python layer, all ``OSError`` subclasses.

``ControlTruncatedError`` is how ``MSG_CTRUNC`` reaches the caller: it cannot
be mistaken for success, and it owns the descriptors that did arrive until the
caller takes them (``take()``/``take_fds()``) -- whatever is not taken is
closed by ``close()`` or when the exception is collected, so an
``except OSError: log(...)`` handler leaks nothing.
"""

from __future__ import annotations

import copy
import errno
import os
from typing import Any, List, Sequence, Tuple

Received = Tuple[bytes, List[int], int, Any]  # (msg, fds, msg_flags, address)


class ControlTruncatedError(OSError):
    """``MSG_CTRUNC``: the control buffer was too small, control data was lost.

    The kernel installs only the descriptors that fit and drops the rest (it
    closes its references; they never reach this process).  The ones that did
    arrive are held by the exception:

    * ``results``: the received ``(msg, fds, msg_flags, address)`` tuples (one
      for ``recv_fds``; every message of the call for ``recv_fds_batch``);
    * ``index``: which of them was truncated; ``msg``, ``fds``, ``msg_flags``,
      ``address`` are that one's fields (``fds`` is a tuple, for looking only);
    * ``take()`` hands all results, fds included, to the caller, who then
      closes them; ``take_fds()`` the same as a flat list of fds;
    * ``close()`` (or garbage collection) closes every fd not taken.

    A copy (``copy.copy``) or a pickled and unpickled one holds the same
    results -- fd *numbers* only -- and owns nothing: it closes nothing, and
    pickling never sends a descriptor to another process (use
    ``send_fds`` for that).

    ``errno`` is ``EMSGSIZE``.
    """

    def __init__(self, results: Sequence[Received], index: int = 0, *,
                 owns: bool = True) -> None:
        super().__init__(
            errno.EMSGSIZE,
            "control data truncated (MSG_CTRUNC): the control buffer was too small; "
            "descriptors that did not fit were dropped by the kernel",
        )
        self._owned: List[int] = []
        self.results: List[Received] = list(results)
        self.index = index
        msg, fds, msg_flags, address = self.results[index]
        self.msg: bytes = msg
        self.fds: Tuple[int, ...] = tuple(fds)
        self.msg_flags: int = msg_flags
        self.address: Any = address
        if owns:
            self._owned = [fd for result in self.results for fd in result[1]]

    def own(self, fds: List[int]) -> None:
        """Make *fds* (the list itself, not a copy) the fds this exception closes.

        For receivers that build the exception first and hand the fds over in
        one step; clearing the list elsewhere takes them back.
        """
        self._owned = fds

    def take(self) -> List[Received]:
        """Hand every result and its fds to the caller (who must close the fds)."""
        self._owned = []
        return self.results

    def take_fds(self) -> List[int]:
        """Hand every received fd to the caller (who must close them)."""
        owned, self._owned = list(self._owned), []
        return owned

    def close(self) -> None:
        """Close every received fd not taken; idempotent."""
        owned = self.__dict__.get("_owned")
        self._owned = []
        if owned:
            fds = list(owned)
            owned.clear()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __del__(self) -> None:
        self.close()

    def __reduce__(self) -> Any:
        # A copy or an unpickled one describes what arrived but owns nothing:
        # fd numbers mean nothing in another process, and two owners of one
        # fd would close it twice.
        return (_unowned_truncated, (self.results, self.index))

    def __copy__(self) -> ControlTruncatedError:
        return _unowned_truncated(self.results, self.index)

    def __deepcopy__(self, memo: Any) -> ControlTruncatedError:
        return _unowned_truncated(copy.deepcopy(self.results, memo), self.index)


def _unowned_truncated(results: Sequence[Received], index: int) -> ControlTruncatedError:
    return ControlTruncatedError(results, index, owns=False)


class FdPassingUnsupportedError(OSError):
    """Descriptors given to a socket whose family cannot carry them.

    On ``AF_INET``/``AF_INET6`` the kernel's generic ``SOL_SOCKET`` handler
    accepts an ``SCM_RIGHTS`` message and silently drops it: the data would
    arrive without the fds.  rawsys refuses before sending (``EOPNOTSUPP``).
    """


class PidfdUnsupportedError(OSError):
    """The kernel lacks ``SO_PASSPIDFD``/``SO_PEERPIDFD``/``SCM_PIDFD`` (before 6.5)."""


__all__ = [
    "ControlTruncatedError",
    "FdPassingUnsupportedError",
    "PidfdUnsupportedError",
    "Received",
]
