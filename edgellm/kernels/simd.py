"""LLVM vector IR building blocks (numba intrinsics) and the choice of lowering for this host.

numba types every integer expression as int64, so a hand-written int8 dot product runs in 64-bit lanes
(4 per AVX2 register, with slow 64-bit multiplies). Intrinsics spell out the narrow types instead. The
integer weight kernels (lanes.py) are lowered one of five ways, chosen once at import from the host's
features: "vnni" (AVX-512 VNNI vpdpbusd), "avxvnni" (the same instruction on 256 bits, VEX-encoded: Alder
Lake and later Intel cores, the N100-class mini PCs among them), "avx2" (pmaddubsw + pmaddwd, the way
llama.cpp does it),
"dot" (aarch64 sdot, the Pi 5's Cortex-A76 and most phones) and "portable" (plain vector IR that LLVM
lowers to NEON or SSE). Here: those choices, the shared IR helpers, q4_dot16 (the q4 group-64/128 decode
loop) and half (f16 bits to f32).
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import config, types
from numba.extending import intrinsic


def _vec(n: int, bits: int) -> ir.VectorType:
    return ir.VectorType(ir.IntType(bits), n)


def _splat(n: int, bits: int, v: int) -> ir.Constant:
    return ir.Constant(_vec(n, bits), [v] * n)


def _load(context, builder, aryty, ary, off, n: int):
    """<n x i8> from ary.data + off (byte arrays; unaligned)."""
    data = context.make_array(aryty)(context, builder, ary).data
    ptr = builder.gep(data, [off])
    return builder.load(builder.bitcast(ptr, _vec(n, 8).as_pointer()), align=1)


def _reduce_add(builder, v):
    name = f"llvm.vector.reduce.add.v{v.type.count}i32"
    fn = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(v.type.element, [v.type]), name=name
    )
    return builder.call(fn, [v])


@intrinsic
def q4_dot16(typingctx, codes, coff, xq, xlo, xhi):
    """sum_j (codes[coff+j] & 15) * xq[xlo+j] + (codes[coff+j] >> 4) * xq[xhi+j], j < 16, as int32.

    16 code bytes = 32 weights: low nibbles pair with xq[xlo:xlo+16], high nibbles with xq[xhi:xhi+16]
    (the split-half q4 layout). Nibbles are unsigned 0..15; the caller subtracts 8 * sum(x).
    """
    sig = types.int32(codes, coff, xq, xlo, xhi)

    def codegen(context, builder, signature, args):
        ca, co, xa, lo_off, hi_off = args
        c = _load(context, builder, signature.args[0], ca, co, 16)
        xl = builder.sext(_load(context, builder, signature.args[2], xa, lo_off, 16), _vec(16, 16))
        xh = builder.sext(_load(context, builder, signature.args[2], xa, hi_off, 16), _vec(16, 16))
        lo = builder.zext(builder.and_(c, _splat(16, 8, 15)), _vec(16, 16))
        hi = builder.zext(builder.lshr(c, _splat(16, 8, 4)), _vec(16, 16))
        # |15 * 127| * 2 = 3810 fits in i16
        p = builder.add(builder.mul(lo, xl), builder.mul(hi, xh))
        return _reduce_add(builder, builder.sext(p, _vec(16, 32)))

    return sig, codegen


@intrinsic
def half(typingctx, bits):
    """The IEEE binary16 whose bits are `bits` (a u16) as float32: numba has no float16 type, but LLVM
    vectorizes this conversion in a loop (vcvtph2ps with F16C, fcvtl on aarch64)."""
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        b = args[0] if args[0].type.width == 16 else builder.trunc(args[0], ir.IntType(16))
        return builder.fpext(builder.bitcast(b, ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def half_bits(typingctx, value):
    """The bits (u16) of the IEEE binary16 nearest a float32, ties to even: numpy's astype(float16)."""
    sig = types.uint16(value)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return sig, codegen


