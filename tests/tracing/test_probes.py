"""The BPF programs: generated from Python, loaded through the verifier.

Pure tests first (rendering, filters, the event layout, the matcher), then
every program of every backend compiled by bcc and loaded by this kernel's
verifier.  On this machine kprobes cannot attach (CONFIG_KPROBES unset) but
kprobe programs still load; fentry loads are refused with EPERM, which the
test asserts exactly rather than skipping.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import re
import sys
from importlib import resources

import pytest
from tracing_helpers import TRACEPOINT_ATTACHMENTS, TRACEPOINT_PROGRAMS, require_live_tracing

from rawsys.c import constants
from rawsys.trace import events
from rawsys.trace.bpf import prelude, program
from rawsys.trace.bpf.prelude import Filters, ProgramError
from rawsys.trace.bpf.program import render_program
from rawsys.trace.events import (
    FileIdentity,
    RawEvent,
    RecvEvent,
    SendEvent,
    Transfer,
    decode_event,
    file_kind,
    refs_from_raw,
)
from rawsys.trace.kernel.facts import (
    READS,
    SYSCALL_ARG_REGS,
    FunctionFact,
    MemberFact,
    kernel_facts,
)
from rawsys.trace.matcher import Matcher
from rawsys.trace.system.provision import TRACEFS

BPF_DIR = resources.files("rawsys.trace.bpf")
C_SOURCES = sorted(p.name for p in BPF_DIR.iterdir() if p.name.endswith((".bpf.c", ".bpf.h")))
# Helper macros of the C itself; every shared constant is generated.
C_MACROS = {"OPAQUE", "SPAN_GET", "FENTRY", "FEXIT", "KP_ARG", "UNREFINED"}
# Instructions the verifier may process for all of a backend's programs
# (benchmarks/trace_startup.py prints today's figures).
# (tracepoint: 185,556 on 6.18 and 159,836 on 6.1 with the loss probes' loops as
# bpf_loop callbacks; 480,000 when they were bounded loops.)
VERIFIER_BUDGET = {"tracepoint": 400_000, "kprobe": 1_600_000}
VERIFIER_BUDGET_PER_PROGRAM = 250_000  # a quarter of the kernel's limit


def render(backend: str, filters: Filters | None = None, facts: object = None) -> str:
    return render_program(backend, facts or kernel_facts(), filters)  # type: ignore[arg-type]


def source(name: str) -> str:
    return BPF_DIR.joinpath(name).read_text()


# ------------------------------------------------------------------ rendering
def test_the_sources_are_the_bpf_files() -> None:
    assert C_SOURCES == ["causes.bpf.h", "cmsg.bpf.h", "fentry.bpf.c", "files.bpf.h",
                         "kprobe.bpf.c", "maps.bpf.h", "scm.bpf.h", "tracepoint.bpf.c"]


@pytest.mark.parametrize("name", C_SOURCES)
def test_c_sources_define_no_constant_themselves(name: str) -> None:
    """Every constant is a generated #define; the sources add only helper macros."""
    src = source(name)
    assert set(re.findall(r"#\s*define\s+(\w+)", src)) <= C_MACROS
    for literal in ("253", "0x40000000", "1073741824", "bpf_probe_read(", "->f_inode", "@"):
        assert literal not in src, f"{name} hard-codes {literal!r}"


def test_kernel_reads_are_derived_from_the_probes() -> None:
    """READS lists exactly the offsets the BPF C reads: none missing, none unread."""
    used: set[str] = set()
    for name in C_SOURCES:
        used |= prelude.used_names(source(name), "OFF_")
    listed = {read.define for read in READS if read.struct != "pt_regs"}
    assert used == listed
    # pt_regs members are read through SYSCALL_ARG*, per architecture.
    regs = {fact for table in SYSCALL_ARG_REGS.values() for fact, _ in table}
    assert regs == {read.fact for read in READS if read.struct == "pt_regs"}


