"""The row kernel: per-sample outer products u_s x_s^T with x an input row, added
straight into the gradient, reading x's rows where they are (a GEMM tile: no transpose
of x, no per-lane accumulators, no sum over lanes at the end). codegen/outer.py stages
u for a block of lane groups and calls it.

Tiles of kt rows by jt vectors of W columns (jt up to ROW_TILE_VECTORS, kt*jt up to
ROW_TILE_ACCS for the target's vector registers, which leaves registers for a sample's
jt row vectors and the broadcast u_s[k]: AVX-512 has 32 vector registers, AVX2 16,
whatever the dtype; `row_tile`) keep their accumulators in registers through the whole
block: per sample, jt row loads and kt broadcasts feed kt*jt FMAs. (With AVX2, 12
accumulators of 3 x 4 leave too few: LLVM kept some on the stack, a load and a store
per FMA, at half the speed of 2 x 4: docs/codegen.md.) A tile of fewer than
ROW_MIN_CHAINS accumulators would wait on each FMA's latency (four cycles, two FMA
units on the machines lossc targets): its samples then go round-robin into several
sets of them.

The tiles go column by column: for jt vectors of columns, every row tile of the
gradient, then the next jt vectors. The block's jt vectors of each row of x (at most
32 kB: 128 float32 samples of 4 vectors of 64 bytes) are then read from L1 by every row
tile, where row by row each tile would read its columns of the whole block from L2.
(Copied into a packed, aligned panel by each strip's first row tile, for the others to
read, they measured no faster: docs/codegen.md, the bullet on W7 float32.)
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.emitter import Emitter
from lossc.codegen.gemm import vector_registers
from lossc.codegen.prefetch import prefetch_row
from lossc.codegen.values import FAST, I1, I64, I8P

ROW_TILE_VECTORS = 4  # gradient vectors per tile row (W elements each) ...
ROW_TILE_ACCS = {32: 24, 16: 8}    # ... and accumulators per tile, by vector registers
#                                    (kt*jt + jt + 1 of them at most)
ROW_MIN_CHAINS = 8   # independent FMA chains wanted (latency 4 x 2 units)
GRAD_AHEAD_TILES = 2  # a tile prefetches the gradient's cells of the tile this far on


def row_tile(K: int, chunks: int, lanes: int, real_bytes: int) -> tuple[int, int]:
    """(kt, jt): the rows and vectors of a full tile of a K-row gradient whose rows are
    `chunks` vectors of `lanes` reals of `real_bytes` bytes. The accumulators go by the
    registers of the vector width, not by its lanes: float32 at 256 bits has the lanes
    of float64 at 512 bits but half the registers, float32 at 512 bits all of them."""
    jt = max(1, min(ROW_TILE_VECTORS, chunks))
    accumulators = ROW_TILE_ACCS[vector_registers(lanes * real_bytes * 8)]
    return max(1, min(K, accumulators // jt)), jt


def accumulator_sets(tk: int, tj: int, lanes: int) -> int:
    """The sets of accumulators a tile of tk rows by tj vectors takes its samples into,
    round-robin: enough for ROW_MIN_CHAINS FMA chains, a power of two (as the lanes
    are: a group's samples then divide into whole steps), at most the lanes."""
    return min(lanes, _power_of_two_at_least(-(-ROW_MIN_CHAINS // (tk * tj))))


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def row_outer_kernel(em, name: str, K: int, D: int, block: int) -> ir.Function:
    """void kernel(T* grad, VT* U, T* X, i64 groups, i1 first, T scale):
    grad[k*D + j] <- scale * (g + sum_{s < groups*W} u_s[k] * X[s*D + j]), where g is
    0 if `first` (the call's first block: the gradient is not read, so it needs no
    zeroing before) else grad[k*D + j], and u_s[k] is lane s mod W of U[k*B + s div W]
    (B = block, the lane groups staged), samples in order; scale is 1 but for the
    call's last block, which applies the objective's 1/B (the sum, then one product:
    the rounding of a separate pass over the gradient after it).

    A tile of few accumulators (a gradient of few rows, s * x's one) takes its samples
    round-robin into `sets` sets of them, added in order at the end (a fixed order: the
    result depends on B only). The last D mod W columns are added one element at a
    time."""
    W = em.W
    VT = ir.VectorType(em.T, W)
    TP = em.T.as_pointer()
    fn, kem = Emitter.kernel_function(em.module, em.T, name,
                                      [TP, VT.as_pointer(), TP, I64, I1, em.T],
                                      noalias=(0,))
    grad, U, X, groups, first, scale = fn.args
    b = kem.b
    Us = b.bitcast(U, TP)          # u_s[k] as scalars
    chunks = D // W
    kt, jt = row_tile(K, chunks, W, em.T_bytes)

    def u_at(k, s):
        """u_s[k]: lane s mod W of U[k*B + s div W], at k*B*W + s."""
        return b.load(b.gep(Us, [b.add(b.mul(k, kem.iconst(block * W)), s)]))

    def vec(ptr, at):
        return b.bitcast(b.gep(ptr, [at]), VT.as_pointer())

    def start(accs, cells, zero, align: int) -> None:
        """accs[a][c] <- zero on the call's first block, else the gradient at cells[a][c]
        (one branch for the tile: the gradient is not read at all on the first)."""
        with b.if_else(first) as (then, otherwise):
            with then:
                for row in accs:
                    for acc in row:
                        b.store(zero, acc)
            with otherwise:
                for row, ptrs in zip(accs, cells):
                    for acc, p in zip(row, ptrs):
                        b.store(b.load(p, align=align), acc)

    def tile(k0, c0, tk: int, tj: int):
        """rows k0..k0+tk-1, columns (c0..c0+tj-1)*W + 0..W-1"""
        cols = [b.mul(b.add(c0, kem.iconst(c)), kem.iconst(W)) for c in range(tj)]
        ks = [b.add(k0, kem.iconst(a)) for a in range(tk)]
        cells = [[vec(grad, b.add(b.mul(k, kem.iconst(D)), col)) for col in cols]
                 for k in ks]
        sets = accumulator_sets(tk, tj, W)
        accs = [[[kem.alloca(VT) for _ in range(tj)] for _ in range(tk)]
                for _ in range(sets)]
        zero = kem.splat(kem.fconst(0), W)
        for set_ in accs[1:]:
            for row in set_:
                for acc in row:
                    b.store(zero, acc)
        start(accs[0], cells, zero, em.T_bytes)
        # the gradient's cells of the strip's tile GRAD_AHEAD_TILES on (rows past the
        # gradient's last take its last; none where the strip has no tile that far
        # on, the gradient's few rows cached): the strip's rows are a whole row of the
        # gradient apart, and a gradient larger than L2 (W7's first layer) waited on
        # L3 at each tile's loads where another process or an interrupt had used the
        # caches (docs/codegen.md)
        for a in range(tk if K > GRAD_AHEAD_TILES * kt else 0):
            row = b.add(k0, kem.iconst(GRAD_AHEAD_TILES * kt + a))
            row = b.select(b.icmp_signed("<", row, kem.iconst(K)), row, kem.iconst(K - 1))
            at = b.gep(grad, [b.add(b.mul(row, kem.iconst(D)), cols[0])])
            prefetch_row(kem, b.bitcast(at, I8P), tj * W * em.T_bytes, locality=3)
        # samples `step` at a time, unrolled: a group's W lanes, or with several
        # sets two samples per set (a smaller function for LLVM to compile)
        step = W if sets == 1 else min(W, 2 * sets)
        assert W % step == 0, (W, step)
        with kem.loop(b.mul(groups, kem.iconst(W // step))) as it:
            for lane in range(step):
                s = b.add(b.mul(it, kem.iconst(step)), kem.iconst(lane))
                xrow = b.gep(X, [b.mul(s, kem.iconst(D))])
                xs = [b.load(vec(xrow, col), align=em.T_bytes) for col in cols]
                set_ = accs[lane % sets]
                for a, k in enumerate(ks):
                    us = kem.splat(u_at(k, s), W)
                    for c in range(tj):
                        b.store(b.fadd(b.load(set_[a][c]),
                                       b.fmul(us, xs[c], flags=FAST), flags=FAST),
                                set_[a][c])
        for a, ptrs in enumerate(cells):
            for c, p in enumerate(ptrs):
                total = b.load(accs[0][a][c])
                for set_ in accs[1:]:
                    total = b.fadd(total, b.load(set_[a][c]), flags=FAST)
                b.store(b.fmul(total, kem.splat(scale, W)), p, align=em.T_bytes)

    def tiles_of_column(c0, tj: int):
        if K // kt:
            with kem.loop(K // kt) as kk:
                tile(b.mul(kk, kem.iconst(kt)), c0, kt, tj)
        if K % kt:
            tile(kem.iconst(K - K % kt), c0, K % kt, tj)

    full = chunks // jt
    if full:
        with kem.loop(full) as ct:
            tiles_of_column(b.mul(ct, kem.iconst(jt)), jt)
    if chunks % jt:
        tiles_of_column(kem.iconst(full * jt), chunks % jt)
    if D % W:
        with kem.loop(K) as k:
            for j in range(D - D % W, D):
                p = b.gep(grad, [b.add(b.mul(k, kem.iconst(D)), kem.iconst(j))])
                acc = kem.alloca(em.T)
                start([[acc]], [[p]], kem.fconst(0), em.T_bytes)
                with kem.loop(b.mul(groups, kem.iconst(W))) as s:
                    x = b.load(b.gep(X, [b.add(b.mul(s, kem.iconst(D)), kem.iconst(j))]))
                    b.store(b.fadd(b.load(acc), b.fmul(u_at(k, s), x, flags=FAST),
                                   flags=FAST), acc)
                b.store(b.fmul(b.load(acc), scale), p)
    b.ret_void()
    return fn
