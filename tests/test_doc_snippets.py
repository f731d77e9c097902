"""Every shell command and Python snippet of the user docs runs as pasted.

The documents are ``DOCS``.  A fenced block tagged ``sh`` runs with
``bash -e -o pipefail`` from the repository root; one tagged ``python`` runs
as a script with this interpreter, from the root too.  Blocks without a tag
are output, synopses or listings; ``c`` blocks show the C that the README
ports (the port itself runs here and in ``test_readme.py``).  Any other tag
fails ``test_every_block_has_a_known_tag``.

How a block runs can be said in an HTML comment on the line before it,
``<!-- snippet: ... -->`` (invisible when rendered), ``;``-separated:

``root``
    it needs root (eBPF, apt): skipped, saying so, when not root.  CI runs
    as root, so there it runs.
``venv``
    it runs in a shell with a new virtual environment activated, into which
    ``pip install .`` installed this tree (the Install section's step).
``background``, ``ready=TEXT``
    it runs until interrupted (the tracer): it is started, the next runnable
    block of the same document runs once TEXT has appeared in its output,
    then it gets SIGINT and must exit 0.
``expect=TEXT``
    its standard output must contain TEXT.

Commands never run here are in ``EXCLUDED``, each with the reason; a block
that holds only excluded commands is not collected.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/api.md", "tracing/README.md", "examples/README.md")
RUN_TAGS = ("sh", "python")
NOT_RUN_TAGS = ("", "c")
DIRECTIVES = ("root", "venv", "background", "ready", "expect")

EXCLUDED = {
    "./dev test": "the command that runs this very test (CI's .ci/run is `exec ./dev test`): "
                  "running it from here would recurse",
    "pip install rawsys": "rawsys is not on PyPI yet; the `venv` snippets and "
                          "tests/test_packaging.py run `pip install .` of this tree instead",
}

TIMEOUT = 600  # seconds a block may take (bcc compiles a program on a cold cache)
READY_TIMEOUT = 300


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    tag: str
    code: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def parse(doc: str) -> list[Block]:
    lines = (ROOT / doc).read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"{doc}:{i + 1}: unclosed code block"
        directives: dict[str, str] = {}
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        comment = re.match(r"^<!--\s*snippet:(.*?)-->\s*$", lines[before]) if before >= 0 else None
        if comment:
            for item in filter(None, (x.strip() for x in comment.group(1).split(";"))):
                key, _, value = item.partition("=")
                assert key in DIRECTIVES, f"{doc}:{before + 1}: unknown snippet directive {key!r}"
                directives[key] = value
        blocks.append(Block(doc, i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n",
                            directives))
        i = end + 1
    return blocks


def command_of(line: str) -> str:
    return line.split("#", 1)[0].strip()


def without_excluded(block: Block) -> Block | None:
    """The block minus excluded commands; None if no command is left."""
    if block.tag != "sh":
        return block
    kept = [ln for ln in block.code.splitlines() if command_of(ln) not in EXCLUDED]
    if not any(command_of(ln) for ln in kept):
        return None
    return Block(block.doc, block.line, block.tag, "\n".join(kept) + "\n", block.directives)


ALL_BLOCKS = [b for doc in DOCS for b in parse(doc)]
RUNNABLE = [r for r in (without_excluded(b) for b in ALL_BLOCKS if b.tag in RUN_TAGS) if r]


def next_runnable(block: Block) -> Block:
    later = [b for b in RUNNABLE if b.doc == block.doc and b.line > block.line]
    assert later, f"{block.id}: a background block needs a block after it to run against"
    return later[0]


def environment(block: Block, request: pytest.FixtureRequest) -> tuple[dict[str, str], str]:
    """(environment, python) for the block; skips a root block when not root."""
    if "root" in block.directives and os.geteuid() != 0:
        pytest.skip(f"{block.id} needs root (eBPF, apt); CI runs as root")
    if ".venv/" in block.code and not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip(f"{block.id} uses the .venv that ./dev makes, and there is none here: "
                    "run the tests through ./dev test, as CI does")
    if "venv" in block.directives:
        venv = request.getfixturevalue("installed_venv")
        return venv.env(), str(venv.python)
    return dict(os.environ), sys.executable


def command(block: Block, python: str, tmp_path: Path) -> list[str]:
    if block.tag == "python":
        script = tmp_path / f"snippet-{block.line}.py"
        script.write_text(block.code)
        return [python, str(script)]
    return ["bash", "-e", "-o", "pipefail", "-c", block.code]


def check(block: Block, returncode: int, stdout: str, stderr: str) -> None:
    assert returncode == 0, (
        f"{block.id} exited {returncode}\n--- block\n{block.code}"
        f"--- stdout\n{stdout[-10000:]}\n--- stderr\n{stderr[-10000:]}"
    )
    expect = block.directives.get("expect")
    if expect is not None:
        assert expect in stdout, f"{block.id}: {expect!r} not in its output:\n{stdout[-10000:]}"


def run_block(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    env, python = environment(block, request)
    result = subprocess.run(command(block, python, tmp_path), cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    check(block, result.returncode, result.stdout, result.stderr)


def run_in_background(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    env, python = environment(block, request)
    ready_text = block.directives.get("ready")
    assert ready_text, f"{block.id}: a background block says what output means ready"
    follower = next_runnable(block)
    proc = subprocess.Popen(command(block, python, tmp_path), cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ready = threading.Event()
    output: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(name: str) -> None:
        stream = getattr(proc, name)
        for line in stream:
            output[name].append(line)
            if ready_text in line:
                ready.set()

    pumps = [threading.Thread(target=pump, args=(n,), daemon=True) for n in output]
    for t in pumps:
        t.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.2) and proc.poll() is None and time.monotonic() < deadline:
            pass
        assert ready.is_set(), (
            f"{block.id} never printed {ready_text!r}:\n{''.join(output['stderr'])[-5000:]}"
        )
        run_block(follower, request, tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for t in pumps:
            t.join(timeout=10)
    check(block, proc.returncode, "".join(output["stdout"]), "".join(output["stderr"]))


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_snippet_runs_as_pasted(block: Block, request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    if "background" in block.directives:
        run_in_background(block, request, tmp_path)
    else:
        run_block(block, request, tmp_path)


def test_every_block_has_a_known_tag() -> None:
    unknown = [f"{b.id} ({b.tag})" for b in ALL_BLOCKS if b.tag not in RUN_TAGS + NOT_RUN_TAGS]
    assert unknown == [], "tag these sh, python, c or nothing (output)"


def test_every_document_has_runnable_snippets() -> None:
    for doc in DOCS:
        assert [b for b in RUNNABLE if b.doc == doc], f"{doc}: no runnable snippet found"


def test_untagged_blocks_hold_no_shell_prompt() -> None:
    """A command shown with a prompt in an output block would never be run."""
    for b in ALL_BLOCKS:
        if b.tag == "":
            assert not re.search(r"^(\$|#) \S", b.code, re.M), f"{b.id}: put commands in sh blocks"


def test_every_exclusion_is_still_in_the_docs() -> None:
    commands = {command_of(ln) for b in ALL_BLOCKS if b.tag == "sh" for ln in b.code.splitlines()}
    assert set(EXCLUDED) <= commands, "drop exclusions the docs no longer have"
