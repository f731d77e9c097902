"""``rawsys-trace setup``: make this machine ready to trace (root, idempotent).

Steps, each reported as ``done``, ``already``, ``skipped`` or ``failed``:

1. mount tracefs on ``/sys/kernel/tracing`` (a fresh machine may not have it);
2. install what is missing of the distribution's packages -- bcc's Python
   bindings, kernel headers and bpftool; :func:`package_plan` is the one list
   of them (``./dev`` runs this set-up too);
3. point bcc at headers: when the running kernel's are missing, join the
   nearest version's directories once (:mod:`rawsys.trace.system.headers`)
   so every later run finds them ready;
4. read the kernel facts from BTF into the cache (:mod:`rawsys.trace.kernel.facts`).

A step says ``done`` only when this call did it: running set-up twice
changes nothing the second time, and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "SetupError",
    "StepResult",
    "distribution",
    "install_hint",
    "mount_tracefs",
    "package_plan",
    "run_setup",
    "setup_steps",
    "tracefs_mounted",
]

TRACEFS = "/sys/kernel/tracing"


class SetupError(RuntimeError):
    """Setup cannot run at all (e.g. not root)."""


@dataclass(frozen=True)
class StepResult:
    step: str
    status: str  # "done" | "already" | "failed" | "skipped"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.step}: {self.status}" + (f" ({self.detail})" if self.detail else "")


# ------------------------------------------------------------------ tracefs


def tracefs_mounted(path: str = TRACEFS) -> bool:
    """True if a tracefs is mounted at ``path`` (per ``/proc/self/mounts``)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[1] == path and fields[2] == "tracefs":
                    return True
    except OSError:
        pass
    return False