@pytest.mark.parametrize("backend", program.BACKENDS)
def test_each_backend_defines_only_the_offsets_it_reads(backend: str) -> None:
    text = render(backend)
    defined = set(re.findall(r"^#define (OFF_\w+) ", text, re.M))
    body = text.split("/* ---- maps.bpf.h ---- */", 1)[1]
    assert defined == prelude.used_names(body, "OFF_")
    # Every backend reads scm_fp_list.fp: a closed socket's queued messages.
    assert "OFF_SCM_FP_LIST_FP" in defined


def test_one_placeholder_mechanism() -> None:
    """Each backend includes its files by name; only the prelude is generated."""
    text = render("kprobe")
    assert '#include "' not in text and "@" not in text
    for name in ("prelude.bpf.h", "maps.bpf.h", "files.bpf.h", "cmsg.bpf.h", "scm.bpf.h"):
        assert text.count(f"/* ---- {name} ---- */") == 1


@pytest.mark.parametrize("backend", program.BACKENDS)
def test_defines_come_from_python(backend: str) -> None:
    text = render(backend)
    for name in ("SCM_RIGHTS", "SOL_SOCKET", "MSG_CTRUNC", "MSG_PEEK", "MSG_CMSG_CLOEXEC",
                 "SCM_MAX_FD", "O_CLOEXEC"):
        assert f"#define {name} {getattr(constants, name)}\n" in text
    facts = kernel_facts()
    assert f"#define OFF_FILE_F_INODE {facts.offset('file.f_inode')}\n" in text
    assert f"#define OFF_FDTABLE_CLOSE_ON_EXEC {facts.offset('fdtable.close_on_exec')}\n" in text
    assert f"#define FD_SLOTS {constants.SCM_MAX_FD}\n" in text
    # User memory is read through the helper under the project's own name:
    # bcc looks its own name up in /proc/kallsyms at every call (slow compile).
    assert "probe_read_user(" in text
    assert "(void *)BPF_FUNC_probe_read_user;" in text
    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    assert not re.search(r"\bbpf_probe_read_user(_str)?\(", code)
    # One definition each: no name defined twice.
    names = re.findall(r"^#define (\w+)", text, re.M)
    assert len(names) == len(set(names))


def test_fd_scratch_masks_follow_fd_slots() -> None:
    """FD_SLOTS rounded up to a power of two: index and byte masks, array twice that."""
    assert prelude._fd_scratch_defines(253, 4) == {
        "FD_INDEX_MASK": 255, "FD_READ_MASK": 1023, "FD_ARRAY_LEN": 512}
    assert prelude._fd_scratch_defines(256, 4) == {
        "FD_INDEX_MASK": 255, "FD_READ_MASK": 1023, "FD_ARRAY_LEN": 512}
    assert prelude._fd_scratch_defines(257, 4)["FD_ARRAY_LEN"] == 1024
    text = render("tracepoint")
    assert f"#define FD_ARRAY_LEN {2 * 256}\n" in text


def test_kprobe_offsets_follow_btf_not_headers() -> None:
    """scm_fp_list.fp moved from 16 to 40 in 6.10: the program follows the facts given."""
    facts = kernel_facts()
    members = dict(facts.members)
    members["scm_fp_list.fp"] = dataclasses.replace(members["scm_fp_list.fp"], offset=16)
    old = dataclasses.replace(facts, members=members)
    assert "#define OFF_SCM_FP_LIST_FP 16\n" in render("kprobe", facts=old)
    assert f"#define OFF_SCM_FP_LIST_FP {facts.offset('scm_fp_list.fp')}\n" in render("kprobe")


def test_file_ref_t_is_flagged_from_btf() -> None:
    facts = kernel_facts()
    member = facts.members["file.f_count"]
    assert ("#define FILE_REF_T 1\n" in render("tracepoint")) == (member.member == "f_ref")
    members = dict(facts.members)
    members["file.f_count"] = MemberFact(member.offset, 8, "f_count", "atomic_long_t")
    old = dataclasses.replace(facts, members=members)
    assert "#define FILE_REF_T 0\n" in render("tracepoint", facts=old)


