"""The generated prelude of every BPF program: its ``#define``s, structs and filters.

Each backend's C source starts with ``#include "prelude.bpf.h"``; this
module writes that text, so nothing is written twice in C: socket constants
come from ``rawsys.c.constants``, user-space ABI layouts (``msghdr``,
``mmsghdr``, ``cmsghdr``) from ``rawsys.c.structs``, the event layout from
``rawsys.trace.events``, and kernel struct offsets and function names from
the running kernel (:mod:`rawsys.trace.kernel.facts`).  Only the offsets and
function names a program's own sources use are defined, checked against the
sizes the probes read.  The C never dereferences a kernel struct by header
layout: the headers bcc compiles against may describe another kernel.

Filters are typed: :class:`Filters` validates PIDs/TIDs as ints and the
command name as at most 15 bytes, and renders them as C comparisons, so the
kernel drops unwanted events before they reach the ring buffer.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import resource
import stat
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from rawsys.c import constants
from rawsys.c.cmsg import CMSG_ALIGN, CMSG_LEN, CMSG_SPACE
from rawsys.c.structs import cmsghdr, mmsghdr, msghdr
from rawsys.trace import events
from rawsys.trace.bpf.link import callback_defines
from rawsys.trace.kernel.facts import FUNCTIONS, READS, SYSCALL_ARG_REGS, KernelFacts
from rawsys.trace.kernel.shapes import Resolved, ShapeError

__all__ = [
    "Filters",
    "PID_MAX_LIMIT",
    "UID_INVALID",
    "ProgramError",
    "RING_PAGES_DEFAULT",
    "c_struct",
    "kernel_function",
    "render_defines",
    "render_prelude",
    "syscall_arg_defines",
    "used_names",
]

# Bounds of the in-kernel loops (the verifier needs every loop bounded).
MAX_CMSGS = 16  # control messages walked per msghdr
MAX_MMSG = 8  # messages of one sendmmsg/recvmmsg vector examined
# fds resolved per message of a sendmmsg/recvmmsg vector (the nested loops must
# stay within the verifier's budget); more are counted in fds_seen and the
# event is flagged EV_FLAG_FDS_DROPPED.
MMSG_FD_SLOTS = 32
RING_PAGES_DEFAULT = 16384  # 64 MiB with 4 KiB pages: a burst of ~450k events waits there
RING_WAKEUP_EVENTS = 256  # events per CPU between two wake-ups of the reader
# The anomaly ring (CTRUNC receives, failed sends, losses): 2 MiB, thousands
# of events, read before the routine ring at every poll.
ANOMALY_RING_PAGES = 512
# Slots of the per-CPU `lost` counters.
LOST_ROUTINE = 0  # routine events the ring buffer refused (the reader fell behind)
LOST_UNTRACKED = 1  # calls not tracked: a per-thread map was full
LOST_ANOMALY = 2  # anomalies the anomaly ring refused
LOST_SLOTS = 3
PRODUCED_SLOTS = 4  # events produced: send/receive x routine/anomaly
MAX_COUNTED_PIDS = 16384  # (process, direction) pairs whose dropped events are counted
MAX_INFLIGHT = 4096  # threads inside a traced syscall at the same time
MAX_SENDING = 1024  # of which inside sendmsg with fds (4 KiB of fd/file slots each)
# Messages whose SCM_RIGHTS the kernel handled, kept by the kprobe and fentry
# backends until their syscall returns (16 KiB of file records each).
MAX_SCM_MSGS = 256
# Why fds were lost (causes.bpf.h): files named per LOST event, messages of a
# closed socket's queue walked, fds of an exiting process examined for unix
# sockets (and how many of those), close-on-exec fds remembered per process
# until it execs, read-like calls in progress that saw fds queued, and the
# 64-fd words of the fd table scanned to tell EMFILE from CTRUNC.
LOST_FILES = 16
QUEUE_WALK = 8
EXIT_FDS = 64
EXIT_SOCKS = 4
CLOEXEC_SLOTS = 8
MAX_CLOEXEC_PROCS = 1024
MAX_READ_PEEKS = 256
FULL_SCAN_WORDS = 16
KPROBE_ARGS = 6  # PT_REGS_PARM1..6: the arguments a kprobe reads (kprobe.bpf.c's KP_ARG)
USER_WINDOW_LEN = 256  # bytes around a user msghdr read at once (a power of two)
MAX_FILTER_IDS = 1024  # PIDs (and TIDs) one session can filter on
# Full paths of named files (files.bpf.h, remember_path): the names walked
# per path, the bytes kept, the bytes of one name (NAME_MAX + 1), the files
# of one message whose paths are resolved, and the paths kept for the reader.
MAX_PATH_DEPTH = 24
PATH_BUF_LEN = 1024
PATH_NAME_LEN = 256
PATH_FILES = 4
MAX_PATHS = 4096
PID_MAX_LIMIT = 1 << 22  # include/linux/threads.h, PID_MAX_LIMIT on 64-bit
UID_INVALID = (1 << 32) - 1  # (uid_t)-1, INVALID_UID in include/linux/uidgid.h


class ProgramError(ValueError):
    """A filter, backend or kernel the program cannot be rendered for."""


# --------------------------------------------------------------------- filters
def _check_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProgramError(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    if not 0 < value < PID_MAX_LIMIT:
        raise ProgramError(f"{what} {value} is out of range 1..{PID_MAX_LIMIT - 1}")
    return value


def _check_uid(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProgramError(f"UID must be an int, got {type(value).__name__}: {value!r}")
    if not 0 <= value < UID_INVALID:
        raise ProgramError(f"UID {value} is out of range 0..{UID_INVALID - 1}")
    return value


@dataclass(frozen=True)
class Filters:
    """What to trace: process ids, thread ids, command name, user ids; empty means everything."""

    pids: tuple[int, ...] = ()
    tids: tuple[int, ...] = ()
    comm: str | None = None
    comm_bytes: bytes = field(init=False, repr=False, default=b"")
    uids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "pids", tuple(_check_id(p, "PID") for p in self.pids))
        object.__setattr__(self, "tids", tuple(_check_id(t, "TID") for t in self.tids))
        object.__setattr__(self, "uids", tuple(_check_uid(u) for u in self.uids))
        for what, ids in (("PIDs", self.pids), ("TIDs", self.tids), ("UIDs", self.uids)):
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
        cls,
        pids: Iterable[int] = (),
        tids: Iterable[int] = (),
        comm: str | None = None,
        uids: Iterable[int] = (),
    ) -> Filters:
        return cls(tuple(pids), tuple(tids), comm, uids=tuple(uids))

    def c_source(self) -> str:
        """The filter functions: hash-map look-ups of typed ints, byte compares of the name.

        The PID/TID sets live in maps (``pid_filter``, ``tid_filter``) that
        :meth:`map_entries` fills after loading, so a session can add a pid
        (a forked child) while it runs.
        """
        # The kernel pads comm with NULs to TASK_COMM_LEN (strscpy_pad): the
        # name is compared as two 8-byte words, a fixed cost for any length
        # (a compare per byte made a 15-byte name too large a program).
        padded = self.comm_bytes.ljust(events.COMM_LEN, b"\0")
        lo, hi = (int.from_bytes(padded[i:i + 8], sys.byteorder) for i in (0, 8))
        comm_test = (
            "u64 w[2]; __builtin_memcpy(w, comm, sizeof(w)); "
            f"return w[0] == 0x{lo:x}ULL && w[1] == 0x{hi:x}ULL;"
        ) if self.comm_bytes else "return 1;"
        return (
            f"BPF_HASH(pid_filter, u32, u8, {MAX_FILTER_IDS});\n"
            f"BPF_HASH(tid_filter, u32, u8, {MAX_FILTER_IDS});\n"
            + (f"BPF_HASH(uid_filter, u32, u8, {MAX_FILTER_IDS});\n"
               "static __always_inline int uid_wanted(u32 uid) "
               "{ return uid_filter.lookup(&uid) != 0; }\n" if self.uids else "")
            +
            "static __always_inline int pid_wanted(u32 tgid) "
            "{ return pid_filter.lookup(&tgid) != 0; }\n"
            "static __always_inline int tid_wanted(u32 tid) "
            "{ return tid_filter.lookup(&tid) != 0; }\n"
            "static __always_inline int comm_wanted(const unsigned char *comm) { "
            + comm_test
            + " }\n"
        )

    def map_entries(self) -> dict[str, tuple[int, ...]]:
        """What to put in the filter maps once the program is loaded."""
        out = {"pid_filter": self.pids, "tid_filter": self.tids}
        if self.uids:
            out["uid_filter"] = self.uids
        return out



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
_READS_BY_DEFINE = {read.define: read for read in READS}
_READS_BY_FACT = {read.fact: read for read in READS}


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
        "AF_UNIX": constants.AF_UNIX,
        "SOCK_STREAM": constants.SOCK_STREAM,
        "RLIMIT_NOFILE": resource.RLIMIT_NOFILE,  # <sys/resource.h>
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
        "EV_LOST": int(events.EventKind.LOST),
        **{f"SYS_{s.name}": int(s) for s in events.Syscall},
        **{f"LOST_{r.name}": int(r) for r in events.LossReason},
        "EV_FLAG_FD_TABLE_FULL": events.EV_FLAG_FD_TABLE_FULL,
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
        "MAX_SCM_MSGS": MAX_SCM_MSGS,
        "MAX_PATH_DEPTH": MAX_PATH_DEPTH,
        "PATH_BUF_LEN": PATH_BUF_LEN,
        "PATH_NAME_LEN": PATH_NAME_LEN,
        "PATH_FILES": PATH_FILES,
        "MAX_PATHS": MAX_PATHS,
        "PATH_FLAG_TRUNCATED": events.PATH_FLAG_TRUNCATED,
        "LOST_FILES": LOST_FILES,
        "QUEUE_WALK": QUEUE_WALK,
        "EXIT_FDS": EXIT_FDS,
        "EXIT_SOCKS": EXIT_SOCKS,
        "CLOEXEC_SLOTS": CLOEXEC_SLOTS,
        "MAX_CLOEXEC_PROCS": MAX_CLOEXEC_PROCS,
        "MAX_READ_PEEKS": MAX_READ_PEEKS,
        "FULL_SCAN_WORDS": FULL_SCAN_WORDS,
        # struct rlimit (include/uapi/linux/resource.h): two unsigned longs.
        "RLIMIT_SIZE": 2 * ctypes.sizeof(ctypes.c_ulong),
        **_fd_scratch_defines(events.FD_SLOTS, ctypes.sizeof(ctypes.c_int)),
    }


def _fd_scratch_defines(slots: int, fd_bytes: int) -> dict[str, int]:
    """Bounds of the fd numbers collected before resolution (``struct fd_scratch``).

    The verifier accepts a variable index or length only under a mask: the
    slots rounded up to a power of two give the index mask and the byte
    length mask, and the array is twice that, so a masked index plus a
    masked length always stays inside.
    """
    rounded = 1 << (slots - 1).bit_length()
    return {
        "FD_INDEX_MASK": rounded - 1,
        "FD_READ_MASK": rounded * fd_bytes - 1,
        "FD_ARRAY_LEN": 2 * rounded,
    }


# Members read together: one bpf_probe_read_kernel() of the span that holds
# them all is cheaper than one per member (the traced program pays for each).
_SPANS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("FILE", ("file.f_inode", "file.f_count", "file.f_path.dentry")),
    ("INODE", ("inode.i_ino", "inode.i_mode")),
    ("FDTABLE", ("fdtable.max_fds", "fdtable.fd", "fdtable.close_on_exec")),
)
MAX_SPAN = 512  # bytes of per-CPU scratch per span


def _span_defines(facts: KernelFacts) -> dict[str, int]:
    out: dict[str, int] = {"MAX_SPAN": MAX_SPAN}
    for name, members in _SPANS:
        lo = min(facts.offset(fact) for fact in members) & ~7
        hi = max(facts.offset(fact) + _READS_BY_FACT[fact].size for fact in members)
        length = (hi - lo + 7) & ~7
        if length > MAX_SPAN:
            raise ProgramError(
                f"the {name.lower()} members the probes read span {length} bytes on this "
                f"kernel, more than {MAX_SPAN}"
            )
        out[f"SPAN_{name}_LO"] = lo
        out[f"SPAN_{name}_LEN"] = length
    return out


# ---------------------------------------------------------------------- kernel


def used_names(source: str, prefix: str) -> set[str]:
    """The identifiers starting with *prefix* that C *source* uses, comments aside."""
    code = re.sub(r"/\*.*?\*/|//[^\n]*", " ", source, flags=re.S)
    return set(re.findall(rf"\b{prefix}[A-Z0-9_]+\b", code))


def kernel_offset_defines(facts: KernelFacts, names: Iterable[str]) -> dict[str, int]:
    """``OFF_*`` for each of *names*, from the facts, after checking the sizes the probes read."""
    out: dict[str, int] = {}
    for name in sorted(names):
        read = _READS_BY_DEFINE.get(name)
        if read is None:
            raise ProgramError(f"{name} is used by the probes but no kernel fact lists it")
        if read.size:
            got = facts.size(read.fact)
            if got != read.size:
                raise ProgramError(
                    f"kernel {read.fact} is {got} bytes on this kernel, the probes read {read.size}"
                )
        member_type = facts.members[read.fact].type
        if not read.fits(member_type):
            raise ProgramError(
                f"kernel {read.fact} is {member_type} on this kernel, the probes read {read.type}"
            )
        out[name] = facts.offset(read.fact)
    return out


def syscall_arg_defines(facts: KernelFacts, machine: str | None = None) -> dict[str, int]:
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
        size = facts.size(fact)
        if size and extra + 8 > size:
            raise ProgramError(f"kernel {fact} is {size} bytes, the probes read 8 at +{extra}")
        out[f"SYSCALL_ARG{i}"] = facts.offset(fact) + extra
    return out


def function_name_defines(facts: KernelFacts, names: Iterable[str]) -> dict[str, str]:
    """``FN_<ROLE>``: the running kernel's name for each :data:`FUNCTIONS` role used."""
    out: dict[str, str] = {}
    for name in sorted(names):
        role = name[len("FN_"):].lower()
        if role not in FUNCTIONS:
            raise ProgramError(f"{name} is used by the probes but names no kernel function role")
        out[name] = kernel_function(facts, role).name
    return out


