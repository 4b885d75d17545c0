"""softmax and log_softmax along an axis, for one lane group: per group of the axis,
the max (0 if infinite), the sum of exponentials of the shifted elements (as
codegen/reduce.py sums), then each element."""
from __future__ import annotations

from lossc.codegen.reduce import fold_group, group_max, merge, reduce_parts, safe_shift
from lossc.ir.graph import Node


def lower_softmax(em, g, n: Node, log: bool) -> None:
    em.result_buffer(g, n)
    axes = (n.attr("axis"),)
    x, kept, kshape, rshape = reduce_parts(n, axes)
    with em.loops(kshape) as kidx:
        m = safe_shift(em, group_max(em, g, x, kept, kidx, axes, rshape))
        s = fold_group(em, g, x, kept, kidx, axes, rshape, em.fconst(0), em.fadd,
                       lambda v: em.math("exp", em.fsub(v, m)))
        logs = em.math("log", s) if log else None
        with em.loops(rshape) as ridx:
            full = merge(kept, kidx, axes, ridx, x.rank)
            shifted = em.fsub(em.elem(g, x, full), m)
            v = em.fsub(shifted, logs) if log else em.fdiv(em.math("exp", shifted), s)
            em.store(g, n, full, v)