def test_wrong_member_size_is_refused() -> None:
    facts = kernel_facts()
    members = dict(facts.members)
    members["inode.i_ino"] = dataclasses.replace(members["inode.i_ino"], size=4)
    with pytest.raises(ProgramError, match="inode.i_ino is 4 bytes"):
        render("tracepoint", facts=dataclasses.replace(facts, members=members))


def test_receive_fd_name_is_resolved_on_this_kernel() -> None:
    name = kernel_facts().function("receive_fd")
    assert name in ("receive_fd", "__receive_fd")
    assert f"#define FN_RECEIVE_FD {name}\n" in render("fentry")
    attach = program.kprobe_attachments(kernel_facts())
    assert ("kprobe", name, "kp_receive_fd") in attach
    assert ("kretprobe", "scm_detach_fds", "kretp_scm_detach_fds") in attach


def test_receive_fd_is_chosen_by_its_prototype_not_its_name() -> None:
    """Where a two-argument receive_fd exists beside __receive_fd (before 6.8), the
    probes follow the one with the SCM shape; with neither, nothing is rendered."""
    from rawsys.trace.kernel.btf import Param, Prototype

    facts = kernel_facts()
    functions = dict(facts.functions)
    file_, ufd, flags = (Param("file", "struct file *"), Param("ufd", "int *"),
                         Param("o_flags", "unsigned int"))
    functions["receive_fd"] = FunctionFact(True, True, 1, (Prototype("int", (file_, flags)),))
    three = Prototype("int", (file_, ufd, flags))
    functions["__receive_fd"] = FunctionFact(True, True, 2, (three,))
    old = dataclasses.replace(facts, functions=functions)
    assert "#define FN_RECEIVE_FD __receive_fd\n" in render("fentry", facts=old)
    assert ("kretprobe", "__receive_fd", "kretp_receive_fd") in program.kprobe_attachments(old)
    functions["__receive_fd"] = FunctionFact(btf=False, kallsyms=False)
    with pytest.raises(ProgramError, match="receive_fd.struct file .file, unsigned int o_flags. "
                                           "has no int .ufd argument"):
        program.kprobe_attachments(dataclasses.replace(facts, functions=functions))


def test_unknown_backend_and_bad_ring() -> None:
    with pytest.raises(ProgramError, match="unknown backend"):
        render_program("dtrace", kernel_facts())
    with pytest.raises(ProgramError, match="power of two"):
        render_program("tracepoint", kernel_facts(), ring_pages=1000)


# -------------------------------------------------------------------- filters
def test_filters_are_typed() -> None:
    assert Filters.of([12, 13], [14], "nginx").pids == (12, 13)
    for bad in (True, "12", 1.5, None):
        with pytest.raises(ProgramError, match="must be an int"):
            Filters.of([bad])  # type: ignore[list-item]
    for bad_id in (0, -1, 1 << 22):
        with pytest.raises(ProgramError, match="out of range"):
            Filters.of(tids=[bad_id])
    with pytest.raises(ProgramError, match="non-empty"):
        Filters.of(comm="")
    with pytest.raises(ProgramError, match="longer than"):
        Filters.of(comm="a" * 16)
    with pytest.raises(ProgramError, match="must be a str"):
        Filters.of(comm=b"x")  # type: ignore[arg-type]


def test_filter_source_compares_bytes_and_uses_maps() -> None:
    f = Filters.of([7], comm='a"b')
    src = f.c_source()
    # The name is compared as two words (NUL-padded, native order), never
    # pasted into C as a string.
    assert 'a"b' not in src
    lo = int.from_bytes(b'a"b'.ljust(8, b"\0"), sys.byteorder)
    assert f"w[0] == 0x{lo:x}ULL && w[1] == 0x0ULL" in src
    assert "pid_filter.lookup" in src
    assert f.map_entries() == {"pid_filter": (7,), "tid_filter": ()}
    text = render("tracepoint", f)
    assert "#define FILTER_PID 1\n" in text and "#define FILTER_TID 0\n" in text
    assert "#define FILTER_COMM 1\n" in text


