"""Which memory the C layer may hand to the kernel, decided at call time.

C trusts every pointer; rawsys.c hands the kernel a pointer only when it can
name a live Python object holding that memory, and ``sendmsg``/``recvmsg``
and friends walk the whole ``msghdr`` (``msg_name``, the ``msg_iov`` array and
each ``iov_base``/``iov_len``, ``msg_control``) before the call.  ctypes has
no hook on copies (``(iovec * 1)(iov)``, ``arr[0] = iov``, ``vec[0] = mm``
copy bytes), so a check at call time is the only place a copied pointer can
be vouched for.

Known memory is what is reachable from the call's argument:

* a *pin*: what ``iovec.set_buffer``, ``msghdr.set_iov``/``set_control``/
  ``set_name`` point a field at.  Pins are stored in the ctypes ``_objects``
  dictionary of the structure's memory owner, so ctypes' own copies
  (``(iovec * 1)(iov)``, ``arr[0] = iov``, ``vec[0] = mm``, ``hdr.msg_iov =
  pointer(iov)``) carry them, and the copy keeps the buffer alive;
* ctypes objects that own their memory (or ``from_buffer`` views) kept by
  ctypes itself in ``_objects``: ``msg.msg_iov = pointer(iov)``,
  ``io.iov_base = cast(buf, c_void_p)``, a ``c_char_p``'s bytes.

A pointer that lies in none of these (a bare ``addressof()`` int, memory of
a collected object, ``from_address``) is not handed to the kernel: the call
returns ``-1`` with ``errno`` ``EFAULT``, what the kernel answers for an
address it cannot use.  A known buffer that is too short raises
``BufferOverflowDetected``; a read-only one (``bytes``) where the kernel
would write raises ``TypeError``.

Cost, measured in CPU time on the development machine against the bare
un-prototyped libc call (3.2-3.8 us with a 1-byte datagram read back): a
``sendmsg`` of a ``msghdr`` built with ``set_iov`` ~2.5 us more (~1.7 us more
than before the walk existed), with ``msg_iov = pointer(iov)`` ~3 us more; a
``recvmsg`` ~2.5 us more (unchanged: it checked read-only buffers before);
``send`` of a bytearray ~0.3 us more.  The Pythonic layer calls ``LIBC``/
``LIBC_FAST`` on structures it owns and never goes through this walk.

Limits: a structure changed by another thread while a call is in the kernel
is a data race, as in C (the objects holding the checked memory are kept
alive through the call, so none is freed meanwhile); a stale pointer whose
address a *reachable* live object now occupies points into that object
(memory-safe, wrong bytes); ctypes' ``_objects`` dictionaries and its
private ``_cast`` are relied on (CPython 3.9-3.13 checked).
"""

from __future__ import annotations

import ctypes
import struct
from collections import deque
from ctypes import c_char_p, c_void_p
from typing import Any, Deque, Dict, Iterator, List, Tuple

_CData: Any = ctypes.c_int.__mro__[-2]
_KEY = "rawsys"


class UnknownMemory(ValueError):
    """A pointer into memory no live object the call can reach holds.

    The libc calls return ``-1`` with ``errno`` ``EFAULT`` instead of raising
    it; ``memcpy``/``memmove``/``memset``, which have no error return, raise it.
    """


class BufferOverflowDetected(ValueError):
    """A length larger than the Python buffer it describes (cf. ``__recv_chk``)."""


class Pin:
    """Memory a structure field points at, with the object that keeps it alive."""

    __slots__ = ("holder", "address", "size", "writable")

    def __init__(self, holder: object, address: int, size: int, writable: bool) -> None:
        self.holder = holder
        self.address = address
        self.size = size
        self.writable = writable

    def __repr__(self) -> str:
        return (f"<Pin {self.size} bytes at {self.address:#x}"
                f"{'' if self.writable else ' read-only'} of {type(self.holder).__name__}>")


def _pointee(pointer: Any, address: int) -> Any:
    """The ctypes object at *address* that ``pointer`` keeps (``pointer(obj)``)."""
    objects = pointer._objects
    if type(objects) is dict:
        for candidate in objects.values():
            if isinstance(candidate, _CData) and ctypes.addressof(candidate) == address:
                return candidate
    return None


