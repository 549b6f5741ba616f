"""Storage types: how a weight matrix becomes bytes, and back.

Pure numpy primitives (gpt-fast style): `quantize` turns an f32 matrix into the byte streams the file stores,
`QTensor.dequantize` turns them back. The byte layout is the one the kernels consume straight from the
decompressed layer buffer, so a streamed layer is never repacked (see formats/SPEC.md, "Storage types"); a
pinned matrix is rearranged once, in place, into the tiles' packed layout (QTensor.packed, kernels/lanes.pack).

    f32, f16  row-major [rows, cols]
    q8        codes int8 [rows, padded_cols]      + scales f16 [rows, groups]   w = scale * code
    q4        codes uint8 [rows, padded_cols / 2] + scales f16 [rows, groups]   w = scale * (nibble - 8)
              byte j of a group holds element j in its low nibble and element j + group/2 in its high one.
    q4a       as q4, plus mins f16 [rows, groups]                             w = scale * nibble + min
              asymmetric, group 32 only: GGUF Q4_1 blocks kept exactly (never a --quant choice: q4 stays
              the symmetric type).

`padded_cols` rounds cols up to a whole group; the padding codes stand for 0.0. q4 takes its scale from the
signed absolute maximum divided by -8 (llama.cpp Q4_0 style): that uses all 16 levels and measured 13% lower
RMS error than absmax/7 on stories260K at the same size (tools/quant_error.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

STORAGE_TYPES = ("f32", "f16", "q8", "q4", "q4a")
QUANT_TYPES = ("f32", "f16", "q8", "q4")  # what a converter may be asked for
QUANT_CHOICES = ("auto", *QUANT_TYPES)  # what --quant takes: a storage type, or auto (a GGUF's own types)
QUANTIZED = ("q8", "q4", "q4a")
DEFAULT_GROUP = 32
GROUP_SIZES = (32, 64, 128)
GROUPS_OF = {"q8": GROUP_SIZES, "q4": GROUP_SIZES, "q4a": (32,)}  # the groups each quantized type allows


@dataclass(frozen=True)
class Layout:
    """Byte layout of one stored tensor: streams `codes` (always), `scales` (quantized types), `mins` (q4a).
    Its sizes are computed once (cached_property): the decode loop asks for them hundreds of times a token."""

    stype: str
    rows: int
    cols: int
    group: int = DEFAULT_GROUP

    @cached_property
    def quantized(self) -> bool:
        return self.stype in QUANTIZED

    @cached_property
    def has_mins(self) -> bool:
        return self.stype == "q4a"

    @cached_property
    def code_dtype(self) -> np.dtype:
        return np.dtype({"f32": "f4", "f16": "f2", "q8": "i1", "q4": "u1", "q4a": "u1"}[self.stype])

    @cached_property
    def groups(self) -> int:
        return -(-self.cols // self.group) if self.quantized else 0

    @cached_property
    def padded_cols(self) -> int:
        return self.groups * self.group if self.quantized else self.cols

    @cached_property
    def code_row_bytes(self) -> int:
        pc = self.padded_cols
        return {"f32": 4 * self.cols, "f16": 2 * self.cols, "q8": pc, "q4": pc // 2, "q4a": pc // 2}[self.stype]

    @cached_property
    def scale_row_bytes(self) -> int:
        return 2 * self.groups

    @cached_property
    def codes_nbytes(self) -> int:
        return self.rows * self.code_row_bytes

    @cached_property
    def scales_nbytes(self) -> int:
        return self.rows * self.scale_row_bytes

    @cached_property
    def mins_nbytes(self) -> int:
        return self.scales_nbytes if self.has_mins else 0

    @cached_property
    def nbytes(self) -> int:
        return self.codes_nbytes + self.scales_nbytes + self.mins_nbytes

    def streams(self) -> list[tuple[str, int, int]]:
        """(name, row_bytes, nbytes) of each stream, in file order."""
        out = [("codes", self.code_row_bytes, self.codes_nbytes)]
        if self.quantized:
            out.append(("scales", self.scale_row_bytes, self.scales_nbytes))
        if self.has_mins:
            out.append(("mins", self.scale_row_bytes, self.mins_nbytes))
        return out


def _grouped(w: np.ndarray, group: int) -> np.ndarray:
    """f32[rows, cols] -> f32[rows, groups, group], zero-padded on the right."""
    rows, cols = w.shape
    groups = -(-cols // group)
    if groups * group != cols:
        padded = np.zeros((rows, groups * group), np.float32)
        padded[:, :cols] = w
        w = padded
    return w.reshape(rows, groups, group)


def _pack_nibbles(u: np.ndarray, rows: int) -> np.ndarray:
    """u8[rows, groups, group] of values 0..15 -> u8[rows, padded/2]: byte j holds elements j and j + group/2."""
    half = u.shape[2] // 2
    return (u[..., :half] | (u[..., half:] << 4)).reshape(rows, -1)


def integer_kernels(layout: Layout) -> bool:
    """Whether the integer row tiles (kernels/lanes.py) take this matrix, decode and prefill alike: q8 at any
    group, q4 and q4a at group 32 (a q4 group of 64 or 128 splits its nibbles at group/2, not at 16)."""
    return layout.quantized and (layout.stype != "q4" or layout.group == 32)


def quantize(w: np.ndarray, stype: str, group: int = DEFAULT_GROUP) -> list[np.ndarray]:
    """Encode f32[rows, cols] (1-D is one row) as its byte streams: [codes], [codes, scales] or, for q4a,
    [codes, scales, mins]."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 1:
        w = w[None, :]
    if stype == "f32":
        return [np.ascontiguousarray(w)]
    if stype == "f16":
        return [w.astype(np.float16)]
    if group not in GROUPS_OF.get(stype, (group,)):
        raise ValueError(f"{stype} takes group {' or '.join(map(str, GROUPS_OF[stype]))}, not {group}")
    g = _grouped(w, group)
    if stype == "q8":
        scale = (np.abs(g).max(axis=2) / 127.0).astype(np.float16)
        s = scale.astype(np.float32)[..., None]
        q = np.clip(np.rint(np.divide(g, s, out=np.zeros_like(g), where=s != 0)), -127, 127)
        return [q.astype(np.int8).reshape(w.shape[0], -1), scale]
    if stype == "q4":
        idx = np.abs(g).argmax(axis=2)[..., None]
        scale = (np.take_along_axis(g, idx, axis=2)[..., 0] / -8.0).astype(np.float16)
        s = scale.astype(np.float32)[..., None]
        q = np.clip(np.rint(np.divide(g, s, out=np.zeros_like(g), where=s != 0)), -8, 7)
        return [_pack_nibbles((q + 8).astype(np.uint8), w.shape[0]), scale]
    if stype == "q4a":  # llama.cpp Q4_1's rounding: min and (max - min) / 15 per group
        lo = g.min(axis=2)
        scale = ((g.max(axis=2) - lo) / 15.0).astype(np.float16)
        mins = lo.astype(np.float16)
        s = scale.astype(np.float32)[..., None]
        d = g - mins.astype(np.float32)[..., None]
        q = np.clip(np.rint(np.divide(d, s, out=np.zeros_like(g), where=s != 0)), 0, 15)
        return [_pack_nibbles(q.astype(np.uint8), w.shape[0]), scale, mins]
    raise ValueError(f"unknown storage type {stype!r}")


