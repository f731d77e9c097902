"""The BTF reader against bpftool and hand-built BTF, and the kernel facts cache."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawsys.trace.kernel import btf as btfmod
from rawsys.trace.kernel.btf import BTF, BTFFormatError, BTFLookupError, kernel_btf

VMLINUX = "/sys/kernel/btf/vmlinux"
HAVE_VMLINUX = os.path.exists(VMLINUX)
needs_vmlinux = pytest.mark.skipif(
    not HAVE_VMLINUX, reason="kernel has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)"
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")

# ------------------------------------------------------------------ helpers


class BTFBuilder:
    """Writes BTF blobs by hand, following Documentation/bpf/btf.rst."""

    def __init__(self, endian: str = "<") -> None:
        self.endian = endian
        self.strings = bytearray(b"\0")
        self.types: list[bytes] = []

    def name(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(
        self,
        kind: int,
        name: str = "",
        *,
        vlen: int = 0,
        kflag: int = 0,
        st: int = 0,
        extra: bytes = b"",
    ) -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.types.append(struct.pack(self.endian + "III", self.name(name), info, st) + extra)
        return len(self.types)

    def u32s(self, *values: int) -> bytes:
        return struct.pack(self.endian + "I" * len(values), *values)

    def int_(self, name: str, size: int) -> int:
        return self.add(btfmod.BTF_KIND_INT, name, st=size, extra=self.u32s(size * 8))

    def composite(
        self, name: str, size: int, members: list[tuple[str, int, int, int]], *, union: bool = False
    ) -> int:
        """members: (name, type id, bit offset, bitfield size)."""
        kflag = int(any(m[3] for m in members))
        extra = b"".join(
            self.u32s(self.name(n), t, (bits << 24 | off) if kflag else off)
            for n, t, off, bits in members
        )
        kind = btfmod.BTF_KIND_UNION if union else btfmod.BTF_KIND_STRUCT
        return self.add(kind, name, vlen=len(members), kflag=kflag, st=size, extra=extra)

    def build(self) -> bytes:
        types = b"".join(self.types)
        header = struct.pack(
            self.endian + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings)
        )
        return header + types + bytes(self.strings)


def sample_btf(endian: str = "<") -> bytes:
    """A blob with every kind, anonymous members, a bitfield, typedefs and a flexible array."""
    b = BTFBuilder(endian)
    k = btfmod
    int_t = b.int_("int", 4)  # 1
    ulong = b.int_("long unsigned int", 8)  # 2
    char = b.int_("char", 1)  # 3
    inner = b.composite("inner", 16, [("a", int_t, 0, 0), ("b", ulong, 64, 0)])  # 4
    inner_ptr = b.add(k.BTF_KIND_PTR, st=inner)  # 5
    deep = b.composite("", 4, [("deep", int_t, 0, 0)])  # 6 anonymous struct
    anon_union = b.composite("", 4, [("u1", int_t, 0, 0), ("", deep, 0, 0)], union=True)  # 7
    idx = int_t
    arr = b.add(k.BTF_KIND_ARRAY, extra=b.u32s(char, idx, 0))  # 8: char[0]
    arr3 = b.add(k.BTF_KIND_ARRAY, extra=b.u32s(inner_ptr, idx, 3))  # 9: struct inner *[3]
    outer = b.composite(
        "outer",
        88,
        [
            ("first", int_t, 0, 0),
            ("", anon_union, 32, 0),
            ("nested", inner, 64, 0),
            ("flags", int_t, 192, 3),
            ("mode", int_t, 195, 5),
            ("p", inner_ptr, 256, 0),
            ("ptrs", arr3, 320, 0),
            ("tail", arr, 704, 0),
        ],
    )  # 10
    outer_t = b.add(k.BTF_KIND_TYPEDEF, "outer_t", st=outer)  # 11
    b.add(k.BTF_KIND_CONST, st=outer_t)  # 12
    b.add(k.BTF_KIND_VOLATILE, st=int_t)  # 13
    b.add(k.BTF_KIND_RESTRICT, st=inner_ptr)  # 14
    b.add(k.BTF_KIND_FWD, "opaque")  # 15
    proto = b.add(
        k.BTF_KIND_FUNC_PROTO,
        vlen=2,
        st=int_t,
        extra=b.u32s(b.name("x"), int_t, b.name("y"), inner_ptr),
    )  # 16
    b.add(k.BTF_KIND_FUNC, "my_func", st=proto)  # 17
    b.add(k.BTF_KIND_ENUM, "color", vlen=2, st=4, extra=b.u32s(b.name("RED"), 0, b.name("BLUE"), 1))
    b.add(k.BTF_KIND_ENUM64, "big", vlen=1, st=8, extra=b.u32s(b.name("HUGE"), 1, 2))
    var = b.add(k.BTF_KIND_VAR, "counter", st=int_t, extra=b.u32s(1))  # 20
    b.add(k.BTF_KIND_DATASEC, ".data", vlen=1, st=4, extra=b.u32s(var, 0, 4))
    b.add(k.BTF_KIND_FLOAT, "double", st=8)
    b.add(k.BTF_KIND_DECL_TAG, "tag", st=outer, extra=b.u32s(0xFFFFFFFF))
    b.add(k.BTF_KIND_TYPE_TAG, "user", st=int_t)
    b.add(k.BTF_KIND_TYPEDEF, "size_t", st=ulong)
    return b.build()


def bpftool_structs() -> dict[str, tuple[int, dict[str, tuple[int, int]]]]:
    """struct name -> (size, {member: (bits_offset, bitfield_size)}) from bpftool's raw dump."""
    tool = shutil.which("bpftool") or (
        "/usr/sbin/bpftool" if os.path.exists("/usr/sbin/bpftool") else None
    )
    if tool is None:
        pytest.skip("bpftool is not installed (Debian package bpftool): nothing to compare with")
    out = subprocess.run(
        [tool, "btf", "dump", "file", VMLINUX, "format", "raw"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    structs: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
    head = re.compile(r"^\[\d+\] (STRUCT|UNION) '([^']*)' size=(\d+) vlen=\d+")
    member = re.compile(r"^\t'([^']*)' type_id=\d+ bits_offset=(\d+)(?: bitfield_size=(\d+))?")
    current: dict[str, tuple[int, int]] | None = None
    for line in out.splitlines():
        m = head.match(line)
        if m:
            current = None
            if m.group(1) == "STRUCT" and m.group(2) != "(anon)" and m.group(2) not in structs:
                current = {}
                structs[m.group(2)] = (int(m.group(3)), current)
            continue
        if current is not None:
            mm = member.match(line)
            if mm:
                current[mm.group(1)] = (int(mm.group(2)), int(mm.group(3) or 0))
            elif not line.startswith("\t"):
                current = None
    return structs


@pytest.fixture(scope="module")
def bpftool_dump() -> dict[str, tuple[int, dict[str, tuple[int, int]]]]:
    return bpftool_structs()


COMPARED_STRUCTS = [
    "task_struct",
    "files_struct",
    "fdtable",
    "file",
    "inode",
    "path",
    "dentry",
    "qstr",
    "scm_fp_list",
    "scm_cookie",
    "socket",
    "super_block",
    "msghdr",
    "user_msghdr",
    "cmsghdr",
]

# -------------------------------------------------------- the running kernel


@needs_vmlinux
@pytest.mark.parametrize("name", COMPARED_STRUCTS)
def test_offsets_agree_with_bpftool(
    name: str, bpftool_dump: dict[str, tuple[int, dict[str, tuple[int, int]]]]
) -> None:
    b = kernel_btf()
    size, members = bpftool_dump[name]
    assert b.sizeof(f"struct {name}") == size
    checked = 0
    for member, (bits, bitfield) in members.items():
        if member == "(anon)":
            continue
        if bitfield or bits % 8:
            assert b.member_bits(f"struct {name}", member) == (bits, bitfield)
            with pytest.raises(BTFLookupError, match="bitfield"):
                b.offsetof(f"struct {name}", member)
        else:
            assert b.offsetof(f"struct {name}", member) == bits // 8, member
        checked += 1
    assert checked > 0


@needs_vmlinux
def test_dotted_paths_through_anonymous_unions(
    bpftool_dump: dict[str, tuple[int, dict[str, tuple[int, int]]]],
) -> None:
    b = kernel_btf()
    path_dentry = bpftool_dump["path"][1]["dentry"][0] // 8
    f_path = b.offsetof("struct file", "f_path")  # inside an anonymous union on 6.18
    assert b.offsetof("struct file", "f_path.dentry") == f_path + path_dentry
    assert b.offsetof("struct dentry", "d_name.name") == (
        b.offsetof("struct dentry", "d_name") + b.offsetof("struct qstr", "name")
    )
    assert b.member_size("struct qstr", "len") == 4  # anonymous union of struct {hash; len}


@needs_vmlinux
def test_base_type_spellings() -> None:
    b = kernel_btf()
    assert b.sizeof("unsigned long") == b.sizeof("long unsigned int") == 8
    assert b.sizeof("int") == 4
    assert b.sizeof("short unsigned int") == b.sizeof("unsigned short") == 2
    assert b.sizeof("struct file *") == 8
    assert b.sizeof("size_t") == 8
    assert b.find_type("struct file") and b.find_type("int")
    with pytest.raises(BTFLookupError, match="surely_no_such_struct"):
        b.find_type("struct surely_no_such_struct")


@needs_vmlinux
def test_kernel_btf_is_cached_and_fast() -> None:
    assert kernel_btf() is kernel_btf()
    start = time.monotonic()
    fresh = BTF.load(VMLINUX)
    fresh.offsetof("struct scm_fp_list", "fp")
    assert time.monotonic() - start < 1.0


# ----------------------------------------------------------------- bad names


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda b: b.sizeof("struct no_such_struct_xyz"), "no_such_struct_xyz"),
        (lambda b: b.sizeof("no_such_typedef_xyz"), "no_such_typedef_xyz"),
        (lambda b: b.offsetof("struct outer", "no_such_member"), "no_such_member"),
        (lambda b: b.offsetof("struct outer", "nested.zzz"), "zzz"),
        (lambda b: b.offsetof("struct outer", "p.a"), "a"),  # through a pointer
        (lambda b: b.offsetof("struct outer", ""), "outer"),
        (lambda b: b.offsetof("struct outer", "first..x"), "first..x"),
        (lambda b: b.member_size("struct nope_xyz", "x"), "nope_xyz"),
        (lambda b: b.offsetof("int", "x"), "int"),
        (lambda b: b.sizeof("struct opaque"), "opaque"),  # FWD: no size
        (lambda b: b.offsetof("struct outer", "flags"), "flags"),  # bitfield
        (lambda b: b.member_size("struct outer", "mode"), "mode"),
        (lambda b: b.sizeof(""), "empty"),
    ],
)
def test_bad_names_raise_lookup_error_naming_them(call: object, name: str) -> None:
    b = BTF(sample_btf())
    with pytest.raises(BTFLookupError) as info:
        call(b)  # type: ignore[operator]
    assert isinstance(info.value, KeyError) and isinstance(info.value, LookupError)
    assert name in str(info.value)


