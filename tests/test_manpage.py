"""The manual page rawsys-trace(8) documents exactly the options the command has.

The options are read from the argument parsers themselves: every parser the
command builds for ``rawsys-trace``, ``rawsys-trace doctor`` and
``rawsys-trace setup`` is caught when it parses, and its actions (hidden
ones included, such as ``--ebpf``) are compared with the tags of the man
page's OPTIONS section (the command) and COMMANDS section (each
subcommand).  Adding, renaming or removing an option therefore fails here
until tracing/rawsys-trace.8 says the same.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from rawsys.trace import cli

PAGE = Path(__file__).resolve().parent.parent / "tracing" / "rawsys-trace.8"


class _Caught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``rawsys-trace ARGV`` builds, caught before it parses anything."""

    def catch(self: argparse.ArgumentParser, args: Sequence[str] | None = None,
              namespace: Any = None) -> Any:
        raise _Caught(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        try:
            cli.main(argv)
        except _Caught as caught:
            return caught.parser
    raise AssertionError(f"rawsys-trace {argv} built no argument parser")


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    """Subcommands: argparse subparsers, or words the usage line gives after the name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    usage = parser.format_usage()
    return sorted(set(re.findall(rf"{re.escape(parser.prog)} ([a-z][a-z-]*)", usage)))


def options(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Option string -> its choices (empty when free-form), hidden options included."""
    found = {}
    for action in parser._actions:
        for option in action.option_strings:
            found[option] = [str(c) for c in action.choices or ()]
    return found


def page_source() -> str:
    return PAGE.read_text()


def section(name: str) -> str:
    text = page_source()
    match = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH |\Z)", text, re.M | re.S)
    assert match, f"rawsys-trace.8 has no {name} section"
    return match.group(1)


def plain(troff: str) -> str:
    """Roman text of a troff line: font macros dropped, escapes undone."""
    line = re.sub(r"^\.(B|I|BR|RB|BI|IB|IR|RI)\s+", "", troff)
    line = re.sub(r"\\f[BIRP]", "", line).replace("\\-", "-").replace("\\&", "")
    return line.replace('"', "")


def tags(text: str) -> Iterator[tuple[int, str]]:
    """(nesting depth, tag line) of every .TP item; .RS/.RE change the depth."""
    depth = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(".RS"):
            depth += 1
        elif line.startswith(".RE"):
            depth -= 1
        elif line.startswith(".TP") and i + 1 < len(lines):
            yield depth, plain(lines[i + 1])


def option_words(tag: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", tag))


def documented_options() -> set[str]:
    return {o for depth, tag in tags(section("OPTIONS")) if depth == 0 for o in option_words(tag)}


def documented_subcommands() -> dict[str, set[str]]:
    """Subcommand -> the options tagged in its indented block under COMMANDS."""
    found: dict[str, set[str]] = {}
    current = None
    for depth, tag in tags(section("COMMANDS")):
        if depth == 0:
            current = tag.strip()
            found[current] = set()
        elif current is not None:
            found[current] |= option_words(tag)
    return found


def test_every_option_of_the_command_is_in_the_man_page(monkeypatch: pytest.MonkeyPatch) -> None:
    defined = options(parser_of([], monkeypatch))
    assert "--ebpf" in defined and "--pid" in defined
    assert set(defined) == documented_options()


def test_every_subcommand_and_its_options_are_in_the_man_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = subcommands(parser_of([], monkeypatch))
    assert names == ["doctor", "setup"]
    documented = documented_subcommands()
    assert sorted(documented) == names
    for name in names:
        defined = set(options(parser_of([name], monkeypatch))) - {"-h", "--help"}
        assert defined == documented[name], name


def test_choices_and_synopsis_follow_the_parsers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every choice of an option (the backends) is named; SYNOPSIS shows every option
    in its first spelling (``-p``, ``--json``)."""
    synopsis = plain(section("SYNOPSIS").replace("\n", " "))
    text = plain(page_source())
    for argv in ([], ["doctor"], ["setup"]):
        parser = parser_of(argv, monkeypatch)
        for option, choices in options(parser).items():
            for choice in choices:
                assert re.search(rf"\b{re.escape(choice)}\b", text), (option, choice)
        for action in parser._actions:
            if action.option_strings:
                first = action.option_strings[0]
                assert first in synopsis, f"SYNOPSIS lacks {first} of rawsys-trace {argv}"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings() -> None:
    result = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(PAGE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