def memory_root(obj: Any) -> Any:
    """The ctypes object whose memory *obj* (a ctypes instance) is part of.

    ``pointer(x).contents`` has the pointer as its base; its memory is ``x``'s.
    """
    for _ in range(10_000):
        base = obj._b_base_
        if base is None:
            return obj
        if isinstance(base, ctypes._Pointer):
            target = _pointee(base, ctypes.addressof(obj))
            if target is None:
                return base  # memory the pointer does not hold: vouched for elsewhere
            obj = target
            continue
        obj = base
    return obj


# A c_void_p whose ctypes _objects is a dictionary (cast() shares its source's):
# assigning it to a pointer field makes ctypes create the owner's dictionary.
_ANCHOR = (ctypes.c_char * 1)()
_KEEPER = ctypes.cast(_ANCHOR, c_void_p)


def _objects_of(root: Any, struct_obj: Any = None) -> Dict[Any, Any]:
    """*root*'s ctypes ``_objects`` dictionary, created if ctypes has none yet."""
    objects = root._objects
    if type(objects) is dict:
        return objects
    # ctypes creates the dictionary lazily, when it first keeps something.
    field = getattr(type(struct_obj), "_keeper_field_", None)
    if field is not None:  # a c_void_p field, set to _KEEPER and back (~0.2 us)
        value = getattr(struct_obj, field)
        setattr(struct_obj, field, _KEEPER)
        setattr(struct_obj, field, value)
    else:  # cast() makes one and files its source under its id, removed at once
        ctypes._cast(0, root, c_void_p)  # type: ignore[attr-defined]
        root._objects.pop(id(root), None)
    objects = root._objects
    if type(objects) is not dict:
        raise TypeError(f"{type(root).__name__} keeps no ctypes objects")
    return objects


def keep(struct_obj: Any, slot: str, pin: Pin | None) -> None:
    """File *pin* as what field *slot* of *struct_obj* points at (``None`` forgets it)."""
    root = memory_root(struct_obj)
    objects = _objects_of(root, struct_obj)
    key = (_KEY, ctypes.addressof(struct_obj), slot)
    if pin is None:
        objects.pop(key, None)
    else:
        objects[key] = pin


def kept(root: Any, address: int, slot: str) -> Pin | None:
    """The pin filed for field *slot* of the structure at *address* inside *root*."""
    objects = getattr(root, "_objects", None)
    if type(objects) is not dict:
        return None
    found = objects.get((_KEY, address, slot))
    return found if type(found) is Pin else None


# bytes keep their data at a fixed offset from the object (CPython's PyBytesObject).
_probe = b"probe"
_BYTES_OFFSET = (ctypes.cast(c_char_p(_probe), c_void_p).value or 0) - id(_probe)


def bytes_address(data: bytes) -> int:
    return id(data) + _BYTES_OFFSET


def _owns_memory(root: Any) -> bool:
    """Whether a root ctypes object's memory is its own or a buffer it holds.

    ``from_address`` objects point at memory nobody vouches for.
    """
    if root._b_needsfree_:
        return True
    objects = root._objects
    return type(objects) is dict and any(type(v) is memoryview for v in objects.values())


Range = Tuple[int, int, bool, object]  # start, end, writable, object holding the memory


class KnownMemory:
    """The memory reachable from some ctypes objects, walked only as far as asked."""

    __slots__ = ("_walk", "_ranges")

    def __init__(self, *roots: object) -> None:
        self._walk: Iterator[Range] | None = _reachable(roots)
        self._ranges: List[Range] = []

    def find(self, address: int, length: int) -> Range | None:
        """The known range holding ``[address, address + length)``, else the one
        holding *address* (then too short), else ``None``."""
        partial: Range | None = None
        for entry in self._ranges:
            start, end = entry[0], entry[1]
            if start <= address < end or start == address == end:
                if address + length <= end:
                    return entry
                partial = entry
        while self._walk is not None:  # walk on until a range holds it all
            found = next(self._walk, None)
            if found is None:
                self._walk = None
                break
            entry = found
            self._ranges.append(entry)
            start, end = entry[0], entry[1]
            if start <= address < end or start == address == end:
                if address + length <= end:
                    return entry
                partial = entry
        return partial


