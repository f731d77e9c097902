"""``rawsys-trace doctor``: what this kernel lets the tracer do, and which backend it uses.

Each check is quick and never raises: a check that cannot run is a row
saying why.  Attach checks load a two-instruction BPF program (``r0 = 0;
exit``) with the ``bpf(2)`` system call directly -- no compiler, a few
milliseconds each -- and try to attach it the way the backend would; one
bcc compile checks that bcc and the kernel headers work together.

Backend preference, kprobe > fentry > tracepoint:

* kprobe and fentry probes sit *in* the kernel functions the seeds walk
  (``__scm_send``, ``scm_detach_fds``, ``receive_fd``), so what they report
  -- which files were sent, how many fds fit the control buffer, which fd
  number each got -- is the kernel's own decision, read from kernel memory.
  The tracepoint backend reconstructs the same from the syscall's arguments:
  it reads the user's ``msghdr`` and control buffer and looks each fd up in
  the task's fd table, which is correct but indirect (another thread can
  change the table between the read and the use).
* kprobes before fentry: kprobes attach by symbol name wherever the symbol
  exists (``/proc/kallsyms``), on kernels without BTF or trampolines too, and
  a kprobe program is one program for any function; fentry needs a BTF FUNC
  and a trampoline per function (BPF_PROG_TYPE_TRACING), and is refused
  where tracing programs are restricted.  When both work they see the same
  data, so the most widely available one is the default.
* tracepoints last, but always available where ``CONFIG_FTRACE_SYSCALLS``
  is: the only backend that can attach on this project's reference machine.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import os
import platform
import textwrap
import time
from ctypes import c_char, c_uint8, c_uint32, c_uint64
from dataclasses import dataclass, field
from typing import Callable

__all__ = [
    "BACKEND_PREFERENCE",
    "Capabilities",
    "Check",
    "choose_backend",
    "format_report",
    "probe_capabilities",
]

BACKEND_PREFERENCE: tuple[str, ...] = ("kprobe", "fentry", "tracepoint")
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
LOCKDOWN = "/sys/kernel/security/lockdown"

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
# <asm/unistd_64.h> (x86-64), <asm-generic/unistd.h> (aarch64)
SYS_BPF = {"x86_64": 321, "aarch64": 280}
SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}

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


# --------------------------------------------------------------- records


@dataclass(frozen=True)
class Check:
    """One row: ``ok`` is True/False, or None when it could not be told (e.g. not root)."""

    name: str
    ok: bool | None
    value: str
    detail: str = ""


@dataclass
class Capabilities:
    kernel: str
    root: bool
    bcc: Check
    headers: Check
    bcc_compile: Check
    tracefs: Check
    btf: Check
    kprobes: Check
    fentry: Check
    tracepoints: Check
    lockdown: Check
    functions: Check
    bcc_path: str | None = None
    kprobe_functions: tuple[str, ...] = ()  # probe targets missing from kallsyms
    fentry_functions: tuple[str, ...] = ()  # probe targets missing from BTF
    elapsed: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[Check]:
        return [
            self.bcc,
            self.headers,
            self.bcc_compile,
            self.tracefs,
            self.btf,
            self.functions,
            self.kprobes,
            self.fentry,
            self.tracepoints,
            self.lockdown,
        ]


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as e:  # a check never raises: it becomes a row
        return Check(name, None, "error", f"{type(e).__name__}: {e}")


# ---------------------------------------------------------- raw bpf(2)


def _syscall(table: dict[str, int], *args: object) -> tuple[int, int]:
    """(result, errno) of a raw system call by this machine's number in ``table``."""
    from rawsys.c.syscalls import syscall

    machine = "aarch64" if platform.machine() in ("aarch64", "arm64") else platform.machine()
    number = table.get(machine)
    if number is None:
        return -1, errno.ENOSYS
    ctypes.set_errno(0)
    result = syscall(number, *args)
    return result, (ctypes.get_errno() if result < 0 else 0)


def _errname(e: int) -> str:
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
    return _syscall(SYS_BPF, BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))


def _perf_event_open(attr: perf_event_attr) -> tuple[int, int]:
    attr.size = ctypes.sizeof(attr)
    return _syscall(SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)


