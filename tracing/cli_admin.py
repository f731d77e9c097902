"""``rawsys-trace doctor`` and ``rawsys-trace setup``: entry points returning exit codes.

The main CLI (``rawsys.trace.cli``) hands its remaining arguments here::

    rawsys-trace doctor [--backend NAME] [--json]
    rawsys-trace setup [--no-install]

Exit codes: doctor 0 when the chosen backend can attach, 1 when none can;
setup 0 when every step is done or already so, 1 when a step failed or not
root; 2 for bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

__all__ = ["doctor_main", "setup_main"]


def doctor_main(argv: Sequence[str] | None = None) -> int:
    from rawsys.trace.doctor import (
        BACKEND_PREFERENCE,
        choose_backend,
        format_report,
        probe_capabilities,
        report_json,
    )

    parser = argparse.ArgumentParser(
        prog="rawsys-trace doctor",
        description="Show what this kernel allows the tracer to do, and which backend it uses.",
        epilog="examples:\n  rawsys-trace doctor\n  rawsys-trace doctor --backend kprobe --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend", choices=BACKEND_PREFERENCE, help="show the effect of forcing one"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    caps = probe_capabilities()
    backend, _why = choose_backend(caps, args.backend)
    usable = {"kprobe": caps.kprobes, "fentry": caps.fentry, "tracepoint": caps.tracepoints}[
        backend
    ].ok
    if args.json:
        print(json.dumps(report_json(caps, args.backend)))
    else:
        print(format_report(caps, args.backend))
    return 0 if usable else 1


def setup_main(argv: Sequence[str] | None = None) -> int:
    from rawsys.trace.system.provision import SetupError, setup_steps

    parser = argparse.ArgumentParser(
        prog="rawsys-trace setup",
        description="Make this machine ready to trace (root; safe to run again): mount tracefs, "
        "install the distribution's bcc and kernel headers, point bcc at headers.",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="do not install packages, only check"
    )
    args = parser.parse_args(argv)
    try:
        steps = setup_steps(install=not args.no_install)
    except SetupError as e:
        print(f"rawsys-trace setup: {e}", file=sys.stderr)
        return 1
    for step in steps:
        print(step)
    return 1 if any(s.status == "failed" for s in steps) else 0
