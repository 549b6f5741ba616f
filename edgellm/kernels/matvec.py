"""Weight products: matvec (decode, one token) and matmul (prefill, many tokens).

Decode quantizes the activation to int8 per group once, then takes integer dot products against the stored
codes (4 rows per task share each activation load); f16 scales are looked up in a 65536-entry table.
Prefill dequantizes a block of rows to f32 and hands it to BLAS, so the unpacking is paid once per block for
all tokens of the chunk.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as u64

from ..quant import QTensor

F16_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
MATMUL_BLOCK = 256          # weight rows dequantized at once for prefill (x padded cols f32)


class Workspace:
    """Scratch the kernels write, allocated once per model (no allocation in the decode loop)."""

    def __init__(self, max_rows: int, max_cols: int, n_heads: int, context: int):
        pc = -(-max_cols // 128) * 128
        self.xq = np.zeros(pc, np.int8)                    # (padded cols,) quantized activation
        self.xs = np.zeros(pc // 32, np.float32)           # (groups,) activation scales
        self.xsum = np.zeros(pc // 32, np.int32)           # (groups,) sum of quantized activation
        self.deq = np.zeros((MATMUL_BLOCK, pc), np.float32)  # (block rows, padded cols) dequantized weights
        self.scores = np.zeros((n_heads, context), np.float32)   # (heads, context) attention scores

    @staticmethod
    def nbytes_for(max_rows: int, max_cols: int, n_heads: int, context: int) -> int:
        pc = -(-max_cols // 128) * 128
        return pc + pc // 32 * 8 + MATMUL_BLOCK * pc * 4 + n_heads * context * 4


@njit(nogil=True, cache=True)
def quantize_activation(x, group, xq, xs, xsum):
    """x[K] -> xq int8[groups*group] (zero-padded), xs[groups] scales, xsum[groups] code sums."""
    k = x.shape[0]
    for g in range(-(-k // group)):
        lo, hi = g * group, min(g * group + group, k)
        amax = np.float32(0.0)
        for j in range(lo, hi):
            amax = max(amax, abs(x[j]))
        s = amax / np.float32(127.0)
        inv = np.float32(1.0) / s if s > 0 else np.float32(0.0)
        tot = 0
        for j in range(lo, lo + group):
            v = int(np.rint(x[j] * inv)) if j < hi else 0
            xq[j] = v
            tot += v
        xs[g] = s
        xsum[g] = tot


@njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _matvec_q4(codes, scales, xq, xs, xsum, table, out):
    """codes u8[N, P/2], scales u16[N, groups] (f16 bits), xq/xs/xsum from quantize_activation; out[N]."""
    n, ng = codes.shape[0], scales.shape[1]
    half = codes.shape[1] // ng
    group = 2 * half
    rb = codes.shape[1]
    c = codes.reshape(-1)
    s = scales.reshape(-1)
    for t in prange(-(-n // 4)):
        r = t * 4
        m = min(4, n - r)
        a0 = a1 = a2 = a3 = np.float32(0.0)
        r1, r2, r3 = min(r + 1, n - 1), min(r + 2, n - 1), min(r + 3, n - 1)   # tail rows repeat the last
        for g in range(ng):
            s0 = s1 = s2 = s3 = np.int32(0)
            xo = u64(g * group)
            b0, b1, b2, b3 = u64(r * rb + g * half), u64(r1 * rb + g * half), u64(r2 * rb + g * half), \
                u64(r3 * rb + g * half)
            for j in range(half):
                jj = u64(j)
                xl, xh = np.int32(xq[xo + jj]), np.int32(xq[xo + u64(half) + jj])
                w0, w1, w2, w3 = np.int32(c[b0 + jj]), np.int32(c[b1 + jj]), np.int32(c[b2 + jj]), \
                    np.int32(c[b3 + jj])
                s0 += (w0 & 15) * xl + (w0 >> 4) * xh
                s1 += (w1 & 15) * xl + (w1 >> 4) * xh
                s2 += (w2 & 15) * xl + (w2 >> 4) * xh
                s3 += (w3 & 15) * xl + (w3 >> 4) * xh
            f, off = xs[g], 8 * xsum[g]        # nibble n stands for n - 8
            a0 += table[s[r * ng + g]] * f * np.float32(s0 - off)
            a1 += table[s[r1 * ng + g]] * f * np.float32(s1 - off)
            a2 += table[s[r2 * ng + g]] * f * np.float32(s2 - off)
            a3 += table[s[r3 * ng + g]] * f * np.float32(s3 - off)
        out[r] = a0
        if m > 1:
            out[r + 1] = a1
        if m > 2:
            out[r + 2] = a2
        if m > 3:
            out[r + 3] = a3


@njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _matvec_q4_g32(codes, scales, xq, xs, xsum, table, out):
    """Group-32 fast path of _matvec_q4: 16 float lane accumulators per row carried across groups, so the
    horizontal sum happens once per row instead of once per group (literal 16/32 strides vectorize)."""
    n, ng = codes.shape[0], scales.shape[1]
    for t in prange((n + 1) // 2):
        r0 = 2 * t
        r1 = min(r0 + 1, n - 1)                 # an odd last row is computed twice, stored once
        acc0 = np.zeros(16, np.float32)
        acc1 = np.zeros(16, np.float32)
        corr0 = np.float32(0.0)
        corr1 = np.float32(0.0)
        c0, c1 = codes[r0], codes[r1]
        for g in range(ng):
            f0 = table[scales[r0, g]] * xs[g]
            f1 = table[scales[r1, g]] * xs[g]
            corr0 += f0 * np.float32(xsum[g])
            corr1 += f1 * np.float32(xsum[g])
            for lane in range(16):
                xl = np.int32(xq[g * 32 + lane])
                xh = np.int32(xq[g * 32 + 16 + lane])
                w0 = np.int32(c0[g * 16 + lane])
                w1 = np.int32(c1[g * 16 + lane])
                acc0[lane] += f0 * np.float32((w0 & 15) * xl + (w0 >> 4) * xh)
                acc1[lane] += f1 * np.float32((w1 & 15) * xl + (w1 >> 4) * xh)
        out[r0] = acc0.sum() - 8 * corr0
        if r1 != r0:
            out[r1] = acc1.sum() - 8 * corr1


@njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _matvec_q8(codes, scales, xq, xs, table, out):
    """codes i8[N, P], scales u16[N, groups]; out[N]."""
    n, ng = codes.shape[0], scales.shape[1]
    group = codes.shape[1] // ng
    for r in prange(n):
        acc = np.float32(0.0)
        for g in range(ng):
            isum = np.int32(0)
            for j in range(group):
                isum += np.int32(codes[r, g * group + j]) * np.int32(xq[g * group + j])
            acc += table[scales[r, g]] * xs[g] * np.float32(isum)
        out[r] = acc


@njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _matvec_f32(w, x, out):
    for r in prange(w.shape[0]):
        acc = np.float32(0.0)
        for j in range(w.shape[1]):
            acc += w[r, j] * x[j]
        out[r] = acc


@njit(parallel=True, nogil=True, cache=True, fastmath=True)
def _matvec_f16(w, x, table, out):
    """w u16[N, K] (f16 bits)."""
    for r in prange(w.shape[0]):
        acc = np.float32(0.0)
        for j in range(w.shape[1]):
            acc += table[w[r, j]] * x[j]
        out[r] = acc


def matvec(w: QTensor, x: np.ndarray, out: np.ndarray, ws: Workspace) -> None:
    """out[N] = W[N, K] @ x[K]."""
    st = w.layout.stype
    if st == "q4" or st == "q8":
        quantize_activation(x, w.layout.group, ws.xq, ws.xs, ws.xsum)
        p = w.layout.padded_cols
        if st == "q4":
            kernel = _matvec_q4_g32 if w.layout.group == 32 else _matvec_q4
            kernel(w.codes, w.scales.view(np.uint16), ws.xq[:p], ws.xs, ws.xsum, F16_TABLE, out)
        else:
            _matvec_q8(w.codes, w.scales.view(np.uint16), ws.xq[:p], ws.xs, F16_TABLE, out)
    elif st == "f32":
        _matvec_f32(w.codes, x, out)
    else:
        _matvec_f16(w.codes.view(np.uint16), x, F16_TABLE, out)


@njit(parallel=True, nogil=True, cache=True)
def _dequant_q4(codes, scales, table, r0, out):
    """Rows r0.. of a q4 matrix into out[rows, P] (f32)."""
    ng = scales.shape[1]
    half = codes.shape[1] // ng
    for i in prange(out.shape[0]):
        r = r0 + i
        for g in range(ng):
            sc = table[scales[r, g]]
            for j in range(half):
                b = codes[r, g * half + j]
                out[i, g * 2 * half + j] = sc * np.float32((b & 15) - 8)
                out[i, g * 2 * half + half + j] = sc * np.float32((b >> 4) - 8)


@njit(parallel=True, nogil=True, cache=True)
def _dequant_q8(codes, scales, table, r0, out):
    ng = scales.shape[1]
    group = codes.shape[1] // ng
    for i in prange(out.shape[0]):
        r = r0 + i
        for g in range(ng):
            sc = table[scales[r, g]]
            for j in range(group):
                out[i, g * group + j] = sc * np.float32(codes[r, g * group + j])


def matmul(w: QTensor, x: np.ndarray, out: np.ndarray, ws: Workspace) -> None:
    """out[T, N] = x[T, K] @ W[N, K].T for many tokens (prefill)."""
    lay = w.layout
    if lay.stype == "f32":
        np.dot(x, w.codes.T, out=out)
        return
    k, pc = lay.cols, lay.padded_cols
    block = max(1, min(lay.rows, ws.deq.size // pc))
    for r0 in range(0, lay.rows, block):
        rows = min(block, lay.rows - r0)
        deq = ws.deq.reshape(-1)[:rows * pc].reshape(rows, pc)     # contiguous, as BLAS likes it
        if lay.stype == "q4":
            _dequant_q4(w.codes, w.scales.view(np.uint16), F16_TABLE, r0, deq)
        elif lay.stype == "q8":
            _dequant_q8(w.codes, w.scales.view(np.uint16), F16_TABLE, r0, deq)
        else:
            deq[:, :k] = w.codes[r0:r0 + rows]
        if rows == lay.rows:
            np.dot(x, deq[:, :k].T, out=out)
        else:
            out[:, r0:r0 + rows] = x @ deq[:, :k].T
