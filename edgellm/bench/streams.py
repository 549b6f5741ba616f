"""One stored stream studied: its order-0 entropy, what each codec variant stores, how fast each decodes.

analyze.py runs this over every stream of every tensor; the definitions are in its docstring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..format import codecs
from ..quant import DEFAULT_GROUP

SAMPLE_BYTES = 1 << 20  # raw bytes per tensor stream whose decode is timed


def entropy_bits(counts) -> float:
    """Order-0 (Shannon) entropy in bits per symbol of a histogram."""
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum()
    if n == 0:
        return 0.0
    p = c[c > 0] / n
    return float(max(0.0, -(p * np.log2(p)).sum()))


def unpack_q4(codes: np.ndarray, group: int = DEFAULT_GROUP) -> np.ndarray:
    """q4 codes u8[rows, padded_cols / 2] -> nibbles u8[rows, padded_cols] in element order (0..15)."""
    b = codes.reshape(codes.shape[0], -1, group // 2)
    return np.concatenate([b & 15, b >> 4], axis=2).reshape(codes.shape[0], -1)


def symbol_counts(data: np.ndarray, nibbles: bool, group: int = DEFAULT_GROUP) -> np.ndarray:
    """Histogram of a stream's symbols: 16 nibble values (q4 codes) or 256 byte values."""
    if nibbles:
        return np.bincount(unpack_q4(data, group).ravel(), minlength=16)
    return np.bincount(data.ravel(), minlength=256)


@dataclass(frozen=True)
class Variant:
    name: str
    codec: str
    level: int = 0


def variants(levels) -> list[Variant]:
    return [Variant("raw", "raw"), Variant("lz4", "lz4")] + [Variant(f"zstd-{lv}", "zstd", lv) for lv in levels]


def _u8(a: np.ndarray) -> np.ndarray:
    """A stream as u8[rows, row_bytes]."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).reshape(a.shape[0], -1)


@dataclass
class Part:
    """Sizes and timings of one stream (or of codes + scales, or of a total): everything additive."""

    raw: int = 0
    symbols: int = 0
    bound: float = 0.0  # bytes
    stored: dict = field(default_factory=dict)  # variant -> bytes
    timed: dict = field(default_factory=dict)  # variant -> [bytes decoded, seconds]

    def add(self, o: Part) -> Part:
        self.raw += o.raw
        self.symbols += o.symbols
        self.bound += o.bound
        for k, v in o.stored.items():
            self.stored[k] = self.stored.get(k, 0) + v
        for k, (b, s) in o.timed.items():
            t = self.timed.setdefault(k, [0, 0.0])
            t[0] += b
            t[1] += s
        return self

    def rate(self, v: str) -> float | None:
        b, s = self.timed.get(v, (0, 0.0))
        return b / s / 1e6 if s > 0 else None

    def decode_seconds(self, v: str, cpu_scale: float = 1.0) -> float:
        r = self.rate(v)
        return self.raw / (r * 1e6 * cpu_scale) if r else 0.0

    def to_json(self, weights: int, names, decode_s: dict | None = None) -> dict:
        w = max(weights, 1)
        gain = self.raw - self.bound
        out: dict[str, Any] = {
            "weights": weights,
            "raw_bytes": self.raw,
            "bound_bytes": round(self.bound),
            "bits_per_weight": 8 * self.raw / w,
            "bound_bits_per_weight": 8 * self.bound / w,
            "codecs": {},
        }
        for v in names:
            st = self.stored.get(v, self.raw)
            if decode_s is not None:  # several streams: raw-weighted harmonic mean of their rates
                rate = self.raw / decode_s[v] / 1e6 if decode_s[v] > 0 else None
            else:
                rate = self.rate(v)
            out["codecs"][v] = {
                "stored_bytes": st,
                "ratio": self.raw / max(st, 1),
                "bits_per_weight": 8 * st / w,
                "share": max(0.0, (self.raw - st) / gain) if gain > 1e-9 else None,
                "decode_mb_s": rate,
            }
        return out


class StreamStudy:
    """Histogram, per-variant stored size and a decode sample of one stream, fed in blocks of whole rows."""

    def __init__(self, nibbles: bool, group: int, vs: list[Variant], pool, chunk: int):
        self.nibbles, self.group, self.vs, self.pool, self.chunk = nibbles, group, vs, pool, chunk
        self.hist = np.zeros(16 if nibbles else 256, np.int64)
        self.part = Part()
        self.samples: list[tuple[int, dict]] = []
        self.sampled = 0

    def feed(self, block: np.ndarray) -> None:
        b = _u8(block)
        self.hist += symbol_counts(b, self.nibbles, self.group)
        rows_per = max(1, self.chunk // b.shape[1])
        chunks = [b[i : i + rows_per].tobytes() for i in range(0, b.shape[0], rows_per)]
        jobs = [(c, v) for c in chunks for v in self.vs if v.codec != "raw"]
        # zstandard and lz4 release the GIL: the chunks compress in parallel (level 19 is the slow part)
        enc = iter(self.pool.map(lambda j: codecs.encode(j[0], j[1].codec, j[1].level), jobs))
        for c in chunks:
            n, forms = len(c), {}
            self.part.raw += n
            for v in self.vs:
                e = c if v.codec == "raw" else next(enc)
                form = (v.codec, e) if len(e) < n else ("raw", c)  # the writer's rule: no shrink -> raw
                self.part.stored[v.name] = self.part.stored.get(v.name, 0) + len(form[1])
                forms[v.name] = form
            if self.sampled < SAMPLE_BYTES:
                self.samples.append((n, forms))
                self.sampled += n

    def finish(self) -> Part:
        """The stream's Part, with its entropy bound and the decode of the sample timed."""
        self.part.symbols = int(self.hist.sum())
        self.part.bound = self.part.symbols * entropy_bits(self.hist) / 8
        if self.samples:
            out = memoryview(bytearray(max(n for n, _ in self.samples)))
            for v in self.vs:
                best = float("inf")
                for _ in range(3):
                    t0 = time.perf_counter()
                    for n, forms in self.samples:
                        codecs.decode_into(forms[v.name][1], forms[v.name][0], out[:n])
                    best = min(best, time.perf_counter() - t0)
                self.part.timed[v.name] = [self.sampled, best]
        return self.part
