"""softmax and log_softmax along an axis, for one lane group: per group of the axis,
the max (0 if infinite), the sum of exponentials of the shifted elements (as
codegen/reduce.py sums), then each element (log_softmax from the sum without the max's
own 1: reduce.py's log_sum_parts); and logsumexp_softmax, the logsumexp of a vector and
the softmax of its gradient from one set of exponentials."""
from __future__ import annotations

from lossc.codegen.reduce import (beside_maxima, fold_sum, group_max, log_sum_exp,
                                  log_sum_parts, merge, reduce_parts, safe_shift)
from lossc.ir.graph import Node


def lower_softmax(em, g, n: Node, log: bool) -> None:
    em.result_buffer(g, n)
    axes = (n.attr("axis"),)
    x, kept, kshape, rshape = reduce_parts(n, axes)
    with em.loops(kshape) as kidx:
        if log:
            # (v - M) - log1p(t), or v - M where M is not finite (log_sum_parts)
            M, finite, t = log_sum_parts(em, g, x, kept, kidx, axes, rshape)
            logs = em.select(finite, em.math("log1p", t), em.fconst(0))
            with em.loops(rshape) as ridx:
                full = merge(kept, kidx, axes, ridx, x.rank)
                em.store(g, n, full, em.fsub(em.fsub(em.elem(g, x, full), M), logs))
        else:
            m = safe_shift(em, group_max(em, g, x, kept, kidx, axes, rshape))
            s = fold_sum(em, g, x, kept, kidx, axes, rshape,
                         lambda v: em.math("exp", em.fsub(v, m)))
            with em.loops(rshape) as ridx:
                full = merge(kept, kidx, axes, ridx, x.rank)
                shifted = em.fsub(em.elem(g, x, full), m)
                em.store(g, n, full, em.fdiv(em.math("exp", shifted), s))


def logsumexp_softmax(em, g, n: Node) -> None:
    """logsumexp(z) = M + log1p(t) as reduce.py's log_sum_parts computes it, and the
    softmax exp(z - logsumexp(z)) as exp(z_k - m) * (1 / s), s = sum_k exp(z_k - m):
    one exponential per element instead of two, within an ulp or two of the other way.
    For NaN or infinite z both give the same NaNs, zeros and infinities: m is finite
    unless z holds an infinity (then 0), and the sum is then at least 1, or infinite,
    or NaN. The softmax goes to elements 0..K-1 of n's buffer, the logsumexp to element
    K (the lower pass reads them through views). Unrolled: the lower pass makes this op
    only for z of at most passes/lower.py's PAIR_MAX elements."""
    em.result_buffer(g, n)
    z = n.inputs[0]
    K = z.size
    M = group_max(em, g, z, (), (), (0,), (K,))
    m = safe_shift(em, M)
    zs = [em.elem(g, z, (em.iconst(k),)) for k in range(K)]
    es = [em.math("exp", em.fsub(v, m)) for v in zs]
    total = em.tree(list(es), em.fadd)
    inverse = em.fdiv(em.fconst(1), total)
    for k, e in enumerate(es):
        em.store(g, n, (em.iconst(k),), em.fmul(e, inverse))
    top = [em.fcmp("==", v, M) for v in zs]
    rest = em.tree([em.select(c, em.fconst(0), e) for c, e in zip(top, es)], em.fadd)
    ties = em.tree([em.select(c, em.fconst(1), em.fconst(0)) for c in top], em.fadd)
    em.store(g, n, (em.iconst(K),), log_sum_exp(em, M, *beside_maxima(em, M, rest, ties)))
