"""Loops the verifier checks once: ``bpf_loop`` callbacks linked into bcc's programs.

A bounded loop is verified one iteration at a time: the loop over a
message's 253 possible fds cost the verifier about 250,000-680,000
instructions per program, most of the tracer's start-up.  ``bpf_loop()``
(Linux 5.17) runs a callback *n* times and the verifier checks the callback
once.  bcc compiles such a callback but cannot pass its address (it links
no function references: the ``ld_imm64`` stays 0 and the kernel refuses
it, "R2 type=scalar expected=func"), so the C names each callback with a
marker constant instead (``LOOP(n, name)`` in ``files.bpf.h``, the markers
generated here: :data:`CALLBACKS`), and :func:`load_linked` does the
linker's work before loading: it appends each callback's instructions
(bcc compiles it as a function of its own: ``long NAME(u64 index)``) to
the program, turns each marker into a ``BPF_PSEUDO_FUNC`` reference, and
gives the kernel the BTF ``func_info`` it requires for a program with
subprograms.  Programs without markers are loaded by bcc as usual.
"""

from __future__ import annotations

import ctypes
import os
import struct
from ctypes import c_uint32, c_uint64
from typing import Any

from rawsys.trace.doctor.bpfcalls import BPF_PROG_LOAD, bpf_attr_prog_load, bpf_command

__all__ = ["CALLBACKS", "LinkError", "callback_defines", "is_callback", "load_linked"]

# Every bpf_loop callback of the C sources, by name; each gets a marker.
CALLBACKS: tuple[str, ...] = (
    "loop__files_into_event",
    "loop__resolve_into_sent",
    "loop__walk_user_cmsg",
    "loop__fill_lost_file",
    "loop__walk_queue",
    "loop__find_exit_sock",
)
_MARK_BASE = 0x7261_7773_0000_0000  # "raws" in the upper half: not a value the C loads
BPF_BTF_LOAD = 18  # <linux/bpf.h>
BPF_PSEUDO_FUNC = 4  # <linux/bpf.h>: ld_imm64 src_reg, the imm is a subprogram's offset
_LD_IMM64 = 0x18  # BPF_LD | BPF_DW | BPF_IMM
_INSN = struct.Struct("<BBhi")


class LinkError(RuntimeError):
    """A program's callbacks could not be linked or loaded; the message says why."""


def is_callback(name: bytes | str) -> bool:
    """A bpf_loop callback (not a program of its own)."""
    text = name.decode() if isinstance(name, bytes) else name
    return text.startswith("loop__")


def callback_defines() -> dict[str, int]:
    """``LOOP_MARK_<name>``: the marker the C loads in place of each callback's address."""
    return {f"LOOP_MARK_{name[len('loop__'):].upper()}": _MARK_BASE + i
            for i, name in enumerate(CALLBACKS)}


def _marks() -> dict[int, str]:
    return {_MARK_BASE + i: name for i, name in enumerate(CALLBACKS)}


def _code(bpf: Any, name: bytes) -> bytes:
    from bcc.libbcc import lib

    start = lib.bpf_function_start(bpf.module, name)
    if not start:
        raise LinkError(f"bcc compiled no function {name.decode()}")
    return ctypes.string_at(start, lib.bpf_function_size(bpf.module, name))