def function_arg_defines(
    facts: KernelFacts, names: Iterable[str], max_args: int | None = None
) -> dict[str, int]:
    """``ARG_<ROLE>_<ARG>`` (where an argument sits, from 0) and ``NARGS_<ROLE>``, for each
    one used, from the BTF prototype of the function that plays the role here.

    *max_args*: how many arguments the backend can read (a kprobe reads
    registers: an argument past them is refused).
    """
    out: dict[str, int] = {}
    for name in sorted(names):
        kind, _, rest = name.partition("_")
        found = None
        for role in FUNCTIONS:
            if kind == "NARGS" and rest == role.upper():
                found = kernel_function(facts, role).nargs
            elif kind == "ARG" and rest.startswith(role.upper() + "_"):
                arg = rest[len(role) + 1:].lower()
                positions = kernel_function(facts, role).positions
                if arg in positions:
                    found = positions[arg]
        if found is None:
            raise ProgramError(f"{name} is used by the probes but names no argument of a role")
        if kind == "ARG" and max_args is not None and found >= max_args:
            raise ProgramError(
                f"{name} is argument {found + 1} on this kernel; this backend reads {max_args}"
            )
        out[name] = found
    return out


def kernel_function(facts: KernelFacts, role: str) -> Resolved:
    """The function that plays a :data:`FUNCTIONS` role here; ProgramError if none fits."""
    try:
        return facts.resolve(role)
    except ShapeError as e:
        raise ProgramError(str(e)) from None


