"""A backend's whole BPF program: its C sources and the generated prelude, as one text.

The kernel side is C next to this file, one job per file:

* ``tracepoint.bpf.c``, ``kprobe.bpf.c``, ``fentry.bpf.c`` -- the programs
  of each backend;
* ``maps.bpf.h`` -- per-thread state, the maps, writing events;
* ``files.bpf.h`` -- from an fd number to its ``struct file``;
* ``cmsg.bpf.h`` -- walking a ``msghdr``'s control data;
* ``scm.bpf.h`` -- the kernel side of ``SCM_RIGHTS`` (kprobe and fentry).

A backend's source names what it needs with ``#include "NAME.bpf.h"``.
bcc compiles one text (and rewrites map calls only in it), so each quoted
include is replaced by that file, once, and ``prelude.bpf.h`` by the prelude
generated for this kernel, these filters and this ring buffer
(:mod:`rawsys.trace.bpf.prelude`).  That is the only substitution: the rest
is plain C and macros.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
from importlib import resources
from typing import Any

from rawsys.trace.bpf import link
from rawsys.trace.bpf.prelude import (
    RING_PAGES_DEFAULT,
    Filters,
    ProgramError,
    kernel_function,
    render_prelude,
)
from rawsys.trace.kernel.facts import KernelFacts

__all__ = [
    "BACKENDS",
    "SHARED_TRACEPOINTS",
    "attach_shared_tracepoints",
    "compile_program",
    "function_names",
    "kprobe_attachments",
    "load_programs",
    "program_type",
    "render_program",
    "verifier_work",
]

BACKENDS: tuple[str, ...] = ("tracepoint", "kprobe", "fentry")

# Tracepoints that run another tracepoint's program (every backend has them,
# from causes.bpf.h): the same code reading the same fields at the same
# offsets in both formats (the tests compare the formats), so it is compiled
# and verified once.  "category:tracepoint" -> the one whose program it runs.
SHARED_TRACEPOINTS: dict[str, str] = {
    "syscalls:sys_enter_readv": "syscalls:sys_enter_read",
    "syscalls:sys_exit_readv": "syscalls:sys_exit_read",
    "syscalls:sys_exit_recvfrom": "syscalls:sys_exit_read",
    "syscalls:sys_enter_execveat": "syscalls:sys_enter_execve",
}

PRELUDE = "prelude.bpf.h"
_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"[^\n]*$', re.M)


def _source(name: str) -> str:
    return resources.files("rawsys.trace.bpf").joinpath(name).read_text(encoding="utf-8")


def _inline(name: str, seen: set[str]) -> str:
    """*name* with its quoted includes replaced by their files, each once; the prelude's kept."""

    def include(m: re.Match[str]) -> str:
        found = m.group(1)
        if found == PRELUDE:
            return m.group(0)
        if found in seen:
            return ""
        seen.add(found)
        return f"/* ---- {found} ---- */\n" + _inline(found, seen).rstrip("\n")

    return _INCLUDE.sub(include, _source(name))


def render_program(
    backend: str,
    facts: KernelFacts,
    filters: Filters | None = None,
    *,
    ring_pages: int = RING_PAGES_DEFAULT,
) -> str:
    """The complete BPF C text of *backend* for the running kernel (*facts*)."""
    if backend not in BACKENDS:
        raise ProgramError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    name = f"{backend}.bpf.c"
    text = _inline(name, {name})
    include = f'#include "{PRELUDE}"'
    if include not in text:
        raise ProgramError(f"{name} does not include {PRELUDE}")
    prelude = render_prelude(backend, facts, text, filters, ring_pages=ring_pages)
    return (
        f"/* rawsys-trace, {backend} backend: {name} and what it includes, the prelude"
        f" generated for this kernel (rawsys.trace.bpf.program) */\n"
        + text.replace(include, f"/* ---- {PRELUDE} ---- */\n{prelude}", 1)
    )


def kprobe_attachments(facts: KernelFacts) -> list[tuple[str, str, str]]:
    """(``kprobe``/``kretprobe``, kernel function, BPF function) for the kprobe backend.

    The functions are those that play each part on the running kernel, by
    their BTF prototypes (``receive_fd`` since 6.8, ``__receive_fd`` before);
    the syscall exits come from the syscall tracepoints, which the kprobe
    backend also uses.
    """
    out = []
    for role in ("scm_send", "scm_detach_fds", "receive_fd"):
        target = kernel_function(facts, role).name
        out.append(("kprobe", target, f"kp_{role}"))
        out.append(("kretprobe", target, f"kretp_{role}"))
    return out


def compile_program(bcc: Any, text: str) -> Any:
    """bcc's ``BPF`` object for *text*: compiled, its maps made, no program loaded yet.

    bcc's constructor would also load and attach every program it recognises
    by name; that is left to :func:`load_programs` (which links bpf_loop
    callbacks, which bcc cannot) and then to ``bcc.BPF._trace_autoload``.
    """

    class _Deferred(bcc.BPF):  # type: ignore[misc]
        """bcc's BPF without its load-and-attach-on-construction."""

        def _trace_autoload(self) -> None:
            pass

    # Not -g0, though it saves bcc about 8 % of its compile here: without the
    # program's BTF, bpftool shows truncated program names and the verifier's
    # messages lose their source lines.
    return _Deferred(text=text.encode())


