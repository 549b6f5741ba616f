"""Rows in lanes: a tile of weight rows x up to TOKENS tokens per integer kernel call (LLVM vector IR, numba
intrinsics).

simd.py's blocks put 32 weights of one row in a vector and reduce it horizontally: fine for one token, but a
second token would need its own accumulators per row. Here lane r of every vector belongs to weight row r (the
layout of llama.cpp's repacked kernels, reached here by transposing in registers, so the file keeps its
row-major layout): a step multiplies 4 consecutive weights of each row of the tile (one i32 lane each) by the
same 4 activation bytes broadcast to every lane, so one weight vector serves every token of the tile, each
token keeps one integer and one float vector, and a block ends with one scale multiply for all the rows (their
f16 scales widened together). Prefill runs it over tiles of tokens, so the weights stream from memory once
per token tile; decode is a tile of one token, and since every token runs the same instruction sequence in
any tile width, a token's numbers do not depend on how many tokens shared its tile (speculative
verification gives exactly decode's).

Per token t, row r, 32-weight block g: acc += float(dot - bias) * (scale[r, g] * xs[t, g]) (+ min[r, g] *
xs * xsum for q4a), with xq/xs/xsum from matvec.quantize_activation at group 32.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import _PREFETCH, LOWERING, _broadcast, _call, _idx, _ptr, _splat, _vec

# rows per tile: a 512-bit vector with AVX-512 (vnni-ir: vnni with its one instruction as generic IR, for tests)
ROWS_OF = {"vnni": 16, "vnni-ir": 16, "avxvnni": 8, "avx2": 8, "dot": 8, "portable": 8}
VNNI = ("vnni", "vnni-ir", "avxvnni")  # vpdpbusd: u8 x i8 summed in i32, hence q8's +128 against the block sums
ROWS = ROWS_OF[LOWERING]
TOKENS = 8 if LOWERING == "vnni" else 4  # token slots per prefill tile: 2 vectors per token and 4-8 weight
# vectors must stay in registers (32 with AVX-512, 16 with AVX2 or NEON)
PREFETCH_ROWS = 16  # how far ahead the next tiles are fetched (8-row tiles: 2 ahead and 1 alike, 4 slower;
# 16-row tiles: 1 ahead 38 GB/s, 2 ahead 37, 3 ahead 34 on a 5632x2048 q4 matrix from DRAM)

i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()


def _vf(rows: int) -> ir.VectorType:
    return ir.VectorType(F32, rows)


def _dot4(lowering: str, builder, acc, a, b, a_signed: bool):
    """acc (<R x i32>) + per lane the sum of 4 byte products a[4l+i] * b[4l+i], a and b <4R x i8>; b is
    signed, a unsigned unless a_signed. The VNNI lowerings and avx2 need an unsigned a (avx2's pmaddubsw sums
    pairs in i16: the callers keep |pair| <= 2 * 127 * 128). "vnni-ir": the vnni lowering with vpdpbusd
    spelled as the generic IR of its definition (what the portable branch computes), so hosts without AVX-512
    test it. avxvnni's 256-bit intrinsic is AVX-512 VL's too: LLVM encodes it VEX where AVX-512 is absent."""
    rows = acc.type.count
    vi = _vec(rows, 32)
    if lowering in ("vnni", "avxvnni") and not a_signed:
        name = f"llvm.x86.avx512.vpdpbusd.{32 * rows}"
        return _call(builder, name, vi, acc, builder.bitcast(a, vi), builder.bitcast(b, vi))
    if lowering == "avx2" and not a_signed:
        p16 = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(16, 16), a, b)
        return builder.add(acc, _call(builder, "llvm.x86.avx2.pmadd.wd", vi, p16, _splat(16, 16, 1)))
    if lowering == "dot":  # aarch64 sdot per 128-bit quarter (both operands signed: a's codes are < 128)
        parts = []
        for h in range(0, 4 * rows, 16):
            ah, bh = (
                builder.shuffle_vector(a, a, _idx(range(h, h + 16))),
                builder.shuffle_vector(b, b, _idx(range(h, h + 16))),
            )
            acc_h = builder.shuffle_vector(acc, acc, _idx(range(h // 4, h // 4 + 4)))
            parts.append(_call(builder, "llvm.aarch64.neon.sdot.v4i32.v16i8", _vec(4, 32), acc_h, ah, bh))
        return _concat(builder, parts)
    wide = _vec(4 * rows, 32)
    aw = builder.sext(a, wide) if a_signed else builder.zext(a, wide)
    m = builder.mul(aw, builder.sext(b, wide))
    total = acc
    for i in range(4):
        total = builder.add(total, builder.shuffle_vector(m, m, _idx(4 * lane + i for lane in range(rows))))
    return total


def _concat(builder, parts: list):
    """Equal vectors joined end to end, pairwise."""
    while len(parts) > 1:
        n = parts[0].type.count
        parts = [builder.shuffle_vector(parts[i], parts[i + 1], _idx(range(2 * n))) for i in range(0, len(parts), 2)]
    return parts[0]


def _transpose(builder, rows: list) -> list:
    """R row vectors of w i32 each -> w vectors of R i32, vector d holding every row's dword d."""
    width = rows[0].type.count
    every = _concat(builder, rows)
    return [builder.shuffle_vector(every, every, _idx(r * width + d for r in range(len(rows)))) for d in range(width)]


