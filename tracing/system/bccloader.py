"""Find bcc from the distribution, and kernel headers it can compile against.

bcc's Python bindings ship with the distribution (``python3-bpfcc`` on
Debian/Ubuntu in ``/usr/lib/python3/dist-packages``, ``python3-bcc`` on Fedora
in ``/usr/lib{,64}/python3.X/site-packages``), tied to its ``libbcc.so``.  The
PyPI project called ``bcc`` is an unrelated lattice library.  From a venv the
distribution's directory is not on ``sys.path``, and a ``pip install bcc`` may
shadow it, so :func:`load_bcc` refuses any ``bcc`` that is not the
distribution's and imports the ``bcc`` package from the distribution
directory alone (without adding all of ``dist-packages`` to ``sys.path``).

bcc compiles every program, tracepoints included, with the kernel headers.
When the running kernel's are missing (``/lib/modules/$(uname -r)/build``),
:func:`kernel_headers` picks the distribution's nearest version; Debian
splits one version in two directories (``-amd64``: config and generated
headers; ``-common``: the rest), which bcc only joins when they are under
``/lib/modules/RELEASE/{build,source}`` of the *running* release.  So a small
tree of symlinks joining the two is made in the cache directory and
``BCC_KERNEL_SOURCE`` names it (bcc then runs clang in that one directory:
``src/cc/frontends/clang/loader.cc``, ``kbuild_helper.cc``).  No struct
layout from these headers is used: offsets come from BTF (``rawsys.trace.kernel.btf``).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from types import ModuleType

__all__ = [
    "BccUnavailable",
    "HeadersInfo",
    "configure_kernel_headers",
    "distribution_bcc_dirs",
    "find_distribution_bcc",
    "kernel_headers",
    "load_bcc",
]

INSTALL_HINT = (
    "run `rawsys-trace setup` as root, or install the distribution's bcc: "
    "`apt-get install python3-bpfcc` (Debian/Ubuntu), `dnf install python3-bcc` (Fedora). "
    "The PyPI package named 'bcc' is an unrelated project and does not work."
)
HEADERS_HINT = (
    "install kernel headers: `apt-get install linux-headers-amd64` (Debian), "
    "`apt-get install linux-headers-generic` (Ubuntu), `dnf install kernel-devel` (Fedora), "
    "or run `rawsys-trace setup` as root"
)

# A file bcc's ``__init__.py`` imports; the PyPI lattice library has none.
_BCC_MARKER = "libbcc.py"


class BccUnavailable(RuntimeError):
    """bcc cannot be used here; the message says what to install or run."""


# ------------------------------------------------------------------ bcc


def distribution_bcc_dirs() -> list[str]:
    """Directories where a distribution installs Python packages, that hold a ``bcc/``."""
    patterns = [
        "/usr/lib/python3/dist-packages",  # Debian, Ubuntu
        "/usr/lib/python3.*/site-packages",  # Fedora (noarch)
        "/usr/lib64/python3.*/site-packages",  # Fedora (arch)
        "/usr/lib/python3.*/dist-packages",
        "/usr/local/lib/python3/dist-packages",  # bcc built from source on Debian
        "/usr/local/lib/python3.*/site-packages",
        "/usr/local/lib/python3.*/dist-packages",
    ]
    mine = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found: list[str] = []
    for pattern in patterns:
        # This Python's own version first, then the others, newest first.
        dirs = sorted(glob.glob(pattern), key=lambda d: (mine not in d, _neg_version(d)))
        for d in dirs:
            if _is_bcc_package(os.path.join(d, "bcc")) and d not in found:
                found.append(d)
    return found


def _neg_version(path: str) -> tuple[int, ...]:
    m = re.search(r"python(\d+)\.(\d+)", path)
    return (-int(m.group(1)), -int(m.group(2))) if m else (0, 0)


def _is_bcc_package(pkg_dir: str) -> bool:
    return os.path.isfile(os.path.join(pkg_dir, "__init__.py")) and os.path.isfile(
        os.path.join(pkg_dir, _BCC_MARKER)
    )


def _venv_dirs() -> list[str]:
    """site-packages directories of the running venv (empty outside a venv)."""
    if sys.prefix == sys.base_prefix:
        return []
    dirs = {
        sysconfig.get_paths(vars={"base": sys.prefix, "platbase": sys.prefix})[k]
        for k in ("purelib", "platlib")
    }
    dirs.add(sys.prefix)
    return sorted(os.path.realpath(d) for d in dirs)


def _inside(path: str, parents: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == p or real.startswith(p.rstrip("/") + "/") for p in parents)


def _refusal(module_or_dir: str) -> str | None:
    """Why a ``bcc`` found at this package directory is not the distribution's, or None."""
    if not _is_bcc_package(module_or_dir):
        return f"{module_or_dir} is not bcc's Python bindings (no {_BCC_MARKER}; PyPI's 'bcc'?)"
    if _inside(module_or_dir, _venv_dirs()):
        return f"{module_or_dir} is inside the virtualenv {sys.prefix}, not from the distribution"
    return None