# ---------------------------------------------------------------- event layout
def test_c_struct_matches_ctypes() -> None:
    decl = prelude.c_struct(events.RawFile, "fd_file")
    assert "s32 fd;" in decl and "char name[32];" in decl
    assert f"sizeof(struct fd_file) == {ctypes.sizeof(events.RawFile)}" in decl
    assert events.HEADER_SIZE % 8 == 0 and events.FILE_RECORD_SIZE == 64


def _raw(kind: int, syscall: int, fds: list[int], ret: int = 1, **kw: int) -> bytes:
    ev = RawEvent()
    ev.ts_ns, ev.ret, ev.pid, ev.tid, ev.comm = 5, ret, 10, 11, b"prog"
    ev.kind, ev.syscall, ev.nfds, ev.fds_seen = kind, syscall, len(fds), len(fds)
    ev.ev_flags = events.EV_FLAG_REF_IS_FILE_REF
    for k, v in kw.items():
        setattr(ev, k, v)
    for i, fd in enumerate(fds):
        rec = ev.files[i]
        rec.file, rec.ino, rec.ref_raw, rec.fd = 0xFFFF0000 + i, 77, 1, fd
        rec.mode, rec.fd_flags, rec.name = 0o10600, events.FD_FLAG_CLOEXEC, b""
    return bytes(ev)[: events.HEADER_SIZE + len(fds) * events.FILE_RECORD_SIZE]


def test_decode_event_round_trip() -> None:
    data = _raw(events.EventKind.RECV, events.Syscall.RECVMSG, [5, 6],
                msg_flags=constants.MSG_CTRUNC, call_flags=constants.MSG_PEEK)
    ev = decode_event(data, "tracepoint")
    assert isinstance(ev, RecvEvent) and ev.event == "recv"
    assert (ev.pid, ev.tid, ev.comm, ev.fds, ev.ok) == (10, 11, "prog", (5, 6), True)
    assert ev.flags == frozenset({"CTRUNC", "PEEK"})
    assert ev.cloexec == (True, True)
    assert [f.kind for f in ev.files] == ["pipe", "pipe"]
    assert ev.files[0].refcount == 2  # file_ref_t: raw 1 means two references
    assert ev.files[0].label == "pipe:[77]"
    # Built without __init__ (speed): every field set, still frozen and comparable.
    assert set(vars(ev)) == {f.name for f in dataclasses.fields(ev)}
    assert dataclasses.replace(ev) == ev
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.pid = 1  # type: ignore[misc]
    js = ev.to_json()
    files = js["files"]
    assert js["event"] == "recv" and isinstance(files, list)
    assert files[0]["address"] == "0xffff0000"


def test_decode_failed_send() -> None:
    ev = decode_event(_raw(events.EventKind.SEND, events.Syscall.SENDMSG, [9], ret=-9))
    assert isinstance(ev, SendEvent)
    assert (ev.ok, ev.errno, ev.syscall) == (False, errno.EBADF, "sendmsg")


def test_decode_rejects_malformed_records() -> None:
    good = _raw(events.EventKind.SEND, events.Syscall.SENDMSG, [1])
    with pytest.raises(ValueError, match="shorter than its header"):
        decode_event(good[:10])
    with pytest.raises(ValueError, match="claims 1 files"):
        decode_event(good[:-1])
    bad_kind = bytearray(good)
    bad_kind[RawEvent.kind.offset] = 9
    with pytest.raises(ValueError, match="unknown event kind"):
        decode_event(bytes(bad_kind))


def test_refcount_decoding() -> None:
    assert refs_from_raw(0, True) == 1
    assert refs_from_raw(4, True) == 5
    assert refs_from_raw(0xC000000000000000, True) == 0  # FILE_REF_RELEASED
    assert refs_from_raw(3, False) == 3
    assert [file_kind(m) for m in (0o140777, 0o10600, 0o100644, 0)] == [
        "socket", "pipe", "file", "anon"]


