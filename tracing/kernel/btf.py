"""A small reader of BTF, the kernel's own type information.

The tracer takes every struct offset it uses from the running kernel's BTF
(``/sys/kernel/btf/vmlinux``), never from headers: the distribution's headers
may describe another kernel (Debian 12 ships 6.1 headers; ``struct
scm_fp_list`` moved ``fp[]`` from offset 16 to 40 in 6.10, and in Debian's
6.1 builds too).  Function prototypes come from it as well
(:meth:`BTF.function_prototypes`).

Format: kernel ``Documentation/bpf/btf.rst`` -- a ``struct btf_header``, then
a type section of ``struct btf_type`` records (each followed by kind-specific
data) and a string section of NUL-terminated names.  Only what is asked for is
decoded: loading reads the file and checks the header; the first look-up walks
the type section once to index record positions and names (~0.1 s for
vmlinux).  What the probes need from it is listed, read and cached per
kernel build by :mod:`rawsys.trace.kernel.facts`, so a normal start-up does
not walk it at all.
"""

from __future__ import annotations

import array
import struct
import sys
from typing import Iterator, NamedTuple

__all__ = [
    "BTF",
    "BTFFormatError",
    "BTFLookupError",
    "Param",
    "Prototype",
    "VMLINUX_BTF",
    "kernel_btf",
]

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

# <uapi/linux/btf.h>
BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
# magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_HEADER = struct.Struct("<HBBIIIII")

BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_FWD = 7
BTF_KIND_TYPEDEF = 8
BTF_KIND_VOLATILE = 9
BTF_KIND_CONST = 10
BTF_KIND_RESTRICT = 11
BTF_KIND_FUNC = 12
BTF_KIND_FUNC_PROTO = 13
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BTF_KIND_FLOAT = 16
BTF_KIND_DECL_TAG = 17
BTF_KIND_TYPE_TAG = 18
BTF_KIND_ENUM64 = 19
BTF_KIND_MAX = BTF_KIND_ENUM64

KIND_NAMES = {
    BTF_KIND_INT: "INT",
    BTF_KIND_PTR: "PTR",
    BTF_KIND_ARRAY: "ARRAY",
    BTF_KIND_STRUCT: "STRUCT",
    BTF_KIND_UNION: "UNION",
    BTF_KIND_ENUM: "ENUM",
    BTF_KIND_FWD: "FWD",
    BTF_KIND_TYPEDEF: "TYPEDEF",
    BTF_KIND_VOLATILE: "VOLATILE",
    BTF_KIND_CONST: "CONST",
    BTF_KIND_RESTRICT: "RESTRICT",
    BTF_KIND_FUNC: "FUNC",
    BTF_KIND_FUNC_PROTO: "FUNC_PROTO",
    BTF_KIND_VAR: "VAR",
    BTF_KIND_DATASEC: "DATASEC",
    BTF_KIND_FLOAT: "FLOAT",
    BTF_KIND_DECL_TAG: "DECL_TAG",
    BTF_KIND_TYPE_TAG: "TYPE_TAG",
    BTF_KIND_ENUM64: "ENUM64",
}

# 32-bit words that follow the 3-word struct btf_type of each kind:
# (fixed words, words per vlen entry).  btf.rst, "Type Encoding".
_TRAILER_WORDS = {
    BTF_KIND_INT: (1, 0),
    BTF_KIND_PTR: (0, 0),
    BTF_KIND_ARRAY: (3, 0),  # struct btf_array
    BTF_KIND_STRUCT: (0, 3),  # struct btf_member
    BTF_KIND_UNION: (0, 3),
    BTF_KIND_ENUM: (0, 2),  # struct btf_enum
    BTF_KIND_FWD: (0, 0),
    BTF_KIND_TYPEDEF: (0, 0),
    BTF_KIND_VOLATILE: (0, 0),
    BTF_KIND_CONST: (0, 0),
    BTF_KIND_RESTRICT: (0, 0),
    BTF_KIND_FUNC: (0, 0),
    BTF_KIND_FUNC_PROTO: (0, 2),  # struct btf_param
    BTF_KIND_VAR: (1, 0),  # struct btf_var
    BTF_KIND_DATASEC: (0, 3),  # struct btf_var_secinfo
    BTF_KIND_FLOAT: (0, 0),
    BTF_KIND_DECL_TAG: (1, 0),  # struct btf_decl_tag
    BTF_KIND_TYPE_TAG: (0, 0),
    BTF_KIND_ENUM64: (0, 3),  # struct btf_enum64
}
_TRAILER_TABLE = tuple(_TRAILER_WORDS.get(k, (-1, -1)) for k in range(BTF_KIND_MAX + 1))