def _prefetch(builder, ptr, off):
    name = _PREFETCH
    i8p = i8.as_pointer()
    fn = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), name=name
    )
    addr = builder.bitcast(builder.gep(ptr, [off]), i8p)
    builder.call(fn, [addr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])


def _prefetch_ahead(builder, cp, sp, c0, s0, rb, ngs, g, stride: int, rows: int):
    """Software-prefetch the tile PREFETCH_ROWS rows ahead, a block's share of it per block: a tile's rows are
    contiguous (rows * row bytes) but read as that many short interleaved streams, which the hardware
    prefetcher follows badly (TinyLlama q4 decode 42 -> 51 tok/s with this). Its scales too, a line a block."""
    c = lambda v: ir.Constant(i64, v)  # noqa: E731
    ahead_rows = max(rows, PREFETCH_ROWS)
    ahead = builder.add(c0, builder.mul(rb, c(ahead_rows)))
    base = builder.add(ahead, builder.mul(g, c(rows * stride)))
    for line in range(0, rows * stride, 64):
        _prefetch(builder, cp, builder.add(base, c(line)))
    sahead = builder.add(s0, builder.mul(ngs, c(ahead_rows)))
    _prefetch(builder, sp, builder.add(sahead, builder.mul(g, c(rows))))


def _tile_codegen(context, builder, signature, args, kind: str, lowering: str, tokens: int, packed: bool):
    R = ROWS_OF[lowering]
    vnni = lowering in VNNI
    VF, VI = _vf(R), _vec(R, 32)
    at = signature.args
    (codes, rb, scales, mins, ngs, r0, n, xq, xs, xsum, px, ngx, tok0, ntok, out, ocol, nb, shift) = args
    cp, sp, mp = (
        _ptr(context, builder, at[0], codes),
        _ptr(context, builder, at[2], scales),
        _ptr(context, builder, at[3], mins),
    )
    xp, xsp, xsump = (
        _ptr(context, builder, at[7], xq),
        _ptr(context, builder, at[8], xs),
        _ptr(context, builder, at[9], xsum),
    )
    oary = context.make_array(at[14])(context, builder, out)
    op = builder.bitcast(oary.data, i8.as_pointer())  # out's rows are addressed by its byte stride
    ostride = cgutils.unpack_tuple(builder, oary.strides, 2)[0]
    fname = f"llvm.fmuladd.v{R}f32"
    fmuladd = builder.module.globals.get(fname) or ir.Function(
        builder.module, ir.FunctionType(VF, [VF, VF, VF]), name=fname
    )
    c = lambda v: ir.Constant(i64, v)  # noqa: E731
    last = builder.sub(n, c(1))
    rows = []
    for r in range(R):
        ri = builder.add(r0, c(r))
        rows.append(builder.select(builder.icmp_signed(">", ri, last), last, ri))  # a short tile repeats its last row
    cbase = [builder.mul(r, rb) for r in rows]
    sbase = [builder.mul(r, ngs) for r in rows]
    tlast = builder.sub(ntok, c(1))
    toks = [
        builder.add(tok0, builder.select(builder.icmp_signed(">", c(j), tlast), tlast, c(j))) for j in range(tokens)
    ]
    xbase = [builder.mul(t, px) for t in toks]
    xgbase = [builder.mul(t, ngx) for t in toks]

    def load(ptr, off, ty):
        return builder.load(builder.bitcast(builder.gep(ptr, [off]), ty.as_pointer()), align=1)

    entry = builder.block
    loop = builder.append_basic_block("lanes.loop")
    done = builder.append_basic_block("lanes.done")
    builder.cbranch(builder.icmp_signed(">", nb, c(0)), loop, done)
    builder.position_at_end(loop)
    g = builder.phi(i64)
    accs = [builder.phi(VF) for _ in range(tokens)]

    _prefetch_ahead(builder, cp, sp, cbase[0], sbase[0], rb, ngs, g, 32 if kind == "q8" else 16, R)
    # the tile's weights of block g as steps: (weight vector, activation dword, the signed weights for avx2's q8)
    steps: list[tuple] = []
    wsum = None  # q8 through vnni: sum of each row's block, for the +128 taken on the activations
    dwords = 8 if kind == "q8" else 4  # dwords of one row's 32-weight block

    def block_vectors():
        """vs[d] = every row's dword d of block g, lane r for row r: loaded so from a packed tile, transposed
        in registers from row-major rows."""
        if packed:  # tile bytes [g][d][r][4]
            first = builder.add(cbase[0], builder.mul(g, c(dwords * 4 * R)))
            return [load(cp, builder.add(first, c(d * 4 * R)), VI) for d in range(dwords)]
        off = builder.mul(g, c(4 * dwords))
        return _transpose(builder, [load(cp, builder.add(b, off), _vec(dwords, 32)) for b in cbase])

    if kind == "q8":
        vs = block_vectors()
        w8 = [builder.bitcast(v, _vec(4 * R, 8)) for v in vs]
        steps = [(w8[d], d, None) for d in range(8)]
        if vnni:
            wsum = ir.Constant(VI, [0] * R)
            for w in w8:
                wsum = _dot4(lowering, builder, wsum, _splat(4 * R, 8, 1), w, False)
            wsum = builder.shl(wsum, ir.Constant(VI, [7] * R))
    else:
        vs = block_vectors()
        nib = ir.Constant(VI, [0x0F0F0F0F] * R)
        for d, v in enumerate(vs):
            steps.append((builder.bitcast(builder.and_(v, nib), _vec(4 * R, 8)), d, None))  # weights 4d..
            hi = builder.and_(builder.lshr(v, ir.Constant(VI, [4] * R)), nib)
            steps.append((builder.bitcast(hi, _vec(4 * R, 8)), 4 + d, None))  # weights 16 + 4d..
    if kind == "q8" and lowering == "avx2":  # |w| and the sign moved onto the activation (pmaddubsw: a >= 0)
        zero8 = _splat(4 * R, 8, 0)
        steps = [
            (builder.select(builder.icmp_signed("<", w, zero8), builder.sub(zero8, w), w), d, w) for w, d, _ in steps
        ]

    # the tile's scales (and mins) of block g, widened together
    si = [builder.add(b, builder.ashr(g, shift)) for b in sbase]

    def halves(ptr):
        if packed:  # a tile's scales (mins) [scale group][r]
            off = builder.add(sbase[0], builder.mul(builder.ashr(g, shift), c(R)))
            v = load(ptr, off, ir.VectorType(i16, R))
            return builder.fpext(builder.bitcast(v, ir.VectorType(ir.HalfType(), R)), VF)
        v = ir.Constant(ir.VectorType(i16, R), ir.Undefined)
        for r in range(R):
            v = builder.insert_element(v, builder.load(builder.gep(ptr, [si[r]])), ir.Constant(i32, r))
        return builder.fpext(builder.bitcast(v, ir.VectorType(ir.HalfType(), R)), VF)

    svec = halves(sp)
    mvec = halves(mp) if kind == "q4a" else None
    # avx2 with nibbles: the block's pmaddubsw pairs summed in i16 (8 steps x 2 x 15 x 128 = 30720 < 2^15) and
    # widened once by pmaddwd, instead of once a step: the same integers, 7 fewer instructions a block a token
    pairs16 = lowering == "avx2" and kind != "q8"
    new_accs = []
    for j in range(tokens):
        dot = ir.Constant(VI, [0] * R)
        p16 = None
        xo = builder.add(xbase[j], builder.mul(g, c(32)))
        for step in steps:
            xd = builder.load(
                builder.bitcast(builder.gep(xp, [builder.add(xo, c(4 * step[1]))]), i32.as_pointer()), align=1
            )
            if kind == "q8" and vnni:  # x + 128 as u8 against the signed weights
                a, b = (
                    builder.bitcast(
                        _broadcast(builder, builder.xor(xd, ir.Constant(i32, 0x80808080)), R), _vec(4 * R, 8)
                    ),
                    step[0],
                )
                dot = _dot4(lowering, builder, dot, a, b, False)
            elif kind == "q8" and lowering == "avx2":
                xb = builder.bitcast(_broadcast(builder, xd, R), _vec(4 * R, 8))
                b = _call(builder, "llvm.x86.avx2.psign.b", _vec(32, 8), xb, step[2])
                dot = _dot4(lowering, builder, dot, step[0], b, False)
            elif pairs16:
                xb = builder.bitcast(_broadcast(builder, xd, R), _vec(4 * R, 8))
                m = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _vec(16, 16), step[0], xb)
                p16 = m if p16 is None else builder.add(p16, m)
            else:
                xb = builder.bitcast(_broadcast(builder, xd, R), _vec(4 * R, 8))
                dot = _dot4(lowering, builder, dot, step[0], xb, kind == "q8")
        if p16 is not None:
            dot = _call(builder, "llvm.x86.avx2.pmadd.wd", VI, p16, _splat(16, 16, 1))
        gi = builder.add(xgbase[j], g)
        xsj = builder.load(builder.gep(xsp, [gi]))
        if kind == "q4":  # nibble v stands for v - 8
            dot = builder.sub(
                dot, _broadcast(builder, builder.mul(builder.load(builder.gep(xsump, [gi])), ir.Constant(i32, 8)), R)
            )
        elif wsum is not None:
            dot = builder.sub(dot, wsum)
        scale = builder.fmul(svec, _broadcast(builder, xsj, R))
        acc = builder.call(fmuladd, [builder.sitofp(dot, VF), scale, accs[j]])
        if mvec is not None:
            xm = builder.fmul(xsj, builder.sitofp(builder.load(builder.gep(xsump, [gi])), F32))
            acc = builder.call(fmuladd, [mvec, _broadcast(builder, xm, R), acc])
        new_accs.append(acc)
    g_next = builder.add(g, c(1))
    body_end = builder.block
    builder.cbranch(builder.icmp_signed("<", g_next, nb), loop, done)
    g.add_incoming(c(0), entry)
    g.add_incoming(g_next, body_end)
    for j in range(tokens):
        accs[j].add_incoming(ir.Constant(VF, [0.0] * R), entry)
        accs[j].add_incoming(new_accs[j], body_end)

    builder.position_at_end(done)
    final = []
    for j in range(tokens):
        acc = builder.phi(VF)
        acc.add_incoming(ir.Constant(VF, [0.0] * R), entry)
        acc.add_incoming(new_accs[j], body_end)
        final.append(acc)
    for j in range(tokens):  # slots past the last token repeat it: the same values to the same place
        o = builder.add(builder.mul(toks[j], ostride), builder.mul(ocol, c(4)))
        builder.store(final[j], builder.bitcast(builder.gep(op, [o]), VF.as_pointer()), align=4)
    return context.get_dummy_value()


