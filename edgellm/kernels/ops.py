"""Element-wise and attention kernels, Hugging Face semantics (f32 arithmetic throughout; the KV cache may be
stored as f16, widened to f32 as it is read)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..errors import UnsupportedModelError
from .parallel import SMALL_BATCH, claim, is_large, threads
from .pool import rows_shared, share
from .rowmath import exp_sum, scale_max, silu_gate
from .simd import dots8, dots_heads, half, wsum, wsum_heads


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
# attention's long sums run instead through simd.dots8 and simd.wsum: LANES-wide vector registers, added in a
# fixed order.
LANES = 8


@njit(nogil=True, cache=True)
def _rmsnorm_rows(x, weight, eps, out, t0, t1):
    d = x.shape[1]
    for t in range(t0, t1):
        row = x[t]
        ss = np.float32(0.0)  # in order
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
def _silu_rows(gate, up, out, t0, t1):
    for t in range(t0, t1):
        silu_gate(gate[t], up[t], out[t], gate.shape[1])


def silu_mul(gate, up, out) -> None:
    """out = silu(gate) * up, element-wise over [T, I] (rowmath.silu_gate); a prefill chunk's rows on the
    prefill pool (SmolLM2, 512 x 1536: 0.8 ms a layer on one thread, 6 ms with a libm exp per element)."""
    t = gate.shape[0]
    n = threads() if t > SMALL_BATCH and is_large(gate.nbytes) else 1
    if n == 1:
        _silu_rows(gate, up, out, 0, t)
    else:
        rows_shared(lambda r0, r1: _silu_rows(gate, up, out, r0, r1), t, n)


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
def _attention_groups(q, kc, vc, start, out, scores, g0, g1):
    """KV groups g0..g1-1 of causal GQA attention (see attention()): each group's query heads together, in
    chunks of 2-4 (_chunk), so a key or value row is read and widened once a chunk rather than once a head;
    head h's scores in scores[h]. Per (head, key) and per lane _attention_rows' arithmetic: the same bits as
    each head alone, as prefill computes it."""
    per = q.shape[1] // kc.shape[1]  # query heads a group
    for g in range(g0, g1):
        h, end = g * per, (g + 1) * per
        while h < end:
            c = 3 if end - h in (5, 6) else min(end - h, 4)  # 5 = 3 + 2, 6 = 3 + 3: no chunk of one
            if c == 1:
                _attention_rows(q, kc, vc, start, out, scores[h], h, 0, q.shape[0])
            else:
                _chunk(q, kc, vc, start, out, scores, h, c)
            h += c


@njit(nogil=True, cache=True)
def _chunk(q, kc, vc, start, out, scores, h0, c):
    """Query heads h0..h0+c-1 (2 <= c <= 4) of one KV group, every query row: simd.dots_heads, softmax a head at
    a time, simd.wsum_heads."""
    n_heads, hd = q.shape[1], q.shape[2]
    kv = h0 // (n_heads // kc.shape[1])
    stride = kc.shape[1] * hd  # elements between one position's key (value) rows and the next's
    flat_k, flat_v, flat_s = kc.reshape(-1), vc.reshape(-1), scores.reshape(-1)
    ctx = scores.shape[1]
    scale = np.float32(1.0 / np.sqrt(hd))
    whole = hd // LANES * LANES
    for t in range(q.shape[0]):
        n = start + t + 1  # causal: positions 0..start+t
        qf, of = q[t].reshape(-1), out[t].reshape(-1)
        if c == 4:
            dots_heads(qf, h0 * hd, hd, flat_k, kv * hd, stride, n, whole, flat_s, h0 * ctx, ctx, 4)
        elif c == 3:
            dots_heads(qf, h0 * hd, hd, flat_k, kv * hd, stride, n, whole, flat_s, h0 * ctx, ctx, 3)
        else:
            dots_heads(qf, h0 * hd, hd, flat_k, kv * hd, stride, n, whole, flat_s, h0 * ctx, ctx, 2)
        for h in range(h0, h0 + c):
            _weights(q, kc, scores[h], t, h, kv, n, whole, scale)
        w0, v0, o0 = h0 * ctx, kv * hd, h0 * hd
        if c == 2:  # 2 heads x 4 vectors of 8 lanes of sums
            for i0 in range(0, hd // 32 * 32, 32):
                wsum_heads(flat_s, w0, ctx, flat_v, v0 + i0, stride, n, of, o0 + i0, hd, 32, 2)
            for i0 in range(hd // 32 * 32, whole, LANES):
                wsum_heads(flat_s, w0, ctx, flat_v, v0 + i0, stride, n, of, o0 + i0, hd, 8, 2)
        elif c == 3:  # 3 heads x 2 vectors
            for i0 in range(0, hd // 16 * 16, 16):
                wsum_heads(flat_s, w0, ctx, flat_v, v0 + i0, stride, n, of, o0 + i0, hd, 16, 3)
            for i0 in range(hd // 16 * 16, whole, LANES):
                wsum_heads(flat_s, w0, ctx, flat_v, v0 + i0, stride, n, of, o0 + i0, hd, 8, 3)
        else:
            for i0 in range(0, hd // 16 * 16, 16):
                wsum_heads(flat_s, w0, ctx, flat_v, v0 + i0, stride, n, of, o0 + i0, hd, 16, 4)
            for i0 in range(hd // 16 * 16, whole, LANES):
                wsum_heads(flat_s, w0, ctx, flat_v, v0 + i0, stride, n, of, o0 + i0, hd, 8, 4)
        for h in range(h0, h0 + c):
            _value_tail(vc, scores[h], out, t, h, kv, n, whole)


@njit(nogil=True, cache=True)
def _attention_rows(q, kc, vc, start, out, sc, h, t0, t1):
    """Query rows t0..t1-1 of head h, their scores in sc (context,): each row's numbers do not depend on which
    rows go with it, so prefill may cut a head's rows between threads."""
    n_heads, hd = q.shape[1], q.shape[2]
    kv = h // (n_heads // kc.shape[1])
    stride = kc.shape[1] * hd  # elements between one position's key (value) rows and the next's
    flat_k, flat_v = kc.reshape(-1), vc.reshape(-1)  # row p of head kv at p * stride + kv * hd
    scale = np.float32(1.0 / np.sqrt(hd))
    whole = hd // LANES * LANES
    for t in range(t0, t1):
        n = start + t + 1  # causal: positions 0..start+t
        qt = q[t, h]
        dots8(qt, 0, flat_k, kv * hd, stride, n, whole, sc)  # sc[p] = dot8(q row, key row p)
        _weights(q, kc, sc, t, h, kv, n, whole, scale)
        row = out[t, h]
        wide = hd // 64 * 64
        for i0 in range(0, wide, 64):
            wsum(sc, flat_v, kv * hd + i0, stride, n, row, i0, 64)
        for i0 in range(wide, whole, LANES):
            wsum(sc, flat_v, kv * hd + i0, stride, n, row, i0, 8)
        _value_tail(vc, sc, out, t, h, kv, n, whole)


