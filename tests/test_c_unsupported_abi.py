"""On a platform whose C layout rawsys does not reproduce, importing says so."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from rawsys.c import structs
from rawsys.c.structs import UnsupportedABIError, _check_abi


def test_this_machine_is_supported() -> None:
    _check_abi()  # does not raise here: the test-suite runs on a supported ABI


@pytest.mark.parametrize(
    ("system", "machine"),
    [("Linux", "i686"), ("Linux", "armv7l"), ("Linux", "riscv64"), ("Linux", "s390x"),
     ("Darwin", "arm64"), ("Darwin", "x86_64"), ("FreeBSD", "amd64"), ("Windows", "AMD64")],
)
def test_unsupported_platforms_are_refused(monkeypatch: pytest.MonkeyPatch, system: str,
                                           machine: str) -> None:
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    with pytest.raises(UnsupportedABIError) as excinfo:
        _check_abi()
    message = str(excinfo.value)
    assert system in message and machine in message
    assert "x86-64 and aarch64" in message


@pytest.mark.parametrize("machine", ["x86_64", "aarch64", "arm64"])
def test_supported_machines_pass(monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: machine)
    _check_abi()


def test_32_bit_pointers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """x32 and 32-bit userlands on a 64-bit kernel report x86_64 but lay structs out 32-bit."""
    real_sizeof = ctypes.sizeof

    def sizeof_32(obj: object) -> int:
        if obj in (ctypes.c_void_p, ctypes.c_long):
            return 4
        return real_sizeof(obj)  # type: ignore[arg-type]

    monkeypatch.setattr(structs.ctypes, "sizeof", sizeof_32)
    with pytest.raises(UnsupportedABIError, match="32-bit pointers"):
        _check_abi()


def test_unsupported_abi_error_is_an_import_error() -> None:
    assert issubclass(UnsupportedABIError, ImportError)


IMPORT_ON_I686 = """
import platform
platform.machine = lambda: "i686"
try:
    import rawsys
except ImportError as exc:
    print(type(exc).__name__)
    print(exc)
else:
    print("imported")
"""


def test_importing_on_an_unsupported_abi_fails_clearly() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_ON_I686], capture_output=True,
                            text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "UnsupportedABIError"
    assert "i686" in lines[1] and "msghdr" in lines[1]