_MAX_NODES = 100_000


def _reachable(roots: Tuple[object, ...]) -> Iterator[Range]:
    seen: set[int] = set()
    stack: Deque[Any] = deque(roots)  # breadth first: a field's own target comes early
    nodes = 0
    while stack and nodes < _MAX_NODES:
        node: Any = stack.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes += 1
        if type(node) is Pin:
            yield node.address, node.address + node.size, node.writable, node.holder
            stack.append(node.holder)
        elif isinstance(node, _CData):
            root = memory_root(node)
            if root is not node:
                stack.append(root)
                continue
            if _owns_memory(root):
                address = ctypes.addressof(root)
                yield address, address + ctypes.sizeof(root), True, root
            objects = root._objects
            if type(objects) is dict:
                stack.extend(objects.values())
            elif type(objects) is bytes:  # c_char_p(b"...") keeps its bytes
                stack.append(objects)
            owner = getattr(root, "__dict__", {}).get("_rawsys_owner")
            if owner is not None:  # CMSG_FIRSTHDR/CMSG_DATA pointers: their msghdr
                stack.append(owner)
        elif type(node) is bytes:
            address = bytes_address(node)
            yield address, address + len(node) + 1, False, node  # with its NUL
        elif type(node) is dict:
            stack.extend(node.values())
        elif type(node) in (tuple, list):
            stack.extend(node)
        elif type(node) is memoryview:
            # What a from_buffer() object keeps: the export of its whole exporter,
            # which holds the memory before and after the object too.
            exporter = node.obj
            if isinstance(exporter, _CData):
                stack.append(exporter)
            elif not node.readonly and node.c_contiguous and node.nbytes:
                view = (ctypes.c_char * node.nbytes).from_buffer(node)
                address = ctypes.addressof(view)
                yield address, address + node.nbytes, True, view


# --- the msghdr walk -------------------------------------------------------------

_UIO_MAXIOV = 1024  # <linux/uio.h>
_MSGHDR = struct.Struct("@P I 4x P N P N i 4x")  # struct msghdr, LP64
_IOVEC = struct.Struct("@P N")
MSGHDR_SIZE = _MSGHDR.size
IOVEC_SIZE = _IOVEC.size


# ctypes files what a field assignment keeps under the field's index in the
# owner's _objects: msghdr's msg_name, msg_iov and msg_control are fields 0, 2, 4.
_FIELD_KEYS = {"msg_name": "0", "msg_iov": "2", "msg_control": "4"}


def _scan(objects: Dict[Any, Any], address: int, length: int) -> Range | None:
    """A ctypes object owning ``[address, address + length)`` among *objects*' values
    (one level: what ctypes keeps for ``pointer(iov)`` or ``cast(arr, ...)``)."""
    for value in objects.values():
        if isinstance(value, _CData) and value._b_base_ is None and value._b_needsfree_:
            start = ctypes.addressof(value)
            end = start + ctypes.sizeof(value)
            if start <= address and address + length <= end:
                return start, end, True, value
    return None


def _check_range(root: Any, holder_address: int, slot: str, known: KnownMemory,
                 address: int, length: int, writing: bool, what: str) -> Range:
    """Vouch for ``[address, address + length)``, the target of field *slot* of the
    structure at *holder_address* in *root*; return the range holding it."""
    pin = kept(root, holder_address, slot)
    if pin is not None and pin.address <= address < pin.address + max(pin.size, 1):
        entry: Range | None = (pin.address, pin.address + pin.size, pin.writable,
                               pin.holder)
    else:
        entry = None
        if ctypes.addressof(root) == holder_address and slot in _FIELD_KEYS:
            # What ctypes keeps for the field itself (msg.msg_iov = pointer(iov)):
            # looked at first, a walk of a few objects.
            hint = getattr(root, "_objects", None)
            hint = hint.get(_FIELD_KEYS[slot]) if type(hint) is dict else None
            if type(hint) is dict:
                entry = _scan(hint, address, length)
            if entry is None and hint is not None:
                entry = KnownMemory(hint).find(address, length)
        if entry is None or entry[1] < address + length:
            entry = known.find(address, length)
    if entry is None:
        raise UnknownMemory(f"{what} points at {address:#x}, memory no live object holds")
    start, end, writable, holder = entry
    del start
    if address + length > end:
        raise BufferOverflowDetected(
            f"buffer overflow detected: {what} has length {length}, "
            f"only {end - address} bytes of {type(holder).__name__} follow")
    if writing and not writable:
        raise TypeError(f"{what} points at read-only {type(holder).__name__}, "
                        "which the kernel would write into")
    return entry


