"""Constant folding and algebraic identities.

Rules (each a comment on what it removes):
    op(c1, c2, ...)          -> const      every input a constant: evaluate with the op's
                                           NumPy semantics (real and int scalars)
    x * 1, 1 * x, x / 1      -> x
    x + 0, 0 + x, x - 0      -> x
    0 - x                    -> -x
    x * -1, -1 * x           -> -x
    x + -y, -y + x           -> x - y
    -(-x)                    -> x
    broadcast(broadcast(x))  -> broadcast(x)  (dims composed)
Multiplication by 0 is not folded: IEEE says 0 * inf = nan, and the compiled code must
mean what the source says.
"""
from __future__ import annotations

import numpy as np

from lossc.ir.graph import INT, REAL, Graph, Node, transform
from lossc.ir.ops import OPS


def const_value(n: Node):
    """The value of a scalar constant, seen through broadcasts; None otherwise."""
    while n.op == "broadcast":
        n = n.inputs[0]
    if n.op in ("const", "iconst"):
        return n.attr("value")
    return None


def _is(n: Node, v: float) -> bool:
    c = const_value(n)
    return c is not None and c == v


def fold(graph: Graph) -> Graph:
    return transform(graph, _rule)


def _rule(b, n: Node, xs: tuple):
    d = OPS[n.op]
    if (xs and d.kind == "elem" and n.shape == () and n.dtype in (REAL, INT)
            and all(x.op in ("const", "iconst") for x in xs) and n.op != "checked_index"):
        with np.errstate(all="ignore"):
            v = d.eval(dict(n.attrs), *[np.float64(x.attr("value")) if x.op == "const"
                                        else np.int64(x.attr("value")) for x in xs])
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
