"""doctor's checks: each asks the kernel one thing the tracer needs, and answers with a row.

Each check is quick and never raises: a check that cannot run is a row
saying why.  Attach checks load a two-instruction BPF program with the
``bpf(2)`` system call directly (:mod:`rawsys.trace.doctor.bpfcalls`) -- no
compiler, a few milliseconds each -- and try to attach it the way the
backend would; one bcc compile checks that bcc and the kernel headers work
together.  :func:`probe_capabilities` runs them all.
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

from rawsys.trace.doctor import bpfcalls
from rawsys.trace.doctor.bpfcalls import errname

__all__ = ["Capabilities", "Check", "probe_capabilities"]

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
LOCKDOWN = "/sys/kernel/security/lockdown"


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
    from rawsys.trace.system import headers

    info = headers.configure_kernel_headers()
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
    from rawsys.trace.kernel.btf import VMLINUX_BTF
    from rawsys.trace.kernel.facts import kernel_facts

    if not os.path.exists(VMLINUX_BTF):
        return Check("BTF", False, "missing", f"no {VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF)")
    facts = kernel_facts()
    size = os.path.getsize(VMLINUX_BTF)
    return Check(
        "BTF",
        True,
        "present",
        f"{VMLINUX_BTF}, {size / 1e6:.1f} MB; scm_fp_list.fp at "
        f"{facts.offset('scm_fp_list.fp')}" + (" (cached)" if facts.from_cache else ""),
    )


def _probe_targets() -> tuple[Check, tuple[str, ...], tuple[str, ...], int, tuple[str, ...]]:
    """Which probe targets kprobes (kallsyms) and fentry (BTF) can name; a BTF id for fentry;
    what the kernel-function probes need that this kernel lacks (its shape, from BTF)."""
    from rawsys.trace.kernel import facts as kernel

    facts = kernel.kernel_facts()
    problems = tuple(facts.kernel_probe_problems())
    targets = [facts.function(role) or r.names[0] for role, r in kernel.FUNCTIONS.items()]
    found = {t: facts.functions.get(t, kernel.FunctionFact(False, False)) for t in targets}
    no_sym = tuple(t for t in targets if not found[t].kallsyms)
    no_btf = tuple(t for t in targets if not found[t].btf)
    parts = [
        f"{t}: "
        + ("symbol" if found[t].kallsyms else "no symbol")
        + (", BTF" if found[t].btf else ", no BTF")
        for t in targets
    ]
    fentry_id = facts.functions["scm_detach_fds"].btf_id
    recv = facts.function("receive_fd")
    if problems:
        check = Check("probe targets", False, "unknown shape", "; ".join(problems))
    else:
        prototype = facts.resolve("receive_fd").prototype.spell(recv or "receive_fd")
        check = Check(
            "probe targets", not no_sym or not no_btf, recv or "?",
            "; ".join([*parts, f"fds installed by {prototype}"]),
        )
    return check, no_sym, no_btf, fentry_id, problems


def _refusal(missing: tuple[str, ...], what: str, problems: tuple[str, ...]) -> str:
    """Why the probes cannot attach though the kernel allows it ("" if they can)."""
    if problems:
        return "the probes do not know this kernel's shape: " + "; ".join(problems)
    if missing:
        return f"{', '.join(missing)} {what}"
    return ""


def _check_kprobes(
    root: bool, config: dict[str, str], targets_missing: tuple[str, ...],
    problems: tuple[str, ...] = (),
) -> Check:
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
    fd, err = bpfcalls.load_trivial_program(bpfcalls.BPF_PROG_TYPE_KPROBE)
    if fd < 0:
        return Check("kprobes", False, "no", "; ".join(facts) + f"; load: {errname(err)}")
    try:
        facts.append("a kprobe program loads (verifier)")
        if not has_pmu:
            return Check("kprobes", False, "no", "; ".join(facts) + " but cannot attach")
        attr = bpfcalls.perf_event_attr()
        with open(pmu) as f:
            attr.type = int(f.read().strip())
        name = ctypes.create_string_buffer(b"scm_detach_fds")
        attr.config1 = ctypes.addressof(name)  # kprobe_func
        attr.sample_period = 1
        attr.wakeup_events = 1
        attached, why = bpfcalls.attach_to_perf_event(attr, fd)
    finally:
        os.close(fd)
    if not attached:
        return Check("kprobes", False, "no", "; ".join(facts) + f"; attach: {why}")
    refusal = _refusal(targets_missing, "have no symbol to probe", problems)
    if refusal:
        return Check("kprobes", False, "no", f"attach works but {refusal}")
    return Check("kprobes", True, "yes", "; ".join(facts) + "; attaches to scm_detach_fds")


def _check_fentry(
    root: bool, config: dict[str, str], btf_id: int, targets_missing: tuple[str, ...],
    problems: tuple[str, ...] = (),
) -> Check:
    needs = _config_says(config, "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
    if not btf_id:
        return Check("fentry", False, "no", f"no BTF FUNC to attach to; {needs}")
    if not root:
        return Check("fentry", None, "needs root", f"{needs}; loading needs root")
    fd, err = bpfcalls.load_trivial_program(
        bpfcalls.BPF_PROG_TYPE_TRACING,
        expected_attach_type=bpfcalls.BPF_TRACE_FENTRY,
        attach_btf_id=btf_id,
    )
    if fd < 0:
        return Check(
            "fentry",
            False,
            "no",
            f"{needs}; loading an fentry program on scm_detach_fds: {errname(err)}",
        )
    try:
        link, err = bpfcalls.raw_tracepoint_open(fd)
        if link < 0:
            return Check("fentry", False, "no", f"loads, attach: {errname(err)}")
        os.close(link)
    finally:
        os.close(fd)
    refusal = _refusal(targets_missing, "not in BTF", problems)
    if refusal:
        return Check("fentry", False, "no", f"attach works but {refusal}")
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
    fd, err = bpfcalls.load_trivial_program(bpfcalls.BPF_PROG_TYPE_TRACEPOINT)
    if fd < 0:
        return Check("syscall tracepoints", False, "no", f"load: {errname(err)}")
    try:
        attr = bpfcalls.perf_event_attr(
            type=bpfcalls.PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1, wakeup_events=1
        )
        attached, why = bpfcalls.attach_to_perf_event(attr, fd)
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
    problems: tuple[str, ...] = ()
    try:
        functions, no_sym, no_btf, btf_id, problems = _probe_targets()
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
        kprobes=_guard("kprobes", lambda: _check_kprobes(root, config, no_sym, problems)),
        fentry=_guard("fentry", lambda: _check_fentry(root, config, btf_id, no_btf, problems)),
        tracepoints=_guard("syscall tracepoints", lambda: _check_tracepoints(root, config)),
        lockdown=_guard("lockdown", lambda: _check_lockdown(config)),
        bcc_path=bcc_path,
        kprobe_functions=no_sym,
        fentry_functions=no_btf,
    )
    caps.elapsed = time.monotonic() - start
    return caps
