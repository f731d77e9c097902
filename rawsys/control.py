"""Typed parsing of control data: the ``msg_control`` bytes ``recvmsg`` fills in.

``parse_control(data)`` walks the headers the way ``CMSG_FIRSTHDR`` /
``CMSG_NXTHDR`` do and returns one dataclass per control message.  It is a
pure function over bytes: no socket, no system call, and it never closes or
otherwise touches the descriptors whose numbers it reads (ownership of those
stays with whoever received them; ``rawsys.fds`` is the owner at socket
level).

Errors (all ``ControlDataError``, a ``ValueError``):

* a header whose ``cmsg_len`` is smaller than ``sizeof(struct cmsghdr)``;
* a header whose ``cmsg_len`` runs past the end of the buffer.

Everything else is returned, never raised: fewer trailing bytes than a header
are alignment padding and ignored (as glibc's ``CMSG_NXTHDR`` does); a known
message whose payload is too short for its type -- what the kernel's
``put_cmsg`` leaves when it truncates under ``MSG_CTRUNC`` -- comes back as
``TruncatedControl``; unknown levels/types come back as ``UnknownControl``.
Bytes of an ``SCM_RIGHTS`` payload that do not make a whole ``int`` are
ignored, as CPython's ``recv_fds`` ignores them.

``fds_in(data)`` is the lenient companion used for cleanup: every descriptor
number in every ``SCM_RIGHTS``/``SCM_PIDFD`` header that lies inside the
buffer, without ever raising on malformed data.
"""

from __future__ import annotations

import struct
from ctypes import sizeof
from dataclasses import dataclass
from typing import List, Tuple, Union

from rawsys.c.constants import (
    IP_TTL,
    IPPROTO_IP,
    SCM_CREDENTIALS,
    SCM_PIDFD,
    SCM_RIGHTS,
    SOL_SOCKET,
)
from rawsys.c.structs import cmsghdr, ucred

# struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } on LP64.
CMSGHDR = struct.Struct("=Qii")
HDR_SIZE = CMSGHDR.size
_ALIGN = 8  # CMSG_ALIGN rounds to sizeof(size_t)
_UCRED = struct.Struct("=iII")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
if CMSGHDR.size != sizeof(cmsghdr) or _UCRED.size != sizeof(ucred):  # pragma: no cover
    raise ImportError("struct formats disagree with rawsys.c.structs")
_INT = struct.Struct("=i")


class ControlDataError(ValueError):
    """Control data that no kernel writes: a header too short or running past the buffer."""


@dataclass(frozen=True)
class ScmRights:
    """``SOL_SOCKET``/``SCM_RIGHTS``: descriptor numbers, in the receiver's table."""

    fds: Tuple[int, ...]


