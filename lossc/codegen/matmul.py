"""Matrix products (A @ B, A @ x, x @ A) for one lane group, or for all the groups of
an iteration at once when one operand is an input.

A matrix-vector product computes MATVEC_TILE outputs at a time, when a tile is at most
MATVEC_TILE_TERMS products (code size): each element of the vector is loaded once per
tile and feeds MATVEC_TILE independent accumulators, k = 0, 1, ... in order (one FMA
each), where an output at a time would load the vector once per output. A longer
matrix-vector sum (beyond codegen/reduce.py's UNROLL terms) is a loop, MATVEC_TILE
outputs' sums side by side in it. Other products sum their K terms as a balanced tree
(up to UNROLL), or in a loop.
"""
from __future__ import annotations

from lossc.codegen.reduce import UNROLL, accumulator
from lossc.ir.graph import Node

MATVEC_TILE = 4   # outputs of a matrix-vector product computed together ...
MATVEC_TILE_TERMS = 128   # ... when a tile is at most this many products (code size)


def lower_matmul(em, g, n: Node) -> None:
    em.result_buffer(g, n)
    b = em.b
    x, y = n.inputs
    K = x.shape[-1]

    def term(idx, k):
        xi = (idx[0], k) if x.rank == 2 else (k,)
        yi = (k, idx[-1]) if y.rank == 2 else (k,)
        return em.fmul(em.elem(g, x, xi), em.elem(g, y, yi))

    if n.rank == 1 and MATVEC_TILE * K <= MATVEC_TILE_TERMS:
        if g.lanes > 1 and len(g.iteration) > 1 and input_product(em, n):
            return matvec_tiles_of_groups(em, g, n, K)
        return matvec_tiles(em, g, n, term, K)
    if n.rank == 1 and K > UNROLL:
        return matvec_loop_tiles(em, g, n, term, K)
    with em.loops(n.shape) as idx:
        if K <= UNROLL:   # a balanced tree of the K products, as reductions sum
            em.store(g, n, idx, em.tree([term(idx, em.iconst(k)) for k in range(K)],
                                        em.fadd))
        else:
            acc = accumulator(em, g, n, em.fconst(0))
            with em.loop(K) as k:
                b.store(em.fadd(b.load(acc), term(idx, k)), acc)
            em.store(g, n, idx, b.load(acc))


def matvec_tiles(em, g, n: Node, term, K: int) -> None:
    """A matrix-vector product (W @ x or x @ W), MATVEC_TILE outputs at a time, for
    the lanes and the scalar loop alike."""
    def tile(outs):
        accs = [term((i,), em.iconst(0)) for i in outs]
        for k in range(1, K):
            kk = em.iconst(k)
            accs = [em.fadd(a, term((i,), kk)) for a, i in zip(accs, outs)]
        for a, i in zip(accs, outs):
            em.store(g, n, (i,), a)
    each_matvec_tile(em, n.shape[0], tile)


def matvec_loop_tiles(em, g, n: Node, term, K: int) -> None:
    """A matrix-vector product of sums too long to unroll, MATVEC_TILE outputs' sums
    side by side in one loop over k: each output's sum is the loop of one output at a
    time (from zero, k = 0, 1, ... in order, one addition each), but the tile's
    MATVEC_TILE sums are independent chains, where one output at a time would wait on
    each addition's latency."""
    b = em.b

    def tile(outs):
        accs = [accumulator(em, g, n, em.fconst(0)) for _ in outs]
        with em.loop(K) as k:
            for acc, i in zip(accs, outs):
                b.store(em.fadd(b.load(acc), term((i,), k)), acc)
        for acc, i in zip(accs, outs):
            em.store(g, n, (i,), b.load(acc))
    each_matvec_tile(em, n.shape[0], tile)


def each_matvec_tile(em, H: int, body) -> None:
    """body(outs) for the tiles of an H-vector result: MATVEC_TILE outputs at a time
    (a loop), then the last H mod MATVEC_TILE one by one; outs: the tile's indices."""
    b = em.b
    R = MATVEC_TILE
    for start, count, width in ((0, H // R, R), (H - H % R, H % R, 1)):
        if not count:
            continue
        with em.loop(count) as t:
            first = b.add(em.iconst(start), b.mul(t, em.iconst(width)))
            body([b.add(first, em.iconst(r)) if r else first for r in range(width)])


def input_product(em, n: Node):
    """(matrix, input, matrix first) if n is W @ x or x @ W of a once-per-call
    matrix and an input vector, else None."""
    a, c = n.inputs
    for m, v, first in ((a, c, True), (c, a, False)):
        if m.rank == 2 and m.id not in em.vary and v.rank == 1 and v.op == "input":
            return m, v, first
    return None


def matvec_tiles_of_groups(em, g, n: Node, K: int) -> None:
    """matvec_tiles for every lane group of g's iteration at once (an input's lanes
    are loaded for all groups before any group's values are computed): each matrix
    element is broadcast once per tile and feeds MATVEC_TILE accumulators in every
    group, where one group at a time would load it once per group. The sums are
    those of matvec_tiles, term by term, so lanes and the scalar loop agree."""
    m, v, first = input_product(em, n)
    groups = g.iteration
    for h in groups:
        if h is not g:
            em.result_buffer(h, n)

    def tile(outs):
        accs = None
        for k in range(K):
            kk = em.iconst(k)
            ws = [em.elem(g, m, (i, kk) if first else (kk, i)) for i in outs]
            xs = [em.elem(h, v, (kk,)) for h in groups]
            terms = [[em.fmul(w, x) if first else em.fmul(x, w) for w in ws] for x in xs]
            accs = terms if accs is None else [
                [em.fadd(a, t_) for a, t_ in zip(acc_g, term_g)]
                for acc_g, term_g in zip(accs, terms)]
        for h, acc_g in zip(groups, accs):
            for a, i in zip(acc_g, outs):
                em.store(h, n, (i,), a)
    each_matvec_tile(em, n.shape[0], tile)
