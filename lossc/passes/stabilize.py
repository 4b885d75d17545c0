"""Numerically stabilizing rewrites of naive forms users write.

    log(1 + exp(z)), log(exp(z) + 1)  -> softplus(z)
    log(sigmoid(z))                   -> log_sigmoid(z)
    log(1 - sigmoid(z))               -> -softplus(z)
    log(sum(exp(v), axis=k))          -> logsumexp(v, axis=k)
    log(softmax(v))                   -> log_softmax(v)
    log(softmax(v)[i]), log(softmax(M, axis=k)[i, j])
                                      -> log_softmax(v)[i], ...: cross-entropy
                                         written as NumPy users write it
    log(exp(x))                       -> x
    log(1 + x), log(x + 1)            -> log1p(x)
    log(1 - x)                        -> log1p(-x)
    exp(x) - 1, exp(x) + -1, -1 + exp(x)
                                      -> expm1(x)
    1 / (1 + exp(-z)), exp(z) / (1 + exp(z))
                                      -> sigmoid(z)

Matching sees through the order of `+` operands and the spelling of a constant (`1`,
`1.0`, `-1` as a negated 1, a broadcast 1). Each rewrite made is recorded in `graph.rewrites` with its line.
Runs on the forward graph, before autodiff, so the gradients are the stable ones too.
"""
from __future__ import annotations

from lossc.ir.graph import Graph, Node, transform
from lossc.ir.ops import const_value


def _one(n: Node) -> bool:
    return const_value(n) == 1.0


def _minus_one(n: Node) -> bool:
    return const_value(n) == -1.0 or (n.op == "neg" and _one(n.inputs[0]))


def _plus_one(n: Node):
    """If n is `1 + x` or `x + 1`, return x."""
    if n.op == "add":
        if _one(n.inputs[0]):
            return n.inputs[1]
        if _one(n.inputs[1]):
            return n.inputs[0]
    return None


def _picked_from(x: Node, op: str):
    """(the op node, the views from it to x, innermost first) if x is elements of an
    `op` node picked by indexing (take, slice, gather by int vectors, transpose: log
    commutes with them), else None."""
    views = []
    while x.op in ("take", "slice", "gather", "transpose"):
        views.append(x)
        x = x.inputs[0]
    return (x, views[::-1]) if views and x.op == op else None


def stabilize(graph: Graph) -> Graph:
    out_log = []

    def note(n: Node, text: str):
        where = f"line {n.span.line}: " if n.span else ""
        out_log.append(where + text)

    def rule(b, n: Node, xs: tuple):
        if n.op == "log":
            (x,) = xs
            rest = _plus_one(x)
            if rest is not None and rest.op == "exp":
                note(n, "log(1 + exp(z)) -> softplus(z)")
                return b.emit("softplus", rest.inputs)
            if x.op == "sigmoid":
                note(n, "log(sigmoid(z)) -> log_sigmoid(z)")
                return b.emit("log_sigmoid", x.inputs)
            if x.op == "sub" and _one(x.inputs[0]) and x.inputs[1].op == "sigmoid":
                note(n, "log(1 - sigmoid(z)) -> -softplus(z)")
                return b.neg(b.emit("softplus", x.inputs[1].inputs))
            if rest is not None and rest.op == "neg" and rest.inputs[0].op == "sigmoid":
                # (1 + -sigmoid(z), -sigmoid(z) + 1: the same, spelled with +)
                note(n, "log(1 - sigmoid(z)) -> -softplus(z)")
                return b.neg(b.emit("softplus", rest.inputs[0].inputs))
            if x.op == "sum" and x.inputs[0].op == "exp":
                note(n, "log(sum(exp(v))) -> logsumexp(v)")
                return b.emit("logsumexp", x.inputs[0].inputs, axes=x.attr("axes"))
            if x.op == "softmax":
                note(n, "log(softmax(v)) -> log_softmax(v)")
                return b.emit("log_softmax", x.inputs, axis=x.attr("axis"))
            picked = _picked_from(x, "softmax")
            if picked is not None:
                soft, views = picked
                note(n, "log(softmax(v)[i]) -> log_softmax(v)[i]")
                out = b.emit("log_softmax", soft.inputs, axis=soft.attr("axis"))
                for view in views:
                    out = b.emit(view.op, (out,) + tuple(view.inputs[1:]),
                                 **dict(view.attrs))
                return out
            if x.op == "exp":
                note(n, "log(exp(x)) -> x")
                return x.inputs[0]
            if rest is not None:
                note(n, "log(1 + x) -> log1p(x)")
                return b.emit("log1p", (rest,))
            if x.op == "sub" and _one(x.inputs[0]):
                note(n, "log(1 - x) -> log1p(-x)")
                return b.emit("log1p", (b.neg(x.inputs[1]),))
        if n.op == "sub" and xs[0].op == "exp" and _one(xs[1]):
            note(n, "exp(x) - 1 -> expm1(x)")
            return b.emit("expm1", xs[0].inputs)
        if n.op == "div":
            num, rest = xs[0], _plus_one(xs[1])
            if rest is not None and rest.op == "exp":
                arg = rest.inputs[0]
                if _one(num) and arg.op == "neg":
                    note(n, "1 / (1 + exp(-z)) -> sigmoid(z)")
                    return b.emit("sigmoid", arg.inputs)
                if num.op == "exp" and (num is rest or num.inputs[0] is arg):
                    note(n, "exp(z) / (1 + exp(z)) -> sigmoid(z)")
                    return b.emit("sigmoid", (arg,))
        if n.op == "add":
            for e, c in (xs, xs[::-1]):
                if e.op == "exp" and _minus_one(c):
                    note(n, "exp(x) - 1 -> expm1(x)")
                    return b.emit("expm1", e.inputs)
        return None

    g = transform(graph, rule)
    g.rewrites = list(graph.rewrites) + out_log
    return g
