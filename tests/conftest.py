"""Shared pytest fixtures.

``build_c``
    Compile a C program with gcc at test time and get the binary's path::

        def test_layout(build_c):
            exe = build_c("abi.c")                      # tests/csrc/abi.c
            exe = build_c("walker.c", "-O2")            # extra gcc flags
            exe = build_c('#include <stdio.h>\\nint main(void){puts("hi");}')  # source text
            out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout

    ``build_c(name_or_source, *extra_flags) -> pathlib.Path``

    * *name_or_source* is either the name of a file in ``tests/csrc/`` (with
      or without the ``.c``), a path to a ``.c`` file, or the C source itself
      (anything containing a newline or a ``{``).
    * The default flags are ``-std=gnu11 -Wall -Wextra -Werror -O0 -g``;
      *extra_flags* come after them, so ``"-O2"`` overrides ``-O0`` and
      ``"-lm"`` links.  Warnings are errors: a test program that does not
      compile cleanly fails the test that asked for it, with gcc's output.
    * Binaries are cached for the whole session in one temporary directory,
      keyed on the source text and the flags, so asking twice is cheap.
    * The compiler is ``$CC`` if set, else the first of ``gcc``, ``gcc-12``,
      ``cc`` found on ``PATH``.  Without one the test is skipped, saying so.

``fd_leak_check``
    Fails a test that leaves more file descriptors open in the test process
    than it found (counted in ``/proc/self/fd``).  Use it with
    ``pytestmark = pytest.mark.usefixtures("fd_leak_check")``.

``dgram``
    A connected ``AF_UNIX``/``SOCK_DGRAM`` ``socket.socketpair()``, blocking,
    closed after the test.

``c_dgram``
    The same pair made through the C layer, for its tests: ``rawsys.c``'s
    ``socketpair(AF_UNIX, SOCK_DGRAM, 0, sv)``; the two int fds, closed after
    the test with ``rawsys.c``'s ``close``.

``pipe``
    ``os.pipe()``'s ``(read_fd, write_fd)``, both closed after the test.

``installed_venv``
    A new virtual environment into which ``pip install .`` installed this
    tree, once per session: what a library user gets.  A
    ``venv_support.InstalledVenv`` with ``path``, ``bin``, ``python``,
    ``site_packages`` and ``env()`` (the environment of a shell in which the
    venv is activated).  Needs pip to reach PyPI for the build backend
    (setuptools), as any ``pip install .`` does.

``fresh_machine``
    Run commands as a fresh machine would, whatever this one has installed::

        def test_doctor(fresh_machine):
            [doctor] = fresh_machine([sys.executable, "-m", "rawsys.trace", "doctor"])
            assert doctor.returncode == 1 and "python3-bpfcc" in doctor.stdout

    ``fresh_machine(*commands, hide=("bcc", "headers", "tracefs"))
    -> list[subprocess.CompletedProcess[str]]``

    The commands run one after the other, from the repository root, in one
    private mount namespace (``unshare --mount``) in which the distribution's
    bcc packages are empty directories, ``/usr/src`` and ``/lib/modules``
    are empty (no kernel headers) and tracefs is unmounted -- each only if
    named in *hide* -- and with ``HOME``, ``XDG_CACHE_HOME`` and ``TMPDIR``
    new empty folders and no ``BCC_KERNEL_SOURCE``.  The machine itself is
    not touched.  Needs root (CI is root); elsewhere the test is skipped.

``RAWSYS_NO_SKIP=1`` (set by ``.ci/run``)
    A skipped test fails the run, listed with its reason.  CI is root and
    installs everything the suite asks for, so a skip there means a broken
    set-up, not a missing capability.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
from venv_support import InstalledVenv, install_into_new_venv

CSRC = Path(__file__).parent / "csrc"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CFLAGS = ("-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O0", "-g")

BuildC = Callable[..., Path]


def _find_compiler() -> str | None:
    env = os.environ.get("CC")
    if env:
        return shutil.which(env) or env
    for name in ("gcc", "gcc-12", "cc"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _source_of(name_or_source: str | os.PathLike[str]) -> tuple[str, str]:
    """Return ``(stem, source text)`` for a csrc name, a path or source text."""
    if isinstance(name_or_source, os.PathLike):
        path = Path(name_or_source)
        return path.stem, path.read_text()
    text = str(name_or_source)
    if "\n" in text or "{" in text:
        return "inline", text
    candidates = [Path(text), CSRC / text, CSRC / f"{text}.c"]
    for candidate in candidates:
        if candidate.suffix == ".c" and candidate.is_file():
            return candidate.stem, candidate.read_text()
    raise FileNotFoundError(f"build_c: no C source {text!r} (looked in {CSRC})")


@pytest.fixture(scope="session")
def build_c(tmp_path_factory: pytest.TempPathFactory) -> BuildC:
    """``build_c(name_or_source, *extra_flags) -> Path`` of a gcc-built binary."""
    outdir = tmp_path_factory.mktemp("cbuild")
    cache: dict[str, Path] = {}

    def build(name_or_source: str | os.PathLike[str], *extra_flags: str) -> Path:
        compiler = _find_compiler()
        if compiler is None:
            pytest.skip("no C compiler (gcc) on PATH; install gcc to run the C comparisons")
        stem, source = _source_of(name_or_source)
        flags = [*DEFAULT_CFLAGS, *extra_flags]
        key = hashlib.sha256("\0".join([compiler, source, *flags]).encode()).hexdigest()[:16]
        if key in cache:
            return cache[key]
        src = outdir / f"{stem}-{key}.c"
        exe = outdir / f"{stem}-{key}"
        src.write_text(source)
        # The flags follow the source so that libraries given as -l... link.
        result = subprocess.run(
            [compiler, str(src), "-o", str(exe), *flags],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"gcc failed on {stem}.c ({' '.join(flags)}):\n{result.stderr}", pytrace=False
            )
        cache[key] = exe
        return exe

    return build


def _open_fds() -> dict[int, str]:
    """Open fds and their targets; the directory fd listdir used is closed, so skipped."""
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return fds


@pytest.fixture
def fd_leak_check() -> Iterator[None]:
    """Fail the test if it leaves file descriptors open."""
    before = _open_fds()
    yield
    after = _open_fds()
    leaked = [f"{fd} -> {target}" for fd, target in sorted(after.items()) if fd not in before]
    if leaked:
        pytest.fail(f"file descriptors leaked: {', '.join(leaked)}", pytrace=False)


@pytest.fixture
def dgram() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def c_dgram() -> Iterator[tuple[int, int]]:
    from rawsys.c import AF_UNIX, SOCK_DGRAM, c_int, close, socketpair

    sv = (c_int * 2)()
    assert socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0
    yield sv[0], sv[1]
    close(sv[0])
    close(sv[1])


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture(scope="session")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> InstalledVenv:
    """A new venv where ``pip install .`` installed this tree (not editable)."""
    return install_into_new_venv(tmp_path_factory.mktemp("installed") / "venv", ROOT)


# ------------------------------------------------------ fresh_machine

# Where distributions install bcc's Python package (python3-bpfcc, python3-bcc).
_BCC_PACKAGES = (
    "/usr/lib/python3/dist-packages/bcc",
    "/usr/lib/python3*/site-packages/bcc",
    "/usr/lib/python3*/dist-packages/bcc",
    "/usr/lib64/python3*/site-packages/bcc",
    "/usr/local/lib/python3/dist-packages/bcc",
    "/usr/local/lib/python3*/site-packages/bcc",
    "/usr/local/lib/python3*/dist-packages/bcc",
)
_HEADER_DIRS = ("/usr/src", "/lib/modules")
_TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_KHEADERS = "/sys/kernel/kheaders.tar.xz"

# Runs inside the namespace: each command in turn, results as JSON.
_DRIVER = """
import json, subprocess, sys
results = []
for cmd in json.loads(sys.argv[1]):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    results.append([p.returncode, p.stdout, p.stderr])
print(json.dumps(results))
"""

FreshMachine = Callable[..., "list[subprocess.CompletedProcess[str]]"]


def _hiding_script(hide: Sequence[str], empty: Path) -> str:
    """Shell lines that hide *hide* in the current mount namespace."""
    q = shlex.quote
    lines = []
    if "bcc" in hide:
        for pattern in _BCC_PACKAGES:
            for d in sorted(glob.glob(pattern)):
                lines.append(f"mount --bind {q(str(empty))} {q(d)}")
    if "headers" in hide:
        for d in _HEADER_DIRS:
            if os.path.isdir(d):
                lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {q(d)}")
        if os.path.exists(_KHEADERS):
            lines.append(f"mount --bind /dev/null {_KHEADERS}")
    if "tracefs" in hide:
        for d in _TRACEFS_DIRS:
            lines.append(f"if mountpoint -q {d}; then umount {d}; fi")
    return "set -e\n" + "\n".join(lines) + "\nexec \"$@\"\n"


@pytest.fixture
def fresh_machine(tmp_path_factory: pytest.TempPathFactory) -> FreshMachine:
    """``fresh_machine(*commands, hide=(...)) -> [CompletedProcess]``; see the module doc."""
    if os.geteuid() != 0:
        pytest.skip("a fresh-machine namespace needs root (unshare --mount, mount); CI is root")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare (util-linux) to make a fresh-machine mount namespace")
    repo = Path(__file__).resolve().parents[1]

    def run(
        *commands: Sequence[str], hide: Sequence[str] = ("bcc", "headers", "tracefs")
    ) -> list[subprocess.CompletedProcess[str]]:
        unknown = set(hide) - {"bcc", "headers", "tracefs"}
        assert not unknown, f"fresh_machine cannot hide {sorted(unknown)}"
        root = tmp_path_factory.mktemp("fresh-machine")
        for name in ("empty", "home", "tmp"):
            (root / name).mkdir()
        env = {k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"}
        env.update(
            HOME=str(root / "home"),
            XDG_CACHE_HOME=str(root / "home" / ".cache"),
            TMPDIR=str(root / "tmp"),
        )
        argv = [unshare, "--mount", "--propagation", "private", "--",
                "sh", "-c", _hiding_script(hide, root / "empty"), "sh",
                sys.executable, "-c", _DRIVER, json.dumps([list(c) for c in commands])]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=repo,
                              timeout=600)
        if proc.returncode != 0 and "unshare failed" in proc.stderr:
            pytest.skip(f"no mount namespaces here: {proc.stderr.strip()}")
        assert proc.returncode == 0, f"fresh_machine set-up failed:\n{proc.stderr}"
        return [subprocess.CompletedProcess(list(cmd), code, out, err)
                for cmd, (code, out, err) in zip(commands, json.loads(proc.stdout))]

    return run


# ------------------------------------------------- RAWSYS_NO_SKIP (CI)

_skipped: list[str] = []


def _note_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note_skip(report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_skip(report)


def _no_skip() -> bool:
    return os.environ.get("RAWSYS_NO_SKIP", "") not in ("", "0")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _no_skip() and _skipped:
        terminalreporter.section("RAWSYS_NO_SKIP: skipped tests fail this run", red=True)
        for line in _skipped:
            terminalreporter.line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _no_skip() and _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
