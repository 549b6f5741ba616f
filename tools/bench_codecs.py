#!/usr/bin/env python3
"""Codec benchmark over a converted model: stored bytes vs raw and decode MB/s for raw, lz4 and zstd.

    python tools/bench_codecs.py MODEL.ellm [--levels 1,3,9] [--max-mb 256]

Re-encodes every chunk's decoded bytes (up to --max-mb of them, spread over the file) with each codec and
times decompression on one core of this machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgellm.format import EllmFile, codecs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--levels", default="1,3,9")
    ap.add_argument("--max-mb", type=float, default=256)
    a = ap.parse_args()
    with EllmFile(a.model) as f:
        chunks = [(e, c) for e in f.entries for c in e.chunks]
        step = max(1, int(sum(c.raw_length for _, c in chunks) / (a.max_mb * 1e6)))
        raws = []
        for e, c in chunks[::step]:
            buf = np.empty(c.raw_length, np.uint8)
            stored = f.read_stored(c, e.name)
            f.decode_chunk(e, c, stored, memoryview(buf), chunk_only=True)
            kind = "scales" if e.layout.quantized and c.raw_offset >= e.layout.codes_nbytes else "codes"
            raws.append((kind, buf.tobytes()))
        quant = f.header.get("quant", {}).get("type")
    total = sum(len(r) for _, r in raws)
    print(f"{a.model}: {quant}, {len(raws)} chunks, {total / 1e6:,.1f} MB raw sampled")
    print(f"{'codec':<9} {'part':<7} {'ratio':>7} {'encode MB/s':>12} {'decode MB/s':>12}")
    configs = [("raw", 0), ("lz4", 0)] + [("zstd", int(lv)) for lv in a.levels.split(",")]
    for codec, level in configs:
        for part in ("codes", "scales", "all"):
            sel = [r for k, r in raws if part == "all" or k == part]
            if not sel:
                continue
            t0 = time.perf_counter()
            enc = [codecs.encode(r, codec, level or 3) for r in sel]
            t1 = time.perf_counter()
            for r, s in zip(sel, enc):
                codecs.decode_into(s, codec, memoryview(bytearray(len(r))))
            t2 = time.perf_counter()
            raw_b, st_b = sum(map(len, sel)), sum(map(len, enc))
            name = f"{codec}-{level}" if codec == "zstd" else codec
            print(
                f"{name:<9} {part:<7} {raw_b / st_b:>7.4f} {raw_b / 1e6 / (t1 - t0):>12,.0f} "
                f"{raw_b / 1e6 / (t2 - t1):>12,.0f}"
            )


if __name__ == "__main__":
    main()