def find_distribution_bcc() -> str:
    """The ``bcc`` package directory :func:`load_bcc` would import, or raise BccUnavailable."""
    dirs = distribution_bcc_dirs()
    if not dirs:
        raise BccUnavailable(f"bcc is not installed: {INSTALL_HINT}")
    return os.path.join(dirs[0], "bcc")


def _usable(module: ModuleType) -> bool:
    origin = getattr(module, "__file__", None)
    return (
        origin is not None and hasattr(module, "BPF") and _refusal(os.path.dirname(origin)) is None
    )


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def load_bcc(*, configure_headers: bool = True) -> ModuleType:
    """Import and return the distribution's ``bcc`` module.

    Whatever ``import bcc`` would find is used only if it is the
    distribution's (it has ``bcc.BPF`` and lives outside the venv); otherwise
    it is dropped from ``sys.modules`` and the distribution's package is
    imported from its own directory, under the name ``bcc``, so a later
    ``import bcc`` gets it.  With ``configure_headers`` (the default) bcc is
    also pointed at kernel headers (:func:`configure_kernel_headers`), and
    their absence is an error too, since bcc compiles nothing without them.
    Raises :class:`BccUnavailable` with what to install.
    """
    if configure_headers:
        headers = configure_kernel_headers()
        if not headers.usable:
            raise BccUnavailable(f"bcc cannot compile without kernel headers: {headers.reason}")
    loaded = sys.modules.get("bcc")
    if loaded is not None and _usable(loaded):
        return loaded
    refused: list[str] = []
    if loaded is not None:
        refused.append(
            _refusal(os.path.dirname(getattr(loaded, "__file__", "") or "?"))
            or f"{loaded!r} has no BPF"
        )
        _forget("bcc")
    else:
        try:
            spec = importlib.util.find_spec("bcc")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            why = _refusal(os.path.dirname(spec.origin))
            if why is None:
                return _import_from(os.path.dirname(os.path.dirname(spec.origin)))
            refused.append(why)
    try:
        pkg_dir = find_distribution_bcc()
    except BccUnavailable as e:
        if refused:
            raise BccUnavailable(f"{e} (refused: {'; '.join(refused)})") from None
        raise
    return _import_from(os.path.dirname(pkg_dir))


def _import_from(parent: str) -> ModuleType:
    """Import the package ``bcc`` found in directory ``parent`` and no other."""
    init = os.path.join(parent, "bcc", "__init__.py")
    spec = importlib.util.spec_from_file_location(
        "bcc", init, submodule_search_locations=[os.path.join(parent, "bcc")]
    )
    if spec is None or spec.loader is None:
        raise BccUnavailable(f"cannot import bcc from {init}: {INSTALL_HINT}")
    module = importlib.util.module_from_spec(spec)
    _forget("bcc")
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except OSError as e:  # libbcc.so.0 missing or of another ABI
        _forget("bcc")
        raise BccUnavailable(
            f"bcc's Python bindings at {parent}/bcc cannot load libbcc ({e}): "
            f"reinstall the distribution's bcc ({INSTALL_HINT})"
        ) from e
    except Exception as e:
        _forget("bcc")
        raise BccUnavailable(f"importing bcc from {parent}/bcc failed: {e!r}") from e
    if not hasattr(module, "BPF"):
        _forget("bcc")
        raise BccUnavailable(f"{parent}/bcc has no BPF class: {INSTALL_HINT}")
    return module


# -------------------------------------------------------------- headers


