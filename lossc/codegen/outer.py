"""Per-sample outer-product gradients, accumulated as blocked matrix products.

A mixin of FunctionCodegen (codegen/llvm.py): it uses its loops, elements and buffers.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.values import FAST, I64, ValueEmitter
from lossc.ir.graph import Node

OUTER_BLOCK = 8      # lane groups staged per block of an outer-product gradient
OUTER_TILE = 4       # register tile of the block kernel (OUTER_TILE^2 accumulators)
OUTER_MIN_SIZE = 64  # outer products smaller than this are accumulated directly
ROW_TILE_VECTORS = 4  # row kernel: gradient vectors per tile row (W elements each) ...
ROW_TILE_ACCS = {8: 24, 4: 12, 2: 12}   # ... and accumulators per tile, by vector width
                                         # (AVX2 has 16 registers, AVX-512 32)
ROW_MIN_CHAINS = 8   # row kernel: independent FMA chains wanted (latency 4 x 2 units)
ROW_VECTOR_GRADIENTS = True   # s * x gradients through the row kernel (outer_gradient)


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class OuterProducts:
    # ---- per-sample outer products, accumulated as blocked matrix products
    #
    # The gradient of a matrix parameter used as W @ x is, per sample, an outer product
    # u v^T (u: the adjoint of W @ x, v: x). Adding it to the per-lane accumulators at
    # every sample costs a load and a store per element per W samples. Instead the
    # factors' lane vectors are staged in blocks of OUTER_BLOCK groups, and each full
    # block is added as U_block^T V_block by a register-tiled kernel: TILE x TILE
    # accumulators, one load per factor vector per tile, one load and store per
    # gradient element per block. The lanes stay lanes, so the result goes into the same
    # per-lane accumulators and the end of the call is unchanged.
    #
    # When v is an input (x in W @ x, the usual case) its rows are already in memory,
    # one sample after another: then only u is staged, and the row kernel adds
    # sum_s u_s[k] * X[s, :] straight into the gradient, W elements of a row at a time
    # with u_s[k] broadcast from the staged block (a GEMM tile: no transpose of x, no
    # per-lane accumulators, no sum over lanes at the end).

    def setup_outer_blocks(self, sample_outs: dict) -> None:
        self.outer = {}
        if not self.want_grad:
            return
        b = self.b
        VT = ir.VectorType(self.T, self.W)
        for key, node in sample_outs.items():
            factors = self.outer_gradient(key, node)
            if not factors:
                continue
            u, v = factors
            K, D = node.shape if node.rank == 2 else (1, node.size)
            ub = b.bitcast(self.buffer(K * OUTER_BLOCK * self.W), VT.as_pointer())
            offset = self.iconst(self.param_spec(key).offset)
            if self.row_outer_input(v):
                first_row = self.alloca(self.T.as_pointer())   # the block's first row
                b.store(ir.Constant(self.T.as_pointer(), None), first_row)
                self.outer[key] = (u, v, ub, first_row, self.row_outer_kernel(K, D),
                                   b.gep(self.grad, [offset]))
                continue
            vb = b.bitcast(self.buffer(D * OUTER_BLOCK * self.W), VT.as_pointer())
            kernel = self.outer_kernel(K, D)
            target = b.gep(self.grad_acc, [offset])
            self.outer[key] = (u, v, ub, vb, kernel, target)
        if self.outer:
            self.slot = self.alloca(I64, "outer_slot")
            b.store(self.iconst(0), self.slot)

    def row_outer_input(self, v: Node) -> bool:
        """Whether outer(u, v) takes the row kernel: v a real input row of at least W
        elements (codegen/rows.py)."""
        return self.row_input(v)

    def row_outer_params(self) -> set[str]:
        """Parameters whose gradient the row kernel adds into `grad` directly."""
        return {self.param_spec(k).name for k, entry in self.outer.items()
                if self.row_outer_input(entry[1])}

    def outer_gradient(self, key: str, node: Node):
        """(u, v) if the output `key` is a per-sample gradient outer(u, v) large enough
        for the block kernels, else None. A vector gradient s * x (s a per-sample
        scalar, x an input row: dot(w, x)'s) is the one-row case, u = s: staged and
        added by the row kernel too, it leaves the vector loop's iterations free of the
        chain of FMAs into the gradient, which an iteration would otherwise end on."""
        if not (key.startswith("grad.") and key.endswith(".sample")):
            return None
        if node.rank == 1:
            return self.row_grad_operands(node) if ROW_VECTOR_GRADIENTS else None
        if node.size >= OUTER_MIN_SIZE:
            return self.outer_factors(node)
        return None

    def outer_factors(self, node: Node):
        """(u, v) if node is outer(u, v) of two per-sample vectors, else None."""
        if node.op != "mul" or node.rank != 2:
            return None
        a, c = node.inputs
        for x, y in ((a, c), (c, a)):
            if (x.op == y.op == "broadcast" and x.attr("dims") == (0,)
                    and y.attr("dims") == (1,) and x.inputs[0].id in self.vary
                    and y.inputs[0].id in self.vary):
                return x.inputs[0], y.inputs[0]
        return None

    def stage_outer_factors(self) -> None:
        b = self.b
        for ctx in self.contexts:
            self.values, self.buffers, self.input_rows, self.sample = ctx
            slot = b.load(self.slot)
            for u, v, ub, vb, _, _ in self.outer.values():
                staged = [(u, ub)]
                if self.row_outer_input(v):
                    # the block's rows start at the row of its first group's first lane
                    row = self.input_row(v)[0]
                    b.store(b.select(b.icmp_signed("==", slot, self.iconst(0)), row,
                                     b.load(vb)), vb)
                else:
                    staged.append((v, vb))
                for factor, buf in staged:
                    if factor.rank == 0:        # the one-row case: u = s
                        val = self.live_only(self.elem(factor, ()))
                        b.store(val, b.gep(buf, [slot]), align=8)
                        continue
                    with self.loop(factor.shape[0]) as k:
                        val = self.live_only(self.elem(factor, (k,)))
                        at = b.add(b.mul(k, self.iconst(OUTER_BLOCK)), slot)
                        b.store(val, b.gep(buf, [at]), align=8)
            b.store(b.add(slot, self.iconst(1)), self.slot)
        self.flush_outer_blocks(final=False)

    def flush_outer_blocks(self, final: bool) -> None:
        """Add the staged block to the accumulators: when it is full, or (final) when
        anything is staged at the end of the vector loops."""
        if not self.outer:
            return
        b = self.b
        slot = b.load(self.slot)
        ready = (b.icmp_signed(">", slot, self.iconst(0)) if final
                 else b.icmp_signed("==", slot, self.iconst(OUTER_BLOCK)))
        with b.if_then(ready):
            for _, v, ub, vb, kernel, target in self.outer.values():
                b.call(kernel, [target, ub, b.load(vb) if self.row_outer_input(v) else vb,
                                slot])
            b.store(self.iconst(0), self.slot)

    def kernel_function(self, kind: str, arg_types: list, noalias: tuple):
        """A new internal void function of the module for a kernel, and a bare emitter
        (loops, constants, allocas) positioned in its body."""
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), arg_types),
                         name=f"{self.fn.name}_{kind}_{len(self.outer)}")
        fn.linkage = "internal"
        for k in noalias:
            fn.args[k].add_attribute("noalias")
        em = type(self).__new__(type(self))
        ValueEmitter.__init__(em, self.module, self.T, ir.IRBuilder(fn.append_basic_block()))
        em.fn = fn
        em.entry = fn.entry_basic_block
        return fn, em

    def outer_kernel(self, K: int, D: int) -> ir.Function:
        """void kernel(VT* acc, VT* U, VT* V, i64 count):
        acc[k*D + j] += sum_{g < count} U[k*B + g] * V[j*B + g]  (B = OUTER_BLOCK)."""
        VT = ir.VectorType(self.T, self.W)
        P = VT.as_pointer()
        fn, em = self.kernel_function("outer", [P, P, P, I64], noalias=(0, 1, 2))
        acc, U, V, count = fn.args
        b = em.b
        zero = self.splat(self.fconst(0), self.W)

        def tile(k0, j0, tk: int, tj: int):
            cells = [[em.alloca(VT) for _ in range(tj)] for _ in range(tk)]
            for row in cells:
                for c in row:
                    b.store(zero, c)
            with em.loop(count) as g:
                us = [b.load(b.gep(U, [b.add(b.mul(b.add(k0, em.iconst(a)),
                                                     em.iconst(OUTER_BLOCK)), g)]), align=8)
                      for a in range(tk)]
                vs = [b.load(b.gep(V, [b.add(b.mul(b.add(j0, em.iconst(c)),
                                                     em.iconst(OUTER_BLOCK)), g)]), align=8)
                      for c in range(tj)]
                for a in range(tk):
                    for c in range(tj):
                        cell = cells[a][c]
                        b.store(b.fadd(b.load(cell), b.fmul(us[a], vs[c], flags=FAST),
                                       flags=FAST), cell)
            for a in range(tk):
                for c in range(tj):
                    at = b.add(b.mul(b.add(k0, em.iconst(a)), em.iconst(D)),
                               b.add(j0, em.iconst(c)))
                    p = b.gep(acc, [at])
                    b.store(b.fadd(b.load(p, align=8), b.load(cells[a][c]), flags=FAST), p,
                            align=8)

        T_ = OUTER_TILE
        kf, df = K - K % T_, D - D % T_

        def row_of_tiles(k0, tk):
            if df:
                with em.loop(df // T_) as jt:
                    tile(k0, b.mul(jt, em.iconst(T_)), tk, T_)
            if D % T_:
                tile(k0, em.iconst(df), tk, D % T_)

        if kf:
            with em.loop(kf // T_) as kt:
                row_of_tiles(b.mul(kt, em.iconst(T_)), T_)
        if K % T_:
            row_of_tiles(em.iconst(kf), K % T_)
        b.ret_void()
        return fn

    def row_outer_kernel(self, K: int, D: int) -> ir.Function:
        """void kernel(T* grad, VT* U, T* X, i64 groups):
        grad[k*D + j] += sum_{s < groups*W} u_s[k] * X[s*D + j], where u_s[k] is lane
        s mod W of U[k*B + s div W] (B = OUTER_BLOCK), samples in order.

        Tiles of kt rows by jt vectors of W columns keep kt*jt accumulators in
        registers through the whole block: per sample, jt row loads and kt broadcasts
        feed kt*jt FMAs. A tile of fewer than ROW_MIN_CHAINS accumulators (a gradient of
        few rows, s * x's one) would wait on each FMA's latency: its samples then go
        round-robin into `sets` sets of them, added in order at the end (a fixed order:
        the result depends on B only). The last D mod W columns are added one element
        at a time."""
        W = self.W
        VT = ir.VectorType(self.T, W)
        TP = self.T.as_pointer()
        fn, em = self.kernel_function("row_outer", [TP, VT.as_pointer(), TP, I64],
                                      noalias=(0,))
        grad, U, X, groups = fn.args
        b = em.b
        Us = b.bitcast(U, TP)          # u_s[k] as scalars
        chunks = D // W
        jt = max(1, min(ROW_TILE_VECTORS, chunks))
        kt = max(1, min(K, ROW_TILE_ACCS.get(W, 12) // jt))

        def u_at(k, s):
            """u_s[k]: lane s mod W of U[k*B + s div W], at k*B*W + s."""
            return b.load(b.gep(Us, [b.add(b.mul(k, em.iconst(OUTER_BLOCK * W)), s)]))

        def vec(ptr, at):
            return b.bitcast(b.gep(ptr, [at]), VT.as_pointer())

        def tile(k0, c0, tk: int, tj: int):
            """rows k0..k0+tk-1, columns (c0..c0+tj-1)*W + 0..W-1"""
            cols = [b.mul(b.add(c0, em.iconst(c)), em.iconst(W)) for c in range(tj)]
            ks = [b.add(k0, em.iconst(a)) for a in range(tk)]
            cells = [[vec(grad, b.add(b.mul(k, em.iconst(D)), col)) for col in cols]
                     for k in ks]
            # (a power of two, as W is: the samples of a group then divide into whole
            # steps of the loop below, with no lane left over)
            sets = min(W, _power_of_two_at_least(-(-ROW_MIN_CHAINS // (tk * tj))))
            accs = [[[em.alloca(VT) for _ in range(tj)] for _ in range(tk)]
                    for _ in range(sets)]
            zero = em.splat(em.fconst(0), W)
            for q, group in enumerate(accs):
                for row, ptrs in zip(group, cells):
                    for acc, p in zip(row, ptrs):
                        b.store(b.load(p, align=self.T_bytes) if q == 0 else zero, acc)
            # samples `step` at a time, unrolled: a group's W lanes, or with several
            # sets two samples per set (a smaller function for LLVM to compile)
            step = W if sets == 1 else min(W, 2 * sets)
            assert W % step == 0, (W, step)
            with em.loop(b.mul(groups, em.iconst(W // step))) as it:
                for lane in range(step):
                    s = b.add(b.mul(it, em.iconst(step)), em.iconst(lane))
                    xrow = b.gep(X, [b.mul(s, em.iconst(D))])
                    xs = [b.load(vec(xrow, col), align=self.T_bytes) for col in cols]
                    group = accs[lane % sets]
                    for a, k in enumerate(ks):
                        us = em.splat(u_at(k, s), W)
                        for c in range(tj):
                            b.store(b.fadd(b.load(group[a][c]),
                                           b.fmul(us, xs[c], flags=FAST), flags=FAST),
                                    group[a][c])
            for a, ptrs in enumerate(cells):
                for c, p in enumerate(ptrs):
                    total = b.load(accs[0][a][c])
                    for group in accs[1:]:
                        total = b.fadd(total, b.load(group[a][c]), flags=FAST)
                    b.store(total, p, align=self.T_bytes)

        def tiles_of_row(k0, tk: int):
            full = chunks // jt
            if full:
                with em.loop(full) as ct:
                    tile(k0, b.mul(ct, em.iconst(jt)), tk, jt)
            if chunks % jt:
                tile(k0, em.iconst(full * jt), tk, chunks % jt)

        if K // kt:
            with em.loop(K // kt) as kk:
                tiles_of_row(b.mul(kk, em.iconst(kt)), kt)
        if K % kt:
            tiles_of_row(em.iconst(K - K % kt), K % kt)
        if D % W:
            with em.loop(K) as k:
                for j in range(D - D % W, D):
                    p = b.gep(grad, [b.add(b.mul(k, em.iconst(D)), em.iconst(j))])
                    acc = em.alloca(self.T)
                    b.store(b.load(p), acc)
                    with em.loop(b.mul(groups, em.iconst(W))) as s:
                        x = b.load(b.gep(X, [b.add(b.mul(s, em.iconst(D)), em.iconst(j))]))
                        b.store(b.fadd(b.load(acc), b.fmul(u_at(k, s), x, flags=FAST),
                                       flags=FAST), acc)
                    b.store(b.load(acc), p)
        b.ret_void()
        return fn
