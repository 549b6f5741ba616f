#!/usr/bin/env python3
"""Quantization error of q4/q8 variants on a model's matrices: why `q4` is symmetric, Q4_0-style.

    python tools/quant_error.py [HF_MODEL_DIR]   (default: ../shared/models/stories260K)

For each scheme: relative RMS error (||w - deq(w)|| / ||w||), bits per weight, and the order-0 entropy of
the stored codes (what an entropy coder could reach).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def _groups(w, g):
    k = -(-w.shape[1] // g) * g
    p = np.zeros((w.shape[0], k), np.float32)
    p[:, : w.shape[1]] = w
    return p.reshape(w.shape[0], -1, g)


def scheme(w, name, g):
    x = _groups(w, g)
    if name == "q4 absmax/7":
        s = np.abs(x).max(-1, keepdims=True) / 7
        q = np.clip(np.rint(x / np.where(s == 0, 1, s)), -7, 7)
        return q * s, q + 8, 4 + 16 / g
    if name == "q4 Q4_0 (signed max/-8)":
        m = np.take_along_axis(x, np.abs(x).argmax(-1)[..., None], -1)
        s = m / -8
        q = np.clip(np.rint(x / np.where(s == 0, 1, s)), -8, 7)
        return q * s, q + 8, 4 + 16 / g
    if name == "q4 asymmetric (min, scale)":
        lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
        s = (hi - lo) / 15
        q = np.clip(np.rint((x - lo) / np.where(s == 0, 1, s)), 0, 15)
        return q * s + lo, q, 4 + 32 / g
    s = np.abs(x).max(-1, keepdims=True) / 127
    q = np.clip(np.rint(x / np.where(s == 0, 1, s)), -127, 127)
    return q * s, q + 127, 8 + 16 / g


def entropy(codes):
    p = np.bincount(codes.astype(np.int64).ravel()) / codes.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/models/stories260K"
    mats = [v.astype(np.float32) for v in load_file(str(src / "model.safetensors")).values() if v.ndim == 2]
    print(f"{src}: {len(mats)} matrices, {sum(m.size for m in mats) / 1e6:.2f}M weights")
    print(f"{'scheme':<30} {'group':>5} {'bits/w':>7} {'rel RMS err':>11} {'code entropy':>12}")
    for name in ("q4 absmax/7", "q4 Q4_0 (signed max/-8)", "q4 asymmetric (min, scale)", "q8 absmax/127"):
        for g in (32, 64, 128):
            err = sig = 0.0
            ent, n = 0.0, 0
            for w in mats:
                d, c, bits = scheme(w, name, g)
                d = d.reshape(w.shape[0], -1)[:, : w.shape[1]]
                err += float(((d - w) ** 2).sum())
                sig += float((w**2).sum())
                ent += entropy(c) * c.size
                n += c.size
            print(f"{name:<30} {g:>5} {bits:>7.2f} {np.sqrt(err / sig):>11.4f} {ent / n:>12.3f}")


if __name__ == "__main__":
    main()