@intrinsic
def wsum(typingctx, w, v, v0, stride, n, out, o0, lanes):
    """out[o0 + i] = sum_p w[p] * v[v0 + p * stride + i] for i < lanes (8 or 64), p < n in order, from 0.0: w f32,
    v f32 or f16 bits (u16), all flat and contiguous. Attention's weighted sum of value rows, in vector
    registers: `lanes` // 8 independent sums, so the adds of one key do not wait on each other. Per lane a
    multiply-add in p order (llvm.fmuladd: fused where the host has FMA), the same bits wherever inlined."""
    if not isinstance(lanes, types.IntegerLiteral) or lanes.literal_value not in (8, 64):
        return None
    blocks = lanes.literal_value // 8
    sig = types.void(w, v, v0, stride, n, out, o0, lanes)
    f16 = v.dtype == types.uint16

    def codegen(context, builder, signature, args):
        from numba.core import cgutils

        v8 = ir.VectorType(ir.FloatType(), 8)
        pw = _ptr(context, builder, signature.args[0], args[0])
        pv = _ptr_at(context, builder, signature.args[1], args[1], args[2])
        po = _ptr_at(context, builder, signature.args[5], args[5], args[6])
        step = _i64(builder, args[3])
        accs = [cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8)) for _ in range(blocks)]
        with cgutils.for_range(builder, _i64(builder, args[4])) as loop:
            p = loop.index
            splat = _broadcast(builder, builder.load(builder.gep(pw, [p])), 8)
            row = builder.gep(pv, [builder.mul(p, step)])
            for b, acc in enumerate(accs):
                vv = _load8(builder, builder.gep(row, [ir.Constant(ir.IntType(64), 8 * b)]), f16)
                builder.store(_fmuladd8(builder, splat, vv, builder.load(acc)), acc)
        for b, acc in enumerate(accs):
            dst = builder.gep(po, [ir.Constant(ir.IntType(64), 8 * b)])
            builder.store(builder.load(acc), builder.bitcast(dst, v8.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def dots8(typingctx, q, q0, k, k0, stride, n, whole, out):
    """out[p] = sum_i q[q0 + i] * k[k0 + p * stride + i], i < whole (a multiple of 8), for p < n: attention's
    scores of one query against n key rows (q f32; k f32 or f16 bits; flat and contiguous). Each key's sum in
    eight vector lanes added in a fixed tree (_tree8): the same bits wherever it is inlined (a fastmath loop's
    reduction order is LLVM's choice, which may differ from one caller to another). Eight keys at a time, so
    their sums run side by side instead of each add waiting on the one before, and their trees run together
    (_trees8)."""
    sig = types.void(q, q0, k, k0, stride, n, whole, out)
    f16 = k.dtype == types.uint16

    def codegen(context, builder, signature, args):
        from numba.core import cgutils

        i64, v8 = ir.IntType(64), ir.VectorType(ir.FloatType(), 8)
        pq = _ptr_at(context, builder, signature.args[0], args[0], args[1])
        pk = _ptr_at(context, builder, signature.args[2], args[2], args[3])
        po = _ptr(context, builder, signature.args[7], args[7])
        step, count, width = _i64(builder, args[4]), _i64(builder, args[5]), _i64(builder, args[6])

        def keys(first, m: int):  # the scores of keys first..first+m-1 (m = 8 or 1)
            rows = [builder.gep(pk, [builder.mul(builder.add(first, ir.Constant(i64, j)), step)]) for j in range(m)]
            accs = [cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8)) for _ in range(m)]
            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), width, ir.Constant(i64, 8)) as (i, _):
                qv = builder.load(builder.bitcast(builder.gep(pq, [i]), v8.as_pointer()), align=4)
                for row, acc in zip(rows, accs):
                    kv = _load8(builder, builder.gep(row, [i]), f16)
                    builder.store(_fmuladd8(builder, qv, kv, builder.load(acc)), acc)
            dst = builder.gep(po, [first])
            if m == 8:
                sums = _trees8(builder, [builder.load(acc) for acc in accs])
                builder.store(sums, builder.bitcast(dst, v8.as_pointer()), align=4)
            else:
                builder.store(_tree8(builder, builder.load(accs[0])), dst)

        _over(builder, count, keys)
        return context.get_dummy_value()

    return sig, codegen


