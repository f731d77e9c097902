"""The kernel facts the probes read: the catalogue, its values on this kernel, the cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_btf import VMLINUX, needs_vmlinux, sample_btf

from rawsys.trace.kernel import facts as factsmod
from rawsys.trace.kernel.btf import BTF, BTFLookupError, kernel_btf
from rawsys.trace.kernel.facts import FUNCTIONS, READS, KernelFacts, kernel_facts
from rawsys.trace.system.cache import cache_path

pytestmark = pytest.mark.usefixtures("fd_leak_check")


@pytest.fixture(scope="module")
def bpftool_dump() -> dict[str, tuple[int, dict[str, tuple[int, int]]]]:
    from test_btf import bpftool_structs

    return bpftool_structs()


# -------------------------------------------------------- the running kernel


@needs_vmlinux
def test_scm_fp_list_fp_matches_bpftool_and_kernel_version(
    bpftool_dump: dict[str, tuple[int, dict[str, tuple[int, int]]]],
) -> None:
    facts = kernel_facts(use_cache=False)
    _, members = bpftool_dump["scm_fp_list"]
    assert facts.offset("scm_fp_list.fp") == members["fp"][0] // 8
    assert facts.offset("scm_fp_list.count") == members["count"][0] // 8
    assert facts.offset("scm_cookie.fp") == bpftool_dump["scm_cookie"][1]["fp"][0] // 8
    # fp[] is at 40 where the struct has the members of the rewritten af_unix
    # garbage collector (6.10, backported to some older kernels: Debian's
    # 6.1.0-57 has them), at 16 before; the kernel version alone does not tell.
    rewritten = "edges" in bpftool_dump["scm_fp_list"][1]
    assert facts.offset("scm_fp_list.fp") == (40 if rewritten else 16)
    assert facts.size("scm_fp_list.fp") == 253 * 8  # SCM_MAX_FD pointers



@needs_vmlinux
def test_kernel_facts_values() -> None:
    b = kernel_btf()
    facts = kernel_facts(use_cache=False)
    for fact, m in facts.members.items():
        struct_name = "struct " + fact.split(".", 1)[0]
        assert b.offsetof(struct_name, m.member) == m.offset, fact
        assert b.member_size(struct_name, m.member) == m.size, fact
    assert facts.size("file.f_count") == 8  # atomic_long_t or file_ref_t: 8 bytes either way
    receive = facts.function("receive_fd")
    assert receive in ("receive_fd", "__receive_fd")
    assert facts.functions[receive].btf
    assert facts.function("scm_detach_fds") == "scm_detach_fds"
    assert facts.functions["scm_detach_fds"].btf
    for name, fn in facts.functions.items():
        assert fn.btf_id == (b.function_id(name) if fn.btf else 0), name


def test_facts_hold_only_the_catalogue() -> None:
    """Only what READS and FUNCTIONS ask: members of this machine, every candidate name."""
    facts = kernel_facts()
    machine = os.uname().machine
    assert set(facts.members) == {
        r.fact for r in READS if not r.machines or machine in r.machines}
    assert set(facts.functions) == {n for role in FUNCTIONS.values() for n in role.names}
    with pytest.raises(BTFLookupError, match="nope.nothing"):
        facts.offset("nope.nothing")


@needs_vmlinux
def test_function_presence_matches_kallsyms() -> None:
    facts = kernel_facts(use_cache=False)
    with open("/proc/kallsyms") as f:
        symbols = {line.split()[2] for line in f if len(line.split()) == 3}
    for name, fn in facts.functions.items():
        assert fn.kallsyms == (name in symbols), name
        try:
            in_btf = kernel_btf().function_id(name) > 0
        except BTFLookupError:
            in_btf = False
        assert fn.btf == in_btf, name



# ---------------------------------------------------------------- the cache


@needs_vmlinux
def test_cache_round_trip(tmp_path: Path) -> None:
    cache = tmp_path / "facts.json"
    first = kernel_facts(cache_path=str(cache))
    assert not first.from_cache and cache.exists()
    second = kernel_facts(cache_path=str(cache))
    assert second.from_cache
    assert second == first
    assert json.loads(cache.read_text())["key"] == factsmod.kernel_build_key()
    start = time.monotonic()
    kernel_facts(cache_path=str(cache))
    assert time.monotonic() - start < 0.5  # the start-up path: no BTF walk


@needs_vmlinux
def test_cache_invalidated_by_kernel_build_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "facts.json"
    kernel_facts(cache_path=str(cache))
    real_key = factsmod.kernel_build_key
    monkeypatch.setattr(
        factsmod, "kernel_build_key", lambda path=VMLINUX: real_key(path) + "-other"
    )
    facts = kernel_facts(cache_path=str(cache))
    assert not facts.from_cache and facts.key.endswith("-other")
    assert kernel_facts(cache_path=str(cache)).from_cache


@needs_vmlinux
def test_kernel_build_key_changes_with_btf(tmp_path: Path) -> None:
    copy = tmp_path / "vmlinux"
    data = bytearray(Path(VMLINUX).read_bytes())
    copy.write_bytes(data)
    key = factsmod.kernel_build_key(str(copy))
    assert key == factsmod.kernel_build_key(VMLINUX)
    data[-2] ^= 1
    copy.write_bytes(data)
    assert factsmod.kernel_build_key(str(copy)) != key


@needs_vmlinux
@pytest.mark.parametrize("content", ["", "{not json", '{"format": 1}', '{"format": 99}', "[]"])
def test_corrupt_cache_is_recomputed(content: str, tmp_path: Path) -> None:
    cache = tmp_path / "facts.json"
    cache.write_text(content)
    facts = kernel_facts(cache_path=str(cache))
    assert not facts.from_cache
    assert KernelFacts.from_json(json.loads(cache.read_text())) == facts


@needs_vmlinux
def test_unwritable_cache_falls_back_silently(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    facts = kernel_facts(cache_path=str(blocker / "sub" / "facts.json"))
    assert facts.offset("scm_fp_list.fp") > 0


@needs_vmlinux
def test_default_cache_location_honours_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(factsmod, "_facts", None)
    kernel_facts()
    assert (tmp_path / "rawsys" / "kernel-facts.json").is_file()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path("x.json") == str(tmp_path / "home" / ".cache" / "rawsys" / "x.json")


def test_facts_from_btf_without_kernel_structs_name_what_is_missing() -> None:
    with pytest.raises(BTFLookupError, match="task_struct"):
        factsmod.compute_facts(BTF(sample_btf()))