@dataclass(frozen=True)
class HeadersInfo:
    """Kernel headers bcc compiles against.

    ``match``: ``"exact"`` (the running release's own), ``"nearest"``
    (another version's, joined for bcc), ``"environment"`` (the user's
    ``BCC_KERNEL_SOURCE``), ``"kheaders"`` (``/sys/kernel/kheaders.tar.xz``,
    which bcc unpacks itself) or ``"none"``.  ``path`` is the directory bcc
    is given (``BCC_KERNEL_SOURCE``), None when bcc finds them on its own or
    there are none.
    """

    match: str
    version: str | None
    path: str | None
    parts: tuple[str, ...] = ()  # the distribution directories behind path
    reason: str = ""
    candidates: tuple[str, ...] = field(default=(), compare=False)
    created: bool = field(default=False, compare=False)  # the joined tree was made just now

    @property
    def usable(self) -> bool:
        return self.match != "none"


@dataclass(frozen=True)
class _HeaderSet:
    version: str  # directory's release name, e.g. "6.1.0-56-amd64"
    parts: tuple[str, ...]  # build dir first, then its source dir if split


def _version_tuple(release: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return ()
    return tuple(int(x) for x in m.groups(default="0"))


def _has(parts: tuple[str, ...], rel: str) -> bool:
    return any(os.path.exists(os.path.join(p, rel)) for p in parts)


def _complete(parts: tuple[str, ...]) -> bool:
    """Has what bcc's compile needs: kconfig.h and the generated autoconf.h."""
    return _has(parts, "include/linux/kconfig.h") and _has(parts, "include/generated/autoconf.h")


def _header_sets(
    modules_root: str = "/lib/modules", src_root: str = "/usr/src"
) -> list[_HeaderSet]:
    """Every set of kernel headers on the machine, each as complete as it can be made."""
    sets: dict[str, _HeaderSet] = {}
    for build in sorted(glob.glob(os.path.join(modules_root, "*", "build"))):
        release = os.path.basename(os.path.dirname(build))
        source = os.path.join(os.path.dirname(build), "source")
        parts: tuple[str, ...] = (os.path.realpath(build),)
        if os.path.isdir(source) and os.path.realpath(source) != parts[0]:
            parts += (os.path.realpath(source),)
        if os.path.isdir(parts[0]) and _complete(parts):
            sets[release] = _HeaderSet(release, parts)
    # Debian/Ubuntu without the /lib/modules links: linux-headers-V-FLAVOUR + its common dir.
    for build in sorted(glob.glob(os.path.join(src_root, "linux-headers-*"))):
        name = os.path.basename(build)[len("linux-headers-") :]
        if name.endswith("-common") or name in sets or not os.path.isdir(build):
            continue
        parts = (os.path.realpath(build),)
        if not _complete(parts):
            for common in (
                re.sub(r"-[a-z0-9_]+$", "-common", build),  # Debian: 6.1.0-56-amd64 -> -common
                re.sub(r"-[a-z][a-z0-9_]*$", "", build),  # Ubuntu: 6.8.0-45-generic -> 6.8.0-45
            ):
                if common != build and os.path.isdir(common):
                    parts += (os.path.realpath(common),)
                    break
        if _complete(parts):
            sets[name] = _HeaderSet(name, parts)
    for build in sorted(glob.glob(os.path.join(src_root, "kernels", "*"))):  # Fedora
        name = os.path.basename(build)
        if name not in sets and _complete((build,)):
            sets[name] = _HeaderSet(name, (os.path.realpath(build),))
    return list(sets.values())


def _nearest(release: str, sets: list[_HeaderSet]) -> _HeaderSet | None:
    """The set closest in (major, minor) to the running release; newer wins a tie."""
    target = _version_tuple(release)
    usable = [s for s in sets if _version_tuple(s.version)]
    if not usable or not target:
        return usable[0] if usable else None

    def distance(s: _HeaderSet) -> tuple[int, tuple[int, ...]]:
        v = _version_tuple(s.version)
        gap = abs((v[0] * 1000 + v[1]) - (target[0] * 1000 + target[1]))
        return gap, tuple(-x for x in v)

    return min(usable, key=distance)


def _headers_cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rawsys", "kernel-headers")


def _join_tree(dest: str, parts: tuple[str, ...]) -> None:
    """Make ``dest`` a directory whose entries are symlinks into ``parts``, merged.

    A name present as a directory in several parts becomes a real directory,
    merged recursively; anything else links to the first part that has it.
    """
    os.makedirs(dest)
    names: dict[str, list[str]] = {}
    for part in parts:
        for name in sorted(os.listdir(part)):
            names.setdefault(name, []).append(os.path.join(part, name))
    for name, paths in names.items():
        dirs = tuple(p for p in paths if os.path.isdir(p))
        if len(dirs) > 1:
            _join_tree(os.path.join(dest, name), dirs)
        else:
            os.symlink(paths[0], os.path.join(dest, name))


def _joined_tree(hs: _HeaderSet) -> str:
    """One directory holding the whole header set, made once and reused."""
    return _make_joined_tree(hs)[0]


def _valid_tree(dest: str, hs: _HeaderSet) -> bool:
    linux = os.path.realpath(os.path.join(dest, "include", "linux"))
    return _complete((dest,)) and linux.startswith(tuple(p.rstrip("/") + "/" for p in hs.parts))


def _make_joined_tree(hs: _HeaderSet) -> tuple[str, bool]:
    """(the joined tree, whether this call made it)."""
    if len(hs.parts) == 1:
        return hs.parts[0], False
    leaf = re.sub(r"[^A-Za-z0-9._-]", "_", hs.version)
    roots = [_headers_cache_root(), os.path.join(tempfile.gettempdir(), f"rawsys-{os.getuid()}")]
    for root in roots:
        dest = os.path.join(root, leaf)
        if _valid_tree(dest, hs):
            return dest, False
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
            if os.stat(root).st_uid != os.getuid():
                continue  # someone else's directory: do not build in it
            work = tempfile.mkdtemp(prefix=f".{leaf}.", dir=root)
            tree = os.path.join(work, "tree")
            _join_tree(tree, hs.parts)
            if os.path.lexists(dest):
                shutil.rmtree(dest, ignore_errors=True)
            try:
                os.rename(tree, dest)
            except OSError:
                pass  # another process won the race; use theirs if it is complete
            shutil.rmtree(work, ignore_errors=True)
            if _valid_tree(dest, hs):
                return dest, True
        except OSError:
            continue
    raise OSError(f"cannot make a joined header tree for {hs.parts} in {roots}")


def kernel_headers(
    *, release: str | None = None, modules_root: str = "/lib/modules", src_root: str = "/usr/src"
) -> HeadersInfo:
    """Which kernel headers bcc will compile against, without changing anything."""
    release = release or os.uname().release
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        if _complete((env,)):
            return HeadersInfo("environment", None, env, (env,), "BCC_KERNEL_SOURCE is set")
        return HeadersInfo(
            "none",
            None,
            env,
            (env,),
            f"BCC_KERNEL_SOURCE={env} lacks include/linux/kconfig.h or generated/autoconf.h",
        )
    sets = _header_sets(modules_root, src_root)
    names = tuple(s.version for s in sets)
    exact = os.path.join(modules_root, release, "build")
    for s in sets:
        if s.version == release:
            return HeadersInfo(
                "exact", release, None, s.parts, f"{exact} is the running kernel's", names
            )
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return HeadersInfo(
            "kheaders",
            release,
            None,
            ("/sys/kernel/kheaders.tar.xz",),
            "the kernel carries its own headers (CONFIG_IKHEADERS)",
            names,
        )
    best = _nearest(release, sets)
    if best is None:
        return HeadersInfo(
            "none",
            None,
            None,
            (),
            f"no kernel headers for {release} or any other version: {HEADERS_HINT}",
            names,
        )
    return HeadersInfo(
        "nearest",
        best.version,
        None,
        best.parts,
        f"{exact} is missing; nearest installed: {best.version} (layouts come from BTF)",
        names,
    )


_configured: HeadersInfo | None = None


def configure_kernel_headers() -> HeadersInfo:
    """Point bcc at :func:`kernel_headers`, setting ``BCC_KERNEL_SOURCE`` if needed.

    Done once a process; returns what was chosen.
    """
    global _configured
    if _configured is not None and os.environ.get("BCC_KERNEL_SOURCE") == _configured.path:
        return _configured
    info = kernel_headers()
    # "exact": bcc finds /lib/modules/RELEASE/build (and joins its source/) itself.
    if info.match == "nearest":
        try:
            tree, created = _make_joined_tree(_HeaderSet(info.version or "unknown", info.parts))
        except OSError as e:
            info = HeadersInfo("none", info.version, None, info.parts, f"{info.reason}; {e}")
        else:
            os.environ["BCC_KERNEL_SOURCE"] = tree
            info = HeadersInfo(
                info.match, info.version, tree, info.parts, info.reason, info.candidates, created
            )
    _configured = info
    return info
