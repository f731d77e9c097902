"""benchmarks/trace_startup.py runs and prints its table (the figures are its business)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tracing_helpers import require_live_tracing

ROOT = Path(__file__).resolve().parents[2]


def test_one_run_prints_every_phase_the_ratio_and_the_room_left() -> None:
    require_live_tracing()
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trace_startup.py"),
                          "--runs", "1", "--backend", "tracepoint"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for label in ("interpreter start", "import (rawsys, bcc)", "kernel facts, text",
                  "compile (clang)", "load (verifier)", "attach", "total"):
        assert f"\n{label} " in text, label
    assert "ratio rawsys-trace / bcc minimal: " in text
    assert "verifier work, instructions processed (tracepoint backend): " in text
    assert "tracepoint__syscalls__sys_exit_recvmsg" in text
    assert "BPF instructions; bcc's compile beyond its minimal program's: " in text
    assert "room for about " in text
