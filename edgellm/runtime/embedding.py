"""Embedding rows on demand: a token's row read from the file, unless the table is pinned (a tied head).

The converter stores the embedding in small chunks (format/spec.py EMBED_CHUNK), so a row costs one small
read: from a raw chunk just the row's bytes, a compressed (or checksummed) one is read and decoded whole.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import EdgeLLMError
from ..format import EllmFile
from ..quant import Layout, QTensor
from .iostats import IOStats
from .units import names_of


def fetch_row(f: EllmFile, row: int, stats: IOStats) -> np.ndarray:
    """float32[hidden]: embedding row `row`, read from its chunks; the bytes read are added to `stats`."""
    e = f.tensors[names_of(f).embed]
    lay = e.layout
    if not 0 <= row < lay.rows:
        raise EdgeLLMError(f"token id {row} is outside the vocabulary")
    parts = []  # (raw offset, bytes, offset in buf): the row's share of each stream (codes, scales, mins)
    base = dst = 0
    for _name, row_bytes, nbytes in lay.streams():
        parts.append((base + row * row_bytes, row_bytes, dst))
        base, dst = base + nbytes, dst + row_bytes
    buf = np.empty(dst, np.uint8)  # (one row of every stream,)
    for raw_off, n, dst in parts:
        c = next(c for c in e.chunks if c.raw_offset <= raw_off < c.raw_offset + c.raw_length)
        inner = raw_off - c.raw_offset
        if c.codec == "raw" and not f.verify_checksums:
            data = os.pread(f.fileno(), n, c.offset + inner)
        else:
            full = np.empty(c.raw_length, np.uint8)
            stored = os.pread(f.fileno(), c.length, c.offset)
            f.decode_chunk(e, c, stored, full.data, chunk_only=True)
            data = full[inner : inner + n].tobytes()
            stats.bytes_read += c.length - n
        stats.bytes_read += n
        buf[dst : dst + n] = np.frombuffer(data, np.uint8)
    one = QTensor.from_buffer(Layout(lay.stype, 1, lay.cols, lay.group), buf)
    return one.dequantize()[0]
