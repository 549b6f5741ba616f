"""f32 row kernels in vector IR (numba intrinsics): softmax's pieces, silu and activation quantization.

numba compiles np.exp to one libm call per element and will not vectorize a float max or a loop that rounds
and narrows to int8 (without fastmath, which ops.py forbids: see there). These spell the vector code out.
Every function works 8 lanes at a time and finishes the last count % 8 elements as 1-lane vectors of the very
same instructions, so an element's result never depends on where it sits or how long its row is.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import _broadcast, _call, _i64, _over, _ptr, _tree8, _vec

F32, I8, I32, I64 = ir.FloatType(), ir.IntType(8), ir.IntType(32), ir.IntType(64)

# expf as Cephes computes it: x = n ln2 + r with |r| <= ln2 / 2, exp(r) from a degree-5 polynomial, times 2^n
# put in the exponent bits. Within 2 ulp of the true exp. Plain fmul / fadd (no fused multiply-add), so every
# host gives the same bits. Inputs are clamped to [EXP_LO, EXP_HI], where 2^n stays a normal float.
EXP_LO, EXP_HI = -87.0, 88.0
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_LN2_HI, _LN2_LO, _LOG2E = 0.693359375, -2.12194440e-4, 1.44269504088896341


def _vf(k: int) -> ir.VectorType:
    return ir.VectorType(F32, k)


def _const(k: int, v: float) -> ir.Constant:
    return ir.Constant(_vf(k), [v] * k)


def _exp(builder, x):
    """exp(x) lane by lane, x a <k x float>."""
    k = x.type.count
    x = _call(builder, f"llvm.maxnum.v{k}f32", _vf(k), x, _const(k, EXP_LO))
    x = _call(builder, f"llvm.minnum.v{k}f32", _vf(k), x, _const(k, EXP_HI))
    n = _call(builder, f"llvm.floor.v{k}f32", _vf(k), builder.fadd(builder.fmul(x, _const(k, _LOG2E)), _const(k, 0.5)))
    r = builder.fsub(builder.fsub(x, builder.fmul(n, _const(k, _LN2_HI))), builder.fmul(n, _const(k, _LN2_LO)))
    p = _const(k, _EXP_POLY[0])
    for coef in _EXP_POLY[1:]:
        p = builder.fadd(builder.fmul(p, r), _const(k, coef))
    p = builder.fadd(builder.fadd(builder.fmul(p, builder.fmul(r, r)), r), _const(k, 1.0))
    bits = builder.shl(
        builder.add(builder.fptosi(n, _vec(k, 32)), ir.Constant(_vec(k, 32), [127] * k)),
        ir.Constant(_vec(k, 32), [23] * k),
    )
    return builder.fmul(p, builder.bitcast(bits, _vf(k)))


def _at(builder, base, p, ty):
    """Pointer to a `ty` at element p of base."""
    return builder.bitcast(builder.gep(base, [p]), ty.as_pointer())


def _lanes_max(builder, v8, v1):
    """The largest lane of an <8 x float> and a <1 x float> (maxnum: order does not matter)."""
    m = builder.extract_element(v1, ir.Constant(I32, 0))
    for lane in range(8):
        m = _call(builder, "llvm.maxnum.f32", F32, m, builder.extract_element(v8, ir.Constant(I32, lane)))
    return m


def _accumulators(builder, ty_of, init):
    """{8: acc, 1: acc} allocas of ty_of(k) holding init."""
    return {k: cgutils.alloca_once_value(builder, ir.Constant(ty_of(k), [init] * k)) for k in (8, 1)}


@intrinsic
def scale_max(typingctx, s, n, scale):
    """s[p] *= scale for p < n (s f32, contiguous); returns the largest (-inf when n is 0): attention's scaled
    scores and the maximum softmax subtracts."""
    sig = types.float32(s, n, types.float32)

    def codegen(context, builder, signature, args):
        ps, count = _ptr(context, builder, signature.args[0], args[0]), _i64(builder, args[1])
        best = _accumulators(builder, _vf, float("-inf"))

        def body(p, k):
            ptr = _at(builder, ps, p, _vf(k))
            v = builder.fmul(builder.load(ptr, align=4), _broadcast(builder, args[2], k))
            builder.store(v, ptr, align=4)
            builder.store(_call(builder, f"llvm.maxnum.v{k}f32", _vf(k), builder.load(best[k]), v), best[k])

        _over(builder, count, body)
        return _lanes_max(builder, builder.load(best[8]), builder.load(best[1]))

    return sig, codegen


@intrinsic
def exp_sum(typingctx, s, n, shift):
    """s[p] = exp(s[p] - shift) for p < n (s f32, contiguous); returns their sum: 8 lane sums (lane p mod 8,
    in p order) added in _tree8's fixed order, then the last n % 8 in order. Softmax's numerators and
    denominator."""
    sig = types.float32(s, n, types.float32)

    def codegen(context, builder, signature, args):
        ps, count = _ptr(context, builder, signature.args[0], args[0]), _i64(builder, args[1])
        sums = _accumulators(builder, _vf, 0.0)

        def body(p, k):
            ptr = _at(builder, ps, p, _vf(k))
            e = _exp(builder, builder.fsub(builder.load(ptr, align=4), _broadcast(builder, args[2], k)))
            builder.store(e, ptr, align=4)
            builder.store(builder.fadd(builder.load(sums[k]), e), sums[k])

        _over(builder, count, body)
        rest = builder.extract_element(builder.load(sums[1]), ir.Constant(I32, 0))
        return builder.fadd(_tree8(builder, builder.load(sums[8])), rest)

    return sig, codegen


@intrinsic
def silu_gate(typingctx, g, u, out, n):
    """out[i] = g[i] / (1 + exp(-g[i])) * u[i] for i < n (1-D f32, contiguous; out may be g): silu(gate) * up."""
    sig = types.void(g, u, out, n)

    def codegen(context, builder, signature, args):
        pg, pu, po = (_ptr(context, builder, signature.args[i], args[i]) for i in range(3))

        def body(p, k):
            gv = builder.load(_at(builder, pg, p, _vf(k)), align=4)
            uv = builder.load(_at(builder, pu, p, _vf(k)), align=4)
            e = _exp(builder, builder.fsub(_const(k, -0.0), gv))
            builder.store(
                builder.fmul(builder.fdiv(gv, builder.fadd(_const(k, 1.0), e)), uv),
                _at(builder, po, p, _vf(k)),
                align=4,
            )

        _over(builder, _i64(builder, args[3]), body)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def quantize_span(typingctx, x, lo, hi, end, xq, xs, xsum, g):
    """One activation group: s = max |x[lo:hi]| / 127, xq[j] = rint(x[j] / s) as int8 for lo <= j < hi (0 for
    hi <= j < end, the zero padding past the row), xs[g] = s, xsum[g] = the sum of those xq (s = 0: all 0).
    The arithmetic of a scalar loop (x * (1 / s), rint ties to even), so the same integers exactly."""
    sig = types.void(x, lo, hi, end, xq, xs, xsum, g)

    def codegen(context, builder, signature, args):
        px, pq = _ptr(context, builder, signature.args[0], args[0]), _ptr(context, builder, signature.args[4], args[4])
        lo, hi, end = (_i64(builder, a) for a in args[1:4])
        xg, qg = builder.gep(px, [lo]), builder.gep(pq, [lo])
        count = builder.sub(hi, lo)
        amax = _accumulators(builder, _vf, 0.0)

        def biggest(p, k):
            v = _call(builder, f"llvm.fabs.v{k}f32", _vf(k), builder.load(_at(builder, xg, p, _vf(k)), align=4))
            builder.store(_call(builder, f"llvm.maxnum.v{k}f32", _vf(k), builder.load(amax[k]), v), amax[k])

        _over(builder, count, biggest)
        s = builder.fdiv(_lanes_max(builder, builder.load(amax[8]), builder.load(amax[1])), ir.Constant(F32, 127.0))
        inv = builder.select(
            builder.fcmp_ordered(">", s, ir.Constant(F32, 0.0)),
            builder.fdiv(ir.Constant(F32, 1.0), s),
            ir.Constant(F32, 0.0),
        )
        sums = _accumulators(builder, lambda k: _vec(k, 32), 0)

        def codes(p, k):
            v = builder.fmul(builder.load(_at(builder, xg, p, _vf(k)), align=4), _broadcast(builder, inv, k))
            q = builder.fptosi(_call(builder, f"llvm.rint.v{k}f32", _vf(k), v), _vec(k, 32))
            builder.store(builder.trunc(q, _vec(k, 8)), _at(builder, qg, p, _vec(k, 8)), align=1)
            builder.store(builder.add(builder.load(sums[k]), q), sums[k])

        _over(builder, count, codes)
        with cgutils.for_range_slice(builder, hi, end, ir.Constant(I64, 1)) as (j, _):
            builder.store(ir.Constant(I8, 0), builder.gep(pq, [j]))
        s8 = builder.load(sums[8])
        total = builder.extract_element(builder.load(sums[1]), ir.Constant(I32, 0))
        for lane in range(8):
            total = builder.add(total, builder.extract_element(s8, ir.Constant(I32, lane)))
        gi = _i64(builder, args[7])
        builder.store(s, builder.gep(_ptr(context, builder, signature.args[5], args[5]), [gi]))
        builder.store(total, builder.gep(_ptr(context, builder, signature.args[6], args[6]), [gi]))
        return context.get_dummy_value()

    return sig, codegen
