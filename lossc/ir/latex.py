"""`lossc graph --format latex`: the per-sample loss and its gradient as equations.

The graph after autodiff is evaluated symbolically with sympy, element by element
(tensors become arrays of sympy expressions, so this is for models of modest size),
then common subexpressions are pulled out with sympy.cse so the gradient prints as
the shared computation it is, not as an expanded tree. Every op of the op table has a
form there (its `sympy` fact); a data-dependent index picks an element by cases.

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

import re
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

def _apply(f, *xs) -> np.ndarray:
    """f on every element (NumPy broadcasting the arrays of expressions)."""
    return np.asarray(np.frompyfunc(f, len(xs), 1)(*xs), dtype=object)


def _symbols(name: str, shape: tuple) -> np.ndarray:
    """A named value's symbols: `name`, or one per element, `name[i,j]` (to_latex
    prints them through latex_name, not by sympy's reading of the name)."""
    if not shape:
        return np.array(sp.Symbol(name), dtype=object)
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = sp.Symbol(f"{name}[{','.join(map(str, idx))}]")
    return out


def latex_name(name: str, idx: tuple = ()) -> str:
    """A model name in LaTeX, as written: a Greek letter's name is the letter, a word of
    several letters is set as one italic word (\\mathit), trailing digits or one
    underscore make a subscript (w1 and w_1: w_{1}, my_bias: \\mathit{my}_{\\mathit{bias}}),
    and any other name is printed whole (a_b_c, lambda_: \\mathit{a\\_b\\_c}). An
    element's indices are a subscript of the whole name. (sympy's own reading of a name
    would take a_b_c for a with subscripts b and c, and xbar for x with a bar.) Names
    that would print alike are told apart by model_names."""
    base = re.fullmatch(r"([A-Za-z]+)(?:(\d+)|_([A-Za-z0-9]+))?", name)
    if base is None:
        text = _as_written(name)
    else:
        word, digits, sub = base.groups()
        text = _word(word)
        if digits or sub:
            text += "_{" + (digits or (sub if sub.isdigit() else _word(sub))) + "}"
    return _element(text, idx)


def _as_written(name: str) -> str:
    return r"\mathit{" + name.replace("_", r"\_") + "}"


def _element(text: str, idx: tuple) -> str:
    """The LaTeX of element idx of the value printed as `text` (itself for ())."""
    if not idx:
        return text
    return ("{" + text + "}" if "_" in text else text) + "_{" + ",".join(map(str, idx)) + "}"


def model_names(graph: Graph) -> dict:
    """name -> LaTeX of each parameter, input and hyper of the graph (latex_name), each
    printed unlike any other: where two names, or an element of one and another name,
    would print alike (w1 and w_1 both as w_{1}; w1 and the element w[1]), or a name as
    a part of the objective the model has (ell as \\ell, rho as \\rho beside a
    penalty), each of them is printed as written (\\mathit{w1}, \\mathit{x\\_1},
    \\mathit{ell})."""
    shapes = {n.attr("name"): n.shape for n in graph.nodes
              if n.op in ("param", "input", "hyper")}
    printed: dict[str, set] = {}
    for name, shape in shapes.items():
        text = latex_name(name)
        elements = np.ndindex(*shape) if 0 < prod(shape) <= MAX_ELEMENTS else ()
        for idx in [(), *elements]:
            printed.setdefault(_element(text, idx), set()).add(name)
    parts = {_OBJECTIVE_PART[k] for k in ("loss", "penalty") if k in graph.outputs}
    alike = {name for text, names in printed.items()
             if len(names) > 1 or text in parts for name in names}
    return {name: _as_written(name) if name in alike else latex_name(name)
            for name in shapes}


def _word(word: str) -> str:
    greek = sp.latex(sp.Symbol(word)) if word.isalpha() else word
    if greek.startswith("\\") and greek[1:] in (word, word.lower(), word.capitalize()):
        return greek
    return word if len(word) == 1 else r"\mathit{" + word + "}"


def _printed_names(exprs, names: dict) -> dict:
    """symbol -> LaTeX, for every model symbol among the expressions' (names: each
    model name's, model_names)."""
    out = {}
    for e in exprs:
        for sym in getattr(e, "free_symbols", ()):
            name, _, rest = sym.name.partition("[")
            idx = tuple(int(k) for k in rest.rstrip("]").split(",")) if rest else ()
            out[sym] = _element(names[name], idx)
    return out


