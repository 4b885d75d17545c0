"""`lossc graph --format latex`: the per-sample loss and its gradient as equations.

The graph after autodiff is evaluated symbolically with sympy, element by element
(tensors become arrays of sympy expressions, so this is for models of modest size),
then common subexpressions are pulled out with sympy.cse so the gradient prints as
the shared computation it is, not as an expanded tree. Every op of the op table has a
form here (`FORMS`); a data-dependent index picks an element by cases.

Bounds. sympy's work grows with the operands it combines (a sum of 20 products for each
of 400 elements of a matrix product), and its algorithms walk expressions as trees,
recursively: sympy.cse orders the terms of every sum and product by their size as a tree,
counted anew each time, and its printer and simplifications recurse through every level.
A graph's sharing hides how large those trees are: the 14 steps `a{i+1} = sin(a{i}) *
a{i}` and their gradient are a hundred nodes, and written out as trees millions. So
before each value is built its operands are counted from the graph (MAX_OPERANDS), and
once built its expressions are measured (each distinct subexpression once: their sizes
as trees, MAX_TREE_WORK, and their depth, MAX_DEPTH); past a bound the output is refused
with a ValueError that names the value where it was crossed, before sympy goes on.
"""
from __future__ import annotations

from math import prod

import numpy as np
import sympy as sp

from lossc.ir.graph import Graph, Node
from lossc.ir.ops import OPS

MAX_ELEMENTS = 400          # elements of one value
MAX_OPERANDS = 20_000       # operands of all the elements built (see _operands)
MAX_TREE_WORK = 20_000_000  # the sizes as trees of all distinct subexpressions, summed
MAX_DEPTH = 100             # levels of nesting of one expression (sympy recurses up to
                            # ~4 frames a level; Python allows 1,000)

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
    "where": lambda c, x, y: sp.Piecewise((x, c), (y, True)),
}


def _apply(f, *xs) -> np.ndarray:
    """f on every element (NumPy broadcasting the arrays of expressions)."""
    return np.asarray(np.frompyfunc(f, len(xs), 1)(*xs), dtype=object)


def _symbols(name: str, shape: tuple) -> np.ndarray:
    if not shape:
        return np.array(sp.Symbol(name), dtype=object)
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = sp.Symbol(f"{name}_{{{','.join(map(str, idx))}}}")
    return out


def _constant(n: Node, xs) -> np.ndarray:
    v = n.attr("value")
    return np.array(sp.nsimplify(v) if abs(v) < 1e6 and float(v).is_integer()
                    else sp.Float(v), dtype=object)


def _groups(x: np.ndarray, axes: tuple):
    """x with the reduced `axes` last and flattened, and how to put an array of that
    layout back in x's."""
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.moveaxis(x, kept + list(axes), range(x.ndim))
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))

    def back(out: np.ndarray) -> np.ndarray:
        return np.moveaxis(out.reshape(moved.shape), range(x.ndim), kept + list(axes))
    return flat, back


def _reduce(x: np.ndarray, axes: tuple, f) -> np.ndarray:
    flat, _ = _groups(x, axes)
    out = np.empty(flat.shape[:-1], dtype=object)
    for idx in np.ndindex(*out.shape):
        out[idx] = f(list(flat[idx]))
    return out


class Max(sp.Function):
    """The max of a reduction's elements, left as written and printed as sympy prints
    its Max: sympy's own compares every pair of its arguments each time it is built
    (and sympy.cse rebuilds it), time quadratic in their number, to no avail for the
    symbols here."""


class Min(sp.Function):
    """The min of a reduction's elements, as Max."""


def _reduction(f):
    return lambda n, xs: _reduce(xs[0], n.attr("axes"), f)


def _softmax(n: Node, xs) -> np.ndarray:
    x, axis = xs[0], n.attr("axis")
    total = np.expand_dims(_reduce(x, (axis,), lambda v: sp.Add(*[sp.exp(t) for t in v])),
                           axis)
    if n.op == "softmax":
        return _apply(lambda t, s: sp.exp(t) / s, x, total)
    return _apply(lambda t, s: t - sp.log(s), x, total)


def _prod_others(n: Node, xs) -> np.ndarray:
    x = xs[0]
    out = np.empty(x.shape, dtype=object)
    group = [k for k in range(x.ndim) if k not in n.attr("axes")]
    for idx in np.ndindex(*x.shape):
        y = x.copy()
        y[idx] = sp.Integer(1)
        sel = tuple(idx[k] if k in group else slice(None) for k in range(x.ndim))
        out[idx] = sp.Mul(*np.asarray(y[sel]).reshape(-1))
    return out