# Kinds that only qualify or rename another type: followed to reach the real one.
_MODIFIERS = frozenset(
    {BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG}
)
_COMPOSITES = frozenset({BTF_KIND_STRUCT, BTF_KIND_UNION})
_MAX_CHAIN = 64  # longest typedef/const/array chain followed before calling the data corrupt


class BTFFormatError(ValueError):
    """The file is not valid BTF: truncated, corrupt, or of an unknown version."""


class BTFLookupError(KeyError):
    """A type, member or function name that this BTF does not have.

    A ``KeyError`` (so a ``LookupError``) whose ``str()`` is the plain message.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "BTF lookup failed"


class _Type(NamedTuple):
    kind: int
    name_off: int
    vlen: int
    kind_flag: bool
    size_or_type: int
    word: int  # index in the type section's words of the record's first word


class _Member(NamedTuple):
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 when not a bitfield


class Param(NamedTuple):
    """One parameter of a function prototype."""

    name: str  # "" where BTF does not name it
    type: str  # plain C spelling (no qualifiers or type tags): "struct file *", "unsigned int"


class Prototype(NamedTuple):
    """A function's prototype as BTF records it (a FUNC and its FUNC_PROTO)."""

    returns: str
    params: tuple[Param, ...]

    def spell(self, name: str) -> str:
        """C-like: ``int __receive_fd(struct file *file, int *ufd, unsigned int o_flags)``."""
        args = ", ".join(
            (p.type if p.type.endswith("*") or not p.name else p.type + " ") + p.name
            for p in self.params
        )
        return f"{self.returns} {name}({args or 'void'})"