def _tile(kind: str, lowering: str, tokens: int, packed: bool = False):
    """An intrinsic: tile(codes, row_bytes, scales, mins, scale_groups, r0, n, xq, xs, xsum, x_stride,
    x_groups, tok0, ntok, out, out_col, nb, shift) computes rows r0..r0+R-1 (R = ROWS_OF[lowering]; rows
    past n - 1 repeat it) for tokens tok0..tok0+ntok-1 (ntok <= tokens; slots past it repeat the last) and
    stores each token's R floats at out[tok, out_col:] (out 2-D f32, any row stride). codes, scales, mins
    are flat (bytes, f16 bits); xq/xs/xsum flat [tokens, ...] at strides x_stride bytes / x_groups; nb
    32-weight blocks per row; a scale spans 1 << shift blocks. `packed`: the tile's rows are stored as pack()
    leaves them (a whole tile only: r0 + R <= n)."""

    def tile(typingctx, codes, rb, scales, mins, ngs, r0, n, xq, xs, xsum, px, ngx, tok0, ntok, out, ocol, nb, shift):
        args = (codes, rb, scales, mins, ngs, r0, n, xq, xs, xsum, px, ngx, tok0, ntok, out, ocol, nb, shift)
        return types.none(*args), lambda context, builder, signature, a: _tile_codegen(
            context, builder, signature, a, kind, lowering, tokens, packed
        )

    return intrinsic(tile)


