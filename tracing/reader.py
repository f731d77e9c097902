"""Read a BPF ring buffer in bulk, from user space, through ``mmap``.

bcc's ``ring_buffer_poll`` calls a Python function for every record; at a
million events a second that call alone is the reader's budget.  The ring is
instead mapped the way libbpf's ``ring_buffer__consume`` maps it
(kernel/bpf/ringbuf.c, ``ringbuf_map_mmap_kern``):

* page 0, read-write: the consumer position (written by the reader only);
* page 1, read-only: the producer position (written by the kernel);
* from page 2, read-only: the data pages, mapped twice in a row so that a
  record that wraps around the end is contiguous.

Each record starts with an 8-byte header: a ``u32`` length whose bit 31 says
*busy* (reserved, not yet submitted) and bit 30 *discarded*, and a ``u32``
page offset; the payload follows, and records are 8-byte aligned.  The reader
walks from the consumer position to the producer position, stops at the first
busy record, copies payloads out and then publishes the new consumer position,
which frees the room for the probes.  Nothing is buffered in Python beyond one
batch: when the reader is slower than the probes, the ring fills and the
probes count what it refused (the session's ``lost``).

On x86-64 (total store order) plain loads suffice.  On weakly ordered CPUs a
payload is read after its header in program order only; the interpreter's own
work between the two loads has been enough in practice, but it is no fence.
"""

from __future__ import annotations

import mmap
import select
import struct

__all__ = ["RingReader"]

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HEADER = 8  # BPF_RINGBUF_HDR_SZ
_POS = struct.Struct("<Q")
_LEN = struct.Struct("<I")


class RingReader:
    """One ``BPF_MAP_TYPE_RINGBUF`` map, read through its fd; :meth:`close` unmaps it."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        page = mmap.PAGESIZE
        if data_size <= 0 or data_size & (data_size - 1) or data_size % page:
            raise ValueError(f"a ring buffer's size is a power-of-two number of pages, "
                             f"got {data_size}")
        self.fd = map_fd
        self.size = data_size
        self._mask = data_size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._data = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        except BaseException:
            self._consumer.close()
            raise
        self._page = page
        # The consumer position is stored with one 8-byte write (a memoryview
        # item), never byte by byte as struct.pack_into does: the probes read
        # it at any moment, and a torn value would make the ring look fuller.
        self._consumer_pos = memoryview(self._consumer).cast("Q")
        self._pos = int(self._consumer_pos[0])

    def fileno(self) -> int:
        """The map's fd: readable (``poll``) when the probes woke the reader."""
        return self.fd

    def pending_bytes(self) -> int:
        """Bytes written by the probes and not yet consumed (records and their headers)."""
        return int(_POS.unpack_from(self._data, 0)[0] - self._pos)

    def read(self, limit: int | None = None, usual_size: int = 0) -> list[bytes]:
        """Up to *limit* submitted records (payloads, copied), oldest first.

        Their room in the ring is handed back to the probes before returning.
        *usual_size*: the payload size of most records; a run of records all
        of that size is checked and cut out at once rather than one by one.
        """
        data = self._data
        producer = _POS.unpack_from(data, 0)[0]
        pos = self._pos
        if pos >= producer:
            return []
        if usual_size and usual_size % 8 == 0:
            out = self._read_usual(pos, producer, limit, usual_size)
            if out:
                return out
        return self._walk(pos, producer, limit)

    def _read_usual(self, pos: int, producer: int, limit: int | None, size: int) -> list[bytes]:
        """Records of *size* bytes from *pos*, if the next ones all have that size; else []."""
        stride = size + _HEADER
        n = (producer - pos) // stride
        if limit is not None:
            n = min(n, limit)
        if n == 0:
            return []
        start = self._page + (pos & self._mask)
        chunk = self._data[start:start + n * stride]  # one copy (the data pages are mapped twice)
        # Every record's length word, at one stride apart, in one comparison:
        # a busy or discarded record, or one of another size, breaks the run.
        words = memoryview(chunk).cast("I")[::stride // 4]
        if words.tobytes() != _LEN.pack(size) * n:
            return []
        out = [chunk[i:i + size] for i in range(_HEADER, n * stride, stride)]
        self._advance(pos + n * stride)
        return out

    def _walk(self, pos: int, producer: int, limit: int | None) -> list[bytes]:
        data = self._data
        out: list[bytes] = []
        append = out.append
        mask = self._mask
        base = self._page + _HEADER
        unpack_len = _LEN.unpack_from
        left = -1 if limit is None else limit
        while pos < producer and left != 0:
            start = base + (pos & mask)
            length = unpack_len(data, start - _HEADER)[0]
            if length & _BUSY:
                break
            if not length & _DISCARD:
                append(data[start:start + length])
                left -= 1
            pos += (length & ~(_BUSY | _DISCARD)) + _HEADER + 7 & ~7
        self._advance(pos)
        return out

    def skip(self, usual_size: int = 0) -> int:
        """Consume every submitted record without reading it; how many there were.

        *usual_size*, as for :meth:`read`: runs of records of that size are
        counted from their length words alone, without a step per record
        (a full ring holds hundreds of thousands; stopping at once skips them).
        """
        data = self._data
        producer = _POS.unpack_from(data, 0)[0]
        pos = self._pos
        mask = self._mask
        base = self._page
        unpack_len = _LEN.unpack_from
        n = 0
        if usual_size and usual_size % 8 == 0:
            stride = usual_size + _HEADER
            word = _LEN.pack(usual_size)
            while True:
                k = min((producer - pos) // stride, self.size // stride)
                if k == 0:
                    break
                start = base + (pos & mask)
                with memoryview(data) as whole:
                    words = whole[start:start + k * stride].cast("I")[::stride // 4].tobytes()
                if words != word * k:
                    break  # another size, busy or discarded: walked one by one below
                pos += k * stride
                n += k
        while pos < producer:
            length = unpack_len(data, base + (pos & mask))[0]
            if length & _BUSY:
                break
            if not length & _DISCARD:
                n += 1
            pos += (length & ~(_BUSY | _DISCARD)) + _HEADER + 7 & ~7
        self._advance(pos)
        return n

    def _advance(self, pos: int) -> None:
        if pos != self._pos:
            self._pos = pos
            self._consumer_pos[0] = pos

    def close(self) -> None:
        """Unmap the ring (the map itself belongs to whoever created it); idempotent."""
        self._consumer_pos.release()
        for m in (self._data, self._consumer):
            if not m.closed:
                m.close()

    @property
    def closed(self) -> bool:
        return self._data.closed


def wait_readable(readers: list[RingReader], timeout: float, extra_fds: tuple[int, ...] = ()
                  ) -> bool:
    """Wait up to *timeout* seconds for a reader's ring to signal data (or an extra fd).

    Returns True when something is readable.  A ring holding records the
    probes did not wake the reader for (they wake it once per batch) is not
    readable: callers read after a timeout anyway.
    """
    p = select.poll()
    for r in readers:
        p.register(r.fileno(), select.POLLIN)
    for fd in extra_fds:
        p.register(fd, select.POLLIN)
    return bool(p.poll(max(0, int(timeout * 1000))))
