"""The Python versions pyproject.toml declares are the ones CI tests.

``./dev test-all`` (which ``.ci/run`` runs) takes its versions from the
``Programming Language :: Python :: 3.X`` classifiers, so these must run from
``requires-python``'s floor without a gap, and the tools that read a target
version (ruff) must name the same floor.
"""

from __future__ import annotations

import re
from pathlib import Path

PYPROJECT = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def classifier_versions() -> list[tuple[int, int]]:
    found = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', PYPROJECT)
    return [_version(v) for v in found]


def floor() -> tuple[int, int]:
    match = re.search(r'^requires-python = ">=(3\.\d+)"$', PYPROJECT, re.M)
    assert match, "requires-python should read >=3.X"
    return _version(match.group(1))


def test_classifiers_run_from_the_floor_without_a_gap() -> None:
    versions = classifier_versions()
    assert versions == sorted(versions)
    assert versions[0] == floor()
    assert versions == [(3, minor) for minor in range(floor()[1], versions[-1][1] + 1)]
    assert versions[-1] >= (3, 13)


def test_ruff_targets_the_floor() -> None:
    major, minor = floor()
    assert f'target-version = "py{major}{minor}"' in PYPROJECT
