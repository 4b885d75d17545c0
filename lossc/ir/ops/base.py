"""The record every op is described by, and the rules several ops share.

An `OpDef` holds every fact about one primitive, so that adding an op is one entry and
nothing else in lossc keeps a list of ops:

  the language
    names        the functions of the language that build it (`exp`; `max` names both
                 the reduction `max` and the elementwise `maximum`, told apart by their
                 arity); () for an op no source text names directly
    arity        how many inputs it takes (None: any number, for `pack`)
    axis         whether its function takes `axis=` (reductions, softmax)
    reduction    whether it reduces over the axes in its `axes` attribute
  meaning
    kind         elem, view, tensor or leaf: how code generation produces its elements
    infer        (attrs, *inputs) -> (shape, dtype) of the result
    eval         (attrs, *arrays) -> array: the NumPy reference semantics (constant
                 folding, the reference interpreter lossc/ir/evaluate.py); an
                 elementwise op's eval takes whole arrays
    sympy        its form as sympy expressions (`lossc graph --format latex`), given
                 the toolkit `s` of lossc/ir/latex.py (s.sp is sympy) and the node:
                 elem: (s, n, *element_exprs) -> expr, applied element by element;
                 a reduction: (s, n, group) -> expr for each group's list of elements;
                 any other op: (s, n, *input_arrays) -> array of expressions
    sympy_operands  n -> how many operands sympy combines for one element of n (what
                 its work grows with, lossc/ir/latex.py bounds it): by default its
                 group for a reduction, else its inputs' count
  derivatives
    stage        where it can appear: "any" (the front end, rewrites, derivative
                 rules), "backward" (made by derivative rules only: autodiff is first
                 order, so it has no vjp of its own) or "lower" (made by the lower pass
                 for code generation, after autodiff: passes/lower.py)
    differentiable  False for an op whose result is not real (no gradient flows)
    vjp          the reverse-mode rule: (b, g, out, *inputs) -> one adjoint per input,
                 built as IR (None for an input that takes none); None exactly for
                 leaves, ops not differentiable, and stages "backward" and "lower"
    mask         how an adjoint masked by a `where` travels back (passes/autodiff.py):
                 (b, g, m, out, *inputs) -> one (adjoint, mask) pair per input, m the
                 bool mask of g or None; `selected` for an elementwise op; None exactly
                 when vjp is None
    jvp          the forward-mode rule: (b, out, tangents, *inputs) -> the tangent of
                 out, built as IR, from one tangent per input (None where an input's
                 tangent is zero; at least one is not); None as a result for a zero
                 tangent (passes/forward.py). Every differentiable op that is not a leaf
                 has one, backward-only ops included: Hessian-vector products run
                 forward mode over the gradient graph, where they appear. None exactly
                 for leaves, ops not differentiable and stage "lower" (made after
                 forward mode has run)
  code generation
    lower        how it is computed (lossc/codegen/emitter.py says what `em` and the
                 lane group `g` offer):
                 elem:   (em, g, n, *element_values) -> one element value, computed
                         inside its consumer's loop (never needs a buffer)
                 view:   (em, g, n, idx) -> the input element it reads at idx
                 leaf:   (em, g, n, idx) -> its element, loaded from the arguments
                 tensor: (em, g, n) fills n's buffer with loops
    math         for an elementwise op computed by one scalar function: that function
                 and how it is called (`Math`); `lower` then defaults to the call
    single_pass  computing the whole result reads each input element once, in one
                 sweep: an elementwise input may then be computed inside this op's
                 loop instead of being stored first (a view is read, not computed: how
                 often it reads its input is up to its readers)
    foldable     with constant inputs, `eval` may run at compile time (passes/fold.py)
  tests
    example      arguments on which tests/test_ops.py checks value and gradient
                 (`Example`), or the reason it is checked through whole models instead
    doc          what it means, where that is not obvious

Every fact but doc, math and sympy_operands must be given: `OpDef.missing()` names the ones that are
not, and tests/test_ops.py fails for any op that has one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

import numpy as np

from lossc.ir.dtypes import BOOL, INT, REAL

KINDS = ("elem", "view", "tensor", "leaf")
STAGES = ("any", "backward", "lower")
MATH_CALLS = ("vmath", "instruction", "intrinsic", "libm")

# domains of arguments in examples: where the ops are smooth and finite
ANY = (-2.0, 2.0)
POS = (0.3, 2.0)
UNIT = (-0.8, 0.8)


class _Missing:
    """A fact an entry does not give (see OpDef.missing)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Math:
    """The scalar function an elementwise op is computed by, and how code generation
    calls it: "vmath" inline vector code (lossc/codegen/vmath.py), "instruction" an
    LLVM intrinsic that is an instruction (sqrt, fabs), "intrinsic" an LLVM intrinsic
    that becomes a C library call, "libm" a C library function called by name (its
    float32 version with an "f"). The last two are external functions lossc's machine
    code may call (lossc/codegen/externals.py)."""

    name: str
    via: str

    def __post_init__(self):
        assert self.via in MATH_CALLS, self.via


