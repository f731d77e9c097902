"""rawsys.trace.system.provision and tracing.cli_admin.setup_main: idempotent machine set-up."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
from pathlib import Path

import pytest

from rawsys.trace import cli_admin
from rawsys.trace.system import provision as setup
from rawsys.trace.system.provision import (
    PackagePlan,
    SetupError,
    StepResult,
    package_plan,
    run_setup,
)

pytestmark = pytest.mark.usefixtures("fd_leak_check")

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounting and set-up need root")


def umount(path: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]  # <sys/mount.h>
    libc.umount2.restype = ctypes.c_int
    if libc.umount2(os.fsencode(path), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


# ------------------------------------------------------------------ tracefs


@needs_root
def test_mount_tracefs_mounts_once(tmp_path: Path) -> None:
    target = tmp_path / "tracing"
    target.mkdir()
    assert not setup.tracefs_mounted(str(target))
    try:
        assert setup.mount_tracefs(str(target)) is True
    except PermissionError as e:  # a sandbox that forbids mount(2) even to root
        pytest.skip(f"mount(2) is not permitted here: {e}")
    try:
        assert setup.tracefs_mounted(str(target))
        assert (target / "events").is_dir()
        assert setup.mount_tracefs(str(target)) is False  # idempotent
    finally:
        umount(target)
    assert not setup.tracefs_mounted(str(target))


def test_mount_tracefs_error_carries_errno(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        setup.mount_tracefs(str(tmp_path / "does-not-exist"))
    assert info.value.errno in (errno.ENOENT, errno.EPERM)
    assert "tracefs" in str(info.value)


def test_system_tracefs_state_is_reported() -> None:
    mounted = setup.tracefs_mounted()
    assert mounted == os.path.isdir("/sys/kernel/tracing/events") or not mounted


# ----------------------------------------------------------------- packages


def os_release(tmp_path: Path, text: str) -> str:
    path = tmp_path / "os-release"
    path.write_text(text)
    return str(path)


def test_package_plan_per_distribution(tmp_path: Path) -> None:
    debian = package_plan(os_release(tmp_path, 'ID=debian\nVERSION_ID="12"\n'))
    assert debian.manager == "apt" and "python3-bpfcc" in debian.packages
    assert any(p.startswith("linux-headers-") for p in debian.packages)
    ubuntu = package_plan(os_release(tmp_path, "ID=ubuntu\nID_LIKE=debian\n"))
    assert "linux-headers-generic" in ubuntu.packages
    mint = package_plan(os_release(tmp_path, 'ID=linuxmint\nID_LIKE="ubuntu debian"\n'))
    assert mint.manager == "apt"
    fedora = package_plan(os_release(tmp_path, "ID=fedora\n"))
    assert fedora.manager == "dnf" and fedora.packages[:2] == ("python3-bcc", "kernel-devel")
    assert fedora.install[:3] == ("dnf", "install", "-y")
    with pytest.raises(SetupError, match="arch"):
        package_plan(os_release(tmp_path, "ID=arch\n"))
    with pytest.raises(SetupError, match="unknown"):
        package_plan(str(tmp_path / "missing"))


def test_this_machine_has_a_plan() -> None:
    dist_id, like = setup.distribution()
    if not ({dist_id, *like} & {"debian", "ubuntu", "fedora", "rhel", "centos"}):
        pytest.skip(f"no package plan for distribution {dist_id!r}")
    assert package_plan().packages


class FakeRunner:
    def __init__(self, installed: set[str], fail_install: bool = False) -> None:
        self.installed = installed
        self.fail_install = fail_install
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        if cmd[:2] in (["dpkg", "-s"], ["rpm", "-q"]):
            return subprocess.CompletedProcess(cmd, 0 if cmd[2] in self.installed else 1, "", "")
        if "install" in cmd:
            if self.fail_install:
                return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package\n")
            self.installed.update(
                c for c in cmd if not c.startswith("-") and c not in ("apt-get", "install", "dnf")
            )
        return subprocess.CompletedProcess(cmd, 0, "", "")


PLAN = PackagePlan(
    "apt",
    ("python3-bpfcc", "linux-headers-amd64", "bpftool"),
    ("dpkg", "-s"),
    ("apt-get", "install", "-y", "-q"),
    ("apt-get", "update", "-q"),
)


def test_install_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup.shutil, "which", lambda name: f"/usr/bin/{name}")
    runner = FakeRunner({"python3-bpfcc"})
    [result] = setup.install_packages(PLAN, runner)
    assert result.status == "done" and "linux-headers-amd64 bpftool" in result.step
    assert ["apt-get", "update", "-q"] in runner.calls
    assert ["apt-get", "install", "-y", "-q", "linux-headers-amd64", "bpftool"] in runner.calls
    again = FakeRunner(runner.installed)
    [result] = setup.install_packages(PLAN, again)
    assert result.status == "already"
    assert not any("install" in c for c in again.calls)


def test_install_failure_is_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup.shutil, "which", lambda name: f"/usr/bin/{name}")
    [result] = setup.install_packages(PLAN, FakeRunner(set(), fail_install=True))
    assert result.status == "failed" and "Unable to locate package" in result.detail
    assert str(result).startswith("install python3-bpfcc")


# -------------------------------------------------------------------- setup


def test_not_root_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(setup.os, "geteuid", lambda: 1000)
    with pytest.raises(SetupError, match="root"):
        run_setup()
    assert cli_admin.setup_main([]) == 1
    assert "must run as root" in capsys.readouterr().err


@needs_root
def test_run_setup_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {
        "python3-bpfcc",
        "linux-headers-amd64",
        "bpftool",
        "python3-bcc",
        "kernel-devel",
        "linux-headers-generic",
        "linux-headers-arm64",
    }
    first = setup.setup_steps(run=FakeRunner(installed))
    second = setup.setup_steps(run=FakeRunner(installed))
    assert [r.step for r in first] == [r.step for r in second]
    for r in second:
        assert r.status in ("already", "skipped"), r
    lines = run_setup(install=False)
    assert all(isinstance(line, str) for line in lines)
    assert any(line.startswith("mount tracefs") for line in lines)
    assert any("skipped (--no-install)" in line for line in lines)
    assert not any(": failed" in line for line in lines), lines


@needs_root
def test_first_setup_is_done_and_the_second_already(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh machine (empty cache): the first set-up makes the header tree and
    the kernel facts (``done``), the second finds them (``already``) -- in one
    process, as ``./dev test`` runs them."""
    from rawsys.trace.kernel import facts
    from rawsys.trace.system import headers

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(headers, "_configured", None)  # as in a new process
    monkeypatch.setattr(facts, "_facts", None)
    joins = headers.kernel_headers().match == "nearest"
    first = {r.step: r for r in setup.setup_steps(install=False)}
    second = {r.step: r for r in setup.setup_steps(install=False)}
    assert first["kernel facts from BTF"].status == "done"
    if joins:
        assert first["point bcc at kernel headers"].status == "done"
    assert list(first) == list(second)
    for r in second.values():
        assert r.status in ("already", "skipped"), r


@needs_root
def test_setup_main_no_install(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_admin.setup_main(["--no-install"]) == 0
    out = capsys.readouterr().out
    assert "kernel facts from BTF" in out and "point bcc at kernel headers" in out


def test_step_result_text() -> None:
    assert str(StepResult("mount tracefs", "done")) == "mount tracefs: done"
    assert str(StepResult("x", "failed", "why")) == "x: failed (why)"


def test_missing_package_manager_is_a_failed_row() -> None:
    plan = PackagePlan(
        "apt", ("python3-bpfcc",), ("no-such-dpkg-xyz", "-s"), ("no-such-apt-get-xyz", "install")
    )
    [result] = setup.install_packages(plan)
    assert result.status == "failed" and "no-such-apt-get-xyz not found" in result.detail
    proc = setup._run(["no-such-program-xyz"])
    assert proc.returncode == 127 and "no-such-program-xyz" in proc.stderr