KIND = {"q8": 0, "q4": 1, "q4a": 2}  # the stored types of the tiles, as numba sees them
PACKED = 3  # kind + PACKED: the matrix's whole tiles are packed (pack())
WIDE = TOKENS == 8  # 8-token tiles are compiled only where they are used
SLOTS = (8, 4, 2, 1) if WIDE else (4, 2, 1)  # tile widths a run of tokens is cut into, widest first
TOKEN_BLOCK = 64  # tokens row_tiles takes through its run of tiles at a time (see there)
q8_8, q8_4, q8_2, q8_1 = (_tile("q8", LOWERING, n) for n in (8, 4, 2, 1))
q4_8, q4_4, q4_2, q4_1 = (_tile("q4", LOWERING, n) for n in (8, 4, 2, 1))
q4a_8, q4a_4, q4a_2, q4a_1 = (_tile("q4a", LOWERING, n) for n in (8, 4, 2, 1))
pq8_8, pq8_4, pq8_2, pq8_1 = (_tile("q8", LOWERING, n, True) for n in (8, 4, 2, 1))
pq4_8, pq4_4, pq4_2, pq4_1 = (_tile("q4", LOWERING, n, True) for n in (8, 4, 2, 1))
pq4a_8, pq4a_4, pq4a_2, pq4a_1 = (_tile("q4a", LOWERING, n, True) for n in (8, 4, 2, 1))


