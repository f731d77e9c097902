"""Kernel headers for bcc, which compiles every program against them.

bcc compiles every program, tracepoints included, with the kernel headers.
When the running kernel's are missing (``/lib/modules/$(uname -r)/build``),
:func:`kernel_headers` picks the distribution's nearest version; Debian
splits one version in two directories (``-amd64``: config and generated
headers; ``-common``: the rest), which bcc only joins when they are under
``/lib/modules/RELEASE/{build,source}`` of the *running* release.  So a small
tree of symlinks joining the two is made in the cache directory and
``BCC_KERNEL_SOURCE`` names it (bcc then runs clang in that one directory:
``src/cc/frontends/clang/loader.cc``, ``kbuild_helper.cc``).  No struct
layout from these headers is used: offsets come from the running kernel's
BTF (:mod:`rawsys.trace.kernel.facts`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

from rawsys.trace.system.cache import cache_path
from rawsys.trace.system.provision import install_hint

__all__ = ["HeadersInfo", "configure_kernel_headers", "kernel_headers"]


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


def _valid_tree(dest: str, hs: _HeaderSet) -> bool:
    linux = os.path.realpath(os.path.join(dest, "include", "linux"))
    return _complete((dest,)) and linux.startswith(tuple(p.rstrip("/") + "/" for p in hs.parts))


def _make_joined_tree(hs: _HeaderSet) -> tuple[str, bool]:
    """(the joined tree, whether this call made it)."""
    if len(hs.parts) == 1:
        return hs.parts[0], False
    leaf = re.sub(r"[^A-Za-z0-9._-]", "_", hs.version)
    roots = [
        cache_path("kernel-headers"),
        os.path.join(tempfile.gettempdir(), f"rawsys-{os.getuid()}"),
    ]
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
            f"no kernel headers for {release} or any other version: {install_hint('headers')}",
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

    Done once a process; returns what was chosen.  ``created`` is true only
    in the result of the call that made the joined tree.
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
    _configured = dataclasses.replace(info, created=False)  # later calls make nothing
    return info
