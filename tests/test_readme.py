"""The README's rawsys port of send_fd runs, passes a working fd and type-checks."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import rawsys

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_port() -> str:
    text = README.read_text()
    blocks = re.findall(r"```python\n(from rawsys.c import \*\n.*?)```", text, re.S)
    assert blocks, "the README lost its rawsys port of send_fd"
    return str(blocks[0])


def _readme_send_fd() -> Callable[[int, int], int]:
    namespace: dict[str, Any] = {}
    exec(compile(_readme_port(), str(README), "exec"), namespace)
    send_fd: Callable[[int, int], int] = namespace["send_fd"]
    return send_fd


def test_readme_send_fd_passes_a_working_descriptor() -> None:
    send_fd = _readme_send_fd()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    got: list[int] = []
    try:
        assert send_fd(a.fileno(), r) == 0
        msg, got, _flags, _addr = rawsys.recv_fds(b, 16, 1)
        assert msg == b"F" and len(got) == 1 and got[0] != r
        os.write(w, b"through the copy")
        assert os.read(got[0], 64) == b"through the copy"
    finally:
        for fd in (r, w, *got):
            os.close(fd)
        a.close()
        b.close()


def test_readme_port_passes_mypy_strict(tmp_path: Path) -> None:
    """Typed C ports work: the star import gives typed names, CMSG_FIRSTHDR's NULL is None."""
    port = tmp_path / "readme_port.py"
    port.write_text(_readme_port())
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(port)],
        cwd=README.parent, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
