"""Integer dot products written as LLVM vector IR (numba intrinsics).

numba types every integer expression as int64, so a hand-written int8 dot product runs in 64-bit lanes
(4 per AVX2 register, with slow 64-bit multiplies). These intrinsics spell out the narrow types — bytes
widened to i16, products summed in i16, widened to i32 only to reduce — and LLVM lowers them to 16-lane
integer SIMD on x86 (AVX2) and aarch64 (NEON) alike. On an AVX2 host the group-32 decode kernels call
two target intrinsics instead (pmaddubsw + pmaddwd: unsigned-by-signed byte products summed in pairs, the
way llama.cpp does it), because LLVM does not recognise that pattern from portable IR once the nibbles are
unpacked (5.1 -> 7.1 GB/s on a 5632x2048 q4 matrix); with AVX-512 VNNI one vpdpbusd does both; every other
host keeps the portable blocks. The choice is made once, at import, from the host's features.
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


def _ptr(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _x_i16(builder, load, xp, xo):
    """The group's 32 activation bytes as two <16 x i16> halves (portable blocks)."""
    lo = builder.sext(load(xp, xo, 16), _vec(16, 16))
    return lo, builder.sext(load(xp, builder.add(xo, ir.Constant(xo.type, 16)), 16), _vec(16, 16))


def _x_i8(builder, load, xp, xo):
    """The group's 32 activation bytes as one <32 x i8> (AVX2 blocks)."""
    return load(xp, xo, 32), None


def _q4_block(builder, load, cp, coff, xl, xh):
    """32 q4 weights (16 code bytes at cp+coff) . activation -> <8 x i32> partial sums."""
    c = load(cp, coff, 16)
    lo = builder.zext(builder.and_(c, _splat(16, 8, 15)), _vec(16, 16))
    hi = builder.zext(builder.lshr(c, _splat(16, 8, 4)), _vec(16, 16))
    return _pairs_i32(builder, builder.add(builder.mul(lo, xl), builder.mul(hi, xh)))  # |p| <= 3810


def _q8_block(builder, load, cp, coff, xl, xh):
    """32 q8 weights (32 code bytes at cp+coff) . activation -> <8 x i32> partial sums."""
    lo = builder.sext(load(cp, coff, 16), _vec(16, 16))
    hi = builder.sext(load(cp, builder.add(coff, ir.Constant(coff.type, 16)), 16), _vec(16, 16))
    # 127 * 127 = 16129: each product fits i16, their sums are taken in i32
    return builder.add(_pairs_i32(builder, builder.mul(lo, xl)), _pairs_i32(builder, builder.mul(hi, xh)))


def _dot16(builder, a, b):
    """<16 x i8> . <16 x i8> (both signed) -> <4 x i32>: each lane the sum of four products. Written as a
    partial reduction of i8 widened straight to i32, the one shape LLVM lowers to sdot on an aarch64 core with
    the dot-product extension (Cortex-A76 and later: the Pi 5, most phones); elsewhere to plain NEON / SSE."""
    wide = _vec(16, 32)
    m = builder.mul(builder.sext(a, wide), builder.sext(b, wide))
    zero = ir.Constant(_vec(4, 32), [0] * 4)
    return _call(builder, "llvm.vector.partial.reduce.add.v4i32.v16i32", _vec(4, 32), zero, m)


def _concat8(builder, lo, hi):
    """Two <4 x i32> -> <8 x i32>: the blocks' contract is 8 partial sums."""
    return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(ir.IntType(32), 8), list(range(8))))


def _q4_block_dot(builder, load, cp, coff, x, _):
    """sum (nibble - 8) * x of 32 q4 weights, through _dot16. The nibbles are made signed in the bytes (a
    4-bit n XOR 8, sign-extended, is n - 8): unsigned 0..15 let LLVM prove them non-negative and it then
    lowers to smull/smlal, never sdot."""
    c = builder.xor(load(cp, coff, 16), _splat(16, 8, 0x88))
    four = _splat(16, 8, 4)
    lo = builder.ashr(builder.shl(c, four), four)
    hi = builder.ashr(c, four)
    xl = _x_half(builder, x, 0)
    xh = _x_half(builder, x, 16)
    return _concat8(builder, _dot16(builder, lo, xl), _dot16(builder, hi, xh))


