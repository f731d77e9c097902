"""The structures of <sys/socket.h>, <sys/un.h>, <netinet/in.h> and <time.h>.

Field names and types are C's.  Layouts are those of 64-bit Linux (x86-64
and aarch64, LP64 with glibc); the test-suite checks every size and offset
against a C program compiled at test time.  Pointer fields that C declares
``void *`` are ``c_void_p`` here, as in C: assigning a raw address is the
caller's business, exactly as in C.  The ``set_*`` helpers take Python buffers
instead, check their sizes and keep them alive as long as the structure.
"""

from __future__ import annotations

import ctypes
import platform
import struct as _struct
from ctypes import (
    POINTER,
    Array,
    Structure,
    c_char,
    c_int,
    c_int32,
    c_long,
    c_size_t,
    c_ubyte,
    c_uint,
    c_uint16,
    c_uint32,
    c_ushort,
    c_void_p,
)
from typing import Any, Sequence, Union

from rawsys.c.buffers import Buffer, buffer_pointer

SUPPORTED_MACHINES = ("x86_64", "aarch64", "arm64")


class UnsupportedABIError(ImportError):
    """The running platform's C layout is not one rawsys reproduces."""


def _check_abi() -> None:
    machine = platform.machine()
    pointer_bits = ctypes.sizeof(c_void_p) * 8
    if (
        platform.system() != "Linux"
        or machine not in SUPPORTED_MACHINES
        or pointer_bits != 64
        or ctypes.sizeof(c_long) != 8
    ):
        raise UnsupportedABIError(
            "rawsys reproduces the C structures of 64-bit Linux on x86-64 and aarch64 only; "
            f"this is {platform.system()} {machine} with {pointer_bits}-bit pointers, "
            "where msghdr/cmsghdr layouts differ"
        )


_check_abi()

socklen_t = c_uint32
sa_family_t = c_ushort
in_port_t = c_uint16
in_addr_t = c_uint32
pid_t = c_int32
uid_t = c_uint32
gid_t = c_uint32
time_t = c_long


def _pointee(pointer: Any) -> Any:
    """The ctypes object a ``pointer(obj)`` was made from, if it still holds it."""
    address = ctypes.cast(pointer, c_void_p).value
    objects = getattr(pointer, "_objects", None)
    if isinstance(objects, dict):
        for candidate in objects.values():
            if not hasattr(candidate, "_b_base_"):  # not a ctypes instance
                continue
            if ctypes.addressof(candidate) == address:
                return candidate
    return None


def _memory_owner(obj: Any) -> Any:
    """The ctypes object that owns the memory *obj* lives in.

    A structure reached as a field or an array item (``vec[1].msg_hdr``) is a
    short-lived view: what it keeps alive must be kept by the object that
    owns the memory, or it dies with the view while C still points at it.
    """
    seen = 0
    while seen < 1000:
        seen += 1
        base = obj._b_base_
        if base is None:
            return obj
        if isinstance(base, ctypes._Pointer):  # pointer(x).contents
            target = _pointee(base)
            if target is None:
                return base
            obj = target
            continue
        obj = base
    return obj


class _KeepAlive(Structure):
    """Structure that can hold references to the Python buffers its pointers use.

    The references are stored on the object owning the structure's memory
    (see ``_memory_owner``), keyed by the structure's address and the field.
    """

    def _keep(self, slot: str, obj: object) -> None:
        owner = _memory_owner(self)
        keep: dict[tuple[int, str], object] = owner.__dict__.setdefault("_rawsys_keep", {})
        keep[(ctypes.addressof(self), slot)] = obj

    def _adopt(self, source: _KeepAlive, address: int) -> None:
        """``outer.msg_hdr = hdr`` copies bytes, as in C; copy what *hdr* keeps too."""
        kept = _memory_owner(source).__dict__.get("_rawsys_keep", {})
        start, size = ctypes.addressof(source), ctypes.sizeof(source)
        owner_keep: dict[tuple[int, str], object] = _memory_owner(self).__dict__.setdefault(
            "_rawsys_keep", {})
        for (where, slot), obj in list(kept.items()):
            if start <= where < start + size:
                owner_keep[(address + where - start, slot)] = obj

    def _kept(self, slot: str) -> object:
        """What ``_keep`` holds for *slot* of this structure, or ``None``."""
        keep = _memory_owner(self).__dict__.get("_rawsys_keep", {})
        return keep.get((ctypes.addressof(self), slot))


class iovec(_KeepAlive):
    """``struct iovec`` from <sys/uio.h>."""

    _fields_ = [
        ("iov_base", c_void_p),
        ("iov_len", c_size_t),
    ]

    def set_buffer(self, buf: Buffer, nbytes: int | None = None) -> None:
        """Point ``iov_base``/``iov_len`` at *buf* and keep *buf* alive.

        ``nbytes`` larger than the buffer raises ``BufferOverflowDetected``.
        A read-only buffer (``bytes``) is accepted; the kernel only reads it
        when the iovec is sent.
        """
        ptr, size, keep = buffer_pointer(buf, nbytes, writable=False)
        self.iov_base = ptr
        self.iov_len = size
        self._keep("iov_base", keep)