_ARG_EXTREME = {"max": sp.Function("argmax"), "min": sp.Function("argmin")}


def _argext_mask(n: Node, xs) -> np.ndarray:
    """1 at the first maximum (minimum) of each group, 0 elsewhere: `argmax(v_0, ...)`
    (an unevaluated function, read as the first extreme's position) compared with each
    position. Comparing every pair of elements instead would take sympy time quadratic
    in the group's size, for a longer formula."""
    flat, back = _groups(xs[0], n.attr("axes"))
    arg = _ARG_EXTREME[n.attr("kind")]
    out = np.empty(flat.shape, dtype=object)
    for idx in np.ndindex(*flat.shape[:-1]):
        v = flat[idx]
        if len(v) == 1:
            out[idx + (0,)] = sp.Integer(1)
            continue
        at = arg(*v)
        for j in range(len(v)):
            out[idx + (j,)] = sp.Piecewise((1, sp.Eq(at, j)), (0, True))
    return back(out)


def _index_value(i: np.ndarray):
    """An index as an int, or None for one that comes from data (a symbol)."""
    i = i.item()
    return int(i) if isinstance(i, (int, sp.Integer)) else None


def _take(n: Node, xs) -> np.ndarray:
    x, axis = xs[0], n.attr("axis")
    k = _index_value(xs[1])
    if k is not None:
        return np.asarray(np.take(x, k, axis=axis), dtype=object)
    # an index from data: by cases over the positions it can take (checked at run time)
    i = xs[1].item()
    picks = np.moveaxis(x, axis, -1)
    out = np.empty(picks.shape[:-1], dtype=object)
    for idx in np.ndindex(*out.shape):
        out[idx] = sp.Piecewise(*[(v, sp.Eq(i, k)) for k, v in enumerate(picks[idx])])
    return out


def _put(n: Node, xs) -> np.ndarray:
    """Zeros with g at the index: by cases for an index from data."""
    g, k, i = np.asarray(xs[0], dtype=object), _index_value(xs[1]), xs[1].item()
    zeros = np.full(g.shape, sp.Integer(0), dtype=object)

    def at(p: int) -> np.ndarray:
        if k is not None:
            return g if p == k else zeros
        return _apply(lambda v: sp.Piecewise((v, sp.Eq(i, p)), (0, True)), g)
    return np.stack([at(p) for p in range(n.attr("size"))], axis=n.attr("axis"))


def _pad(n: Node, xs) -> np.ndarray:
    g, axis, start = xs[0], n.attr("axis"), n.attr("start")
    shape = list(g.shape)
    shape[axis] = n.attr("size")
    out = np.full(shape, sp.Integer(0), dtype=object)
    where = [slice(None)] * len(shape)
    where[axis] = slice(start, start + g.shape[axis])
    out[tuple(where)] = g
    return out


def _as_numpy(n: Node, xs) -> np.ndarray:
    """Ops whose NumPy semantics work on arrays of expressions as they are."""
    return np.asarray(OPS[n.op].eval(dict(n.attrs), *xs), dtype=object)


# op -> form(node, input values) -> array of sympy expressions
FORMS = {
    **{op: (lambda f: lambda n, xs: _apply(f, *xs))(f) for op, f in _FUNCS.items()},
    "param": lambda n, xs: _symbols(n.attr("name"), n.shape),
    "input": lambda n, xs: _symbols(n.attr("name"), n.shape),
    "hyper": lambda n, xs: _symbols(n.attr("name"), ()),
    "const": _constant,
    "iconst": lambda n, xs: np.array(sp.Integer(n.attr("value")), dtype=object),
    "powi": lambda n, xs: _apply(lambda v: v ** n.attr("n"), xs[0]),
    "sum": _reduction(lambda v: sp.Add(*v)),
    "prod": _reduction(lambda v: sp.Mul(*v)),
    "max": _reduction(lambda v: Max(*v) if len(v) > 1 else v[0]),
    "min": _reduction(lambda v: Min(*v) if len(v) > 1 else v[0]),
    "logsumexp": _reduction(lambda v: sp.log(sp.Add(*[sp.exp(t) for t in v]))),
    "norm": _reduction(lambda v: sp.sqrt(sp.Add(*[t ** 2 for t in v]))),
    "softmax": _softmax, "log_softmax": _softmax,
    "prod_others": _prod_others, "argext_mask": _argext_mask,
    "take": _take, "put": _put, "pad": _pad,
    **{op: _as_numpy for op in ("broadcast", "transpose", "slice", "matmul")},
}


