"""Each kernel against a plain numpy computation."""

from __future__ import annotations

import numpy as np
import pytest

from edgellm import kernels
from edgellm.errors import UnsupportedModelError
from edgellm.kernels.ops import inv_freq
from edgellm.quant import Layout, QTensor, integer_kernels

RNG = np.random.default_rng(0)


def _ws(rows=8, cols=512, heads=8, ctx=64):
    return kernels.Workspace(max_rows=rows, max_cols=cols, n_heads=heads, context=ctx)


TYPE_GROUPS = [(t, g) for t in ("q4", "q8", "f16", "f32") for g in (32, 128)] + [("q4a", 32)]


def _in_lanes(stype, group):
    return stype in ("q8", "q4a") or (stype == "q4" and group == 32)


@pytest.mark.parametrize(("stype", "group"), TYPE_GROUPS)
@pytest.mark.parametrize("shape", [(37, 172), (64, 64), (5, 300), (130, 256)])
def test_matvec_and_matmul_vs_dequantized_reference(stype, shape, group):
    w = RNG.standard_normal(shape).astype(np.float32)
    t = QTensor.quantize(w, stype, group)
    ref_w = t.dequantize()
    x = RNG.standard_normal((15, shape[1])).astype(np.float32)  # 15 tokens: tiles of 8, 4, 2 and 1
    ws = _ws(rows=15, cols=512)
    out = np.zeros(shape[0], np.float32)
    kernels.matvec(t, x[0], out, ws)
    want = ref_w @ x[0]
    # q4/q8 decode quantizes the activation to int8 per group: error ~ |w|.|x| / 254 per group
    tol = 2e-5 if stype in ("f32", "f16") else 0.02
    scale = np.abs(ref_w) @ np.abs(x[0])
    assert (np.abs(out - want) <= tol * scale + 1e-5).all()
    outm = np.zeros((15, shape[0]), np.float32)
    kernels.matmul(t, x, outm, ws)
    if not _in_lanes(stype, group):  # f32 activations through BLAS
        np.testing.assert_allclose(outm, x @ ref_w.T, rtol=1e-4, atol=1e-4)
        return
    # the integer prefill gives every token exactly what decode gives it, whatever tile it shared
    for i in range(15):
        one = np.zeros(shape[0], np.float32)
        kernels.matvec(t, x[i], one, ws)
        np.testing.assert_array_equal(outm[i], one, err_msg=f"token {i}")
    assert (np.abs(outm - x @ ref_w.T) <= tol * (np.abs(x) @ np.abs(ref_w).T) + 1e-5).all()


def test_rmsnorm_silu():
    x = RNG.standard_normal((3, 70)).astype(np.float32)
    w = RNG.standard_normal(70).astype(np.float32)
    out = np.zeros_like(x)
    kernels.rmsnorm(x, w, 1e-5, out, _ws())
    np.testing.assert_allclose(out, x / np.sqrt((x * x).mean(1, keepdims=True) + 1e-5) * w, rtol=1e-5, atol=1e-6)
    g, u = RNG.standard_normal((2, 9)).astype(np.float32), RNG.standard_normal((2, 9)).astype(np.float32)
    kernels.silu_mul(g, u, out[:2, :9])
    np.testing.assert_allclose(out[:2, :9], g / (1 + np.exp(-g)) * u, rtol=1e-5, atol=1e-6)


def test_rope_scalings_follow_hf_formulas():
    base = 1.0 / (10000.0 ** (np.arange(0, 16, 2) / 16))
    np.testing.assert_allclose(inv_freq(16, 10000.0, None), base)
    np.testing.assert_allclose(inv_freq(16, 10000.0, {"type": "linear", "factor": 4.0}), base / 4)
    s = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    got = inv_freq(16, 10000.0, s)
    wl = 2 * np.pi / base
    for f, b, w in zip(got, base, wl):  # HF: high freq kept, low freq / factor, smooth in between
        if w < 64 / 4:
            assert f == pytest.approx(b)
        elif w > 64 / 1:
            assert f == pytest.approx(b / 8)
        else:
            sm = (64 / w - 1) / 3
            assert f == pytest.approx((1 - sm) * b / 8 + sm * b)
    with pytest.raises(UnsupportedModelError, match="yarn"):
        inv_freq(16, 10000.0, {"rope_type": "yarn", "factor": 2})


