"""Element-wise and attention kernels, Hugging Face semantics (f32 arithmetic throughout; the KV cache may be
stored as f16, widened to f32 as it is read)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..errors import UnsupportedModelError
from .parallel import SMALL_BATCH, claim, is_large, threads
from .pool import share
from .simd import dot8, half


def as_f32(v):
    """A KV cache element as float32: itself for f32, widened from its bits for an f16 cache (u16 view)."""
    raise NotImplementedError("numba only")


@overload(as_f32, inline="always")
def _as_f32(v):
    if v == types.uint16:
        return lambda v: half(v)
    return lambda v: v


# No fastmath in this file: with it LLVM may reorder a sum (or fuse a multiply-add) differently wherever a kernel is
# inlined, and the layer-by-layer pass and kernels/stack.py, which inlines these, must give the same bits. The
# long sums run instead through simd.dot8: LANES partial sums in vector registers, added in a fixed tree.
LANES = 8


@njit(nogil=True, cache=True)
def _rmsnorm_rows(x, weight, eps, out, t0, t1):
    d = x.shape[1]
    for t in range(t0, t1):
        row = x[t]
        ss = np.float32(0.0)  # in order: through simd.dot8 a later pass after a failed one flaked (test_stream)
        for j in range(d):
            ss += row[j] * row[j]
        inv = np.float32(1.0) / np.sqrt(ss / np.float32(d) + np.float32(eps))
        for j in range(d):
            out[t, j] = row[j] * inv * weight[j]


def rmsnorm(x, weight, eps, out, ws) -> None:
    """out[T, D] = x / sqrt(mean(x^2) + eps) * weight, on the calling thread: even a 64-token chunk of a
    2048-wide model takes ~40 us, less than waking other threads would cost."""
    _rmsnorm_rows(x, weight, eps, out, 0, x.shape[0])


@njit(nogil=True, cache=True)
def silu_mul(gate, up, out):
    """out = silu(gate) * up, element-wise over [T, I]."""
    for t in range(gate.shape[0]):
        for j in range(gate.shape[1]):
            out[t, j] = silu_times(gate[t, j], up[t, j])


@njit(nogil=True, cache=True, inline="always")
def silu_times(g, u):
    """silu(g) * u: one element of silu_mul."""
    return g / (np.float32(1.0) + np.exp(-g)) * u


def inv_freq(head_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Rotary frequencies as transformers computes them for default, linear and llama3 scaling."""
    freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    cfg = scaling or {}
    kind = cfg.get("rope_type", cfg.get("type", "default"))
    if kind == "default":
        return freq
    if kind == "linear":
        return freq / float(cfg["factor"])
    if kind == "llama3":
        factor, lo, hi = float(cfg["factor"]), float(cfg["low_freq_factor"]), float(cfg["high_freq_factor"])
        old = float(cfg["original_max_position_embeddings"])
        wavelen = 2 * math.pi / freq
        scaled = np.where(wavelen > old / lo, freq / factor, freq)
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        is_mid = (wavelen >= old / hi) & (wavelen <= old / lo)
        return np.where(is_mid, mid, scaled)
    raise UnsupportedModelError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")


def rope_tables(head_dim: int, max_pos: int, theta: float, scaling: dict | None):
    """(cos, sin), each f32[max_pos, head_dim // 2]."""
    ang = np.arange(max_pos, dtype=np.float64)[:, None] * inv_freq(head_dim, theta, scaling)[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


@njit(nogil=True, cache=True)
def apply_rope(x, positions, cos, sin):
    """Rotate x[T, heads, head_dim] in place: pairs (i, i + head_dim/2), HF's rotate_half convention."""
    half = x.shape[2] // 2
    for t in range(x.shape[0]):
        p = positions[t]
        for h in range(x.shape[1]):
            for i in range(half):
                a, b = x[t, h, i], x[t, h, i + half]
                c, s = cos[p, i], sin[p, i]
                x[t, h, i] = a * c - b * s
                x[t, h, i + half] = b * c + a * s


@njit(nogil=True, cache=True)
def _attention_heads(q, kc, vc, start, out, scores, h0, h1):
    """Heads h0..h1-1 of causal GQA attention (see attention())."""
    t_n, n_heads, hd = q.shape
    heads_per_kv = n_heads // kc.shape[1]
    scale = np.float32(1.0 / np.sqrt(hd))
    whole = hd // LANES * LANES
    for h in range(h0, h1):
        kv = h // heads_per_kv
        sc = scores[h]  # (context,) reused for every query row
        for t in range(t_n):
            n = start + t + 1  # causal: positions 0..start+t
            mx = np.float32(-np.inf)
            qt = q[t, h]
            for p in range(n):
                kp = kc[p, kv]
                acc = dot8(qt, 0, kp, 0, whole)
                for i in range(whole, hd):
                    acc += q[t, h, i] * as_f32(kc[p, kv, i])
                acc *= scale
                sc[p] = acc
                mx = max(mx, acc)
            tot = np.float32(0.0)
            for p in range(n):
                e = np.exp(sc[p] - mx)
                sc[p] = e
                tot += e
            for i in range(hd):
                out[t, h, i] = 0.0
            for p in range(n):
                wgt = sc[p] / tot
                for i in range(hd):
                    out[t, h, i] += wgt * as_f32(vc[p, kv, i])


@njit(parallel=True, nogil=True, cache=True)
def _attention_shared(q, kc, vc, start, out, scores, ctr, nt):
    n_heads = q.shape[1]
    ctr[0] = 0
    for _ in prange(nt):
        while True:  # one head per claim: heads are few and long
            h = claim(ctr, 1)
            if h >= n_heads:
                break
            _attention_heads(q, kc, vc, start, out, scores, h, h + 1)


def attention(q, k_cache, v_cache, start_pos: int, out, ws) -> None:
    """Causal GQA attention of q[T, heads, hd] over the cache rows 0..start_pos+T-1 -> out[T, heads, hd].
    A long context shares heads between threads: decode's one token (or a small batch) on OpenMP, prefill's
    many on the prefill pool (pool.py says why)."""
    t_n, n_heads, hd = q.shape
    if k_cache.dtype == np.float16:  # kernels read an f16 cache through its bits (numba has no float16)
        k_cache, v_cache = k_cache.view(np.uint16), v_cache.view(np.uint16)
    kv_bytes = t_n * n_heads * (start_pos + t_n) * hd * 8  # K and V rows read, summed over queries
    if not is_large(kv_bytes):
        _attention_heads(q, k_cache, v_cache, start_pos, out, ws.scores, 0, n_heads)
    elif t_n <= SMALL_BATCH:  # decode's one token, or a few (speculative verification): OpenMP
        _attention_shared(q, k_cache, v_cache, start_pos, out, ws.scores, ws.claims, threads())
    else:

        def heads(_: int, claims) -> None:
            for h in claims:  # one head per claim: heads are few and long
                if h >= n_heads:
                    return
                _attention_heads(q, k_cache, v_cache, start_pos, out, ws.scores, h, h + 1)

        share(heads, threads())