def attach_shared_tracepoints(bpf: Any) -> None:
    """Attach each of :data:`SHARED_TRACEPOINTS` to the program it shares
    (after bcc attached that one by its name)."""
    for tp, owner in SHARED_TRACEPOINTS.items():
        category, name = owner.split(":")
        bpf.attach_tracepoint(tp=tp.encode(), fn_name=f"tracepoint__{category}__{name}".encode())


def function_names(bpf: Any) -> list[bytes]:
    """The programs of a compiled bcc module, in source order (bpf_loop callbacks aside)."""
    from bcc.libbcc import lib

    names = (lib.bpf_function_name(bpf.module, i) for i in range(lib.bpf_num_functions(bpf.module)))
    return [name for name in names if not link.is_callback(name)]


def program_type(bcc: Any, name: bytes) -> int:
    """bcc's program type for the function *name*, from the prefix its macros give it."""
    if name.startswith(b"tracepoint__"):
        return int(bcc.BPF.TRACEPOINT)
    if name.startswith((b"kfunc__", b"kretfunc__")):
        return int(bcc.BPF.TRACING)
    return int(bcc.BPF.KPROBE)


def load_programs(bpf: Any, bcc: Any, workers: int | None = None) -> list[Any]:
    """Load every program of the compiled module *bpf* through the verifier.

    bcc keeps each loaded function, so attaching afterwards (bcc's
    ``_trace_autoload``, ``attach_kprobe``) reuses it; loading them all first
    keeps the verifier's time apart from attaching's.  A program that runs
    bpf_loop callbacks is linked with them and loaded here
    (:mod:`rawsys.trace.bpf.link`), then handed to bcc as if bcc had loaded it.

    The verifier checks one program per CPU at a time (root's loads do not
    queue on each other in the kernel, and both bcc's load and ours leave
    Python while the kernel works), largest first; *workers* threads, one per
    CPU by default.  The first refusal (in source order) is raised once every
    load has ended, with its errno in ctypes' (as bcc leaves it); the
    programs loaded by then are bcc's to close with the module.
    """
    names = function_names(bpf)
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, len(names)))

    def load(name: bytes) -> Any:
        kind = program_type(bcc, name)
        linked = link.load_linked(bpf, name, kind)
        if linked is None:
            return bpf.load_func(name, kind)
        fn = bcc.BPF.Function(bpf, name, linked[0])
        bpf.funcs[name] = fn
        return fn

    if workers == 1:
        return [load(name) for name in names]
    import ctypes

    from bcc.libbcc import lib

    def load_keeping_errno(name: bytes) -> tuple[Any, BaseException | None, int]:
        # bcc's message hides the errno, which ctypes keeps per thread.
        try:
            return load(name), None, 0
        except Exception as e:
            return None, e, ctypes.get_errno()

    largest_first = sorted(names, key=lambda n: -lib.bpf_function_size(bpf.module, n))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="bpf-load") as pool:
        futures = {name: pool.submit(load_keeping_errno, name) for name in largest_first}
    out = []
    for name in names:
        fn, error, err = futures[name].result()
        if error is not None:
            ctypes.set_errno(err)
            raise error
        out.append(fn)
    return out


_PROCESSED = re.compile(rb"processed (\d+) insns")


def verifier_work(bpf: Any, bcc: Any) -> dict[str, int]:
    """Instructions the verifier processed for each program of *bpf* (its start-up cost).

    Each program is loaded once more with the verifier's statistics on
    (``BPF_LOG_STATS``) and closed again; *bpf*'s own programs are untouched.
    A program the kernel refuses raises OSError with the verifier's message.
    """
    import ctypes

    from bcc.libbcc import lib

    log_stats = 4  # BPF_LOG_STATS, <linux/bpf.h>
    out: dict[str, int] = {}
    for name in function_names(bpf):
        linked = link.load_linked(bpf, name, program_type(bcc, name), log_stats)
        if linked is not None:
            os.close(linked[0])
            m = _PROCESSED.search(linked[1].encode())
            out[name.decode()] = int(m.group(1)) if m else -1
            continue
        log = ctypes.create_string_buffer(1 << 16)
        ctypes.set_errno(0)
        fd = lib.bcc_func_load(
            bpf.module, program_type(bcc, name), name,
            lib.bpf_function_start(bpf.module, name), lib.bpf_function_size(bpf.module, name),
            lib.bpf_module_license(bpf.module), lib.bpf_module_kern_version(bpf.module),
            log_stats, log, len(log), None, -1,
        )
        if fd < 0:
            err = ctypes.get_errno()
            why = log.value[-500:].decode(errors="replace")
            raise OSError(err, f"{name.decode()}: {os.strerror(err)}: {why}")
        os.close(fd)
        m = _PROCESSED.search(log.value)
        out[name.decode()] = int(m.group(1)) if m else -1
    return out
