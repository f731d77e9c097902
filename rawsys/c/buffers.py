"""Turning Python buffers into C pointers, with the checks C leaves out.

glibc's fortified ``recv`` (``__recv_chk``) aborts when asked to read more
bytes than the destination holds.  Here the same mistake raises
``BufferOverflowDetected`` before any call, and every pointer is bounded by
the object it points into:

* ``bytes``, ``bytearray``, ``memoryview``, ``array.array``, ``mmap`` and
  ctypes instances: their own size;
* ``byref(obj, offset)``: what follows the offset inside *obj*'s memory; a
  negative offset (memory before the object) raises ``ValueError``;
* ``pointer(obj)``, ``cast(obj, ...)``, ``CMSG_DATA(cmsg)``: the live object
  ctypes keeps for them (``obj``, the control buffer), to its end;
* ``c_char_p``: the string it points at, as in C (``send(fd,
  c_char_p(b"hello world!"), 8, 0)`` sends ``b"hello wo"``); it is never
  written into (``TypeError``).

Read-only buffers (``bytes``, read-only ``memoryview``) are refused where the
kernel would write (``TypeError``).  A pointer into memory no live object
holds -- ``c_void_p(address)``, memory of a collected object, a
``from_address`` instance -- raises ``UnknownMemory``, which the libc calls
turn into ``-1`` with ``errno`` ``EFAULT`` (see ``rawsys.c.memory``).
"""

from __future__ import annotations

import ctypes
import typing
from ctypes import _Pointer, _SimpleCData, addressof, c_char, c_char_p, c_void_p, c_wchar_p, sizeof
from typing import Any, NamedTuple, Tuple

from rawsys.c.memory import (
    BufferOverflowDetected,
    KnownMemory,
    UnknownMemory,
    bytes_address,
    memory_root,
)

Buffer = Any  # anything with the buffer protocol, or a ctypes instance / byref / pointer

_CArgObject: type = type(ctypes.byref(ctypes.c_int()))
_SIZE_MAX = 2 ** (8 * sizeof(ctypes.c_size_t)) - 1


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


class Extent(NamedTuple):
    """Where a buffer argument points, how many bytes follow, and who holds them."""

    address: int | None  # None: NULL
    capacity: int  # bytes from address to the end of the memory that holds it
    writable: bool
    keep: object  # hold while the address is in use (pins a bytearray's size)
    what: str  # for messages


def _ctypes_extent(obj: Any, address: int, what: str, capacity: int | None = None,
                   keep: object = None) -> Extent:
    """The memory of the ctypes instance *obj* from *address* on, if it is vouched for.

    *capacity* defaults to the bytes left in the object owning the memory.
    """
    root = memory_root(obj)
    start = addressof(root)
    end = start + sizeof(root)
    if not start <= address <= end:
        raise UnknownMemory(f"{what} points outside its object")
    if not root._b_needsfree_:
        # A from_buffer() view is its exporter's memory; a from_address() one
        # is nobody's: accept it only if something the library knows holds it.
        found = KnownMemory(root).find(address, 0)
        if found is None or found[3] is not root:
            raise UnknownMemory(f"{what} is a from_address() object: memory no object holds")
    return Extent(address, end - address if capacity is None else capacity, True,
                  obj if keep is None else keep, what)


def _pointer_extent(ptr: Any, what: str, writable: bool = True) -> Extent:
    """A bare pointer (``pointer()``, ``cast()``, ``c_void_p``, ``CMSG_DATA``)."""
    address = ctypes.cast(ptr, c_void_p).value
    if not address:
        return Extent(None, 0, False, None, "NULL pointer")
    found = KnownMemory(ptr).find(address, 0)
    if found is None:
        raise UnknownMemory(f"{what} points at {address:#x}, memory no live object holds")
    start, end, known_writable, holder = found
    return Extent(address, end - address, writable and known_writable, (ptr, holder), what)


_AGGREGATES = (ctypes.Structure, ctypes.Union, ctypes.Array)