KEYS_WITH = {2: 4, 3: 4, 4: 2}  # keys a block of dots_heads takes, by heads: heads x keys sums + heads query
# vectors + a key vector within AVX2's 16 registers (3 heads: 4 keys, 12-15% faster than 2; 4 x 4 would spill)


@intrinsic
def dots_heads(typingctx, q, q0, qstep, k, k0, stride, n, whole, out, o0, ostep, heads):
    """dots8 for `heads` (2, 3 or 4) queries sharing their key rows (a GQA group): out[o0 + h * ostep + p] =
    sum_i q[q0 + h * qstep + i] * k[k0 + p * stride + i], i < whole, p < n. Each key row is loaded (and widened
    from f16) once for all the heads, where dots8 a head at a time loads it once per head; every (head, key) sum
    is dots8's, lane by lane and tree by tree, so the same bits."""
    if not isinstance(heads, types.IntegerLiteral) or heads.literal_value not in KEYS_WITH:
        return None
    nh = heads.literal_value
    sig = types.void(q, q0, qstep, k, k0, stride, n, whole, out, o0, ostep, heads)
    f16 = k.dtype == types.uint16

    def codegen(context, builder, signature, args):
        from numba.core import cgutils

        i64, v8 = ir.IntType(64), ir.VectorType(ir.FloatType(), 8)
        sa = signature.args
        pk = _ptr_at(context, builder, sa[3], args[3], args[4])
        qs = _per_head(builder, _ptr_at(context, builder, sa[0], args[0], args[1]), args[2], nh)
        os_ = _per_head(builder, _ptr_at(context, builder, sa[8], args[8], args[9]), args[10], nh)
        step, count, width = _i64(builder, args[5]), _i64(builder, args[6]), _i64(builder, args[7])

        def keys(first, m: int):  # the scores of keys first..first+m-1 for every head
            rows = [builder.gep(pk, [builder.mul(builder.add(first, ir.Constant(i64, j)), step)]) for j in range(m)]
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8)) for _ in range(m)] for _ in qs]
            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), width, ir.Constant(i64, 8)) as (i, _):
                qv = [builder.load(builder.bitcast(builder.gep(p, [i]), v8.as_pointer()), align=4) for p in qs]
                for j, row in enumerate(rows):
                    kv = _load8(builder, builder.gep(row, [i]), f16)
                    for h in range(nh):
                        builder.store(_fmuladd8(builder, qv[h], kv, builder.load(accs[h][j])), accs[h][j])
            for h in range(nh):
                sums = _trees(builder, [builder.load(a) for a in accs[h]])
                for j in range(m):
                    dst = builder.gep(os_[h], [builder.add(first, ir.Constant(i64, j))])
                    builder.store(builder.extract_element(sums, ir.Constant(ir.IntType(32), j)), dst)

        _over(builder, count, keys, KEYS_WITH[nh])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def wsum_heads(typingctx, w, w0, wstep, v, v0, stride, n, out, o0, ostep, lanes, heads):
    """wsum for `heads` (2, 3 or 4) weight rows sharing their value rows (a GQA group): out[o0 + h * ostep + i] =
    sum_p w[w0 + h * wstep + p] * v[v0 + p * stride + i], i < lanes (8, 16 or 32), p < n in order from 0.0. A
    value row is loaded (and widened) once for all the heads; per lane wsum's multiply-adds in p order, so the
    same bits."""
    if not isinstance(heads, types.IntegerLiteral) or heads.literal_value not in KEYS_WITH:
        return None
    if not isinstance(lanes, types.IntegerLiteral) or lanes.literal_value not in (8, 16, 32):
        return None
    nh, blocks = heads.literal_value, lanes.literal_value // 8
    sig = types.void(w, w0, wstep, v, v0, stride, n, out, o0, ostep, lanes, heads)
    f16 = v.dtype == types.uint16

    def codegen(context, builder, signature, args):
        from numba.core import cgutils

        i64, v8 = ir.IntType(64), ir.VectorType(ir.FloatType(), 8)
        sa = signature.args
        pv = _ptr_at(context, builder, sa[3], args[3], args[4])
        ws = _per_head(builder, _ptr_at(context, builder, sa[0], args[0], args[1]), args[2], nh)
        os_ = _per_head(builder, _ptr_at(context, builder, sa[7], args[7], args[8]), args[9], nh)
        step = _i64(builder, args[5])
        accs = [[cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8)) for _ in range(blocks)] for _ in ws]
        with cgutils.for_range(builder, _i64(builder, args[6])) as loop:
            p = loop.index
            splats = [_broadcast(builder, builder.load(builder.gep(wp, [p])), 8) for wp in ws]
            row = builder.gep(pv, [builder.mul(p, step)])
            for b in range(blocks):
                vv = _load8(builder, builder.gep(row, [ir.Constant(i64, 8 * b)]), f16)
                for h in range(nh):
                    builder.store(_fmuladd8(builder, splats[h], vv, builder.load(accs[h][b])), accs[h][b])
        for h in range(nh):
            for b in range(blocks):
                dst = builder.gep(os_[h], [ir.Constant(i64, 8 * b)])
                builder.store(builder.load(accs[h][b]), builder.bitcast(dst, v8.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _ptr_at(context, builder, aryty, ary, off):
    """A pointer to element `off` of a flat array's data."""
    return builder.gep(_ptr(context, builder, aryty, ary), [_i64(builder, off)])


def _per_head(builder, base, step, heads: int) -> list:
    """Pointers base + h * step for h < heads: each head's row of a [heads, step]-strided block."""
    step = _i64(builder, step)
    return [builder.gep(base, [builder.mul(step, ir.Constant(ir.IntType(64), h))]) for h in range(heads)]


def _broadcast(builder, x, k: int):
    """A scalar value as a <k x T> vector, every lane x."""
    vt = ir.VectorType(x.type, k)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), _idx([0] * k))


