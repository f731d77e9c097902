"""Which kernel function plays each part, from BTF prototypes; struct shapes; refusals.

Runs on any host: hand-built BTF for the shapes kernels have had, the
facts recorded from Debian 12's 6.1 kernel (``data/``: made with
``compute_facts`` from that kernel's ``/sys/kernel/btf/vmlinux`` and its
``/proc/kallsyms``, booted by ``./dev kernels``), and this machine's BTF.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from test_btf import BTFBuilder, needs_vmlinux

from rawsys.trace.bpf.prelude import ProgramError
from rawsys.trace.bpf.program import kprobe_attachments, render_program
from rawsys.trace.kernel import btf as btfmod
from rawsys.trace.kernel.btf import BTF, Param, Prototype, kernel_btf
from rawsys.trace.kernel.facts import FACTS_FORMAT, FUNCTIONS, READS, KernelFacts, kernel_facts
from rawsys.trace.kernel.shapes import ShapeError, fit, resolve

DEBIAN_6_1 = Path(__file__).parent / "data" / "kernel-facts-6.1.0-57-amd64.json"
RECEIVE = FUNCTIONS["receive_fd"]


# Members the probes began reading after the 6.1 facts were recorded (why fds
# are lost: sockets, their queues, the fd table's limit; a file's path: its
# dentry chain and mounts).  The programs
# rendered from the recording need an offset for each; these tests check
# function names and argument positions, never those offsets, so this
# machine's stand in for them (the kernel matrix reads 6.1's own BTF).
RECORDED_BEFORE = frozenset({
    "file.private_data", "socket.type", "socket.sk", "socket.file",
    "sock.__sk_common.skc_family", "sock.sk_receive_queue", "sock.sk_receive_queue.next",
    "sock.sk_socket", "unix_sock.peer", "sk_buff.next", "sk_buff.cb", "unix_skb_parms.fp",
    "task_struct.signal", "signal_struct.rlim", "files_struct.count", "files_struct.next_fd",
    "fdtable.open_fds", "dentry.d_parent", "file.f_path.mnt", "mount.mnt", "mount.mnt_mountpoint",
    "mount.mnt_parent", "vfsmount.mnt_root",
})


def recorded_6_1() -> KernelFacts:
    obj = json.loads(DEBIAN_6_1.read_text())
    assert obj["format"] == FACTS_FORMAT, "recorded facts of an older format: record them again"
    facts = KernelFacts.from_json(obj)
    here = kernel_facts()
    missing = {read.fact for read in READS if read.fact not in facts.members
               and read.struct != "pt_regs"}
    assert missing <= RECORDED_BEFORE, f"record 6.1's facts again: {sorted(missing)} missing"
    members = dict(facts.members)
    members.update({fact: here.members[fact] for fact in missing})
    return dataclasses.replace(facts, members=members)


class KernelBTF(BTFBuilder):
    """BTFBuilder with the kinds a kernel's functions need."""

    def ptr(self, target: int) -> int:
        return self.add(btfmod.BTF_KIND_PTR, st=target)

    def function(self, name: str, returns: int, *params: tuple[str, int]) -> int:
        extra = b"".join(self.u32s(self.name(n), t) for n, t in params)
        proto = self.add(btfmod.BTF_KIND_FUNC_PROTO, vlen=len(params), st=returns, extra=extra)
        return self.add(btfmod.BTF_KIND_FUNC, name, vlen=1, st=proto)  # vlen 1: global


def receive_btf(*shapes: str) -> BTF:
    """BTF with the receive functions of some kernels: '6.8' receive_fd(file, ufd,
    o_flags); '6.1' receive_fd(file, o_flags) and __receive_fd(file, ufd, o_flags);
    '5.10' __receive_fd(fd, file, ufd, o_flags); 'const' the 6.8 one with a
    const-qualified __user-tagged ufd."""
    b = KernelBTF()
    int_t = b.int_("int", 4)
    uint = b.int_("unsigned int", 4)
    file_p = b.ptr(b.composite("file", 8, []))
    int_p = b.ptr(int_t)
    for shape in shapes:
        if shape == "6.8":
            b.function("receive_fd", int_t, ("file", file_p), ("ufd", int_p), ("o_flags", uint))
        elif shape == "6.1":
            b.function("receive_fd", int_t, ("file", file_p), ("o_flags", uint))
            b.function("__receive_fd", int_t, ("file", file_p), ("ufd", int_p), ("o_flags", uint))
        elif shape == "5.10":
            b.function("__receive_fd", int_t, ("fd", int_t), ("file", file_p), ("ufd", int_p),
                       ("o_flags", uint))
        elif shape == "const":
            tagged = b.ptr(b.add(btfmod.BTF_KIND_TYPE_TAG, "user",
                                 st=b.add(btfmod.BTF_KIND_CONST, st=int_t)))
            b.function("receive_fd", int_t, ("file", file_p), ("ufd", tagged), ("o_flags", uint))
    return BTF(b.build(), source=f"<{'+'.join(shapes)}>")


