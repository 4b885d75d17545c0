"""The op table: every primitive's facts in one place.

Each `OpDef` holds, for one primitive:
  infer   shape and dtype of the result, from attributes and input nodes
  eval    the NumPy reference semantics (constant folding, the reference interpreter)
  vjp     the reverse-mode rule: builds IR for the input adjoints from the output
          adjoint `g` (None for an input that takes no gradient). Backward-only ops
          (argext_mask, prod_others, put, pad, sign) have none: autodiff is first order.
  mask    how an adjoint masked by a `where` travels back (passes/autodiff.py):
          (b, g, m, out, *inputs) -> one (adjoint, mask) pair per input, m the bool
          mask of g or None. None for an elementwise op: each adjoint is then selected
          by m and carries it on. Every other op with a vjp has one.
  lower   how code generation computes it, given the emitter `em` and the lane group
          `g` it computes for (see lossc/codegen/emitter.py):
          kind "elem"  -> lower(em, g, node, *element_values) returns one element
                          value; fused into its consumer's loop, never needs a buffer
          kind "view"  -> lower(em, g, node, idx) returns the input element it reads
          kind "tensor"-> lower(em, g, node) fills node's buffer with loops
          kind "leaf"  -> lower(em, g, node, idx) loads from the arguments

Adding an op means adding one entry here; `tests/test_ops.py` walks the table and
fails for an entry that is incomplete.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from lossc.ir.dtypes import BOOL, INT, REAL

# ------------------------------------------------------------------ the record


@dataclass
class OpDef:
    name: str
    arity: int
    kind: str                                  # elem, view, tensor, leaf
    infer: Callable
    eval: Callable                             # (attrs: dict, *arrays) -> array
    vjp: Optional[Callable] = None             # (b, g, out, *inputs) -> tuple of adjoints
    lower: Optional[Callable] = None
    doc: str = ""
    differentiable: bool = True                # False: no gradient flows (bool/int results)
    mask: Optional[Callable] = None            # (b, g, m, out, *inputs) -> (adjoint, mask)s


OPS: dict[str, OpDef] = {}


def op(name, arity, kind, infer, eval, vjp=None, lower=None, doc="", differentiable=True,
       mask=None):
    OPS[name] = OpDef(name, arity, kind, infer, eval, vjp, lower, doc, differentiable, mask)


# ------------------------------------------------------------------ masked adjoints
# The rules of `mask` (passes/autodiff.py's docstring says what a mask is). A mask m
# has the shape of the adjoint g it goes with; g is exactly 0 where m is false.


def _indicator(b, m):
    """m as reals: 1.0 where it holds, 0.0 elsewhere."""
    return b.where(m, b.const(1.0, m.shape), b.const(0.0, m.shape))


def _positive(b, r):
    return b.emit("gt", (r, b.zeros_like(r)))


def _any(b, m, axes: tuple):
    """Per group along `axes`: whether m holds anywhere in it."""
    return _positive(b, b.emit("sum", (_indicator(b, m),), axes=axes))


def _select(b, m, x):
    """x where m holds, 0 elsewhere: a select, so a NaN or an infinity of x outside m
    never reaches the result (0 * inf would be NaN)."""
    return b.where(m, x, b.zeros_like(x))


def _moved_mask(vjp):
    """The mask rule of an op whose vjp only moves g's elements or adds them up (views,
    sum; max and min, which multiply by a 0/1 choice): its adjoints are exact zeros
    where no chosen element reaches them, and their masks are where the same vjp of
    the mask's 0/1 indicator is positive."""
    def rule(b, g, m, out, *xs):
        gs = vjp(b, g, out, *xs)
        if m is None:
            return [(x, None) for x in gs]
        indicator = _indicator(b, m)
        counts = vjp(b, indicator, out, *xs)
        return [(x, None if x is None else _mask_of_counts(b, k, indicator, m))
                for x, k in zip(gs, counts)]
    return rule


def _mask_of_counts(b, counts, indicator, m):
    """The mask from `counts`, the moved indicator of m: where they are positive, or
    where m itself, moved alike, holds (a broadcast or transpose only moves it)."""
    if counts.op in ("broadcast", "transpose") and counts.inputs[0] is indicator:
        return b.emit(counts.op, (m,), **dict(counts.attrs))
    return _positive(b, counts)


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