_NO_OBJECTS: Dict[Any, Any] = {}


def _pinned(objects: Dict[Any, Any], address: int, slot: str, target: int, length: int,
            writing: bool) -> Pin | None:
    """The pin filed for the field, if it vouches for ``[target, target + length)``.

    The fast path of ``_check_range``: a ``None`` sends the caller there,
    which also words the errors.
    """
    pin = objects.get((_KEY, address, slot))
    if (type(pin) is Pin and pin.address <= target
            and target + length <= pin.address + pin.size and (pin.writable or not writing)):
        return pin
    return None


def check_msghdr(root: Any, address: int, writing: bool, known: KnownMemory,
                 where: str = "msg", held: List[object] | None = None) -> None:
    """Walk the msghdr at *address* (inside the ctypes object *root*) and vouch for
    every pointer and length in it; raise ``UnknownMemory`` (-> EFAULT),
    ``BufferOverflowDetected`` or ``TypeError``.

    The objects holding the memory are appended to *held*: the caller keeps
    them through the call, so no other thread can free them meanwhile.
    """
    hold = held if held is not None else []
    objects = root._objects
    if type(objects) is not dict:
        objects = _NO_OBJECTS
    (name, namelen, iov, iovlen, control, controllen, _flags) = _MSGHDR.unpack_from(
        root, address - ctypes.addressof(root))
    if name and namelen:
        pin = _pinned(objects, address, "msg_name", name, namelen, writing)
        hold.append(pin.holder if pin is not None else _check_range(
            root, address, "msg_name", known, name, namelen, writing, f"{where}.msg_name")[3])
    if iovlen and iovlen <= _UIO_MAXIOV:  # past it the kernel answers EMSGSIZE unread
        if not iov:
            raise UnknownMemory(f"{where}.msg_iov is NULL with msg_iovlen {iovlen}")
        size = iovlen * IOVEC_SIZE
        pin = _pinned(objects, address, "msg_iov", iov, size, False)
        if pin is not None:
            array: Any = pin.holder
        else:
            array = _check_range(root, address, "msg_iov", known, iov, size, False,
                                 f"{where}.msg_iov")[3]
        hold.append(array)
        if not isinstance(array, _CData):
            raise UnknownMemory(f"{where}.msg_iov points into {type(array).__name__}, "
                                "not an array of iovec")
        array_root = memory_root(array)
        items = array_root._objects
        if type(items) is not dict:
            items = _NO_OBJECTS
        offset = iov - ctypes.addressof(array_root)  # read through the memory's owner
        for i in range(iovlen):
            base, length = _IOVEC.unpack_from(array_root, offset + i * IOVEC_SIZE)
            if not length:
                continue
            if not base:
                raise UnknownMemory(f"{where}.msg_iov[{i}].iov_base is NULL")
            item = iov + i * IOVEC_SIZE
            pin = _pinned(items, item, "iov_base", base, length, writing)
            hold.append(pin.holder if pin is not None else _check_range(
                array_root, item, "iov_base", known, base, length, writing,
                f"{where}.msg_iov[{i}].iov_base")[3])
    if controllen:
        if not control:
            raise UnknownMemory(f"{where}.msg_control is NULL with msg_controllen "
                                f"{controllen}")
        pin = _pinned(objects, address, "msg_control", control, controllen, writing)
        hold.append(pin.holder if pin is not None else _check_range(
            root, address, "msg_control", known, control, controllen, writing,
            f"{where}.msg_control")[3])


__all__ = [
    "BufferOverflowDetected", "UnknownMemory", "Pin", "KnownMemory", "keep", "kept",
    "memory_root", "check_msghdr", "bytes_address", "MSGHDR_SIZE", "IOVEC_SIZE",
]