def buffer_extent(buf: Buffer) -> Extent:
    """Resolve a buffer argument to the memory it points at (see the module docstring)."""
    if isinstance(buf, _AGGREGATES):
        if buf._b_base_ is None and buf._b_needsfree_:  # owns its memory: the usual case
            return Extent(addressof(buf), sizeof(buf), True, buf, type(buf).__name__)
        # a field or an item: its own size
        return _ctypes_extent(buf, addressof(buf), type(buf).__name__, sizeof(buf))
    if buf is None:
        return Extent(None, 0, False, None, "NULL buffer")
    if type(buf) is bytes:
        return Extent(bytes_address(buf), len(buf), False, buf, "bytes object")
    if isinstance(buf, c_char_p):
        data: Any = buf._objects
        if type(data) is bytes:  # c_char_p(b"..."): the bytes object it holds
            return Extent(bytes_address(data), len(data) + 1, False, buf, "c_char_p string")
        return _pointer_extent(buf, "c_char_p string", writable=False)
    if isinstance(buf, c_wchar_p):
        raise TypeError("c_wchar_p is a wide-character string, not a byte buffer")
    if isinstance(buf, _SimpleCData) and not isinstance(buf, c_void_p):
        return _ctypes_extent(buf, addressof(buf), type(buf).__name__, sizeof(buf))
    if isinstance(buf, _CArgObject):
        target: Any = typing.cast(Any, buf)._obj
        offset = _byref_offset(buf)
        if offset < 0:
            raise ValueError(f"byref() offset {offset} is negative: it points before the "
                             f"{type(target).__name__}")
        if isinstance(target, c_char_p):
            raise TypeError("byref(c_char_p) is a char **, not a buffer")
        # C's object size: what follows in the object owning the memory
        # (&vec[1] reaches the end of vec), none past it.
        return _ctypes_extent(target, addressof(target) + min(offset, sizeof(target)),
                              "byref() target", keep=target)
    if isinstance(buf, (_Pointer, c_void_p)):
        return _pointer_extent(buf, "pointer")
    if isinstance(buf, (int, str)) and not isinstance(buf, bool):
        raise TypeError(
            f"{type(buf).__name__} is not a buffer; pass the object (or byref/pointer/cast "
            "of it) so rawsys can check its bounds"
        )
    if isinstance(buf, bytes):
        return Extent(bytes_address(buf), len(buf), False, buf, "bytes object")
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"{type(buf).__name__} is not a buffer") from None
    name = type(buf).__name__
    with view:
        if not view.contiguous:
            raise TypeError("buffer is not contiguous")
        size = view.nbytes
        if view.readonly:
            raise TypeError(
                f"read-only {name} cannot be pointed at without a copy; "
                "pass bytes or a bytearray"
            )
    if size == 0:
        return Extent(None, 0, True, buf, name)
    view_array = (c_char * size).from_buffer(buf)
    return Extent(addressof(view_array), size, True, view_array, name)


def buffer_pointer(
    buf: Buffer, nbytes: int | None = None, *, writable: bool = False
) -> Tuple[int | None, int, object]:
    """Return ``(address, length, keep)`` for *buf*, refusing a length past its end.

    The caller holds *keep* while the address is in use: for a resizable
    buffer (``bytearray``) it is a ctypes view holding a buffer export, which
    also forbids resizing the buffer while the view lives.  With
    ``writable=True`` a read-only buffer (``bytes``, ``c_char_p``) raises
    ``TypeError``: the kernel would write into memory Python believes
    immutable.  Memory no live object holds raises ``UnknownMemory``.
    """
    if nbytes is not None:
        _check_len(nbytes, None, "buffer")  # its type and range, before the buffer
    if writable and isinstance(buf, c_char_p):
        raise TypeError("c_char_p points at an immutable string; pass a bytearray or "
                        "create_string_buffer()")
    extent = buffer_extent(buf)
    if writable and not extent.writable and extent.address is not None:
        raise TypeError(f"{extent.what} is read-only; pass a bytearray or a ctypes buffer")
    length = _check_len(nbytes, extent.capacity, extent.what)
    if length and extent.address is None and extent.what.startswith("NULL"):
        raise BufferOverflowDetected(
            f"buffer overflow detected: length {length} > size 0 of the {extent.what}")
    return extent.address, length, extent.keep


def memmove(dest: Buffer, src: Buffer, count: int) -> int:
    """``void *memmove(void *dest, const void *src, size_t count);`` bounds-checked.

    *count* past the end of either buffer raises ``BufferOverflowDetected``, a
    read-only *dest* ``TypeError``, memory no live object holds
    ``UnknownMemory``; nothing is copied then.  Returns *dest*'s address, as
    ``ctypes.memmove`` does.
    """
    dest_address, length, _dest_keep = buffer_pointer(dest, count, writable=True)
    src_address, _length, _src_keep = buffer_pointer(src, count)
    if not length:
        return dest_address or 0
    return int(ctypes.memmove(typing.cast(int, dest_address), typing.cast(int, src_address),
                              length))


memcpy = memmove  # C's memcpy for non-overlapping copies; memmove is a superset


def memset(dest: Buffer, c: int, count: int) -> int:
    """``void *memset(void *dest, int c, size_t count);`` bounds-checked as ``memmove``."""
    if isinstance(c, bool) or not isinstance(c, int):
        raise TypeError(f"c must be an int, not {type(c).__name__}")
    dest_address, length, _keep = buffer_pointer(dest, count, writable=True)
    if not length:
        return dest_address or 0
    return int(ctypes.memset(typing.cast(int, dest_address), c, length))


__all__ = ["Buffer", "BufferOverflowDetected", "Extent", "UnknownMemory", "buffer_extent",
           "buffer_pointer", "memcpy", "memmove", "memset"]
