"""Weight products: matvec (decode, one token) and matmul (prefill, many tokens), and their fused forms for
several matrices of one input (matvecs, matmuls: q, k, v).

Quantized weights (q8 at any group, q4 and q4a at group 32) go through the integer row tiles of lanes.py:
the activations are quantized to int8 per 32 once per input, then every tile of weight rows is computed for
every token, so decode, a prompt and a speculative verification give a token the same numbers. Threads claim
runs of tiles: decode and small batches (parallel.SMALL_BATCH) in one OpenMP region, longer prompts on the
prefill pool (pool.py). q4 at group 64/128, whose nibbles split at group/2, has its own decode loop; it and
f32/f16 weights prefill by dequantizing blocks of rows to f32 for BLAS, BLAS on each pool thread alone
(blas.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..quant import QTensor, integer_kernels
from . import blas, lanes
from .parallel import CLAIMS_PER_MATRIX, SMALL_BATCH, TILES_PER_CLAIM, claim, is_large, threads
from .parallel import counter as claim_counter
from .pool import rows_shared, share
from .rowmath import quantize_span
from .simd import q4_dot16

with np.errstate(invalid="ignore"):  # widening f16 signalling NaNs raises the invalid flag on aarch64
    F16_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
MAX_SET = 3  # matrices of one input per fused call: q, k, v
PHASES = 10  # a layer's phases in stack.Stack (there: A-J)

MATMUL_BLOCK = 256  # weight rows dequantized at once for prefill (x padded cols f32), all threads


class Workspace:
    """Scratch the kernels write, allocated once per model (no allocation in the decode loop)."""

    def __init__(self, max_rows: int, max_cols: int, n_heads: int, context: int, blas: bool = True, n_layers: int = 0):
        """`blas`: some matrix takes prefill's dequantize + BLAS path (f32, f16, q4 at group 64/128): only then
        are its blocks allocated. `n_layers`: the layers a stack.Stack may run (its phase counters)."""
        pc = -(-max_cols // 128) * 128
        block = MATMUL_BLOCK if blas else 0
        self.xq = np.zeros((max_rows, pc), np.int8)  # (tokens, padded cols) quantized activations
        self.xs = np.zeros((max_rows, pc // 32), np.float32)  # (tokens, groups) activation scales
        self.xsum = np.zeros((max_rows, pc // 32), np.int32)  # (tokens, groups) sums of quantized activations
        self.tail = np.zeros((MAX_SET, max_rows, lanes.ROWS), np.float32)  # (matrices, tokens, tile rows) a
        # last row tile shorter than a whole one, per matrix of a fused set
        self.deq = np.zeros((block, pc), np.float32)  # (block rows, padded cols) dequantized weights
        self.mm = np.zeros((block, max_rows), np.float32)  # (block rows, tokens) product staging
        self.scores = np.zeros((n_heads, context), np.float32)  # (heads, context) attention scores
        self.claims = claim_counter()  # (1,) int64 tiles claimed in a shared kernel
        self.phases = np.zeros(((n_layers + 1) * PHASES, 2), np.int64)  # (phases, claimed / done) stack.Stack's

    @staticmethod
    def nbytes_for(
        max_rows: int, max_cols: int, n_heads: int, context: int, blas: bool = True, n_layers: int = 0
    ) -> int:
        pc = -(-max_cols // 128) * 128
        xq = max_rows * (pc + pc // 32 * 8 + MAX_SET * lanes.ROWS * 4)
        block = MATMUL_BLOCK if blas else 0
        return xq + block * (pc + max_rows) * 4 + n_heads * context * 4 + 8 + (n_layers + 1) * PHASES * 16


@njit(nogil=True, cache=True)
def quantize_activation(x, group, padded, xq, xs, xsum):
    """x[K] -> xq int8[padded] (zero past K), xs[padded/group] scales, xsum[padded/group] code sums; `padded`
    is the weights' padded column count, a multiple of group at least K."""
    for g in range(padded // group):
        quantize_group(x, g, group, xq, xs, xsum)


@njit(nogil=True, cache=True, inline="always")
def quantize_group(x, g, group, xq, xs, xsum):
    """Group g of quantize_activation (kernels/stack.py quantizes groups on several threads)."""
    lo = g * group
    quantize_span(x, lo, min(lo + group, x.shape[0]), lo + group, xq, xs, xsum, g)


@njit(nogil=True, cache=True, fastmath=True)
def _q4_tiles(codes, scales, xq, xs, xsum, table, out, t0, t1):
    """Tiles t0..t1-1 (rows 4t..4t+3) of a q4 product: codes u8[N, P/2], scales u16[N, groups] (f16 bits),
    xq/xs/xsum from quantize_activation; out[N].

    Four rows per tile share each activation load; the integer dot of each 32-weight block runs in
    16-lane i16 SIMD (simd.q4_dot16) and is scaled once per group.
    """
    n, ng = codes.shape[0], scales.shape[1]
    rb = codes.shape[1]
    half = rb // ng
    group = 2 * half
    c = codes.reshape(-1)
    for t in range(t0, t1):
        r0 = 4 * t
        r1, r2, r3 = min(r0 + 1, n - 1), min(r0 + 2, n - 1), min(r0 + 3, n - 1)  # a short tile repeats
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for g in range(ng):
            i0 = i1 = i2 = i3 = 0
            for k in range(0, half, 16):
                xlo = g * group + k
                xhi = xlo + half
                o = g * half + k
                i0 += q4_dot16(c, r0 * rb + o, xq, xlo, xhi)
                i1 += q4_dot16(c, r1 * rb + o, xq, xlo, xhi)
                i2 += q4_dot16(c, r2 * rb + o, xq, xlo, xhi)
                i3 += q4_dot16(c, r3 * rb + o, xq, xlo, xhi)
            f, off = xs[g], 8 * xsum[g]  # nibble v stands for v - 8
            a0 += table[scales[r0, g]] * f * np.float32(i0 - off)
            a1 += table[scales[r1, g]] * f * np.float32(i1 - off)
            a2 += table[scales[r2, g]] * f * np.float32(i2 - off)
            a3 += table[scales[r3, g]] * f * np.float32(i3 - off)
        out[r0] = a0
        out[r1] = a1
        out[r2] = a2
        out[r3] = a3


@njit(nogil=True, cache=True, fastmath=True)
def _f32_rows(w, x, out, t0, t1):
    """Rows 4t0..4t1-1 of an f32 product (tiles of 4 rows, as the quantized kernels)."""
    for r in range(4 * t0, min(4 * t1, w.shape[0])):
        acc = np.float32(0.0)
        for j in range(w.shape[1]):
            acc += w[r, j] * x[j]
        out[r] = acc


@njit(nogil=True, cache=True, fastmath=True)
def _f16_rows(w, x, table, out, t0, t1):
    """Rows 4t0..4t1-1 of an f16 product; w u16[N, K] (f16 bits)."""
    for r in range(4 * t0, min(4 * t1, w.shape[0])):
        acc = np.float32(0.0)
        for j in range(w.shape[1]):
            acc += table[w[r, j]] * x[j]
        out[r] = acc


# Shared drivers: one task per thread, each claiming TILES_PER_CLAIM tiles at a time (see parallel.py).
# A driver per kernel because numba compiles a parallel region per call site.
@njit(nogil=True, cache=True, inline="always")
def _claimed(c0, s0, m0, o0, k0, h0, c1, s1, m1, o1, k1, h1, c2, s2, m2, o2, k2, h2, n0, n1, xq, xs, xsum, tails, a, b):
    """Tiles a..b-1 of the joined tile range of up to three matrices (n0, n1 tiles in the first two). One call
    site of row_tiles, in a loop: LLVM may inline row_tiles (its 18 tile kernels) at every site, and each caller
    up to the parallel region optimizes again what it links in, so every site costs compile time."""
    cs, ss, ms, dsts = (c0, c1, c2), (s0, s1, s2), (m0, m1, m2), (o0, o1, o2)
    ks, hs = (k0, k1, k2), (h0, h1, h2)
    first, last = (0, n0, n0 + n1), (n0, n0 + n1, 1 << 62)  # matrix j's tiles in the joined range
    for j in range(3):
        lo, hi = max(a, first[j]), min(b, last[j])
        if lo < hi:
            a0, b0 = lo - first[j], hi - first[j]
            lanes.row_tiles(cs[j], ss[j], ms[j], xq, xs, xsum, dsts[j], tails[j], ks[j], hs[j], a0, b0)


@njit(parallel=True, nogil=True, cache=True)
def _lanes_shared(
    c0, s0, m0, o0, k0, h0, c1, s1, m1, o1, k1, h1, c2, s2, m2, o2, k2, h2, count, xq, xs, xsum, tails, ctr, nt
):
    """Up to three matrices of one input (count: how many; unused slots repeat the first) in one parallel
    region: the threads claim runs of row tiles from their joined range."""
    r = lanes.ROWS
    n0 = -(-c0.shape[0] // r)
    n1 = -(-c1.shape[0] // r) if count > 1 else 0
    n2 = -(-c2.shape[0] // r) if count > 2 else 0
    total = n0 + n1 + n2
    step = max(TILES_PER_CLAIM, total // CLAIMS_PER_MATRIX)
    ctr[0] = 0
    for _ in prange(nt):
        while True:
            t0 = claim(ctr, step)
            if t0 >= total:
                break
            t1 = min(t0 + step, total)
            _claimed(
                c0, s0, m0, o0, k0, h0, c1, s1, m1, o1, k1, h1, c2, s2, m2, o2, k2, h2, n0, n1, xq, xs, xsum, tails,
                t0, t1,
            )  # fmt: skip


@njit(nogil=True, cache=True)
def quantize_activations(x, group, padded, xq, xs, xsum):
    """quantize_activation for each row of x[T, K] into rows of xq, xs, xsum."""
    for t in range(x.shape[0]):
        quantize_activation(x[t], group, padded, xq[t], xs[t], xsum[t])


@njit(parallel=True, nogil=True, cache=True)
def _q4_shared(codes, scales, xq, xs, xsum, table, out, ctr, nt):
    n_tiles = -(-codes.shape[0] // 4)
    step = max(TILES_PER_CLAIM, n_tiles // CLAIMS_PER_MATRIX)
    ctr[0] = 0
    for _ in prange(nt):
        while True:
            t0 = claim(ctr, step)
            if t0 >= n_tiles:
                break
            _q4_tiles(codes, scales, xq, xs, xsum, table, out, t0, min(t0 + step, n_tiles))


@njit(parallel=True, nogil=True, cache=True)
def _f32_shared(w, x, out, ctr, nt):
    n_tiles = -(-w.shape[0] // 4)
    step = max(TILES_PER_CLAIM, n_tiles // CLAIMS_PER_MATRIX)
    ctr[0] = 0
    for _ in prange(nt):
        while True:
            t0 = claim(ctr, step)
            if t0 >= n_tiles:
                break
            _f32_rows(w, x, out, t0, min(t0 + step, n_tiles))


@njit(parallel=True, nogil=True, cache=True)
def _f16_shared(w, x, table, out, ctr, nt):
    n_tiles = -(-w.shape[0] // 4)
    step = max(TILES_PER_CLAIM, n_tiles // CLAIMS_PER_MATRIX)
    ctr[0] = 0
    for _ in prange(nt):
        while True:
            t0 = claim(ctr, step)
            if t0 >= n_tiles:
                break
            _f16_rows(w, x, table, out, t0, min(t0 + step, n_tiles))


def _lanes_args(w: QTensor) -> tuple:
    """(codes as bytes, scale bits, min bits, kind, shift) as the numba drivers take a matrix; made once per
    tensor (the views cost more than a small matrix's product)."""
    if w.kernel_args is None:
        assert w.scales is not None  # quantized tensors always carry scales
        sc = w.scales.view(np.uint16)
        mins = sc if w.mins is None else w.mins.view(np.uint16)  # read by the q4a tiles only
        shift = (w.layout.group // 32).bit_length() - 1  # a weight group spans 1 << shift blocks of 32
        kind = lanes.KIND[w.layout.stype]
        if w.packed:
            assert w.packed == lanes.ROWS, "packed for this host's tiles"
            kind += lanes.PACKED
        w.kernel_args = (w.codes.view(np.uint8), sc, mins, kind, shift)
    return w.kernel_args


def _tiles_of(weights, outs, t: int, ws: Workspace) -> None:
    """outs[i][:t] for up to MAX_SET in-lanes matrices from the workspace's first t quantized activations:
    on the calling thread or, when large, all in one parallel region."""
    xq, xs, xsum = ws.xq[:t], ws.xs[:t], ws.xsum[:t]
    args = [_lanes_args(w) for w in weights]
    if not is_large(sum(w.codes.nbytes for w in weights) * t):
        for i, ((c, s, m, kind, shift), o) in enumerate(zip(args, outs)):
            tiles = -(-c.shape[0] // lanes.ROWS)
            lanes.row_tiles(c, s, m, xq, xs, xsum, o, ws.tail[i, :t], kind, shift, 0, tiles)
        return
    n = len(args)
    while len(args) < MAX_SET:  # an unused slot repeats the first matrix
        args, outs = [*args, args[0]], [*outs, outs[0]]
    (c0, s0, m0, k0, h0), (c1, s1, m1, k1, h1), (c2, s2, m2, k2, h2) = args
    o0, o1, o2 = outs
    _lanes_shared(
        c0, s0, m0, o0, k0, h0, c1, s1, m1, o1, k1, h1, c2, s2, m2, o2, k2, h2, n, xq, xs, xsum, ws.tail[:, :t],
        ws.claims, threads(),
    )  # fmt: skip


def matvecs(weights, x: np.ndarray, outs, ws: Workspace) -> None:
    """outs[i][N_i] = W_i @ x[K] for up to MAX_SET matrices of one input (q, k, v): in-lanes matrices share
    one quantization of x and one parallel region; the others go one by one."""
    fused = [(w, o.reshape(1, -1)) for w, o in zip(weights, outs) if integer_kernels(w.layout)]
    for w, o in zip(weights, outs):
        if not integer_kernels(w.layout):
            matvec(w, x, o, ws)
    if fused:
        quantize_activation(x, 32, fused[0][0].layout.padded_cols, ws.xq[0], ws.xs[0], ws.xsum[0])
        _tiles_of([w for w, _ in fused], [o for _, o in fused], 1, ws)


def matvec(w: QTensor, x: np.ndarray, out: np.ndarray, ws: Workspace) -> None:
    """out[N] = W[N, K] @ x[K]. A small matrix runs on the calling thread, a large one on shared tiles. The
    choice depends on the matrix alone, never on the thread count, and shared tiles give the same bits at any
    count: a pass may change its count (ThreadTuner) without changing its result."""
    if integer_kernels(w.layout):
        quantize_activation(x, 32, w.layout.padded_cols, ws.xq[0], ws.xs[0], ws.xsum[0])
        _tiles_of([w], [out.reshape(1, -1)], 1, ws)
        return
    st = w.layout.stype
    shared = is_large(w.codes.nbytes)
    nt = threads() if shared else 1  # numba's count costs ~3 us to ask for: only where it is used
    tiles = -(-w.layout.rows // 4)
    if st == "q4":  # group 64 / 128: a group's nibbles split at group/2, its own loop
        assert w.scales is not None
        sc, pc = w.scales.view(np.uint16), w.layout.padded_cols
        xq = ws.xq[0, :pc]
        quantize_activation(x, w.layout.group, pc, xq, ws.xs[0], ws.xsum[0])
        if shared:
            _q4_shared(w.codes, sc, xq, ws.xs[0], ws.xsum[0], F16_TABLE, out, ws.claims, nt)
        else:
            _q4_tiles(w.codes, sc, xq, ws.xs[0], ws.xsum[0], F16_TABLE, out, 0, tiles)
    elif st == "f32":
        if shared:
            _f32_shared(w.codes, x, out, ws.claims, nt)
        else:
            _f32_rows(w.codes, x, out, 0, tiles)
    elif shared:
        _f16_shared(w.codes.view(np.uint16), x, F16_TABLE, out, ws.claims, nt)
    else:
        _f16_rows(w.codes.view(np.uint16), x, F16_TABLE, out, 0, tiles)


@njit(nogil=True, cache=True, fastmath=True)
def _dequant_q4(codes, scales, table, r0, out):
    """Rows r0.. of a q4 matrix into out[rows, P] (f32). Literal 16-byte blocks so the loop vectorizes."""
    ng = scales.shape[1]
    half = codes.shape[1] // ng
    for i in range(out.shape[0]):
        crow, srow, orow = codes[r0 + i], scales[r0 + i], out[i]
        for g in range(ng):
            sc = table[srow[g]]
            for k in range(0, half, 16):
                cb = crow[g * half + k : g * half + k + 16]
                lo = orow[2 * g * half + k : 2 * g * half + k + 16]
                hi = orow[2 * g * half + half + k : 2 * g * half + half + k + 16]
                for j in range(16):
                    b = np.int32(cb[j])
                    lo[j] = sc * np.float32((b & 15) - 8)
                    hi[j] = sc * np.float32((b >> 4) - 8)


@njit(nogil=True, cache=True, fastmath=True)
def _dequant_q4a(codes, scales, mins, table, r0, out):
    """Rows r0.. of a q4a matrix (group 32) into out[rows, P] (f32): scale * nibble + min."""
    ng = scales.shape[1]
    for i in range(out.shape[0]):
        crow, srow, mrow, orow = codes[r0 + i], scales[r0 + i], mins[r0 + i], out[i]
        for g in range(ng):
            sc, mn = table[srow[g]], table[mrow[g]]
            cb = crow[16 * g : 16 * g + 16]
            lo = orow[32 * g : 32 * g + 16]
            hi = orow[32 * g + 16 : 32 * g + 32]
            for j in range(16):
                b = np.int32(cb[j])
                lo[j] = sc * np.float32(b & 15) + mn
                hi[j] = sc * np.float32(b >> 4) + mn


@njit(nogil=True, cache=True, fastmath=True)
def _dequant_q8(codes, scales, table, r0, out):
    ng = scales.shape[1]
    group = codes.shape[1] // ng
    for i in range(out.shape[0]):
        crow, srow, orow = codes[r0 + i], scales[r0 + i], out[i]
        for g in range(ng):
            sc = table[srow[g]]
            cb = crow[g * group : (g + 1) * group]
            ob = orow[g * group : (g + 1) * group]
            for j in range(group):
                ob[j] = sc * np.float32(cb[j])


def _matmul_rows(w: QTensor, x: np.ndarray, out: np.ndarray, deq: np.ndarray, mm: np.ndarray, blocks) -> None:
    """Blocks of W's rows claimed from `blocks` (a shared counter) until none are left: dequantize into
    deq[block, P], then out[:, rows] = x @ deq.T."""
    lay = w.layout
    k, block, t = lay.cols, deq.shape[0], x.shape[0]
    for b in blocks:
        r0 = b * block
        if r0 >= lay.rows:
            return
        rows = min(block, lay.rows - r0)
        if lay.stype == "f32":
            d = w.codes[r0 : r0 + rows]
        else:
            d = deq[:rows]
            if lay.stype == "q4":
                assert w.scales is not None  # quantized tensors always carry scales
                _dequant_q4(w.codes, w.scales.view(np.uint16), F16_TABLE, r0, d)
            elif lay.stype == "q4a":
                assert w.scales is not None and w.mins is not None
                _dequant_q4a(w.codes, w.scales.view(np.uint16), w.mins.view(np.uint16), F16_TABLE, r0, d)
            elif lay.stype == "q8":
                assert w.scales is not None
                _dequant_q8(w.codes, w.scales.view(np.uint16), F16_TABLE, r0, d)
            else:
                d[:, :k] = w.codes[r0 : r0 + rows]
        res = mm[:rows, :t]
        np.dot(d[:, :k], x.T, out=res)  # contiguous result; BLAS refuses a strided `out`
        out[:, r0 : r0 + rows] = res.T


def matmul(w: QTensor, x: np.ndarray, out: np.ndarray, ws: Workspace) -> None:
    """out[T, N] = x[T, K] @ W[N, K].T for many tokens (prefill).

    Quantized weights (but q4 at group 64/128): the activations are quantized per 32 once, then the prefill
    threads claim row tiles, each computed for every token (lanes.row_tiles: a token's numbers are the ones
    decode gives it). Other weights: the threads claim blocks of rows to dequantize and hand to BLAS. Both
    through the prefill pool (pool.py)."""
    if integer_kernels(w.layout):
        matmuls([w], x, [out], ws)
        return
    pc, t = w.layout.padded_cols, x.shape[0]
    n = threads() if is_large(w.layout.rows * pc * 4) else 1
    block = max(1, min(-(-w.layout.rows // (4 * n)), ws.deq.size // (n * pc), ws.mm.size // (n * t)))
    deq = ws.deq.reshape(-1)[: n * block * pc].reshape(n, block, pc)  # (threads, block rows, padded cols)
    mm = ws.mm.reshape(-1)[: n * block * t].reshape(n, block, t)  # (threads, block rows, tokens)
    with blas.one_thread():
        share(lambda i, blocks: _matmul_rows(w, x, out, deq[i], mm[i], blocks), n)


def matmuls(weights, x: np.ndarray, outs, ws: Workspace) -> None:
    """outs[i][T, N_i] = x[T, K] @ W_i.T for up to MAX_SET matrices of one input (prefill): in-lanes matrices
    share one quantization of x and one run of the prefill pool, whose threads claim runs of row tiles from
    all of them."""
    fused = [(w, o) for w, o in zip(weights, outs) if integer_kernels(w.layout)]
    for w, o in zip(weights, outs):
        if not integer_kernels(w.layout):
            matmul(w, x, o, ws)
    if not fused:
        return
    t = x.shape[0]
    xq, xs, xsum = ws.xq[:t], ws.xs[:t], ws.xsum[:t]
    padded = fused[0][0].layout.padded_cols
    if t <= SMALL_BATCH:  # decode's drivers: an OpenMP region costs ~2 us, a run of the pool ~40
        quantize_activations(x, 32, padded, xq, xs, xsum)
        _tiles_of([w for w, _ in fused], [o for _, o in fused], t, ws)
        return
    # a prefill chunk's rows quantized on the pool (SmolLM2, 512 x 576: 0.2 ms on one thread)
    q = threads() if is_large(x.nbytes) else 1
    rows_shared(lambda r0, r1: quantize_activations(x[r0:r1], 32, padded, xq[r0:r1], xs[r0:r1], xsum[r0:r1]), t, q)
    args = [_lanes_args(w) for w, _ in fused]
    runs = []  # (matrix, first tile, end tile): about CLAIMS_PER_MATRIX runs per matrix
    for i, (w, _) in enumerate(fused):
        n_tiles = -(-w.layout.rows // lanes.ROWS)
        step = max(1, n_tiles // CLAIMS_PER_MATRIX)
        runs += [(i, a, min(a + step, n_tiles)) for a in range(0, n_tiles, step)]
    n = threads() if is_large(sum(w.codes.nbytes for w, _ in fused) * t) else 1

    def work(_: int, claims) -> None:
        for c in claims:
            if c >= len(runs):
                return
            i, a, b = runs[c]
            cd, sc, mn, kind, shift = args[i]  # a matrix's tail: only the run holding its last tile writes it
            lanes.row_tiles(cd, sc, mn, xq, xs, xsum, fused[i][1], ws.tail[i, :t], kind, shift, a, b)

    share(work, n)
