"""Storage types: how a weight matrix becomes bytes, and back.

Pure numpy primitives (gpt-fast style): `quantize` turns an f32 matrix into the byte streams the file stores,
`QTensor.dequantize` turns them back. The byte layout is the one the kernels consume straight from the
decompressed layer buffer, so loading never repacks (see formats/SPEC.md, "Storage types").

    f32, f16  row-major [rows, cols]
    q8        codes int8 [rows, padded_cols]      + scales f16 [rows, groups]   w = scale * code
    q4        codes uint8 [rows, padded_cols / 2] + scales f16 [rows, groups]   w = scale * (nibble - 8)
              byte j of a group holds element j in its low nibble and element j + group/2 in its high one.

`padded_cols` rounds cols up to a whole group; the padding codes stand for 0.0. q4 takes its scale from the
signed absolute maximum divided by -8 (llama.cpp Q4_0 style): that uses all 16 levels and measured 13% lower
RMS error than absmax/7 on stories260K at the same size (tools/quant_error.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STORAGE_TYPES = ("f32", "f16", "q8", "q4")
QUANT_CHOICES = ("auto", *STORAGE_TYPES)  # what --quant takes: a storage type, or auto (a GGUF's own types)
QUANTIZED = ("q8", "q4")
DEFAULT_GROUP = 32
GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class Layout:
    """Byte layout of one stored tensor: streams `codes` (always) and `scales` (quantized types)."""

    stype: str
    rows: int
    cols: int
    group: int = DEFAULT_GROUP

    @property
    def quantized(self) -> bool:
        return self.stype in QUANTIZED

    @property
    def groups(self) -> int:
        return -(-self.cols // self.group) if self.quantized else 0

    @property
    def padded_cols(self) -> int:
        return self.groups * self.group if self.quantized else self.cols

    @property
    def code_row_bytes(self) -> int:
        return {"f32": 4 * self.cols, "f16": 2 * self.cols, "q8": self.padded_cols, "q4": self.padded_cols // 2}[
            self.stype
        ]

    @property
    def scale_row_bytes(self) -> int:
        return 2 * self.groups

    @property
    def codes_nbytes(self) -> int:
        return self.rows * self.code_row_bytes

    @property
    def scales_nbytes(self) -> int:
        return self.rows * self.scale_row_bytes

    @property
    def nbytes(self) -> int:
        return self.codes_nbytes + self.scales_nbytes

    def streams(self) -> list[tuple[str, int, int]]:
        """(name, row_bytes, nbytes) of each stream, in file order."""
        out = [("codes", self.code_row_bytes, self.codes_nbytes)]
        if self.quantized:
            out.append(("scales", self.scale_row_bytes, self.scales_nbytes))
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


def quantize(w: np.ndarray, stype: str, group: int = DEFAULT_GROUP) -> list[np.ndarray]:
    """Encode f32[rows, cols] (1-D is one row) as its byte streams: [codes] or [codes, scales]."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 1:
        w = w[None, :]
    if stype == "f32":
        return [np.ascontiguousarray(w)]
    if stype == "f16":
        return [w.astype(np.float16)]
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
        u = (q + 8).astype(np.uint8)
        half = group // 2
        packed = u[..., :half] | (u[..., half:] << 4)
        return [packed.reshape(w.shape[0], -1), scale]
    raise ValueError(f"unknown storage type {stype!r}")


@dataclass
class QTensor:
    """A stored tensor as the kernels see it: views into a (decompressed) buffer, never copies."""

    layout: Layout
    codes: np.ndarray  # f32/f16 [rows, cols] | int8 [rows, pcols] | uint8 [rows, pcols/2]
    scales: np.ndarray | None = None  # f16 [rows, groups] for q8/q4

    @property
    def shape(self) -> tuple[int, int]:
        return (self.layout.rows, self.layout.cols)

    @classmethod
    def from_buffer(cls, layout: Layout, buf) -> QTensor:
        """View `buf` (layout.nbytes bytes: codes then scales) as a QTensor without copying."""
        mv = np.frombuffer(buf, dtype=np.uint8, count=layout.nbytes)
        code_dtype = {"f32": np.float32, "f16": np.float16, "q8": np.int8, "q4": np.uint8}[layout.stype]
        codes = mv[: layout.codes_nbytes].view(code_dtype).reshape(layout.rows, -1)
        scales = None
        if layout.quantized:
            scales = mv[layout.codes_nbytes : layout.nbytes].view(np.float16).reshape(layout.rows, -1)
        return cls(layout, codes, scales)

    @classmethod
    def quantize(cls, w: np.ndarray, stype: str, group: int = DEFAULT_GROUP) -> QTensor:
        w2 = w[None, :] if w.ndim == 1 else w
        streams = quantize(w2, stype, group)
        return cls(Layout(stype, w2.shape[0], w2.shape[1], group), *streams)

    def dequantize(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """f32[rows, cols] (all rows, or the `rows` slice or index array)."""
        lay = self.layout
        sl = rows if rows is not None else slice(None)
        codes = self.codes[sl]
        if lay.stype in ("f32", "f16"):
            return codes.astype(np.float32)
        n = codes.shape[0]
        if lay.stype == "q8":
            q = codes.astype(np.float32).reshape(n, lay.groups, lay.group)
        else:
            b = codes.reshape(n, lay.groups, lay.group // 2)
            q = np.concatenate([b & 15, b >> 4], axis=2).astype(np.float32) - 8.0
        assert self.scales is not None  # q8 and q4 tensors always carry scales
        w = q * self.scales[sl].astype(np.float32)[..., None]
        return w.reshape(n, lay.padded_cols)[:, : lay.cols]

    def to_bytes(self) -> bytes:
        """The raw (uncompressed) bytes as stored: codes then scales."""
        out = np.ascontiguousarray(self.codes).tobytes()
        if self.scales is not None:
            out += np.ascontiguousarray(self.scales).tobytes()
        return out


def error_bound(stype: str) -> float:
    """Documented worst-case |w - dequant(w)| relative to the group's absmax (f16 scale rounding included)."""
    return {"f32": 0.0, "f16": 2.0**-11, "q8": 0.5 / 127 + 2.0**-10, "q4": 1.0 / 8 + 2.0**-9}[stype]