# ------------------------------------------------------------------ leaves

op("param", 0, "leaf", lambda a: (tuple(a["shape"]), REAL),
   eval=lambda a: None, lower=lambda em, g, n, idx: em.param_element(n, idx),
   doc="a trainable parameter")
op("input", 0, "leaf", lambda a: (tuple(a["shape"]), INT if a["is_int"] else REAL),
   eval=lambda a: None, lower=lambda em, g, n, idx: em.input_element(g, n, idx),
   doc="one sample's data")
op("hyper", 0, "leaf", lambda a: ((), REAL), eval=lambda a: None,
   lower=lambda em, g, n, idx: em.hyper_value(n), doc="a runtime scalar")
op("const", 0, "leaf", lambda a: ((), REAL), eval=lambda a: np.float64(a["value"]),
   lower=lambda em, g, n, idx: em.fconst(n.attr("value")), doc="a real scalar constant")
op("iconst", 0, "leaf", lambda a: ((), INT), eval=lambda a: np.int64(a["value"]),
   lower=lambda em, g, n, idx: em.iconst(n.attr("value")), doc="an integer scalar constant")

# ------------------------------------------------------------------ elementwise


def unary(name, eval, deriv=None, lower=None, doc=""):
    """An elementwise real function. `deriv(b, g, out, x)` builds g * f'(x)."""
    vjp = (lambda b, g, out, x: (deriv(b, g, out, x),)) if deriv else None
    op(name, 1, "elem", same_real, lambda a, x: eval(x), vjp, lower, doc)