def _attach_to_perf_event(attr: perf_event_attr, prog_fd: int) -> tuple[bool, str]:
    pfd, err = _perf_event_open(attr)
    if pfd < 0:
        return False, f"perf_event_open: {_errname(err)}"
    try:
        fcntl.ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog_fd)
    except OSError as e:
        return False, f"PERF_EVENT_IOC_SET_BPF: {_errname(e.errno or 0)}"
    finally:
        os.close(pfd)
    return True, ""


# ------------------------------------------------------------- the checks


def _tracefs_dir() -> str | None:
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def kernel_config() -> dict[str, str]:
    """The running kernel's config (``/proc/config.gz`` or ``/boot/config-RELEASE``); {} if none."""
    text = ""
    try:
        with gzip.open("/proc/config.gz", "rt", errors="replace") as f:
            text = f.read()
    except (OSError, EOFError):
        try:
            with open(f"/boot/config-{platform.release()}", errors="replace") as f:
                text = f.read()
        except OSError:
            return {}
    config: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            key, _, value = line.partition("=")
            config[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            config[line[2:].split()[0]] = "n"
    return config


def _config_says(config: dict[str, str], key: str) -> str:
    if not config:
        return "kernel config not readable"
    value = config.get(key, "n")
    return f"{key}={value}" if value != "n" else f"{key} is not set"


def _check_bcc() -> tuple[Check, str | None]:
    from rawsys.trace.system import bccloader

    try:
        bcc = bccloader.load_bcc(configure_headers=False)
    except bccloader.BccUnavailable as e:
        return Check("bcc", False, "not importable", str(e)), None
    path = os.path.dirname(bcc.__file__ or "")
    version = getattr(bcc, "__version__", "?")
    return Check("bcc", True, f"{version}", f"from {path}"), path


def _check_headers() -> Check:
    from rawsys.trace.system import bccloader

    info = bccloader.configure_kernel_headers()
    value = {
        "exact": "exact",
        "nearest": f"nearest ({info.version})",
        "environment": "BCC_KERNEL_SOURCE",
        "kheaders": "kheaders",
        "none": "none",
    }.get(info.match, info.match)
    detail = info.reason + (f"; bcc uses {info.path}" if info.path else "")
    return Check("kernel headers", info.usable, value, detail)


def _check_bcc_compile(bcc_ok: bool, root: bool) -> Check:
    if not bcc_ok:
        return Check("bcc compile", None, "not tried", "bcc is not importable")
    import bcc  # the distribution's, put in sys.modules by load_bcc

    start = time.monotonic()
    b = bcc.BPF(text=b"int rawsys_doctor(void *ctx) { return 0; }")
    try:
        if root:
            b.load_func(b"rawsys_doctor", bcc.BPF.TRACEPOINT)
    finally:
        b.cleanup()
    took = time.monotonic() - start
    what = "compiles and loads" if root else "compiles (loading needs root)"
    return Check("bcc compile", True, "ok", f"a trivial program {what} in {took:.2f} s")


def _check_tracefs() -> Check:
    from rawsys.trace.system.provision import tracefs_mounted

    d = _tracefs_dir()
    if d is not None:
        return Check("tracefs", True, "mounted", d)
    for path in TRACEFS_DIRS:
        if tracefs_mounted(path):
            return Check("tracefs", None, "mounted, not readable", f"{path}: needs root")
    return Check(
        "tracefs",
        False,
        "not mounted",
        "mount -t tracefs nodev /sys/kernel/tracing (or: rawsys-trace setup)",
    )


def _check_btf() -> Check:
    from rawsys.trace.kernel import btf

    if not os.path.exists(btf.VMLINUX_BTF):
        return Check("BTF", False, "missing", f"no {btf.VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF)")
    facts = btf.kernel_facts()
    size = os.path.getsize(btf.VMLINUX_BTF)
    return Check(
        "BTF",
        True,
        "present",
        f"{btf.VMLINUX_BTF}, {size / 1e6:.1f} MB; scm_fp_list.fp at "
        f"{facts.offset('scm_fp_list.fp')}" + (" (cached)" if facts.from_cache else ""),
    )


def _probe_targets() -> tuple[Check, tuple[str, ...], tuple[str, ...], int]:
    """Which probe targets kprobes (kallsyms) and fentry (BTF) can name; a BTF id for fentry."""
    from rawsys.trace.kernel import btf

    facts = btf.kernel_facts()
    recv = facts.receive_fd_function or "receive_fd"
    targets = (recv, "scm_detach_fds", "__scm_send", "scm_fp_copy")
    no_sym = tuple(t for t in targets[:3] if not facts.functions[t].kallsyms)
    no_btf = tuple(t for t in targets[:3] if not facts.functions[t].btf)
    copy = facts.functions["scm_fp_copy"]
    parts = [
        f"{t}: "
        + ("symbol" if facts.functions[t].kallsyms else "no symbol")
        + (", BTF" if facts.functions[t].btf else ", no BTF")
        for t in targets[:3]
    ]
    parts.append("scm_fp_copy: " + ("probeable" if copy.kallsyms else "inlined (no symbol)"))
    fentry_id = facts.functions["scm_detach_fds"].btf_id
    ok = not no_sym or not no_btf
    return Check("probe targets", ok, recv, "; ".join(parts)), no_sym, no_btf, fentry_id


def _check_kprobes(root: bool, config: dict[str, str], targets_missing: tuple[str, ...]) -> Check:
    tracefs = _tracefs_dir()
    pmu = "/sys/bus/event_source/devices/kprobe/type"
    has_pmu = os.path.exists(pmu)
    has_events = bool(tracefs) and os.path.exists(os.path.join(tracefs or "", "kprobe_events"))
    facts = [
        _config_says(config, "CONFIG_KPROBES"),
        "kprobe PMU" if has_pmu else "no kprobe PMU",
        "kprobe_events" if has_events else "no kprobe_events",
    ]
    if not root:
        ok: bool | None = None if (has_pmu or has_events) else False
        return Check(
            "kprobes",
            ok,
            "needs root" if ok is None else "no",
            "; ".join(facts) + "; loading and attaching needs root",
        )
    fd, err = load_trivial_program(BPF_PROG_TYPE_KPROBE)
    if fd < 0:
        return Check("kprobes", False, "no", "; ".join(facts) + f"; load: {_errname(err)}")
    try:
        facts.append("a kprobe program loads (verifier)")
        if not has_pmu:
            return Check("kprobes", False, "no", "; ".join(facts) + " but cannot attach")
        attr = perf_event_attr()
        with open(pmu) as f:
            attr.type = int(f.read().strip())
        name = ctypes.create_string_buffer(b"scm_detach_fds")
        attr.config1 = ctypes.addressof(name)  # kprobe_func
        attr.sample_period = 1
        attr.wakeup_events = 1
        attached, why = _attach_to_perf_event(attr, fd)
    finally:
        os.close(fd)
    if not attached:
        return Check("kprobes", False, "no", "; ".join(facts) + f"; attach: {why}")
    if targets_missing:
        return Check(
            "kprobes",
            False,
            "no",
            f"attach works but {', '.join(targets_missing)} have no symbol to probe",
        )
    return Check("kprobes", True, "yes", "; ".join(facts) + "; attaches to scm_detach_fds")


def _check_fentry(
    root: bool, config: dict[str, str], btf_id: int, targets_missing: tuple[str, ...]
) -> Check:
    needs = _config_says(config, "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
    if not btf_id:
        return Check("fentry", False, "no", f"no BTF FUNC to attach to; {needs}")
    if not root:
        return Check("fentry", None, "needs root", f"{needs}; loading needs root")
    fd, err = load_trivial_program(
        BPF_PROG_TYPE_TRACING, expected_attach_type=BPF_TRACE_FENTRY, attach_btf_id=btf_id
    )
    if fd < 0:
        return Check(
            "fentry",
            False,
            "no",
            f"{needs}; loading an fentry program on scm_detach_fds: {_errname(err)}",
        )
    try:
        attr = bpf_attr_raw_tracepoint(name=0, prog_fd=fd)
        link, err = _syscall(
            SYS_BPF, BPF_RAW_TRACEPOINT_OPEN, ctypes.byref(attr), ctypes.sizeof(attr)
        )
        if link < 0:
            return Check("fentry", False, "no", f"loads, attach: {_errname(err)}")
        os.close(link)
    finally:
        os.close(fd)
    if targets_missing:
        return Check("fentry", False, "no", f"{', '.join(targets_missing)} not in BTF")
    return Check("fentry", True, "yes", "an fentry program loads and attaches to scm_detach_fds")


def _check_tracepoints(root: bool, config: dict[str, str]) -> Check:
    tracefs = _tracefs_dir()
    needs = _config_says(config, "CONFIG_FTRACE_SYSCALLS")
    if tracefs is None and not root:
        return Check("syscall tracepoints", None, "needs root", f"{needs}; tracefs needs root")
    if tracefs is None:
        return Check(
            "syscall tracepoints",
            None if config.get("CONFIG_FTRACE_SYSCALLS") else False,
            "unknown",
            f"{needs}; tracefs not mounted (rawsys-trace setup)",
        )
    names = ("sendmsg", "recvmsg", "sendmmsg", "recvmmsg")
    missing = [
        n
        for n in names
        for side in ("enter", "exit")
        if not os.path.exists(f"{tracefs}/events/syscalls/sys_{side}_{n}/id")
    ]
    if missing:
        return Check("syscall tracepoints", False, "no", f"{needs}; missing: {', '.join(missing)}")
    if not root:
        return Check("syscall tracepoints", None, "needs root", "all 8 exist; attaching needs root")
    with open(f"{tracefs}/events/syscalls/sys_enter_sendmsg/id") as f:
        tp_id = int(f.read().strip())
    fd, err = load_trivial_program(BPF_PROG_TYPE_TRACEPOINT)
    if fd < 0:
        return Check("syscall tracepoints", False, "no", f"load: {_errname(err)}")
    try:
        attr = perf_event_attr(
            type=PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1, wakeup_events=1
        )
        attached, why = _attach_to_perf_event(attr, fd)
    finally:
        os.close(fd)
    if not attached:
        return Check("syscall tracepoints", False, "no", f"sys_enter_sendmsg: {why}")
    return Check(
        "syscall tracepoints",
        True,
        "yes",
        "sys_{enter,exit}_{send,recv}{msg,mmsg} exist; a program attaches",
    )


def _check_lockdown(config: dict[str, str]) -> Check:
    try:
        with open(LOCKDOWN) as f:
            text = f.read().strip()  # "none [integrity] confidentiality"
    except OSError as e:
        forced = [
            k.removeprefix("CONFIG_LOCK_DOWN_KERNEL_FORCE_").lower()
            for k in (
                "CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY",
                "CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY",
            )
            if config.get(k) == "y"
        ]
        hint = f"; kernel config forces {forced[-1]}" if forced else ""
        why = (
            "securityfs not mounted or no lockdown LSM"
            if e.errno == errno.ENOENT
            else os.strerror(e.errno or 0)
        )
        return Check("lockdown", None, "not available", f"{LOCKDOWN}: {why}{hint}")
    mode = text[text.find("[") + 1 : text.find("]")] if "[" in text else text
    # confidentiality forbids kprobes and bpf_probe_read_kernel (security/lockdown).
    return Check("lockdown", mode != "confidentiality", mode, text)


def probe_capabilities(*, compile_check: bool = True) -> Capabilities:
    """Run every check (each guarded, each quick) and gather the rows.

    ``compile_check=False`` skips the bcc compile (~0.2 s): for a caller that
    is about to compile its own program anyway and only wants the backend.
    """
    start = time.monotonic()
    root = os.geteuid() == 0
    config: dict[str, str] = {}
    try:
        config = kernel_config()
    except Exception:  # an unreadable config only loses detail
        config = {}
    bcc_check, bcc_path = Check("bcc", None, "error"), None
    try:
        bcc_check, bcc_path = _check_bcc()
    except Exception as e:
        bcc_check = Check("bcc", None, "error", f"{type(e).__name__}: {e}")
    headers = _guard("kernel headers", _check_headers)
    if compile_check:
        compiled = _guard(
            "bcc compile", lambda: _check_bcc_compile(bool(bcc_check.ok and headers.ok), root)
        )
    else:
        compiled = Check("bcc compile", None, "not tried", "skipped by the caller")
    if bcc_check.ok and not headers.ok:
        compiled = Check("bcc compile", False, "not tried", "no kernel headers")
    no_sym: tuple[str, ...] = ()
    no_btf: tuple[str, ...] = ()
    btf_id = 0
    try:
        functions, no_sym, no_btf, btf_id = _probe_targets()
    except Exception as e:
        functions = Check("probe targets", None, "error", f"{type(e).__name__}: {e}")
    caps = Capabilities(
        kernel=platform.release(),
        root=root,
        bcc=bcc_check,
        headers=headers,
        bcc_compile=compiled,
        tracefs=_guard("tracefs", _check_tracefs),
        btf=_guard("BTF", _check_btf),
        functions=functions,
        kprobes=_guard("kprobes", lambda: _check_kprobes(root, config, no_sym)),
        fentry=_guard("fentry", lambda: _check_fentry(root, config, btf_id, no_btf)),
        tracepoints=_guard("syscall tracepoints", lambda: _check_tracepoints(root, config)),
        lockdown=_guard("lockdown", lambda: _check_lockdown(config)),
        bcc_path=bcc_path,
        kprobe_functions=no_sym,
        fentry_functions=no_btf,
    )
    caps.elapsed = time.monotonic() - start
    return caps


# ------------------------------------------------------------ the choice


def choose_backend(caps: Capabilities, forced: str | None = None) -> tuple[str, str]:
    """(backend name, why), preferring kprobe > fentry > tracepoint (see the module doc).

    ``forced`` (``--backend``) wins; if the checks say it cannot attach, the
    reason says so and the attach itself will report the error.  An unknown
    name raises ``ValueError``.
    """
    checks = {"kprobe": caps.kprobes, "fentry": caps.fentry, "tracepoint": caps.tracepoints}
    if forced is not None:
        if forced not in checks:
            raise ValueError(
                f"unknown backend {forced!r}: choose from {', '.join(BACKEND_PREFERENCE)}"
            )
        c = checks[forced]
        if c.ok:
            return forced, "forced with --backend"
        return forced, f"forced with --backend, though doctor says: {c.value} ({c.detail})"
    refused: list[str] = []
    for name in BACKEND_PREFERENCE:
        c = checks[name]
        if c.ok:
            why = (
                f"{name} is the first that attaches (preference: {' > '.join(BACKEND_PREFERENCE)})"
            )
            return name, "; ".join([why, *refused])
        refused.append(f"not {name}: {c.detail or c.value}")
    for i, name in enumerate(BACKEND_PREFERENCE):
        if checks[name].ok is None:
            others = refused[:i] + refused[i + 1 :]
            return name, "; ".join([f"{name} could not be tested: {checks[name].detail}", *others])
    return "tracepoint", "; ".join(["no backend attaches here", *refused])


def format_report(caps: Capabilities, forced: str | None = None, width: int = 79) -> str:
    """The doctor's table (one row per check, its detail wrapped below), then the backend."""
    mark = {True: "yes", False: "NO", None: "?"}
    rows = caps.rows()
    w0 = max(len(c.name) for c in rows)
    lines = [
        f"rawsys-trace doctor: Linux {caps.kernel}, "
        + ("root" if caps.root else "not root: load/attach checks need root"),
        "",
        f"{'CHECK':<{w0}}  OK   VALUE",
    ]
    indent = " " * (w0 + 7)
    for c in rows:
        lines.append(f"{c.name:<{w0}}  {mark[c.ok]:<3}  {c.value}")
        if c.detail:
            lines += textwrap.wrap(
                c.detail,
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
                break_long_words=False,
            )
    backend, why = choose_backend(caps, forced)
    lines += ["", f"backend: {backend}"]
    lines += textwrap.wrap(
        why,
        width,
        initial_indent="  because ",
        subsequent_indent="  ",
        break_on_hyphens=False,
        break_long_words=False,
    )
    lines.append(f"(checks took {caps.elapsed:.2f} s)")
    return "\n".join(lines)
