"""What the probes need from the running kernel, read from its BTF and cached per build.

The BPF C reads kernel memory only at ``OFF_<STRUCT>_<MEMBER>`` offsets and
attaches only to the kernel functions named here, so this module is the one
place that knows how kernels differ:

* :data:`READS` -- every kernel struct member the probes read, with the size
  they read and the names kernels have given it.  It is derived from the
  probes both ways: a test checks that each ``OFF_*`` in the BPF sources is
  listed and that nothing listed goes unread, and a program's prelude
  defines only the offsets its own sources use.
* :data:`FUNCTIONS` -- the kernel functions the kprobe and fentry backends
  attach to, by the part they play, with each name that part has had.
* :data:`SYSCALL_ARG_REGS` -- where each architecture's saved ``struct
  pt_regs`` keeps a system call's arguments.

Known differences, all resolved from BTF rather than from version numbers:
``struct file``'s ``atomic_long_t f_count`` became ``file_ref_t f_ref`` in
6.13 (same 8 bytes, counting references - 1); ``struct scm_fp_list`` moved
``fp[]`` from offset 16 to 40 in 6.10 (and in Debian's 6.1.0-57, a
backport: the version number does not tell); the per-fd install function
``__receive_fd(file, ufd, o_flags)`` became ``receive_fd`` in 6.8, while a
two-argument ``receive_fd`` existed beside it before -- each function is
chosen by its BTF prototype (:mod:`rawsys.trace.kernel.shapes`).

:func:`kernel_facts` resolves the lists on the running kernel
(``/sys/kernel/btf/vmlinux`` and ``/proc/kallsyms``) and keeps the result in
the cache (:mod:`rawsys.trace.system.cache`), keyed by the kernel build, so a
normal start-up does not walk BTF at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from rawsys.trace.kernel.btf import (
    BTF,
    VMLINUX_BTF,
    BTFLookupError,
    Param,
    Prototype,
    kernel_btf,
)
from rawsys.trace.kernel.shapes import Arg, Resolved, Role, ShapeError
from rawsys.trace.kernel.shapes import resolve as resolve_role
from rawsys.trace.system import cache

__all__ = [
    "FUNCTIONS",
    "READS",
    "SYSCALL_ARG_REGS",
    "FunctionFact",
    "KernelFacts",
    "MemberFact",
    "Read",
    "compute_facts",
    "kernel_build_key",
    "kernel_facts",
]


class Read(NamedTuple):
    """A kernel struct member the probes read, as ``OFF_<STRUCT>_<MEMBER>`` in the BPF C."""

    struct: str  # "file"
    member: str  # the name the probes use, a dotted path through embedded structs
    size: int  # bytes the probes read there; 0: an array whose user checks the bounds
    candidates: tuple[str, ...] = ()  # what kernels call it, newest first (default: member)
    machines: tuple[str, ...] = ()  # only on these architectures (default: every one)
    type: str = ""  # the type it must have, "T[]" for an array of T of any length ("": any)

    @property
    def fact(self) -> str:
        """The key in :attr:`KernelFacts.members`: ``"file.f_count"``."""
        return f"{self.struct}.{self.member}"

    def fits(self, member_type: str) -> bool:
        """Whether a member of *member_type* (BTF's spelling) is what the probes read."""
        if not self.type:
            return True
        if self.type.endswith("[]"):
            return re.fullmatch(re.escape(self.type[:-2]) + r"\[\d+\]", member_type) is not None
        return member_type == self.type

    @property
    def define(self) -> str:
        """The name of its offset in the BPF C: ``OFF_FILE_F_COUNT``."""
        return "OFF_" + re.sub(r"\W", "_", self.fact).upper()


READS: tuple[Read, ...] = (
    # The calling thread's fd table: current->files->fdt->{fd, close_on_exec, max_fds}.
    Read("task_struct", "files", 8),
    Read("files_struct", "fdt", 8),
    Read("fdtable", "max_fds", 4),
    Read("fdtable", "fd", 8),
    Read("fdtable", "close_on_exec", 8),
    # A struct file's identity: its inode, reference count and name.
    Read("file", "f_inode", 8),
    Read("file", "f_count", 8, ("f_ref", "f_count")),  # file_ref_t f_ref since 6.13
    Read("file", "f_path.dentry", 8),
    Read("inode", "i_ino", 8),
    Read("inode", "i_mode", 2),
    Read("dentry", "d_name.name", 8),
    # A named file's full path (the dentry chain, across mount points, as
    # d_path walks it): f_path.mnt is the struct vfsmount embedded in a
    # struct mount (fs/mount.h), which says where it is mounted.
    Read("file", "f_path.mnt", 8),
    Read("dentry", "d_parent", 8, type="struct dentry *"),
    Read("vfsmount", "mnt_root", 8, type="struct dentry *"),
    Read("mount", "mnt", 0, type="struct vfsmount"),
    Read("mount", "mnt_parent", 8, type="struct mount *"),
    Read("mount", "mnt_mountpoint", 8, type="struct dentry *"),
    # The kernel side of SCM_RIGHTS (kprobe and fentry backends): the files
    # __scm_send took, and the kernel's own struct msghdr (include/linux/socket.h).
    Read("scm_cookie", "fp", 8, type="struct scm_fp_list *"),
    Read("scm_fp_list", "count", 2, type="short int"),
    # struct file *fp[SCM_MAX_FD]: at 16 until the af_unix garbage collector
    # was rewritten (6.10, and backported: Debian's 6.1.0-57 has it), 40 since
    Read("scm_fp_list", "fp", 0, type="struct file *[]"),
    # Why fds in flight were lost (causes.bpf.h): a socket fd's struct socket
    # and struct sock, its queue of messages and the files each carries
    # (UNIXCB(skb).fp: the skb's cb holds a struct unix_skb_parms), the peer
    # socket, and what tells a full fd table (RLIMIT_NOFILE, open_fds).
    Read("file", "private_data", 8),
    Read("socket", "type", 2, type="short int"),
    Read("socket", "sk", 8),
    Read("socket", "file", 8),
    Read("sock", "__sk_common.skc_family", 2),
    Read("sock", "sk_receive_queue", 0, type="struct sk_buff_head"),
    Read("sock", "sk_receive_queue.next", 8),
    Read("sock", "sk_socket", 8),
    Read("unix_sock", "peer", 8, type="struct sock *"),
    Read("sk_buff", "next", 8),
    Read("sk_buff", "cb", 0, type="char[]"),
    Read("unix_skb_parms", "fp", 8, type="struct scm_fp_list *"),
    Read("task_struct", "signal", 8),
    Read("signal_struct", "rlim", 0, type="struct rlimit[]"),
    Read("files_struct", "count", 4),
    Read("files_struct", "next_fd", 4),
    Read("fdtable", "open_fds", 8),
    Read("msghdr", "msg_control", 8),
    Read("msghdr", "msg_controllen", 8),
    # The user registers saved at syscall entry (struct pt_regs), where the
    # tracepoint backend reads a syscall's arguments at sys_exit.  x86-64
    # passes them in di, si, dx, r10; aarch64 in x0..x3, where x0 holds the
    # return value by then and orig_x0 keeps the first argument.
    Read("pt_regs", "di", 8, machines=("x86_64",)),
    Read("pt_regs", "si", 8, machines=("x86_64",)),
    Read("pt_regs", "dx", 8, machines=("x86_64",)),
    Read("pt_regs", "r10", 8, machines=("x86_64",)),
    Read("pt_regs", "orig_x0", 8, machines=("aarch64",)),
    Read("pt_regs", "regs", 0, machines=("aarch64",)),
)

# Where a syscall's first four arguments sit in the struct pt_regs saved at
# entry, per architecture: (fact, bytes past that member).
SYSCALL_ARG_REGS: Mapping[str, tuple[tuple[str, int], ...]] = {
    "x86_64": (("pt_regs.di", 0), ("pt_regs.si", 0), ("pt_regs.dx", 0), ("pt_regs.r10", 0)),
    "aarch64": (("pt_regs.orig_x0", 0), ("pt_regs.regs", 8), ("pt_regs.regs", 16),
                ("pt_regs.regs", 24)),
}

# The kernel functions the kprobe and fentry backends attach to, by the part
# they play in a transfer (net/core/scm.c, fs/file.c): the names each part has
# had, newest first, and the shape a function must have to play it, checked
# against its BTF prototype (rawsys.trace.kernel.shapes).  The probes read the
# arguments listed, at the positions found on the running kernel.
FUNCTIONS: Mapping[str, Role] = {
    # takes the sender's files into a struct scm_fp_list
    "scm_send": Role(
        ("__scm_send",),
        "int",
        (Arg("msg", "struct msghdr *"), Arg("scm", "struct scm_cookie *")),
    ),
    # installs them in the receiver, fd by fd
    "scm_detach_fds": Role(
        ("scm_detach_fds",),
        "void",
        (Arg("msg", "struct msghdr *"), Arg("scm", "struct scm_cookie *")),
    ),
    # one fd: receive_fd(file, ufd, o_flags) since 6.8; before, __receive_fd
    # had that shape and receive_fd(file, o_flags) was another function
    "receive_fd": Role(
        ("receive_fd", "__receive_fd"),
        "int",
        (Arg("file", "struct file *"), Arg("ufd", "int *"), Arg("o_flags", "unsigned int")),
    ),
}

# Bump when the meaning or shape of KernelFacts changes: old cache files are ignored.
FACTS_FORMAT = 4


@dataclass(frozen=True)
class MemberFact:
    offset: int  # bytes from the start of the outer struct
    size: int  # bytes; 0 for a flexible array
    member: str  # the member path the kernel actually has (e.g. "f_ref" for f_count)
    type: str  # C-like spelling of its type


@dataclass(frozen=True)
class FunctionFact:
    btf: bool  # a BTF FUNC of that name exists (fentry needs it)
    kallsyms: bool | None  # exact symbol in /proc/kallsyms (kprobes need it); None: unreadable
    btf_id: int = 0  # the FUNC's BTF type id (an fentry program's attach_btf_id); 0: none
    prototypes: tuple[Prototype, ...] = ()  # each distinct BTF prototype of that name


@dataclass(frozen=True)
class KernelFacts:
    """The running kernel's answers to :data:`READS` and :data:`FUNCTIONS`, cacheable as JSON."""

    key: str
    release: str
    members: dict[str, MemberFact]
    functions: dict[str, FunctionFact]
    # Read by this process, not computed by the call that returned it (a
    # cache file, or an earlier call in the same process).
    from_cache: bool = field(default=False, compare=False)

    def offset(self, fact: str) -> int:
        """Byte offset for a fact key such as ``"scm_fp_list.fp"``."""
        return self._member(fact).offset

    def size(self, fact: str) -> int:
        """Byte size of a member (``"file.f_count"``); 0 for a flexible array."""
        return self._member(fact).size

    def _member(self, fact: str) -> MemberFact:
        try:
            return self.members[fact]
        except KeyError:
            known = ", ".join(sorted(self.members))
            raise BTFLookupError(
                f"no kernel fact {fact!r} for {self.release}; known: {known}"
            ) from None

    def function(self, role: str) -> str | None:
        """The name of the function that plays a :data:`FUNCTIONS` role here, or None."""
        try:
            return self.resolve(role).name
        except ShapeError:
            return None

    def resolve(self, role: str) -> Resolved:
        """The function that plays *role* here and where the probes' arguments are.

        Chosen by its BTF prototype, not by name alone; :class:`ShapeError`
        says what is missing when none fits.
        """
        prototypes = {name: fn.prototypes for name, fn in self.functions.items()}
        return resolve_role(role, FUNCTIONS[role], prototypes)

    def kernel_probe_problems(self) -> list[str]:
        """What the kprobe and fentry backends need that this kernel lacks (empty: nothing).

        Each function role must be played by a function of the right shape
        (:meth:`resolve`), and each member those backends read must have the
        type they read it as.
        """
        problems: list[str] = []
        for role in FUNCTIONS:
            try:
                self.resolve(role)
            except ShapeError as e:
                problems.append(str(e))
        for read in READS:
            fact = self.members.get(read.fact)
            if read.type and fact is not None and not read.fits(fact.type):
                problems.append(f"{read.fact} is {fact.type}, not {read.type}")
        return problems

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FACTS_FORMAT,
            "key": self.key,
            "release": self.release,
            "members": {k: [m.offset, m.size, m.member, m.type] for k, m in self.members.items()},
            "functions": {
                k: [f.btf, f.kallsyms, f.btf_id, [_proto_json(p) for p in f.prototypes]]
                for k, f in self.functions.items()
            },
        }

    @classmethod
    def from_json(cls, obj: Any) -> KernelFacts:
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything malformed."""
        try:
            if obj["format"] != FACTS_FORMAT:
                raise ValueError(f"facts format {obj['format']!r} is not {FACTS_FORMAT}")
            members = {
                str(k): MemberFact(int(v[0]), int(v[1]), str(v[2]), str(v[3]))
                for k, v in obj["members"].items()
            }
            functions = {
                str(k): FunctionFact(
                    bool(v[0]),
                    None if v[1] is None else bool(v[1]),
                    int(v[2]),
                    tuple(_proto_from_json(p) for p in v[3]),
                )
                for k, v in obj["functions"].items()
            }
            return cls(
                key=str(obj["key"]),
                release=str(obj["release"]),
                members=members,
                functions=functions,
                from_cache=True,
            )
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"malformed kernel facts: {e!r}") from e


def _proto_json(p: Prototype) -> list[Any]:
    return [p.returns, [[a.name, a.type] for a in p.params]]


def _proto_from_json(obj: Any) -> Prototype:
    return Prototype(str(obj[0]), tuple(Param(str(n), str(t)) for n, t in obj[1]))


def _requests_digest() -> str:
    text = repr((FACTS_FORMAT, READS, sorted(FUNCTIONS.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def kernel_build_key(btf_path: str = VMLINUX_BTF) -> str:
    """Identifies one kernel build: release, ``/proc/version``, and the BTF's size and CRC.

    The BTF is read whole (~5 MB, ~25 ms) because sysfs mtimes are not stable
    across boots; its checksum changes whenever any type does.
    """
    release = os.uname().release
    try:
        with open("/proc/version", "rb") as f:
            version = hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        version = "noversion"
    with open(btf_path, "rb") as f:
        data = f.read()
    return f"{release}|{version}|{len(data)}|{zlib.crc32(data):08x}|{_requests_digest()}"


def _kallsyms_has(names: tuple[str, ...]) -> dict[str, bool | None]:
    """Which names are exact text symbols of the kernel image; None when unreadable."""
    wanted = set(names)
    seen: set[str] = set()
    try:
        with open("/proc/kallsyms", "rb") as f:
            for line in f:
                parts = line.split()
                # "address type name [module]": only core-kernel text symbols
                if len(parts) == 3 and parts[1] in (b"T", b"t"):
                    name = parts[2].decode("ascii", "replace")
                    if name in wanted:
                        seen.add(name)
    except OSError:
        return {n: None for n in names}
    return {n: n in seen for n in names}


def compute_facts(
    btf: BTF, key: str = "", release: str | None = None, machine: str | None = None
) -> KernelFacts:
    """Read every fact of :data:`READS` and :data:`FUNCTIONS` from *btf* (no cache).

    Every member read on *machine* (default: this one) must exist.
    """
    machine = machine or os.uname().machine
    members: dict[str, MemberFact] = {}
    for read in READS:
        if read.machines and machine not in read.machines:
            continue
        struct = f"struct {read.struct}"
        for candidate in read.candidates or (read.member,):
            try:
                members[read.fact] = MemberFact(
                    btf.offsetof(struct, candidate),
                    btf.member_size(struct, candidate),
                    candidate,
                    btf.member_type(struct, candidate),
                )
                break
            except BTFLookupError:
                continue
        else:
            raise BTFLookupError(
                f"{btf.source}: {struct} has none of "
                f"{', '.join(read.candidates or (read.member,))} (needed for {read.fact})"
            )
    names = tuple(name for role in FUNCTIONS.values() for name in role.names)
    syms = _kallsyms_has(names)
    functions = {}
    for name in names:
        try:
            btf_id = btf.function_id(name)
        except BTFLookupError:
            btf_id = 0
        functions[name] = FunctionFact(
            bool(btf_id), syms[name], btf_id, btf.function_prototypes(name)
        )
    return KernelFacts(
        key=key,
        release=release if release is not None else os.uname().release,
        members=members,
        functions=functions,
    )


def _read_cache(path: str, key: str) -> KernelFacts | None:
    obj = cache.read_json(path)
    if obj is None:
        return None
    try:
        facts = KernelFacts.from_json(obj)
    except ValueError:
        return None
    return facts if facts.key == key else None


_facts: KernelFacts | None = None


def kernel_facts(
    *, btf_path: str = VMLINUX_BTF, cache_path: str | None = None, use_cache: bool = True
) -> KernelFacts:
    """The running kernel's facts, from the per-build cache when it matches.

    The cache file is ``kernel-facts.json`` in the tracer's cache directory;
    when it cannot be written the facts are simply computed again next time.
    With the default arguments the result is also kept for the life of the
    process; ``from_cache`` is false only in the result of the call that
    computed it.
    """
    global _facts
    default = btf_path == VMLINUX_BTF and cache_path is None and use_cache
    if default and _facts is not None:
        return _facts
    key = kernel_build_key(btf_path)
    path = cache_path if cache_path is not None else cache.cache_path("kernel-facts.json")
    facts = _read_cache(path, key) if use_cache else None
    if facts is None:
        btf = kernel_btf() if btf_path == VMLINUX_BTF else BTF.load(btf_path)
        facts = compute_facts(btf, key=key)
        if use_cache:
            cache.write_json(path, facts.to_json())
    if default:
        _facts = dataclasses.replace(facts, from_cache=True)
    return facts
