"""The ``CMSG_*`` macros of <sys/socket.h>, as functions with the same names.

``CMSG_ALIGN``/``CMSG_LEN``/``CMSG_SPACE`` take and return ints and reject
out-of-range lengths exactly as ``socket.CMSG_LEN``/``socket.CMSG_SPACE`` do.
``CMSG_FIRSTHDR``/``CMSG_NXTHDR`` return ``POINTER(cmsghdr)``, or ``None``
where C returns NULL.  ``CMSG_NXTHDR`` follows glibc's rules since BZ #28846
(glibc 2.37, backported to Debian 12's 2.36): a header whose ``cmsg_len`` is
smaller than a header, or which leaves no room for a whole next header before
the end of the control buffer, ends the walk.  Before reading ``cmsg_len`` it
also checks that the header lies inside the control buffer, where C would
read out of bounds.
"""

from __future__ import annotations

import ctypes
import operator
import struct
import sys
from ctypes import POINTER, c_size_t, c_ubyte, sizeof
from typing import Any, Union

from rawsys.c.buffers import _CArgObject
from rawsys.c.structs import cmsghdr, msghdr

_SIZE_T_BYTES = sizeof(c_size_t)
_SIZE_T_MASK = (1 << (8 * _SIZE_T_BYTES)) - 1
_HDR = sizeof(cmsghdr)
# CPython rejects lengths whose result would not fit a socklen_t it treats as
# a C int (Modules/socketmodule.c, SOCKLEN_T_LIMIT); rawsys matches it.
_SOCKLEN_T_LIMIT = (1 << 31) - 1
# Python 3.9's argument parser refuses a float with a message of its own before
# it asks for __index__ (Python/getargs.c, float_argument_error; gone in 3.10).
_FLOAT_HAS_OWN_ERROR = sys.version_info < (3, 10)

# Pointers made from an address without ctypes.cast (a foreign call, ~0.7 us):
# a pointer copied from the address's bytes points at the same place; like a
# cast from a temporary c_void_p it owns no memory and keeps nothing alive
# (the owner reference is set by the callers below).
_ADDRESS = struct.Struct("@P")
_pack_address = _ADDRESS.pack
_unpack_address = _ADDRESS.unpack_from
_CMSGHDR_P = POINTER(cmsghdr)
_UBYTE_P = POINTER(c_ubyte)

MsgArg = Union[msghdr, "ctypes._Pointer[msghdr]", Any]
CmsgArg = Union[cmsghdr, "ctypes._Pointer[cmsghdr]", Any]


def CMSG_ALIGN(length: int) -> int:
    """Round *length* up to a multiple of ``sizeof(size_t)``."""
    n = operator.index(length)
    return ((n + _SIZE_T_BYTES - 1) & ~(_SIZE_T_BYTES - 1)) & _SIZE_T_MASK


_HDR_SPACE = CMSG_ALIGN(_HDR)


def _length_arg(length: int, limit: int, name: str) -> int:
    if _FLOAT_HAS_OWN_ERROR and isinstance(length, float):
        raise TypeError("integer argument expected, got float")
    n = operator.index(length)
    if n > 2**63 - 1 or n < -(2**63):
        raise OverflowError("Python int too large to convert to C ssize_t")
    if n < 0 or n > limit:
        raise OverflowError(f"{name}() argument out of range")
    return n


def CMSG_LEN(length: int) -> int:
    """``cmsg_len`` for *length* bytes of data: header plus data, no tail padding."""
    n = _length_arg(length, _SOCKLEN_T_LIMIT - _HDR_SPACE, "CMSG_LEN")
    return _HDR_SPACE + n


def CMSG_SPACE(length: int) -> int:
    """Bytes a control message with *length* bytes of data takes in a buffer."""
    n = _length_arg(length, _SOCKLEN_T_LIMIT - (CMSG_ALIGN(1) + _HDR_SPACE), "CMSG_SPACE")
    return CMSG_ALIGN(n) + _HDR_SPACE


