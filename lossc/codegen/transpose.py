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

from lossc.codegen.values import I32
from lossc.ir.graph import Node


def transpose_input(em, g, n: Node) -> None:
    """Load group g's rows of input n into a buffer of lane vectors."""
    b, W = em.b, g.lanes
    VT = ir.VectorType(em.T, W)
    buf = b.bitcast(em.buffer(n.size * W), VT.as_pointer())
    rows = g.input_rows[n.attr("index")]
    stages = []
    step = 1
    while step < W:
        low = [k if not k & step else W + k - step for k in range(W)]
        high = [k + step if not k & step else W + k for k in range(W)]
        stages.append((step, ir.Constant(ir.VectorType(I32, W), low),
                       ir.Constant(ir.VectorType(I32, W), high)))
        step *= 2
    with em.loop(n.size // W) as jb:
        start = b.mul(jb, em.iconst(W))
        vecs = [b.load(b.bitcast(b.gep(r, [start]), VT.as_pointer()), align=em.T_bytes)
                for r in rows]
        for bit, low, high in stages:
            for p in range(W):
                if not p & bit:
                    q = p + bit
                    vecs[p], vecs[q] = (b.shuffle_vector(vecs[p], vecs[q], low),
                                        b.shuffle_vector(vecs[p], vecs[q], high))
        for k, v in enumerate(vecs):
            b.store(v, b.gep(buf, [b.add(start, em.iconst(k))]), align=8)
    for j in range(n.size - n.size % W, n.size):
        out = em.vector_of([b.load(b.gep(r, [em.iconst(j)])) for r in rows])
        b.store(out, b.gep(buf, [em.iconst(j)]), align=8)
    g.buffers[n.id] = buf