def _kernel_defines(facts: KernelFacts, source: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    out.update(kernel_offset_defines(facts, used_names(source, "OFF_")))
    out.update(_span_defines(facts))
    if used_names(source, "SYSCALL_ARG"):
        out.update(syscall_arg_defines(facts))
    out.update(function_name_defines(facts, used_names(source, "FN_")))
    out.update(function_arg_defines(
        facts,
        used_names(source, "ARG_") | used_names(source, "NARGS_"),
        KPROBE_ARGS if re.search(r"\bKP_ARG\(", source) else None,
    ))
    member = facts.members["file.f_count"]
    out["FILE_REF_T"] = 1 if "file_ref" in member.type or member.member == "f_ref" else 0
    return out


def render_defines(defines: Mapping[str, int | str]) -> str:
    """``#define NAME VALUE`` lines; a value is an int or a C identifier (a function name)."""
    lines = []
    for name, value in defines.items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise ProgramError(f"bad #define name {name!r}")
        if isinstance(value, str):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
                raise ProgramError(f"#define {name}: {value!r} is not a C identifier")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ProgramError(f"#define {name} must be an int, got {value!r}")
        lines.append(f"#define {name} {value}")
    return "\n".join(lines)


# --------------------------------------------------------------------- prelude
# A map whose value bcc sees as plain bytes while the probes see its type.
# bcc JIT-compiles a text reader and writer for the value type of every map
# it creates; for the scratch maps (an event of 253 file records, a thread's
# 253 fds and files) that took about 0.14 s of a 1.1 s compile.  Python never
# reads these maps.  The struct has the members of bcc's BPF_F_TABLE in its
# order (bcc's frontend reads them); only `leaf` differs.
_BYTES_TABLE_MACRO = """\
#define BPF_BYTES_TABLE(_table_type, _key_type, _leaf_type, _name, _max_entries) \\
struct _name##_bytes { u8 bytes[sizeof(_leaf_type)]; } __attribute__((aligned(8))); \\
struct _name##_table_t { \\
  _key_type key; \\
  struct _name##_bytes leaf; \\
  _leaf_type * (*lookup) (_key_type *); \\
  _leaf_type * (*lookup_or_init) (_key_type *, _leaf_type *); \\
  _leaf_type * (*lookup_or_try_init) (_key_type *, _leaf_type *); \\
  int (*update) (_key_type *, _leaf_type *); \\
  int (*insert) (_key_type *, _leaf_type *); \\
  int (*delete) (_key_type *); \\
  void (*call) (void *, int index); \\
  void (*increment) (_key_type, ...); \\
  void (*atomic_increment) (_key_type, ...); \\
  int (*get_stackid) (void *, u64); \\
  void * (*sk_storage_get) (void *, void *, int); \\
  int (*sk_storage_delete) (void *); \\
  void * (*inode_storage_get) (void *, void *, int); \\
  int (*inode_storage_delete) (void *); \\
  void * (*task_storage_get) (void *, void *, int); \\
  int (*task_storage_delete) (void *); \\
  u32 max_entries; \\
  int flags; \\
}; \\
__attribute__((section("maps/" _table_type))) \\
struct _name##_table_t _name = { .flags = 0, .max_entries = (_max_entries) }; \\
BPF_ANNOTATE_KV_PAIR(_name, _key_type, struct _name##_bytes)"""

# bpf_loop(nr, callback) for a callback ``long loop__name(u64 index)``: bcc
# cannot take a function's address, so the address loaded is the callback's
# marker (LOOP_MARK_NAME), which rawsys.trace.bpf.link turns into a
# reference to the callback's code when it loads the program.  The count is
# passed as a zero-extended u64: the kernel's inlined bpf_loop compares the
# whole register with its limit, and a u32 argument may carry garbage above.
_LOOP_MACRO = """\
#define LOOP_STR_(x) #x
#define LOOP_STR(x) LOOP_STR_(x)
#define LOOP(nr, NAME) ({ \\
    void *loop_fn_; \\
    asm volatile("%0 = " LOOP_STR(LOOP_MARK_##NAME) " ll" : "=r"(loop_fn_)); \\
    ((long (*)(u64, void *, void *, u64))BPF_FUNC_loop)((u64)(u32)(nr), loop_fn_, 0, 0); \\
})"""

def render_prelude(
    backend: str,
    facts: KernelFacts,
    source: str,
    filters: Filters | None = None,
    *,
    ring_pages: int = RING_PAGES_DEFAULT,
) -> str:
    """The prelude of *backend*'s program whose other C text is *source*.

    *source* decides which kernel offsets (``OFF_*``), syscall argument
    offsets (``SYSCALL_ARG*``) and function names (``FN_*``) are defined:
    those it uses, each checked on this kernel.
    """
    if ring_pages <= 0 or ring_pages & (ring_pages - 1):
        raise ProgramError(f"ring_pages must be a power of two, got {ring_pages}")
    filters = filters or Filters()
    defines: dict[str, int | str] = {}
    defines.update(_constant_defines())
    defines.update(_kernel_defines(facts, source))
    defines["RING_PAGES"] = ring_pages
    defines["RING_WAKEUP_EVENTS"] = RING_WAKEUP_EVENTS
    defines["ANOMALY_RING_PAGES"] = ANOMALY_RING_PAGES
    defines["LOST_ROUTINE"] = LOST_ROUTINE
    defines["LOST_UNTRACKED"] = LOST_UNTRACKED
    defines["LOST_ANOMALY"] = LOST_ANOMALY
    defines["LOST_SLOTS"] = LOST_SLOTS
    defines["MAX_COUNTED_PIDS"] = MAX_COUNTED_PIDS
    defines["PRODUCED_SLOTS"] = PRODUCED_SLOTS
    defines["FILTER_PID"] = int(bool(filters.pids))
    defines["FILTER_TID"] = int(bool(filters.tids))
    defines["FILTER_COMM"] = int(filters.comm is not None)
    defines.update(callback_defines())
    defines["FILTER_UID"] = int(bool(filters.uids))
    return "\n\n".join((
        render_defines(defines),
        _LOOP_MACRO,
        _BYTES_TABLE_MACRO,
        c_struct(events.RawFile, "fd_file"),
        c_struct(events.RawEvent, "fd_event"),
        filters.c_source(),
    ))