@dataclass
class QTensor:
    """A stored tensor as the kernels see it: views into a (decompressed) buffer, never copies."""

    layout: Layout
    codes: np.ndarray  # f32/f16 [rows, cols] | int8 [rows, pcols] | uint8 [rows, pcols/2]
    scales: np.ndarray | None = None  # f16 [rows, groups] for q8/q4/q4a
    mins: np.ndarray | None = None  # f16 [rows, groups] for q4a
    # 0: row-major as stored; R: the whole tiles of R rows rearranged in place for the kernels (a pinned matrix,
    # kernels/lanes.pack), the rows past the last whole tile still row-major
    packed: int = field(default=0, kw_only=True)
    # the views the integer kernels pass to numba, made on first use (kernels/matvec.py)
    kernel_args: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.layout.rows, self.layout.cols)

    @classmethod
    def from_buffer(cls, layout: Layout, buf) -> QTensor:
        """View `buf` (layout.nbytes bytes: codes, scales, mins) as a QTensor without copying."""
        mv = np.frombuffer(buf, dtype=np.uint8, count=layout.nbytes)
        codes = mv[: layout.codes_nbytes].view(layout.code_dtype).reshape(layout.rows, -1)
        scales = mins = None
        s0, m0 = layout.codes_nbytes, layout.codes_nbytes + layout.scales_nbytes
        if layout.quantized:
            scales = mv[s0:m0].view(np.float16).reshape(layout.rows, -1)
        if layout.has_mins:
            mins = mv[m0 : layout.nbytes].view(np.float16).reshape(layout.rows, -1)
        return cls(layout, codes, scales, mins)

    @classmethod
    def quantize(cls, w: np.ndarray, stype: str, group: int = DEFAULT_GROUP) -> QTensor:
        w2 = w[None, :] if w.ndim == 1 else w
        streams = quantize(w2, stype, group)
        return cls(Layout(stype, w2.shape[0], w2.shape[1], group), *streams)

    def dequantize(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """f32[rows, cols] (all rows, or the `rows` slice or index array)."""
        lay = self.layout
        sl = rows if rows is not None else slice(None)
        if self.packed:
            return self.row_major(np.arange(lay.rows)[sl]).dequantize()
        codes = self.codes[sl]
        if lay.stype in ("f32", "f16"):
            return codes.astype(np.float32)
        n = codes.shape[0]
        if lay.stype == "q8":
            q = codes.astype(np.float32).reshape(n, lay.groups, lay.group)
        else:
            b = codes.reshape(n, lay.groups, lay.group // 2)
            q = np.concatenate([b & 15, b >> 4], axis=2).astype(np.float32) - (0.0 if lay.has_mins else 8.0)
        assert self.scales is not None  # quantized tensors always carry scales
        w = q * self.scales[sl].astype(np.float32)[..., None]
        if self.mins is not None:
            w += self.mins[sl].astype(np.float32)[..., None]
        return w.reshape(n, lay.padded_cols)[:, : lay.cols]

    def row_major(self, rows: np.ndarray) -> QTensor:
        """Rows `rows` (indices) of a packed matrix as a row-major QTensor (copies): undoes lanes.pack, whose
        tile keeps dword e of its row i at [e][i] and scale group g at [g][i]."""
        lay, r = self.layout, self.packed
        rows = np.asarray(rows, dtype=np.int64)
        if not r:
            pick = [None if a is None else a[rows] for a in (self.codes, self.scales, self.mins)]
            return QTensor(Layout(lay.stype, len(rows), lay.cols, lay.group), *pick)  # type: ignore[arg-type]
        whole = lay.rows // r * r
        tile, i = np.minimum(rows, max(whole - 1, 0)) // r, rows % r
        inside = rows < whole

        def unpack(a: np.ndarray, unit) -> np.ndarray:
            flat = a.view(unit)
            per = flat.shape[1]
            tiles = flat[:whole].reshape(-1, per, r)  # [tile][dword or group][row]
            got = tiles[tile, :, i] if whole else flat[rows]
            return np.where(inside[:, None], got, flat[rows]).view(a.dtype)

        codes = unpack(self.codes, np.uint32)
        scales = None if self.scales is None else unpack(self.scales, np.uint16)
        mins = None if self.mins is None else unpack(self.mins, np.uint16)
        return QTensor(Layout(lay.stype, len(rows), lay.cols, lay.group), codes, scales, mins)

    def to_bytes(self) -> bytes:
        """The raw (uncompressed) bytes as stored: codes then scales."""
        out = np.ascontiguousarray(self.codes).tobytes()
        for extra in (self.scales, self.mins):
            if extra is not None:
                out += np.ascontiguousarray(extra).tobytes()
        return out


def error_bound(stype: str) -> float:
    """Documented worst-case |w - dequant(w)| relative to the group's absmax (f16 scale rounding included);
    q4a: half a step of (max - min) / 15 <= 2 absmax / 15, plus the f16 rounding of min and of 15 scales."""
    bounds = {"f32": 0.0, "f16": 2.0**-11, "q8": 0.5 / 127 + 2.0**-10, "q4": 1.0 / 8 + 2.0**-9, "q4a": 1 / 15 + 2.0**-6}
    return bounds[stype]