# --------------------------------------------------------------------- matcher
def _ev(kind: type[SendEvent] | type[RecvEvent], pid: int, fds: tuple[int, ...],
        addrs: tuple[int, ...], ts: int, flags: frozenset[str] = frozenset(),
        ok: bool = True) -> SendEvent | RecvEvent:
    files = tuple(FileIdentity(a, 1, 0o10600, 1, "") for a in addrs)
    return kind(pid=pid, tid=pid, comm="c", sock=3, fds=fds, files=files, flags=flags,
                ok=ok, errno=0 if ok else 9, ret=1 if ok else -9, syscall="x", msg_index=0,
                backend="test", timestamp_ns=ts)


def test_matcher_links_by_file_in_either_order() -> None:
    m = Matcher()
    send = _ev(SendEvent, 1, (4, 5), (0xA, 0xB), 10)
    recv = _ev(RecvEvent, 2, (7, 8), (0xA, 0xB), 11)
    assert m.feed(recv) == []  # receive reported before its send
    out = m.feed(send)
    assert [(t.send_fd, t.recv_fd, t.matched) for t in out] == [(4, 7, True), (5, 8, True)]
    assert m.pending == 0


def test_matcher_keeps_for_exec_only_the_fds_received_close_on_exec() -> None:
    """A receive read before its send: of its two fds only the second was
    installed close-on-exec, so only that one is kept for the next exec."""
    m = Matcher()
    recv = dataclasses.replace(_ev(RecvEvent, 2, (7, 8), (0xA, 0xB), 11), cloexec=(False, True))
    m.feed(recv)
    m.feed(_ev(SendEvent, 1, (4, 5), (0xA, 0xB), 10))
    assert [(pid, fd) for pid, fd, _ in m._delivered] == [(2, 8)]


def test_matcher_peek_does_not_consume() -> None:
    m = Matcher()
    m.feed(_ev(SendEvent, 1, (4,), (0xA,), 1))
    peek = m.feed(_ev(RecvEvent, 2, (7,), (0xA,), 2, frozenset({"PEEK"})))
    real = m.feed(_ev(RecvEvent, 2, (8,), (0xA,), 3))
    assert [(t.recv_fd, "PEEK" in t.flags) for t in peek + real] == [(7, True), (8, False)]
    assert m.flush() == []


def test_matcher_failed_send_and_expiry() -> None:
    """Failed sends are shown at once; a send waits for its receive without a
    timer (in flight at the end); a receive alone waits grace_ns, then NOSEND."""
    m = Matcher(grace_ns=100)
    (failed,) = m.feed(_ev(SendEvent, 1, (4,), (0,), 1, ok=False))
    assert not failed.matched and failed.recv is None
    assert m.feed(_ev(SendEvent, 1, (5,), (0xC,), 2)) == []
    assert m.feed(_ev(SendEvent, 1, (6,), (0xD,), 10_000)) == []  # no expiry of sends
    (late,) = m.feed(_ev(RecvEvent, 2, (9,), (0xC,), 20_000))  # linked, however late
    assert isinstance(late, Transfer) and (late.send_fd, late.recv_fd) == (5, 9)
    assert m.feed(_ev(RecvEvent, 2, (8,), (0xE,), 20_001)) == []  # may precede its send
    (nosend,) = m.feed(_ev(SendEvent, 1, (7,), (0xF,), 30_000))
    assert isinstance(nosend, Transfer) and (nosend.send, nosend.recv_fd) == (None, 8)
    left = m.flush()
    assert [(t.send_fd, t.in_flight) for t in left if isinstance(t, Transfer)] == [
        (6, True), (7, True)]


def test_same_file_sent_twice_is_matched_in_order() -> None:
    m = Matcher()
    m.feed(_ev(SendEvent, 1, (4,), (0xA,), 1))
    m.feed(_ev(SendEvent, 1, (4,), (0xA,), 2))
    a = m.feed(_ev(RecvEvent, 2, (7,), (0xA,), 3))
    b = m.feed(_ev(RecvEvent, 2, (8,), (0xA,), 4))
    assert [t.send.timestamp_ns for t in a + b if t.send] == [1, 2]


