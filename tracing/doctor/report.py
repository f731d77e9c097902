"""doctor's report: the table of checks and the backend chosen, as text or JSON."""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

from rawsys.trace.doctor.checks import Capabilities
from rawsys.trace.doctor.choice import choose_backend

__all__ = ["format_report", "report_json"]


def format_report(caps: Capabilities, forced: str | None = None, width: int = 79) -> str:
    """The doctor's table (one row per check, its detail wrapped below), then the backend."""
    mark = {True: "yes", False: "NO", None: "?"}
    rows = caps.rows()
    w0 = max(len(c.name) for c in rows)
    lines = [
        f"rawsys-trace doctor: Linux {caps.kernel}, "
        + ("root" if caps.root else "not root: load/attach checks need root"),
        "",
        f"{'CHECK':<{w0}}  OK   VALUE",
    ]
    indent = " " * (w0 + 7)
    for c in rows:
        lines.append(f"{c.name:<{w0}}  {mark[c.ok]:<3}  {c.value}")
        if c.detail:
            lines += textwrap.wrap(
                c.detail,
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
                break_long_words=False,
            )
    backend, why = choose_backend(caps, forced)
    lines += ["", f"backend: {backend}"]
    lines += textwrap.wrap(
        why,
        width,
        initial_indent="  because ",
        subsequent_indent="  ",
        break_on_hyphens=False,
        break_long_words=False,
    )
    lines.append(f"(checks took {caps.elapsed:.2f} s)")
    return "\n".join(lines)


def report_json(caps: Capabilities, forced: str | None = None) -> dict[str, Any]:
    """The same as one JSON object: the kernel, every check, the backend and why."""
    backend, why = choose_backend(caps, forced)
    return {
        "kernel": caps.kernel,
        "root": caps.root,
        "checks": [dataclasses.asdict(c) for c in caps.rows()],
        "backend": backend,
        "reason": why,
        "elapsed": round(caps.elapsed, 3),
    }
