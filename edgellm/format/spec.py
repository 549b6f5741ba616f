"""Constants and table records of the .ellm format v1 (normative text: formats/SPEC.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import xxhash

from ..quant import QUANTIZED, Layout

MAGIC = b"ELLM"
VERSION_MAJOR = 1
VERSION_MINOR = 0
PREAMBLE = struct.Struct("<4sHHQQ")  # magic, major, minor, header_len, header_xxh3
PREAMBLE_SIZE = PREAMBLE.size  # 24
MAX_HEADER = 64 << 20  # a reader MUST reject a longer JSON header
MAX_CHUNK = 64 << 20  # stored and raw length of one chunk
MIN_ALIGN, MAX_ALIGN = 64, 1 << 20
DEFAULT_ALIGN = 4096
DEFAULT_CHUNK = 256 << 10  # measured: zstd ratio flat from 128 KiB up (tools/bench_codecs.py)
EMBED_CHUNK = 64 << 10  # embedding rows are fetched one token at a time
CODECS = ("raw", "lz4", "zstd")
MAX_DIM = 1 << 31


def checksum(data) -> str:
    """XXH3-64 (seed 0) as 16 lowercase hex digits: ~13 GB/s here and it releases the GIL."""
    return f"{xxhash.xxh3_64_intdigest(data):016x}"


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


@dataclass(frozen=True)
class StoredChunk:
    offset: int  # absolute file offset of the stored bytes, a multiple of the alignment
    length: int  # stored bytes
    raw_offset: int  # where the decoded bytes go inside the tensor's raw bytes
    raw_length: int  # decoded bytes
    codec: str
    checksum: str  # XXH3-64 of the stored bytes

    def to_json(self) -> list:
        return [self.offset, self.length, self.raw_length, self.codec, self.checksum]


@dataclass
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    layout: Layout
    layer: int  # -1 embedding, 0..n_layers-1 blocks, n_layers final norm / head
    chunks: list[StoredChunk] = field(default_factory=list)

    @property
    def stored_bytes(self) -> int:
        return sum(c.length for c in self.chunks)

    @property
    def raw_bytes(self) -> int:
        return self.layout.nbytes

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "stype": self.layout.stype,
            "group": self.layout.group if self.layout.quantized else 0,
            "layer": self.layer,
            "chunks": [c.to_json() for c in self.chunks],
        }


def layout_for(shape: tuple[int, ...], stype: str, group: int) -> Layout:
    """1-D tensors are one row. f32 and f16 have no groups: their layout's group is 0, as the file records it."""
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    return Layout(stype, rows, cols, group if stype in QUANTIZED else 0)


def chunk_ranges(layout: Layout, chunk_size: int) -> list[tuple[int, int]]:
    """(raw_offset, raw_length) of each chunk: whole rows of one stream, about chunk_size bytes each.

    A chunk never straddles the codes and scales streams, so any row range maps to a few chunks.
    """
    out, base = [], 0
    for _name, row_bytes, nbytes in layout.streams():
        rows_per = max(1, chunk_size // row_bytes) if row_bytes else 1
        step = rows_per * row_bytes
        for start in range(0, nbytes, step):
            out.append((base + start, min(step, nbytes - start)))
        base += nbytes
    return out
