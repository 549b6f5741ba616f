"""Read an .ellm file. Every offset, length and name in it is treated as hostile until checked.

with EllmFile(path) as f:
    f.config, f.tokenizer, f.tensors["model.norm.weight"]   # header, parsed and validated
    f.read_tensor(name) -> QTensor                           # reads, verifies and decodes its chunks
    f.verify() -> None                                       # reads every chunk and padding byte (below)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..quant import GROUPS_OF, QUANTIZED, STORAGE_TYPES, QTensor
from . import codecs
from .spec import (
    CODECS,
    MAGIC,
    MAX_ALIGN,
    MAX_CHUNK,
    MAX_DIM,
    MAX_HEADER,
    MIN_ALIGN,
    PREAMBLE,
    PREAMBLE_SIZE,
    VERSION_MAJOR,
    StoredChunk,
    TensorEntry,
    align_up,
    checksum,
    layout_for,
)


@dataclass(frozen=True)
class LayerSpan:
    """The contiguous file range holding every chunk of one layer (-1 embedding, n_layers head)."""

    layer: int
    start: int
    end: int
    names: tuple[str, ...]


def _need(cond: object, msg: str) -> None:
    if not cond:
        raise FormatError(msg)


def _int(v, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    _need(type(v) is int and lo <= v <= hi, f"{what}: {v!r} is not an integer in [{lo}, {hi}]")
    return v


def read_header(f, size: int, name: str) -> tuple[dict, int, str]:
    """(header dict, first byte after the header, the header's checksum as 16 hex digits). `f` is a binary file
    of `size` bytes."""
    _need(size >= PREAMBLE_SIZE, f"{name}: truncated: {size} bytes is shorter than the 24-byte preamble")
    magic, major, minor, hlen, hsum = PREAMBLE.unpack(f.read(PREAMBLE_SIZE))
    _need(magic == MAGIC, f"{name}: not an .ellm file (magic {magic!r})")
    _need(
        major == VERSION_MAJOR,
        f"{name}: format version {major}.{minor} is not supported (this reader "
        f"reads {VERSION_MAJOR}.x); upgrade edgellm or re-convert the model",
    )
    _need(hlen <= MAX_HEADER, f"{name}: header length {hlen} exceeds the {MAX_HEADER}-byte limit")
    _need(
        PREAMBLE_SIZE + hlen <= size,
        f"{name}: truncated: header needs {hlen} bytes, file has {size - PREAMBLE_SIZE} after the preamble",
    )
    body = f.read(hlen)
    _need(len(body) == hlen, f"{name}: truncated header")
    _need(checksum(body) == f"{hsum:016x}", f"{name}: header checksum mismatch (file is corrupt)")
    try:
        header = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{name}: header is not valid JSON: {e}") from None
    _need(isinstance(header, dict), f"{name}: header is not a JSON object")
    return header, PREAMBLE_SIZE + hlen, f"{hsum:016x}"


def parse_tensors(header: dict, data_start: int, size: int, name: str) -> list[TensorEntry]:
    """Validate the tensor table against the file size; raise FormatError on the first problem.

    Chunks are packed (formats/SPEC.md, "Byte layout"): each starts at the first aligned offset after the
    previous one (the first: after the header), and the file ends where the last one does."""
    align = _int(header.get("alignment"), f"{name}: alignment", MIN_ALIGN, MAX_ALIGN)
    _need(align & (align - 1) == 0, f"{name}: alignment {align} is not a power of two")
    table = header.get("tensors")
    if not isinstance(table, list):
        raise FormatError(f"{name}: header has no tensor table")
    out, seen, prev_end, prev_layer = [], set(), data_start, -1
    for i, t in enumerate(table):
        _need(isinstance(t, dict) and isinstance(t.get("name"), str), f"{name}: tensor #{i} has no name")
        tn = t["name"]
        where = f"{name}: tensor {tn!r}"
        _need(tn not in seen, f"{where} appears twice")
        seen.add(tn)
        shape = t.get("shape")
        _need(isinstance(shape, list) and len(shape) in (1, 2), f"{where}: shape must be 1-D or 2-D")
        shape = tuple(_int(d, f"{where}: shape", 1, MAX_DIM) for d in shape)
        stype = t.get("stype")
        _need(stype in STORAGE_TYPES, f"{where}: unknown storage type {stype!r}")
        group = t.get("group")
        if stype in QUANTIZED:
            allowed = GROUPS_OF[stype]
            _need(type(group) is int and group in allowed, f"{where}: {stype} group {group!r} not one of {allowed}")
        else:
            _need(type(group) is int and group == 0, f"{where}: group {group!r} for {stype} must be 0")
        layout = layout_for(shape, stype, group)
        layer = _int(t.get("layer"), f"{where}: layer", -1, 1 << 20)
        _need(layer >= prev_layer, f"{where}: layer {layer} stored after layer {prev_layer}")
        prev_layer = layer
        chunks, raw_off, bounds = [], 0, _row_bounds(layout)
        raw_chunks = t.get("chunks")
        _need(isinstance(raw_chunks, list) and raw_chunks, f"{where}: no chunks")
        for j, c in enumerate(raw_chunks):
            cw = f"{where} chunk {j}"
            _need(isinstance(c, list) and len(c) == 5, f"{cw}: malformed entry")
            off = _int(c[0], f"{cw}: offset")
            length = _int(c[1], f"{cw}: length", 0, MAX_CHUNK)
            raw_len = _int(c[2], f"{cw}: raw length", 1, MAX_CHUNK)
            codec, digest = c[3], c[4]
            _need(codec in CODECS, f"{cw}: unknown codec {codec!r}")
            _need(isinstance(digest, str) and len(digest) == 16, f"{cw}: malformed checksum")
            _need(off % align == 0, f"{cw}: offset {off} is not {align}-aligned")
            _need(off >= prev_end, f"{cw}: offset {off} overlaps the header or the previous chunk")
            _need(off + length <= size, f"{cw}: truncated file: chunk ends at {off + length}, file has {size}")
            _need(
                off == align_up(prev_end, align),
                f"{cw}: gap: offset {off} leaves unreferenced bytes after "
                f"{prev_end}; chunks are packed, this one belongs at {align_up(prev_end, align)}",
            )
            _need(codec != "raw" or length == raw_len, f"{cw}: raw chunk with stored {length} != raw {raw_len}")
            _need(raw_off + raw_len in bounds, f"{cw}: does not end on a row boundary")
            chunks.append(StoredChunk(off, length, raw_off, raw_len, codec, digest))
            prev_end, raw_off = off + length, raw_off + raw_len
        _need(raw_off == layout.nbytes, f"{where}: chunks hold {raw_off} bytes, layout needs {layout.nbytes}")
        out.append(TensorEntry(tn, shape, layout, layer, chunks))
    _need(
        size == prev_end,
        f"{name}: {size - prev_end} trailing byte(s) after the last chunk (it ends at {prev_end}, the file at {size})",
    )
    return out


def _row_bounds(layout) -> set[int]:
    """Raw offsets where a chunk may end: any row end of a stream (codes, scales, mins)."""
    bounds: set[int] = set()
    base = 0
    for _n, row_bytes, nbytes in layout.streams():
        bounds.update(range(base + row_bytes, base + nbytes + 1, row_bytes) if row_bytes else ())
        base += nbytes
    return bounds


class EllmFile:
    def __init__(self, path, *, verify: bool = True):
        self.path = Path(path)
        self.verify_checksums = verify
        try:
            self._f = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            raise FormatError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise FormatError(f"{path}: is a directory, not an .ellm file") from None
        except OSError as e:
            raise FormatError(f"{path}: cannot open: {e.strerror}") from None
        try:
            self.size = os.fstat(self._f.fileno()).st_size
            # header_checksum names the file's contents: cluster stages compare theirs with the driver's
            self.header, self.data_start, self.header_checksum = read_header(self._f, self.size, str(self.path))
            self.entries = parse_tensors(self.header, self.data_start, self.size, str(self.path))
            self.tensors = {e.name: e for e in self.entries}
            self._check_meta()
        except BaseException:
            self._f.close()
            raise

    def _check_meta(self):
        cfg = self.header.get("config")
        _need(isinstance(cfg, dict), f"{self.path}: header has no model config")
        tok = self.header.get("tokenizer")
        _need(tok is None or isinstance(tok, dict), f"{self.path}: malformed tokenizer section")

    @property
    def config(self) -> dict:
        return self.header["config"]

    def weight_types(self) -> dict[str, int]:
        """Raw bytes of the 2-D weights by storage type, largest first (one type, unless a GGUF import mixes)."""
        by: dict[str, int] = {}
        for e in self.entries:
            if len(e.shape) == 2:
                by[e.layout.stype] = by.get(e.layout.stype, 0) + e.raw_bytes
        return dict(sorted(by.items(), key=lambda kv: -kv[1]))

    @property
    def tokenizer(self) -> dict | None:
        return self.header.get("tokenizer")

    @property
    def alignment(self) -> int:
        return self.header["alignment"]

    def layer_spans(self) -> list[LayerSpan]:
        spans: dict[int, list[TensorEntry]] = {}
        for e in self.entries:
            spans.setdefault(e.layer, []).append(e)
        return [
            LayerSpan(
                k, v[0].chunks[0].offset, v[-1].chunks[-1].offset + v[-1].chunks[-1].length, tuple(e.name for e in v)
            )
            for k, v in spans.items()
        ]

    def read_stored(self, chunk: StoredChunk, where: str = "") -> bytes:
        data = os.pread(self._f.fileno(), chunk.length, chunk.offset)
        _need(len(data) == chunk.length, f"{self.path}: {where}: truncated chunk at {chunk.offset}")
        if self.verify_checksums:
            _need(
                checksum(data) == chunk.checksum,
                f"{self.path}: checksum mismatch in {where} (chunk at offset {chunk.offset})",
            )
        return data

    def decode_chunk(
        self, entry: TensorEntry, chunk: StoredChunk, stored, out: memoryview, chunk_only: bool = False
    ) -> None:
        """Verify `stored` (when enabled) and decode it into `out`: the tensor's raw buffer, or with
        `chunk_only` a buffer of exactly the chunk's raw length."""
        if self.verify_checksums:
            _need(
                checksum(stored) == chunk.checksum,
                f"{self.path}: checksum mismatch in tensor {entry.name!r} (chunk at {chunk.offset})",
            )
        try:
            dst = out if chunk_only else out[chunk.raw_offset : chunk.raw_offset + chunk.raw_length]
            codecs.decode_into(stored, chunk.codec, dst)
        except FormatError as e:
            raise FormatError(f"{self.path}: tensor {entry.name!r}: {e}") from None

    def read_chunk_into(self, entry: TensorEntry, chunk: StoredChunk, out) -> None:
        """Read one chunk of `entry` and decode it into `out`, a writable buffer of exactly its raw length."""
        stored = os.pread(self._f.fileno(), chunk.length, chunk.offset)
        _need(len(stored) == chunk.length, f"{self.path}: tensor {entry.name!r}: truncated chunk at {chunk.offset}")
        self.decode_chunk(entry, chunk, stored, out, chunk_only=True)

    def read_into(self, name: str, out) -> QTensor:
        """Read tensor `name` into `out` (a writable buffer of at least its raw size); return its view."""
        entry = self.tensors[name]
        mv = memoryview(out).cast("B")
        for c in entry.chunks:
            self.read_chunk_into(entry, c, mv[c.raw_offset : c.raw_offset + c.raw_length])
        return QTensor.from_buffer(entry.layout, mv[: entry.raw_bytes])

    def read_tensor(self, name: str) -> QTensor:
        if name not in self.tensors:
            raise FormatError(f"{self.path}: no tensor named {name!r}")
        return self.read_into(name, np.empty(self.tensors[name].raw_bytes, np.uint8))

    def verify(self) -> None:
        """Read every byte after the header once (opening checked the rest): each padding byte must be zero,
        each chunk must match its checksum (even if opened with verify=False) and decode to its raw length.
        FormatError names the first damaged tensor, or the offset of a non-zero padding byte."""
        pos, scratch = (
            self.data_start,
            bytearray(max((c.raw_length for e in self.entries for c in e.chunks), default=0)),
        )
        for e in self.entries:
            for c in e.chunks:
                span = os.pread(self._f.fileno(), c.offset + c.length - pos, pos)
                _need(len(span) == c.offset + c.length - pos, f"{self.path}: tensor {e.name!r}: truncated chunk")
                pad, stored = span[: c.offset - pos], span[c.offset - pos :]
                first = len(pad) - len(pad.lstrip(b"\0"))  # index of the first non-zero byte
                _need(
                    first == len(pad),
                    f"{self.path}: non-zero padding byte at offset {pos + first} "
                    f"(before tensor {e.name!r}); padding must be zero",
                )
                _need(
                    checksum(stored) == c.checksum,
                    f"{self.path}: tensor {e.name!r} is damaged (checksum mismatch in chunk at offset {c.offset})",
                )
                if c.codec != "raw":
                    try:
                        codecs.decode_into(stored, c.codec, memoryview(scratch)[: c.raw_length])
                    except FormatError as err:
                        raise FormatError(f"{self.path}: tensor {e.name!r}: {err}") from None
                pos = c.offset + c.length

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
