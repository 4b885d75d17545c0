"""Contractions with an input's rows: dot(w, x), W @ x and their gradients without
transposing x.

A mixin of FunctionCodegen (codegen/llvm.py). Per-sample values are vectors whose lanes
are samples, so a tensor input x is normally transposed into lane vectors (one per
element) as it is loaded. For the two most common uses of a vector input that is
wasted work:

    z = sum(w * x)            (dot(w, x), w computed once per call)
    grad.w += s * x           (its gradient: s a per-sample scalar)

Both read x along its row, which is contiguous in memory. So for each lane (sample)
the row is read in vectors of W elements: the dot product accumulates W partial sums
per lane, and the lanes' partial sums are added up by a transpose-and-add network
(log2 W stages of two shuffles and an add) that leaves each lane's total in its lane,
summed as the balanced tree of codegen/tensor.py. The gradient, s_l * row_l added to
the gradient itself W elements at a time, is left by the vector loop to the row kernel
of codegen/outer.py (a one-row outer product: s staged per block, the rows read
again from cache); the scalar loop (no SIMD) adds it here. The scalar loop runs the
same code with one lane, so a sample's value does not depend on the lane it lands in,
nor on whether the code has lanes at all. An input used only this way is never transposed.

W @ x (W computed once per call) is K such dots, one per row of W, when x's rows are
long enough (ROW_MATVEC_CHUNKS vectors) for the FMAs to outweigh a network per output;
a tile of outputs shares each loaded chunk of the lanes' rows. Its gradient with
respect to W, outer(u, x) per sample, is added by the row kernel of codegen/outer.py,
which reads x's rows where they are.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.values import FAST, I32
from lossc.ir.graph import REAL, Node

ROW_MATVEC_CHUNKS = 4   # W @ x along x's rows from this many vectors per row
ROW_MATVEC_ACCS = 16    # accumulators (outputs x lanes) of a row matvec tile


class RowContractions:

    def plan_rows(self, uses: dict, outs: dict) -> None:
        """Find the row dots (sum nodes), row matrix-vector products (matmul nodes) and
        row gradients (output keys), and the inputs that then need no transpose. Run at
        the end of plan()."""
        self.row_dots: dict[int, tuple[Node, Node]] = {}     # sum id -> (w, x)
        self.row_matvecs: dict[int, tuple[Node, Node]] = {}  # matmul id -> (W, x)
        self.row_grads: dict[str, tuple[Node, Node]] = {}    # output key -> (s, x)
        self.untransposed: set[int] = set()
        if self.W < 2:
            return
        row_users: dict[int, set[int]] = {}
        for n in self.live:
            wx = self.row_dot_operands(n)
            if wx is not None:
                self.row_dots[n.id] = wx
                row_users.setdefault(wx[1].id, set()).add(n.inputs[0].id)
            wx = self.row_matvec_operands(n)
            if wx is not None:
                self.row_matvecs[n.id] = wx
                row_users.setdefault(wx[1].id, set()).add(n.id)
        if self.want_grad:
            # outer(u, x) gradients of an input row x take the row kernel (outer.py)
            for key, n in outs.items():
                ux = self.outer_gradient(key, n)
                if ux and self.row_outer_input(ux[1]):
                    row_users.setdefault(ux[1].id, set()).update(
                        i.id for i in n.inputs if i.op == "broadcast" and i.inputs[0] is ux[1])
        if self.want_grad:
            for key, n in outs.items():
                if key.startswith("grad.") and key.endswith(".sample"):
                    sx = self.row_grad_operands(n)
                    if sx is not None and not uses[n.id]:
                        self.row_grads[key] = sx
                        row_users.setdefault(sx[1].id, set()).add(n.id)
        out_ids = {n.id for n in outs.values()}
        for x_id, users in row_users.items():
            if {u.id for u in uses[x_id]} <= users and x_id not in out_ids:
                self.untransposed.add(x_id)

    def row_input(self, x: Node) -> bool:
        return x.op == "input" and x.rank == 1 and x.dtype == REAL and x.size >= self.W

    def row_dot_operands(self, n: Node):
        """(w, x) if n is sum(w * x) of a real input row x and a w computed once per
        call, with the product used nowhere else (so it is never materialized)."""
        if n.op != "sum" or n.rank != 0 or n.id not in self.vary:
            return None
        m = n.inputs[0]
        if m.op != "mul" or m.rank != 1 or m.id in self.materialize:
            return None
        for w, x in (m.inputs, m.inputs[::-1]):
            if (self.row_input(x) and w.id not in self.vary and w.shape == x.shape
                    and w.dtype == REAL):
                return w, x
        return None

    def row_matvec_operands(self, n: Node):
        """(W, x) if n is W @ x of a real input row x (D elements) and a once-per-call
        matrix W, with x at least ROW_MATVEC_CHUNKS vectors long. Shorter rows are
        cheaper transposed: each output then costs a transpose-and-add network, which
        only pays back over enough FMAs."""
        if n.op != "matmul" or n.rank != 1 or n.id not in self.vary:
            return None
        w, x = n.inputs
        if (w.rank == 2 and w.id not in self.vary and w.dtype == REAL
                and (w.op == "param" or w.id in self.materialize) and self.row_input(x)
                and x.size // self.W >= ROW_MATVEC_CHUNKS):
            return w, x
        return None

    def row_grad_operands(self, n: Node):
        """(s, x) if n is s * x of a per-sample scalar s (broadcast) and a real input
        row x."""
        if n.op != "mul" or n.rank != 1:
            return None
        for bc, x in (n.inputs, n.inputs[::-1]):
            if (self.row_input(x) and bc.op == "broadcast" and bc.attr("dims") == ()
                    and bc.inputs[0].rank == 0 and bc.inputs[0].id in self.vary
                    and bc.inputs[0].dtype == REAL):
                return bc.inputs[0], x
        return None

    # ------------------------------------------------------------ emission

    def row_chunk(self, ptr, c) -> ir.Value:
        """W elements from ptr + c*W."""
        b = self.b
        VT = ir.VectorType(self.T, self.W)
        at = b.gep(ptr, [b.mul(c, self.iconst(self.W))])
        # (an element's alignment only: rows, parameters and the gradient are arrays of T)
        return b.load(b.bitcast(at, VT.as_pointer()), align=self.T_bytes)

    def once_pointer(self, w: Node):
        """Where a once-per-call value's elements lie (a parameter or a buffer), or
        None if it has no memory of its own."""
        if w.op == "param":
            return self.b.gep(self.params, [self.iconst(w.attr("offset"))])
        return self.buffers.get(w.id)

    def once_chunk(self, w: Node, c) -> ir.Value:
        """W elements of a once-per-call vector, from where it lives."""
        b = self.b
        at = self.once_pointer(w)
        if at is not None:
            return self.row_chunk(at, c)
        first = b.mul(c, self.iconst(self.W))
        return self.vector_of([self.elem(w, (b.add(first, self.iconst(k)),))
                               for k in range(self.W)])

    def row_dot(self, n: Node) -> ir.Value:
        """sum(w * x) for each lane of the current body."""
        b = self.b
        w, x = self.row_dots[n.id]
        rows = self.input_row(x)
        W = self.W
        VT = ir.VectorType(self.T, W)
        accs = [self.alloca(VT) for _ in rows]
        for a in accs:
            b.store(self.splat(self.fconst(0), W), a)
        with self.loop(x.size // W) as c:
            wc = self.once_chunk(w, c)
            for row, a in zip(rows, accs):
                b.store(self.fadd(b.load(a), self.fmul(wc, self.row_chunk(row, c))), a)
        totals = self.lane_totals([b.load(a) for a in accs])
        for j in range(x.size - x.size % W, x.size):
            jj = self.iconst(j)
            xs = [b.load(b.gep(row, [jj])) for row in rows]
            xv = xs[0] if len(xs) == 1 else self.vector_of(xs)
            totals = self.fadd(totals, self.fmul(self.elem(w, (jj,)), xv))
        return totals

    def row_matvec(self, n: Node) -> None:
        """W @ x into n's buffer, each output a row dot of W's row with x (as row_dot,
        in the same order, so lanes and the scalar loop agree). Outputs go in tiles that
        share each loaded chunk of x: the tile's accumulators (outputs x lanes) stay in
        registers."""
        b = self.b
        w, x = self.row_matvecs[n.id]
        rows = self.input_row(x)
        K, D = w.shape
        Wd = self.W
        VT = ir.VectorType(self.T, Wd)
        base = self.once_pointer(w)     # (row_matvec_operands: a parameter or a buffer)
        kt = max(1, min(K, ROW_MATVEC_ACCS // len(rows)))

        def tile(k0, tk: int):
            ks = [b.add(k0, self.iconst(a)) for a in range(tk)]
            wrows = [b.gep(base, [b.mul(k, self.iconst(D))]) for k in ks]
            accs = [[self.alloca(VT) for _ in rows] for _ in ks]
            for acc_row in accs:
                for a in acc_row:
                    b.store(self.splat(self.fconst(0), Wd), a)
            with self.loop(D // Wd) as c:
                xs = [self.row_chunk(row, c) for row in rows]
                for wrow, acc_row in zip(wrows, accs):
                    wc = self.row_chunk(wrow, c)
                    for xc, a in zip(xs, acc_row):
                        b.store(self.fadd(b.load(a), self.fmul(wc, xc)), a)
            for k, acc_row in zip(ks, accs):
                totals = self.lane_totals([b.load(a) for a in acc_row])
                for j in range(D - D % Wd, D):
                    jj = self.iconst(j)
                    xs = [b.load(b.gep(row, [jj])) for row in rows]
                    xv = xs[0] if len(xs) == 1 else self.vector_of(xs)
                    totals = self.fadd(totals, self.fmul(self.elem(w, (k, jj)), xv))
                self.store(n, (k,), totals)

        if K // kt:
            with self.loop(K // kt) as t:
                tile(b.mul(t, self.iconst(kt)), kt)
        if K % kt:
            tile(self.iconst(K - K % kt), K % kt)

    def lane_totals(self, vecs: list) -> ir.Value:
        """Each vector's elements summed (a balanced tree of adjacent pairs), total k in
        lane k; one vector gives a scalar. For W vectors: log2 W stages, stage g adding
        the two halves of a bit-g swap (see transpose_input)."""
        b = self.b
        W = self.W
        if len(vecs) == 1:
            v = vecs[0]
            return self.tree([b.extract_element(v, ir.Constant(I32, k)) for k in range(W)],
                             self.fadd)
        g = 1
        while len(vecs) > 1:
            low = ir.Constant(ir.VectorType(I32, W), [k if not k & g else W + k - g
                                                      for k in range(W)])
            high = ir.Constant(ir.VectorType(I32, W), [k + g if not k & g else W + k
                                                       for k in range(W)])
            vecs = [self.fadd(b.shuffle_vector(p, q, low), b.shuffle_vector(p, q, high))
                    for p, q in zip(vecs[::2], vecs[1::2])]
            g *= 2
        return vecs[0]

    def accumulate_rows(self, key: str, node: Node) -> None:
        """grad += s_l * row_l for every lane of every group, in sample order."""
        b = self.b
        s, x = self.row_grads[key]
        W = self.W
        VT = ir.VectorType(self.T, W)
        target = b.gep(self.grad, [self.iconst(self.param_spec(key).offset)])
        lanes = []     # (s_l as a scalar, row pointer) in sample order
        for self.values, self.buffers, self.input_rows, self.sample in self.contexts:
            sv = self.live_only(self.elem(s, ()))
            rows = self.input_row(x)
            for k, row in enumerate(rows):
                lanes.append((b.extract_element(sv, ir.Constant(I32, k))
                              if len(rows) > 1 else sv, row))
        splats = [(self.splat(sl, W), row) for sl, row in lanes]
        with self.loop(x.size // W) as c:
            at = b.bitcast(b.gep(target, [b.mul(c, self.iconst(W))]), VT.as_pointer())
            acc = b.load(at, align=self.T_bytes)
            for sw, row in splats:
                acc = self.fadd(acc, self.fmul(sw, self.row_chunk(row, c)), flags=FAST)
            b.store(acc, at, align=self.T_bytes)
        for j in range(x.size - x.size % W, x.size):
            jj = self.iconst(j)
            p = b.gep(target, [jj])
            acc = b.load(p)
            for sl, row in lanes:
                acc = self.fadd(acc, self.fmul(sl, b.load(b.gep(row, [jj]))), flags=FAST)
            b.store(acc, p)