@dataclass(frozen=True)
class Example:
    """Arguments for tests/test_ops.py: their shapes, a domain (lo, hi) per argument in
    which the op is smooth, and the op's attributes."""

    shapes: tuple
    domains: tuple
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class OpDef:
    name: str
    arity: int
    kind: str
    infer: Callable = MISSING
    eval: Callable = MISSING
    sympy: Callable = MISSING
    names: tuple = MISSING
    axis: bool = MISSING
    reduction: bool = MISSING
    stage: str = MISSING
    differentiable: bool = MISSING
    vjp: Optional[Callable] = MISSING
    mask: Optional[Callable] = MISSING
    jvp: Optional[Callable] = MISSING
    lower: Callable = MISSING
    single_pass: bool = MISSING
    foldable: bool = MISSING
    example: Any = MISSING
    math: Optional[Math] = None
    sympy_operands: Optional[Callable] = None
    doc: str = ""

    def __post_init__(self):
        if self.math is not None and self.lower is MISSING:
            name = self.math.name
            object.__setattr__(self, "lower", lambda em, g, n, *xs: em.math(name, *xs))

    @property
    def backward_only(self) -> bool:
        return self.stage == "backward"

    def missing(self) -> list[str]:
        """The facts this entry lacks or gets wrong (empty for a complete entry)."""
        out = [f.name for f in fields(self) if getattr(self, f.name) is MISSING]
        if self.kind not in KINDS:
            out.append(f"kind {self.kind!r}")
        if self.stage is not MISSING and self.stage not in STAGES:
            out.append(f"stage {self.stage!r}")
        if out:
            return out
        wants_vjp = self.differentiable and self.stage == "any" and self.kind != "leaf"
        if wants_vjp and self.vjp is None:
            out.append("vjp (the derivative rule)")
        if not wants_vjp and self.vjp is not None:
            out.append("no vjp (autodiff never differentiates it)")
        wants_jvp = self.differentiable and self.kind != "leaf" and self.stage != "lower"
        if wants_jvp and self.jvp is None:
            out.append("jvp (the forward-mode rule)")
        if not wants_jvp and self.jvp is not None:
            out.append("no jvp (forward mode never differentiates it)")
        if (self.mask is None) != (self.vjp is None):
            out.append("mask (the rule for an adjoint masked by a where)")
        if (self.axis or self.reduction) and not self.names and self.stage == "any":
            out.append("names (a reduction or an op taking axis= is a function)")
        if self.math is not None and self.kind != "elem":
            out.append("math only for elementwise ops")
        if not (self.example is None or isinstance(self.example, (Example, str))):
            out.append("example (an Example, or why whole models test it)")
        return out


# ------------------------------------------------------------------ shape rules


def same_real(attrs, *xs):
    s = xs[0].shape
    assert all(x.shape == s for x in xs), f"elementwise operands differ: {[x.shape for x in xs]}"
    return s, REAL


def same_bool(attrs, *xs):
    s = xs[0].shape
    assert all(x.shape == s for x in xs)
    return s, BOOL


def scalar_int(attrs, *xs):
    assert all(x.shape == () and x.dtype == INT for x in xs)
    return (), INT


def reduced_shape(attrs, x):
    axes = attrs["axes"]
    return tuple(s for a, s in enumerate(x.shape) if a not in axes), REAL


def same_as_input(attrs, x, *rest):
    return x.shape, REAL


# ------------------------------------------------------------------ graph queries


def const_value(n):
    """The value of a scalar constant, seen through broadcasts; None otherwise."""
    while n.op == "broadcast":
        n = n.inputs[0]
    if n.op in ("const", "iconst"):
        return n.attr("value")
    return None


def expand(b, r, x, axes):
    """Broadcast a reduction's result `r` back over the reduced `axes` of x's shape."""
    kept = tuple(k for k in range(x.rank) if k not in axes)
    return b.broadcast(r, x.shape, kept)


# ------------------------------------------------------------------ masked adjoints
# The rules of `mask` (passes/autodiff.py's docstring says what a mask is). A mask m
# has the shape of the adjoint g it goes with; g is exactly 0 where m is false.


def selected(vjp):
    """The mask rule of an elementwise op: the mask stays, and every adjoint computed
    from a masked g is selected by it, where(m, contribution, 0) (a select, not a
    product: the untaken branch's NaN or infinity never reaches a result). An adjoint
    that is g itself, its negation or g times (or over) a finite constant needs no
    select."""
    def rule(b, g, m, out, *xs):
        gs = vjp(b, g, out, *xs)
        if m is None:
            return [(x, None) for x in gs]
        zero = b.zeros_like(g)
        return [(x if x is None or _zero_with(x, g) else b.where(m, x, zero), m)
                for x in gs]
    return rule