def _operands(n: Node) -> int:
    """How many operands (inputs' elements, written out) sympy combines to build one
    element of n: what its work on n grows with."""
    if not n.inputs:
        return 1
    x, op = n.inputs[0], n.op
    group = prod(x.shape[a] for a in n.attr("axes", ()))
    if op == "matmul":
        return 2 * x.shape[-1]
    if op in ("sum", "prod", "max", "min", "logsumexp", "norm", "prod_others"):
        return group
    if op == "argext_mask":
        return 3           # a comparison with the group's argmax, and 1/size of that
    if op in ("softmax", "log_softmax"):
        return x.shape[n.attr("axis")] + 1
    if op == "take" and n.inputs[1].op != "iconst":
        return 2 * x.shape[n.attr("axis")]   # by cases
    return len(n.inputs)


def _too_large(what: str, n: Node, bound: int) -> ValueError:
    at = f"the value from line {n.span.line}:{n.span.col}" if n.span else "a value"
    return ValueError(f"the loss and gradient are too large for LaTeX output: {what} at "
                      f"{at} (at most {bound:,}); use --format text")


class _Measure:
    """What the expressions built so far cost sympy: the operands they combine (known
    from the graph before building them), and their size and depth as trees (measured
    as they are built, each distinct subexpression once, so measuring is linear in
    what sympy holds)."""

    def __init__(self):
        self.operands = 0
        self.seen: dict = {}        # expression -> (size as a tree, depth)
        self.work = 0               # the sizes as trees of every distinct subexpression

    def before(self, n: Node) -> None:
        if n.size > MAX_ELEMENTS:
            raise ValueError(f"a value of {n.size} elements is too large for LaTeX output "
                             f"(at most {MAX_ELEMENTS}); use --format text or smaller dims")
        self.operands += n.size * _operands(n)
        if self.operands > MAX_OPERANDS:
            raise _too_large(f"{self.operands:,} operands", n, MAX_OPERANDS)

    def after(self, n: Node, value: np.ndarray) -> None:
        depth = max((self.add(e)[1] for e in value.reshape(-1)), default=0)
        if depth > MAX_DEPTH:
            raise _too_large(f"expressions nested {depth} levels deep", n, MAX_DEPTH)
        if self.work > MAX_TREE_WORK:
            raise _too_large(f"{self.work:,} nodes in expression trees", n, MAX_TREE_WORK)

    def add(self, e) -> tuple[int, int]:
        """e's size and depth as a tree, measuring the subexpressions not seen yet."""
        stack = [e]
        while stack:
            x = stack[-1]
            if x in self.seen:
                stack.pop()
                continue
            args = getattr(x, "args", ())
            pending = [a for a in args if a not in self.seen]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            size = 1 + sum(self.seen[a][0] for a in args)
            self.seen[x] = (size, 1 + max((self.seen[a][1] for a in args), default=0))
            self.work += size
        return self.seen[e]


def symbolic(graph: Graph) -> tuple[list[str], list]:
    """The LaTeX names and the sympy expressions of the loss and of every gradient
    component. Raises ValueError past the bounds (see the module's docstring)."""
    vals: dict[int, np.ndarray] = {}
    measure = _Measure()
    for n in graph.nodes:
        measure.before(n)
        vals[n.id] = np.asarray(FORMS[n.op](n, [vals[i.id] for i in n.inputs]), dtype=object)
        measure.after(n, vals[n.id])
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
    return names, exprs


def shared_term_prefix(graph: Graph) -> str:
    """The letter the shared terms are named with (t_{0}, t_{1}, ...): t, or tt, ttt...
    if the model has a name that prints with that letter (a parameter t, or t0)."""
    taken = {sp.latex(sp.Symbol(n.attr("name"))).split("_")[0] for n in graph.nodes
             if n.op in ("param", "input", "hyper")}
    return next("t" * k for k in range(1, len(taken) + 2) if "t" * k not in taken)


def to_latex(graph: Graph) -> str:
    """Equations for the loss and every gradient component, with shared terms named."""
    names, exprs = symbolic(graph)
    shared, reduced = sp.cse(exprs, symbols=sp.numbered_symbols(shared_term_prefix(graph)))
    lines = [r"\begin{aligned}"]
    lines += [f"  {sp.latex(s)} &= {sp.latex(e)} \\\\" for s, e in shared]
    lines += [f"  {n} &= {sp.latex(e)} \\\\" for n, e in zip(names, reduced)]
    lines.append(r"\end{aligned}")
    return "\n".join(lines)
