"""What a packager and a library user get: the wheel, a clean install, the sdist.

* The wheel holds one top-level name, ``rawsys`` (``rawsys.c`` and
  ``rawsys.trace`` inside it), the BPF C sources the tracer compiles at run
  time, the manual page (data for ``share/man/man8``) and the licence.
* ``pip install .`` into a new venv installs only that name, a working
  ``rawsys-trace`` (``--help``; ``doctor`` as root) and a manual page that
  ``man`` finds from that venv.
* The sdist, unpacked and installed into a new venv with
  ``pip install '.[test]'``, passes its own test suite.

pip reaches PyPI here for build backends and test tools, as CI allows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from venv_support import InstalledVenv, install_into_new_venv

ROOT = Path(__file__).resolve().parent.parent
TRACING = ROOT / "tracing"
IS_ROOT = os.geteuid() == 0
REPOSITORY = "https://github.com/rawsys/rawsys"


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def bpf_sources() -> set[str]:
    """The tracer's C sources and headers, relative to tracing/ (probe_*.c, *.bpf.[ch])."""
    return {
        p.relative_to(TRACING).as_posix()
        for p in TRACING.rglob("*")
        if p.suffix in (".c", ".h") and "__pycache__" not in p.parts
    }


def package_modules() -> set[str]:
    """Every module of the three packages, as a path inside the wheel."""
    names = set()
    for top, dirs, files in os.walk(ROOT / "rawsys"):  # does not enter the link rawsys/trace
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        names |= {(Path(top) / f).relative_to(ROOT).as_posix() for f in files if f.endswith(".py")}
    names |= {
        f"rawsys/trace/{p.relative_to(TRACING).as_posix()}"
        for p in TRACING.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    return names


# --- the wheel ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        timeout=600)
    (path,) = out.glob("rawsys-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_has_one_top_level_name(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    data = dist_info.replace(".dist-info", ".data")
    assert {n.split("/")[0] for n in names} == {"rawsys", dist_info, data}
    assert wheel.read(f"{dist_info}/top_level.txt").decode().split() == ["rawsys"]
    assert package_modules() <= set(names)
    assert {n for n in names if n.startswith(f"{data}/")} == {
        f"{data}/data/share/man/man8/rawsys-trace.8"
    }


def test_wheel_carries_the_bpf_sources(wheel: zipfile.ZipFile) -> None:
    sources = bpf_sources()
    assert sources, "no BPF C sources found in tracing/"
    for name in sources:
        assert wheel.read(f"rawsys/trace/{name}") == (TRACING / name).read_bytes(), name


def test_wheel_carries_the_man_page_and_licence(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    (page,) = [n for n in names if n.endswith("/data/share/man/man8/rawsys-trace.8")]
    assert wheel.read(page) == (TRACING / "rawsys-trace.8").read_bytes()
    (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(licence) == (ROOT / "LICENSE").read_bytes()


def test_wheel_metadata(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(wheel.read(name).decode())
    assert meta["License-Expression"] == "MIT"
    assert meta["License-File"] == "LICENSE"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Source"] == REPOSITORY
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert urls["Documentation"].startswith(f"{REPOSITORY}/blob/main/")
    assert not meta.get_all("Requires-Dist", []) or all(
        "extra ==" in r for r in meta.get_all("Requires-Dist")
    ), "rawsys has no runtime dependencies (and never PyPI's unrelated 'bcc')"


def test_readme_links_point_at_files_of_this_tree() -> None:
    """Absolute links (they must work on a package index) name files that exist here."""
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((https?://[^)\s]+)\)", text)
    assert links
    relative = re.findall(r"\]\((?!https?://|#)([^)\s]+)\)", text)
    assert relative == [], f"relative links break off GitHub: {relative}"
    for url in links:
        if url.startswith(f"{REPOSITORY}/blob/main/") or url.startswith(f"{REPOSITORY}/tree/main/"):
            path = url.split("/main/", 1)[1].split("#")[0]
            assert (ROOT / path).exists(), url


def test_readme_install_section_states_the_supported_python() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    minimum = re.search(r'^requires-python = ">=(3\.\d+)"', pyproject, re.M)
    assert minimum, "requires-python is not a plain lower bound any more: update this test"
    assert f"Python {minimum.group(1)} or later" in (ROOT / "README.md").read_text()


# --- a clean install -------------------------------------------------------------------

def test_install_adds_one_top_level_name(installed_venv: InstalledVenv) -> None:
    (dist_info,) = installed_venv.site_packages.glob("rawsys-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["rawsys"]
    inside, outside = set(), set()
    for line in (dist_info / "RECORD").read_text().splitlines():
        path = line.rsplit(",", 2)[0]
        if path.startswith(".."):
            full = os.path.normpath(installed_venv.site_packages / path)
            outside.add(Path(full).relative_to(installed_venv.path).as_posix())
        else:
            inside.add(path.split("/")[0])
    assert inside == {"rawsys", dist_info.name}
    assert outside == {"bin/rawsys-trace", "share/man/man8/rawsys-trace.8"}


def test_installed_package_is_used(installed_venv: InstalledVenv, tmp_path: Path) -> None:
    out = run([str(installed_venv.python), "-I", "-c",
               "import rawsys, rawsys.c, rawsys.trace.cli as c; print(c.__file__)"],
              cwd=tmp_path).stdout.strip()
    assert Path(out).is_relative_to(installed_venv.site_packages)


def test_rawsys_trace_help_from_the_venv(installed_venv: InstalledVenv, tmp_path: Path) -> None:
    for cmd in ([str(installed_venv.bin / "rawsys-trace"), "--help"],
                [str(installed_venv.python), "-m", "rawsys.trace", "--help"]):
        out = run(cmd, cwd=tmp_path, env=installed_venv.env()).stdout
        assert out.startswith("usage: rawsys-trace")


@pytest.mark.skipif(not IS_ROOT, reason="doctor loads test programs: needs root (CI is root)")
def test_doctor_from_the_venv(installed_venv: InstalledVenv, tmp_path: Path) -> None:
    """As root the doctor of a plain install finds the distribution's bcc and a backend."""
    out = run([str(installed_venv.bin / "rawsys-trace"), "doctor"], cwd=tmp_path,
              env=installed_venv.env(), timeout=300).stdout
    assert re.search(r"^backend: (kprobe|fentry|tracepoint)$", out, re.M), out


@pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed")
def test_man_finds_the_page_from_the_venv(installed_venv: InstalledVenv, tmp_path: Path) -> None:
    """man maps each PATH entry .../bin to .../share/man: an activated venv is enough."""
    env = installed_venv.env()
    env.pop("MANPATH", None)
    found = run(["man", "-w", "rawsys-trace"], cwd=tmp_path, env=env).stdout.strip()
    assert Path(found) == installed_venv.path / "share/man/man8/rawsys-trace.8"
    page = run(["man", "rawsys-trace"], cwd=tmp_path, env={**env, "MANWIDTH": "80"}).stdout
    assert "rawsys-trace" in page and "doctor" in page


# --- the sdist -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unpacked_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out / "dist"), str(ROOT)],
        timeout=600)
    (sdist,) = (out / "dist").glob("rawsys-*.tar.gz")
    run(["tar", "-xzf", str(sdist), "-C", str(out)])
    (tree,) = [p for p in out.iterdir() if p.name.startswith("rawsys-")]
    return tree


def test_sdist_contents(unpacked_sdist: Path) -> None:
    """Every tracked file but CI's and git's own; the link rawsys/trace as a real folder."""
    files = {p.relative_to(unpacked_sdist).as_posix() for p in unpacked_sdist.rglob("*")
             if p.is_file()}
    tracked = run(["git", "ls-files"], cwd=ROOT).stdout.split()
    expected = {f for f in tracked if not f.startswith((".ci/", ".git"))} - {"rawsys/trace"}
    assert expected - files == set()
    assert package_modules() <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", ".so", ".o"))]
    assert os.access(unpacked_sdist / "dev", os.X_OK)


def test_sdist_tests_pass_after_unpacking(unpacked_sdist: Path) -> None:
    """Unpack, make a venv, ``pip install '.[test]'``, run pytest there: all pass.

    The venv is the unpacked tree's ``.venv``, the one ``./dev`` uses, marked
    installed as ``./dev`` marks it, so that the docs' commands (``./dev demo``,
    ``.venv/bin/python examples/...``) run in that tree as pasted.  The tests
    run with the venv's ``pytest``, which imports the installed rawsys, not
    the source folder, with an empty cache directory.  This test and
    ``test_sdist_contents`` are left out of the inner run: they would unpack
    the sdist again, forever.
    """
    tree = unpacked_sdist
    venv = install_into_new_venv(tree / ".venv", tree, ".[test]")
    # ./dev remakes a venv whose interpreter stamp differs from its own
    # interpreter's (see setup_venv in dev): write the stamp it would write.
    stamp = run([str(venv.python), "-c",
                 "import sys; print(sys.version.split()[0], sys.base_prefix)"]).stdout
    (venv.path / ".interpreter").write_text(stamp)
    (venv.path / ".installed").touch()
    used = run([str(venv.python), "-I", "-c", "import rawsys; print(rawsys.__file__)"],
               cwd=tree).stdout.strip()
    assert Path(used).is_relative_to(venv.site_packages)
    me = "tests/test_packaging.py"
    # An empty cache of its own, as on a new machine: the tracer's caches
    # (backend verdict, kernel facts, header links) are not shared with other runs.
    # PYTHON: ./dev's interpreter, so that its stamp check accepts this venv.
    env = {**venv.env(), "XDG_CACHE_HOME": str(tree.parent / "inner-cache"),
           "PYTHON": str(venv.python)}
    result = subprocess.run(
        [str(venv.bin / "pytest"), "-q", "-p", "no:cacheprovider",
         f"--basetemp={tree.parent / 'inner-tmp'}",
         "--deselect", f"{me}::test_sdist_contents",
         "--deselect", f"{me}::test_sdist_tests_pass_after_unpacking"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=3600, check=False,
    )
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else ""
    print(f"sdist's own tests: {summary}")
    assert result.returncode == 0, f"{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