def prototypes(btf: BTF) -> dict[str, tuple[Prototype, ...]]:
    return {name: btf.function_prototypes(name) for name in RECEIVE.names}


# ------------------------------------------------------------- prototypes
def test_prototypes_are_read_plain_from_btf() -> None:
    btf = receive_btf("6.1")
    (two,) = btf.function_prototypes("receive_fd")
    params = (Param("file", "struct file *"), Param("o_flags", "unsigned int"))
    assert two == Prototype("int", params)
    assert two.spell("receive_fd") == "int receive_fd(struct file *file, unsigned int o_flags)"
    (tagged,) = receive_btf("const").function_prototypes("receive_fd")
    assert tagged.params[1] == Param("ufd", "int *")  # const and __user left out
    assert btf.function_prototypes("nope") == ()


@pytest.mark.parametrize(
    ("shapes", "name", "positions", "nargs"),
    [
        (("6.8",), "receive_fd", {"file": 0, "ufd": 1, "o_flags": 2}, 3),
        (("6.1",), "__receive_fd", {"file": 0, "ufd": 1, "o_flags": 2}, 3),
        (("5.10",), "__receive_fd", {"file": 1, "ufd": 2, "o_flags": 3}, 4),
        (("const",), "receive_fd", {"file": 0, "ufd": 1, "o_flags": 2}, 3),
    ],
)
def test_the_receive_function_is_the_one_with_its_shape(
    shapes: tuple[str, ...], name: str, positions: dict[str, int], nargs: int
) -> None:
    found = resolve("receive_fd", RECEIVE, prototypes(receive_btf(*shapes)))
    assert (found.name, dict(found.positions), found.nargs) == (name, positions, nargs)


def test_no_function_of_the_shape_is_refused_naming_each() -> None:
    btf = receive_btf("6.1")
    protos = prototypes(btf)
    del protos["__receive_fd"]
    with pytest.raises(ShapeError) as e:
        resolve("receive_fd", RECEIVE, protos)
    assert str(e.value) == (
        "no kernel function plays receive_fd (int receive_fd or __receive_fd(struct file"
        " *file, int *ufd, unsigned int o_flags, ...)): int receive_fd(struct file *file,"
        " unsigned int o_flags) has no int *ufd argument; __receive_fd: not in this"
        " kernel's BTF"
    )


def test_fit_says_why() -> None:
    two = Prototype("int", (Param("file", "struct file *"), Param("flags", "unsigned int")))
    assert fit(RECEIVE, two) == "has no int *ufd argument"
    void = Prototype("void", two.params)
    assert fit(RECEIVE, void) == "returns void, not int"
    variadic = Prototype("int", (*two.params, Param("", "...")))
    assert fit(RECEIVE, variadic) == "is variadic"
    twice = Prototype("int", (Param("a", "struct file *"), Param("b", "struct file *"),
                              Param("ufd", "int *"), Param("o_flags", "unsigned int")))
    assert fit(RECEIVE, twice) == "has 2 struct file * arguments and none named file"
    # An argument found by type alone when its name differs (__scm_send's scm is "p").
    send = Prototype("int", (Param("sock", "struct socket *"), Param("msg", "struct msghdr *"),
                             Param("p", "struct scm_cookie *")))
    assert fit(FUNCTIONS["scm_send"], send) == {"msg": 1, "scm": 2}


def test_one_name_with_two_prototypes_is_ambiguous() -> None:
    b = KernelBTF()
    int_t = b.int_("int", 4)
    uint = b.int_("unsigned int", 4)
    file_p = b.ptr(b.composite("file", 8, []))
    b.function("receive_fd", int_t, ("file", file_p), ("ufd", b.ptr(int_t)), ("o_flags", uint))
    b.function("receive_fd", int_t, ("file", file_p), ("o_flags", uint))
    with pytest.raises(ShapeError, match="BTF has 2 functions of that name"):
        resolve("receive_fd", RECEIVE, prototypes(BTF(b.build())))


# ------------------------------------------------------------ struct shapes
def scm_fp_list_btf(layout: str) -> BTF:
    """struct scm_fp_list as it was before the af_unix garbage collector's rewrite
    ('old': count, max, user, fp at 16) and after it ('new': fp at 40)."""
    b = KernelBTF()
    short = b.int_("short int", 2)
    boolean = b.int_("_Bool", 1)
    void_p = b.ptr(0)
    file_p = b.ptr(b.composite("file", 8, []))
    fp = b.add(btfmod.BTF_KIND_ARRAY, extra=b.u32s(file_p, short, 253))
    if layout == "old":
        members = [("count", short, 0, 0), ("max", short, 16, 0), ("user", void_p, 64, 0),
                   ("fp", fp, 128, 0)]
    else:
        head = b.composite("list_head", 16, [("next", void_p, 0, 0), ("prev", void_p, 64, 0)])
        members = [("count", short, 0, 0), ("count_unix", short, 16, 0), ("max", short, 32, 0),
                   ("inflight", boolean, 48, 0), ("dead", boolean, 56, 0),
                   ("vertices", head, 64, 0), ("edges", void_p, 192, 0),
                   ("user", void_p, 256, 0), ("fp", fp, 320, 0)]
    b.composite("scm_fp_list", 16 + 253 * 8 if layout == "old" else 40 + 253 * 8, members)
    return BTF(b.build())


