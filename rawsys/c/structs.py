"""The structures of <sys/socket.h>, <sys/un.h>, <netinet/in.h> and <time.h>.

Field names and types are C's.  Layouts are those of 64-bit Linux (x86-64
and aarch64, LP64 with glibc); the test-suite checks every size and offset
against a C program compiled at test time.  Pointer fields that C declares
``void *`` are ``c_void_p`` here, as in C.  The ``set_*`` helpers take Python
buffers, check their sizes and keep them alive as long as the structure (and
its ctypes copies); a field assigned a ctypes object (``pointer(iov)``,
``cast(buf, c_void_p)``) is kept alive by ctypes.  A bare address assigned to
a field is allowed, but the calls refuse to hand it to the kernel (``-1``,
``EFAULT``): see ``rawsys.c.memory``.
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

from rawsys.c.buffers import Buffer, _check_len, buffer_extent
from rawsys.c.memory import Pin, keep, kept, memory_root

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


class _KeepAlive(Structure):
    """Structure whose pointer fields can be set from Python buffers, kept alive.

    What a field points at is filed as a ``Pin`` in the ctypes ``_objects`` of
    the object owning the structure's memory (see ``rawsys.c.memory``), so
    the copies ctypes makes (``(iovec * 1)(iov)``, ``arr[0] = iov``,
    ``vec[0] = mm``) carry it, and every call checks the pointers it hands
    the kernel against what is reachable that way.
    """

    def _keep(self, slot: str, pin: Pin | None) -> None:
        keep(self, slot, pin)

    def _adopt(self, source: _KeepAlive, address: int) -> None:
        """``outer.msg_hdr = hdr`` copies bytes, as in C; file *hdr*'s pins there too."""
        objects = getattr(memory_root(source), "_objects", None)
        if type(objects) is not dict:
            return
        start, size = ctypes.addressof(source), ctypes.sizeof(source)
        dest = memory_root(self)
        for key, pin in list(objects.items()):
            if type(key) is tuple and len(key) == 3 and key[0] == "rawsys" and (
                    start <= key[1] < start + size):
                _file(dest, address + key[1] - start, key[2], pin)

    def _kept(self, slot: str) -> Pin | None:
        """The pin filed for *slot* of this structure, or ``None``."""
        return kept(memory_root(self), ctypes.addressof(self), slot)


_AGGREGATES = (Structure, ctypes.Union, Array)


def _file(root: Any, address: int, slot: str, pin: Pin) -> None:
    objects = root._objects
    if type(objects) is not dict:
        keep(root, "_", None)  # creates the dictionary
        objects = root._objects
    objects[("rawsys", address, slot)] = pin


def _pin(buf: Buffer, nbytes: int | None) -> tuple[int | None, int, Pin | None]:
    """Address and length for a field set from *buf*, and the pin that keeps it."""
    extent = buffer_extent(buf)
    length = _check_len(nbytes, extent.capacity, extent.what)
    if extent.address is None:
        return None, length, None
    return extent.address, length, Pin(extent.keep, extent.address, extent.capacity,
                                       extent.writable)


class iovec(_KeepAlive):
    """``struct iovec`` from <sys/uio.h>."""

    _keeper_field_ = "iov_base"  # a c_void_p field (see rawsys.c.memory._objects_of)

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
        if nbytes is None and isinstance(buf, _AGGREGATES) and buf._b_base_ is None and (
                buf._b_needsfree_):  # a ctypes buffer owning its memory: the usual case
            size = ctypes.sizeof(buf)
            ptr: int | None = ctypes.addressof(buf)
            pin: Pin | None = Pin(buf, ptr, size, True)
        else:
            ptr, size, pin = _pin(buf, nbytes)
        keep(self, "iov_base", pin)
        self.iov_base = ptr
        self.iov_len = size


class msghdr(_KeepAlive):
    """``struct msghdr`` from <sys/socket.h>."""

    _keeper_field_ = "msg_name"

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
        ptr, size, pin = _pin(addr, None)
        self.msg_name = ptr
        self.msg_namelen = size
        self._keep("msg_name", pin)

    def set_iov(self, iov: Union[Sequence[iovec], Array[iovec], iovec]) -> None:
        """Point ``msg_iov``/``msg_iovlen`` at iovecs, kept alive with their buffers.

        A single ``iovec`` or an array of them is pointed at as it is (C's
        ``msg.msg_iov = &iov``): later ``set_buffer`` calls on it are what
        ``sendmsg`` sees.  A list is copied into a new array (C's ``struct
        iovec iov[] = {a, b}``), which keeps the buffers the items pointed at
        when it was made.
        """
        if isinstance(iov, iovec):
            array: Any = iov
            count = 1
        elif isinstance(iov, Array):
            if iov._type_ is not iovec:
                raise TypeError(f"expected an array of iovec, got array of {iov._type_.__name__}")
            array = iov
            count = len(iov)
        else:
            items = list(iov)
            for item in items:
                if not isinstance(item, iovec):
                    raise TypeError(f"expected iovec items, got {type(item).__name__}")
            count = len(items)
            array = (iovec * count)(*items)
            for i, item in enumerate(items):
                pin = item._kept("iov_base")
                if pin is not None:
                    array[i]._keep("iov_base", pin)
        if not count:
            self.msg_iov = None
            self.msg_iovlen = 0
            self._keep("msg_iov", None)
            return
        address = ctypes.addressof(array)
        self.msg_iov = ctypes.cast(address, POINTER(iovec))
        self.msg_iovlen = count
        self._keep("msg_iov", Pin(array, address, ctypes.sizeof(array), True))

    def set_control(self, buf: Buffer | None, controllen: int | None = None) -> None:
        """Point ``msg_control``/``msg_controllen`` at *buf* (kept alive).

        ``controllen`` larger than the buffer raises ``BufferOverflowDetected``.
        """
        if buf is None:
            self.msg_control = None
            self.msg_controllen = 0
            self._keep("msg_control", None)
            return
        ptr, size, pin = _pin(buf, controllen)
        keep(self, "msg_control", pin)
        self.msg_control = ptr
        self.msg_controllen = size


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