def _idx(values) -> ir.Constant:
    """Lane indices for shufflevector, as an <n x i32> constant."""
    values = list(values)
    return ir.Constant(ir.VectorType(ir.IntType(32), len(values)), values)


def _over(builder, count, body, block: int = 8) -> None:
    """body(p, k) for p = 0, block, 2 * block .. with k = block while that many elements remain, then p one by one
    with k = 1 (count an i64)."""
    from numba.core import cgutils

    i64 = ir.IntType(64)
    whole = builder.mul(builder.sdiv(count, ir.Constant(i64, block)), ir.Constant(i64, block))
    with cgutils.for_range_slice(builder, ir.Constant(i64, 0), whole, ir.Constant(i64, block)) as (p, _):
        body(p, block)
    with cgutils.for_range_slice(builder, whole, count, ir.Constant(i64, 1)) as (p, _):
        body(p, 1)


def _load8(builder, ptr, f16: bool):
    """8 f32 from ptr: f32 values, or f16 bits widened (exactly)."""
    v8 = ir.VectorType(ir.FloatType(), 8)
    if f16:
        bits = builder.load(builder.bitcast(ptr, ir.VectorType(ir.IntType(16), 8).as_pointer()), align=2)
        return builder.fpext(builder.bitcast(bits, ir.VectorType(ir.HalfType(), 8)), v8)
    return builder.load(builder.bitcast(ptr, v8.as_pointer()), align=4)


def _tree8(builder, v):
    """The fixed tree over a vector's 8 lanes: ((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7))."""
    e = [builder.extract_element(v, ir.Constant(ir.IntType(32), k)) for k in range(8)]
    pairs = [builder.fadd(e[0], e[1]), builder.fadd(e[2], e[3]), builder.fadd(e[4], e[5]), builder.fadd(e[6], e[7])]
    return builder.fadd(builder.fadd(pairs[0], pairs[1]), builder.fadd(pairs[2], pairs[3]))