@needs_vmlinux
def test_bad_names_on_the_kernel() -> None:
    b = kernel_btf()
    with pytest.raises(LookupError, match="no_such_member_xyz"):
        b.offsetof("struct file", "no_such_member_xyz")
    with pytest.raises(KeyError, match="struct not_a_struct_xyz"):
        b.offsetof("struct not_a_struct_xyz", "x")
    with pytest.raises(BTFLookupError, match="pointer"):
        b.offsetof("struct file", "f_inode.i_ino")
    with pytest.raises(BTFLookupError, match="not_a_function_xyz"):
        b.function_id("not_a_function_xyz")


# -------------------------------------------------------- hand-built BTF


@pytest.mark.parametrize("endian", ["<", ">"])
def test_sample_btf_layout(endian: str) -> None:
    b = BTF(sample_btf(endian))
    assert b.type_count == 25
    assert b.sizeof("struct outer") == b.sizeof("outer_t") == b.sizeof("outer") == 88
    assert b.sizeof("struct inner") == 16
    assert b.sizeof("int") == 4 and b.sizeof("unsigned long") == 8 and b.sizeof("size_t") == 8
    assert b.offsetof("struct outer", "u1") == 4  # in an anonymous union
    assert b.offsetof("outer_t", "deep") == 4  # anonymous struct in anonymous union
    assert b.offsetof("struct outer", "nested.b") == 16
    assert b.member_size("struct outer", "nested") == 16
    assert b.member_bits("struct outer", "flags") == (192, 3)
    assert b.member_bits("struct outer", "mode") == (195, 5)
    assert b.member_bits("struct outer", "p") == (256, 0)
    assert b.offsetof("struct outer", "ptrs") == 40
    assert b.member_size("struct outer", "ptrs") == 24
    assert b.offsetof("struct outer", "tail") == 88 and b.member_size("struct outer", "tail") == 0
    assert b.member_type("struct outer", "ptrs") == "struct inner *[3]"
    assert b.sizeof("enum color") == 4 and b.sizeof("enum big") == 8
    assert b.sizeof("double") == 8
    assert b.function_id("my_func") > 0
    assert b.find_type("struct opaque") > 0
    with pytest.raises(BTFLookupError):
        b.find_type("union outer")


