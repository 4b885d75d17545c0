"""A tensor input's rows as lane vectors: element j of a group's buffer holds
(x[i][j], x[i+1][j], ...), the lanes' samples side by side, as every per-sample value
is (codegen/llvm.py). Inputs read only along their rows (codegen/rows.py,
codegen/row_outer.py) are never transposed.

W x W blocks are loaded as W row vectors and transposed with shuffles; the last
size mod W elements are gathered. The transpose swaps the bits of the row and column
indices one bit at a time: stage g (1, 2, 4, ...) exchanges the elements whose row and
column differ in bit g between rows p and p + g. Each stage's masks are what the vector
units do cheaply: g = 1 interleaves within 128-bit lanes (unpcklpd/unpckhpd), g = 2
and 4 move whole 128- and 256-bit blocks (vperm2f128, vshuff64x2); a network of
lane-crossing interleaves would take more instructions (docs/codegen.md).
"""
from __future__ import annotations

from llvmlite import ir

from lossc.codegen.values import I32, is_vector
from lossc.ir.graph import Node


def transpose_input(em, g, n: Node) -> None:
    """Load group g's rows of input n into a buffer of lane vectors."""
    b, W = em.b, g.lanes
    VT = ir.VectorType(em.T, W)
    buf = b.bitcast(em.buffer(n.size * W), VT.as_pointer())
    transpose_rows(em, g.input_rows[n.attr("index")], n.size, buf)
    g.buffers[n.id] = buf


def gather_rows(em, g, n: Node) -> None:
    """Group g's rows of a parameter at its lanes' indices (`P[u]`, plan.py
    is_row_gather) into a buffer of lane vectors, as an input's rows are: each lane's
    row from the parameter, W x W blocks transposed. The indices were checked when
    computed (codegen/index.py returns before any use of a bad one)."""
    b, W = em.b, g.lanes
    VT = ir.VectorType(em.T, W)
    table, i = n.inputs[0], em.elem(g, n.inputs[1], ())
    rows = []
    for lane in range(W):
        row = b.extract_element(i, em.iconst(lane)) if is_vector(i) else i
        first = b.add(em.iconst(table.attr("offset")), b.mul(row, em.iconst(n.size)))
        rows.append(b.gep(em.params, [first]))
    buf = b.bitcast(em.buffer(n.size * W), VT.as_pointer())
    transpose_rows(em, rows, n.size, buf)
    g.buffers[n.id] = buf


def transpose_rows(em, rows: list, size: int, buf) -> None:
    """buf[j] <- (rows[0][j], rows[1][j], ...) for j < size: len(rows) = W rows of
    `size` elements into `size` lane vectors."""
    b, W = em.b, len(rows)
    VT = ir.VectorType(em.T, W)
    with em.loop(size // W) as jb:
        start = b.mul(jb, em.iconst(W))
        vecs = [b.load(b.bitcast(b.gep(r, [start]), VT.as_pointer()), align=em.T_bytes)
                for r in rows]
        for k, v in enumerate(transposed(b, vecs)):
            b.store(v, b.gep(buf, [b.add(start, em.iconst(k))]), align=8)
    for j in range(size - size % W, size):
        out = em.vector_of([b.load(b.gep(r, [em.iconst(j)])) for r in rows])
        b.store(out, b.gep(buf, [em.iconst(j)]), align=8)


def transposed(b, vecs: list) -> list:
    """W vectors of W elements, transposed: element k of vector p to element p of
    vector k, in log2 W stages of shuffles."""
    W = len(vecs)
    vecs = list(vecs)
    bit = 1
    while bit < W:
        low = ir.Constant(ir.VectorType(I32, W), [k if not k & bit else W + k - bit
                                                  for k in range(W)])
        high = ir.Constant(ir.VectorType(I32, W), [k + bit if not k & bit else W + k
                                                   for k in range(W)])
        for p in range(W):
            if not p & bit:
                q = p + bit
                vecs[p], vecs[q] = (b.shuffle_vector(vecs[p], vecs[q], low),
                                    b.shuffle_vector(vecs[p], vecs[q], high))
        bit *= 2
    return vecs