def _trees8(builder, vs: list):
    """<8 x float> whose lane j is _tree8(vs[j]), the 8 trees together: each level adds the neighbouring lanes
    of two vectors at once (lanes 2i and 2i+1 of a, then of b), so level 3 holds ((e0+e1)+(e2+e3)) +
    ((e4+e5)+(e6+e7)) of every vector, as _tree8 adds them."""
    even, odd = _idx(range(0, 16, 2)), _idx(range(1, 16, 2))
    while len(vs) > 1:
        vs = [
            builder.fadd(builder.shuffle_vector(a, b, even), builder.shuffle_vector(a, b, odd))
            for a, b in zip(vs[0::2], vs[1::2])
        ]
    return vs[0]


def _trees(builder, vs: list):
    """<8 x float> whose lane j is _tree8(vs[j]) for 1, 2, 4 or 8 vectors: _trees8's levels, a vector paired with
    itself once the vectors run out (its lanes then hold each vector's subtrees side by side, and adding
    neighbours keeps the tree)."""
    even, odd = _idx(range(0, 16, 2)), _idx(range(1, 16, 2))
    for _ in range(3):
        pairs = list(zip(vs[0::2], vs[1::2])) if len(vs) > 1 else [(vs[0], vs[0])]
        vs = [builder.fadd(builder.shuffle_vector(a, b, even), builder.shuffle_vector(a, b, odd)) for a, b in pairs]
    return vs[0]


def _fmuladd8(builder, a, b, c):
    """a * b + c on <8 x float>, fused where the host has FMA (one instruction instead of two)."""
    v8 = ir.VectorType(ir.FloatType(), 8)
    return _call(builder, "llvm.fmuladd.v8f32", v8, a, b, c)


def _i64(builder, value):
    return builder.sext(value, ir.IntType(64)) if value.type.width < 64 else value


def _ptr(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _call(builder, name: str, ret, *args):
    fn = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(ret, [a.type for a in args]), name=name
    )
    return builder.call(fn, args)


def _host_has(*features: str) -> bool:
    """True when numba compiles for this host and the host has every feature (not a generic or cross target)."""
    # numba.config sets its settings as module globals at import, out of the type checker's sight
    if config.CPU_NAME not in (None, "host") or config.CPU_FEATURES:  # type: ignore[attr-defined]
        return False
    found = llvm_binding.get_host_cpu_features()
    return all(found.get(f, False) for f in features)


def has_avx2() -> bool:
    return _host_has("avx2")


def has_arm_dot() -> bool:
    """An aarch64 host with the dot-product extension whose code numba compiles with it: /proc/cpuinfo's
    `asimddp` and LLVM's `dotprod` among the host features (under qemu-user llvmlite names the CPU `generic`
    and LLVM could not emit sdot: such a host keeps the portable lowering), or EDGELLM_ARM_DOT=1 / 0 to force
    either way on aarch64 (1 with NUMBA_CPU_FEATURES carrying +dotprod)."""
    import os
    import platform

    if platform.machine().lower() not in ("aarch64", "arm64"):
        return False
    forced = os.environ.get("EDGELLM_ARM_DOT")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo") as fh:
            listed = any(line.startswith("Features") and "asimddp" in line.split() for line in fh)
    except OSError:
        return False
    return listed and _host_has("dotprod")


def has_vnni() -> bool:
    """AVX-512 with VNNI (the tiles use 512-bit vpdpbusd and 32 vector registers): Ice Lake and later Intel
    server cores, Zen 4 and later."""
    return _host_has("avx2", "avx512f", "avx512bw", "avx512vnni", "avx512vl")


def has_avx_vnni() -> bool:
    """AVX-VNNI: vpdpbusd on 256 bits without AVX-512 (Alder Lake and later client and Atom cores; Zen 5 has
    both and takes vnni)."""
    return _host_has("avx2", "avxvnni")


_PREFETCH = "llvm.prefetch.p0" if llvm_binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


def available_lowerings() -> list[str]:
    """The lowerings this host can run, best first (the first is the one the kernels use)."""
    found = (("vnni", has_vnni()), ("avxvnni", has_avx_vnni()), ("avx2", has_avx2()), ("dot", has_arm_dot()))
    out = [n for n, ok in found if ok]
    return out + ["portable"]


LOWERING = available_lowerings()[0]