@dataclass(frozen=True)
class ScmCredentials:
    """``SOL_SOCKET``/``SCM_CREDENTIALS``: a ``struct ucred``."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class ScmPidfd:
    """``SOL_SOCKET``/``SCM_PIDFD`` (Linux 6.5+): a pidfd for the sending process."""

    fd: int


@dataclass(frozen=True)
class IpTtl:
    """``IPPROTO_IP``/``IP_TTL``: the TTL of a received IPv4 datagram (``IP_RECVTTL``)."""

    ttl: int


@dataclass(frozen=True)
class UnknownControl:
    """A control message of a level/type this parser does not decode."""

    level: int
    type: int
    data: bytes


@dataclass(frozen=True)
class TruncatedControl:
    """A known control message whose payload is shorter than its type needs.

    The kernel writes these when the control buffer ran out (``MSG_CTRUNC``).
    """

    level: int
    type: int
    data: bytes


ControlMessage = Union[ScmRights, ScmCredentials, ScmPidfd, IpTtl, UnknownControl, TruncatedControl]


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def _decode(level: int, ctype: int, payload: bytes) -> ControlMessage:
    if level == SOL_SOCKET:
        if ctype == SCM_RIGHTS:
            count = len(payload) // 4
            return ScmRights(struct.unpack_from(f"={count}i", payload) if count else ())
        if ctype == SCM_CREDENTIALS:
            if len(payload) < _UCRED.size:
                return TruncatedControl(level, ctype, payload)
            pid, uid, gid = _UCRED.unpack_from(payload)
            return ScmCredentials(pid, uid, gid)
        if ctype == SCM_PIDFD:
            if len(payload) < 4:
                return TruncatedControl(level, ctype, payload)
            return ScmPidfd(_INT.unpack_from(payload)[0])
    elif level == IPPROTO_IP and ctype == IP_TTL:
        if len(payload) < 4:
            return TruncatedControl(level, ctype, payload)
        return IpTtl(_INT.unpack_from(payload)[0])
    return UnknownControl(level, ctype, payload)


def parse_control(data: bytes | bytearray | memoryview) -> List[ControlMessage]:
    """Decode every control message in *data* (the first ``msg_controllen`` bytes).

    Raises ``ControlDataError`` for a header that no kernel writes (see the
    module docstring) and ``TypeError`` if *data* is not a bytes-like object.
    Never reads outside *data*; never closes a descriptor.
    """
    buf = bytes(memoryview(data).cast("B"))
    end = len(buf)
    offset = 0
    messages: List[ControlMessage] = []
    while end - offset >= HDR_SIZE:
        cmsg_len, level, ctype = CMSGHDR.unpack_from(buf, offset)
        if cmsg_len < HDR_SIZE:
            raise ControlDataError(
                f"cmsg_len {cmsg_len} at offset {offset} is smaller than a header ({HDR_SIZE})"
            )
        if cmsg_len > end - offset:
            raise ControlDataError(
                f"cmsg_len {cmsg_len} at offset {offset} runs past the end of the "
                f"{end}-byte buffer"
            )
        messages.append(_decode(level, ctype, buf[offset + HDR_SIZE : offset + cmsg_len]))
        offset += _align(cmsg_len)
    return messages


def fds_in(data: bytes | bytearray | memoryview) -> List[int]:
    """Every fd number carried by ``SCM_RIGHTS`` and ``SCM_PIDFD`` headers in *data*.

    Lenient by design (it serves cleanup after errors): the walk stops at the
    first malformed header instead of raising, and a header running past the
    buffer contributes only the whole ints that lie inside it.
    """
    view = memoryview(data).cast("B")
    end = len(view)
    offset = 0
    found: List[int] = []
    while end - offset >= HDR_SIZE:
        cmsg_len, level, ctype = CMSGHDR.unpack_from(view, offset)
        if cmsg_len < HDR_SIZE:
            break
        stop = min(offset + cmsg_len, end)
        if level == SOL_SOCKET and ctype in (SCM_RIGHTS, SCM_PIDFD):
            count = (stop - offset - HDR_SIZE) // 4
            if ctype == SCM_PIDFD:
                count = min(count, 1)
            found.extend(struct.unpack_from(f"={count}i", view, offset + HDR_SIZE))
        offset += _align(cmsg_len)
    return found


def build_control(messages: List[ControlMessage]) -> bytes:
    """Encode *messages* as a control buffer (each padded to ``CMSG_SPACE``).

    The inverse of ``parse_control`` for well-formed messages; used to build
    ``msg_control`` for ``sendmsg`` and in tests.
    """
    out = bytearray()
    for message in messages:
        if isinstance(message, ScmRights):
            level, ctype = SOL_SOCKET, SCM_RIGHTS
            payload = struct.pack(f"={len(message.fds)}i", *message.fds)
        elif isinstance(message, ScmCredentials):
            level, ctype = SOL_SOCKET, SCM_CREDENTIALS
            payload = _UCRED.pack(message.pid, message.uid, message.gid)
        elif isinstance(message, ScmPidfd):
            level, ctype, payload = SOL_SOCKET, SCM_PIDFD, _INT.pack(message.fd)
        elif isinstance(message, IpTtl):
            level, ctype, payload = IPPROTO_IP, IP_TTL, _INT.pack(message.ttl)
        elif isinstance(message, (UnknownControl, TruncatedControl)):
            level, ctype, payload = message.level, message.type, bytes(message.data)
        else:
            raise TypeError(f"not a control message: {type(message).__name__}")
        length = HDR_SIZE + len(payload)
        out += CMSGHDR.pack(length, level, ctype) + payload
        out += bytes(_align(length) - length)
    return bytes(out)

__all__ = [
    "ControlDataError",
    "ControlMessage",
    "ScmRights",
    "ScmCredentials",
    "ScmPidfd",
    "IpTtl",
    "UnknownControl",
    "TruncatedControl",
    "parse_control",
    "fds_in",
    "build_control",
]