def _sig(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _one_minus_sq(b, out):
    return b.sub(b.const(1.0), b.mul(out, out))


unary("neg", np.negative, lambda b, g, out, x: b.neg(g),
      lambda em, g, n, x: em.fneg(x))
unary("exp", np.exp, lambda b, g, out, x: b.mul(g, out),
      lambda em, g, n, x: em.math("exp", x))
unary("log", np.log, lambda b, g, out, x: b.div(g, x),
      lambda em, g, n, x: em.math("log", x))
unary("log1p", np.log1p, lambda b, g, out, x: b.div(g, b.add(b.const(1.0), x)),
      lambda em, g, n, x: em.math("log1p", x))
unary("expm1", np.expm1, lambda b, g, out, x: b.mul(g, b.add(out, b.const(1.0))),
      lambda em, g, n, x: em.math("expm1", x))
unary("sqrt", np.sqrt, lambda b, g, out, x: b.div(b.mul(g, b.const(0.5)), out),
      lambda em, g, n, x: em.math("sqrt", x))
unary("abs", np.abs, lambda b, g, out, x: b.mul(g, b.emit("sign", (x,))),
      lambda em, g, n, x: em.math("fabs", x), doc="abs'(0) = 0")
unary("sign", np.sign, None,
      lambda em, g, n, x: em.select(em.fcmp(">", x, em.fconst(0)), em.fconst(1),
                                 em.select(em.fcmp("<", x, em.fconst(0)),
                                           em.fconst(-1), em.fconst(0))),
      doc="backward-only: the derivative of abs")
unary("sin", np.sin, lambda b, g, out, x: b.mul(g, b.emit("cos", (x,))),
      lambda em, g, n, x: em.math("sin", x))
unary("cos", np.cos, lambda b, g, out, x: b.neg(b.mul(g, b.emit("sin", (x,)))),
      lambda em, g, n, x: em.math("cos", x))
unary("tan", np.tan, lambda b, g, out, x: b.mul(g, b.add(b.const(1.0), b.mul(out, out))),
      lambda em, g, n, x: em.math("tan", x))
unary("tanh", np.tanh, lambda b, g, out, x: b.mul(g, _one_minus_sq(b, out)),
      lambda em, g, n, x: em.math("tanh", x))
unary("sinh", np.sinh, lambda b, g, out, x: b.mul(g, b.emit("cosh", (x,))),
      lambda em, g, n, x: em.math("sinh", x))
unary("cosh", np.cosh, lambda b, g, out, x: b.mul(g, b.emit("sinh", (x,))),
      lambda em, g, n, x: em.math("cosh", x))
unary("asin", np.arcsin,
      lambda b, g, out, x: b.div(g, b.emit("sqrt", (_one_minus_sq(b, x),))),
      lambda em, g, n, x: em.math("asin", x))
unary("acos", np.arccos,
      lambda b, g, out, x: b.neg(b.div(g, b.emit("sqrt", (_one_minus_sq(b, x),)))),
      lambda em, g, n, x: em.math("acos", x))
unary("atan", np.arctan,
      lambda b, g, out, x: b.div(g, b.add(b.const(1.0), b.mul(x, x))),
      lambda em, g, n, x: em.math("atan", x))
unary("sigmoid", _sig,
      lambda b, g, out, x: b.mul(g, b.mul(out, b.sub(b.const(1.0), out))),
      lambda em, g, n, x: em.sigmoid(x), doc="stable for large |x|")
unary("softplus", _softplus,
      lambda b, g, out, x: b.mul(g, b.emit("sigmoid", (x,))),
      lambda em, g, n, x: em.softplus(x), doc="log(1 + exp(x)), stable: softplus(1000) = 1000")
unary("relu", lambda x: np.maximum(x, 0),
      lambda b, g, out, x: b.where(b.emit("gt", (x, b.zeros_like(x))), g, b.zeros_like(g)),
      lambda em, g, n, x: em.select(em.fcmp(">", x, em.fconst(0)), x, em.fconst(0)),
      doc="relu'(0) = 0")
unary("erf", _erf,
      lambda b, g, out, x: b.mul(g, b.mul(b.const(2 / math.sqrt(math.pi)),
                                          b.emit("exp", (b.neg(b.mul(x, x)),)))),
      lambda em, g, n, x: em.math("erf", x))


def _powi_eval(a, x):
    return np.power(np.asarray(x, dtype=np.float64), a["n"])


def _powi_vjp(b, g, out, x):
    n = out.attr("n")
    if n == 1:
        return (g,)
    d = x if n == 2 else b.emit("powi", (x,), n=n - 1)
    return (b.mul(g, b.mul(b.const(float(n)), d)),)


op("powi", 1, "elem", same_real, _powi_eval, _powi_vjp,
   lambda em, g, n, x: em.powi(x, n.attr("n")),
   doc="x ^ n for an integer literal n, by multiplication: exact for negative x")

op("to_real", 1, "elem", lambda a, x: (x.shape, REAL),
   lambda a, x: np.asarray(x, dtype=np.float64), None,
   lambda em, g, n, x: em.to_real(x), differentiable=False, doc="an integer used as a number")


def binary(name, eval, vjp=None, lower=None, doc=""):
    op(name, 2, "elem", same_real, lambda a, x, y: eval(x, y), vjp, lower, doc)


binary("add", np.add, lambda b, g, out, x, y: (g, g), lambda em, g, n, x, y: em.fadd(x, y))
binary("sub", np.subtract, lambda b, g, out, x, y: (g, b.neg(g)),
       lambda em, g, n, x, y: em.fsub(x, y))
binary("mul", np.multiply, lambda b, g, out, x, y: (b.mul(g, y), b.mul(g, x)),
       lambda em, g, n, x, y: em.fmul(x, y))
binary("div", np.divide,
       lambda b, g, out, x, y: (b.div(g, y), b.neg(b.div(b.mul(g, out), y))),
       lambda em, g, n, x, y: em.fdiv(x, y))


def _pow_vjp(b, g, out, x, y):
    dx = b.mul(g, b.mul(y, b.binary("pow", x, b.sub(y, b.const(1.0)))))
    zero = b.zeros_like(out)
    dy = b.where(b.emit("eq", (out, zero)), zero, b.mul(g, b.mul(out, b.emit("log", (x,)))))
    return dx, dy


binary("pow", np.power, _pow_vjp, lambda em, g, n, x, y: em.math("pow", x, y),
       doc="x ^ y for real y; d/dy is 0 where x ^ y = 0")


def _maxmin_vjp(cmp):
    def vjp(b, g, out, x, y):
        take_x = b.emit(cmp, (x, y))
        zero = b.zeros_like(g)
        return b.where(take_x, g, zero), b.where(take_x, zero, g)
    return vjp


binary("maximum", np.maximum, _maxmin_vjp("ge"),
       lambda em, g, n, x, y: em.select(em.fcmp(">=", x, y), x, y),
       doc="max(a, b): the whole gradient goes to a when a >= b")
binary("minimum", np.minimum, _maxmin_vjp("le"),
       lambda em, g, n, x, y: em.select(em.fcmp("<=", x, y), x, y),
       doc="min(a, b): the whole gradient goes to a when a <= b")


def _atan2_vjp(b, g, out, y, x):
    den = b.add(b.mul(x, x), b.mul(y, y))
    zero = b.zeros_like(den)
    at_origin = b.emit("eq", (den, zero))
    gy = b.where(at_origin, zero, b.div(b.mul(g, x), den))
    gx = b.where(at_origin, zero, b.neg(b.div(b.mul(g, y), den)))
    return gy, gx


binary("atan2", np.arctan2, _atan2_vjp, lambda em, g, n, y, x: em.math("atan2", y, x),
       doc="atan2(y, x); gradient 0 at the origin")

# comparisons and logic: boolean results, no gradient
_CMP = {"lt": ("<", np.less), "le": ("<=", np.less_equal), "gt": (">", np.greater),
        "ge": (">=", np.greater_equal), "eq": ("==", np.equal), "ne": ("!=", np.not_equal)}
for _name, (_sym, _f) in _CMP.items():
    op(_name, 2, "elem", same_bool, (lambda f: lambda a, x, y: f(x, y))(_f), None,
       (lambda s: lambda em, g, n, x, y: em.fcmp(s, x, y))(_sym), differentiable=False,
       doc=f"a {_sym} b")

op("and", 2, "elem", same_bool, lambda a, x, y: np.logical_and(x, y), None,
   lambda em, g, n, x, y: em.and_(x, y), differentiable=False)
op("or", 2, "elem", same_bool, lambda a, x, y: np.logical_or(x, y), None,
   lambda em, g, n, x, y: em.or_(x, y), differentiable=False)
op("not", 1, "elem", same_bool, lambda a, x: np.logical_not(x), None,
   lambda em, g, n, x: em.not_(x), differentiable=False)


def _where_infer(a, c, x, y):
    assert c.dtype == BOOL and c.shape == x.shape == y.shape
    return x.shape, REAL


def _where_vjp(b, g, out, c, x, y):
    zero = b.zeros_like(g)
    return None, b.where(c, g, zero), b.where(c, zero, g)


def _where_mask(b, g, m, out, c, x, y):
    """Each branch's adjoint is g where the branch is chosen (and m holds), exact 0
    elsewhere: masked by the condition, or its negation."""
    _, gx, gy = _where_vjp(b, g, out, c, x, y)
    not_c = b.emit("not", (c,))
    if m is not None:
        c, not_c = b.emit("and", (m, c)), b.emit("and", (m, not_c))
    return (None, None), (gx, c), (gy, not_c)


op("where", 3, "elem", _where_infer, lambda a, c, x, y: np.where(c, x, y), _where_vjp,
   lambda em, g, n, c, x, y: em.select(c, x, y),
   doc="elementwise choice; the gradient flows only through the branch chosen",
   mask=_where_mask)

# integer scalar arithmetic (indices, counts)


def _checked_eval(a, i):
    if not 0 <= int(i) < a["size"]:
        raise IndexError(f"index {int(i)} out of range 0..{a['size'] - 1}")
    return np.int64(i)


def _int64(v: int) -> np.int64:
    """An integer result of index arithmetic: one that does not fit 64 bits is an index
    error, as it is in compiled code (which checks every step, see em.check_index)."""
    if not -2 ** 63 <= v < 2 ** 63:
        raise IndexError(f"index arithmetic overflows a 64-bit integer ({v})")
    return np.int64(v)


op("checked_index", 1, "elem", scalar_int, _checked_eval, None,
   lambda em, g, n, i: em.check_index(g, n, i), differentiable=False,
   doc="a data-dependent index, checked against 0..size-1 (and for overflow of the "
       "arithmetic computing it) at run time")
# Integer arithmetic only computes indices (build.py computes an integer expression used
# as a number in real arithmetic). The lowerings wrap; the index checks the overflow.
op("iadd", 2, "elem", scalar_int, lambda a, x, y: _int64(int(x) + int(y)), None,
   lambda em, g, n, x, y: em.add(x, y), differentiable=False)
op("isub", 2, "elem", scalar_int, lambda a, x, y: _int64(int(x) - int(y)), None,
   lambda em, g, n, x, y: em.sub(x, y), differentiable=False)
op("imul", 2, "elem", scalar_int, lambda a, x, y: _int64(int(x) * int(y)), None,
   lambda em, g, n, x, y: em.mul(x, y), differentiable=False)
op("ineg", 1, "elem", scalar_int, lambda a, x: _int64(-int(x)), None,
   lambda em, g, n, x: em.neg(x), differentiable=False)

# ------------------------------------------------------------------ views
# A view reads elements of its input at other positions; code generation maps the
# index instead of copying.


def _broadcast_infer(a, x):
    shape, dims = tuple(a["shape"]), tuple(a["dims"])
    assert len(dims) == x.rank and all(x.shape[i] == shape[d] for i, d in enumerate(dims))
    return shape, x.dtype


def _broadcast_eval(a, x):
    shape, dims = tuple(a["shape"]), tuple(a["dims"])
    x = np.asarray(x)
    # put x's axes where dims says, size-1 elsewhere, then broadcast
    expand = [1] * len(shape)
    for i, d in enumerate(dims):
        expand[d] = x.shape[i]
    order = np.argsort(dims) if dims else []
    return np.broadcast_to(np.transpose(x, order).reshape(expand) if dims else x, shape)


def _broadcast_vjp(b, g, out, x):
    return (b.sum_to(g, x.shape, out.attr("dims")),)


op("broadcast", 1, "view", _broadcast_infer, _broadcast_eval, _broadcast_vjp,
   lambda em, g, n, idx: em.elem(g, n.inputs[0], tuple(idx[d] for d in n.attr("dims"))),
   doc="copies along new axes; dims[i] is the output axis of input axis i",
   mask=_moved_mask(_broadcast_vjp))


def _transpose_vjp(b, g, out, x):
    return (b.emit("transpose", (g,)),)


op("transpose", 1, "view", lambda a, x: (x.shape[::-1], x.dtype), lambda a, x: np.transpose(x),
   _transpose_vjp, lambda em, g, n, idx: em.elem(g, n.inputs[0], tuple(reversed(idx))),
   mask=_moved_mask(_transpose_vjp))


def _take_infer(a, x, i):
    assert i.dtype == INT and i.shape == ()
    return tuple(s for k, s in enumerate(x.shape) if k != a["axis"]), x.dtype


def _take_eval(a, x, i):
    return np.take(x, int(i), axis=a["axis"])


def _take_lower(em, g, n, idx):
    axis = n.attr("axis")
    i = em.elem(g, n.inputs[1], ())
    return em.elem(g, n.inputs[0], tuple(idx[:axis]) + (i,) + tuple(idx[axis:]))


def _take_vjp(b, g, out, x, i):
    return b.emit("put", (g, i), axis=out.attr("axis"), size=x.shape[out.attr("axis")]), None


op("take", 2, "view", _take_infer, _take_eval, _take_vjp, _take_lower,
   doc="x[i] along an axis; a data-dependent i is range-checked at run time",
   mask=_moved_mask(_take_vjp))


def _put_infer(a, g, i):
    shape = list(g.shape)
    shape.insert(a["axis"], a["size"])
    return tuple(shape), REAL


def _put_eval(a, g, i):
    g = np.asarray(g, dtype=np.float64)
    shape = list(g.shape)
    shape.insert(a["axis"], a["size"])
    out = np.zeros(shape)
    sl = [slice(None)] * len(shape)
    sl[a["axis"]] = int(i)
    out[tuple(sl)] = g
    return out


def _put_lower(em, g, n, idx):
    axis = n.attr("axis")
    i = em.elem(g, n.inputs[1], ())
    hit = em.icmp("==", idx[axis], i)
    v = em.elem(g, n.inputs[0], tuple(idx[:axis]) + tuple(idx[axis + 1:]))
    return em.select(hit, v, em.fconst(0))


op("put", 2, "view", _put_infer, _put_eval, None, _put_lower,
   doc="backward-only: zeros with g at index i along an axis (the adjoint of take)")


def _slice_infer(a, x):
    shape = list(x.shape)
    shape[a["axis"]] = a["stop"] - a["start"]
    return tuple(shape), x.dtype


def _slice_eval(a, x):
    sl = [slice(None)] * np.ndim(x)
    sl[a["axis"]] = slice(a["start"], a["stop"])
    return np.asarray(x)[tuple(sl)]


def _slice_lower(em, g, n, idx):
    axis, start = n.attr("axis"), n.attr("start")
    idx = list(idx)
    idx[axis] = em.add(idx[axis], em.iconst(start)) if start else idx[axis]
    return em.elem(g, n.inputs[0], tuple(idx))


def _slice_vjp(b, g, out, x):
    return (b.emit("pad", (g,), axis=out.attr("axis"), start=out.attr("start"),
                   size=x.shape[out.attr("axis")]),)


op("slice", 1, "view", _slice_infer, _slice_eval, _slice_vjp, _slice_lower,
   doc="x[start:stop] along an axis (constant bounds)", mask=_moved_mask(_slice_vjp))


def _pad_infer(a, g):
    shape = list(g.shape)
    shape[a["axis"]] = a["size"]
    return tuple(shape), REAL


def _pad_eval(a, g):
    g = np.asarray(g, dtype=np.float64)
    shape = list(g.shape)
    shape[a["axis"]] = a["size"]
    out = np.zeros(shape)
    sl = [slice(None)] * len(shape)
    sl[a["axis"]] = slice(a["start"], a["start"] + g.shape[a["axis"]])
    out[tuple(sl)] = g
    return out


def _pad_lower(em, g, n, idx):
    axis, start = n.attr("axis"), n.attr("start")
    length = n.inputs[0].shape[axis]
    j = em.sub(idx[axis], em.iconst(start))
    inside = em.and_(em.icmp(">=", j, em.iconst(0)), em.icmp("<", j, em.iconst(length)))
    # clamp before reading so the load never leaves the buffer; the select drops it
    jc = em.select(inside, j, em.iconst(0))
    idx = list(idx)
    idx[axis] = jc
    return em.select(inside, em.elem(g, n.inputs[0], tuple(idx)), em.fconst(0))


op("pad", 1, "view", _pad_infer, _pad_eval, None, _pad_lower,
   doc="backward-only: zeros with g placed at start along an axis (the adjoint of slice)")

# ------------------------------------------------------------------ reductions and tensors


def _reduce_eval(f):
    return lambda a, x: f(np.asarray(x, dtype=np.float64), axis=tuple(a["axes"]))


def _expand(b, r, x, axes):
    """Broadcast a reduction's result `r` back over the reduced `axes` of x's shape."""
    kept = tuple(k for k in range(x.rank) if k not in axes)
    return b.broadcast(r, x.shape, kept)


def _sum_vjp(b, g, out, x):
    return (_expand(b, g, x, out.attr("axes")),)


def _ext_vjp(kind):
    def vjp(b, g, out, x):
        axes = out.attr("axes")
        mask = b.emit("argext_mask", (x,), axes=axes, kind=kind)
        return (b.mul(mask, _expand(b, g, x, axes)),)
    return vjp


def _prod_vjp(b, g, out, x):
    axes = out.attr("axes")
    others = b.emit("prod_others", (x,), axes=axes)
    return (b.mul(others, _expand(b, g, x, axes)),)


def _lse_vjp(b, g, out, x):
    axes = out.attr("axes")
    soft = b.emit("exp", (b.sub(x, _expand(b, out, x, axes)),))
    return (b.mul(soft, _expand(b, g, x, axes)),)


def _norm_vjp(b, g, out, x):
    axes = out.attr("axes")
    zero = b.zeros_like(out)
    # the gradient of the norm at the zero vector is taken as 0, not 0/0
    scale = b.where(b.emit("eq", (out, zero)), zero, b.div(g, out))
    return (b.mul(x, _expand(b, scale, x, axes)),)


def _lse_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(a["axes"])
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return np.squeeze(m, axis=axes) + np.log(np.sum(np.exp(x - m), axis=axes))


def _norm_eval(a, x):
    return np.sqrt(np.sum(np.square(np.asarray(x, dtype=np.float64)), axis=tuple(a["axes"])))


def _reduced_mask(vjp):
    """The mask rule of a reduction whose vjp multiplies the spread g by factors of x
    (prod, logsumexp, norm): an element's adjoint is kept where its group's result was
    chosen, and carries that mask."""
    def rule(b, g, m, out, x):
        (gx,) = vjp(b, g, out, x)
        if m is None:
            return [(gx, None)]
        keep = _expand(b, m, x, out.attr("axes"))
        return [(_select(b, keep, gx), keep)]
    return rule


for _name, _f, _vjp, _mask, _doc in [
        ("sum", np.sum, _sum_vjp, _moved_mask, "sum over axes"),
        ("max", np.max, _ext_vjp("max"), _moved_mask,
         "max over axes; the gradient goes to the first max"),
        ("min", np.min, _ext_vjp("min"), _moved_mask,
         "min over axes; the gradient goes to the first min"),
        ("prod", np.prod, _prod_vjp, _reduced_mask,
         "product over axes; exact gradient with zeros"),
]:
    op(_name, 1, "tensor", reduced_shape, _reduce_eval(_f), _vjp,
       (lambda k: lambda em, g, n: em.reduce(g, n, k))(_name), _doc, mask=_mask(_vjp))

op("logsumexp", 1, "tensor", reduced_shape, _lse_eval, _lse_vjp,
   lambda em, g, n: em.reduce(g, n, "logsumexp"), doc="log(sum(exp(x))), stable",
   mask=_reduced_mask(_lse_vjp))
op("norm", 1, "tensor", reduced_shape, _norm_eval, _norm_vjp,
   lambda em, g, n: em.reduce(g, n, "norm"), doc="Euclidean norm; gradient 0 at zero",
   mask=_reduced_mask(_norm_vjp))


def _argext_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(a["axes"])
    kept = [k for k in range(x.ndim) if k not in axes]
    moved = np.moveaxis(x, kept + list(axes), range(x.ndim))
    flat = moved.reshape(int(np.prod([x.shape[k] for k in kept])), -1)
    pick = (np.argmax if a["kind"] == "max" else np.argmin)(flat, axis=1)
    mask = np.zeros_like(flat)
    mask[np.arange(flat.shape[0]), pick] = 1
    return np.moveaxis(mask.reshape(moved.shape), range(x.ndim), kept + list(axes))


def _prod_others_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(a["axes"])
    kept = [k for k in range(x.ndim) if k not in axes]
    moved = np.moveaxis(x, kept + list(axes), range(x.ndim))
    flat = moved.reshape(int(np.prod([x.shape[k] for k in kept])), -1)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.prod(np.delete(flat, j, axis=1), axis=1)
    return np.moveaxis(out.reshape(moved.shape), range(x.ndim), kept + list(axes))


op("argext_mask", 1, "tensor", same_as_input, _argext_eval, None,
   lambda em, g, n: em.argext_mask(g, n),
   doc="backward-only: 1 at the first max (kind=max) or min of each reduced group")
op("prod_others", 1, "tensor", same_as_input, _prod_others_eval, None,
   lambda em, g, n: em.prod_others(g, n),
   doc="backward-only: each element's product of the others in its group, no division")


def _softmax_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    ax = a["axis"]
    e = np.exp(x - np.max(x, axis=ax, keepdims=True))
    return e / np.sum(e, axis=ax, keepdims=True)


def _log_softmax_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    ax = a["axis"]
    m = np.max(x, axis=ax, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True))