def _constant(v) -> np.ndarray:
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


_ARG_EXTREME = {"max": sp.Function("argmax"), "min": sp.Function("argmin")}


def _index_value(i: np.ndarray):
    """An index as an int, or None for one that comes from data (a symbol)."""
    i = i.item()
    return int(i) if isinstance(i, (int, sp.Integer)) else None


class Toolkit:
    """What the op table's sympy forms are given (ir/ops/base.py, `sympy`): sympy itself
    and the helpers the forms of tensors share."""

    sp = sp
    Max, Min = Max, Min
    symbols = staticmethod(_symbols)
    constant = staticmethod(_constant)
    apply = staticmethod(_apply)
    groups = staticmethod(_groups)
    reduce = staticmethod(_reduce)
    index_value = staticmethod(_index_value)

    @staticmethod
    def argext(kind: str):
        """argmax or argmin, unevaluated: the position of a group's first extreme."""
        return _ARG_EXTREME[kind]


def form(n: Node, xs: list) -> np.ndarray:
    """n's value as an array of sympy expressions, from its inputs' (its op's form)."""
    d = OPS[n.op]
    if d.kind == "elem":
        return _apply(lambda *v: d.sympy(Toolkit, n, *v), *xs)
    if d.reduction:
        return _reduce(xs[0], n.attr("axes"), lambda group: d.sympy(Toolkit, n, group))
    return np.asarray(d.sympy(Toolkit, n, *xs), dtype=object)


def _operands(n: Node) -> int:
    """How many operands (inputs' elements, written out) sympy combines to build one
    element of n: what its work on n grows with."""
    d = OPS[n.op]
    if not n.inputs:
        return 1
    if d.sympy_operands is not None:
        return d.sympy_operands(n)
    if d.reduction:
        return prod(n.inputs[0].shape[a] for a in n.attr("axes"))
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


# the objective's parts as the equations name them (the penalty is added once)
_OBJECTIVE_PART = {"loss": r"\ell", "penalty": r"\rho"}


def symbolic(graph: Graph) -> tuple[list[str], list]:
    """The LaTeX names and the sympy expressions of the loss and of every gradient
    component. Raises ValueError past the bounds (see the module's docstring)."""
    vals: dict[int, np.ndarray] = {}
    measure = _Measure()
    for n in graph.nodes:
        measure.before(n)
        vals[n.id] = form(n, [vals[i.id] for i in n.inputs])
        measure.after(n, vals[n.id])
    printed = model_names(graph)
    names, exprs = [], []
    for key, node in graph.outputs.items():
        if key.startswith("out."):          # (predictions: not part of the objective)
            continue
        v = vals[node.id]
        if key in ("loss", "penalty"):
            names.append(_OBJECTIVE_PART[key])
            exprs.append(v.item())
            continue
        part, pname = key.split(".", 1)
        of = _OBJECTIVE_PART["penalty" if part == "penalty_grad" else "loss"]
        for idx in np.ndindex(*v.shape):
            names.append(r"\frac{\partial " + of + r"}{\partial "
                         + _element(printed[pname], idx) + "}")
            exprs.append(v[idx])
    return names, exprs


def shared_term_prefix(graph: Graph) -> str:
    """The letter the shared terms are named with (t_{0}, t_{1}, ...): t, or tt, ttt...
    if the model has a name that prints with that letter (a parameter t, or t0)."""
    taken = {text.split("_")[0] for text in model_names(graph).values()}
    return next("t" * k for k in range(1, len(taken) + 2) if "t" * k not in taken)


def to_latex(graph: Graph) -> str:
    """Equations for the loss and every gradient component, with shared terms named."""
    names, exprs = symbolic(graph)
    shared, reduced = sp.cse(exprs, symbols=sp.numbered_symbols(shared_term_prefix(graph)))
    printed = _printed_names(exprs, model_names(graph))

    def tex(e) -> str:
        return sp.latex(e, symbol_names=printed)
    lines = [r"\begin{aligned}"]
    lines += [f"  {tex(s)} &= {tex(e)} \\\\" for s, e in shared]
    lines += [f"  {n} &= {tex(e)} \\\\" for n, e in zip(names, reduced)]
    lines.append(r"\end{aligned}")
    return "\n".join(lines)