# ------------------------------------------------------------ the verifier
def test_tracepoint_programs_load_and_attach() -> None:
    require_live_tracing()
    from rawsys.trace.system.bccloader import load_bcc

    bcc = load_bcc()
    b = program.compile_program(bcc, render("tracepoint"))
    try:
        program.load_programs(b, bcc)  # links the bpf_loop callbacks bcc cannot
        bcc.BPF._trace_autoload(b)
        program.attach_shared_tracepoints(b)
        names = sorted(k.decode() for k in b.funcs)
        # sendmsg at entry and exit; recvmsg, sendmmsg, recvmmsg at exit only
        assert names == sorted(TRACEPOINT_PROGRAMS)
        assert sorted(tp.decode().split(":")[1] for tp in b.tracepoint_fds) == sorted(
            TRACEPOINT_ATTACHMENTS)
    finally:
        b.cleanup()


def _format_fields(tracepoint: str) -> dict[str, tuple[int, int]]:
    """field -> (offset, size) of a tracepoint's format in tracefs."""
    category, name = tracepoint.split(":")
    text = open(f"{TRACEFS}/events/{category}/{name}/format", encoding="ascii").read()
    return {m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"field:[^;]*?\b(\w+)(?:\[\d*\])?;\s*offset:(\d+);\s*size:(\d+);",
                                 text)}


@pytest.mark.parametrize("shared", sorted(program.SHARED_TRACEPOINTS))
def test_a_shared_program_finds_its_fields_in_both_formats(shared: str) -> None:
    """A tracepoint that runs another's program has each field that program reads
    (from bcc's struct for the other's format) at the same offset and size."""
    require_live_tracing()
    owner = program.SHARED_TRACEPOINTS[shared]
    name = owner.split(":")[1]
    body = re.search(rf"TRACEPOINT_PROBE\(\w+, {name}\)\n\{{(.*?)\n\}}", source("causes.bpf.h"),
                     re.S)
    assert body, f"no program for {owner}"
    used = set(re.findall(r"args->(\w+)", body.group(1)))
    mine, theirs = _format_fields(shared), _format_fields(owner)
    for field in used:
        assert mine.get(field) == theirs[field], (field, shared, owner)
    # What a program reads at all: execve's none, read's fd or ret.
    assert used == ({"fd"} if "enter_read" in owner else {"ret"} if "exit" in owner else set())


@pytest.mark.kernel_verifier
def test_kprobe_programs_load_through_the_verifier() -> None:
    """Every kprobe/kretprobe program loads; attaching needs CONFIG_KPROBES (not here)."""
    require_live_tracing()
    from rawsys.trace.system.bccloader import load_bcc

    bcc = load_bcc()
    b = program.compile_program(bcc, render("kprobe"))
    try:
        program.load_programs(b, bcc)  # as a session does: bpf_loop callbacks linked
        bcc.BPF._trace_autoload(b)  # its syscall tracepoints attach
        for _kind, _target, fn in program.kprobe_attachments(kernel_facts()):
            loaded = b.load_func(fn.encode(), bcc.BPF.KPROBE)
            assert loaded.fd >= 0
    finally:
        b.cleanup()


@pytest.mark.kernel_verifier
def test_fentry_programs_compile_and_load_or_eperm() -> None:
    """fentry/fexit programs: compiled by bcc, then loaded through the verifier.

    On this machine the kernel refuses BPF_PROG_TYPE_TRACING loads with EPERM
    (doctor reports the same): then that exact errno is asserted.  Where
    fentry is allowed, every program must load.
    """
    require_live_tracing()
    from rawsys.trace.system.bccloader import load_bcc

    bcc = load_bcc()
    b = program.compile_program(bcc, render("fentry"))
    try:
        # As a session does: every program loaded (bpf_loop callbacks linked),
        # then bcc attaches the kfunc__/kretfunc__ and tracepoint programs.
        program.load_programs(b, bcc)
        bcc.BPF._trace_autoload(b)
    except Exception as e:
        err = ctypes.get_errno()  # before bcc's cleanup, which may set it
        b.cleanup()
        assert err == errno.EPERM, f"fentry load failed with {errno.errorcode.get(err, err)}: {e}"
        return
    try:
        assert len(b.kfunc_exit_fds) + len(b.kfunc_entry_fds) >= 4
    finally:
        b.cleanup()


