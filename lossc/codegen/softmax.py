"""softmax and log_softmax along an axis, for one lane group: per group of the axis,
the max (0 if infinite), the sum of exponentials of the shifted elements (as
codegen/reduce.py sums), then each element; and logsumexp_softmax, the logsumexp of a
vector and the softmax of its gradient from one set of exponentials."""
from __future__ import annotations

from lossc.codegen.reduce import fold_sum, group_max, merge, reduce_parts, safe_shift
from lossc.ir.graph import Node


def lower_softmax(em, g, n: Node, log: bool) -> None:
    em.result_buffer(g, n)
    axes = (n.attr("axis"),)
    x, kept, kshape, rshape = reduce_parts(n, axes)
    with em.loops(kshape) as kidx:
        m = safe_shift(em, group_max(em, g, x, kept, kidx, axes, rshape))
        s = fold_sum(em, g, x, kept, kidx, axes, rshape,
                     lambda v: em.math("exp", em.fsub(v, m)))
        logs = em.math("log", s) if log else None
        with em.loops(rshape) as ridx:
            full = merge(kept, kidx, axes, ridx, x.rank)
            shifted = em.fsub(em.elem(g, x, full), m)
            v = em.fsub(shifted, logs) if log else em.fdiv(em.math("exp", shifted), s)
            em.store(g, n, full, v)


def logsumexp_softmax(em, g, n: Node) -> None:
    """logsumexp(z) = m + log(s), s = sum_k exp(z_k - m) summed as reduce.py sums, and
    the softmax exp(z - logsumexp(z)) as exp(z_k - m) * (1 / s): one exponential per
    element instead of two, within an ulp or two of the other way. For NaN or infinite
    z both give the same NaNs, zeros and infinities: m is finite unless z holds an
    infinity (then 0), and the sum is then at least 1, or infinite, or NaN. The softmax
    goes to elements 0..K-1 of n's buffer, the logsumexp to element K (the lower pass
    reads them through views). Unrolled: the lower pass makes this op only for z of at
    most passes/lower.py's PAIR_MAX elements."""
    em.result_buffer(g, n)
    z = n.inputs[0]
    K = z.size
    m = safe_shift(em, group_max(em, g, z, (), (), (0,), (K,)))
    es = [em.math("exp", em.fsub(em.elem(g, z, (em.iconst(k),)), m)) for k in range(K)]
    total = em.tree(list(es), em.fadd)
    inverse = em.fdiv(em.fconst(1), total)
    for k, e in enumerate(es):
        em.store(g, n, (em.iconst(k),), em.fmul(e, inverse))
    em.store(g, n, (em.iconst(K),), em.fadd(m, em.math("log", total)))