class msghdr(_KeepAlive):
    """``struct msghdr`` from <sys/socket.h>."""

    _fields_ = [
        ("msg_name", c_void_p),
        ("msg_namelen", socklen_t),
        ("msg_iov", POINTER(iovec)),
        ("msg_iovlen", c_size_t),
        ("msg_control", c_void_p),
        ("msg_controllen", c_size_t),
        ("msg_flags", c_int),
    ]

    def set_name(self, addr: Union[Structure, Buffer, None]) -> None:
        """Point ``msg_name``/``msg_namelen`` at a sockaddr structure (or buffer)."""
        if addr is None:
            self.msg_name = None
            self.msg_namelen = 0
            self._keep("msg_name", None)
            return
        ptr, size, keep = buffer_pointer(addr, None, writable=False)
        self.msg_name = ptr
        self.msg_namelen = size
        self._keep("msg_name", keep)

    def set_iov(self, iov: Union[Sequence[iovec], Array[iovec], iovec]) -> None:
        """Point ``msg_iov``/``msg_iovlen`` at an array of iovecs (kept alive)."""
        if isinstance(iov, iovec):
            array: Any = (iovec * 1)(iov)
            keep: object = (array, iov)
        elif isinstance(iov, Array):
            if iov._type_ is not iovec:
                raise TypeError(f"expected an array of iovec, got array of {iov._type_.__name__}")
            array = iov
            keep = iov
        else:
            items = list(iov)
            for item in items:
                if not isinstance(item, iovec):
                    raise TypeError(f"expected iovec items, got {type(item).__name__}")
            array = (iovec * len(items))(*items)
            keep = (array, items)
        self.msg_iov = ctypes.cast(array, POINTER(iovec)) if len(array) else None
        self.msg_iovlen = len(array)
        self._keep("msg_iov", keep)

    def set_control(self, buf: Buffer | None, controllen: int | None = None) -> None:
        """Point ``msg_control``/``msg_controllen`` at *buf* (kept alive).

        ``controllen`` larger than the buffer raises ``BufferOverflowDetected``.
        """
        if buf is None:
            self.msg_control = None
            self.msg_controllen = 0
            self._keep("msg_control", None)
            return
        ptr, size, keep = buffer_pointer(buf, controllen, writable=False)
        self.msg_control = ptr
        self.msg_controllen = size
        self._keep("msg_control", keep)


class _CarryKeeps:
    """A struct-typed field whose assignment also carries what the value keeps alive.

    ``vec[i].msg_hdr = hdr`` copies bytes, as in C; the copy must keep the
    buffers *hdr*'s helpers pointed at.  Read on the class it is the ctypes
    field itself (``mmsghdr.msg_hdr.offset`` works as usual).
    """

    def __init__(self, field: Any) -> None:
        self.field = field

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return self.field if obj is None else self.field.__get__(obj, owner)

    def __set__(self, obj: Any, value: Any) -> None:
        self.field.__set__(obj, value)
        if isinstance(value, _KeepAlive):
            obj._adopt(value, ctypes.addressof(obj) + self.field.offset)


class cmsghdr(Structure):
    """``struct cmsghdr`` from <sys/socket.h>; the data follows the header."""

    _fields_ = [
        ("cmsg_len", c_size_t),
        ("cmsg_level", c_int),
        ("cmsg_type", c_int),
    ]


class mmsghdr(_KeepAlive):
    """``struct mmsghdr`` from <sys/socket.h> (sendmmsg/recvmmsg)."""

    _fields_ = [
        ("msg_hdr", msghdr),
        ("msg_len", c_uint),
    ]


mmsghdr.msg_hdr = _CarryKeeps(mmsghdr.__dict__["msg_hdr"])  # type: ignore[attr-defined]


class ucred(Structure):
    """``struct ucred`` from <sys/socket.h> (SCM_CREDENTIALS, SO_PEERCRED)."""

    _fields_ = [
        ("pid", pid_t),
        ("uid", uid_t),
        ("gid", gid_t),
    ]


class sockaddr(Structure):
    """``struct sockaddr`` from <sys/socket.h>."""

    _fields_ = [
        ("sa_family", sa_family_t),
        ("sa_data", c_char * 14),
    ]


class sockaddr_un(Structure):
    """``struct sockaddr_un`` from <sys/un.h>."""

    _fields_ = [
        ("sun_family", sa_family_t),
        ("sun_path", c_char * 108),
    ]


class in_addr(Structure):
    """``struct in_addr`` from <netinet/in.h>; ``s_addr`` is in network byte order."""

    _fields_ = [("s_addr", in_addr_t)]


class sockaddr_in(Structure):
    """``struct sockaddr_in`` from <netinet/in.h>; port and address in network order."""

    _fields_ = [
        ("sin_family", sa_family_t),
        ("sin_port", in_port_t),
        ("sin_addr", in_addr),
        ("sin_zero", c_ubyte * 8),
    ]


class timespec(Structure):
    """``struct timespec`` from <time.h> (the recvmmsg timeout)."""

    _fields_ = [
        ("tv_sec", time_t),
        ("tv_nsec", c_long),
    ]


def htons(x: int) -> int:
    """Host to network byte order, 16 bits (``htons(3)``)."""
    return int(_struct.unpack("=H", _struct.pack("!H", x & 0xFFFF))[0])


def htonl(x: int) -> int:
    """Host to network byte order, 32 bits (``htonl(3)``)."""
    return int(_struct.unpack("=I", _struct.pack("!I", x & 0xFFFFFFFF))[0])


ntohs = htons
ntohl = htonl

__all__ = [
    "UnsupportedABIError",
    "socklen_t",
    "sa_family_t",
    "in_port_t",
    "in_addr_t",
    "pid_t",
    "uid_t",
    "gid_t",
    "time_t",
    "iovec",
    "msghdr",
    "cmsghdr",
    "mmsghdr",
    "ucred",
    "sockaddr",
    "sockaddr_un",
    "in_addr",
    "sockaddr_in",
    "timespec",
    "htons",
    "htonl",
    "ntohs",
    "ntohl",
]