# Programs per backend, as bcc's macros and the sources name them.
_PROGRAM_PATTERNS = {
    "tracepoint": re.compile(r"^TRACEPOINT_PROBE\((\w+), (\w+)\)", re.M),
    "kprobe": re.compile(r"^int (kp_\w+|kretp_\w+)\(struct pt_regs \*ctx\)", re.M),
    "fentry": re.compile(r"^(FENTRY|FEXIT)\((\w+)\)", re.M),
}


@pytest.mark.parametrize("backend", program.BACKENDS)
def test_a_backend_program_holds_no_other_backend_programs(backend: str) -> None:
    """Each backend compiles and verifies only its own programs (start-up time)."""
    text = render(backend)
    assert _PROGRAM_PATTERNS[backend].search(text)
    for other in ("kprobe", "fentry"):
        if other != backend:
            assert not _PROGRAM_PATTERNS[other].search(text), f"{other} programs in {backend}"
    if backend == "tracepoint":
        # Neither the kernel-side SCM_RIGHTS code nor its maps.
        assert "scm_msgs" not in text and "PT_REGS_PARM" not in text


@pytest.mark.kernel_verifier
@pytest.mark.parametrize("backend", ["tracepoint", "kprobe"])
def test_verifier_work_stays_bounded(backend: str) -> None:
    """The instructions the verifier processes, the bulk of start-up, stay under a budget.

    The bound is in instructions, not seconds, so a busy machine cannot
    fail it; it is about twice today's total (tracepoint 411,209, kprobe
    768,022 on 6.18, of which the fd-passing programs 75,000 and 484,000),
    so a loop that stops verifying in bounded steps shows here before it
    reaches the kernel's 1,000,000-per-program limit on some kernel.
    """
    require_live_tracing()
    from rawsys.trace.system.bccloader import load_bcc

    bcc = load_bcc()
    b = program.compile_program(bcc, render(backend))
    try:
        work = program.verifier_work(b, bcc)
    finally:
        b.cleanup()
    assert work and all(n > 0 for n in work.values()), work
    assert sum(work.values()) < VERIFIER_BUDGET[backend], work
    assert max(work.values()) < VERIFIER_BUDGET_PER_PROGRAM, work


def test_syscall_argument_registers_come_from_btf_per_arch() -> None:
    """The tracepoint backend's SYSCALL_ARG* offsets: pt_regs members from BTF,
    per architecture; any other architecture is refused with a clear error."""
    import os

    from rawsys.trace.kernel.btf import kernel_btf

    facts = kernel_facts()
    machine = os.uname().machine
    if machine == "x86_64":
        btf = kernel_btf()
        want = [btf.offsetof("struct pt_regs", r) for r in ("di", "si", "dx", "r10")]
        got = prelude.syscall_arg_defines(facts)
        assert [got[f"SYSCALL_ARG{i}"] for i in range(4)] == want
        assert "SYSCALL_ARG3" in render("tracepoint")
    with pytest.raises(ProgramError, match="s390x"):
        prelude.syscall_arg_defines(facts, "s390x")


# ------------------------------------------------------------ layout checks
def test_layout_checks_survive_python_O() -> None:
    """A decoding format that misreads the layout stops the import, even under -O."""
    import subprocess
    import sys

    code = (
        "import struct, rawsys.trace.events as e\n"
        "e._FILE_STRUCT = struct.Struct('<QQQHHi32s')  # fd and mode swapped\n"
        "e._HEADER_STRUCT = struct.Struct('<QqII16siIIIBBBBHHHHI')  # 8 bytes short\n"
        "print(e._layout_problems())\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "RawFile.fd" in out and "RawEventHeader is 80 bytes" in out
    source = resources.files("rawsys.trace").joinpath("events.py").read_text()
    assert not re.search(r"^assert ", source, re.M)
    assert "raise ImportError" in source
