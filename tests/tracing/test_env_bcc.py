"""bcc from the distribution, never PyPI's 'bcc'; kernel headers for bcc."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rawsys.trace.system import bccloader, headers
from rawsys.trace.system.bccloader import BccUnavailable, load_bcc
from rawsys.trace.system.headers import HeadersInfo, kernel_headers

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="loading BPF programs needs root (CAP_BPF and CAP_PERFMON)"
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")


def distribution_bcc_or_skip() -> str:
    try:
        return bccloader.find_distribution_bcc()
    except BccUnavailable as e:
        if IS_ROOT and os.environ.get("CI"):
            raise  # CI installs python3-bpfcc through ./dev: its absence is a failure there
        pytest.skip(f"the distribution's bcc is not installed: {e}")


def run_python(
    code: str, *, pythonpath: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(pythonpath or []), str(REPO)])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=str(REPO),
    )


def make_fake_pypi_bcc(root: Path) -> Path:
    """A package named bcc shaped like PyPI's lattice library: no BPF, no libbcc.py."""
    pkg = root / "bcc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        '"""Fake of the PyPI project "bcc" (a lattice library)."""\n'
        "FAKE_PYPI_BCC = True\n"
        "class Lattice:\n    pass\n"
    )
    (pkg / "lattice.py").write_text("X = 1\n")
    return pkg


# ------------------------------------------------------------------ loading


def test_load_bcc_gives_the_distribution_module() -> None:
    pkg = distribution_bcc_or_skip()
    bcc = load_bcc()
    assert hasattr(bcc, "BPF")
    assert os.path.dirname(os.path.realpath(bcc.__file__)) == os.path.realpath(pkg)
    assert sys.modules["bcc"] is bcc
    assert not bccloader._inside(bcc.__file__, bccloader._venv_dirs())


def test_running_in_the_project_venv_without_dist_packages_on_path() -> None:
    distribution_bcc_or_skip()
    result = run_python(
        """
        import sys
        assert not any(p.rstrip('/').endswith(('dist-packages', 'site-packages')) and
                       p.startswith('/usr/lib') for p in sys.path), sys.path
        from rawsys.trace.system.bccloader import load_bcc
        bcc = load_bcc()
        assert not any(p.startswith('/usr/lib/python3') and 'packages' in p for p in sys.path)
        import bcc as again
        print(bcc.__file__, again is bcc, sys.prefix != sys.base_prefix)
        """
    )
    assert result.returncode == 0, result.stderr
    path, same, _in_venv = result.stdout.split()
    assert same == "True"
    assert path.startswith("/usr/")


@pytest.mark.parametrize("import_first", [False, True], ids=["shadowed", "already-imported"])
def test_fake_pypi_bcc_is_refused(tmp_path: Path, import_first: bool) -> None:
    pkg = distribution_bcc_or_skip()
    make_fake_pypi_bcc(tmp_path)
    result = run_python(
        f"""
        import bcc
        assert getattr(bcc, 'FAKE_PYPI_BCC', False), bcc.__file__   # the fake shadows it
        if not {import_first}:
            import sys
            for name in [k for k in sys.modules if k == 'bcc' or k.startswith('bcc.')]:
                del sys.modules[name]
        import rawsys.trace.system.bccloader as L
        real = L.load_bcc()
        import bcc as again
        print(real.__file__)
        print(hasattr(real, 'BPF'), again is real, hasattr(real, 'FAKE_PYPI_BCC'))
        """,
        pythonpath=[str(tmp_path)],
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert os.path.dirname(first) == pkg
    assert second == "True True False"


def test_fake_bcc_alone_gives_actionable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fake_pypi_bcc(tmp_path)
    result = run_python(
        """
        import rawsys.trace.system.bccloader as L
        L.distribution_bcc_dirs = lambda: []          # as on a machine without python3-bpfcc
        try:
            L.load_bcc(configure_headers=False)
        except L.BccUnavailable as e:
            print(e)
        else:
            raise SystemExit('no error')
        """,
        pythonpath=[str(tmp_path)],
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "python3-bpfcc" in message and "rawsys-trace setup" in message
    assert "refused" in message and str(tmp_path / "bcc") in message
    assert isinstance(BccUnavailable("x"), RuntimeError)


def test_bcc_inside_a_venv_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    pkg = venv_site / "bcc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("class BPF: pass\n")
    (pkg / "libbcc.py").write_text("")
    monkeypatch.setattr(bccloader, "_venv_dirs", lambda: [str(tmp_path / "venv")])
    assert "virtualenv" in (bccloader._refusal(str(pkg)) or "")
    monkeypatch.setattr(bccloader, "_venv_dirs", lambda: [])
    assert bccloader._refusal(str(pkg)) is None
    assert "PyPI" in (bccloader._refusal(str(make_fake_pypi_bcc(tmp_path))) or "")


def test_distribution_dirs_hold_real_bcc() -> None:
    distribution_bcc_or_skip()
    for d in bccloader.distribution_bcc_dirs():
        assert (Path(d) / "bcc" / "libbcc.py").is_file()
        assert not d.startswith(sys.prefix) or sys.prefix == sys.base_prefix


# ------------------------------------------------------------------ headers


def debian_like(root: Path, version: str, flavour: str = "amd64") -> tuple[Path, Path]:
    """/usr/src/linux-headers-V-FLAVOUR (config, generated) + -common (the rest)."""
    arch = root / f"linux-headers-{version}-{flavour}"
    common = root / f"linux-headers-{version}-common"
    for d in ("include/generated", "include/config", "arch/x86/include/generated/asm"):
        (arch / d).mkdir(parents=True)
    (arch / "include/generated/autoconf.h").write_text("#define CONFIG_X86 1\n")
    (arch / ".config").write_text("CONFIG_X86=y\n")
    for d in ("include/linux", "include/uapi", "arch/x86/include/asm", "arch/arm64/include"):
        (common / d).mkdir(parents=True)
    (common / "include/linux/kconfig.h").write_text("/* kconfig */\n")
    (common / "arch/x86/include/asm/ptrace.h").write_text("/* ptrace */\n")
    return arch, common


def test_nearest_debian_headers_are_joined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, mods = tmp_path / "src", tmp_path / "modules"
    mods.mkdir()
    arch61, common61 = debian_like(src, "6.1.0-56")
    debian_like(src, "5.10.0-30")
    debian_like(src, "6.12.9-1")
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    info = kernel_headers(release="6.18.44-test", modules_root=str(mods), src_root=str(src))
    assert info.match == "nearest" and info.version == "6.12.9-1-amd64"
    info61 = kernel_headers(release="6.2.0", modules_root=str(mods), src_root=str(src))
    assert info61.version == "6.1.0-56-amd64"
    assert info61.parts == (str(arch61), str(common61))
    assert "6.2.0" in info61.reason and info61.path is None

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hs = headers._HeaderSet(info61.version or "", info61.parts)
    tree = Path(headers._make_joined_tree(hs)[0])
    assert (tree / "include/linux/kconfig.h").is_file()
    assert (tree / "include/generated/autoconf.h").is_file()
    assert (tree / "arch/x86/include/asm/ptrace.h").is_file()
    assert (tree / "arch/x86/include/generated/asm").is_dir()
    assert (tree / ".config").is_file() and (tree / "arch/arm64/include").is_dir()
    assert str(tree).startswith(str(tmp_path / "cache" / "rawsys"))
    again = headers._make_joined_tree(hs)[0]
    assert again == str(tree)  # reused


def test_exact_headers_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, mods = tmp_path / "src", tmp_path / "modules"
    arch, common = debian_like(src, "6.18.44")
    (mods / "6.18.44-amd64").mkdir(parents=True)
    (mods / "6.18.44-amd64" / "build").symlink_to(arch)
    (mods / "6.18.44-amd64" / "source").symlink_to(common)
    debian_like(src, "6.17.0")
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    info = kernel_headers(release="6.18.44-amd64", modules_root=str(mods), src_root=str(src))
    assert info.match == "exact" and info.parts == (str(arch), str(common))


def test_fedora_and_ubuntu_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, mods = tmp_path / "src", tmp_path / "modules"
    mods.mkdir()
    fedora = src / "kernels" / "6.11.4-301.fc41.x86_64"
    (fedora / "include/linux").mkdir(parents=True)
    (fedora / "include/generated").mkdir(parents=True)
    (fedora / "include/linux/kconfig.h").write_text("")
    (fedora / "include/generated/autoconf.h").write_text("")
    ubuntu = src / "linux-headers-6.8.0-45-generic"
    (ubuntu / "include/generated").mkdir(parents=True)
    (ubuntu / "include/generated/autoconf.h").write_text("")
    (src / "linux-headers-6.8.0-45/include/linux").mkdir(parents=True)
    (src / "linux-headers-6.8.0-45/include/linux/kconfig.h").write_text("")
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    info = kernel_headers(release="6.11.0", modules_root=str(mods), src_root=str(src))
    assert info.version == "6.11.4-301.fc41.x86_64" and info.parts == (str(fedora),)
    info = kernel_headers(release="6.8.0-50-generic", modules_root=str(mods), src_root=str(src))
    assert info.version == "6.8.0-45-generic"
    assert info.parts == (str(ubuntu), str(src / "linux-headers-6.8.0-45"))


def test_no_headers_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    info = kernel_headers(release="6.18.0", modules_root=str(tmp_path), src_root=str(tmp_path))
    assert info.match == "none" and not info.usable
    assert "linux-headers-amd64" in info.reason and "rawsys-trace setup" in info.reason


def test_user_bcc_kernel_source_is_respected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arch, common = debian_like(tmp_path, "6.1.0-1")
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(common))
    info = kernel_headers()
    assert info.match == "none" and "autoconf.h" in info.reason  # half a split set
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    whole = headers._make_joined_tree(headers._HeaderSet("6.1.0-1", (str(arch), str(common))))[0]
    monkeypatch.setenv("BCC_KERNEL_SOURCE", whole)
    assert kernel_headers() == HeadersInfo(
        "environment", None, whole, (whole,), "BCC_KERNEL_SOURCE is set"
    )


def test_this_machines_headers_are_usable() -> None:
    info = kernel_headers()
    if not info.usable and not (IS_ROOT and os.environ.get("CI")):
        pytest.skip(f"no kernel headers installed here: {info.reason}")
    assert info.usable, info.reason


# ------------------------------------------------------------- end to end


def ensure_tracefs() -> None:
    if os.path.exists("/sys/kernel/tracing/events/syscalls"):
        return
    from rawsys.trace.system.provision import mount_tracefs

    mount_tracefs()


@needs_root
def test_tracepoint_program_compiles_attaches_and_counts() -> None:
    """A trivial sys_enter_sendmsg program, from the project's venv, sees our sendmsg."""
    distribution_bcc_or_skip()
    ensure_tracefs()
    bcc = load_bcc()
    text = b"""
    BPF_ARRAY(hits, u64, 1);
    TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) {
        if ((bpf_get_current_pid_tgid() >> 32) != TARGET_PID)
            return 0;
        int zero = 0;
        u64 *n = hits.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return 0;
    }
    """
    b = bcc.BPF(text=text, cflags=[f"-DTARGET_PID={os.getpid()}"])
    try:
        assert b.num_open_tracepoints() == 1
        a, c = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        r, w = os.pipe()
        try:
            for _ in range(3):
                socket.send_fds(a, [b"x"], [r])
                msg, fds, _flags, _addr = socket.recv_fds(c, 1, 1)
                for fd in fds:
                    os.close(fd)
        finally:
            for fd in (r, w):
                os.close(fd)
            a.close()
            c.close()
        hits = b[b"hits"][ctypes.c_int(0)].value
        assert hits == 3
    finally:
        b.cleanup()