def _softmax_vjp(b, g, out, x):
    ax = out.attr("axis")
    dot = b.emit("sum", (b.mul(g, out),), axes=(ax,))
    return (b.mul(out, b.sub(g, _expand(b, dot, x, (ax,)))),)


def _log_softmax_vjp(b, g, out, x):
    ax = out.attr("axis")
    total = b.emit("sum", (g,), axes=(ax,))
    soft = b.emit("softmax", (x,), axis=ax)
    return (b.sub(g, b.mul(soft, _expand(b, total, x, (ax,)))),)


def _softmax_mask(b, g, m, out, x):
    """Every element of a group depends on every other: an element's adjoint is kept
    where any element of its group was chosen; the sum over the group takes the chosen
    elements only."""
    if m is None:
        return [(_softmax_vjp(b, g, out, x)[0], None)]
    ax = out.attr("axis")
    dot = b.emit("sum", (_select(b, m, b.mul(g, out)),), axes=(ax,))
    keep = _expand(b, _any(b, m, (ax,)), x, (ax,))
    return [(_select(b, keep, b.mul(out, b.sub(g, _expand(b, dot, x, (ax,))))), keep)]


def _log_softmax_mask(b, g, m, out, x):
    """As softmax's; the sum over the group is of g alone, exact zeros where unchosen."""
    (gx,) = _log_softmax_vjp(b, g, out, x)
    if m is None:
        return [(gx, None)]
    keep = _expand(b, _any(b, m, (out.attr("axis"),)), x, (out.attr("axis"),))
    return [(_select(b, keep, gx), keep)]


