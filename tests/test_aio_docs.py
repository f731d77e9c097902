"""The complete programs in docs/asyncio.md run and print what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "asyncio.md"
PROGRAMS = [block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
            if "asyncio.run(main())" in block]


def test_the_doc_has_its_programs() -> None:
    assert len(PROGRAMS) == 2


@pytest.mark.parametrize("index", range(len(PROGRAMS)))
def test_doc_program_runs(index: int) -> None:
    result = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "-c", PROGRAMS[index]],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    expected = [b"here is a pipe", b"pipe for client 1"][index]
    assert repr(expected)[2:-1] in result.stdout


def test_no_private_jargon() -> None:
    text = DOC.read_text().lower()
    assert "seed" not in text and "issue 1" not in text
