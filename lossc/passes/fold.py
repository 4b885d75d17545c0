"""Constant folding and algebraic identities.

Rules (each a comment on what it removes):
    op(c1, c2, ...)          -> const      every input a constant, the op foldable:
                                           evaluate with its NumPy semantics (real and int
                                           scalars)
    x * 1, 1 * x, x / 1      -> x
    x + 0, 0 + x, x - 0      -> x
    0 - x                    -> -x
    x * -1, -1 * x           -> -x
    x + -y, -y + x           -> x - y
    -(-x)                    -> x
    broadcast(broadcast(x))  -> broadcast(x)  (dims composed)
    a (x) v + b (x) v        -> (a + b) (x) v  two products sharing a broadcast factor,
                                           the others broadcasts of the same kind (see
                                           factor_products)
Multiplication by 0 is not folded: IEEE says 0 * inf = nan, and the compiled code must
mean what the source says. Nor is integer arithmetic that overflows 64 bits: that is an
index error at run time (ir/ops, codegen/index.py), never a wrapped constant.
"""
from __future__ import annotations

import numpy as np

from lossc.ir.graph import INT, REAL, Graph, Node, transform
from lossc.ir.ops import OPS, const_value


def _is(n: Node, v: float) -> bool:
    c = const_value(n)
    return c is not None and c == v


def factor_products(b, p: Node, q: Node):
    """broadcast(a) * v + broadcast(c) * v -> broadcast(a + c) * v, for a factor v the
    two products share and a, c of one shape broadcast alike. Reverse mode makes this
    sum when a value reaches a product along two paths: in softmax regression,
    logsumexp(z) - z[y] gives the gradient of W as two outer products with x, one from
    each term. Factored, it is one outer product (the codegen accumulates those with a
    blocked kernel), and a + c is usually computed already (the gradient of z). Only
    this shape is factored: in general (a + c) * v can overflow differently from
    a * v + c * v, and a user's formula is kept as written."""
    for i in (0, 1):
        for j in (0, 1):
            v, w = p.inputs[i], q.inputs[j]
            # (the same broadcast, or two of one value: CSE has not merged them yet)
            if not (v.op == w.op == "broadcast" and v.attrs == w.attrs
                    and v.inputs[0] is w.inputs[0]):
                continue
            a, c = p.inputs[1 - i], q.inputs[1 - j]
            if (a.op == c.op == "broadcast" and a.attr("dims") == c.attr("dims")
                    and a.shape == c.shape and a.inputs[0].shape == c.inputs[0].shape
                    and a.inputs[0].dtype == c.inputs[0].dtype == REAL):
                summed = b.broadcast(b.emit("add", (a.inputs[0], c.inputs[0])), a.shape,
                                     a.attr("dims"))
                return b.emit("mul", (v, summed) if i == 0 else (summed, v))
    return None


def fold(graph: Graph) -> Graph:
    return transform(graph, _rule)


def _rule(b, n: Node, xs: tuple):
    d = OPS[n.op]
    if (xs and d.foldable and n.shape == () and n.dtype in (REAL, INT)
            and all(x.op in ("const", "iconst") for x in xs)):
        try:
            with np.errstate(all="ignore"):
                v = d.eval(dict(n.attrs), *[np.float64(x.attr("value")) if x.op == "const"
                                            else np.int64(x.attr("value")) for x in xs])
        except IndexError:      # index arithmetic that overflows: the run-time check's
            return None
        if n.dtype == INT:
            return b.emit("iconst", (), value=int(v))
        return b.emit("const", (), value=float(v))
    if n.op == "mul":
        if _is(xs[1], 1.0):
            return xs[0]
        if _is(xs[0], 1.0):
            return xs[1]
        if _is(xs[1], -1.0):
            return b.emit("neg", (xs[0],))
        if _is(xs[0], -1.0):
            return b.emit("neg", (xs[1],))
    if n.op == "div" and _is(xs[1], 1.0):
        return xs[0]
    if n.op == "add":
        if xs[0].op == "mul" and xs[1].op == "mul":
            factored = factor_products(b, xs[0], xs[1])
            if factored is not None:
                return factored
        if _is(xs[1], 0.0):
            return xs[0]
        if _is(xs[0], 0.0):
            return xs[1]
        if xs[1].op == "neg":
            return b.emit("sub", (xs[0], xs[1].inputs[0]))
        if xs[0].op == "neg":
            return b.emit("sub", (xs[1], xs[0].inputs[0]))
    if n.op == "sub":
        if _is(xs[1], 0.0):
            return xs[0]
        if _is(xs[0], 0.0):
            return b.emit("neg", (xs[1],))
    if n.op == "neg" and xs[0].op == "neg":
        return xs[0].inputs[0]
    if n.op == "broadcast" and xs[0].op == "broadcast":
        inner = xs[0]
        outer_dims = n.attr("dims")
        dims = tuple(outer_dims[d] for d in inner.attr("dims"))
        return b.broadcast(inner.inputs[0], n.shape, dims)
    return None