op("softmax", 1, "tensor", same_as_input, _softmax_eval, _softmax_vjp,
   lambda em, g, n: em.softmax(g, n, log=False), doc="softmax along an axis, stable",
   mask=_softmax_mask)
op("log_softmax", 1, "tensor", same_as_input, _log_softmax_eval, _log_softmax_vjp,
   lambda em, g, n: em.softmax(g, n, log=True), doc="log(softmax) along an axis, stable",
   mask=_log_softmax_mask)


def _matmul_infer(a, x, y):
    assert x.shape[-1] == y.shape[0] and x.rank + y.rank >= 3
    return x.shape[:-1] + y.shape[1:], REAL


def _matmul_vjp(b, g, out, x, y):
    if x.rank == 2 and y.rank == 2:       # [M,K] @ [K,N]
        return (b.emit("matmul", (g, b.emit("transpose", (y,)))),
                b.emit("matmul", (b.emit("transpose", (x,)), g)))
    if x.rank == 2:                       # [M,K] @ [K] -> [M]
        return _outer(b, g, y), b.emit("matmul", (g, x))
    return b.emit("matmul", (y, g)), _outer(b, x, g)   # [K] @ [K,N] -> [N]


def _outer(b, u, v):
    shape = (u.shape[0], v.shape[0])
    return b.mul(b.broadcast(u, shape, (0,)), b.broadcast(v, shape, (1,)))


