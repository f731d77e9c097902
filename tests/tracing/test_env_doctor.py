"""doctor: the raw bpf(2) loads, the capability table, the backend choice, the report."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rawsys.trace import cli_admin
from rawsys.trace.doctor import (
    Capabilities,
    Check,
    bpfcalls,
    choice,
    choose_backend,
    format_report,
    probe_capabilities,
)
from rawsys.trace.doctor import checks as doctor

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="loading BPF programs needs root (CAP_BPF and CAP_PERFMON)"
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")


@pytest.fixture(scope="module")
def caps() -> Capabilities:
    return probe_capabilities()


def fake_caps(kprobe: bool | None, fentry: bool | None, tracepoint: bool | None) -> Capabilities:
    def c(name: str, ok: bool | None) -> Check:
        return Check(name, ok, {True: "yes", False: "no", None: "needs root"}[ok], f"{name} says")

    yes = Check("x", True, "yes")
    return Capabilities(
        kernel="6.18.0-test",
        root=True,
        bcc=yes,
        headers=yes,
        bcc_compile=yes,
        tracefs=yes,
        btf=yes,
        functions=yes,
        lockdown=Check("lockdown", None, "not available"),
        kprobes=c("kprobes", kprobe),
        fentry=c("fentry", fentry),
        tracepoints=c("syscall tracepoints", tracepoint),
    )


# ------------------------------------------------------------- this machine


def test_doctor_is_quick_and_complete(caps: Capabilities) -> None:
    assert caps.elapsed < 3.0
    start = time.monotonic()
    probe_capabilities()
    assert time.monotonic() - start < 3.0
    names = [c.name for c in caps.rows()]
    assert names == [
        "bcc",
        "kernel headers",
        "bcc compile",
        "tracefs",
        "BTF",
        "probe targets",
        "kprobes",
        "fentry",
        "syscall tracepoints",
        "lockdown",
    ]
    for c in caps.rows():
        assert c.value != "error", c


def test_btf_and_probe_targets(caps: Capabilities) -> None:
    assert caps.btf.ok is os.path.exists("/sys/kernel/btf/vmlinux")
    if caps.btf.ok:
        assert caps.functions.value in ("receive_fd", "__receive_fd")
        with open("/proc/kallsyms") as f:
            symbols = {line.split()[2] for line in f}
        for name in ("__scm_send", "scm_detach_fds", caps.functions.value):
            has = f"{name}: symbol" in caps.functions.detail
            assert has is (name in symbols), caps.functions.detail


def test_kprobes_row_agrees_with_the_kernel(caps: Capabilities) -> None:
    pmu = os.path.exists("/sys/bus/event_source/devices/kprobe")
    config = doctor.kernel_config()
    if config:
        kprobes_set = config.get("CONFIG_KPROBES") == "y"
        assert ("CONFIG_KPROBES is not set" in caps.kprobes.detail) is not kprobes_set
    if not pmu:
        assert caps.kprobes.ok is False
    if IS_ROOT and not pmu:
        # the verifier accepts a kprobe program even where nothing can attach it
        assert "a kprobe program loads (verifier) but cannot attach" in caps.kprobes.detail


@needs_root
def test_trivial_programs_load_through_the_verifier() -> None:
    for prog_type in (bpfcalls.BPF_PROG_TYPE_KPROBE, bpfcalls.BPF_PROG_TYPE_TRACEPOINT):
        fd, err = bpfcalls.load_trivial_program(prog_type)
        assert fd >= 0, os.strerror(err)
        os.close(fd)
    fd, err = bpfcalls.load_trivial_program(12345)  # no such program type
    assert fd == -1 and err != 0


@needs_root
def test_tracepoints_attach_here(caps: Capabilities) -> None:
    if not os.path.exists("/sys/kernel/tracing/events/syscalls"):
        from rawsys.trace.system.provision import mount_tracefs

        mount_tracefs()
        caps = probe_capabilities()
    assert caps.tracepoints.ok is True, caps.tracepoints
    assert caps.tracefs.ok is True
    assert caps.bcc.ok is True, caps.bcc
    assert caps.bcc_compile.ok is True, caps.bcc_compile


@needs_root
def test_fentry_row_reports_the_real_outcome(caps: Capabilities) -> None:
    from rawsys.trace.kernel.btf import kernel_btf

    btf_id = kernel_btf().function_id("scm_detach_fds")
    fd, err = bpfcalls.load_trivial_program(
        bpfcalls.BPF_PROG_TYPE_TRACING,
        expected_attach_type=bpfcalls.BPF_TRACE_FENTRY,
        attach_btf_id=btf_id,
    )
    if fd >= 0:
        os.close(fd)
        assert "loading an fentry program" not in caps.fentry.detail
    else:  # e.g. EPERM on the reference 6.18 machine
        assert caps.fentry.ok is False
        assert errno.errorcode[err] in caps.fentry.detail


def test_lockdown_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "lockdown"
    f.write_text("none [integrity] confidentiality\n")
    monkeypatch.setattr(doctor, "LOCKDOWN", str(f))
    row = doctor._check_lockdown({})
    assert row.value == "integrity" and row.ok is True
    f.write_text("none integrity [confidentiality]\n")
    assert doctor._check_lockdown({}).ok is False
    monkeypatch.setattr(doctor, "LOCKDOWN", str(tmp_path / "missing"))
    row = doctor._check_lockdown({"CONFIG_LOCK_DOWN_KERNEL_FORCE_INTEGRITY": "y"})
    assert row.ok is None and row.value == "not available" and "integrity" in row.detail


def test_a_failing_check_is_a_row_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> Check:
        raise RuntimeError("tracefs exploded")

    monkeypatch.setattr(doctor, "_check_tracefs", boom)
    caps = probe_capabilities()
    assert caps.tracefs.value == "error" and "tracefs exploded" in caps.tracefs.detail
    assert "tracefs" in format_report(caps)


def test_not_root_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 1000)
    caps = probe_capabilities()
    assert not caps.root
    text = format_report(caps)
    assert "not root" in text
    assert caps.tracepoints.ok is None or caps.tracepoints.ok is False
    if caps.tracepoints.ok is None:
        assert caps.tracepoints.value == "needs root"
    assert "needs root" in caps.fentry.value or caps.fentry.ok is False


@needs_root
def test_really_unprivileged_process() -> None:
    """As nobody, with the system Python (the venv's lives under /root): no traceback.

    The packages are copied into a world-readable directory of their own: a
    checkout (CI clones into a private temporary directory) or pytest's
    basetemp (mode 0700) may not be traversable by nobody.
    """
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("no /usr/bin/python3 to run as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="rawsys-nobody-"))
    try:
        os.chmod(root, 0o755)
        for package in ("rawsys",):  # rawsys/trace, a link to tracing/, is copied whole
            shutil.copytree(REPO / package, root / "src" / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        cache = root / "cache"
        cache.mkdir()
        os.chown(cache, 65534, 65534)
        for path in root.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        result = subprocess.run(
            [
                python,
                "-c",
                "from rawsys.trace.cli_admin import doctor_main; raise SystemExit(doctor_main([]))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            user=65534,
            group=65534,
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": "/nonexistent",
                "XDG_CACHE_HOME": str(cache),
                "PYTHONPATH": str(root / "src"),
            },
            cwd="/",
        )
    finally:
        shutil.rmtree(root)
    assert "Traceback" not in result.stderr, result.stderr
    out = result.stdout
    assert "not root" in out and "needs root" in out
    assert "backend:" in out
    assert result.returncode == 1  # nothing can attach without privileges


# ---------------------------------------------------------------- choice


@pytest.mark.parametrize(
    "flags, expected",
    [
        ((True, True, True), "kprobe"),
        ((False, True, True), "fentry"),
        ((False, False, True), "tracepoint"),
        ((True, False, False), "kprobe"),
        ((False, None, False), "fentry"),
        ((False, False, False), "tracepoint"),
    ],
)
def test_choose_backend_preference(flags: tuple[bool | None, ...], expected: str) -> None:
    name, why = choose_backend(fake_caps(*flags))
    assert name == expected
    assert why
    if flags == (False, False, True):
        assert "not kprobe: kprobes says" in why and "not fentry: fentry says" in why
    if flags == (False, False, False):
        assert why.startswith("no backend attaches")


def test_forced_backend() -> None:
    caps = fake_caps(False, False, True)
    name, why = choose_backend(caps, "kprobe")
    assert name == "kprobe" and "forced" in why and "kprobes says" in why
    assert choose_backend(caps, "tracepoint") == ("tracepoint", "forced with --backend")
    with pytest.raises(ValueError, match="bogus"):
        choose_backend(caps, "bogus")


def test_format_report(caps: Capabilities) -> None:
    text = format_report(caps)
    for c in caps.rows():
        assert c.name in text
    backend, _ = choose_backend(caps)
    assert f"backend: {backend}" in text
    for line in text.splitlines():
        assert len(line) <= 79 or " " not in line.strip(), line


# ------------------------------------------------------------------- CLI


def test_doctor_main_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_admin.doctor_main(["--json"])
    obj = json.loads(capsys.readouterr().out)
    assert obj["backend"] in choice.BACKEND_PREFERENCE
    assert {c["name"] for c in obj["checks"]} >= {"bcc", "kprobes", "fentry", "lockdown"}
    usable = {c["name"]: c["ok"] for c in obj["checks"]}
    row = {"kprobe": "kprobes", "fentry": "fentry", "tracepoint": "syscall tracepoints"}
    assert code == (0 if usable[row[obj["backend"]]] else 1)


def test_doctor_main_text_and_bad_args(capsys: pytest.CaptureFixture[str]) -> None:
    cli_admin.doctor_main(["--backend", "tracepoint"])
    assert "backend: tracepoint" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli_admin.doctor_main(["--backend", "nope"])
    assert info.value.code == 2