@njit(nogil=True, cache=True, inline="always")
def _weights(q, kc, sc, t, h, kv, n, whole, scale):
    """Row t, head h's scores sc[:n] (their first `whole` dims summed by dots8 or dots_heads) into attention
    weights: the last dims of head sizes not a multiple of LANES added in order, then softmax."""
    hd = q.shape[2]
    if whole < hd:
        for p in range(n):
            acc = sc[p]
            for i in range(whole, hd):
                acc += q[t, h, i] * as_f32(kc[p, kv, i])
            sc[p] = acc
    mx = scale_max(sc, n, scale)
    tot = exp_sum(sc, n, mx)
    for p in range(n):
        sc[p] = sc[p] / tot


@njit(nogil=True, cache=True, inline="always")
def _value_tail(vc, sc, out, t, h, kv, n, whole):
    """out[t, h, whole:]: the weighted sums of the value dims past the vector lanes, in p order."""
    for i in range(whole, out.shape[2]):
        acc = np.float32(0.0)
        for p in range(n):
            acc += sc[p] * as_f32(vc[p, kv, i])
        out[t, h, i] = acc


@njit(parallel=True, nogil=True, cache=True)
def _attention_shared(q, kc, vc, start, out, scores, ctr, nt):
    groups = kc.shape[1]
    ctr[0] = 0
    for _ in prange(nt):
        while True:  # one KV group per claim: groups are few and long
            g = claim(ctr, 1)
            if g >= groups:
                break
            _attention_groups(q, kc, vc, start, out, scores, g, g + 1)


def attention(q, k_cache, v_cache, start_pos: int, out, ws) -> None:
    """Causal GQA attention of q[T, heads, hd] over the cache rows 0..start_pos+T-1 -> out[T, heads, hd].
    Decode's one token (or a small batch) takes a KV group's heads together (_attention_groups: SmolLM2's
    9 heads at 1500 positions 1.3x faster on one thread, TinyLlama's 32 1.45x) and a long context shares the
    groups between threads on OpenMP; prefill's many tokens go a head at a time, shared on the prefill pool
    (pool.py says why). The same bits either way."""
    t_n, n_heads, hd = q.shape
    if k_cache.dtype == np.float16:  # kernels read an f16 cache through its bits (numba has no float16)
        k_cache, v_cache = k_cache.view(np.uint16), v_cache.view(np.uint16)
    kv_bytes = t_n * n_heads * (start_pos + t_n) * hd * 8  # K and V rows read, summed over queries
    if not is_large(kv_bytes):
        _attention_groups(q, k_cache, v_cache, start_pos, out, ws.scores, 0, k_cache.shape[1])
    elif t_n <= SMALL_BATCH:  # decode's one token, or a few (speculative verification): OpenMP
        _attention_shared(q, k_cache, v_cache, start_pos, out, ws.scores, ws.claims, threads())
    else:
        _attention_prefill(q, k_cache, v_cache, start_pos, out, ws.scores, threads())


ROW_PARTS = 4  # prefill cuts each head's query rows in this many claims: 9 heads on 2 threads split 5:4,
# 36 claims nearly evenly (SmolLM2)


@njit(nogil=True, cache=True, inline="always")
def row_part(c, n_heads, t):
    """Claim c of ROW_PARTS * n_heads over t query rows: (head, t0, t1), the costlier later rows first (causal:
    row t reads start_pos + t + 1 keys); t0 >= t1 when t leaves that part empty. The prefill pool's claims and
    the stack's (kernels/stack.py) alike."""
    step = -(-t // ROW_PARTS)
    t1 = t - c // n_heads * step
    return c % n_heads, max(0, t1 - step), t1


def _attention_prefill(q, k_cache, v_cache, start_pos: int, out, scores, n: int) -> None:
    """A prefill chunk's attention on the prefill pool, claims of (part of the rows, head) (row_part). Thread i
    keeps its scores in scores[i]."""
    t_n, n_heads = q.shape[0], q.shape[1]
    n = min(n, n_heads)  # scores has a row per head: one per thread

    def work(i: int, items) -> None:
        for c in items:
            if c >= ROW_PARTS * n_heads:
                return
            h, a, b = row_part(c, n_heads, t_n)
            if a < b:
                _attention_rows(q, k_cache, v_cache, start_pos, out, scores[i], h, a, b)

    share(work, n)
