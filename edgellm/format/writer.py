"""Write an .ellm file: plan every tensor first, then stream their raw bytes in file order.

The JSON header comes first in the file but its chunk offsets are known only at the end, so the writer
reserves room for the largest header the plan can produce (every number at its widest) and fills it in
last, padded with spaces. Output goes to a temporary file beside the target, renamed only on success.

Interrupted at any moment (Ctrl-C, an error), the target is untouched and the temporary file is gone: it is
removed when the writer fails, and, should a KeyboardInterrupt cut even that short, at interpreter exit. Its
closing and renaming run with SIGINT held, and the rename happens only if no Ctrl-C came in by then.
"""

from __future__ import annotations

import atexit
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..interrupts import held, pending
from . import codecs
from .spec import (
    DEFAULT_ALIGN,
    DEFAULT_CHUNK,
    MAGIC,
    MAX_CHUNK,
    MAX_HEADER,
    PREAMBLE,
    PREAMBLE_SIZE,
    VERSION_MAJOR,
    VERSION_MINOR,
    StoredChunk,
    TensorEntry,
    align_up,
    checksum,
    chunk_ranges,
)

_WIDEST_CHUNK = [10**15, 10**15, MAX_CHUNK, "zstd", "f" * 16]
_unfinished: set[Path] = set()  # temporary files of writers not yet renamed or removed


@atexit.register
def _remove_unfinished() -> None:
    for tmp in list(_unfinished):
        tmp.unlink(missing_ok=True)


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Writer:
    """Usage: `with Writer(path, meta, entries) as w: for each entry in order: w.feed(name, bytes)...`.

    `on_commit`, if given, is called right after the rename, before a Ctrl-C held during it is delivered."""

    def __init__(
        self,
        path,
        meta: dict,
        entries: list[TensorEntry],
        *,
        codec: str = "auto",
        level: int = 3,
        cost: codecs.CostModel | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        chunk_sizes: dict[str, int] | None = None,
        tensor_codecs: dict[str, str] | None = None,
        alignment: int = DEFAULT_ALIGN,
        threads: int = 2,
        on_commit=None,
    ):
        self.path = Path(path)
        self.meta, self.entries = dict(meta), entries
        self.codec, self.level = codec, level
        self.tensor_codecs = tensor_codecs or {}
        self.cost = cost or codecs.CostModel()
        self.alignment = alignment
        self._ranges = {e.name: chunk_ranges(e.layout, (chunk_sizes or {}).get(e.name, chunk_size)) for e in entries}
        self._order = [e.name for e in entries]
        self._by_name = {e.name: e for e in entries}
        self.header_room = len(dumps(self._header(placeholder=True))) + 64
        if self.header_room > MAX_HEADER:
            raise ValueError(f"header would take {self.header_room} bytes, more than {MAX_HEADER}")
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._f = None
        self.on_commit = on_commit
        self._pool = ThreadPoolExecutor(max(1, threads))
        self._inflight: deque = deque()  # futures of (entry, raw_offset, codec, stored) in file order
        self._max_inflight = 2 * max(1, threads)
        self._cur = 0  # index of the tensor being fed
        self._pending = bytearray()  # raw bytes of the current tensor not yet cut into chunks
        self._fed = 0  # raw bytes of the current tensor consumed so far
        self._next_chunk = 0
        self._pos = 0  # next free file offset
        self.raw_total = self.stored_total = 0

    def _header(self, placeholder: bool = False) -> dict:
        tensors = []
        for e in self.entries:
            d = e.to_json()
            if placeholder:
                d["chunks"] = [_WIDEST_CHUNK] * len(self._ranges[e.name])
            tensors.append(d)
        return {**self.meta, "alignment": self.alignment, "tensors": tensors}

    def __enter__(self):
        _unfinished.add(self._tmp)  # before the file exists: a Ctrl-C from here on cannot leave it behind
        try:
            self._f = open(self._tmp, "wb")
            self._pos = align_up(PREAMBLE_SIZE + self.header_room, self.alignment)
        except BaseException:
            self._discard()
            raise
        return self

    def feed(self, name: str, data) -> None:
        """Append raw bytes (its streams in order: codes, scales, mins) of tensor `name`, which must be current."""
        if self._cur >= len(self._order) or self._order[self._cur] != name:
            raise ValueError(f"tensor {name!r} fed out of order")
        data = memoryview(data).cast("B")
        self._pending += data
        self._fed += len(data)
        entry = self._by_name[name]
        if self._fed > entry.raw_bytes:
            raise ValueError(f"tensor {name!r}: got {self._fed} bytes, expected {entry.raw_bytes}")
        ranges = self._ranges[name]
        # Chunks tile the raw bytes from 0 in order, so pending[0] is always the next chunk's first byte.
        while self._next_chunk < len(ranges) and len(self._pending) >= ranges[self._next_chunk][1]:
            raw_off, raw_len = ranges[self._next_chunk]
            piece = bytes(self._pending[:raw_len])
            del self._pending[:raw_len]
            self._submit(entry, raw_off, piece)
            self._next_chunk += 1
        if self._next_chunk == len(ranges):
            if self._fed != entry.raw_bytes:
                raise ValueError(f"tensor {name!r}: got {self._fed} bytes, expected {entry.raw_bytes}")
            self._cur += 1
            self._pending.clear()
            self._fed = self._next_chunk = 0

    def _submit(self, entry, raw_off, piece):
        codec = self.tensor_codecs.get(entry.name, self.codec)
        fut = self._pool.submit(codecs.choose, piece, codec, self.level, self.cost)
        self._inflight.append((entry, raw_off, len(piece), fut))
        while len(self._inflight) > self._max_inflight:
            self._drain_one()

    def _drain_one(self):
        entry, raw_off, raw_len, fut = self._inflight.popleft()
        codec, stored = fut.result()
        self._f.seek(self._pos)
        self._f.write(stored)
        entry.chunks.append(StoredChunk(self._pos, len(stored), raw_off, raw_len, codec, checksum(stored)))
        self._pos = align_up(self._pos + len(stored), self.alignment)
        self.raw_total += raw_len
        self.stored_total += len(stored)

    def _finish(self):
        while self._inflight:
            self._drain_one()
        if self._cur != len(self._order):
            raise ValueError(f"tensor {self._order[self._cur]!r} and later were never written")
        body = dumps(self._header())
        assert len(body) <= self.header_room, "header outgrew its reserved room"
        body += b" " * (self.header_room - len(body))
        self._f.seek(0)
        self._f.write(PREAMBLE.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(body), int(checksum(body), 16)))
        self._f.write(body)
        self._f.flush()
        os.fsync(self._f.fileno())

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._discard()
            return False
        try:
            self._finish()  # the header and fsync: an error or a Ctrl-C here discards the file
        except BaseException:
            self._discard()
            raise
        with held():  # close, then rename or remove: never half of it
            renamed = False
            try:
                self._pool.shutdown(wait=True)
                self._f.close()
                if not pending():  # a Ctrl-C that came in by now wins over the rename
                    os.replace(self._tmp, self.path)
                    renamed = True
            finally:
                if not renamed:
                    self._tmp.unlink(missing_ok=True)
                _unfinished.discard(self._tmp)
            if renamed and self.on_commit is not None:
                self.on_commit()
        return False

    def _discard(self) -> None:
        """Remove the temporary file (idempotent; with SIGINT held, so a second Ctrl-C cannot cut it short)."""
        with held():
            self._pool.shutdown(wait=True, cancel_futures=True)
            if self._f is not None:
                self._f.close()
            self._tmp.unlink(missing_ok=True)
            _unfinished.discard(self._tmp)
