"""Per-chunk codecs and the rule that picks one.

raw  - the bytes as they are;  lz4 - one LZ4 block (no frame);  zstd - one Zstandard frame.
zstandard and lz4 release the GIL, so chunks decode in parallel threads while numba computes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import lz4.block
import zstandard

from ..errors import FormatError

# Decode speeds of one core of this x86 host in MB/s of output, measured by tools/bench_codecs.py on a
# TinyLlama-shaped q4 file (256 KiB chunks, into a fresh buffer). Scaled by a device's cpu_scale.
HOST_DECODE_MB_S = {"raw": 10000.0, "lz4": 5500.0, "zstd": 740.0}

_local = threading.local()


def _zstd_c(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "zc", None)
    if cache is None:
        cache = _local.zc = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return cache[level]


def _zstd_d() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def encode(data: bytes, codec: str, level: int = 3) -> bytes:
    if codec == "raw":
        return bytes(data)
    if codec == "lz4":
        return lz4.block.compress(data, store_size=False)
    if codec == "zstd":
        return _zstd_c(level).compress(data)
    raise ValueError(f"unknown codec {codec!r}")


def decode_into(stored, codec: str, out: memoryview) -> None:
    """Decode `stored` into `out`, whose length is the chunk's raw length; any mismatch is a FormatError."""
    n = len(out)
    try:
        if codec == "raw":
            if len(stored) != n:
                raise FormatError(f"raw chunk holds {len(stored)} bytes, expected {n}")
            out[:] = stored
            return
        if codec == "lz4":
            data = lz4.block.decompress(stored, uncompressed_size=n)
        elif codec == "zstd":
            data = _zstd_d().decompress(stored, max_output_size=n)
        else:
            raise FormatError(f"unknown codec {codec!r}")
    except (lz4.block.LZ4BlockError, zstandard.ZstdError) as e:
        raise FormatError(f"{codec} chunk does not decode: {e}") from None
    if len(data) != n:
        raise FormatError(f"{codec} chunk decodes to {len(data)} bytes, expected {n}")
    out[:] = data


@dataclass(frozen=True)
class CostModel:
    """Expected time to load a chunk on a device: stored bytes / flash bandwidth + decode time."""

    read_mb_s: float = 60.0  # rpi5-sdcard class flash: the default target of --codec auto
    cpu_scale: float = 0.4  # one device core vs one core of this host

    def seconds(self, stored: int, raw: int, codec: str) -> float:
        decode = raw / (HOST_DECODE_MB_S[codec] * self.cpu_scale * 1e6)
        return stored / (self.read_mb_s * 1e6) + decode

    @classmethod
    def for_device(cls, device) -> CostModel:
        if device is None:
            return cls()
        bw = device.read_mb_s or 750.0  # host: this machine's cold disk (FACTS.md)
        return cls(read_mb_s=bw, cpu_scale=device.cpu_scale or 1.0)


def choose(data: bytes, codec: str, level: int, cost: CostModel) -> tuple[str, bytes]:
    """(codec, stored bytes) for one chunk. `auto` keeps a compressed form only if it loads faster."""
    if codec != "auto":
        stored = encode(data, codec, level)
        # A chunk that does not shrink is stored raw whatever was asked: it must cost nothing to read.
        return (codec, stored) if len(stored) < len(data) or codec == "raw" else ("raw", bytes(data))
    best = ("raw", bytes(data))
    best_t = cost.seconds(len(data), len(data), "raw")
    for c in ("lz4", "zstd"):
        stored = encode(data, c, level)
        t = cost.seconds(len(stored), len(data), c)
        if len(stored) < len(data) and t < best_t:
            best, best_t = (c, stored), t
    return best
