"""Lowering rules of the tensor ops (reductions, softmax, matmul and the backward-only
helpers): loops that fill a node's buffer. A mixin of FunctionCodegen (codegen/llvm.py).

Reduction groups of up to UNROLL elements are unrolled and combined as balanced trees;
longer ones are loops. Both orders are fixed at compile time, so SIMD lanes and the
scalar loop (no SIMD) give bit-identical results.
"""
from __future__ import annotations

import itertools
import math
from math import prod

from llvmlite import ir

from lossc.codegen.values import I1, is_vector_type
from lossc.ir.graph import Node

UNROLL = 256   # reduction groups up to this size are unrolled into a tree
MATVEC_TILE = 4   # outputs of a matrix-vector product computed together ...
MATVEC_TILE_TERMS = 128   # ... when a tile is at most this many products (code size)


class TensorLowering:

    def reduce_parts(self, n: Node, axes):
        x = n.inputs[0]
        kept = tuple(a for a in range(x.rank) if a not in axes)
        return x, kept, tuple(x.shape[a] for a in kept), tuple(x.shape[a] for a in axes)

    @staticmethod
    def merge(kept, kidx, axes, ridx, rank):
        full = [None] * rank
        for a, v in zip(kept, kidx):
            full[a] = v
        for a, v in zip(axes, ridx):
            full[a] = v
        return tuple(full)

    def acc(self, n: Node, init, ty=None):
        """An accumulator for elements of n's type (vectors of lanes for per-sample n)."""
        ty = ty or self.elem_type(n)
        a = self.alloca(ty)
        self.b.store(self.splat(init, ty.count) if is_vector_type(ty) else init, a)
        return a

    def fold_group(self, x, kept, kidx, axes, rshape, init, combine, pre=lambda v: v):
        """Combine pre(v) over the elements v of one reduction group. A group of up to
        UNROLL elements is unrolled and combined as a balanced tree (short dependency
        chains: independent vector operations in flight); a longer one is a loop with an
        accumulator starting at init. Both orders are fixed at compile time, so lanes and
        the scalar loop get bit-identical results."""
        b = self.b
        if prod(rshape) <= UNROLL:
            vals = [pre(self.elem(x, self.merge(kept, kidx, axes, tuple(map(self.iconst, r)),
                                                x.rank)))
                    for r in itertools.product(*map(range, rshape))]
            return self.tree(vals, combine)
        acc = self.acc(x, init, ir.VectorType(self.T, self.lanes) if self.vector_node(x)
                       else self.T)
        with self.loops(rshape) as ridx:
            v = pre(self.elem(x, self.merge(kept, kidx, axes, ridx, x.rank)))
            b.store(combine(b.load(acc), v), acc)
        return b.load(acc)

    @staticmethod
    def tree(vals: list, combine):
        while len(vals) > 1:
            nxt = [combine(vals[k], vals[k + 1]) for k in range(0, len(vals) - 1, 2)]
            if len(vals) % 2:
                nxt.append(vals[-1])
            vals = nxt
        return vals[0]

    def logsumexp_and_softmax(self, x: Node, m, partner: Node):
        """sum_k exp(x_k - m) for logsumexp(x) = m + log(sum), as fold_group sums it,
        and the softmax exp(x - logsumexp(x)) into `partner`'s buffer as
        exp(x_k - m) * (1 / sum): one exponential per element instead of two, within
        an ulp or two of the other way. For NaN or infinite x both give the same NaNs,
        zeros and infinities: m is finite unless x holds an infinity (then 0), and the
        sum is then at least 1, or infinite, or NaN."""
        es = [self.math("exp", self.fsub(self.elem(x, (self.iconst(k),)), m))
              for k in range(x.size)]
        total = self.tree(list(es), self.fadd)
        inverse = self.fdiv(self.fconst(1), total)
        self.buffers[partner.id] = self.node_buffer(partner)
        for k, e in enumerate(es):
            self.store(partner, (self.iconst(k),), self.fmul(e, inverse))
        return total

    def group_max(self, x, kept, kidx, axes, rshape, kind="max"):
        sym = ">" if kind == "max" else "<"
        init = self.fconst(-math.inf if kind == "max" else math.inf)
        # b wins when it is larger or NaN: NaN propagates as in NumPy, in any order
        return self.fold_group(x, kept, kidx, axes, rshape, init, lambda a, v: self.select(
            self.or_(self.fcmp(sym, v, a), self.b.fcmp_unordered("uno", v, v)), v, a))

    def safe_shift(self, m):
        """The max to subtract in logsumexp/softmax: 0 when it is infinite."""
        finite = self.fcmp("<", self.math("fabs", m), self.fconst(math.inf))
        return self.select(finite, m, self.fconst(0))

    def lower_reduce(self, n: Node, kind: str) -> None:
        axes = n.attr("axes")
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        with self.loops(kshape) as kidx:
            group = (x, kept, kidx, axes, rshape)
            if kind == "sum":
                r = self.fold_group(*group, self.fconst(0), self.fadd)
            elif kind == "prod":
                r = self.fold_group(*group, self.fconst(1), self.fmul)
            elif kind == "norm":
                r = self.math("sqrt", self.fold_group(*group, self.fconst(0), self.fadd,
                                                      lambda v: self.fmul(v, v)))
            elif kind in ("max", "min"):
                r = self.group_max(*group, kind)
            elif kind == "logsumexp":
                m = self.safe_shift(self.group_max(*group))
                partner = self.softmax_of.get(n.id)
                if partner is not None and not kshape and prod(rshape) <= UNROLL:
                    s = self.logsumexp_and_softmax(x, m, partner)
                else:
                    s = self.fold_group(*group, self.fconst(0), self.fadd,
                                        lambda v: self.math("exp", self.fsub(v, m)))
                r = self.fadd(m, self.math("log", s))
            else:
                raise AssertionError(kind)
            self.store(n, kidx, r)

    def matvec_tiles(self, n: Node, term, K: int) -> None:
        """A matrix-vector product (W @ x or x @ W), MATVEC_TILE outputs at a time: each
        element of the vector is loaded once per tile and feeds MATVEC_TILE independent
        accumulators, k = 0, 1, ... in order (one FMA each), where an output at a time
        would load the vector once per output. For the lanes and the scalar loop alike."""
        def tile(outs):
            accs = [term((i,), self.iconst(0)) for i in outs]
            for k in range(1, K):
                kk = self.iconst(k)
                accs = [self.fadd(a, term((i,), kk)) for a, i in zip(accs, outs)]
            for a, i in zip(accs, outs):
                self.store(n, (i,), a)
        self.each_matvec_tile(n.shape[0], tile)

    def each_matvec_tile(self, H: int, body) -> None:
        """body(outs) for the tiles of an H-vector result: MATVEC_TILE outputs at a time
        (a loop), then the last H mod MATVEC_TILE one by one; outs: the tile's indices."""
        b = self.b
        R = MATVEC_TILE
        for start, count, width in ((0, H // R, R), (H - H % R, H % R, 1)):
            if not count:
                continue
            with self.loop(count) as t:
                first = b.add(self.iconst(start), b.mul(t, self.iconst(width)))
                body([b.add(first, self.iconst(r)) if r else first for r in range(width)])

    def input_product(self, n: Node):
        """(matrix, input, matrix first) if n is W @ x or x @ W of a once-per-call
        matrix and an input vector, else None."""
        a, c = n.inputs
        for m, v, first in ((a, c, True), (c, a, False)):
            if m.rank == 2 and m.id not in self.vary and v.rank == 1 and v.op == "input":
                return m, v, first
        return None

    def matvec_tiles_of_groups(self, n: Node, K: int) -> None:
        """matvec_tiles for every lane group of the iteration at once (an input's lanes
        are loaded for all groups before any group's values are computed): each matrix
        element is broadcast once per tile and feeds MATVEC_TILE accumulators in every
        group, where one group at a time would load it once per group. The sums are
        those of matvec_tiles, term by term, so lanes and the scalar loop agree."""
        m, v, first = self.input_product(n)
        here = (self.values, self.buffers, self.input_rows, self.sample)
        for ctx in self.contexts:
            if ctx[1] is not self.buffers:
                ctx[1][n.id] = self.node_buffer(n)

        def in_context(ctx, fn):
            self.values, self.buffers, self.input_rows, self.sample = ctx
            try:
                return fn()
            finally:
                self.values, self.buffers, self.input_rows, self.sample = here

        def tile(outs):
            accs = None
            for k in range(K):
                kk = self.iconst(k)
                ws = [self.elem(m, (i, kk) if first else (kk, i)) for i in outs]
                xs = [in_context(ctx, lambda: self.elem(v, (kk,))) for ctx in self.contexts]
                terms = [[self.fmul(w, x) if first else self.fmul(x, w) for w in ws]
                         for x in xs]
                accs = terms if accs is None else [
                    [self.fadd(a, t_) for a, t_ in zip(acc_g, term_g)]
                    for acc_g, term_g in zip(accs, terms)]
            for ctx, acc_g in zip(self.contexts, accs):
                for a, i in zip(acc_g, outs):
                    in_context(ctx, lambda: self.store(n, (i,), a))
        self.each_matvec_tile(n.shape[0], tile)

    def lower_argext(self, n: Node) -> None:
        b = self.b
        axes, kind = n.attr("axes"), n.attr("kind")
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        flag = ir.VectorType(I1, self.lanes) if self.vector_node(x) else I1
        found = self.alloca(flag)
        with self.loops(kshape) as kidx:
            m = self.group_max(x, kept, kidx, axes, rshape, kind)
            b.store(self.splat(ir.Constant(I1, 0), self.lanes) if is_vector_type(flag)
                    else ir.Constant(I1, 0), found)
            with self.loops(rshape) as ridx:
                full = self.merge(kept, kidx, axes, ridx, x.rank)
                hit = self.and_(self.fcmp("==", self.elem(x, full), m), self.not_(b.load(found)))
                b.store(self.or_(b.load(found), hit), found)
                self.store(n, full, self.select(hit, self.fconst(1), self.fconst(0)))

    def lower_prod_others(self, n: Node) -> None:
        """Exclusive products by a forward then a backward sweep: no division, so
        zeros get their exact gradient."""
        b = self.b
        axes = n.attr("axes")
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        count = prod(rshape)
        run = self.acc(x, self.fconst(1))
        with self.loops(kshape) as kidx:
            b.store(self.splat(self.fconst(1), self.lanes) if self.vector_node(x)
                    else self.fconst(1), run)
            with self.loop(count) as j:
                full = self.merge(kept, kidx, axes, self.unflatten(rshape, j), x.rank)
                self.store(n, full, b.load(run))
                b.store(self.fmul(b.load(run), self.elem(x, full)), run)
            b.store(self.splat(self.fconst(1), self.lanes) if self.vector_node(x)
                    else self.fconst(1), run)
            with self.loop(count) as j:
                jr = b.sub(self.iconst(count - 1), j)
                full = self.merge(kept, kidx, axes, self.unflatten(rshape, jr), x.rank)
                p = b.gep(self.buffers[n.id], [self.flat(n.shape, full)])
                b.store(self.fmul(b.load(p, align=8), b.load(run)), p, align=8)
                b.store(self.fmul(b.load(run), self.elem(x, full)), run)

    def lower_softmax(self, n: Node, log: bool) -> None:
        axes = (n.attr("axis"),)
        x, kept, kshape, rshape = self.reduce_parts(n, axes)
        with self.loops(kshape) as kidx:
            m = self.safe_shift(self.group_max(x, kept, kidx, axes, rshape))
            s = self.fold_group(x, kept, kidx, axes, rshape, self.fconst(0), self.fadd,
                                lambda v: self.math("exp", self.fsub(v, m)))
            logs = self.math("log", s) if log else None
            with self.loops(rshape) as ridx:
                full = self.merge(kept, kidx, axes, ridx, x.rank)
                shifted = self.fsub(self.elem(x, full), m)
                v = self.fsub(shifted, logs) if log else self.fdiv(self.math("exp", shifted), s)
                self.store(n, full, v)

    def lower_matmul(self, n: Node) -> None:
        b = self.b
        x, y = n.inputs
        K = x.shape[-1]

        def term(idx, k):
            xi = (idx[0], k) if x.rank == 2 else (k,)
            yi = (k, idx[-1]) if y.rank == 2 else (k,)
            return self.fmul(self.elem(x, xi), self.elem(y, yi))

        if n.rank == 1 and MATVEC_TILE * K <= MATVEC_TILE_TERMS:
            if self.lanes > 1 and len(self.contexts) > 1 and self.input_product(n):
                return self.matvec_tiles_of_groups(n, K)
            return self.matvec_tiles(n, term, K)
        with self.loops(n.shape) as idx:
            if K <= UNROLL:   # a balanced tree of the K products, as in fold_group
                self.store(n, idx, self.tree([term(idx, self.iconst(k)) for k in range(K)],
                                             self.fadd))
            else:
                acc = self.acc(n, self.fconst(0))
                with self.loop(K) as k:
                    b.store(self.fadd(b.load(acc), term(idx, k)), acc)
                self.store(n, idx, b.load(acc))
