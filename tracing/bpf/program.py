"""Render the BPF C of each backend, with every constant generated from Python.

Nothing numeric is written twice: socket constants come from
``rawsys.c.constants``, user-space ABI layouts (``msghdr``, ``mmsghdr``,
``cmsghdr``) from ``rawsys.c.structs``, the event layout from
``rawsys.trace.events``, and kernel struct offsets from the running kernel's BTF
(``rawsys.trace.kernel.btf.kernel_facts``).  The C sources (``probe_*.c`` next to this
file) only use the ``#define``s rendered here; they never dereference a
kernel struct by header layout, since the headers bcc compiles against may
describe another kernel.

Filters are typed: :class:`Filters` validates PIDs/TIDs as ints and the
command name as at most 15 bytes, and renders them as C comparisons, so the
kernel drops unwanted events before they reach the ring buffer.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import stat
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable, Mapping, Sequence

from rawsys.c import constants
from rawsys.c.cmsg import CMSG_ALIGN, CMSG_LEN, CMSG_SPACE
from rawsys.c.structs import cmsghdr, mmsghdr, msghdr
from rawsys.trace import events

__all__ = [
    "BACKENDS",
    "Filters",
    "ProgramError",
    "kernel_msghdr_offsets",
    "probe_function_names",
    "render_program",
    "c_struct",
]

BACKENDS: tuple[str, ...] = ("tracepoint", "kprobe", "fentry")

# Bounds of the in-kernel loops (the verifier needs every loop bounded).
MAX_CMSGS = 16  # control messages walked per msghdr
MAX_MMSG = 8  # messages of one sendmmsg/recvmmsg vector examined
# fds resolved per message of a sendmmsg/recvmmsg vector (the nested loops must
# stay within the verifier's budget); more are counted in fds_seen and the
# event is flagged EV_FLAG_FDS_DROPPED.
MMSG_FD_SLOTS = 32
RING_PAGES_DEFAULT = 16384  # 64 MiB with 4 KiB pages: a burst of ~450k events waits there
RING_WAKEUP_EVENTS = 256  # events per CPU between two wake-ups of the reader
MAX_INFLIGHT = 4096  # threads inside a traced syscall at the same time
MAX_SENDING = 1024  # of which inside sendmsg with fds (4 KiB of fd/file slots each)
USER_WINDOW_LEN = 256  # bytes around a user msghdr read at once (a power of two)
MAX_FILTER_IDS = 1024  # PIDs (and TIDs) one session can filter on
PID_MAX_LIMIT = 1 << 22  # include/linux/threads.h, PID_MAX_LIMIT on 64-bit

_SOURCES = {
    "tracepoint": "tracepoint.bpf.c",
    "kprobe": "kprobe.bpf.c",
    "fentry": "fentry.bpf.c",
}


class ProgramError(ValueError):
    """A filter or backend the program cannot be rendered for."""


def _check_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProgramError(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    if not 0 < value < PID_MAX_LIMIT:
        raise ProgramError(f"{what} {value} is out of range 1..{PID_MAX_LIMIT - 1}")
    return value


@dataclass(frozen=True)
class Filters:
    """What to trace: process ids, thread ids, command name; empty means everything."""

    pids: tuple[int, ...] = ()
    tids: tuple[int, ...] = ()
    comm: str | None = None
    comm_bytes: bytes = field(init=False, repr=False, default=b"")

    def __post_init__(self) -> None:
        object.__setattr__(self, "pids", tuple(_check_id(p, "PID") for p in self.pids))
        object.__setattr__(self, "tids", tuple(_check_id(t, "TID") for t in self.tids))
        for what, ids in (("PIDs", self.pids), ("TIDs", self.tids)):
            if len(set(ids)) > MAX_FILTER_IDS:
                raise ProgramError(f"at most {MAX_FILTER_IDS} {what} can be filtered on")
        if self.comm is not None:
            if not isinstance(self.comm, str):
                raise ProgramError(f"comm must be a str, got {type(self.comm).__name__}")
            raw = self.comm.encode()
            if not raw or b"\0" in raw:
                raise ProgramError(f"comm {self.comm!r} must be non-empty without NUL bytes")
            if len(raw) >= events.COMM_LEN:
                raise ProgramError(
                    f"comm {self.comm!r} is longer than the kernel keeps "
                    f"({events.COMM_LEN - 1} bytes, TASK_COMM_LEN)"
                )
            object.__setattr__(self, "comm_bytes", raw)

    @classmethod
    def of(
        cls, pids: Iterable[int] = (), tids: Iterable[int] = (), comm: str | None = None
    ) -> Filters:
        return cls(tuple(pids), tuple(tids), comm)

    def c_source(self) -> str:
        """The filter functions: hash-map look-ups of typed ints, byte compares of the name.

        The PID/TID sets live in maps (``pid_filter``, ``tid_filter``) that
        :meth:`map_entries` fills after loading, so a session can add a pid
        (a forked child) while it runs.
        """
        # Compare every byte up to and including the terminating NUL.
        comm_test = " && ".join(
            f"comm[{i}] == {b}" for i, b in enumerate(self.comm_bytes + b"\0")
        ) or "1"
        return (
            f"BPF_HASH(pid_filter, u32, u8, {MAX_FILTER_IDS});\n"
            f"BPF_HASH(tid_filter, u32, u8, {MAX_FILTER_IDS});\n"
            "static __always_inline int pid_wanted(u32 tgid) "
            "{ return pid_filter.lookup(&tgid) != 0; }\n"
            "static __always_inline int tid_wanted(u32 tid) "
            "{ return tid_filter.lookup(&tid) != 0; }\n"
            "static __always_inline int comm_wanted(const unsigned char *comm) { return "
            + comm_test
            + "; }\n"
        )

    def map_entries(self) -> dict[str, tuple[int, ...]]:
        """What to put in the filter maps once the program is loaded."""
        return {"pid_filter": self.pids, "tid_filter": self.tids}


# --------------------------------------------------------------------- structs
_CTYPE_NAMES: Mapping[Any, str] = {
    ctypes.c_uint64: "u64",
    ctypes.c_int64: "s64",
    ctypes.c_uint32: "u32",
    ctypes.c_int32: "s32",
    ctypes.c_uint16: "u16",
    ctypes.c_int16: "s16",
    ctypes.c_uint8: "u8",
    ctypes.c_char: "char",
}

_STRUCT_NAMES: Mapping[Any, str] = {
    events.RawFile: "fd_file",
    events.RawEvent: "fd_event",
}


def c_struct(struct: type[ctypes.Structure], name: str) -> str:
    """A C ``struct`` declaration with the layout of a ctypes structure, size asserted."""
    lines = [f"struct {name} {{"]
    for fname, ftype in struct._fields_:  # type: ignore[misc]
        length = getattr(ftype, "_length_", None)
        base = getattr(ftype, "_type_", None) if length is not None else ftype
        if base in _STRUCT_NAMES:
            ctype = f"struct {_STRUCT_NAMES[base]}"
        elif base in _CTYPE_NAMES:
            ctype = _CTYPE_NAMES[base]
        else:
            raise ProgramError(f"no C spelling for {ftype!r} in {struct.__name__}.{fname}")
        suffix = f"[{length}]" if length is not None else ""
        lines.append(f"    {ctype} {fname}{suffix};")
    lines.append("};")
    lines.append(
        f'_Static_assert(sizeof(struct {name}) == {ctypes.sizeof(struct)}, '
        f'"struct {name} differs from rawsys.trace.events.{struct.__name__}");'
    )
    return "\n".join(lines)


# --------------------------------------------------------------------- defines
def _offset(struct: type[ctypes.Structure], member: str) -> int:
    offset: int = getattr(struct, member).offset
    return offset


def _constant_defines() -> dict[str, int]:
    return {
        "SOL_SOCKET": constants.SOL_SOCKET,
        "SCM_RIGHTS": constants.SCM_RIGHTS,
        "SCM_MAX_FD": constants.SCM_MAX_FD,
        "MSG_PEEK": constants.MSG_PEEK,
        "MSG_CTRUNC": constants.MSG_CTRUNC,
        "MSG_CMSG_CLOEXEC": constants.MSG_CMSG_CLOEXEC,
        "O_CLOEXEC": constants.O_CLOEXEC,
        # <sys/stat.h>, from Python's stat module.
        "S_IFMT": stat.S_IFMT(0o777777),
        "S_IFIFO": stat.S_IFIFO,
        "S_IFSOCK": stat.S_IFSOCK,
        # User-space ABI, from the ctypes structures of rawsys.c.
        "USER_MSGHDR_CONTROL": _offset(msghdr, "msg_control"),
        "USER_MSGHDR_CONTROLLEN": _offset(msghdr, "msg_controllen"),
        "USER_MSGHDR_FLAGS": _offset(msghdr, "msg_flags"),
        # msg_control, msg_controllen and msg_flags are read in one go.
        "USER_MSGHDR_SPAN_LEN": _offset(msghdr, "msg_flags") + ctypes.sizeof(ctypes.c_int)
        - _offset(msghdr, "msg_control"),
        # One user read of the msghdr's page-bounded neighbourhood also gets a
        # control buffer kept next to it (C programs keep both on the stack).
        "USER_PAGE_SIZE": mmap.PAGESIZE,
        "USER_WINDOW_LEN": USER_WINDOW_LEN,
        "USER_WINDOW_BEFORE": USER_WINDOW_LEN // 2,
        "USER_MMSGHDR_SIZE": ctypes.sizeof(mmsghdr),
        "USER_MMSGHDR_LEN": _offset(mmsghdr, "msg_len"),
        "CMSG_HDR_LEN": CMSG_LEN(0),
        "CMSG_HDR_SIZE": ctypes.sizeof(cmsghdr),
        "CMSG_LEN_ONE_FD": CMSG_LEN(ctypes.sizeof(ctypes.c_int)),
        "CMSG_SPACE_ONE_FD": CMSG_SPACE(ctypes.sizeof(ctypes.c_int)),
        "CMSG_ALIGN_MASK": CMSG_ALIGN(1) - 1,
        "FD_BYTES": ctypes.sizeof(ctypes.c_int),
        # Event layout, from rawsys.trace.events.
        "EV_SEND": int(events.EventKind.SEND),
        "EV_RECV": int(events.EventKind.RECV),
        "SYS_SENDMSG": int(events.Syscall.SENDMSG),
        "SYS_SENDMMSG": int(events.Syscall.SENDMMSG),
        "SYS_RECVMSG": int(events.Syscall.RECVMSG),
        "SYS_RECVMMSG": int(events.Syscall.RECVMMSG),
        "FD_FLAG_CLOEXEC": events.FD_FLAG_CLOEXEC,
        "EV_FLAG_FDS_DROPPED": events.EV_FLAG_FDS_DROPPED,
        "EV_FLAG_REF_IS_FILE_REF": events.EV_FLAG_REF_IS_FILE_REF,
        "NAME_LEN": events.NAME_LEN,
        "FD_SLOTS": events.FD_SLOTS,
        "EVENT_HEADER_SIZE": events.HEADER_SIZE,
        "FILE_RECORD_SIZE": events.FILE_RECORD_SIZE,
        # Loop bounds and map sizes.
        "MAX_CMSGS": MAX_CMSGS,
        "MAX_MMSG": MAX_MMSG,
        "MMSG_FD_SLOTS": MMSG_FD_SLOTS,
        "MAX_INFLIGHT": MAX_INFLIGHT,
        "MAX_SENDING": MAX_SENDING,
        # fd numbers collected before resolution: FD_SLOTS rounded up to a power
        # of two, doubled so a masked index plus a masked length stays inside.
        "FD_INDEX_MASK": 255,
        "FD_READ_MASK": 1023,
        "FD_ARRAY_LEN": 512,
    }


# Kernel facts every backend reads, with the byte size each read uses.
_KERNEL_READS: tuple[tuple[str, int], ...] = (
    ("task_struct.files", 8),
    ("files_struct.fdt", 8),
    ("fdtable.max_fds", 4),
    ("fdtable.fd", 8),
    ("fdtable.close_on_exec", 8),
    ("file.f_inode", 8),
    ("file.f_count", 8),
    ("file.f_path.dentry", 8),
    ("inode.i_ino", 8),
    ("inode.i_mode", 2),
    ("dentry.d_name.name", 8),
)
_KPROBE_READS: tuple[tuple[str, int], ...] = (
    ("scm_cookie.fp", 8),
    ("scm_fp_list.count", 2),
    ("scm_fp_list.fp", 0),  # array: its size depends on SCM_MAX_FD
)


# Members read together: one bpf_probe_read_kernel() of the span that holds
# them all is cheaper than one per member (the traced program pays for each).
_SPANS: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = (
    ("FILE", (("file.f_inode", 8), ("file.f_count", 8), ("file.f_path.dentry", 8))),
    ("INODE", (("inode.i_ino", 8), ("inode.i_mode", 2))),
    ("FDTABLE", (("fdtable.max_fds", 4), ("fdtable.fd", 8), ("fdtable.close_on_exec", 8))),
)
MAX_SPAN = 512  # bytes of per-CPU scratch per span


def _span_defines(facts: Any) -> dict[str, int]:
    out: dict[str, int] = {"MAX_SPAN": MAX_SPAN}
    for name, members in _SPANS:
        lo = min(int(facts.offset(f)) for f, _ in members) & ~7
        hi = max(int(facts.offset(f)) + size for f, size in members)
        length = (hi - lo + 7) & ~7
        if length > MAX_SPAN:
            raise ProgramError(
                f"the {name.lower()} members the probes read span {length} bytes on this "
                f"kernel, more than {MAX_SPAN}"
            )
        out[f"SPAN_{name}_LO"] = lo
        out[f"SPAN_{name}_LEN"] = length
    return out


def _ident(fact: str) -> str:
    return re.sub(r"\W", "_", fact).upper()


def kernel_msghdr_offsets(btf: Any) -> dict[str, int]:
    """Offsets in the kernel's ``struct msghdr`` the kprobe/fentry backends read.

    ``rawsys.trace.kernel.btf.kernel_facts`` does not list them; they come from the same
    BTF API (``btf.offsetof``/``btf.member_size``), checked for the sizes read.
    """
    out: dict[str, int] = {}
    for member, size in (("msg_control", 8), ("msg_controllen", 8), ("msg_flags", 4)):
        got = int(btf.member_size("struct msghdr", member))
        if got != size:
            raise ProgramError(f"kernel struct msghdr.{member} is {got} bytes, expected {size}")
        out[f"OFF_KMSGHDR_{member.upper()}"] = int(btf.offsetof("struct msghdr", member))
    return out


def _kernel_defines(facts: Any, backend: str) -> dict[str, int]:
    reads = _KERNEL_READS + (_KPROBE_READS if backend != "tracepoint" else ())
    out: dict[str, int] = {}
    for fact, size in reads:
        if size:
            got = int(facts.size(fact))
            if got != size:
                raise ProgramError(
                    f"kernel {fact} is {got} bytes on this kernel, the probes read {size}"
                )
        out[f"OFF_{_ident(fact)}"] = int(facts.offset(fact))
    out.update(_span_defines(facts))
    if backend == "tracepoint":
        out.update(syscall_arg_defines(facts))
    member = facts.members["file.f_count"]
    out["FILE_REF_T"] = 1 if "file_ref" in member.type or member.member == "f_ref" else 0
    return out


# Where a syscall's first four arguments sit in the struct pt_regs saved at
# entry, per architecture: (fact, bytes past that member).  The tracepoint
# backend reads them at sys_exit through bpf_task_pt_regs() instead of probing
# sys_enter too.  Offsets from BTF; aarch64's x0 holds the return value by
# then, orig_x0 the first argument.
SYSCALL_ARG_REGS: Mapping[str, tuple[tuple[str, int], ...]] = {
    "x86_64": (("pt_regs.di", 0), ("pt_regs.si", 0), ("pt_regs.dx", 0), ("pt_regs.r10", 0)),
    "aarch64": (("pt_regs.orig_x0", 0), ("pt_regs.regs", 8), ("pt_regs.regs", 16),
                ("pt_regs.regs", 24)),
}


def syscall_arg_defines(facts: Any, machine: str | None = None) -> dict[str, int]:
    """``SYSCALL_ARG0``..``SYSCALL_ARG3``: byte offsets of a syscall's arguments
    in the kernel's ``struct pt_regs`` on *machine* (default: this one)."""
    machine = machine or os.uname().machine
    regs = SYSCALL_ARG_REGS.get(machine)
    if regs is None:
        raise ProgramError(
            f"the tracepoint backend reads syscall arguments from the saved registers and "
            f"knows them only on {', '.join(SYSCALL_ARG_REGS)}, not on {machine}"
        )
    out: dict[str, int] = {}
    for i, (fact, extra) in enumerate(regs):
        if fact not in facts.members:
            raise ProgramError(f"kernel struct pt_regs has no {fact.split('.', 1)[1]} on {machine}")
        size = int(facts.size(fact))
        if extra + 8 > size:
            raise ProgramError(f"kernel {fact} is {size} bytes, the probes read 8 at +{extra}")
        out[f"SYSCALL_ARG{i}"] = int(facts.offset(fact)) + extra
    return out