def _ld_imm64_marks(code: bytes) -> list[tuple[int, str]]:
    """(instruction index, callback) of each marker ``ld_imm64`` in *code*."""
    marks = _marks()
    out = []
    for k in range(0, len(code) // 8 - 1):
        op, _regs, _off, lo = _INSN.unpack_from(code, 8 * k)
        if op != _LD_IMM64:
            continue
        hi = _INSN.unpack_from(code, 8 * (k + 1))[3]
        value = ((hi & 0xFFFF_FFFF) << 32) | (lo & 0xFFFF_FFFF)
        if value in marks:
            out.append((k, marks[value]))
    return out


def _link(bpf: Any, name: bytes) -> tuple[bytes, list[tuple[int, str]]] | None:
    """The program's instructions with its callbacks appended and referenced, and
    (first instruction, name) of each function in it; None without callbacks."""
    code = bytearray(_code(bpf, name))
    found = _ld_imm64_marks(bytes(code))
    if not found:
        return None
    funcs: list[tuple[int, str]] = [(0, name.decode())]
    starts: dict[str, int] = {}
    for _k, cb in found:
        if cb not in starts:
            cb_code = _code(bpf, cb.encode())
            if _ld_imm64_marks(cb_code):
                raise LinkError(f"{cb} calls bpf_loop itself: nested callbacks are not linked")
            starts[cb] = len(code) // 8
            funcs.append((starts[cb], cb))
            code += cb_code
    for k, cb in found:
        op, regs, off, _ = _INSN.unpack_from(code, 8 * k)
        dst = regs & 0x0F
        _INSN.pack_into(code, 8 * k, op, dst | (BPF_PSEUDO_FUNC << 4), off, starts[cb] - (k + 1))
        nop, nregs, noff, _ = _INSN.unpack_from(code, 8 * (k + 1))
        _INSN.pack_into(code, 8 * (k + 1), nop, nregs, noff, 0)
    return bytes(code), funcs


def _prog_name(name: bytes) -> bytes:
    """The kernel's 15-byte name of the program, as bcc gives it (its prefix dropped)."""
    for prefix in (b"kprobe__", b"kretprobe__", b"tracepoint__", b"raw_tracepoint__"):
        if name.startswith(prefix):
            return name[len(prefix):][:15]
    return name[:15]


def _btf_for(funcs: list[tuple[int, str]]) -> bytes:
    """A BTF blob with one static ``long NAME(void)`` per function: what func_info names."""
    strings = bytearray(b"\0long\0")
    name_off = []
    for _, fname in funcs:
        name_off.append(len(strings))
        strings += fname.encode() + b"\0"
    types = bytearray()
    # [1] long: BTF_KIND_INT (1), 8 bytes, signed, 64 bits.
    types += struct.pack("<III", 1, 1 << 24, 8) + struct.pack("<I", (1 << 24) | 64)
    # [2] long (void): BTF_KIND_FUNC_PROTO (13), no parameters.
    types += struct.pack("<III", 0, 13 << 24, 1)
    # [3..] each function: BTF_KIND_FUNC (12), static linkage, of type [2].
    for off in name_off:
        types += struct.pack("<III", off, 12 << 24, 2)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + bytes(types) + bytes(strings)


class _BtfLoad(ctypes.Structure):
    _fields_ = [
        ("btf", c_uint64),
        ("btf_log_buf", c_uint64),
        ("btf_size", c_uint32),
        ("btf_log_size", c_uint32),
        ("btf_log_level", c_uint32),
    ]


def load_linked(
    bpf: Any, name: bytes, prog_type: int, log_level: int = 0
) -> tuple[int, str] | None:
    """Load program *name* of the compiled module *bpf* with its callbacks linked.

    Returns (fd, verifier log) -- the caller owns the fd -- or None when the
    program uses no callback (bcc loads it then).  Raises OSError with the
    verifier's message when the kernel refuses it.
    """
    from bcc.libbcc import lib

    linked = _link(bpf, name)
    if linked is None:
        return None
    code, funcs = linked
    btf = _btf_for(funcs)
    blob = ctypes.create_string_buffer(btf, len(btf))
    btf_attr = _BtfLoad(btf=ctypes.addressof(blob), btf_size=len(btf))
    btf_fd = bpf_command(BPF_BTF_LOAD, btf_attr)
    try:
        insns = ctypes.create_string_buffer(code, len(code))
        info = (c_uint32 * (2 * len(funcs)))(*[v for i, (at, _) in enumerate(funcs)
                                                 for v in (at, 3 + i)])
        log = ctypes.create_string_buffer(1 << 20 if log_level & 3 else 1 << 16)
        license_ = ctypes.create_string_buffer(lib.bpf_module_license(bpf.module) or b"GPL")
        attr = bpf_attr_prog_load()
        attr.prog_type = prog_type
        attr.insn_cnt = len(code) // 8
        attr.insns = ctypes.addressof(insns)
        attr.license = ctypes.addressof(license_)
        attr.kern_version = lib.bpf_module_kern_version(bpf.module)
        attr.prog_name = _prog_name(name)
        attr.prog_btf_fd = btf_fd
        attr.func_info_rec_size = 8
        attr.func_info = ctypes.addressof(info)
        attr.func_info_cnt = len(funcs)
        attr.log_level = log_level
        attr.log_size = len(log) if log_level else 0
        attr.log_buf = ctypes.addressof(log) if log_level else 0
        try:
            fd = bpf_command(BPF_PROG_LOAD, attr)
        except OSError as e:
            if not log_level:
                # Load again only to say why.
                attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
                try:
                    os.close(bpf_command(BPF_PROG_LOAD, attr))
                except OSError:
                    pass
            why = log.value[-800:].decode(errors="replace")
            raise OSError(e.errno, f"{name.decode()}: {e.strerror}: {why}") from None
        return fd, log.value.decode(errors="replace")
    finally:
        os.close(btf_fd)
