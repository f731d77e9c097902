"""Import bcc's Python bindings from the distribution, never PyPI's ``bcc``.

bcc's Python bindings ship with the distribution (``python3-bpfcc`` on
Debian/Ubuntu in ``/usr/lib/python3/dist-packages``, ``python3-bcc`` on Fedora
in ``/usr/lib{,64}/python3.X/site-packages``), tied to its ``libbcc.so``.  The
PyPI project called ``bcc`` is an unrelated lattice library.  From a venv the
distribution's directory is not on ``sys.path``, and a ``pip install bcc`` may
shadow it, so :func:`load_bcc` refuses any ``bcc`` that is not the
distribution's and imports the ``bcc`` package from the distribution
directory alone (without adding all of ``dist-packages`` to ``sys.path``).
bcc compiles nothing without kernel headers: :func:`load_bcc` also points it
at them (:mod:`rawsys.trace.system.headers`).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sys
import sysconfig
from types import ModuleType

from rawsys.trace.system.headers import configure_kernel_headers
from rawsys.trace.system.provision import install_hint

__all__ = [
    "BccUnavailable",
    "distribution_bcc_dirs",
    "find_distribution_bcc",
    "load_bcc",
]

# A file bcc's ``__init__.py`` imports; the PyPI lattice library has none.
_BCC_MARKER = "libbcc.py"


class BccUnavailable(RuntimeError):
    """bcc cannot be used here; the message says what to install or run."""


def _install_hint() -> str:
    return (
        install_hint("bcc")
        + ". The PyPI package named 'bcc' is an unrelated project and does not work."
    )


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
        raise BccUnavailable(f"bcc is not installed: {_install_hint()}")
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
        raise BccUnavailable(f"cannot import bcc from {init}: {_install_hint()}")
    module = importlib.util.module_from_spec(spec)
    _forget("bcc")
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except OSError as e:  # libbcc.so.0 missing or of another ABI
        _forget("bcc")
        raise BccUnavailable(
            f"bcc's Python bindings at {parent}/bcc cannot load libbcc ({e}): "
            f"reinstall the distribution's bcc ({_install_hint()})"
        ) from e
    except Exception as e:
        _forget("bcc")
        raise BccUnavailable(f"importing bcc from {parent}/bcc failed: {e!r}") from e
    if not hasattr(module, "BPF"):
        _forget("bcc")
        raise BccUnavailable(f"{parent}/bcc has no BPF class: {_install_hint()}")
    return module