def probe_function_names(facts: Any) -> dict[str, str]:
    """Kernel functions the kprobe/fentry backends attach to, resolved on this kernel."""
    recv = facts.receive_fd_function
    if recv is None:
        raise ProgramError("this kernel has neither receive_fd nor __receive_fd")
    return {"receive_fd": recv, "scm_detach_fds": "scm_detach_fds", "scm_send": "__scm_send"}


def render_defines(defines: Mapping[str, int]) -> str:
    lines = []
    for name, value in defines.items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise ProgramError(f"bad #define name {name!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProgramError(f"#define {name} must be an int, got {value!r}")
        lines.append(f"#define {name} {value}")
    return "\n".join(lines)


def render_program(
    backend: str,
    facts: Any,
    filters: Filters | None = None,
    *,
    ring_pages: int = RING_PAGES_DEFAULT,
    extra_defines: Mapping[str, int] | None = None,
) -> str:
    """The complete BPF C text of *backend* for the running kernel.

    *facts* is a ``rawsys.trace.kernel.btf.KernelFacts``; the kprobe and fentry backends
    also need :func:`kernel_msghdr_offsets` in *extra_defines*.
    """
    if backend not in _SOURCES:
        raise ProgramError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if ring_pages <= 0 or ring_pages & (ring_pages - 1):
        raise ProgramError(f"ring_pages must be a power of two, got {ring_pages}")
    filters = filters or Filters()
    defines: dict[str, int] = {}
    defines.update(_constant_defines())
    defines.update(_kernel_defines(facts, backend))
    defines["RING_PAGES"] = ring_pages
    defines["RING_WAKEUP_EVENTS"] = RING_WAKEUP_EVENTS
    defines["FILTER_PID"] = int(bool(filters.pids))
    defines["FILTER_TID"] = int(bool(filters.tids))
    defines["FILTER_COMM"] = int(filters.comm is not None)
    if extra_defines:
        defines.update(extra_defines)
    missing = _needed_defines(backend) - defines.keys()
    if missing:
        raise ProgramError(f"{backend} backend needs {', '.join(sorted(missing))}")
    parts: Sequence[str] = (
        f"/* rawsys-trace, {backend} backend: generated by tracing/program.py */",
        render_defines(defines),
        _source("maps.bpf.h")
        .replace("/*@STRUCTS@*/", _structs())
        .replace("/*@FILTERS@*/", filters.c_source()),
        _source("cmsg.bpf.h"),
        *((_source("scm.bpf.h"),) if backend != "tracepoint" else ()),
        _backend_source(backend, facts),
    )
    return "\n\n".join(parts) + "\n"


def _structs() -> str:
    return c_struct(events.RawFile, "fd_file") + "\n\n" + c_struct(events.RawEvent, "fd_event")


def _needed_defines(backend: str) -> set[str]:
    if backend == "tracepoint":
        return set()
    return {"OFF_KMSGHDR_MSG_CONTROL", "OFF_KMSGHDR_MSG_CONTROLLEN", "OFF_KMSGHDR_MSG_FLAGS"}


def _backend_source(backend: str, facts: Any) -> str:
    text = _source(_SOURCES[backend])
    if "@RECEIVE_FD@" in text:
        name = probe_function_names(facts)["receive_fd"]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ProgramError(f"bad kernel function name {name!r}")
        text = text.replace("@RECEIVE_FD@", name)
    return text


def _source(name: str) -> str:
    return resources.files("rawsys.trace.bpf").joinpath(name).read_text(encoding="utf-8")


def kprobe_attachments(facts: Any) -> list[tuple[str, str, str]]:
    """(``kprobe``/``kretprobe``, kernel function, BPF function) for the kprobe backend.

    The receive function is resolved on the running kernel (``receive_fd``
    since 6.8, ``__receive_fd`` before); the syscall exits come from the
    syscall tracepoints, which the kprobe backend also uses.
    """
    names = probe_function_names(facts)
    return [
        ("kprobe", names["scm_send"], "kp_scm_send"),
        ("kretprobe", names["scm_send"], "kretp_scm_send"),
        ("kprobe", names["scm_detach_fds"], "kp_scm_detach_fds"),
        ("kretprobe", names["scm_detach_fds"], "kretp_scm_detach_fds"),
        ("kprobe", names["receive_fd"], "kp_receive_fd"),
        ("kretprobe", names["receive_fd"], "kretp_receive_fd"),
    ]
