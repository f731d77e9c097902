"""``--json`` output straight from the records the probes write, without an object per event.

``json.dumps(decode_event(r).to_json(), sort_keys=True)`` builds two frozen
objects, three dicts and a list per event and then serialises them: about
15k events/s, a fiftieth of what the fastest fd-passer produces.  The usual
record (one fd, the fixed size ``ONE_FD_SIZE``) is formatted here from one
``struct`` unpack and a template instead, with the parts that repeat from one
event to the next (the command name, the flag list, the file's identity)
rendered once and cached.  Any other record goes the general way.  Both give
the same text, byte for byte (the tests compare them on every kind of record).
"""

from __future__ import annotations

import json

from rawsys.trace.events import (
    EV_FLAG_REF_IS_FILE_REF,
    FD_FLAG_CLOEXEC,
    ONE_FD_SIZE,
    ONE_FD_STRUCT,
    EventKind,
    Syscall,
    _flag_names,
    decode_event,
    file_kind,
    refs_from_raw,
)

__all__ = ["ONE_FD_SIZE", "json_line", "json_lines"]

_ONE = ONE_FD_STRUCT

_CACHE_MAX = 65536  # entries per cache; cleared when full (the output stays the same)
# Whole lines but their timestamp, keyed by the record after its timestamp:
# the same thread passing the same file again and again (a server handing out
# one listening socket, a loop) is formatted once.  About 0.5 KiB an entry.
_LINE_CACHE_MAX = 4096

_EVENT = {int(EventKind.SEND): "send", int(EventKind.RECV): "recv"}
_SYSCALL = {
    int(Syscall.SENDMSG): "sendmsg",
    int(Syscall.SENDMMSG): "sendmmsg",
    int(Syscall.RECVMSG): "recvmsg",
    int(Syscall.RECVMMSG): "recvmmsg",
}


def json_line(record: bytes, backend: str) -> str:
    """One record as the line ``--json`` prints (no newline): the general way."""
    return json.dumps(decode_event(record, backend).to_json(), sort_keys=True)


class _Formatter:
    """Caches of rendered fragments; one per output stream."""

    def __init__(self) -> None:
        self.comm: dict[bytes, str] = {}
        self.flags: dict[tuple[int, int, int], str] = {}
        self.files: dict[tuple[int, int, int, int, bytes, bool], str] = {}
        self.backend: dict[str, str] = {}
        self.line: dict[bytes, str] = {}

    def lines(self, records: list[bytes], backend: str) -> str:
        """Every record as a ``--json`` line, each ending in a newline."""
        out: list[str] = []
        append = out.append
        unpack = _ONE.unpack
        comms, flag_cache, files, line_cache = self.comm, self.flags, self.files, self.line
        from_bytes = int.from_bytes
        b = self.backend.get(backend)
        if b is None:
            b = self.backend[backend] = json.dumps(backend)
        for r in records:
            if len(r) != ONE_FD_SIZE:
                append(json_line(r, backend))
                append("\n")
                continue
            rest = r[8:]
            head = line_cache.get(rest)
            if head is not None:
                append(f"{head}{from_bytes(r[:8], 'little')}}}\n")
                continue
            (ts_ns, ret, pid, tid, comm, sock, call_flags, msg_flags, _controllen, kind,
             syscall, ev_flags, _reason, msg_index, nfds, _seen, _queued, _pad1, _sock_file,
             address, ino, ref_raw, fd, mode, fd_flags, name) = unpack(r)
            event = _EVENT.get(kind)
            call = _SYSCALL.get(syscall)
            if nfds != 1 or event is None or call is None:
                append(json_line(r, backend))  # raises ValueError on malformed data
                append("\n")
                continue
            c = comms.get(comm)
            if c is None:
                if len(comms) >= _CACHE_MAX:
                    comms.clear()
                c = comms[comm] = json.dumps(comm.split(b"\0", 1)[0].decode("utf-8", "replace"))
            fkey = (kind, call_flags, msg_flags)
            fl = flag_cache.get(fkey)
            if fl is None:
                if len(flag_cache) >= _CACHE_MAX:
                    flag_cache.clear()
                fl = flag_cache[fkey] = json.dumps(
                    sorted(_flag_names(EventKind(kind), call_flags, msg_flags)))
            file_ref = bool(ev_flags & EV_FLAG_REF_IS_FILE_REF)
            key = (address, ino, ref_raw, mode, name, file_ref)
            f = files.get(key)
            if f is None:
                if len(files) >= _CACHE_MAX:
                    files.clear()
                f = files[key] = _file_json(address, ino, ref_raw, mode, name, file_ref)
            ok = ret >= 0
            cloexec = "true" if fd_flags & FD_FLAG_CLOEXEC else "false"
            head = (
                f'{{"backend": {b}, "cloexec": [{cloexec}]'
                f', "comm": {c}, "errno": {0 if ok else -ret}, "event": "{event}", "fds": [{fd}]'
                f', "files": [{f}], "flags": {fl}, "msg_index": {msg_index}'
                f', "ok": {"true" if ok else "false"}, "pid": {pid}, "ret": {ret}, "sock": {sock}'
                f', "syscall": "{call}", "tid": {tid}, "timestamp_ns": '
            )
            if len(line_cache) >= _LINE_CACHE_MAX:
                line_cache.clear()
            line_cache[rest] = head
            append(f"{head}{ts_ns}}}\n")
        return "".join(out)


def _file_json(address: int, ino: int, ref_raw: int, mode: int, name: bytes,
               file_ref: bool) -> str:
    """``json.dumps(FileIdentity(...).to_json(), sort_keys=True)``, without the dict."""
    text = name.split(b"\0", 1)[0]
    quoted = json.dumps(text.decode("utf-8", "replace")) if text else '""'
    refs = refs_from_raw(ref_raw, file_ref) if address else 0
    return (f'{{"address": "0x{address:x}", "inode": {ino}, "kind": "{file_kind(mode)}", '
            f'"name": {quoted}, "refcount": {refs}}}')


class JsonLines:
    """Formats batches of records as ``--json`` lines, keeping its caches between batches."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._formatter = _Formatter()

    def __call__(self, records: list[bytes]) -> str:
        return self._formatter.lines(records, self.backend)


def json_lines(records: list[bytes], backend: str = "tracepoint") -> str:
    """Every record as a ``--json`` line ending in a newline (a pure function over bytes)."""
    return _Formatter().lines(records, backend)