def _q8_block_dot(builder, load, cp, coff, x, _):
    """As _q8_block, through _dot16."""
    lo = load(cp, coff, 16)
    hi = load(cp, builder.add(coff, ir.Constant(coff.type, 16)), 16)
    return _concat8(builder, _dot16(builder, lo, _x_half(builder, x, 0)), _dot16(builder, hi, _x_half(builder, x, 16)))


def _x_half(builder, x, start: int):
    """Bytes start..start+15 of a <32 x i8> activation block."""
    idx = ir.Constant(ir.VectorType(ir.IntType(32), 16), list(range(start, start + 16)))
    return builder.shuffle_vector(x, x, idx)


def _call(builder, name: str, ret, *args):
    fn = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(ret, [a.type for a in args]), name=name
    )
    return builder.call(fn, args)


def _bytes_dot_avx2(builder, u, s):
    """<32 x u8> . <32 x s8> -> <8 x i32>: pmaddubsw sums byte products in i16 pairs (|pair| <= 2 * 128 * 127,
    no saturation), pmaddwd by ones sums those pairs into i32."""
    p16 = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(16, 16), u, s)
    return _call(builder, "llvm.x86.avx2.pmadd.wd", _vec(8, 32), p16, _splat(16, 16, 1))


def _bytes_dot_vnni(builder, u, s):
    """As _bytes_dot_avx2 in one instruction: vpdpbusd sums groups of four u8 x s8 products into i32 lanes
    (AVX-512 VNNI with VL, on 256-bit registers)."""
    i32x8 = _vec(8, 32)
    zero = ir.Constant(i32x8, [0] * 8)
    return _call(
        builder, "llvm.x86.avx512.vpdpbusd.256", i32x8, zero, builder.bitcast(u, i32x8), builder.bitcast(s, i32x8)
    )


def _q4_bytes(builder, load, cp, coff):
    """16 q4 code bytes -> 32 unsigned bytes: low nibbles then high nibbles, in the activation's order."""
    c = load(cp, coff, 16)
    both = builder.shuffle_vector(
        c, builder.lshr(c, _splat(16, 8, 4)), ir.Constant(ir.VectorType(ir.IntType(32), 32), list(range(32)))
    )
    return builder.and_(both, _splat(32, 8, 15))


def _q8_signed(builder, load, cp, coff, x):
    """32 q8 codes as (|w|, x carrying w's sign): the u8 x s8 instructions want an unsigned operand."""
    w = load(cp, coff, 32)
    neg = builder.icmp_signed("<", w, _splat(32, 8, 0))
    absw = builder.select(neg, builder.sub(_splat(32, 8, 0), w), w)
    return absw, _call(builder, "llvm.x86.avx2.psign.b", _vec(32, 8), x, w)


def _q4_block_avx2(builder, load, cp, coff, x, _):
    """As _q4_block, through pmaddubsw + pmaddwd."""
    return _bytes_dot_avx2(builder, _q4_bytes(builder, load, cp, coff), x)


def _q8_block_avx2(builder, load, cp, coff, x, _):
    """As _q8_block, through psign + pmaddubsw + pmaddwd."""
    return _bytes_dot_avx2(builder, *_q8_signed(builder, load, cp, coff, x))


def _q4_block_vnni(builder, load, cp, coff, x, _):
    """As _q4_block, through vpdpbusd."""
    return _bytes_dot_vnni(builder, _q4_bytes(builder, load, cp, coff), x)


