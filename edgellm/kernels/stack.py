"""A run of resident layers in one call: a pass of any number of tokens (decode, verification, a prompt's chunk)
through every pinned layer of a Llama-style model with one numba call and one parallel region.

Layer by layer a decoded token costs ~15 calls from Python and 5 OpenMP regions a layer, and on a small model that
is most of its time: SmolLM2-135M q4's 30 layers (2 MB of weights each) took 7.5 ms a token layer by layer and 4.3
ms through a stack (Zen 3, 2 threads; 104 -> 159 tok/s with the head). Here the threads enter once per token and go
through the layers' phases together, each phase's work claimed from a shared counter (parallel.py's rule: a thread
that starts late finds the work taken, a descheduled thread holds up only what it claimed), a phase starting when
the one before is done:

    A  norm the residual stream, quantize it          (claimed in runs of token rows)
    B  q, k, v row tiles                              (claimed in runs of tiles)
    C  biases, rotate q and k, append k and v         (rows)
    D  attention, a KV group a claim
    E  quantize the attention output                  (rows)
    F  o row tiles
    G  residual, norm, quantize                       (rows)
    H  gate and up row tiles
    I  silu(gate) * up, quantize                      (claimed in runs of groups)
    J  down row tiles; the next layer's A adds it to the residual stream

Prompts go through it too: layer by layer, each of a layer's ~12 steps handed its work to the prefill pool's
Python threads, and on a VM an idle thread takes tens of microseconds to wake; here the threads never sleep
between steps (SmolLM2 q4, 2 threads, Zen 5, alternated in one process: prefill-128 1.4-1.8K -> 2.3-2.9K tok/s,
prefill-512 1.4-1.8K -> 1.6-2.4K; TinyLlama q4 prefill-128 330-395 -> 384-432; the same logits). A prompt goes a
layer a call (models/llama.py), 2% slower than all its layers in one call, so that a Ctrl-C waits for one layer.

Each step is the very function the layer-by-layer path calls (rmsnorm rows, quantize_activation, lanes.row_tiles,
apply_rope, the attention heads, silu_mul), so a token gets the same bits either way: a pinned layer and a
streamed one agree exactly, at any thread count. (Hence no fastmath in ops.py: a reordered sum would differ
between a kernel inlined here and the same kernel called from Python.)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload
from numba.typed import List

from ..quant import QTensor, integer_kernels
from . import lanes
from .matvec import PHASES, _claimed, _lanes_args, quantize_activations, quantize_group
from .ops import ROW_PARTS, _attention_groups, _attention_rows, _rmsnorm_rows, apply_rope, row_part
from .parallel import SMALL_BATCH, TILES_PER_CLAIM, add_at, load_at, relax
from .rowmath import silu_gate
from .simd import half_bits

MATRICES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj")  # fmt: skip
NORMS = ("input_layernorm.weight", "post_attention_layernorm.weight")
Q, K, V, OUT, GATE, UP, DOWN = range(7)
# a matrix in 4 claims, not CLAIMS_PER_MATRIX: SmolLM2 q4 through a stack, 30 layers, 2 threads, same runs: 3.4-3.9
# ms a token against 4.2-4.9 at 16 (longer runs keep the prefetchers streaming; every phase ends in a barrier anyway)
STACK_CLAIMS = 4
GATED_GROUPS = 8  # groups of 32 a claim of the gated phase (I) takes
ROWS_PER_CLAIM = 8  # token rows a claim of a row phase (A, C, E, G) takes


def store(v, like):
    """A KV cache element from an f32 v: itself for an f32 cache, its f16 bits for an f16 one (u16 view; `like`
    is an element of the cache, for its type)."""
    raise NotImplementedError("numba only")


@overload(store, inline="always")
def _store(v, like):
    if like == types.uint16:
        return lambda v, like: half_bits(v)
    return lambda v, like: v


@njit(nogil=True, cache=True, inline="always")
def _done(ctr, p, n):
    add_at(ctr.reshape(-1), 2 * p + 1, n)


@njit(nogil=True, cache=True)
def _wait(ctr, p, total):
    """Until phase p's `total` items are done (by whichever threads took them)."""
    flat = ctr.reshape(-1)
    while load_at(flat, 2 * p + 1) < total:
        relax()