def test_typedef_loop_is_a_format_error() -> None:
    b = BTFBuilder()
    b.add(btfmod.BTF_KIND_TYPEDEF, "loop", st=1)
    with pytest.raises(BTFFormatError, match="loop"):
        BTF(b.build()).sizeof("loop")


def test_dangling_type_reference_is_a_format_error() -> None:
    b = BTFBuilder()
    b.add(btfmod.BTF_KIND_TYPEDEF, "dangling", st=99)
    with pytest.raises(BTFFormatError, match="99"):
        BTF(b.build()).sizeof("dangling")


# ---------------------------------------------------- truncated and corrupt


def corrupt_variants() -> list[tuple[str, bytes]]:
    good = sample_btf()
    hdr = 24
    bad_kind = bytearray(good)
    bad_kind[hdr + 4 : hdr + 8] = struct.pack("<I", 0)  # type 1: kind 0 (UNKN)
    bad_name = bytearray(good)
    bad_name[hdr : hdr + 4] = struct.pack("<I", 10**6)
    bad_vlen = bytearray(good)
    bad_vlen[hdr + 4 : hdr + 8] = struct.pack("<I", (btfmod.BTF_KIND_STRUCT << 24) | 0xFFFF)
    bad_version = bytearray(good)
    bad_version[2] = 7
    bad_str = bytearray(good)
    bad_str[-1] = ord("x")
    odd_len = bytearray(good)
    odd_len[12:16] = struct.pack("<I", struct.unpack_from("<I", good, 12)[0] - 2)
    return [
        ("empty", b""),
        ("short", good[:10]),
        ("bad magic", b"\x00\x00" + good[2:]),
        ("header only", good[:24]),
        ("cut in types", good[:60]),
        ("cut in strings", good[:-3]),
        ("kind 0", bytes(bad_kind)),
        ("name offset", bytes(bad_name)),
        ("vlen past end", bytes(bad_vlen)),
        ("version", bytes(bad_version)),
        ("unterminated strings", bytes(bad_str)),
        ("type_len not words", bytes(odd_len)),
    ]