def mount_tracefs(path: str = TRACEFS) -> bool:
    """Mount tracefs at ``path`` unless it already is; True if this call mounted it.

    Raises ``OSError`` with the real errno (``EPERM`` when not root).
    """
    if tracefs_mounted(path):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    mount = libc.mount
    # int mount(const char *source, const char *target, const char *filesystemtype,
    #           unsigned long mountflags, const void *data);  <sys/mount.h>
    mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    mount.restype = ctypes.c_int
    if mount(b"nodev", os.fsencode(path), b"tracefs", 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount -t tracefs nodev {path}: {os.strerror(e)}")
    return True


# ----------------------------------------------------------------- packages


def distribution(os_release: str = "/etc/os-release") -> tuple[str, tuple[str, ...]]:
    """(ID, ID_LIKE words) from os-release, lower case; ("", ()) when unreadable."""
    values: dict[str, str] = {}
    try:
        with open(os_release, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    values[key] = value.strip().strip("\"'")
    except OSError:
        return "", ()
    return values.get("ID", "").lower(), tuple(values.get("ID_LIKE", "").lower().split())


@dataclass(frozen=True)
class PackagePlan:
    manager: str  # "apt" | "dnf"
    packages: tuple[str, ...]  # what provides bcc, headers, bpftool, in that order
    check: tuple[str, ...]  # command prefix that exits 0 when a package is installed
    install: tuple[str, ...]  # command prefix that installs packages
    refresh: tuple[str, ...] = ()  # run once before installing (apt-get update)


def package_plan(os_release: str = "/etc/os-release", release: str | None = None) -> PackagePlan:
    """Which packages provide bcc and headers on this distribution, and how to install them."""
    dist_id, like = distribution(os_release)
    family = {dist_id, *like}
    release = release or os.uname().release
    if family & {"debian", "ubuntu"}:
        headers = "linux-headers-amd64" if dist_id == "debian" else "linux-headers-generic"
        if os.uname().machine == "aarch64" and dist_id == "debian":
            headers = "linux-headers-arm64"
        return PackagePlan(
            "apt",
            ("python3-bpfcc", headers, "bpftool"),
            ("dpkg", "-s"),
            ("apt-get", "install", "-y", "-q"),
            ("apt-get", "update", "-q"),
        )
    if family & {"fedora", "rhel", "centos"}:
        return PackagePlan(
            "dnf",
            ("python3-bcc", "kernel-devel", "bpftool"),
            ("rpm", "-q"),
            ("dnf", "install", "-y"),
        )
    raise SetupError(
        f"unsupported distribution {dist_id or 'unknown'!r}: install its bcc Python bindings"
        " and kernel headers by hand"
    )


def install_hint(what: str) -> str:
    """How to get ``"bcc"`` or ``"headers"`` on this machine, for error messages."""
    try:
        plan = package_plan()
    except SetupError:
        return (
            f"run `rawsys-trace setup` as root, or install the distribution's "
            f"{'bcc Python bindings' if what == 'bcc' else 'kernel headers'}"
        )
    package = plan.packages[0] if what == "bcc" else plan.packages[1]
    return f"run `rawsys-trace setup` as root, or `{' '.join(plan.install[:2])} {package}`"


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a package-manager command; a missing program or a time-out is exit status 127."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    except (OSError, subprocess.SubprocessError) as e:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: {e}")


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def install_packages(plan: PackagePlan, run: Runner = _run) -> list[StepResult]:
    missing = [p for p in plan.packages if run([*plan.check, p]).returncode != 0]
    if not missing:
        return [StepResult(f"packages {' '.join(plan.packages)}", "already")]
    label = f"install {' '.join(missing)}"
    if shutil.which(plan.install[0]) is None:
        return [StepResult(label, "failed", f"{plan.install[0]} not found")]
    if plan.refresh:
        run(list(plan.refresh))  # a stale list is reported by the install itself
    proc = run([*plan.install, *missing])
    if proc.returncode != 0:
        return [StepResult(label, "failed", _tail(proc.stderr or proc.stdout))]
    return [StepResult(label, "done")]


# -------------------------------------------------------------------- setup


def run_setup(*, install: bool = True, run: Runner = _run) -> list[str]:
    """Do every step; one line per step, ``"STEP: done|already|failed|skipped (detail)"``.

    Raises :class:`SetupError` when not root; a failed step is a line, never an exception.
    """
    return [str(r) for r in setup_steps(install=install, run=run)]


def setup_steps(*, install: bool = True, run: Runner = _run) -> list[StepResult]:
    """:func:`run_setup` as :class:`StepResult` records."""
    if os.geteuid() != 0:
        raise SetupError("rawsys-trace setup must run as root (try: sudo rawsys-trace setup)")
    results: list[StepResult] = []
    try:
        mounted = mount_tracefs()
        results.append(StepResult(f"mount tracefs on {TRACEFS}", "done" if mounted else "already"))
    except OSError as e:
        results.append(StepResult(f"mount tracefs on {TRACEFS}", "failed", str(e)))

    if install:
        try:
            results.extend(install_packages(package_plan(), run))
        except SetupError as e:
            results.append(StepResult("install bcc and kernel headers", "failed", str(e)))
    else:
        results.append(StepResult("install bcc and kernel headers", "skipped", "--no-install"))

    from rawsys.trace.system import bccloader, headers

    try:
        bccloader.find_distribution_bcc()
        results.append(StepResult("distribution bcc", "already"))
    except bccloader.BccUnavailable as e:
        results.append(StepResult("distribution bcc", "failed", str(e)))

    had = os.environ.get("BCC_KERNEL_SOURCE")
    info = headers.configure_kernel_headers()
    if info.match == "nearest" and info.path:
        results.append(
            StepResult(
                "point bcc at kernel headers",
                "done" if info.created else "already",
                f"nearest {info.version} joined in {info.path}",
            )
        )
    elif info.usable:
        results.append(
            StepResult(
                "point bcc at kernel headers", "already", f"{info.match}: {had or info.version}"
            )
        )
    else:
        results.append(StepResult("point bcc at kernel headers", "failed", info.reason))

    from rawsys.trace.kernel.facts import kernel_facts

    try:
        facts = kernel_facts()
        results.append(
            StepResult(
                "kernel facts from BTF",
                "already" if facts.from_cache else "done",
                f"scm_fp_list.fp at {facts.offset('scm_fp_list.fp')}",
            )
        )
    except (OSError, ValueError, LookupError) as e:
        results.append(StepResult("kernel facts from BTF", "failed", str(e)))
    return results
