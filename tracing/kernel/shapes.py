"""Which kernel function plays each part of a transfer, told by its BTF prototype.

A name alone says too little.  Debian 12's 6.1 kernel has both
``receive_fd(struct file *file, unsigned int o_flags)`` -- the helper of
pidfd_getfd(2) and seccomp's addfd -- and ``__receive_fd(struct file *file,
int __user *ufd, unsigned int o_flags)``, which scm_detach_fds calls for
each received fd; 6.8 folded them into one three-argument ``receive_fd``.
A kprobe attached by name to the wrong one never fires on a transfer, and
an fentry program declared with the other's arguments does not load.

So each part is a :class:`Role`: the names kernels have given it, what it
returns, and the arguments the probes read, by type.  :func:`fit` finds
where each of those arguments sits in a BTF prototype (by name and type,
else by a type that only one parameter has), or says why the prototype
does not fit; :func:`resolve` picks the first name whose prototype fits.
The probes then read arguments by the positions found here
(``ARG_<ROLE>_<ARG>`` in the BPF C), never by positions typed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple

from rawsys.trace.kernel.btf import Prototype

__all__ = ["Arg", "Resolved", "Role", "ShapeError", "fit", "resolve"]


class Arg(NamedTuple):
    """An argument the probes read: ``ARG_<ROLE>_<NAME>`` (its index) in the BPF C."""

    name: str
    type: str  # the plain C type it must have (as rawsys.trace.kernel.btf.Param spells it)


class Role(NamedTuple):
    """A part a kernel function plays, and the shape a function must have to play it."""

    names: tuple[str, ...]  # what kernels have called it, newest first
    returns: str
    args: tuple[Arg, ...]  # the arguments the probes read

    def spell(self) -> str:
        """The shape, C-like: ``int receive_fd(struct file *file, int *ufd, ...)``."""
        args = ", ".join(
            (a.type if a.type.endswith("*") else a.type + " ") + a.name for a in self.args
        )
        return f"{self.returns} {' or '.join(self.names)}({args}, ...)"


class ShapeError(LookupError):
    """No kernel function fits a role; the message names each candidate and why."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no function fits"


@dataclass(frozen=True)
class Resolved:
    """The function that plays a role on this kernel, and where its arguments are."""

    role: str
    name: str
    prototype: Prototype
    positions: Mapping[str, int]  # Arg.name -> index among the prototype's parameters

    @property
    def nargs(self) -> int:
        return len(self.prototype.params)


def _spell_arg(arg: Arg) -> str:
    return (arg.type if arg.type.endswith("*") else arg.type + " ") + arg.name


def fit(role: Role, prototype: Prototype) -> dict[str, int] | str:
    """Where each of *role*'s arguments sits in *prototype*, or why it does not fit."""
    if prototype.returns != role.returns:
        return f"returns {prototype.returns}, not {role.returns}"
    if any(p.type == "..." for p in prototype.params):
        return "is variadic"
    positions: dict[str, int] = {}
    for arg in role.args:
        named = [i for i, p in enumerate(prototype.params) if p == (arg.name, arg.type)]
        typed = [i for i, p in enumerate(prototype.params) if p.type == arg.type]
        if named:
            positions[arg.name] = named[0]
        elif len(typed) == 1:
            positions[arg.name] = typed[0]
        elif typed:
            return f"has {len(typed)} {arg.type} arguments and none named {arg.name}"
        else:
            return f"has no {_spell_arg(arg)} argument"
    if len(set(positions.values())) != len(positions):
        return "gives two of the arguments the probes read one parameter"
    return positions


def resolve(
    role_name: str, role: Role, prototypes: Mapping[str, tuple[Prototype, ...]]
) -> Resolved:
    """The first of *role*'s names whose BTF prototype fits it.

    *prototypes* maps a function name to the distinct prototypes BTF records
    for it (none: BTF has no such function).  A name with two different
    prototypes is ambiguous and never chosen.  Raises :class:`ShapeError`
    naming each candidate and why it was passed over.
    """
    why: list[str] = []
    for name in role.names:
        found = prototypes.get(name, ())
        if not found:
            why.append(f"{name}: not in this kernel's BTF")
            continue
        if len(found) > 1:
            spelled = " and ".join(p.spell(name) for p in found)
            why.append(f"{name}: BTF has {len(found)} functions of that name ({spelled})")
            continue
        positions = fit(role, found[0])
        if isinstance(positions, str):
            why.append(f"{found[0].spell(name)} {positions}")
            continue
        return Resolved(role_name, name, found[0], positions)
    raise ShapeError(
        f"no kernel function plays {role_name} ({role.spell()}): " + "; ".join(why)
    )
