"""`lossc graph --format latex`: the per-sample loss and its gradient as equations.

The graph after autodiff is evaluated symbolically with sympy, element by element
(tensors become arrays of sympy expressions, so this is for models of modest size),
then common subexpressions are pulled out with sympy.cse so the gradient prints as
the shared computation it is, not as an expanded tree.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from lossc.ir.graph import Graph, Node
from lossc.ir.ops import OPS

MAX_ELEMENTS = 400

_FUNCS = {
    "neg": lambda x: -x, "exp": sp.exp, "log": sp.log, "log1p": lambda x: sp.log(1 + x),
    "expm1": lambda x: sp.exp(x) - 1, "sqrt": sp.sqrt, "abs": sp.Abs, "sign": sp.sign,
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "tanh": sp.tanh, "sinh": sp.sinh,
    "cosh": sp.cosh, "asin": sp.asin, "acos": sp.acos, "atan": sp.atan,
    "sigmoid": lambda x: 1 / (1 + sp.exp(-x)), "softplus": lambda x: sp.log(1 + sp.exp(x)),
    "relu": lambda x: sp.Max(x, 0), "erf": sp.erf, "to_real": lambda x: x,
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y, "pow": lambda x, y: x ** y, "maximum": sp.Max,
    "minimum": sp.Min, "atan2": sp.atan2,
    "lt": sp.Lt, "le": sp.Le, "gt": sp.Gt, "ge": sp.Ge, "eq": sp.Eq, "ne": sp.Ne,
    "and": sp.And, "or": sp.Or, "not": sp.Not,
    "iadd": lambda x, y: x + y, "isub": lambda x, y: x - y, "imul": lambda x, y: x * y,
    "ineg": lambda x: -x, "checked_index": lambda x: x,
}


def _symbols(name: str, shape: tuple) -> np.ndarray:
    if not shape:
        return np.array(sp.Symbol(name), dtype=object)
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = sp.Symbol(f"{name}_{{{','.join(map(str, idx))}}}")
    return out


def _reduce(x: np.ndarray, axes: tuple, f) -> np.ndarray:
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.moveaxis(x, kept + list(axes), range(x.ndim))
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    out = np.empty(flat.shape[:-1], dtype=object)
    for idx in np.ndindex(*out.shape):
        out[idx] = f(list(flat[idx]))
    return out


def _value(n: Node, xs: list):
    a = dict(n.attrs)
    op = n.op
    if op in _FUNCS:
        f = np.frompyfunc(_FUNCS[op], len(xs), 1)
        return np.asarray(f(*xs), dtype=object)
    if op == "powi":
        return np.asarray(np.frompyfunc(lambda v: v ** a["n"], 1, 1)(xs[0]), dtype=object)
    if op == "where":
        f = np.frompyfunc(lambda c, x, y: sp.Piecewise((x, c), (y, True)), 3, 1)
        return np.asarray(f(*xs), dtype=object)
    if op == "take":
        i = xs[1].item()
        if not isinstance(i, (int, sp.Integer)):
            raise ValueError("LaTeX output does not cover data-dependent indexing")
        return np.take(xs[0], int(i), axis=a["axis"])
    if op in ("sum", "prod", "max", "min", "logsumexp", "norm"):
        f = {"sum": lambda v: sp.Add(*v), "prod": lambda v: sp.Mul(*v),
             "max": lambda v: sp.Max(*v), "min": lambda v: sp.Min(*v),
             "logsumexp": lambda v: sp.log(sp.Add(*[sp.exp(t) for t in v])),
             "norm": lambda v: sp.sqrt(sp.Add(*[t ** 2 for t in v]))}[op]
        return _reduce(xs[0], a["axes"], f)
    if op in ("softmax", "log_softmax"):
        x = xs[0]
        total = np.expand_dims(_reduce(x, (a["axis"],), lambda v: sp.Add(*[sp.exp(t) for t in v])),
                               a["axis"])
        f = (lambda t, s: sp.exp(t) / s) if op == "softmax" else (lambda t, s: t - sp.log(s))
        return np.asarray(np.frompyfunc(f, 2, 1)(x, total), dtype=object)
    if op == "prod_others":
        x = xs[0]
        out = np.empty(x.shape, dtype=object)
        for idx in np.ndindex(*x.shape):
            y = x.copy()
            y[idx] = sp.Integer(1)
            group = [k for k in range(x.ndim) if k not in a["axes"]]
            sel = tuple(idx[k] if k in group else slice(None) for k in range(x.ndim))
            out[idx] = sp.Mul(*np.asarray(y[sel]).reshape(-1))
        return out
    if op in ("broadcast", "transpose", "slice", "put", "pad", "matmul"):
        return np.asarray(OPS[op].eval(a, *xs), dtype=object) if op not in ("put", "pad") \
            else _zeros_placed(op, a, xs)
    raise ValueError(f"LaTeX output does not cover the op {op!r}")


def _zeros_placed(op, a, xs):
    g = xs[0]
    shape = list(g.shape)
    shape.insert(a["axis"], a["size"]) if op == "put" else shape.__setitem__(a["axis"], a["size"])
    out = np.full(shape, sp.Integer(0), dtype=object)
    sl = [slice(None)] * len(shape)
    sl[a["axis"]] = int(xs[1].item()) if op == "put" else slice(a["start"], a["start"] + g.shape[a["axis"]])
    out[tuple(sl)] = g
    return out


def to_latex(graph: Graph) -> str:
    """Equations for the loss and every gradient component, with shared terms named."""
    vals: dict[int, np.ndarray] = {}
    for n in graph.nodes:
        if n.size > MAX_ELEMENTS:
            raise ValueError(f"a value of {n.size} elements is too large for LaTeX output "
                             f"(at most {MAX_ELEMENTS}); use --format text or smaller dims")
        if n.op in ("param", "input"):
            vals[n.id] = _symbols(n.attr("name"), n.shape)
        elif n.op == "hyper":
            vals[n.id] = _symbols(n.attr("name"), ())
        elif n.op == "const":
            v = n.attr("value")
            vals[n.id] = np.array(sp.nsimplify(v) if abs(v) < 1e6 and float(v).is_integer()
                                  else sp.Float(v), dtype=object)
        elif n.op == "iconst":
            vals[n.id] = np.array(sp.Integer(n.attr("value")), dtype=object)
        else:
            vals[n.id] = _value(n, [vals[i.id] for i in n.inputs])
    names, exprs = [], []
    for key, node in graph.outputs.items():
        v = vals[node.id]
        if key == "loss":
            names.append(r"\ell")
            exprs.append(v.item())
            continue
        pname = key[len("grad."):]
        for idx in np.ndindex(*v.shape):
            sub = "_{" + ",".join(map(str, idx)) + "}" if idx else ""
            names.append(r"\frac{\partial \ell}{\partial " + sp.latex(sp.Symbol(pname))
                         + sub + "}")
            exprs.append(v[idx])
    shared, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t"))
    lines = [r"\begin{aligned}"]
    lines += [f"  {sp.latex(s)} &= {sp.latex(e)} \\\\" for s, e in shared]
    lines += [f"  {n} &= {sp.latex(e)} \\\\" for n, e in zip(names, reduced)]
    lines.append(r"\end{aligned}")
    return "\n".join(lines)
