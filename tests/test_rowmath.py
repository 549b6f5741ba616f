"""The f32 row kernels (kernels/rowmath.py) against numpy: the same formula in numpy float32 for exact bits,
float64 for accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from edgellm.kernels import rowmath
from edgellm.kernels.matvec import quantize_activation
from edgellm.kernels.simd import dots8

RNG = np.random.default_rng(7)
F = np.float32


def _exp_ref(x: np.ndarray) -> np.ndarray:
    """rowmath._exp's arithmetic in numpy float32 (IEEE single, no fused multiply-add): the same bits."""
    x = np.minimum(np.maximum(x.astype(F), F(rowmath.EXP_LO)), F(rowmath.EXP_HI))
    n = np.floor(x * F(rowmath._LOG2E) + F(0.5))
    r = (x - n * F(rowmath._LN2_HI)) - n * F(rowmath._LN2_LO)
    p = np.full_like(r, F(rowmath._EXP_POLY[0]))
    for c in rowmath._EXP_POLY[1:]:
        p = p * r + F(c)
    p = (p * (r * r) + r) + F(1.0)
    return p * ((n.astype(np.int32) + 127) << 23).view(F)


def _sum_ref(e: np.ndarray) -> np.float32:
    """exp_sum's order: lane sums of p mod 8 in p order, the lanes' fixed tree, then the rest in order."""
    whole = len(e) // 8 * 8
    lanes = np.zeros(8, F)
    for p in range(0, whole, 8):
        lanes = lanes + e[p : p + 8]
    a = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    rest = F(0.0)
    for v in e[whole:]:
        rest = F(rest + v)
    return F(a + rest)


@njit
def _softmax_parts(s, n, scale):
    mx = rowmath.scale_max(s, n, scale)
    return mx, rowmath.exp_sum(s, n, mx)


@njit
def _silu(g, u, out, n):
    rowmath.silu_gate(g, u, out, n)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 31, 100])
def test_scale_max_and_exp_sum_are_their_formulas_bit_for_bit(n):
    raw = (RNG.standard_normal(n) * 30).astype(F)
    s = raw.copy()
    mx, tot = _softmax_parts(s, n, F(0.125))
    scaled = raw * F(0.125)
    assert mx == (scaled.max() if n else -np.inf)
    e = _exp_ref(scaled - F(mx)) if n else scaled
    assert np.array_equal(s.view(np.uint32), e.view(np.uint32))
    assert F(tot) == _sum_ref(e)


def test_exp_is_within_2_ulp_of_exp_over_its_range():
    x = np.linspace(-87.0, 88.0, 200_003).astype(F)
    s = x.copy()
    _softmax_parts(s, len(s), F(1.0))  # shift by the max (88): exp(x - 88)
    got = s.astype(np.float64)
    shifted = (x - F(88.0)).astype(np.float64)  # the kernel's input, rounded to f32 as it computes it
    want = np.exp(shifted)
    ok = shifted >= rowmath.EXP_LO  # below, the clamp answers exp(EXP_LO) ~ 1.6e-38
    assert np.max(np.abs(got[ok] - want[ok]) / want[ok]) < 2 * 2.0**-23
    assert np.all(got[~ok] < 2e-38)
    assert np.array_equal(_exp_ref(x - F(88.0)), s)


@pytest.mark.parametrize("n", [1, 5, 8, 13, 1536])
def test_silu_gate_is_its_formula_bit_for_bit_and_close_to_silu(n):
    g = (RNG.standard_normal(n) * 6).astype(F)
    g[0] = -100.0  # far past the clamp: silu(-100) ~ -4e-42, we answer ~ -6e-37
    u = RNG.standard_normal(n).astype(F)
    out = np.zeros(n, F)
    _silu(g, u, out, n)
    want = g / (F(1.0) + _exp_ref(-g)) * u
    assert np.array_equal(out, want)
    exact = g.astype(np.float64) / (1 + np.exp(-g.astype(np.float64))) * u
    np.testing.assert_allclose(out, exact, rtol=1e-6, atol=1e-30)
    inplace = g.copy()
    _silu(inplace, u, inplace, n)  # out may be the gate row (kernels/stack.py)
    assert np.array_equal(inplace, out)


def _quantize_ref(x, group, padded):
    xq = np.zeros(padded, np.int8)
    xs = np.zeros(padded // group, F)
    xsum = np.zeros(padded // group, np.int32)
    for g in range(padded // group):
        part = x[g * group : (g + 1) * group]
        s = F(np.max(np.abs(part), initial=F(0.0)) / F(127.0))
        inv = F(1.0) / s if s > 0 else F(0.0)
        q = np.rint(part * inv).astype(np.int8)
        xq[g * group : g * group + len(q)] = q
        xs[g], xsum[g] = s, int(q.astype(np.int32).sum())
    return xq, xs, xsum


@pytest.mark.parametrize(("cols", "group"), [(576, 32), (300, 32), (37, 32), (172, 64), (300, 128), (64, 128)])
def test_activation_quantization_is_its_formula_exactly(cols, group):
    padded = -(-cols // 128) * 128
    x = (RNG.standard_normal(cols) * RNG.choice([0.01, 1.0, 50.0], cols)).astype(F)
    x[: min(group, cols)] = 0.0 if cols > group else x[: min(group, cols)]  # an all-zero group: s = 0
    got = np.ones(padded, np.int8), np.ones(padded // group, F), np.ones(padded // group, np.int32)
    quantize_activation(x, group, padded, *got)
    for a, b in zip(got, _quantize_ref(x, group, padded)):
        assert np.array_equal(a, b)


@njit
def _dots(q, k, n, out):
    dots8(q, 0, k.reshape(-1), 0, k.shape[1], n, q.shape[0], out)


@pytest.mark.parametrize("f16", [False, True])
def test_a_keys_score_is_the_same_bits_in_a_run_of_eight_or_alone(f16):
    q = RNG.standard_normal(64).astype(F)
    k = RNG.standard_normal((27, 64)).astype(np.float16 if f16 else F)
    kk = k.view(np.uint16) if f16 else k
    runs = {}
    for n in (1, 8, 9, 16, 27):  # key 0 alone (n = 1) or in a run of 8; key 8 in the tail or in a run
        out = np.zeros(27, F)
        _dots(q, kk, n, out)
        runs[n] = out[:n]
    for n, got in runs.items():
        assert np.array_equal(got, runs[27][:n])
    np.testing.assert_allclose(runs[27], k.astype(np.float64) @ q, rtol=1e-5, atol=1e-5)
