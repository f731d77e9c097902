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

``walk_control(data, used)`` is the one walk of a control buffer that every
reader uses; ``received_fds(data, used)`` and ``fds_in(data)`` are its
lenient fd collectors (cleanup paths, receivers): every descriptor number in
every ``SCM_RIGHTS``/``SCM_PIDFD`` header that lies inside the buffer, without
ever raising on malformed data.
"""

from __future__ import annotations

import array
import operator
import struct
from ctypes import sizeof
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple, Union

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
_unpack_hdr = CMSGHDR.unpack_from
_unpack_int = _INT.unpack_from
_LEN_RIGHTS1 = HDR_SIZE + 4  # CMSG_LEN(sizeof(int))
_SPACE_RIGHTS1 = HDR_SIZE + 8  # CMSG_SPACE(sizeof(int))
# The header of an SCM_RIGHTS message with one fd: what almost every reply holds.
RIGHTS1_HEADER = CMSGHDR.pack(_LEN_RIGHTS1, SOL_SOCKET, SCM_RIGHTS)


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


def walk_control(data: Any, used: int | None = None, *, strict: bool = False
                 ) -> List[Tuple[int, int, int, int]]:
    """``(level, type, start, stop)`` of every control message in ``data[:used]``.

    The one walk of a control buffer, as ``CMSG_FIRSTHDR``/``CMSG_NXTHDR``
    do it: ``data[start:stop]`` is each message's payload.  Every reader of
    control data uses it -- ``parse_control``, ``fds_in``, ``received_fds``
    and through them the receiving functions and their cleanup paths -- and
    decides for itself what to keep and what to close.

    *used* (default: all of *data*) is ``msg_controllen`` after ``recvmsg``.
    Fewer trailing bytes than a header are padding.  With *strict*, a header
    whose ``cmsg_len`` is smaller than a header or runs past *used* raises
    ``ControlDataError``; without it (cleanup: never raise) the walk stops at
    the first such header, and a payload running past the end is cut there.
    """
    view = data if type(data) is bytearray or type(data) is bytes else memoryview(data).cast("B")
    end = len(view) if used is None else min(used, len(view))
    found: List[Tuple[int, int, int, int]] = []
    offset = 0
    while end - offset >= HDR_SIZE:
        cmsg_len, level, ctype = _unpack_hdr(view, offset)
        if cmsg_len < HDR_SIZE:
            if strict:
                raise ControlDataError(
                    f"cmsg_len {cmsg_len} at offset {offset} is smaller than a header "
                    f"({HDR_SIZE})")
            break
        if cmsg_len > end - offset:
            if strict:
                raise ControlDataError(
                    f"cmsg_len {cmsg_len} at offset {offset} runs past the end of the "
                    f"{end}-byte buffer")
            found.append((level, ctype, offset + HDR_SIZE, end))
            break
        found.append((level, ctype, offset + HDR_SIZE, offset + cmsg_len))
        offset += _align(cmsg_len)
    return found


def parse_control(data: bytes | bytearray | memoryview) -> List[ControlMessage]:
    """Decode every control message in *data* (the first ``msg_controllen`` bytes).

    Raises ``ControlDataError`` for a header that no kernel writes (see the
    module docstring) and ``TypeError`` if *data* is not a bytes-like object.
    Never reads outside *data*; never closes a descriptor.
    """
    buf = bytes(memoryview(data).cast("B"))
    return [_decode(level, ctype, buf[start:stop])
            for level, ctype, start, stop in walk_control(buf, strict=True)]


def received_fds(data: Any, used: int | None = None) -> Tuple[List[int], List[int]]:
    """``(rights, pidfds)``: the fds of every ``SCM_RIGHTS`` and ``SCM_PIDFD`` in ``data[:used]``.

    What a receiver owns after ``recvmsg``, from the lenient walk (never
    raises on malformed data).  A negative ``SCM_PIDFD`` value is the
    kernel's ``-errno`` for a pidfd it could not install (``-EMFILE``): not
    an fd, so it is left out; so is any negative ``SCM_RIGHTS`` value.
    """
    if (type(data) is bytearray and used is not None and _LEN_RIGHTS1 <= used <= _SPACE_RIGHTS1
            and data.startswith(RIGHTS1_HEADER)):
        fd = _unpack_int(data, HDR_SIZE)[0]  # the usual reply: one SCM_RIGHTS with one fd
        return ([fd] if fd >= 0 else []), []
    view = data if type(data) is bytearray or type(data) is bytes else memoryview(data).cast("B")
    rights: List[int] = []
    pidfds: List[int] = []
    for level, ctype, start, stop in walk_control(view, used):
        if level != SOL_SOCKET:
            continue
        count = (stop - start) >> 2
        if ctype == SCM_RIGHTS and count:
            rights.extend(fd for fd in _ints(count).unpack_from(view, start) if fd >= 0)
        elif ctype == SCM_PIDFD and count:
            fd = _unpack_int(view, start)[0]
            if fd >= 0:
                pidfds.append(fd)
    return rights, pidfds


def fds_in(data: bytes | bytearray | memoryview) -> List[int]:
    """Every fd number carried by ``SCM_RIGHTS`` and ``SCM_PIDFD`` headers in *data*.

    Lenient by design (it serves cleanup after errors): the walk stops at the
    first malformed header instead of raising, and a header running past the
    buffer contributes only the whole ints that lie inside it.  Negative
    numbers (a pidfd the kernel failed to install: ``-errno``) are not fds
    and are left out.
    """
    rights, pidfds = received_fds(data)
    return rights + pidfds


_INTS: Dict[int, struct.Struct] = {}


def _ints(count: int) -> struct.Struct:
    """``struct.Struct`` for *count* native ints (cached)."""
    s = _INTS.get(count)
    if s is None:
        s = _INTS[count] = struct.Struct(f"={count}i")
    return s


def _c_int(value: Any, what: str, low: int = -(2**31), high: int = 2**31 - 1) -> int:
    """*value* as an int in [low, high]: ``TypeError``/``OverflowError`` naming *what*."""
    number = operator.index(value)  # CPython's TypeError for a non-integer
    if not low <= number <= high:
        raise OverflowError(f"{what} must be in {low}..{high}, not {number}")
    return number


def rights_payload(fds: Any) -> bytes:
    """The ``SCM_RIGHTS`` payload for *fds*, converted exactly as CPython's ``array("i", fds)``.

    Same values and same errors as ``socket.send_fds``: ints (or ``__index__``)
    in C ``int`` range, ``TypeError``/``OverflowError`` otherwise; a bytes or
    bytearray is raw native ints (4 bytes an fd, ``ValueError`` when its
    length is not a multiple of 4).
    """
    return array.array("i", fds).tobytes()


def build_control(messages: List[ControlMessage]) -> bytes:
    """Encode *messages* as a control buffer (each padded to ``CMSG_SPACE``).

    The inverse of ``parse_control`` for well-formed messages; used to build
    ``msg_control`` for ``sendmsg`` and in tests.  Every field is checked
    first: ``TypeError`` for a non-integer, ``OverflowError`` naming the
    field for one out of its C type's range (``uid_t``, ``int``, ...).
    """
    out = bytearray()
    for message in messages:
        if isinstance(message, ScmRights):
            level, ctype = SOL_SOCKET, SCM_RIGHTS
            payload = rights_payload(message.fds)
        elif isinstance(message, ScmCredentials):
            level, ctype = SOL_SOCKET, SCM_CREDENTIALS
            payload = _UCRED.pack(_c_int(message.pid, "ScmCredentials.pid"),
                                  _c_int(message.uid, "ScmCredentials.uid", 0, 2**32 - 1),
                                  _c_int(message.gid, "ScmCredentials.gid", 0, 2**32 - 1))
        elif isinstance(message, ScmPidfd):
            level, ctype = SOL_SOCKET, SCM_PIDFD
            payload = _INT.pack(_c_int(message.fd, "ScmPidfd.fd"))
        elif isinstance(message, IpTtl):
            level, ctype = IPPROTO_IP, IP_TTL
            payload = _INT.pack(_c_int(message.ttl, "IpTtl.ttl"))
        elif isinstance(message, (UnknownControl, TruncatedControl)):
            level = _c_int(message.level, f"{type(message).__name__}.level")
            ctype = _c_int(message.type, f"{type(message).__name__}.type")
            payload = bytes(memoryview(message.data).cast("B"))
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
    "walk_control",
    "received_fds",
    "fds_in",
    "RIGHTS1_HEADER",
    "build_control",
    "rights_payload",
]
