"""Which backend the tracer uses: the first that attaches, by a fixed preference.

Backend preference, kprobe > fentry > tracepoint:

* kprobe and fentry probes sit *in* the kernel functions that pass the fds
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
  is: on kernels without kprobes, or where fentry programs are refused, the
  only backend that attaches.

doctor's checks take about half a second, and their verdict cannot change
until the next boot: :func:`cached_choice` keeps it per boot in the cache.
"""

from __future__ import annotations

import os
import platform

from rawsys.trace.doctor.checks import Capabilities, probe_capabilities
from rawsys.trace.system import cache

__all__ = ["BACKEND_PREFERENCE", "cached_choice", "choose_backend"]

BACKEND_PREFERENCE: tuple[str, ...] = ("kprobe", "fentry", "tracepoint")


def choose_backend(caps: Capabilities, forced: str | None = None) -> tuple[str, str]:
    """(backend name, why), by :data:`BACKEND_PREFERENCE` (see the module doc).

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


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def cached_choice(*, use_cache: bool = True) -> tuple[str, str]:
    """:func:`choose_backend` of :func:`probe_capabilities`, kept for this boot.

    The cache file names the boot (``/proc/sys/kernel/random/boot_id``), the
    kernel release and the user; anything else, or an unreadable file, means
    asking doctor again.  The reason of a cached verdict ends with ``(cached)``.
    """
    key = {"boot_id": _boot_id(), "release": platform.release(), "euid": os.geteuid()}
    path = cache.cache_path("backend-choice.json")
    if use_cache and key["boot_id"]:
        obj = cache.read_json(path)
        if (
            isinstance(obj, dict)
            and all(obj.get(k) == v for k, v in key.items())
            and obj.get("backend") in BACKEND_PREFERENCE
            and isinstance(obj.get("reason"), str)
        ):
            return str(obj["backend"]), f"{obj['reason']} (cached)"
    backend, reason = choose_backend(probe_capabilities())
    if key["boot_id"]:
        cache.write_json(path, {**key, "backend": backend, "reason": reason})
    return backend, reason