def _q8_block_vnni(builder, load, cp, coff, x, _):
    """As _q8_block, through psign + vpdpbusd."""
    return _bytes_dot_vnni(builder, *_q8_signed(builder, load, cp, coff, x))


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
    """An aarch64 host with the dot-product extension: /proc/cpuinfo's `asimddp` (llvmlite names the CPU
    `generic` under qemu, so its features are not asked), or EDGELLM_ARM_DOT=1 / 0 to force either way. Needs
    LLVM's partial-reduction intrinsic (LLVM 22, numba 0.68)."""
    import os
    import platform

    forced = os.environ.get("EDGELLM_ARM_DOT")
    if forced in ("0", "1"):
        return forced == "1" and llvm_binding.llvm_version_info >= (22,)
    if platform.machine().lower() not in ("aarch64", "arm64") or llvm_binding.llvm_version_info < (22,):
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("Features") and "asimddp" in line.split() for line in fh)
    except OSError:
        return False


def has_vnni() -> bool:
    """AVX-512 VNNI with 256-bit forms (VL): Ice Lake and later Intel server cores, Zen 4 and later."""
    return _host_has("avx2", "avx512vnni", "avx512vl")


def _pairs_i32(builder, p):
    """<16 x i16> -> <8 x i32>: p[2i] + p[2i+1] (pmaddwd / vphaddw + widen; addp on NEON)."""
    even = ir.Constant(ir.VectorType(ir.IntType(32), 8), list(range(0, 16, 2)))
    odd = ir.Constant(ir.VectorType(ir.IntType(32), 8), list(range(1, 16, 2)))
    pe = builder.sext(builder.shuffle_vector(p, p, even), _vec(8, 32))
    po = builder.sext(builder.shuffle_vector(p, p, odd), _vec(8, 32))
    return builder.add(pe, po)


def _rows4(block, code_stride: int, x_prep, offset: str):
    """An intrinsic computing four rows' dot products with a quantized activation, group 32.

    Arguments: (codes, c0..c3, scales, s0..s3, mins, xq, xs, xsum, ng, shift) where codes/scales/mins are
    flat (code bytes, f16 scale and min bits), c0..c3 / s0..s3 the rows' first code byte / scale (and min)
    index, ng the 32-weight blocks per row, and xq int8[ng*32], xs f32[ng], xsum i32[ng] come from
    quantize_activation at group 32. Block g takes weight scale s_r + (g >> shift): a weight group of
    32 << shift spans that many blocks. `offset` says what a block's integer dot leaves out: "none" (q8's
    signed codes, or a q4 block that gives sum (n - 8) x itself), "minus8" (q4: nibble n stands for n - 8),
    "mins" (q4a: + the group's min; `mins` is read only for these two), "mins8" (q4a through a block that gives
    sum (n - 8) x: + min + 8 * scale). Returns a 4-tuple of float32. The loop over groups is written here so
    each row keeps an 8-lane float accumulator in registers: a group's integer dot is scaled and added
    lane-wise, and the horizontal sum happens once per row instead of once per group (numba cannot hold a SIMD
    vector across loop iterations).
    """

    def rows4(typingctx, codes, c0, c1, c2, c3, scales, s0, s1, s2, s3, mins, xq, xs, xsum, ng, shift):
        args = (codes, c0, c1, c2, c3, scales, s0, s1, s2, s3, mins, xq, xs, xsum, ng, shift)
        sig = types.UniTuple(types.float32, 4)(*args)
        return sig, lambda context, builder, signature, args: _rows4_codegen(
            context, builder, signature, args, block, code_stride, x_prep, offset
        )

    return intrinsic(rows4)


PREFETCH_TILES = 2  # 1, 2 and 4 measured alike (13.6-13.8 GB/s on a 5632x2048 q4 matrix from DRAM)


_PREFETCH = "llvm.prefetch.p0" if llvm_binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