def _msghdr_of(msg: MsgArg) -> msghdr:
    if isinstance(msg, msghdr):
        return msg
    if isinstance(msg, ctypes._Pointer) and msg._type_ is msghdr:
        if not msg:
            raise ValueError("NULL msghdr pointer")
        return msg.contents
    target = getattr(msg, "_obj", None)  # byref(msg)
    if isinstance(target, msghdr):
        return target
    raise TypeError(
        f"expected a msghdr, a pointer to one or byref(msghdr), not {type(msg).__name__}"
    )


def _cmsg_address(cmsg: CmsgArg) -> int:
    if type(cmsg) is _CArgObject:  # byref(cmsg), the C idiom's &cmsg: checked first
        target = getattr(cmsg, "_obj", None)
        if isinstance(target, cmsghdr):
            return ctypes.addressof(target)
    if isinstance(cmsg, cmsghdr):
        return ctypes.addressof(cmsg)
    if isinstance(cmsg, ctypes._Pointer) and cmsg._type_ is cmsghdr:
        address: int = _unpack_address(cmsg)[0]  # the pointer's value
        if not address:
            raise ValueError("NULL cmsghdr pointer")
        return address
    target = getattr(cmsg, "_obj", None)
    if isinstance(target, cmsghdr):
        return ctypes.addressof(target)
    raise TypeError(f"expected a cmsghdr or a pointer to one, not {type(cmsg).__name__}")


def _header_at(address: int, owner: object) -> ctypes._Pointer[cmsghdr]:
    pointer = _CMSGHDR_P.from_buffer_copy(_pack_address(address))
    # The pointer keeps the msghdr (and through it the control buffer) alive.
    pointer.__dict__["_rawsys_owner"] = owner
    return pointer


def CMSG_FIRSTHDR(msg: MsgArg) -> ctypes._Pointer[cmsghdr] | None:
    """The first header of the control buffer, or ``None`` if it cannot hold one."""
    m = _msghdr_of(msg)
    if m.msg_controllen < _HDR or not m.msg_control:
        return None
    return _header_at(m.msg_control, m)


def CMSG_NXTHDR(msg: MsgArg, cmsg: CmsgArg) -> ctypes._Pointer[cmsghdr] | None:
    """The header after *cmsg*, or ``None`` at the end of the buffer (glibc 2.37 rules)."""
    m = _msghdr_of(msg)
    control = m.msg_control or 0
    controllen = m.msg_controllen
    here = _cmsg_address(cmsg)
    if not (control <= here and here + _HDR <= control + controllen):
        # Outside the buffer C would read cmsg_len out of bounds; no header follows.
        return None
    cmsg_len = cmsghdr.from_address(here).cmsg_len
    if cmsg_len < _HDR:
        return None
    padding = (_SIZE_T_BYTES - (cmsg_len & (_SIZE_T_BYTES - 1))) & (_SIZE_T_BYTES - 1)
    size_needed = _HDR + padding
    remaining = (control + controllen - here) & _SIZE_T_MASK
    if remaining < size_needed or ((remaining - size_needed) & _SIZE_T_MASK) < cmsg_len:
        return None
    return _header_at((here + CMSG_ALIGN(cmsg_len)) & _SIZE_T_MASK, m)


def CMSG_DATA(cmsg: CmsgArg) -> ctypes._Pointer[c_ubyte]:
    """``unsigned char *`` to the data after the header."""
    pointer = _UBYTE_P.from_buffer_copy(_pack_address(_cmsg_address(cmsg) + _HDR))
    pointer.__dict__["_rawsys_owner"] = cmsg
    return pointer


__all__ = ["CMSG_ALIGN", "CMSG_LEN", "CMSG_SPACE", "CMSG_FIRSTHDR", "CMSG_NXTHDR", "CMSG_DATA"]
