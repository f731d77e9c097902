#!/usr/bin/env python3
"""An asyncio server that hands out open files, over rawsys.aio streams.

The server listens on a Unix stream socket and serves a directory: a client
writes ``OPEN name\\n`` and gets back ``OK name\\n`` with a read-only fd of
that file attached (``writer.write(line, fds=[fd])``), or ``ERR name\\n``
without one.  The server closes its own copy as soon as ``write`` returns:
the kernel holds the file while it is in flight.  Each client reads the line
with ``reader.readline()``, takes the fd that came with it with
``reader.take_fds()``, reads the file through it and closes it.

With asyncio's own streams the same server would lose every fd: a
``StreamReader`` reads with ``recv``, and the kernel drops the fds of a
message read that way without telling anyone.

``-n`` clients run at once in this process against the server; the output
lists, per client, what it asked for and what it read through the fd it
received.  ``--uvloop`` runs on uvloop (when installed).

usage: aio_fd_server.py [--trace] [-n CLIENTS] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from typing import List, Tuple

from _trace import add_trace_argument, traced

import rawsys.aio as aio


async def serve_files(directory: str, reader: aio.FdStreamReader,
                      writer: aio.FdStreamWriter) -> None:
    """One connection: answer each ``OPEN name`` line with the file's fd."""
    async for line in reader:
        name = line.decode().removeprefix("OPEN ").strip()
        path = os.path.join(directory, os.path.basename(name))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            writer.write(f"ERR {name}\n".encode())
        else:
            writer.write(f"OK {name}\n".encode(), fds=[fd])
            os.close(fd)  # safe at once: the kernel (or the writer's duplicate) holds it
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def ask(path: str, name: str) -> Tuple[str, str]:
    """Ask the server at *path* for *name*; return its answer and the text read through the fd."""
    reader, writer = await aio.open_unix_connection(path)
    try:
        writer.write(f"OPEN {name}\n".encode())
        answer = (await reader.readline()).decode().strip()
        fds = reader.take_fds()  # the fds that came with the line just read
        text = ""
        for fd in fds:
            text = os.pread(fd, 1024, 0).decode()
            os.close(fd)
        return answer, text
    finally:
        writer.close()
        await writer.wait_closed()


async def main(clients: int) -> int:
    with tempfile.TemporaryDirectory(prefix="rawsys-aio-") as directory:
        for i in range(clients):
            with open(os.path.join(directory, f"file{i}.txt"), "w") as f:
                f.write(f"contents of file {i}, read through a passed descriptor")
        path = os.path.join(directory, "server.sock")

        async def handle(reader: aio.FdStreamReader, writer: aio.FdStreamWriter) -> None:
            await serve_files(directory, reader, writer)

        async with await aio.start_unix_server(handle, path):
            names = [f"file{i}.txt" for i in range(clients)] + ["missing.txt"]
            results: List[Tuple[str, str]] = await asyncio.gather(
                *[ask(path, name) for name in names])
    failures = 0
    for i, (name, (answer, text)) in enumerate(zip(names, results)):
        print(f"client {i}: OPEN {name} -> {answer}" + (f": {text}" if text else ""))
        expected_ok = name != "missing.txt"
        if answer.startswith("OK") != expected_ok or bool(text) != expected_ok:
            failures += 1
    print(f"{clients} files served through {clients} passed descriptors, "
          f"{failures} failure(s)")
    return 1 if failures else 0


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--clients", type=int, default=4,
                        help="how many clients ask at once (default 4)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    add_trace_argument(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 200:
        parser.error("-n must be between 1 and 200")
    return args


def run(argv: List[str]) -> int:
    args = parse_args(argv)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("aio_fd_server.py: --uvloop needs uvloop (pip install uvloop)",
                  file=sys.stderr)
            return 2
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    with traced(args.trace):
        try:
            return loop.run_until_complete(main(args.clients))
        finally:
            loop.close()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
