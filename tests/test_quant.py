"""Storage types: round trips within documented bounds, the exact q4 packing, zero-copy views."""

from __future__ import annotations

import numpy as np
import pytest

from edgellm.quant import Layout, QTensor, error_bound, quantize


@pytest.mark.parametrize("stype", ["f32", "f16", "q8", "q4"])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("cols", [172, 40, 256])
def test_round_trip_within_bound(stype, group, cols):
    w = np.random.default_rng(cols + group).standard_normal((7, cols)).astype(np.float32)
    w[3, :20] = 0.0  # an all-zero start of a row
    t = QTensor.quantize(w, stype, group)
    d = t.dequantize()
    assert d.shape == w.shape
    if stype == "f32":
        assert np.array_equal(d, w)
        return
    g = group if stype in ("q8", "q4") else cols
    pad = -(-cols // g) * g
    wp = np.zeros((7, pad), np.float32)
    wp[:, :cols] = w
    dp = np.zeros_like(wp)
    dp[:, :cols] = d
    amax = np.abs(wp.reshape(7, -1, g)).max(-1, keepdims=True)
    err = np.abs((dp - wp).reshape(7, -1, g))
    assert (err <= error_bound(stype) * amax + 1e-12).all()


def test_q4_packing_matches_spec():
    w = np.zeros((1, 32), np.float32)
    w[0, 0], w[0, 16], w[0, 1] = -8.0, 7.0, 1.0  # scale = -8 / -8 = 1
    codes, scales = quantize(w, "q4", 32)
    assert scales[0, 0] == 1.0
    assert codes.shape == (1, 16)
    assert codes[0, 0] == (0 | (15 << 4))  # element 0 -> nibble 0 (-8), element 16 -> 15 (+7)
    assert codes[0, 1] == (9 | (8 << 4))  # element 1 -> 9 (+1), element 17 -> 8 (0)


def test_q8_and_padding_decode_to_zero():
    w = np.ones((2, 40), np.float32)
    codes, scales = quantize(w, "q8", 32)
    assert codes.shape == (2, 64) and (codes[:, 40:] == 0).all()
    c4, _ = quantize(w, "q4", 32)
    hi = c4.reshape(2, 2, 16)[:, 1]  # group 1 holds elements 32..63; 40.. are padding
    assert ((hi[:, 8:] & 15) == 8).all() and ((hi >> 4) == 8).all()


def test_from_buffer_is_a_view():
    w = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    t = QTensor.quantize(w, "q4")
    buf = np.frombuffer(bytearray(t.to_bytes()), np.uint8)
    v = QTensor.from_buffer(Layout("q4", 4, 64, 32), buf)
    assert np.shares_memory(v.codes, buf) and np.shares_memory(v.scales, buf)
    assert np.array_equal(v.dequantize(), t.dequantize())