@pytest.mark.parametrize(("layout", "offset"), [("old", 16), ("new", 40)])
def test_scm_fp_list_fp_before_and_after_the_gc_rewrite(layout: str, offset: int) -> None:
    btf = scm_fp_list_btf(layout)
    assert btf.offsetof("struct scm_fp_list", "fp") == offset
    (fp,) = [r for r in READS if r.fact == "scm_fp_list.fp"]
    (count,) = [r for r in READS if r.fact == "scm_fp_list.count"]
    assert fp.fits(btf.member_type("struct scm_fp_list", "fp"))
    assert count.fits(btf.member_type("struct scm_fp_list", "count"))
    assert not fp.fits("struct file *") and not fp.fits("struct inode *[253]")
    assert not count.fits("int")


# ------------------------------------------------- Debian 12's 6.1 kernel
def test_debian_6_1_receives_through_dunder_receive_fd() -> None:
    """Recorded from Debian's 6.1: receive_fd(file, o_flags) is pidfd_getfd's helper;
    the SCM path installs fds with __receive_fd(file, ufd, o_flags)."""
    facts = recorded_6_1()
    assert facts.functions["receive_fd"].btf and facts.functions["receive_fd"].kallsyms
    assert facts.function("receive_fd") == "__receive_fd"
    assert dict(facts.resolve("receive_fd").positions) == {"file": 0, "ufd": 1, "o_flags": 2}
    assert dict(facts.resolve("scm_send").positions) == {"msg": 1, "scm": 2}
    # Debian's 6.1.192 carries the 6.10 scm_fp_list (the collector rewrite was backported).
    assert facts.offset("scm_fp_list.fp") == 40
    assert facts.kernel_probe_problems() == []


def test_debian_6_1_programs_name_and_place_its_functions() -> None:
    facts = recorded_6_1()
    fentry = render_program("fentry", facts)
    for line in ("#define FN_RECEIVE_FD __receive_fd", "#define NARGS_RECEIVE_FD 3",
                 "#define ARG_RECEIVE_FD_O_FLAGS 2", "#define ARG_SCM_SEND_MSG 1",
                 "#define OFF_SCM_FP_LIST_FP 40"):
        assert line + "\n" in fentry
    assert "#define ARG_RECEIVE_FD_FILE 0\n" in render_program("kprobe", facts)
    assert ("kretprobe", "__receive_fd", "kretp_receive_fd") in kprobe_attachments(facts)


def test_a_kernel_of_unknown_shape_gets_no_program() -> None:
    facts = recorded_6_1()
    functions = dict(facts.functions)
    functions["__receive_fd"] = dataclasses.replace(functions["__receive_fd"], prototypes=())
    unknown = dataclasses.replace(facts, functions=functions)
    assert unknown.function("receive_fd") is None
    (problem,) = unknown.kernel_probe_problems()
    assert "receive_fd(struct file *file, unsigned int o_flags) has no int *ufd" in problem
    for backend in ("kprobe", "fentry"):
        with pytest.raises(ProgramError, match="no kernel function plays receive_fd"):
            render_program(backend, unknown)
    assert "TRACEPOINT_PROBE(syscalls" in render_program("tracepoint", unknown)  # needs none
    members = dict(facts.members)
    members["scm_fp_list.fp"] = dataclasses.replace(members["scm_fp_list.fp"],
                                                    type="struct inode *[253]")
    odd = dataclasses.replace(facts, members=members)
    assert odd.kernel_probe_problems() == [
        "scm_fp_list.fp is struct inode *[253], not struct file *[]"]
    with pytest.raises(ProgramError, match=re.escape("the probes read struct file *[]")):
        render_program("kprobe", odd)


def test_doctor_refuses_the_kernel_probes_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rawsys.trace.doctor import checks
    from rawsys.trace.kernel import facts as factsmod

    facts = recorded_6_1()
    functions = dict(facts.functions)
    functions["__receive_fd"] = dataclasses.replace(functions["__receive_fd"], prototypes=())
    monkeypatch.setattr(factsmod, "kernel_facts",
                        lambda **_: dataclasses.replace(facts, functions=functions))
    row, _, _, _, problems = checks._probe_targets()
    assert (row.ok, row.value) == (False, "unknown shape")
    assert "no kernel function plays receive_fd" in row.detail
    assert problems and checks._refusal((), "", problems).startswith(
        "the probes do not know this kernel's shape: no kernel function plays receive_fd")


# ------------------------------------------------------------ this kernel
@needs_vmlinux
def test_this_kernel_receive_function_has_the_shape() -> None:
    facts = kernel_facts()
    found = facts.resolve("receive_fd")
    assert found.prototype in kernel_btf().function_prototypes(found.name)
    assert found.prototype.params[found.positions["ufd"]].type == "int *"
    assert facts.kernel_probe_problems() == []
