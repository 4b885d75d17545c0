"""Per-sample outer-product gradients, accumulated as blocked matrix products.

The gradient of a matrix parameter used as W @ x is, per sample, an outer product
u v^T (u: the adjoint of W @ x, v: x). Adding it to the per-lane accumulators at every
sample costs a load and a store per element per W samples. Instead the factors' lane
vectors are staged in blocks of OUTER_BLOCK lane groups, and each full block is added
as U_block^T V_block by a register-tiled kernel: OUTER_TILE x OUTER_TILE accumulators,
one load per factor vector per tile, one load and store per gradient element per
block. The lanes stay lanes, so the result goes into the same per-lane accumulators
and the end of the call is unchanged.

When v is an input row (x in W @ x, the usual case) its rows are already in memory,
one sample after another: then only u is staged, and the row kernel
(codegen/row_outer.py) adds sum_s u_s[k] * X[s, :] straight into the gradient. A
vector gradient s * x (dot(w, x)'s) is its one-row case, u = s. It reads the block's
rows again, so a function with one takes blocks of row_block lane groups, fewer than
OUTER_BLOCK where the rows are wide.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.emitter import Emitter
from lossc.codegen.row_outer import row_outer_kernel
from lossc.codegen.values import FAST, I1, I64

OUTER_BLOCK = 8      # lane groups staged per block of an outer-product gradient
OUTER_TILE = 4       # register tile of the block kernel (OUTER_TILE^2 accumulators)
# the bytes of input rows a block of the row kernel spans (row_block): it reads them
# again once the block is staged, so they should still be in L1 or L2 then
ROW_BLOCK_MIN_BYTES = 128 * 1024
ROW_BLOCK_MAX_BYTES = 512 * 1024
ROW_BLOCK_GRAD_SHARE = 8     # a block's rows at least this many times its gradient's bytes


def row_block(K: int, D: int, lanes: int, real_bytes: int) -> int:
    """Lane groups per block of the row kernel for a K x D gradient whose rows of x are
    D reals of real_bytes bytes: the groups whose rows span ROW_BLOCK_GRAD_SHARE times
    the gradient's bytes (each block loads and stores the gradient once), within
    ROW_BLOCK_MIN_BYTES .. ROW_BLOCK_MAX_BYTES, at most OUTER_BLOCK and one at least.
    The kernel reads the block's rows again after the loop staged it: a block of
    wide rows (eight lane groups of 8,192 float64 are 4 MB) is read from L3, and the
    stream of the batch from memory waits meanwhile."""
    span = min(ROW_BLOCK_MAX_BYTES,
               max(ROW_BLOCK_MIN_BYTES, ROW_BLOCK_GRAD_SHARE * K * D * real_bytes))
    return max(1, min(OUTER_BLOCK, span // (lanes * D * real_bytes)))


class OuterBlocks:
    """The outer-product gradients of a model function's vector loop: for each, the
    staging buffers, the kernel that adds a block, and where it adds it (`grad` for
    the row kernel, the per-lane accumulators `grad_acc` for the block kernel)."""

    def __init__(self):
        self.entries = {}     # key -> (u, v, staged u, staged v or first row, kernel,
                              # target: for the row kernel, (the gradient, its size))
        self.rows = set()     # keys whose v is an input row (the row kernel)
        self.slot = None      # i64*: the lane groups staged in the current block
        self.block = OUTER_BLOCK  # the lane groups that make a block full (row_block)
        self.first = None     # i1*: no block added yet in this call

    @staticmethod
    def setup(em, sample_outs: dict, grad_acc, offset_of, acc_offset_of) -> "OuterBlocks":
        """The outer-product gradients among the per-sample outputs (outer_grad, made
        by the lower pass), with their buffers and kernels; offset_of(key): where the
        output's parameter starts in the gradient, acc_offset_of(key): among the
        per-lane accumulators."""
        self = OuterBlocks()
        b = em.b
        VT = ir.VectorType(em.T, em.W)
        for key, node in sample_outs.items():
            if node.op != "outer_grad":
                continue
            u, v = node.inputs
            K, D = node.shape if node.rank == 2 else (1, node.size)
            ub = b.bitcast(em.buffer(K * OUTER_BLOCK * em.W), VT.as_pointer())
            offset = em.iconst(offset_of(key))
            name = f"{em.fn.name}_%s_{len(self.entries)}"
            if OuterBlocks.by_rows(node):
                first_row = em.alloca(em.T.as_pointer())   # the block's first row
                b.store(ir.Constant(em.T.as_pointer(), None), first_row)
                self.rows.add(key)
                self.block = min(self.block, row_block(K, D, em.W, em.T_bytes))
                self.entries[key] = (u, v, ub, first_row,
                                     row_outer_kernel(em, name % "row_outer", K, D,
                                                      OUTER_BLOCK),
                                     (b.gep(em.grad, [offset]), K * D))
                continue
            vb = b.bitcast(em.buffer(D * OUTER_BLOCK * em.W), VT.as_pointer())
            kernel = outer_kernel(em, name % "outer", K, D)
            target = b.gep(grad_acc, [em.iconst(acc_offset_of(key))])
            self.entries[key] = (u, v, ub, vb, kernel, target)
        if self.entries:
            self.slot = em.alloca(I64, "outer_slot")
            b.store(em.iconst(0), self.slot)
            self.first = em.alloca(I1, "outer_first")
            b.store(ir.Constant(I1, 1), self.first)
        return self

    @staticmethod
    def by_rows(node) -> bool:
        """Whether an outer_grad goes to the row kernel (its v an input row), which
        writes the gradient whole: stored by the call's first block, scaled by its
        last (row_outer_kernel), so neither the prologue's zeros nor the epilogue's
        scaling touch it."""
        return node.attr("kind") == "rows"

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def stage(self, em, groups: list) -> None:
        """Stage the factors of every group of an iteration, then add the block if it
        is full and samples follow (the call's last block, full or not, is added by the
        flush after the vector loop: the one that applies the objective's scale). A
        full block is added at once, while its rows and factors are in the caches: the
        next iteration's first group would compute the next block product first."""
        if not self.entries:
            return
        b = em.b
        for g in groups:
            slot = b.load(self.slot)
            for key, (u, v, ub, vb, _, _) in self.entries.items():
                staged = [(u, ub)]
                if key in self.rows:
                    # the block's rows start at the row of its first group's first lane
                    row = em.input_row(g, v)[0]
                    b.store(b.select(b.icmp_signed("==", slot, em.iconst(0)), row,
                                     b.load(vb)), vb)
                else:
                    staged.append((v, vb))
                for factor, buf in staged:
                    if factor.rank == 0:        # the one-row case: u = s
                        val = em.live_only(g, em.elem(g, factor, ()))
                        b.store(val, b.gep(buf, [slot]), align=8)
                        continue
                    with em.loop(factor.shape[0]) as k:
                        val = em.live_only(g, em.elem(g, factor, (k,)))
                        at = b.add(b.mul(k, em.iconst(OUTER_BLOCK)), slot)
                        b.store(val, b.gep(buf, [at]), align=8)
            b.store(b.add(slot, em.iconst(1)), self.slot)
        follow = b.icmp_signed("<", b.add(groups[-1].sample, em.iconst(em.W)), em.B)
        self.flush(em, final=False, follow=follow)

    def flush(self, em, final: bool, scale=None, follow=None) -> None:
        """Add the staged block to the gradients: when it is full, or (final) when
        anything is staged (before the padded last iteration, and after the vector
        loop). scale: for the flush after the vector loop, the call's last, the
        objective's scale (1/B for a mean), which the row kernels apply; if the call
        added no block at all (no samples), their gradients are zeroed instead.
        follow: an i1, whether samples follow the block (a full block waits if not)."""
        if not self.entries:
            return
        b = em.b
        slot = b.load(self.slot)
        # (at least: an iteration stages one or two lane groups, so the count may
        # pass an odd block by one; the buffers hold OUTER_BLOCK groups, which a
        # smaller block and one more group never exceed, and a multiple of two)
        ready = (b.icmp_signed(">", slot, em.iconst(0)) if final
                 else b.icmp_signed(">=", slot, em.iconst(self.block)))
        if follow is not None:
            ready = b.and_(ready, follow)
        with b.if_then(ready):
            first = b.load(self.first)
            factor = em.fconst(1) if scale is None else scale
            for key, (_, v, ub, vb, kernel, target) in self.entries.items():
                if key in self.rows:
                    grad, _ = target
                    b.call(kernel, [grad, ub, b.load(vb), slot, first, factor])
                else:
                    b.call(kernel, [target, ub, vb, slot])
            b.store(em.iconst(0), self.slot)
            b.store(ir.Constant(I1, 0), self.first)
        if scale is not None and self.rows:
            with b.if_then(b.load(self.first), likely=False):
                for key in self.rows:
                    grad, size = self.entries[key][5]
                    em.fill(grad, 0, size, em.W, em.fconst(0))


def outer_kernel(em, name: str, K: int, D: int) -> ir.Function:
    """void kernel(VT* acc, VT* U, VT* V, i64 count):
    acc[k*D + j] += sum_{g < count} U[k*B + g] * V[j*B + g]  (B = OUTER_BLOCK)."""
    VT = ir.VectorType(em.T, em.W)
    P = VT.as_pointer()
    fn, kem = Emitter.kernel_function(em.module, em.T, name, [P, P, P, I64], noalias=(0, 1, 2))
    acc, U, V, count = fn.args
    b = kem.b
    zero = em.splat(em.fconst(0), em.W)

    def tile(k0, j0, tk: int, tj: int):
        cells = [[kem.alloca(VT) for _ in range(tj)] for _ in range(tk)]
        for row in cells:
            for c in row:
                b.store(zero, c)
        with kem.loop(count) as g:
            us = [b.load(b.gep(U, [b.add(b.mul(b.add(k0, kem.iconst(a)),
                                                 kem.iconst(OUTER_BLOCK)), g)]), align=8)
                  for a in range(tk)]
            vs = [b.load(b.gep(V, [b.add(b.mul(b.add(j0, kem.iconst(c)),
                                                 kem.iconst(OUTER_BLOCK)), g)]), align=8)
                  for c in range(tj)]
            for a in range(tk):
                for c in range(tj):
                    cell = cells[a][c]
                    b.store(b.fadd(b.load(cell), b.fmul(us[a], vs[c], flags=FAST),
                                   flags=FAST), cell)
        for a in range(tk):
            for c in range(tj):
                at = b.add(b.mul(b.add(k0, kem.iconst(a)), kem.iconst(D)),
                           b.add(j0, kem.iconst(c)))
                p = b.gep(acc, [at])
                b.store(b.fadd(b.load(p, align=8), b.load(cells[a][c]), flags=FAST), p,
                        align=8)

    T_ = OUTER_TILE
    kf, df = K - K % T_, D - D % T_

    def row_of_tiles(k0, tk):
        if df:
            with kem.loop(df // T_) as jt:
                tile(k0, b.mul(jt, kem.iconst(T_)), tk, T_)
        if D % T_:
            tile(k0, kem.iconst(df), tk, D % T_)

    if kf:
        with kem.loop(kf // T_) as kt:
            row_of_tiles(b.mul(kt, kem.iconst(T_)), T_)
    if K % T_:
        row_of_tiles(kem.iconst(kf), K % T_)
    b.ret_void()
    return fn
