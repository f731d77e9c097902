"""The tracer's per-user cache: ``$XDG_CACHE_HOME/rawsys`` (else ``~/.cache/rawsys``).

It keeps what is slow to find out and cannot change until the kernel or the
boot does: the kernel facts read from BTF, doctor's backend verdict, and the
joined kernel-header tree bcc compiles against.  Everything in it can be
deleted at any time; it is rebuilt on the next run.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["cache_path", "read_json", "write_json"]


def cache_path(*names: str) -> str:
    """The path of *names* inside the cache directory (nothing is created)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rawsys", *names)


def read_json(path: str) -> Any:
    """The JSON value stored at *path*, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str, value: Any) -> bool:
    """Store *value* at *path* atomically (a reader sees the old file or the new).

    Returns False, leaving nothing behind, when it cannot be written: a cache
    that cannot be kept is computed again next time.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True