def _zero_with(x, g) -> bool:
    """Whether x is exactly 0 wherever g is, whatever the other values: g, -g, g times
    a finite constant, g over a finite nonzero one."""
    if x is g:
        return True
    if x.op == "neg":
        return x.inputs[0] is g
    if x.op == "mul":
        a, c = x.inputs
        return (a is g and _finite(c)) or (c is g and _finite(a))
    if x.op == "div":
        return x.inputs[0] is g and _finite(x.inputs[1]) and const_value(x.inputs[1]) != 0
    return False


def _finite(n) -> bool:
    c = const_value(n)
    return c is not None and math.isfinite(c)


def indicator(b, m):
    """m as reals: 1.0 where it holds, 0.0 elsewhere."""
    return b.where(m, b.const(1.0, m.shape), b.const(0.0, m.shape))


def positive(b, r):
    return b.emit("gt", (r, b.zeros_like(r)))


def any_of(b, m, axes: tuple):
    """Per group along `axes`: whether m holds anywhere in it."""
    return positive(b, b.emit("sum", (indicator(b, m),), axes=axes))


def select(b, m, x):
    """x where m holds, 0 elsewhere: a select, so a NaN or an infinity of x outside m
    never reaches the result (0 * inf would be NaN)."""
    return b.where(m, x, b.zeros_like(x))


def moved_mask(vjp):
    """The mask rule of an op whose vjp only moves g's elements or adds them up (views,
    sum; max and min, which multiply by a 0/1 choice): its adjoints are exact zeros
    where no chosen element reaches them, and their masks are where the same vjp of
    the mask's 0/1 indicator is positive."""
    def rule(b, g, m, out, *xs):
        gs = vjp(b, g, out, *xs)
        if m is None:
            return [(x, None) for x in gs]
        ind = indicator(b, m)
        counts = vjp(b, ind, out, *xs)
        return [(x, None if x is None else _mask_of_counts(b, k, ind, m))
                for x, k in zip(gs, counts)]
    return rule


def _mask_of_counts(b, counts, ind, m):
    """The mask from `counts`, the moved indicator of m: where they are positive, or
    where m itself, moved alike, holds (a broadcast or transpose only moves it)."""
    if counts.op in ("broadcast", "transpose") and counts.inputs[0] is ind:
        return b.emit(counts.op, (m,), **dict(counts.attrs))
    return positive(b, counts)


def reduced_mask(vjp):
    """The mask rule of a reduction whose vjp multiplies the spread g by factors of x
    (prod, logsumexp, norm): an element's adjoint is kept where its group's result was
    chosen, and carries that mask."""
    def rule(b, g, m, out, x):
        (gx,) = vjp(b, g, out, x)
        if m is None:
            return [(gx, None)]
        keep = expand(b, m, x, out.attr("axes"))
        return [(select(b, keep, gx), keep)]
    return rule


# ------------------------------------------------------------------ forward-mode rules
# The rules of `jvp` several ops share (passes/forward.py says what a tangent is).


def diagonal_jvp(vjp, exact_zero: tuple = ()):
    """The forward rule of an elementwise op from its reverse rule: its Jacobian in each
    argument is diagonal, so the vjp of a tangent, taken as the adjoint, is that
    argument's share of the result's tangent; the shares add up. exact_zero: the
    arguments whose share is 0 where their tangent is 0, also where the derivative in
    them is NaN (pow's in y at x < 0): a Hessian's unit tangents then leave the other
    parameters' entries as they are, where 0 * NaN would make them NaN."""
    def jvp(b, out, ts, *xs):
        total = None
        for k, t in enumerate(ts):
            if t is None:
                continue
            share = vjp(b, t, out, *xs)[k]
            if share is not None and k in exact_zero:
                share = b.where(b.emit("eq", (t, b.zeros_like(t))), b.zeros_like(share),
                                share)
            if share is not None:
                total = share if total is None else b.add(total, share)
        return total
    return jvp


def linear_jvp(b, out, ts, x, *rest):
    """The forward rule of an op linear in its first argument (views, sum, the adjoint
    helpers): the same op of the tangent; its other arguments (indices) carry none."""
    if ts[0] is None:
        return None
    return b.emit(out.op, (ts[0],) + tuple(rest), **dict(out.attrs))


def zero_jvp(b, out, ts, *xs):
    """The forward rule of an op constant almost everywhere (sign, the 0/1 choice of
    a maximum): a zero tangent."""
    return None


# ------------------------------------------------------------------ forms


def numpy_form(eval):
    """A sympy form that is the op's NumPy semantics itself: for ops that only move or
    combine elements (NumPy does that on arrays of expressions too)."""
    return lambda s, n, *xs: np.asarray(eval(dict(n.attrs), *xs), dtype=object)
