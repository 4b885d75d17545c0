"""Reductions (sum, prod, max, min, norm, logsumexp) and the backward-only helpers of
max and prod (argext_mask, prod_others): loops that fill a node's buffer, for one lane
group.

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


def reduce_parts(n: Node, axes):
    """(input, kept axes, their sizes, the reduced axes' sizes)."""
    x = n.inputs[0]
    kept = tuple(a for a in range(x.rank) if a not in axes)
    return x, kept, tuple(x.shape[a] for a in kept), tuple(x.shape[a] for a in axes)


def merge(kept, kidx, axes, ridx, rank):
    """The full index of an element from its kept and reduced parts."""
    full = [None] * rank
    for a, v in zip(kept, kidx):
        full[a] = v
    for a, v in zip(axes, ridx):
        full[a] = v
    return tuple(full)


def accumulator(em, g, n: Node, init, ty=None):
    """A variable for elements of n's type (vectors of lanes for a per-sample n)."""
    ty = ty or em.elem_type(g, n)
    a = em.alloca(ty)
    em.b.store(em.splat(init, ty.count) if is_vector_type(ty) else init, a)
    return a


def fold_group(em, g, x, kept, kidx, axes, rshape, init, combine, pre=lambda v: v,
               wide=False):
    """Combine pre(v) over the elements v of one reduction group. A group of up to
    UNROLL elements is unrolled and combined as a balanced tree (short dependency
    chains: independent vector operations in flight); a longer one is a loop with an
    accumulator starting at init, in double precision if `wide` (a sum: float32's
    sequential sum of 1e5 elements keeps four digits). Both orders are fixed at compile
    time, so lanes and the scalar loop get bit-identical results."""
    b = em.b
    if prod(rshape) <= UNROLL:
        vals = [pre(em.elem(g, x, merge(kept, kidx, axes, tuple(map(em.iconst, r)), x.rank)))
                for r in itertools.product(*map(range, rshape))]
        return em.tree(vals, combine)
    T = ir.DoubleType() if wide else em.T
    acc = accumulator(em, g, x, ir.Constant(T, init.constant),
                      ir.VectorType(T, g.lanes) if em.vector_node(g, x) else T)
    widen = em.wide if wide else (lambda v: v)
    with em.loops(rshape) as ridx:
        v = pre(em.elem(g, x, merge(kept, kidx, axes, ridx, x.rank)))
        b.store(combine(b.load(acc), widen(v)), acc)
    return em.narrow(b.load(acc)) if wide else b.load(acc)


def fold_sum(em, g, x, kept, kidx, axes, rshape, pre=lambda v: v):
    """The sum of pre(v) over one reduction group (fold_group: a tree, or a loop that
    adds in double precision)."""
    return fold_group(em, g, x, kept, kidx, axes, rshape, em.fconst(0), em.fadd, pre,
                      wide=True)


def group_max(em, g, x, kept, kidx, axes, rshape, kind="max", pre=lambda v: v):
    sym = ">" if kind == "max" else "<"
    init = em.fconst(-math.inf if kind == "max" else math.inf)
    # b wins when it is larger or NaN: NaN propagates as in NumPy, in any order
    return fold_group(em, g, x, kept, kidx, axes, rshape, init, lambda a, v: em.select(
        em.or_(em.fcmp(sym, v, a), em.b.fcmp_unordered("uno", v, v)), v, a), pre)


def group_norm(em, g, x, kept, kidx, axes, rshape):
    """s sqrt(sum((v / s)^2)), s the largest |v| (1 where that is 0, infinite or NaN):
    the sum of squares itself underflows to 0 below 1e-154 (float64; 1e-19 float32)
    and overflows past 1e154 (1e19)."""
    top = group_max(em, g, x, kept, kidx, axes, rshape, pre=lambda v: em.math("fabs", v))
    usable = em.and_(em.fcmp(">", top, em.fconst(0)),
                     em.fcmp("<", top, em.fconst(math.inf)))
    scale = em.select(usable, top, em.fconst(1))

    def square(v):
        v = em.fdiv(v, scale)
        return em.fmul(v, v)
    return em.fmul(scale, em.math("sqrt", fold_sum(em, g, x, kept, kidx, axes, rshape,
                                                   square)))


def log_sum_parts(em, g, x, kept, kidx, axes, rshape):
    """(M, finite, t) of a group for log(sum(exp(v))) = M + log1p(t): M its maximum,
    whether M is finite, and t = sum(exp(v - M)) - 1 computed without the maxima's
    exact 1s, as the sum of the other terms plus (the number of maxima - 1). As
    M + log(s), the terms below eps / 2 relative to 1 rounded away in s:
    logsumexp([0, -40]) was 0, not 4.2e-18."""
    M = group_max(em, g, x, kept, kidx, axes, rshape)
    m = safe_shift(em, M)
    group = (x, kept, kidx, axes, rshape)
    rest = fold_sum(em, g, *group, lambda v: em.select(
        em.fcmp("==", v, M), em.fconst(0), em.math("exp", em.fsub(v, m))))
    ties = fold_sum(em, g, *group, lambda v: em.select(
        em.fcmp("==", v, M), em.fconst(1), em.fconst(0)))
    return (M,) + beside_maxima(em, M, rest, ties)


def beside_maxima(em, M, rest, ties) -> tuple:
    """(finite, t) of log_sum_parts from the sum of the terms that are not maxima
    (rest) and the number of maxima (ties)."""
    finite = em.fcmp("<", em.math("fabs", M), em.fconst(math.inf))
    return finite, em.fadd(rest, em.fsub(ties, em.fconst(1)))


def log_sum_exp(em, M, finite, t):
    """M + log1p(t) (log_sum_parts); M itself where M is infinite or NaN (inf, -inf of
    a group of -inf, NaN)."""
    return em.select(finite, em.fadd(M, em.math("log1p", t)), M)


def safe_shift(em, m):
    """The max to subtract in logsumexp/softmax: 0 when it is infinite."""
    finite = em.fcmp("<", em.math("fabs", m), em.fconst(math.inf))
    return em.select(finite, m, em.fconst(0))


def lower_reduce(em, g, n: Node, kind: str) -> None:
    em.result_buffer(g, n)
    axes = n.attr("axes")
    x, kept, kshape, rshape = reduce_parts(n, axes)
    with em.loops(kshape) as kidx:
        group = (x, kept, kidx, axes, rshape)
        if kind == "sum":
            r = fold_sum(em, g, *group)
        elif kind == "prod":
            r = fold_group(em, g, *group, em.fconst(1), em.fmul)
        elif kind == "norm":
            r = group_norm(em, g, *group)
        elif kind in ("max", "min"):
            r = group_max(em, g, *group, kind)
        elif kind == "logsumexp":
            r = log_sum_exp(em, *log_sum_parts(em, g, *group))
        else:
            raise AssertionError(kind)
        em.store(g, n, kidx, r)


def lower_argext(em, g, n: Node) -> None:
    """1 at the first maximum (kind=max) or minimum of each group, 0 elsewhere."""
    em.result_buffer(g, n)
    b = em.b
    axes, kind = n.attr("axes"), n.attr("kind")
    x, kept, kshape, rshape = reduce_parts(n, axes)
    flag = ir.VectorType(I1, g.lanes) if em.vector_node(g, x) else I1
    found = em.alloca(flag)
    with em.loops(kshape) as kidx:
        m = group_max(em, g, x, kept, kidx, axes, rshape, kind)
        b.store(em.splat(ir.Constant(I1, 0), g.lanes) if is_vector_type(flag)
                else ir.Constant(I1, 0), found)
        with em.loops(rshape) as ridx:
            full = merge(kept, kidx, axes, ridx, x.rank)
            v = em.elem(g, x, full)
            # (a NaN is the extremum when there is one: the first NaN takes it, as
            # NumPy's argmax)
            hit = em.and_(em.or_(em.fcmp("==", v, m), b.fcmp_unordered("uno", v, v)),
                          em.not_(b.load(found)))
            b.store(em.or_(b.load(found), hit), found)
            em.store(g, n, full, em.select(hit, em.fconst(1), em.fconst(0)))


def lower_prod_others(em, g, n: Node) -> None:
    """Exclusive products by a forward then a backward sweep: no division, so zeros
    get their exact gradient."""
    buf = em.result_buffer(g, n)
    b = em.b
    axes = n.attr("axes")
    x, kept, kshape, rshape = reduce_parts(n, axes)
    count = prod(rshape)
    vector = em.vector_node(g, x)
    run = accumulator(em, g, x, em.fconst(1))
    with em.loops(kshape) as kidx:
        b.store(em.splat(em.fconst(1), g.lanes) if vector else em.fconst(1), run)
        with em.loop(count) as j:
            full = merge(kept, kidx, axes, em.unflatten(rshape, j), x.rank)
            em.store(g, n, full, b.load(run))
            b.store(em.fmul(b.load(run), em.elem(g, x, full)), run)
        b.store(em.splat(em.fconst(1), g.lanes) if vector else em.fconst(1), run)
        with em.loop(count) as j:
            jr = b.sub(em.iconst(count - 1), j)
            full = merge(kept, kidx, axes, em.unflatten(rshape, jr), x.rank)
            p = b.gep(buf, [em.flat(n.shape, full)])
            b.store(em.fmul(b.load(p, align=8), b.load(run)), p, align=8)
            b.store(em.fmul(b.load(run), em.elem(g, x, full)), run)
