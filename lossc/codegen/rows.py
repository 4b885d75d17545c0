"""Contractions with an input's rows: dot(w, x) and W @ x without transposing x.

Per-sample values are vectors whose lanes are samples, so a tensor input x is normally
transposed into lane vectors (one per element) as it is loaded (codegen/transpose.py).
For the two most common uses of a vector input that is wasted work:

    z = sum(w * x)            (dot(w, x), w computed once per call)
    h = W @ x                 (W computed once per call)

Both read x along its row, which is contiguous in memory. So for each lane (sample)
the row is read in vectors of W elements: the dot product accumulates W partial sums
per lane, and the lanes' partial sums are added up by a transpose-and-add network
(log2 W stages of two shuffles and an add) that leaves each lane's total in its lane,
summed as the balanced tree of codegen/reduce.py. The scalar loop runs the same code
with one lane, so a sample's value does not depend on the lane it lands in, nor on
whether the code has lanes at all. W @ x is K such dots, one per row of W; a tile of
outputs shares each loaded chunk of the lanes' rows, its accumulators (outputs x
lanes, at most ROW_MATVEC_ACCS for the target's vector registers: with a chunk of
W's row per output and one of a lane's row in turn, AVX2's 16 hold 8 of them, where
16 spilled to the stack, a load and a store per FMA) in registers. Their gradients,
outer products with x, are added by the row kernel of codegen/row_outer.py, which
reads x's rows where they are too. An input used only these ways is never transposed.
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.gemm import vector_registers
from lossc.codegen.values import I32
from lossc.ir.graph import Node

# accumulators (outputs x lanes) of a row matvec tile, by vector registers
ROW_MATVEC_ACCS = {32: 16, 16: 8}


def row_chunk(em, ptr, c) -> ir.Value:
    """W elements from ptr + c*W."""
    b = em.b
    VT = ir.VectorType(em.T, em.W)
    at = b.gep(ptr, [b.mul(c, em.iconst(em.W))])
    # (an element's alignment only: rows, parameters and the gradient are arrays of T)
    return b.load(b.bitcast(at, VT.as_pointer()), align=em.T_bytes)


def once_chunk(em, g, w: Node, c) -> ir.Value:
    """W elements of a once-per-call vector, from where it lives."""
    b = em.b
    at = em.once_pointer(g, w)
    if at is not None:
        return row_chunk(em, at, c)
    first = b.mul(c, em.iconst(em.W))
    return em.vector_of([em.elem(g, w, (b.add(first, em.iconst(k)),)) for k in range(em.W)])


def row_dot(em, g, w: Node, x: Node) -> ir.Value:
    """sum(w * x) for each lane of group g."""
    b = em.b
    rows = em.input_row(g, x)
    W = em.W
    VT = ir.VectorType(em.T, W)
    accs = [em.alloca(VT) for _ in rows]
    for a in accs:
        b.store(em.splat(em.fconst(0), W), a)
    with em.loop(x.size // W) as c:
        wc = once_chunk(em, g, w, c)
        for row, a in zip(rows, accs):
            b.store(em.fadd(b.load(a), em.fmul(wc, row_chunk(em, row, c))), a)
    totals = lane_totals(em, [b.load(a) for a in accs])
    for j in range(x.size - x.size % W, x.size):
        jj = em.iconst(j)
        xs = [b.load(b.gep(row, [jj])) for row in rows]
        xv = xs[0] if len(xs) == 1 else em.vector_of(xs)
        totals = em.fadd(totals, em.fmul(em.elem(g, w, (jj,)), xv))
    return totals


def row_matvec(em, g, n: Node, w: Node, x: Node) -> None:
    """W @ x into n's buffer, each output a row dot of W's row with x (as row_dot, in
    the same order, so lanes and the scalar loop agree). Outputs go in tiles that share
    each loaded chunk of x: the tile's accumulators (outputs x lanes) stay in
    registers."""
    b = em.b
    em.result_buffer(g, n)
    rows = em.input_row(g, x)
    K, D = w.shape
    Wd = em.W
    VT = ir.VectorType(em.T, Wd)
    base = em.once_pointer(g, w)     # (a parameter or a buffer: see the lower pass)
    accs = ROW_MATVEC_ACCS[vector_registers(Wd * em.T_bytes * 8)]
    kt = max(1, min(K, accs // len(rows)))

    def tile(k0, tk: int):
        ks = [b.add(k0, em.iconst(a)) for a in range(tk)]
        wrows = [b.gep(base, [b.mul(k, em.iconst(D))]) for k in ks]
        accs = [[em.alloca(VT) for _ in rows] for _ in ks]
        for acc_row in accs:
            for a in acc_row:
                b.store(em.splat(em.fconst(0), Wd), a)
        with em.loop(D // Wd) as c:
            xs = [row_chunk(em, row, c) for row in rows]
            for wrow, acc_row in zip(wrows, accs):
                wc = row_chunk(em, wrow, c)
                for xc, a in zip(xs, acc_row):
                    b.store(em.fadd(b.load(a), em.fmul(wc, xc)), a)
        for k, acc_row in zip(ks, accs):
            totals = lane_totals(em, [b.load(a) for a in acc_row])
            for j in range(D - D % Wd, D):
                jj = em.iconst(j)
                xs = [b.load(b.gep(row, [jj])) for row in rows]
                xv = xs[0] if len(xs) == 1 else em.vector_of(xs)
                totals = em.fadd(totals, em.fmul(em.elem(g, w, (k, jj)), xv))
            em.store(g, n, (k,), totals)

    if K // kt:
        with em.loop(K // kt) as t:
            tile(b.mul(t, em.iconst(kt)), kt)
    if K % kt:
        tile(em.iconst(K - K % kt), K % kt)


def lane_totals(em, vecs: list) -> ir.Value:
    """Each vector's elements summed (a balanced tree of adjacent pairs), total k in
    lane k; one vector gives a scalar. For W vectors: log2 W stages, stage g adding
    the two halves of a bit-g swap (see codegen/transpose.py)."""
    b = em.b
    W = em.W
    if len(vecs) == 1:
        v = vecs[0]
        return em.tree([b.extract_element(v, ir.Constant(I32, k)) for k in range(W)],
                       em.fadd)
    g = 1
    while len(vecs) > 1:
        low = ir.Constant(ir.VectorType(I32, W), [k if not k & g else W + k - g
                                                  for k in range(W)])
        high = ir.Constant(ir.VectorType(I32, W), [k + g if not k & g else W + k
                                                   for k in range(W)])
        vecs = [em.fadd(b.shuffle_vector(p, q, low), b.shuffle_vector(p, q, high))
                for p, q in zip(vecs[::2], vecs[1::2])]
        g *= 2
    return vecs[0]