class BTF:
    """Parsed-on-demand BTF of one kernel (or any standalone BTF blob)."""

    def __init__(self, data: bytes, *, source: str = "<bytes>") -> None:
        self.source = source
        self._data = data
        if len(data) < _HEADER.size:
            raise BTFFormatError(
                f"{source}: {len(data)} bytes is too short for a BTF header ({_HEADER.size})"
            )
        magic = struct.unpack_from("<H", data, 0)[0]
        if magic == BTF_MAGIC:
            self._endian = "<"
        elif magic == 0x9FEB:
            self._endian = ">"
        else:
            raise BTFFormatError(f"{source}: bad BTF magic {magic:#06x} (want {BTF_MAGIC:#06x})")
        fmt = self._endian + _HEADER.format[1:]
        (_, version, _flags, hdr_len, type_off, type_len, str_off, str_len) = struct.unpack_from(
            fmt, data, 0
        )
        if version != BTF_VERSION:
            raise BTFFormatError(f"{source}: unsupported BTF version {version}")
        if hdr_len < _HEADER.size or hdr_len > len(data):
            raise BTFFormatError(f"{source}: bad header length {hdr_len}")
        type_start, str_start = hdr_len + type_off, hdr_len + str_off
        for what, start, length in (("type", type_start, type_len), ("string", str_start, str_len)):
            if start + length > len(data):
                raise BTFFormatError(
                    f"{source}: {what} section ({start}+{length}) runs past the end of the"
                    f" data ({len(data)} bytes): truncated?"
                )
        if type_len % 4 or type_start % 4:
            raise BTFFormatError(f"{source}: type section is not 4-byte aligned")
        if str_len == 0 or data[str_start] != 0 or data[str_start + str_len - 1] != 0:
            raise BTFFormatError(f"{source}: string section must start and end with NUL")
        self._type_start, self._type_len = type_start, type_len
        self._strings = data[str_start : str_start + str_len]
        # Filled by _index() on the first look-up.
        self._words: array.array[int] | None = None
        self._starts: array.array[int] | None = None
        self._by_name: dict[int, list[int]] | None = None
        self._ptr_size: int | None = None

    @classmethod
    def load(cls, path: str = VMLINUX_BTF) -> BTF:
        """Read a BTF file (by default the running kernel's) and check its header."""
        with open(path, "rb") as f:
            data = f.read()
        return cls(data, source=path)

    # ----------------------------------------------------------------- index

    def _index(self) -> tuple[array.array[int], array.array[int], dict[int, list[int]]]:
        if self._words is not None and self._starts is not None and self._by_name is not None:
            return self._words, self._starts, self._by_name
        words = array.array("I")
        if words.itemsize != 4:  # pragma: no cover - every Linux ABI has a 4-byte int
            raise RuntimeError("array('I') is not 32-bit on this platform")
        words.frombytes(self._data[self._type_start : self._type_start + self._type_len])
        if (self._endian == "<") != (sys.byteorder == "little"):
            words.byteswap()
        starts = array.array("I", [0])  # type id 0 is void: no record
        by_name: dict[int, list[int]] = {}
        table = _TRAILER_TABLE
        str_len = len(self._strings)
        n = len(words)
        i = 0
        type_id = 1
        while i < n:
            if i + 3 > n:
                raise BTFFormatError(f"{self.source}: type [{type_id}] is cut off")
            name_off = words[i]
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            if kind == 0 or kind > BTF_KIND_MAX:
                raise BTFFormatError(f"{self.source}: type [{type_id}] has unknown kind {kind}")
            if name_off >= str_len:
                raise BTFFormatError(
                    f"{self.source}: type [{type_id}] name offset {name_off} is outside the"
                    f" string section ({str_len} bytes)"
                )
            fixed, per = table[kind]
            starts.append(i)
            if name_off:
                ids = by_name.get(name_off)
                if ids is None:
                    by_name[name_off] = [type_id]
                else:
                    ids.append(type_id)
            i += 3 + fixed + per * (info & 0xFFFF)
            type_id += 1
        if i != n:
            raise BTFFormatError(f"{self.source}: type [{type_id - 1}] runs past the type section")
        self._words, self._starts, self._by_name = words, starts, by_name
        return words, starts, by_name

    @property
    def type_count(self) -> int:
        """Number of types, not counting void (id 0)."""
        return len(self._index()[1]) - 1

    def _type(self, type_id: int) -> _Type:
        words, starts, _ = self._index()
        if not 0 < type_id < len(starts):
            raise BTFFormatError(f"{self.source}: reference to missing type id {type_id}")
        w = starts[type_id]
        info = words[w + 1]
        return _Type(
            kind=(info >> 24) & 0x1F,
            name_off=words[w],
            vlen=info & 0xFFFF,
            kind_flag=bool(info >> 31),
            size_or_type=words[w + 2],
            word=w,
        )

    def _string(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        if off >= len(self._strings) or end < 0:
            raise BTFFormatError(f"{self.source}: string offset {off} is out of range")
        return self._strings[off:end].decode("utf-8", "replace")

    def _string_offsets(self, name: str) -> Iterator[int]:
        """Every offset in the string section where exactly ``name`` is stored."""
        if not name or "\0" in name:
            return
        needle = b"\0" + name.encode() + b"\0"
        pos = self._strings.find(needle)
        while pos >= 0:
            yield pos + 1
            pos = self._strings.find(needle, pos + 1)

    def _ids_named(self, name: str, kinds: frozenset[int]) -> list[int]:
        _, _, by_name = self._index()
        found = []
        for off in self._string_offsets(name):
            for tid in by_name.get(off, ()):
                if self._type(tid).kind in kinds:
                    found.append(tid)
        return sorted(found)

    def type_name(self, type_id: int, _depth: int = 0, *, plain: bool = False) -> str:
        """A C-like spelling of a type id, for messages.

        ``plain`` leaves out qualifiers and type tags (``const``, ``volatile``,
        ``__user``...) at every level: ``int __user *`` is ``"int *"``.
        """
        if type_id == 0:
            return "void"
        if _depth > _MAX_CHAIN:
            return "..."
        t = self._type(type_id)
        name = self._string(t.name_off) if t.name_off else "(anon)"
        if t.kind == BTF_KIND_STRUCT:
            return f"struct {name}"
        if t.kind == BTF_KIND_UNION:
            return f"union {name}"
        if t.kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return f"enum {name}"
        if t.kind == BTF_KIND_PTR:
            inner = self.type_name(t.size_or_type, _depth + 1, plain=plain)
            return f"{inner}*" if inner.endswith("*") else f"{inner} *"
        if t.kind == BTF_KIND_ARRAY:
            elem, _, nelems = self._array(t)
            return f"{self.type_name(elem, _depth + 1, plain=plain)}[{nelems}]"
        if t.kind in (BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG):
            inner = self.type_name(t.size_or_type, _depth + 1, plain=plain)
            return inner if plain else f"{KIND_NAMES[t.kind].lower()} {inner}"
        return name

    # -------------------------------------------------------- type resolution

    def find_type(self, type_name: str) -> int:
        """The type id for a C type name.

        Accepts ``struct NAME``, ``union NAME``, ``enum NAME``, a typedef name,
        a base type in any usual spelling (``unsigned long`` finds BTF's
        ``long unsigned int``), and any of these followed by ``*``.  A bare
        name that is no typedef or base type is looked up as a struct, then a
        union.
        """
        spelled = " ".join(type_name.replace("*", " * ").split())
        if not spelled:
            raise BTFLookupError("empty type name")
        if spelled.endswith("*"):
            self.find_type(spelled[:-1])  # must exist
            raise BTFLookupError(
                f"{type_name!r}: pointer types have no id of their own here; use sizeof()"
            )
        tag, _, rest = spelled.partition(" ")
        if tag in ("struct", "union", "enum") and rest:
            kinds = {
                "struct": frozenset({BTF_KIND_STRUCT}),
                "union": frozenset({BTF_KIND_UNION}),
                "enum": frozenset({BTF_KIND_ENUM, BTF_KIND_ENUM64}),
            }[tag]
            ids = self._ids_named(rest, kinds)
            if not ids:
                ids = self._ids_named(rest, frozenset({BTF_KIND_FWD}))
            if not ids:
                raise BTFLookupError(f"no type {spelled!r} in {self.source}")
            return ids[0]
        for kinds in (
            frozenset({BTF_KIND_TYPEDEF, BTF_KIND_INT, BTF_KIND_FLOAT}),
            frozenset({BTF_KIND_STRUCT}),
            frozenset({BTF_KIND_UNION}),
            frozenset({BTF_KIND_ENUM, BTF_KIND_ENUM64}),
        ):
            ids = self._ids_named(spelled, kinds)
            if ids:
                return ids[0]
        canonical = _canonical_int(spelled)
        if canonical is not None:
            for tid in self._base_int_ids():
                if _canonical_int(self._string(self._type(tid).name_off)) == canonical:
                    return tid
        raise BTFLookupError(f"no type {spelled!r} in {self.source}")

    def _base_int_ids(self) -> Iterator[int]:
        # Base types come first in vmlinux BTF; scan a bounded prefix only.
        for tid in range(1, min(len(self._index()[1]), 4096)):
            if self._type(tid).kind == BTF_KIND_INT:
                yield tid

    def _strip(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the underlying type id."""
        for _ in range(_MAX_CHAIN):
            if type_id == 0:
                return 0
            t = self._type(type_id)
            if t.kind not in _MODIFIERS:
                return type_id
            type_id = t.size_or_type
        raise BTFFormatError(f"{self.source}: typedef/qualifier chain too long (a loop?)")

    def _array(self, t: _Type) -> tuple[int, int, int]:
        words, _, _ = self._index()
        w = t.word + 3
        return words[w], words[w + 1], words[w + 2]  # elem type, index type, nelems

    def _pointer_size(self) -> int:
        if self._ptr_size is None:
            try:
                self._ptr_size = self._sizeof_id(self.find_type("unsigned long"))
            except BTFLookupError:
                self._ptr_size = struct.calcsize("P")
        return self._ptr_size

    def _sizeof_id(self, type_id: int, depth: int = 0) -> int:
        if depth > _MAX_CHAIN:
            raise BTFFormatError(f"{self.source}: type nesting too deep (a loop?)")
        type_id = self._strip(type_id)
        if type_id == 0:
            raise BTFLookupError("void has no size")
        t = self._type(type_id)
        if t.kind in (
            BTF_KIND_INT,
            BTF_KIND_STRUCT,
            BTF_KIND_UNION,
            BTF_KIND_ENUM,
            BTF_KIND_ENUM64,
            BTF_KIND_FLOAT,
            BTF_KIND_DATASEC,
        ):
            return t.size_or_type
        if t.kind == BTF_KIND_PTR:
            return self._pointer_size()
        if t.kind == BTF_KIND_ARRAY:
            elem, _, nelems = self._array(t)
            return nelems * self._sizeof_id(elem, depth + 1)
        if t.kind == BTF_KIND_VAR:
            return self._sizeof_id(t.size_or_type, depth + 1)
        raise BTFLookupError(
            f"{self.type_name(type_id)!r} ({KIND_NAMES[t.kind]}) has no size"
            + (" (only declared, never defined)" if t.kind == BTF_KIND_FWD else "")
        )

    def _members(self, type_id: int) -> Iterator[_Member]:
        t = self._type(type_id)
        words, _, _ = self._index()
        w = t.word + 3
        for j in range(t.vlen):
            name_off, mtype, offset = words[w + 3 * j], words[w + 3 * j + 1], words[w + 3 * j + 2]
            if t.kind_flag:
                yield _Member(
                    self._string(name_off) if name_off else "",
                    mtype,
                    offset & 0xFFFFFF,
                    offset >> 24,
                )
            else:
                yield _Member(self._string(name_off) if name_off else "", mtype, offset, 0)

    def _composite(self, type_name_or_id: str | int) -> int:
        type_id = (
            self.find_type(type_name_or_id) if isinstance(type_name_or_id, str) else type_name_or_id
        )
        resolved = self._strip(type_id)
        if resolved == 0 or self._type(resolved).kind not in _COMPOSITES:
            kind = "void" if resolved == 0 else KIND_NAMES[self._type(resolved).kind]
            what = (
                type_name_or_id
                if isinstance(type_name_or_id, str)
                else self.type_name(type_name_or_id)
            )
            if resolved and self._type(resolved).kind == BTF_KIND_FWD:
                raise BTFLookupError(f"{what!r} is only declared (FWD) in {self.source}")
            raise BTFLookupError(f"{what!r} is a {kind}, not a struct or union")
        return resolved

    def _find_member(self, type_id: int, name: str, depth: int = 0) -> _Member | None:
        """A member by name, looking through anonymous struct/union members."""
        if depth > _MAX_CHAIN:
            raise BTFFormatError(f"{self.source}: anonymous member nesting too deep")
        anonymous = []
        for m in self._members(type_id):
            if m.name == name:
                return m
            if not m.name:
                anonymous.append(m)
        for m in anonymous:
            inner = self._strip(m.type_id)
            if inner and self._type(inner).kind in _COMPOSITES:
                found = self._find_member(inner, name, depth + 1)
                if found is not None:
                    return found._replace(bit_offset=found.bit_offset + m.bit_offset)
        return None

    def _resolve_member(self, struct_name: str, member: str) -> _Member:
        """Follow a dotted member path; the result's bit offset is from the outer struct."""
        if not member or any(not part for part in member.split(".")):
            raise BTFLookupError(f"bad member path {member!r} in {struct_name!r}")
        type_id = self._composite(struct_name)
        where = self.type_name(type_id)
        bit_offset = 0
        found: _Member | None = None
        for part in member.split("."):
            if found is not None:
                try:
                    type_id = self._composite(found.type_id)
                except BTFLookupError:
                    raise BTFLookupError(
                        f"{where}.{found.name} is {self.type_name(found.type_id)!r}, not a"
                        f" struct or union: cannot take member {part!r}"
                        " (offsets do not go through pointers)"
                    ) from None
                where = f"{where}.{found.name}"
            m = self._find_member(type_id, part)
            if m is None:
                raise BTFLookupError(f"{where} has no member {part!r} (in {self.source})")
            bit_offset += m.bit_offset
            found = m
        assert found is not None
        return found._replace(bit_offset=bit_offset)

    # ------------------------------------------------------------ public API

    def sizeof(self, type_name: str) -> int:
        """``sizeof(type_name)`` in bytes: ``"struct file"``, ``"int"``, ``"size_t"``, ``"T *"``."""
        if type_name.strip().endswith("*"):
            self.find_type(type_name.strip()[:-1])
            return self._pointer_size()
        return self._sizeof_id(self.find_type(type_name))

    def offsetof(self, struct: str, member: str) -> int:
        """``offsetof(struct, member)`` in bytes; ``member`` may be a dotted path.

        Anonymous unions and structs are looked through as C does.  A bitfield
        has no byte offset: asking for one raises :class:`BTFLookupError`
        (use :meth:`member_bits`).
        """
        m = self._resolve_member(struct, member)
        if m.bitfield_size or m.bit_offset % 8:
            raise BTFLookupError(
                f"{struct}.{member} is a bitfield (bit {m.bit_offset}, {m.bitfield_size} bits):"
                " it has no byte offset"
            )
        return m.bit_offset // 8

    def member_bits(self, struct: str, member: str) -> tuple[int, int]:
        """(bit offset, bitfield size) of a member; the size is 0 for a non-bitfield."""
        m = self._resolve_member(struct, member)
        return m.bit_offset, m.bitfield_size

    def member_size(self, struct: str, member: str) -> int:
        """``sizeof(((struct *)0)->member)`` in bytes; a flexible array member is 0."""
        m = self._resolve_member(struct, member)
        if m.bitfield_size:
            raise BTFLookupError(
                f"{struct}.{member} is a {m.bitfield_size}-bit bitfield: it has no byte size"
            )
        return self._sizeof_id(m.type_id)

    def member_type(self, struct: str, member: str) -> str:
        """A C-like spelling of a member's type, e.g. ``"file_ref_t"``."""
        return self.type_name(self._resolve_member(struct, member).type_id)

    def function_id(self, name: str) -> int:
        """The BTF type id of FUNC ``name`` (what an fentry program's ``attach_btf_id`` is)."""
        ids = self._ids_named(name, frozenset({BTF_KIND_FUNC}))
        if not ids:
            raise BTFLookupError(f"no BTF FUNC {name!r} in {self.source}")
        return ids[0]

    def function_prototypes(self, name: str) -> tuple[Prototype, ...]:
        """The prototype of each BTF FUNC named *name*, each distinct one once, in id order.

        A static function may be recorded once per compilation unit: usually
        with one prototype, but two functions of one name can differ.  Types
        are spelled plain (:meth:`type_name`); a variadic tail is ``"..."``.
        """
        words, _, _ = self._index()
        found: list[Prototype] = []
        for func_id in self._ids_named(name, frozenset({BTF_KIND_FUNC})):
            proto = self._type(self._type(func_id).size_or_type)
            if proto.kind != BTF_KIND_FUNC_PROTO:
                raise BTFFormatError(
                    f"{self.source}: FUNC {name!r} [{func_id}] points to a"
                    f" {KIND_NAMES[proto.kind]}, not a FUNC_PROTO"
                )
            params = []
            for j in range(proto.vlen):
                name_off, type_id = words[proto.word + 3 + 2 * j], words[proto.word + 4 + 2 * j]
                if type_id == 0:
                    params.append(Param("", "..."))
                else:
                    pname = self._string(name_off) if name_off else ""
                    params.append(Param(pname, self.type_name(type_id, plain=True)))
            p = Prototype(self.type_name(proto.size_or_type, plain=True), tuple(params))
            if p not in found:
                found.append(p)
        return tuple(found)


def _canonical_int(spelled: str) -> tuple[str, ...] | None:
    """Order-free spelling of a C integer type: ``unsigned long`` == ``long unsigned int``."""
    words = spelled.split()
    allowed = {"unsigned", "signed", "long", "short", "int", "char"}
    if not words or any(w not in allowed for w in words):
        return None
    if "char" not in words:
        if "int" not in words:
            words.append("int")
        if "signed" in words:
            words.remove("signed")
    return tuple(sorted(words))


_kernel_btf: BTF | None = None


def kernel_btf() -> BTF:
    """The running kernel's BTF, loaded once per process."""
    global _kernel_btf
    if _kernel_btf is None:
        _kernel_btf = BTF.load(VMLINUX_BTF)
    return _kernel_btf