@njit(nogil=True, cache=True, inline="always")
def _one(kind, slots, c, rb, s, m, ngs, r0, n, xq, xs, xsum, px, ngx, tok, out, ocol, nb, shift):
    """One tile of `slots` tokens from tok (a literal tile width each: numba inlines the intrinsics)."""
    a = (c, rb, s, m, ngs, r0, n, xq, xs, xsum, px, ngx, tok, slots, out, ocol, nb, shift)
    if kind == 0:
        if WIDE and slots == 8:
            q8_8(*a)
        elif slots == 4:
            q8_4(*a)
        elif slots == 2:
            q8_2(*a)
        else:
            q8_1(*a)
    elif kind == 1:
        if WIDE and slots == 8:
            q4_8(*a)
        elif slots == 4:
            q4_4(*a)
        elif slots == 2:
            q4_2(*a)
        else:
            q4_1(*a)
    elif kind == 2:
        if WIDE and slots == 8:
            q4a_8(*a)
        elif slots == 4:
            q4a_4(*a)
        elif slots == 2:
            q4a_2(*a)
        else:
            q4a_1(*a)
    elif kind == 3:
        if WIDE and slots == 8:
            pq8_8(*a)
        elif slots == 4:
            pq8_4(*a)
        elif slots == 2:
            pq8_2(*a)
        else:
            pq8_1(*a)
    elif kind == 4:
        if WIDE and slots == 8:
            pq4_8(*a)
        elif slots == 4:
            pq4_4(*a)
        elif slots == 2:
            pq4_2(*a)
        else:
            pq4_1(*a)
    elif WIDE and slots == 8:
        pq4a_8(*a)
    elif slots == 4:
        pq4a_4(*a)
    elif slots == 2:
        pq4a_2(*a)
    else:
        pq4a_1(*a)


