"""Turning Python buffers into C pointers, with the size checks C leaves out.

glibc's fortified ``recv`` (``__recv_chk``) aborts when asked to read more
bytes than the destination holds.  Here the same mistake raises
``BufferOverflowDetected`` before any call, wherever the size of the Python
object is known: ``bytes``, ``bytearray``, ``memoryview``, ``array.array``,
``mmap`` and ctypes instances (arrays, structures, ``byref`` of them).  A bare
ctypes pointer (e.g. ``CMSG_DATA(cmsg)``) has no known size: it is passed as
C would pass it, and the caller answers for its bounds, as in C.
"""

from __future__ import annotations

import ctypes
import typing
from ctypes import _Pointer, _SimpleCData, addressof, c_char, c_char_p, c_void_p, sizeof
from typing import Any, Tuple

Buffer = Any  # anything with the buffer protocol, or a ctypes instance / byref / pointer

_CArgObject: type = type(ctypes.byref(ctypes.c_int()))
_SIZE_MAX = 2 ** (8 * sizeof(ctypes.c_size_t)) - 1


class BufferOverflowDetected(ValueError):
    """A length larger than the Python buffer it describes (cf. ``__recv_chk``)."""


def _byref_offset(ref: Any) -> int:
    """The offset given to ``byref(obj, offset)``, read from the object's repr."""
    text = repr(ref)  # "<cparam 'P' (0x7f...)>"; the address includes the offset
    start = text.rfind("(0x")
    if start < 0:
        return 0
    return int(text[start + 1 : text.index(")", start)], 16) - addressof(ref._obj)


def _check_len(nbytes: int | None, size: int | None, what: str) -> int:
    if nbytes is None:
        if size is None:
            raise TypeError(f"a length is required with {what}, whose size is unknown")
        return size
    if not isinstance(nbytes, int):
        raise TypeError(f"length must be an int, not {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"negative length {nbytes}")
    if nbytes > _SIZE_MAX:
        raise OverflowError(f"length {nbytes} does not fit a size_t")
    if size is not None and nbytes > size:
        raise BufferOverflowDetected(
            f"buffer overflow detected: length {nbytes} > size {size} of the {what}"
        )
    return nbytes


def buffer_pointer(
    buf: Buffer, nbytes: int | None = None, *, writable: bool = False
) -> Tuple[int | None, int, object]:
    """Return ``(address, length, keep)`` for *buf*, refusing a length past its end.

    The caller holds *keep* while the address is in use: for a resizable
    buffer (``bytearray``) it is a ctypes view holding a buffer export, which
    also forbids resizing the buffer while the view lives.  With
    ``writable=True`` a read-only buffer (``bytes``) raises ``TypeError``:
    the kernel would write into memory Python believes immutable.
    """
    if buf is None:
        return None, _check_len(nbytes, 0, "NULL buffer"), None
    if isinstance(buf, (ctypes.Structure, ctypes.Union, ctypes.Array)) or (
        isinstance(buf, _SimpleCData) and not isinstance(buf, (c_void_p, c_char_p))
    ):
        return addressof(buf), _check_len(nbytes, sizeof(buf), type(buf).__name__), buf
    if isinstance(buf, _CArgObject):
        target: Any = typing.cast(Any, buf)._obj
        offset = _byref_offset(buf)
        size = max(sizeof(target) - offset, 0)
        return addressof(target) + offset, _check_len(nbytes, size, "byref() target"), target
    if isinstance(buf, (_Pointer, c_void_p)):
        address = ctypes.cast(buf, c_void_p).value
        return address, _check_len(nbytes, None, "bare pointer"), buf
    if isinstance(buf, (int, str)) and not isinstance(buf, bool):
        raise TypeError(
            f"{type(buf).__name__} is not a buffer; wrap a raw address in c_void_p() "
            "to pass it unchecked, as C would"
        )
    if isinstance(buf, bytes):
        if writable:
            raise TypeError("bytes is read-only; pass a bytearray or a ctypes buffer")
        address = ctypes.cast(c_char_p(buf), c_void_p).value
        return address, _check_len(nbytes, len(buf), "bytes object"), buf
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"{type(buf).__name__} is not a buffer") from None
    with view:
        if not view.contiguous:
            raise TypeError("buffer is not contiguous")
        size = view.nbytes
        if view.readonly:
            if writable:
                raise TypeError(f"{type(buf).__name__} is read-only")
            raise TypeError(
                f"read-only {type(buf).__name__} cannot be pointed at without a copy; "
                "pass bytes or a bytearray"
            )
    length = _check_len(nbytes, size, type(buf).__name__)
    if size == 0:
        return None, length, buf
    view_array = (c_char * size).from_buffer(buf)
    return addressof(view_array), length, view_array


__all__ = ["Buffer", "BufferOverflowDetected", "buffer_pointer"]
