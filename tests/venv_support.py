"""New virtual environments with rawsys installed, as a library user makes them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class InstalledVenv:
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def site_packages(self) -> Path:
        (found,) = self.path.glob("lib/python3*/site-packages")
        return found

    def env(self) -> dict[str, str]:
        """The environment of a shell in which ``. bin/activate`` was run."""
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env["VIRTUAL_ENV"] = str(self.path)
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", os.defpath)])
        return env


def install_into_new_venv(path: Path, source: Path, target: str = ".") -> InstalledVenv:
    """``python -m venv PATH``, then ``pip install TARGET`` run in *source* (not editable)."""
    venv = InstalledVenv(path)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    result = subprocess.run(
        [str(venv.python), "-m", "pip", "install", "-q", target],
        cwd=source, env=venv.env(), capture_output=True, text=True, timeout=900, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"pip install {target} failed:\n{result.stdout}\n{result.stderr}",
                    pytrace=False)
    return venv