def _matmul_mask(b, g, m, out, x, y):
    """Each operand's adjoint is a product of g with the other operand: that operand is
    read only where a chosen element of the product uses it (a row of A in A @ x is
    zeroed where that element is not chosen), and each adjoint is kept where a chosen
    element reaches it. For A @ B of two matrices the rows of A and the columns of B
    that no chosen element uses are zeroed; an element of B in a column some row
    chooses still meets the other rows' zeros (a NaN there, where that column's chosen
    products are themselves NaN or infinite)."""
    if m is None:
        return [(a, None) for a in _matmul_vjp(b, g, out, x, y)]
    if x.rank == 2 and y.rank == 2:       # [M,K] @ [K,N]
        rows = b.broadcast(_any(b, m, (1,)), x.shape, (0,))
        cols = b.broadcast(_any(b, m, (0,)), y.shape, (1,))
        gx = b.emit("matmul", (g, b.emit("transpose", (_select(b, cols, y),))))
        gy = b.emit("matmul", (b.emit("transpose", (_select(b, rows, x),)), g))
        return [(_select(b, rows, gx), rows), (_select(b, cols, gy), cols)]
    # (the vector operand's adjoint: kept wherever anything was chosen)
    chosen = b.broadcast(_any(b, m, (0,)), y.shape if x.rank == 2 else x.shape)
    if x.rank == 2:                       # [M,K] @ [K] -> [M]
        rows = b.broadcast(m, x.shape, (0,))
        return [(_select(b, rows, _outer(b, g, y)), rows),
                (b.emit("matmul", (g, _select(b, rows, x))), chosen)]
    cols = b.broadcast(m, y.shape, (1,))  # [K] @ [K,N] -> [N]
    return [(b.emit("matmul", (_select(b, cols, y), g)), chosen),
            (_select(b, cols, _outer(b, x, g)), cols)]


op("matmul", 2, "tensor", _matmul_infer, lambda a, x, y: np.matmul(x, y), _matmul_vjp,
   lambda em, g, n: em.matmul(g, n), doc="A @ B, A @ x, x @ A", mask=_matmul_mask)