@pytest.mark.parametrize("label, data", corrupt_variants(), ids=[v[0] for v in corrupt_variants()])
def test_corrupt_btf_raises_format_error(label: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    with pytest.raises(BTFFormatError) as info:
        BTF.load(str(path)).sizeof("struct outer")
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


@needs_vmlinux
@pytest.mark.parametrize("keep", [0, 23, 24, 4096, 1 << 20])
def test_truncated_vmlinux_raises_format_error(keep: int, tmp_path: Path) -> None:
    with open(VMLINUX, "rb") as f:
        data = f.read(keep)
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    with pytest.raises(BTFFormatError, match="truncated|too short"):
        BTF.load(str(path))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzzed_btf_never_crashes(edits: list[tuple[int, int]]) -> None:
    data = bytearray(sample_btf())
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        b = BTF(bytes(data))
        b.sizeof("struct outer")
        b.offsetof("outer_t", "nested.b")
        b.member_size("struct outer", "ptrs")
        b.function_id("my_func")
        b.type_name(10)
    except (BTFFormatError, BTFLookupError):
        pass


def test_function_id() -> None:
    b = BTF(sample_btf())
    assert b.function_id("my_func") == 17
    with pytest.raises(BTFLookupError, match="outer"):
        b.function_id("outer")  # a struct, not a FUNC