def test_apply_rope_rotate_half():
    x = RNG.standard_normal((3, 2, 8)).astype(np.float32)
    cos, sin = kernels.rope_tables(8, 16, 10000.0, None)
    pos = np.array([0, 5, 9])
    y = x.copy()
    kernels.apply_rope(y, pos, cos, sin)
    c, s = np.concatenate([cos[pos]] * 2, 1)[:, None], np.concatenate([sin[pos]] * 2, 1)[:, None]
    rot = np.concatenate([-x[..., 4:], x[..., :4]], -1)
    np.testing.assert_allclose(y, x * c + rot * s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("start", [0, 7])
def test_attention_gqa_causal(start):
    t, h, kv, hd, ctx = 4, 6, 2, 8, 32
    q = RNG.standard_normal((t, h, hd)).astype(np.float32)
    kc = RNG.standard_normal((ctx, kv, hd)).astype(np.float32)
    vc = RNG.standard_normal((ctx, kv, hd)).astype(np.float32)
    out = np.zeros_like(q)
    kernels.attention(q, kc, vc, start, out, _ws(heads=h, ctx=ctx))
    for i in range(t):
        n = start + i + 1
        for j in range(h):
            k, v = kc[:n, j // 3], vc[:n, j // 3]
            s = k @ q[i, j] / np.sqrt(hd)
            p = np.exp(s - s.max())
            np.testing.assert_allclose(out[i, j], (p / p.sum()) @ v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("per", [2, 3, 4, 5, 8])
def test_grouped_attention_gives_each_heads_own_bits(per):
    """Decode's attention takes a KV group's query heads together (ops._attention_groups: simd.dots_heads and
    wsum_heads, chunks of 2-4 heads): every output equals, bit for bit, that head computed alone as prefill does
    (_attention_rows), for head sizes with 16-, 8-lane and scalar tails, f32 and f16 caches, 1 and 3 tokens;
    and the numbers are attention's."""
    from edgellm.kernels import ops

    kv, ctx = 2, 48
    for hd, dt, t, start in (
        (64, np.float16, 1, 40),
        (72, np.float32, 3, 9),
        (36, np.float16, 3, 0),
        (8, np.float32, 1, 5),
    ):
        h = kv * per
        q = RNG.standard_normal((t, h, hd)).astype(np.float32)
        kc, vc = (RNG.standard_normal((ctx, kv, hd)).astype(dt) for _ in range(2))
        bits = (lambda a: a.view(np.uint16)) if dt == np.float16 else (lambda a: a)
        got, alone = np.zeros_like(q), np.zeros_like(q)
        ops._attention_groups(q, bits(kc), bits(vc), start, got, np.zeros((h, ctx), np.float32), 0, kv)
        sc = np.zeros((h, ctx), np.float32)
        for j in range(h):
            ops._attention_rows(q, bits(kc), bits(vc), start, alone, sc[j], j, 0, t)
        np.testing.assert_array_equal(got, alone, err_msg=f"head size {hd}, {dt.__name__}")
        k32, v32 = kc.astype(np.float64), vc.astype(np.float64)
        for i in range(t):
            n = start + i + 1
            for j in range(h):
                s = k32[:n, j // per] @ q[i, j] / np.sqrt(hd)
                p = np.exp(s - s.max())
                np.testing.assert_allclose(got[i, j], (p / p.sum()) @ v32[:n, j // per], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("t", [1, 5])
def test_attention_over_an_f16_cache_is_attention_over_its_f32_values(t):
    """The f16 cache is widened exactly as it is read: the same bits as an f32 cache holding its values, for
    one decoded token and for a prefill chunk, on one thread and on the shared drivers (long context)."""
    h, kv, hd = 6, 2, 64
    for ctx, start in ((32, 7), (1024, 900)):  # 1024: large enough for the shared drivers
        q = RNG.standard_normal((t, h, hd)).astype(np.float32)
        kc = RNG.standard_normal((ctx, kv, hd)).astype(np.float16)
        vc = RNG.standard_normal((ctx, kv, hd)).astype(np.float16)
        got, want = np.zeros_like(q), np.zeros_like(q)
        kernels.attention(q, kc, vc, start, got, _ws(heads=h, ctx=ctx))
        kernels.attention(q, kc.astype(np.float32), vc.astype(np.float32), start, want, _ws(heads=h, ctx=ctx))
        np.testing.assert_array_equal(got, want)


def _tile_caller(tile, slots, rows):
    from numba import njit

    @njit
    def call(codes, s, m, xq, xs, xsum, out, nb):
        n, rb, ngs = codes.shape[0], codes.shape[1], s.shape[1]
        for r0 in range(0, n, rows):
            for tok in range(0, xq.shape[0], slots):
                ntok = min(slots, xq.shape[0] - tok)
                tile(
                    codes.reshape(-1),
                    rb,
                    s.reshape(-1),
                    m.reshape(-1),
                    ngs,
                    r0,
                    n,
                    xq.reshape(-1),
                    xs.reshape(-1),
                    xsum.reshape(-1),
                    xq.shape[1],
                    xs.shape[1],
                    tok,
                    ntok,
                    out[:, r0 : r0 + rows],
                    0,
                    nb,
                    0,
                )

    return call


@pytest.mark.parametrize("stype", ["q4", "q4a", "q8"])
def test_row_tiles_of_every_lowering_agree_with_integer_formula(stype):
    """Every lowering of the integer row tiles this host runs (portable IR; aarch64 sdot; AVX2 pmaddubsw;
    AVX-512 VNNI vpdpbusd, and its generic-IR twin everywhere), at every tile width,
    against sum_g xs_g * (scale_w * sum_j w_j * xq_j + min_g * sum_j xq_j) computed exactly (min: q4a
    only), with extreme codes and activations included, and token counts that leave tile slots empty."""
    from edgellm.kernels import lanes, simd

    stride = 32 if stype == "q8" else 16
    n, ng, t = 32, 6, 7  # two tiles of 16 rows, four of 8
    rb = ng * stride
    if stype in ("q4", "q4a"):
        codes = RNG.integers(0, 256, (n, rb), dtype=np.uint8)
        codes[0, :16] = 0xFF
        b = codes.reshape(n, ng, 16)
        w = np.concatenate([(b & 15).astype(np.int64), (b >> 4).astype(np.int64)], axis=2) - (8 if stype == "q4" else 0)
    else:
        codes = RNG.integers(-127, 128, (n, rb)).astype(np.int8).view(np.uint8)
        codes[0, :32] = np.int8(-127).view(np.uint8)
        codes[1, :32] = 127
        w = codes.view(np.int8).reshape(n, ng, 32).astype(np.int64)
    xq = RNG.integers(-127, 128, (t, ng * 32)).astype(np.int8)
    xq[0, :32], xq[1, :32] = 127, -127
    xs = (RNG.random((t, ng)) + 0.5).astype(np.float32)
    xsum = xq.reshape(t, ng, 32).sum(2).astype(np.int32)
    sc = (RNG.random((n, ng)) + 0.5).astype(np.float16)
    mins = (RNG.random((n, ng)) - 1.5).astype(np.float16)
    dots = np.einsum("rgj,tgj->trg", w, xq.reshape(t, ng, 32).astype(np.int64))  # (t, n, ng) exact integers
    per_group = dots * sc.astype(np.float64)[None]
    if stype == "q4a":
        per_group += mins.astype(np.float64)[None] * xsum[:, None, :]
    want = (per_group * xs[:, None, :]).sum(2)
    # aarch64 with dot products: "dot" (sdot); on every host "vnni-ir", the AVX-512 VNNI tiles (16 rows, q8's +128
    # against the block sums) with vpdpbusd written as the generic IR of its definition, so a host without
    # AVX-512 runs all of that lowering but its one instruction
    for name in [*simd.available_lowerings(), "vnni-ir"]:
        rows = lanes.ROWS_OF[name]
        pc, ps, pm = codes.copy(), sc.copy(), mins.copy()  # the packed tile layout at this lowering's width
        lanes.pack(pc, ps, pm if stype == "q4a" else None, stype, rows)
        assert not np.array_equal(pc, codes)
        for slots in (8, 4, 1):
            out = np.zeros((t, n), np.float32)
            call = _tile_caller(lanes._tile(stype, name, slots), slots, rows)
            call(codes, sc.view(np.uint16), mins.view(np.uint16), xq, xs, xsum, out, ng)
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4 * np.abs(want).max(), err_msg=f"{name} {slots}")
            packed = np.zeros((t, n), np.float32)
            call = _tile_caller(lanes._tile(stype, name, slots, True), slots, rows)
            call(pc, ps.view(np.uint16), (pm if stype == "q4a" else ps).view(np.uint16), xq, xs, xsum, packed, ng)
            np.testing.assert_array_equal(packed, out, err_msg=f"packed {name} {slots}")  # only the loads differ


# a q4 / q8 tile of one token compiled for a named CPU (a child process: numba's target is chosen at import);
# prints the tile's multiply-add instructions with vector registers as ymm / zmm
_ASM = """
import re, sys
from numba import njit, types
from edgellm.kernels import lanes
tile = lanes._tile(sys.argv[2], sys.argv[1], 1)
@njit
def call(c, s, m, xq, xs, xsum, out, nb):
    tile(c, 16, s, m, 1, 0, 8, xq, xs, xsum, 32, 1, 0, 1, out, 0, nb, 0)
arr = lambda t, d=1: types.Array(t, d, "C")
call.compile((arr(types.uint8), arr(types.uint16), arr(types.uint16), arr(types.int8), arr(types.float32),
              arr(types.int32), arr(types.float32, 2), types.int64))
asm = call.inspect_asm(call.signatures[0])
ops = [re.sub(r"%([xyz]mm)[0-9]+", r"\\1", line.strip()) for line in asm.splitlines() if "vpdpbusd" in line]
print("\\n".join(ops))
"""


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="x86-64 code generation")
@pytest.mark.parametrize(
    ("lowering", "cpu", "features", "encoding", "register"),
    [
        ("avxvnni", "alderlake", "+avx2,+avxvnni,+fma,+f16c", "{vex}\tvpdpbusd\t", "ymm"),  # no AVX-512 at all
        ("vnni", "sapphirerapids", "", "vpdpbusd\t", "zmm"),
    ],
)
def test_vnni_lowerings_compile_to_their_instruction(lowering, cpu, features, encoding, register, tmp_path):
    """Each x86 VNNI lowering compiled for a CPU that has it (compiled, not run: any x86-64 host checks it):
    AVX-VNNI's tiles are VEX-encoded vpdpbusd on 256 bits, which an AVX-512-less Alder Lake runs; AVX-512
    VNNI's are 512-bit. The every-lowering test checks their numbers where the host runs them."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features, NUMBA_CACHE_DIR=str(tmp_path))
    for kind in ("q4", "q8"):
        p = subprocess.run([sys.executable, "-c", _ASM, lowering, kind], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        ops = [line for line in p.stdout.splitlines() if line]
        assert len(ops) >= 8, (kind, ops)  # a block's 8 steps at least (q8 through vnni adds its block sums)
        for op in ops:
            assert op.startswith(encoding) and op.endswith(f"{register}, {register}"), (kind, op)


@pytest.mark.parametrize(("stype", "group"), [("q4", 32), ("q4a", 32), ("q8", 32), ("q8", 128)])
def test_packed_matrices_give_row_majors_bits_and_rows(stype, group):
    """A pinned matrix packed for the tiles (lanes.pack): row_tiles at every token count give the row-major
    matrix's very bits, the short last tile included; row_major() and dequantize() give back its rows."""
    from edgellm.kernels import lanes
    from edgellm.kernels.matvec import _lanes_args, quantize_activations

    assert integer_kernels(Layout(stype, 8, 256, group))
    n = 3 * lanes.ROWS + 5  # three whole tiles and a short one
    w = RNG.standard_normal((n, 256)).astype(np.float32)
    plain, packed = QTensor.quantize(w, stype, group), QTensor.quantize(w, stype, group)
    lanes.pack(packed.codes, packed.scales, packed.mins, stype)
    packed.packed = lanes.ROWS
    assert not np.array_equal(plain.codes, packed.codes)
    assert np.array_equal(packed.codes[3 * lanes.ROWS :], plain.codes[3 * lanes.ROWS :])  # the short tile stays
    np.testing.assert_array_equal(packed.dequantize(), plain.dequantize())
    rows = np.array([0, 1, lanes.ROWS, n - 6, n - 1, 7])
    again = packed.row_major(rows)
    for a, b in ((again.codes, plain.codes[rows]), (again.scales, plain.scales[rows])):
        np.testing.assert_array_equal(a, b)
    if stype == "q4a":
        np.testing.assert_array_equal(again.mins, plain.mins[rows])
    tail = np.zeros((9, lanes.ROWS), np.float32)
    for t in (1, 3, 9):
        x = RNG.standard_normal((t, 256)).astype(np.float32)
        xq, xs, xsum = np.zeros((t, 256), np.int8), np.zeros((t, 8), np.float32), np.zeros((t, 8), np.int32)
        quantize_activations(x, 32, 256, xq, xs, xsum)
        outs = []
        for q in (plain, packed):
            c, s, m, kind, shift = _lanes_args(q)
            out = np.zeros((t, n), np.float32)
            lanes.row_tiles(c, s, m, xq, xs, xsum, out, tail[:t], kind, shift, 0, -(-n // lanes.ROWS))
            outs.append(out)
        np.testing.assert_array_equal(outs[1], outs[0], err_msg=f"{t} tokens")


@pytest.fixture
def shared_kernels(monkeypatch):
    """Every kernel on its shared-tiles driver, whatever its size."""
    from edgellm.kernels import parallel

    if __import__("numba").config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only: nothing to share")
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)


@pytest.mark.parametrize(
    ("stype", "group"), [(t, g) for t in ("q4", "q8", "f16", "f32") for g in (32, 64)] + [("q4a", 32)]
)
def test_shared_tiles_give_the_same_bits_at_every_thread_count(stype, group, shared_kernels, monkeypatch):
    """The ThreadTuner changes the thread count between decode passes: results must not change with it."""
    from edgellm.kernels import parallel
    from edgellm.kernels.parallel import using_threads

    w = RNG.standard_normal((203, 320)).astype(np.float32)  # 51 tiles, the last one short
    t = QTensor.quantize(w, stype, group)
    x = RNG.standard_normal((5, 320)).astype(np.float32)
    ws = _ws(rows=8, cols=512)
    q = RNG.standard_normal((3, 6, 16)).astype(np.float32)
    kc, vc = RNG.standard_normal((2, 40, 2, 16)).astype(np.float32)

    def run():
        mv, mm, att, rms = (
            np.zeros(203, np.float32),
            np.zeros((5, 203), np.float32),
            np.zeros_like(q),
            np.zeros_like(x),
        )
        kernels.matvec(t, x[0], mv, ws)
        kernels.matmul(t, x, mm, ws)
        kernels.attention(q, kc, vc, 9, att, _ws(heads=6, ctx=40))
        kernels.rmsnorm(x, w[0], 1e-5, rms, ws)
        return mv, mm, att, rms

    with using_threads(2):
        two = run()
    with using_threads(1):
        one = run()
    exact = two if _in_lanes(stype, group) else two[:1] + two[2:]  # BLAS blocks differ in shape
    for a, b in zip(exact, one if _in_lanes(stype, group) else one[:1] + one[2:]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(two[1], one[1], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 1 << 62)  # the calling-thread kernels agree too
    alone = run()
    for a, b in zip(alone, one):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if not _in_lanes(stype, group):
        np.testing.assert_allclose(alone[1], x @ t.dequantize().T, rtol=1e-4, atol=1e-4)