@njit(nogil=True, cache=True)
def _tiles(ctr, p, codes, scales, mins, meta, m, count, xq, xs, xsum, o0, o1, o2, tails):
    """Phase p: the row tiles of up to three matrices m.. of one input (xq, xs, xsum) into o0, o1, o2, claimed in
    runs from their joined range (matvec._claimed splits a run between them, as decode's drivers do); returns once
    all are done."""
    t = xq.shape[0]
    r = lanes.ROWS
    j1, j2 = m + min(count - 1, 1), m + min(count - 1, 2)  # an unused slot repeats a used matrix (never read)
    n0 = -(-codes[m].shape[0] // r)
    n1 = -(-codes[j1].shape[0] // r) if count > 1 else 0
    n2 = -(-codes[j2].shape[0] // r) if count > 2 else 0
    total = n0 + n1 + n2
    step = max(TILES_PER_CLAIM, total // STACK_CLAIMS)
    flat = ctr.reshape(-1)
    while True:
        a = add_at(flat, 2 * p, step)
        if a >= total:
            break
        b = min(a + step, total)
        _claimed(codes[m], scales[m], mins[m], o0, meta[m, 0], meta[m, 1], codes[j1], scales[j1], mins[j1], o1,
                 meta[j1, 0], meta[j1, 1], codes[j2], scales[j2], mins[j2], o2, meta[j2, 0], meta[j2, 1], n0, n1, xq,
                 xs, xsum, tails[:, :t], a, b)  # fmt: skip
        _done(ctr, p, b - a)
    _wait(ctr, p, total)


@njit(nogil=True, cache=True)
def _gated(ctr, p, gate, up, gate_bias, up_bias, padded, xq, xs, xsum):
    """Phase p: gate[T, I] = silu(gate + gate_bias) * (up + up_bias), then quantized per 32 up to `padded` columns
    (the down projection's input), in claims of GATED_GROUPS groups of one token; returns once all are done.
    Element by element the arithmetic of _add, silu_mul and quantize_activation."""
    t, cols = gate.shape
    per = -(-(padded // 32) // GATED_GROUPS)  # claims a token
    total = t * per
    flat = ctr.reshape(-1)
    while True:
        c = add_at(flat, 2 * p, 1)
        if c >= total:
            break
        j, g0 = c // per, c % per * GATED_GROUPS
        g1 = min(g0 + GATED_GROUPS, padded // 32)
        row, urow = gate[j], up[j]
        e0, e1 = g0 * 32, min(g1 * 32, cols)
        if gate_bias.shape[0]:
            for e in range(e0, e1):
                row[e] += gate_bias[e]
        if up_bias.shape[0]:
            for e in range(e0, e1):
                urow[e] += up_bias[e]
        silu_gate(row[e0:e1], urow[e0:e1], row[e0:e1], e1 - e0)
        for g in range(g0, g1):
            quantize_group(row, g, 32, xq[j], xs[j], xsum[j])
        _done(ctr, p, 1)
    _wait(ctr, p, total)


@njit(nogil=True, cache=True, inline="always")
def _add(x, b):
    """x[T, N] += b[N] (b empty: no bias)."""
    if b.shape[0]:
        for t in range(x.shape[0]):
            for j in range(x.shape[1]):
                x[t, j] += b[j]


@njit(nogil=True, cache=True, inline="always")
def _residual(x, y, b):
    """x += y (+ b): y[T, N] a projection's output, b its bias (empty: none)."""
    _add(y, b)
    for t in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[t, j] += y[t, j]


@njit(nogil=True, cache=True, inline="always")
def _rows(ctr, p, t):
    """Phase p's next claim of token rows r0..r1-1 out of t (r0 >= t: none left)."""
    r0 = add_at(ctr.reshape(-1), 2 * p, ROWS_PER_CLAIM)
    return r0, min(r0 + ROWS_PER_CLAIM, t)


@njit(nogil=True, cache=True)
def _attend(ctr, p, q3, kc, vc, start, att3, scores, tid):
    """Phase p, attention: a few tokens claim KV groups (a group's heads share each key row they read); a
    prompt's many claim (part of the rows, head) as the prefill pool does (ops._attention_prefill: SmolLM2's
    3 groups would split 2:1 between 2 threads), the costlier later rows first, thread tid's scores in
    scores[tid] (scores has a row per head). The same bits either way."""
    t, nh, nkv = q3.shape[0], q3.shape[1], kc.shape[1]
    flat = ctr.reshape(-1)
    if t <= SMALL_BATCH:
        total = nkv
        while True:
            g = add_at(flat, 2 * p, 1)
            if g >= nkv:
                break
            _attention_groups(q3, kc, vc, start, att3, scores, g, g + 1)
            _done(ctr, p, 1)
    else:
        total = ROW_PARTS * nh
        while tid < scores.shape[0]:  # a thread past the heads has no scores row of its own: it takes none
            c = add_at(flat, 2 * p, 1)
            if c >= total:
                break
            h, a, b = row_part(c, nh, t)
            if a < b:
                _attention_rows(q3, kc, vc, start, att3, scores[tid], h, a, b)
            _done(ctr, p, 1)
    _wait(ctr, p, total)


@njit(nogil=True, cache=True)
def _work(bufs, kc, vc, cos, sin, positions, start, codes, scales, mins, biases, norms, meta, dims, eps, l0, l1,
          xq, xs, xsum, tails, scores, ctr, tid):  # fmt: skip
    """One thread's share of the stack's layers l0..l1-1 (indices into its lists; kc and vc hold those layers'
    entries only; see the module's phases). The row phases (A, C, E, G) claim token rows: each row's arithmetic
    is its own, so any thread may do any row."""
    x, xb, q, k, v, att, hb, hb2 = bufs
    t = x.shape[0]
    nh, nkv, hd = dims[0], dims[1], dims[2]
    xq, xs, xsum = xq[:t], xs[:t], xsum[:t]
    q3, k3, v3, att3 = q.reshape(t, nh, hd), k.reshape(t, nkv, hd), v.reshape(t, nkv, hd), att.reshape(t, nh, hd)
    p = 0
    for i in range(l0, l1):
        m = 7 * i
        while True:  # A
            r0, r1 = _rows(ctr, p, t)
            if r0 >= t:
                break
            if i > l0:
                _residual(x[r0:r1], xb[r0:r1], biases[m - 1])  # the layer before's down projection
            _rmsnorm_rows(x, norms[2 * i], eps, xb, r0, r1)
            quantize_activations(xb[r0:r1], 32, meta[m + Q, 2], xq[r0:r1], xs[r0:r1], xsum[r0:r1])
            _done(ctr, p, r1 - r0)
        _wait(ctr, p, t)
        p += 1
        _tiles(ctr, p, codes, scales, mins, meta, m + Q, 3, xq, xs, xsum, q, k, v, tails)  # B
        p += 1
        kl, vl = kc[i - l0], vc[i - l0]
        while True:  # C
            r0, r1 = _rows(ctr, p, t)
            if r0 >= t:
                break
            _add(q[r0:r1], biases[m + Q])
            _add(k[r0:r1], biases[m + K])
            _add(v[r0:r1], biases[m + V])
            apply_rope(q3[r0:r1], positions[r0:r1], cos, sin)
            apply_rope(k3[r0:r1], positions[r0:r1], cos, sin)
            for j in range(r0, r1):
                for h in range(nkv):
                    for d in range(hd):
                        kl[start + j, h, d] = store(k3[j, h, d], kl[0, 0, 0])
                        vl[start + j, h, d] = store(v3[j, h, d], vl[0, 0, 0])
            _done(ctr, p, r1 - r0)
        _wait(ctr, p, t)
        p += 1
        _attend(ctr, p, q3, kl, vl, start, att3, scores, tid)  # D
        p += 1
        while True:  # E
            r0, r1 = _rows(ctr, p, t)
            if r0 >= t:
                break
            quantize_activations(att[r0:r1], 32, meta[m + OUT, 2], xq[r0:r1], xs[r0:r1], xsum[r0:r1])
            _done(ctr, p, r1 - r0)
        _wait(ctr, p, t)
        p += 1
        _tiles(ctr, p, codes, scales, mins, meta, m + OUT, 1, xq, xs, xsum, xb, xb, xb, tails)  # F
        p += 1
        while True:  # G
            r0, r1 = _rows(ctr, p, t)
            if r0 >= t:
                break
            _residual(x[r0:r1], xb[r0:r1], biases[m + OUT])
            _rmsnorm_rows(x, norms[2 * i + 1], eps, xb, r0, r1)
            quantize_activations(xb[r0:r1], 32, meta[m + GATE, 2], xq[r0:r1], xs[r0:r1], xsum[r0:r1])
            _done(ctr, p, r1 - r0)
        _wait(ctr, p, t)
        p += 1
        _tiles(ctr, p, codes, scales, mins, meta, m + GATE, 2, xq, xs, xsum, hb, hb2, hb2, tails)  # H
        p += 1
        _gated(ctr, p, hb, hb2, biases[m + GATE], biases[m + UP], meta[m + DOWN, 2], xq, xs, xsum)  # I
        p += 1
        _tiles(ctr, p, codes, scales, mins, meta, m + DOWN, 1, xq, xs, xsum, xb, xb, xb, tails)  # J
        p += 1
    while True:  # the last down projection into the residual stream
        r0, r1 = _rows(ctr, p, t)
        if r0 >= t:
            break
        _residual(x[r0:r1], xb[r0:r1], biases[7 * l1 - 1])
        _done(ctr, p, r1 - r0)
    _wait(ctr, p, t)


@njit(parallel=True, nogil=True, cache=True)
def _run(bufs, kc, vc, cos, sin, positions, start, codes, scales, mins, biases, norms, meta, dims, eps, l0, l1, xq,
         xs, xsum, tails, scores, ctr, nt):  # fmt: skip
    phases = (l1 - l0) * PHASES + 1
    for i in range(phases):  # a plain loop: an array expression would be a parallel region of its own
        ctr[i, 0] = 0
        ctr[i, 1] = 0
    for tid in prange(nt):
        _work(bufs, kc, vc, cos, sin, positions, start, codes, scales, mins, biases, norms, meta, dims, eps, l0, l1,
              xq, xs, xsum, tails, scores, ctr, tid)  # fmt: skip


class Stack:
    """Layers first..end-1, resident, every matrix on the integer tiles: their arrays gathered once (typed lists,
    7 matrices a layer in MATRICES order) for run()."""

    def __init__(self, first: int, layers: list, n_heads: int, n_kv_heads: int, head_dim: int, eps: float):
        self.first, self.end = first, first + len(layers)
        self.codes, self.scales, self.mins, self.biases, self.norms = List(), List(), List(), List(), List()
        meta = []  # per matrix (kind, shift, padded cols of its input)
        no_bias = np.zeros(0, np.float32)
        for w in layers:
            for name in MATRICES:
                t: QTensor = w[f"{name}.weight"]
                c, s, mn, kind, shift = _lanes_args(t)
                self.codes.append(c)
                self.scales.append(s)
                self.mins.append(mn)
                bias = w.get(f"{name}.bias")
                self.biases.append(no_bias if bias is None else np.ascontiguousarray(bias.codes[0], np.float32))
                meta.append((kind, shift, t.layout.padded_cols))
            for name in NORMS:
                self.norms.append(np.ascontiguousarray(w[name].codes[0], np.float32))
        self.meta = np.array(meta, np.int64)  # (7 * layers, 3)
        self.dims = np.array([n_heads, n_kv_heads, head_dim], np.int64)
        self.eps = float(eps)

    @staticmethod
    def fits(layer) -> bool:
        """Whether a layer's weights (a LayerWeights) can go through a stack: every matrix on the integer tiles."""
        return all(integer_kernels(layer[f"{name}.weight"].layout) for name in MATRICES)

    def run(self, bufs: tuple, key_cache, value_cache, cos, sin, positions, start: int, ws, threads: int,
            layers: tuple[int, int] | None = None) -> None:  # fmt: skip
        """Push the T tokens in bufs' x (x, xb, q, k, v, att, hb, hb2: the run state's buffers cut to T rows)
        through the layers (`layers`: a range of them, default first..end), writing their KV rows at start.. of
        key_cache / value_cache, which hold those layers' entries only ([layers, context, n_kv_heads, head_dim]);
        x leaves as the last layer's output."""
        a, b = layers if layers is not None else (self.first, self.end)
        assert self.first <= a < b <= self.end and key_cache.shape[0] == b - a
        if key_cache.dtype == np.float16:  # kernels read and write an f16 cache through its bits
            key_cache, value_cache = key_cache.view(np.uint16), value_cache.view(np.uint16)
        _run(
            bufs, key_cache, value_cache, cos, sin, positions, start, self.codes, self.scales, self.mins, self.biases,
            self.norms, self.meta, self.dims, self.eps, a - self.first, b - self.first, ws.xq, ws.xs, ws.xsum, ws.tail,
            ws.scores, ws.phases, threads,
        )  # fmt: skip
