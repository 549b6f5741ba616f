"""Integer dot products written as portable LLVM vector IR (numba intrinsics).

numba types every integer expression as int64, so a hand-written int8 dot product runs in 64-bit lanes
(4 per AVX2 register, with slow 64-bit multiplies). These intrinsics spell out the narrow types — bytes
widened to i16, products summed in i16, widened to i32 only to reduce — and LLVM lowers them to 16-lane
integer SIMD on x86 (AVX2) and aarch64 (NEON) alike. No target-specific instruction is named here.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
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
        builder.module, ir.FunctionType(v.type.element, [v.type]), name=name)
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
def q8_dot32(typingctx, codes, coff, xq, xoff):
    """sum_j codes[coff+j] * xq[xoff+j], j < 32, both int8, as int32."""
    sig = types.int32(codes, coff, xq, xoff)

    def codegen(context, builder, signature, args):
        ca, co, xa, xo = args
        c = builder.sext(_load(context, builder, signature.args[0], ca, co, 32), _vec(32, 16))
        x = builder.sext(_load(context, builder, signature.args[2], xa, xo, 32), _vec(32, 16))
        # 127 * 127 = 16129 fits in i16; the sum is taken in i32
        return _reduce_add(builder, builder.sext(builder.mul(c, x), _vec(32, 32)))

    return sig, codegen
