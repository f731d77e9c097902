"""Raw ``bpf(2)`` and ``perf_event_open(2)``: load a trivial program, try to attach it.

Enough of each interface for doctor to ask the kernel, in milliseconds and
without a compiler, whether a program type loads and attaches: the
two-instruction program ``r0 = 0; exit``, the ``union bpf_attr`` members
that load it and open a raw tracepoint (fentry), and ``struct
perf_event_attr`` for kprobes and tracepoints.  The system-call numbers are
``rawsys.c.syscalls``' (tested against the C headers).  Every call returns
``(result, errno)``; nothing raises for a refusal.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
from ctypes import c_char, c_uint8, c_uint32, c_uint64

from rawsys.c.syscalls import SYS_bpf, SYS_perf_event_open, syscall

__all__ = [
    "BPF_PROG_TYPE_KPROBE",
    "BPF_PROG_TYPE_TRACEPOINT",
    "BPF_PROG_TYPE_TRACING",
    "BPF_TRACE_FENTRY",
    "PERF_TYPE_TRACEPOINT",
    "attach_to_perf_event",
    "bpf_command",
    "errname",
    "load_trivial_program",
    "perf_event_attr",
    "raw_tracepoint_open",
]

# <linux/bpf.h>
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_KPROBE = 2
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FENTRY = 24
# <linux/perf_event.h>
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_SET_BPF = 0x40042408  # _IOW('$', 8, __u32)

# r0 = 0; exit  (BPF_ALU64|BPF_MOV|BPF_K = 0xb7, BPF_JMP|BPF_EXIT = 0x95)
_RETURN_ZERO = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
_LICENSE = ctypes.create_string_buffer(b"GPL")


class bpf_attr_prog_load(ctypes.Structure):
    """The BPF_PROG_LOAD member of ``union bpf_attr`` (<linux/bpf.h>), zero-padded."""

    _fields_ = [
        ("prog_type", c_uint32),
        ("insn_cnt", c_uint32),
        ("insns", c_uint64),
        ("license", c_uint64),
        ("log_level", c_uint32),
        ("log_size", c_uint32),
        ("log_buf", c_uint64),
        ("kern_version", c_uint32),
        ("prog_flags", c_uint32),
        ("prog_name", c_char * 16),
        ("prog_ifindex", c_uint32),
        ("expected_attach_type", c_uint32),
        ("prog_btf_fd", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("func_info", c_uint64),
        ("func_info_cnt", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("line_info", c_uint64),
        ("line_info_cnt", c_uint32),
        ("attach_btf_id", c_uint32),
        ("attach_prog_fd", c_uint32),
        ("_tail", c_uint8 * 36),
    ]


class bpf_attr_raw_tracepoint(ctypes.Structure):
    """The BPF_RAW_TRACEPOINT_OPEN member of ``union bpf_attr``."""

    _fields_ = [("name", c_uint64), ("prog_fd", c_uint32), ("_pad", c_uint32), ("cookie", c_uint64)]


class perf_event_attr(ctypes.Structure):
    """``struct perf_event_attr`` (<linux/perf_event.h>) up to config2, zero-padded to 128."""

    _fields_ = [
        ("type", c_uint32),
        ("size", c_uint32),
        ("config", c_uint64),
        ("sample_period", c_uint64),
        ("sample_type", c_uint64),
        ("read_format", c_uint64),
        ("flags", c_uint64),
        ("wakeup_events", c_uint32),
        ("bp_type", c_uint32),
        ("config1", c_uint64),
        ("config2", c_uint64),
        ("_tail", c_uint8 * 56),
    ]


def _syscall(number: int, *args: object) -> tuple[int, int]:
    """(result, errno) of a raw system call; ENOSYS where this machine has no number for it."""
    if number < 0:
        return -1, errno.ENOSYS
    ctypes.set_errno(0)
    result = syscall(number, *args)
    return result, (ctypes.get_errno() if result < 0 else 0)


def bpf_command(cmd: int, attr: ctypes.Structure) -> int:
    """``bpf(cmd, &attr, sizeof(attr))``: its result (an fd for most commands);
    OSError with the kernel's errno when it fails."""
    result, err = _syscall(SYS_bpf, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        raise OSError(err, os.strerror(err))
    return int(result)


def errname(e: int) -> str:
    """``EPERM (Operation not permitted)``."""
    return f"{errno.errorcode.get(e, str(e))} ({os.strerror(e)})"


def _kernel_version_code() -> int:
    parts = [
        int(x)
        for x in (platform.release().split("-")[0].split(".") + ["0", "0"])[:3]
        if x.isdigit()
    ] + [0, 0, 0]
    return (parts[0] << 16) + (parts[1] << 8) + min(parts[2], 255)


def load_trivial_program(
    prog_type: int, *, expected_attach_type: int = 0, attach_btf_id: int = 0
) -> tuple[int, int]:
    """Load ``r0 = 0; exit`` of ``prog_type``: (fd or -1, errno).  The caller closes the fd."""
    insns = ctypes.create_string_buffer(_RETURN_ZERO, len(_RETURN_ZERO))
    attr = bpf_attr_prog_load()
    attr.prog_type = prog_type
    attr.insn_cnt = len(_RETURN_ZERO) // 8
    attr.insns = ctypes.addressof(insns)
    attr.license = ctypes.addressof(_LICENSE)
    attr.kern_version = _kernel_version_code()  # only pre-5.0 kprobe loads check it
    attr.prog_name = b"rawsys_doctor"
    attr.expected_attach_type = expected_attach_type
    attr.attach_btf_id = attach_btf_id
    return _syscall(SYS_bpf, BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))


def _perf_event_open(attr: perf_event_attr) -> tuple[int, int]:
    attr.size = ctypes.sizeof(attr)
    return _syscall(SYS_perf_event_open, ctypes.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)


def attach_to_perf_event(attr: perf_event_attr, prog_fd: int) -> tuple[bool, str]:
    """Open the perf event *attr* describes and attach program *prog_fd*: (ok, why not)."""
    pfd, err = _perf_event_open(attr)
    if pfd < 0:
        return False, f"perf_event_open: {errname(err)}"
    try:
        fcntl.ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog_fd)
    except OSError as e:
        return False, f"PERF_EVENT_IOC_SET_BPF: {errname(e.errno or 0)}"
    finally:
        os.close(pfd)
    return True, ""


def raw_tracepoint_open(prog_fd: int) -> tuple[int, int]:
    """Attach a loaded fentry program (``BPF_RAW_TRACEPOINT_OPEN``): (link fd or -1, errno)."""
    attr = bpf_attr_raw_tracepoint(name=0, prog_fd=prog_fd)
    return _syscall(SYS_bpf, BPF_RAW_TRACEPOINT_OPEN, ctypes.byref(attr), ctypes.sizeof(attr))
