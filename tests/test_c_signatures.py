"""The ``SIGNATURES`` table against the C headers' prototypes (STYLE.md rule 2 and 5).

Each prototype below is the one ``man 2``/``man 3`` gives.  gcc checks it
against the installed headers (a function pointer of that type initialised
with the libc function, ``-Werror``), and Python checks that the table gives
every parameter and the return value a ctypes type with the same ABI.
``syscall`` is variadic and is checked by the raw-syscall tests instead.
"""

from __future__ import annotations

import ctypes
import re
from ctypes import POINTER, c_int, c_size_t, c_ssize_t, c_uint, c_void_p
from typing import Any

import pytest

from rawsys.c import structs
from rawsys.c.libc import SIGNATURES

# glibc declares the sockaddr arguments with transparent unions,
# __SOCKADDR_ARG / __CONST_SOCKADDR_ARG; in C they accept struct sockaddr *.
PROTOTYPES = {
    "socket": "int (int, int, int)",
    "socketpair": "int (int, int, int, int *)",
    "bind": "int (int, __CONST_SOCKADDR_ARG, socklen_t)",
    "connect": "int (int, __CONST_SOCKADDR_ARG, socklen_t)",
    "listen": "int (int, int)",
    "accept4": "int (int, __SOCKADDR_ARG, socklen_t *, int)",
    "shutdown": "int (int, int)",
    "sendmsg": "ssize_t (int, const struct msghdr *, int)",
    "recvmsg": "ssize_t (int, struct msghdr *, int)",
    "sendmmsg": "int (int, struct mmsghdr *, unsigned int, int)",
    "recvmmsg": "int (int, struct mmsghdr *, unsigned int, int, struct timespec *)",
    "send": "ssize_t (int, const void *, size_t, int)",
    "recv": "ssize_t (int, void *, size_t, int)",
    "sendto": "ssize_t (int, const void *, size_t, int, __CONST_SOCKADDR_ARG, socklen_t)",
    "recvfrom": "ssize_t (int, void *, size_t, int, __SOCKADDR_ARG, socklen_t *)",
    "setsockopt": "int (int, int, int, const void *, socklen_t)",
    "getsockopt": "int (int, int, int, void *, socklen_t *)",
    "close": "int (int)",
    "read": "ssize_t (int, void *, size_t)",
    "write": "ssize_t (int, const void *, size_t)",
    "pipe2": "int (int *, int)",
    "__cmsg_nxthdr": "struct cmsghdr * (struct msghdr *, struct cmsghdr *)",
    "pthread_sigmask": "int (int, const sigset_t *, sigset_t *)",
}
VARIADIC = {"syscall"}


def acceptable(c_type: str) -> tuple[Any, ...]:
    """The ctypes types with the ABI of *c_type* (LP64)."""
    c_type = c_type.replace("const ", "").strip()
    simple = {"int": (c_int,), "unsigned int": (c_uint,), "size_t": (c_size_t,),
              "ssize_t": (c_ssize_t,), "socklen_t": (structs.socklen_t,),
              "void *": (c_void_p,), "int *": (POINTER(c_int),),
              "socklen_t *": (POINTER(structs.socklen_t),),
              "sigset_t *": (c_void_p,),
              "__SOCKADDR_ARG": (c_void_p, POINTER(structs.sockaddr)),
              "__CONST_SOCKADDR_ARG": (c_void_p, POINTER(structs.sockaddr))}
    if c_type in simple:
        return simple[c_type]
    match = re.fullmatch(r"struct (\w+) \*", c_type)
    assert match, f"no ctypes mapping for {c_type!r}"
    return (POINTER(getattr(structs, match.group(1))), c_void_p)


def split(prototype: str) -> tuple[str, list[str]]:
    match = re.fullmatch(r"(.+?) \((.*)\)", prototype)
    assert match
    return match.group(1), [p.strip() for p in match.group(2).split(",")]


def test_every_table_entry_has_a_prototype() -> None:
    assert set(SIGNATURES) - VARIADIC == set(PROTOTYPES)


def test_prototypes_match_the_headers(build_c: Any) -> None:
    lines = ["#define _GNU_SOURCE", "#include <sys/socket.h>", "#include <unistd.h>",
             "#include <fcntl.h>", "#include <time.h>", "#include <signal.h>", "",
             "int main(void)", "{"]
    for name, prototype in PROTOTYPES.items():
        ret, params = split(prototype)
        lines.append(f"    {ret} (*volatile check_{name})({', '.join(params)}) = {name};")
        lines.append(f"    (void)check_{name};")
    lines += ["    return 0;", "}", ""]
    build_c("\n".join(lines), "-Werror=incompatible-pointer-types")


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
def test_table_types_have_the_prototypes_abi(name: str) -> None:
    argtypes, restype = SIGNATURES[name]
    ret, params = split(PROTOTYPES[name])
    assert len(argtypes) == len(params)
    for position, (ctype, c_type) in enumerate(zip(argtypes, params)):
        assert ctype in acceptable(c_type), (position, c_type, ctype)
    assert restype in acceptable(ret)


def test_ctypes_integer_types_are_the_lp64_ones() -> None:
    """What the mapping above relies on: ssize_t is long, size_t unsigned long."""
    assert ctypes.sizeof(c_ssize_t) == ctypes.sizeof(c_size_t) == 8
    assert c_ssize_t(-1).value == -1 and c_size_t(-1).value == 2**64 - 1
    assert ctypes.sizeof(structs.socklen_t) == 4