@njit(nogil=True, cache=True)
def row_tiles(codes, scales, mins, xq, xs, xsum, out, tail, kind, shift, t0, t1):
    """Row tiles t0..t1-1 (rows R*t..R*t+R-1, R = ROWS) of out[T, N] = x @ W.T for every token: codes i8[N, P]
    | u8[N, P/2], scales and mins u16[N, groups] (mins read for q4a only), xq i8[T, P], xs f32[T, P/32], xsum
    i32[T, P/32] from quantize_activation at group 32; tail f32[T, R] takes a last tile shorter than R. The tokens
    go through tiles of SLOTS widths, widest first, TOKEN_BLOCK tokens at a time through the whole run of tiles
    (a 512-token prefill's activations, 400 KB at SmolLM2's width, would not stay in a 512 KB L2 from one tile
    to the next); a token's result is the same in any tile and any order. kind: KIND of
    the stored type, + PACKED when pack() has packed the whole tiles (a short last tile stays row-major)."""
    n, rb, ngs = codes.shape[0], codes.shape[1], scales.shape[1]
    stored = kind % PACKED
    nb = rb // (32 if stored == 0 else 16)  # 32-weight blocks per row
    c, s, m = codes.reshape(-1).view(np.uint8), scales.reshape(-1), mins.reshape(-1)
    xqf, xsf, xsumf = xq.reshape(-1), xs.reshape(-1), xsum.reshape(-1)
    px, ngx, t = xq.shape[1], xs.shape[1], xq.shape[0]
    for b0 in range(0, t, TOKEN_BLOCK):
        b1 = min(b0 + TOKEN_BLOCK, t)
        for tile in range(t0, t1):
            r0 = ROWS * tile
            short = r0 + ROWS > n
            dst = tail if short else out
            ocol = 0 if short else r0
            k = stored if short else kind
            tok = b0
            for slots in SLOTS:
                while b1 - tok >= slots:
                    _one(k, slots, c, rb, s, m, ngs, r0, n, xqf, xsf, xsumf, px, ngx, tok, dst, ocol, nb, shift)
                    tok += slots
            if short:
                for j in range(b0, b1):
                    for r in range(n - r0):
                        out[j, r0 + r] = tail[j, r]


@njit(nogil=True, cache=True)
def _pack_tiles(codes, scales, mins, rows, dwords, with_mins):
    """pack()'s work, in place, one tile at a time through a tile-sized scratch."""
    n, rb, ngs = codes.shape[0], codes.shape[1], scales.shape[1]
    per = rb // 4  # dwords per row
    cw = np.empty(rows * per, np.uint32)
    sw = np.empty(rows * ngs, np.uint16)
    for t in range(n // rows):
        r0 = t * rows
        cv = codes[r0 : r0 + rows].reshape(-1).view(np.uint32)  # rows x per dwords, row-major
        cw[:] = cv
        for r in range(rows):
            for e in range(per):  # dword e = block e // dwords, dword e % dwords: [g][d][r] = [e][r]
                cv[e * rows + r] = cw[r * per + e]
        for which in range(2 if with_mins else 1):
            sv = (scales if which == 0 else mins)[r0 : r0 + rows].reshape(-1)
            sw[:] = sv
            for r in range(rows):
                for g in range(ngs):
                    sv[g * rows + r] = sw[r * ngs + g]


def pack(codes: np.ndarray, scales: np.ndarray, mins: np.ndarray | None, stype: str, rows: int = ROWS) -> None:
    """Rearrange a matrix's whole tiles of `rows` rows in place so the tiles load each vector straight: a tile's
    codes as [block][dword][row][4 bytes] (vector d of block g holds every row's dword d, the very vectors the
    row-major tiles build by transposing in registers) and its scales (mins) as [group][row]. Same bytes, same
    place per tile, same integers and floats in the kernels: only the loads change. A last tile shorter than
    `rows` stays row-major. codes [N, row bytes] (a multiple of 4), scales/mins u16 or f16 [N, groups]."""
    _pack_tiles(
        codes.view(np.uint8),
        scales.view(np.uint16),
        (scales if mins is None else mins).view(np.uint16),
        rows,
        8 if stype == "q8" else 4,
        mins is not None,
    )