def test_missing_headers_make_load_bcc_fail_clearly(tmp_path: Path) -> None:
    distribution_bcc_or_skip()
    result = run_python(
        f"""
        import os
        os.environ["BCC_KERNEL_SOURCE"] = {str(tmp_path)!r}   # no headers in there
        import rawsys.trace.system.bccloader as L
        try:
            L.load_bcc()
        except L.BccUnavailable as e:
            print(e)
        else:
            raise SystemExit("no error")
        print(L.load_bcc(configure_headers=False).__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert "kernel headers" in first and "kconfig.h" in first
    assert second == "bcc"


def test_startup_path_reads_no_btf_once_facts_are_cached() -> None:
    """Cached kernel facts plus the distribution's bcc, from a fresh interpreter.

    The start-up path must not parse the kernel's BTF again once its facts are
    cached for this build: the reader is made to fail, and the facts must
    still come (from the cache).  How long it takes is the benchmark's
    business (benchmarks/trace_overhead.py), not a test's.
    """
    distribution_bcc_or_skip()
    run_python("from rawsys.trace.kernel.facts import kernel_facts; kernel_facts()")  # warm up
    result = run_python(
        """
        import rawsys.trace.kernel.btf as btf
        def no_btf(*args, **kwargs):
            raise AssertionError("BTF parsed on the cached path")
        btf.BTF = no_btf
        btf.kernel_btf = no_btf
        from rawsys.trace.kernel.facts import kernel_facts
        from rawsys.trace.system.bccloader import load_bcc
        facts = kernel_facts()
        load_bcc()
        print(facts.from_cache)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