def _prefetch_ahead(builder, cp, c0, g, ng, code_stride):
    """Software-prefetch the tile PREFETCH_TILES ahead (rows r0+4.., contiguous after this tile), one
    group's share of it per group. A tile's four rows are four short streams (1 KiB each for 2048 columns)
    inside one page: the hardware prefetcher barely starts on them, and decode from DRAM ran at half the
    in-cache speed without this."""
    i64 = ir.IntType(64)
    tile = builder.mul(ng, ir.Constant(i64, 4 * code_stride))
    base = builder.add(
        builder.add(c0, builder.mul(tile, ir.Constant(i64, PREFETCH_TILES))),
        builder.mul(g, ir.Constant(i64, 4 * code_stride)),
    )
    i8p = ir.IntType(8).as_pointer()
    name = _PREFETCH  # the intrinsic's name carries the pointer type: "p0i8" before LLVM's opaque pointers
    fn = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)]), name=name
    )
    for line in range(0, 4 * code_stride, 64):
        addr = builder.bitcast(builder.gep(cp, [builder.add(base, ir.Constant(i64, line))]), i8p)
        builder.call(
            fn, [addr, ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 3), ir.Constant(ir.IntType(32), 1)]
        )


def _half(builder, ptr, index):
    """The f16 at ptr[index] (u16 bits) as float32."""
    bits = builder.load(builder.gep(ptr, [index]))
    return builder.fpext(builder.bitcast(builder.trunc(bits, ir.IntType(16)), ir.HalfType()), ir.FloatType())


def _rows4_codegen(context, builder, signature, args, block, code_stride, x_prep, offset):
    at = signature.args
    cp, sp = _ptr(context, builder, at[0], args[0]), _ptr(context, builder, at[5], args[5])
    mp = _ptr(context, builder, at[10], args[10])
    xp, xsp = _ptr(context, builder, at[11], args[11]), _ptr(context, builder, at[12], args[12])
    xsump = _ptr(context, builder, at[13], args[13])
    cofs, sofs, n, shift = args[1:5], args[6:10], args[14], args[15]
    i64, i32, flt = ir.IntType(64), ir.IntType(32), ir.FloatType()
    v8f = ir.VectorType(flt, 8)
    fmuladd = builder.module.globals.get("llvm.fmuladd.v8f32") or ir.Function(
        builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), name="llvm.fmuladd.v8f32"
    )

    def load(ptr, off, n_):
        return builder.load(builder.bitcast(builder.gep(ptr, [off]), _vec(n_, 8).as_pointer()), align=1)

    entry = builder.block
    loop = builder.append_basic_block("rows4.loop")
    done = builder.append_basic_block("rows4.done")
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(n.type, 0)), loop, done)
    builder.position_at_end(loop)
    g = builder.phi(i64)
    accs = [builder.phi(v8f) for _ in range(4)]
    corrs = [builder.phi(flt) for _ in range(4)]
    xo = builder.mul(g, ir.Constant(i64, 32))
    xl, xh = x_prep(builder, load, xp, xo)
    _prefetch_ahead(builder, cp, cofs[0], g, n, code_stride)
    xscale = builder.load(builder.gep(xsp, [g]))
    xsumf = builder.sitofp(builder.load(builder.gep(xsump, [g])), flt)
    new_accs, new_corrs = [], []
    for r in range(4):
        coff = builder.add(cofs[r], builder.mul(g, ir.Constant(i64, code_stride)))
        pf = builder.sitofp(block(builder, load, cp, coff, xl, xh), v8f)
        si = builder.add(sofs[r], builder.ashr(g, shift))
        s = builder.fmul(_half(builder, sp, si), xscale)
        sv = builder.insert_element(ir.Constant(v8f, ir.Undefined), s, ir.Constant(i32, 0))
        sv = builder.shuffle_vector(sv, sv, ir.Constant(ir.VectorType(i32, 8), [0] * 8))
        new_accs.append(builder.call(fmuladd, [pf, sv, accs[r]]))
        # the offset term, sum_g c_g * xs_g * sum(xq_g): c = the weight scale (minus8), the group's min (mins),
        # or min + 8 * scale (mins8: the block gave sum (n - 8) x)
        if offset == "mins":
            c = builder.fmul(_half(builder, mp, si), xscale)
        elif offset == "mins8":
            m8 = builder.fadd(_half(builder, mp, si), builder.fmul(ir.Constant(flt, 8.0), _half(builder, sp, si)))
            c = builder.fmul(m8, xscale)
        else:
            c = s
        new_corrs.append(builder.fadd(corrs[r], builder.fmul(c, xsumf)))
    g_next = builder.add(g, ir.Constant(i64, 1))
    body_end = builder.block
    builder.cbranch(builder.icmp_signed("<", g_next, n), loop, done)
    g.add_incoming(ir.Constant(i64, 0), entry)
    g.add_incoming(g_next, body_end)
    for r in range(4):
        accs[r].add_incoming(ir.Constant(v8f, [0.0] * 8), entry)
        accs[r].add_incoming(new_accs[r], body_end)
        corrs[r].add_incoming(ir.Constant(flt, 0.0), entry)
        corrs[r].add_incoming(new_corrs[r], body_end)

    builder.position_at_end(done)
    final = []  # phis first: the block is reached from the loop or, for ng == 0, entry
    for r in range(4):
        acc, corr = builder.phi(v8f), builder.phi(flt)
        acc.add_incoming(ir.Constant(v8f, [0.0] * 8), entry)
        acc.add_incoming(new_accs[r], body_end)
        corr.add_incoming(ir.Constant(flt, 0.0), entry)
        corr.add_incoming(new_corrs[r], body_end)
        final.append((acc, corr))
    res = []
    for acc, corr in final:
        total = builder.extract_element(acc, ir.Constant(i32, 0))
        for k in range(1, 8):
            total = builder.fadd(total, builder.extract_element(acc, ir.Constant(i32, k)))
        # q4 nibbles v stand for v - 8: subtract 8 * sum_g s_g * sum(x_g); q4a adds sum_g m_g * sum(x_g);
        # q8 codes are signed already
        if offset == "minus8":
            total = builder.fsub(total, builder.fmul(ir.Constant(flt, 8.0), corr))
        elif offset in ("mins", "mins8"):
            total = builder.fadd(total, corr)
        res.append(total)
    return context.make_tuple(builder, signature.return_type, res)


def _lowering(q4_block, q8_block, x_prep, q4_offset: str = "minus8", q4a_offset: str = "mins") -> dict:
    """stype -> (block, code bytes per 32 weights, activation form, offset mode) of one lowering."""
    return {
        "q4": (q4_block, 16, x_prep, q4_offset),
        "q4a": (q4_block, 16, x_prep, q4a_offset),
        "q8": (q8_block, 32, x_prep, "none"),
    }


# every lowering of the group-32 blocks; one is chosen at import (available_lowerings)
LOWERINGS = {
    "vnni": _lowering(_q4_block_vnni, _q8_block_vnni, _x_i8),
    "avx2": _lowering(_q4_block_avx2, _q8_block_avx2, _x_i8),
    # its q4 block yields sum (n - 8) x itself: the signed codes keep LLVM's sdot pattern
    "dot": _lowering(_q4_block_dot, _q8_block_dot, _x_i8, q4_offset="none", q4a_offset="mins8"),
    "portable": _lowering(_q4_block, _q8_block, _x_i16),
}


def available_lowerings() -> list[str]:
    """The lowerings this host can run, best first (the first is the one the kernels use)."""
    out = [n for n, ok in (("vnni", has_vnni()), ("avx2", has_avx2()), ("dot", has_arm_dot())) if ok]
    return out + ["portable"]


LOWERING = available_lowerings()[0]
q4_g32_rows4, q4a_g32_rows4, q8_g32_rows4 = (_rows4(*LOWERINGS[LOWERING][t]) for t in ("q4", "q4a", "q8"))
