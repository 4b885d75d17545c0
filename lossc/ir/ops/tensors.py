"""Tensor ops: reductions, softmax, matrix products, array literals and the backward-only
helpers of max and prod. Code generation computes each whole, into a buffer, with loops."""
from __future__ import annotations

import numpy as np

from lossc.ir.dtypes import REAL
from lossc.ir.ops.base import (ANY, Example, OpDef, any_of, expand, linear_jvp, moved_mask,
                               numpy_form, reduced_mask, reduced_shape, same_as_input,
                               select, zero_jvp)


def tensor(name, *, names=(), axis=False, stage="any", vjp=None, mask=None,
           single_pass=False, **facts) -> OpDef:
    return OpDef(name, facts.pop("arity", 1), "tensor", names=names, axis=axis,
                 reduction=False, stage=stage, differentiable=True, vjp=vjp, mask=mask,
                 single_pass=single_pass, foldable=False, **facts)


def reduction(name, eval, vjp, mask, jvp, form, *, single_pass, example, doc) -> OpDef:
    """A reduction over the axes in its `axes` attribute, the function `name` of the
    language (axis=0 or 1 of a matrix, or all axes). form(s, group) -> expr."""
    return OpDef(name, 1, "tensor", infer=reduced_shape, eval=eval,
                 sympy=lambda s, n, group: form(s, group), names=(name,), axis=True,
                 reduction=True, stage="any", differentiable=True, vjp=vjp,
                 mask=mask(vjp), jvp=jvp, lower=lambda em, g, n: em.reduce(g, n, name),
                 single_pass=single_pass, foldable=False, example=example, doc=doc)


def _reduce_eval(f):
    return lambda a, x: f(np.asarray(x, dtype=np.float64), axis=tuple(a["axes"]))


def _sum_vjp(b, g, out, x):
    return (expand(b, g, x, out.attr("axes")),)


def _ext_vjp(kind):
    def vjp(b, g, out, x):
        axes = out.attr("axes")
        mask = b.emit("argext_mask", (x,), axes=axes, kind=kind)
        return (b.mul(mask, expand(b, g, x, axes)),)
    return vjp


def _prod_vjp(b, g, out, x):
    axes = out.attr("axes")
    others = b.emit("prod_others", (x,), axes=axes)
    return (b.mul(others, expand(b, g, x, axes)),)


def _lse_vjp(b, g, out, x):
    axes = out.attr("axes")
    soft = b.emit("exp", (b.sub(x, expand(b, out, x, axes)),))
    return (b.mul(soft, expand(b, g, x, axes)),)


def _unit(b, out, x):
    """x / norm(x) for each group, 0 at the zero vector (the gradient of the norm is
    taken as 0 there, not 0/0). x over the norm, not x times 1 / norm: 1 / norm
    overflows for a norm below 1e-308, and its derivative 1 / norm^2 below 1e-154."""
    whole = expand(b, out, x, out.attr("axes"))
    zero = b.zeros_like(x)
    return b.where(b.emit("eq", (whole, zero)), zero, b.div(x, whole))


def _norm_vjp(b, g, out, x):
    return (b.mul(_unit(b, out, x), expand(b, g, x, out.attr("axes"))),)


def _weighted_sum(b, weights, t, axes):
    """The tangent of a reduction whose derivative in each element is `weights`: the
    sum of weights * t over each group."""
    return b.emit("sum", (b.mul(weights, t),), axes=axes)


def _ext_jvp(kind):
    def jvp(b, out, ts, x):
        axes = out.attr("axes")
        return _weighted_sum(b, b.emit("argext_mask", (x,), axes=axes, kind=kind), ts[0], axes)
    return jvp


def _prod_jvp(b, out, ts, x):
    axes = out.attr("axes")
    return _weighted_sum(b, b.emit("prod_others", (x,), axes=axes), ts[0], axes)


def _centered(b, t, x, axes):
    """(t - c, c), c the tangent at each group's (first) maximum of x. The tangents of
    logsumexp, softmax and log_softmax weigh t by s = softmax(x), and as the s sum to 1
    they can weigh t - c instead, for any c: with the maximum's own, its term is exactly
    0 and the others' s_j (t_j - c) stay, where t - sum(s t) lost them once s rounded
    to 1 there (the Hessian of logsumexp([p, -40]) at p = 0 was 0, not 4.2e-18)."""
    c = _weighted_sum(b, b.emit("argext_mask", (x,), axes=axes, kind="max"), t, axes)
    return b.sub(t, expand(b, c, x, axes)), c


def _lse_jvp(b, out, ts, x):
    axes = out.attr("axes")
    soft = b.emit("exp", (b.sub(x, expand(b, out, x, axes)),))
    u, c = _centered(b, ts[0], x, axes)
    return b.add(c, _weighted_sum(b, soft, u, axes))


def _norm_jvp(b, out, ts, x):
    """sum(x / norm * t); 0 at the zero vector, as the gradient there."""
    return _weighted_sum(b, _unit(b, out, x), ts[0], out.attr("axes"))


def _log_sum_parts(x, axes):
    """(M, finite, t) as codegen/reduce.py's log_sum_parts: log(sum(exp(x))) is
    M + log1p(t) where M is finite, t the terms other than the maxima's 1s plus (the
    number of maxima - 1); M itself where it is not."""
    M = np.max(x, axis=axes, keepdims=True)
    finite = np.isfinite(M)
    shift = np.where(finite, M, 0)
    top = x == M
    with np.errstate(invalid="ignore", over="ignore"):
        rest = np.sum(np.where(top, 0.0, np.exp(x - shift)), axis=axes, keepdims=True)
    return M, finite, rest + (np.sum(top, axis=axes, keepdims=True) - 1)


def lse_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(a["axes"])
    M, finite, t = _log_sum_parts(x, axes)
    with np.errstate(invalid="ignore"):
        return np.squeeze(np.where(finite, M + np.log1p(t), M), axis=axes)


def _norm_eval(a, x):
    """s sqrt(sum((x / s)^2)), s the largest |x| of each group (codegen/reduce.py's
    group_norm): no under- or overflow of the squares."""
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(a["axes"])
    with np.errstate(invalid="ignore"):
        top = np.max(np.abs(x), axis=axes, keepdims=True)
    scale = np.where((top > 0) & (top < np.inf), top, 1.0)
    return np.squeeze(scale, axis=axes) * np.sqrt(np.sum(np.square(x / scale), axis=axes))


def _extreme(s, group, which):
    return which(*group) if len(group) > 1 else group[0]


REDUCTIONS = [
    reduction("sum", _reduce_eval(np.sum), _sum_vjp, moved_mask, linear_jvp,
              lambda s, v: s.sp.Add(*v), single_pass=True,
              example=Example(((2, 3),), (ANY,), {"axes": (1,)}), doc="sum over axes"),
    reduction("max", _reduce_eval(np.max), _ext_vjp("max"), moved_mask, _ext_jvp("max"),
              lambda s, v: _extreme(s, v, s.Max), single_pass=True,
              example=Example(((2, 3),), (ANY,), {"axes": (0,)}),
              doc="max over axes; the gradient goes to the first max"),
    reduction("min", _reduce_eval(np.min), _ext_vjp("min"), moved_mask, _ext_jvp("min"),
              lambda s, v: _extreme(s, v, s.Min), single_pass=True,
              example=Example(((5,),), (ANY,), {"axes": (0,)}),
              doc="min over axes; the gradient goes to the first min"),
    reduction("prod", _reduce_eval(np.prod), _prod_vjp, reduced_mask, _prod_jvp,
              lambda s, v: s.sp.Mul(*v), single_pass=True,
              example=Example(((2, 3),), (ANY,), {"axes": (0, 1)}),
              doc="product over axes; exact gradient with zeros"),
    reduction("logsumexp", lse_eval, _lse_vjp, reduced_mask, _lse_jvp,
              lambda s, v: s.sp.log(s.sp.Add(*[s.sp.exp(t) for t in v])),
              single_pass=False,     # (the max first, then the sum)
              example=Example(((2, 3),), (ANY,), {"axes": (1,)}),
              doc="log(sum(exp(x))), stable"),
    reduction("norm", _norm_eval, _norm_vjp, reduced_mask, _norm_jvp,
              lambda s, v: s.sp.sqrt(s.sp.Add(*[t ** 2 for t in v])), single_pass=True,
              example=Example(((2, 3),), (ANY,), {"axes": (0,)}),
              doc="Euclidean norm; gradient 0 at zero"),
]


def _groups_last(x, axes):
    """x with the reduced axes last, flattened to (kept elements, group), and how to put
    an array of that layout back."""
    kept = [k for k in range(x.ndim) if k not in axes]
    moved = np.moveaxis(x, kept + list(axes), range(x.ndim))
    flat = moved.reshape(int(np.prod([x.shape[k] for k in kept])), -1)

    def back(out):
        return np.moveaxis(out.reshape(moved.shape), range(x.ndim), kept + list(axes))
    return flat, back


def _argext_eval(a, x):
    flat, back = _groups_last(np.asarray(x, dtype=np.float64), tuple(a["axes"]))
    pick = (np.argmax if a["kind"] == "max" else np.argmin)(flat, axis=1)
    mask = np.zeros_like(flat)
    mask[np.arange(flat.shape[0]), pick] = 1
    return back(mask)


def _argext_form(s, n, x):
    """1 at the first maximum (minimum) of each group, 0 elsewhere: `argmax(v_0, ...)`
    (an unevaluated function, read as the first extreme's position) compared with each
    position. Comparing every pair of elements instead would take sympy time quadratic
    in the group's size, for a longer formula."""
    flat, back = s.groups(x, n.attr("axes"))
    arg = s.argext(n.attr("kind"))
    out = np.empty(flat.shape, dtype=object)
    for idx in np.ndindex(*flat.shape[:-1]):
        v = flat[idx]
        if len(v) == 1:
            out[idx + (0,)] = s.sp.Integer(1)
            continue
        at = arg(*v)
        for j in range(len(v)):
            out[idx + (j,)] = s.sp.Piecewise((1, s.sp.Eq(at, j)), (0, True))
    return back(out)


def _prod_others_eval(a, x):
    flat, back = _groups_last(np.asarray(x, dtype=np.float64), tuple(a["axes"]))
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.prod(np.delete(flat, j, axis=1), axis=1)
    return back(out)


def _prod_others_form(s, n, x):
    out = np.empty(x.shape, dtype=object)
    group = [k for k in range(x.ndim) if k not in n.attr("axes")]
    for idx in np.ndindex(*x.shape):
        y = x.copy()
        y[idx] = s.sp.Integer(1)
        sl = tuple(idx[k] if k in group else slice(None) for k in range(x.ndim))
        out[idx] = s.sp.Mul(*np.asarray(y[sl]).reshape(-1))
    return out


def _one_hot(b, x, axes, position):
    """A bool of x's shape, true at `position` (one index per reduced axis) of every
    group: a 1 padded with zeros along each reduced axis."""
    shape = tuple(1 if k in axes else s for k, s in enumerate(x.shape))
    hot = b.const(1.0, shape)
    for a, at in zip(axes, position):
        hot = b.emit("pad", (hot,), axis=a, start=at, size=x.shape[a])
    return b.emit("gt", (hot, b.zeros_like(hot)))


def _prod_others_jvp(b, out, ts, x):
    """Element i's tangent is the sum over the others j of t_j times the product of
    the elements other than i and j. Without division (x may hold zeros): for each
    position j of a group, the products of the others with x_j replaced by t_j, taken
    where i is not j. A group of m elements costs m products of the others: the op
    appears in second derivatives of `prod` only, over small groups."""
    axes = out.attr("axes")
    zero = b.zeros_like(x)
    total = None
    for position in np.ndindex(*[x.shape[a] for a in axes]):
        hot = _one_hot(b, x, axes, position)
        others = b.emit("prod_others", (b.where(hot, ts[0], x),), axes=axes)
        term = b.where(hot, zero, others)
        total = term if total is None else b.add(total, term)
    return total


def _group_size(n):
    return int(np.prod([n.inputs[0].shape[a] for a in n.attr("axes")]))


BACKWARD = [
    tensor("argext_mask", stage="backward", infer=same_as_input, eval=_argext_eval,
           sympy=_argext_form, lower=lambda em, g, n: em.argext_mask(g, n), jvp=zero_jvp,
           sympy_operands=lambda n: 3,   # a comparison with the group's argmax
           example=Example(((2, 3),), (ANY,), {"axes": (1,), "kind": "max"}),
           doc="backward-only: 1 at the first max (kind=max) or min of each reduced "
               "group"),
    tensor("prod_others", stage="backward", infer=same_as_input, eval=_prod_others_eval,
           sympy=_prod_others_form, lower=lambda em, g, n: em.prod_others(g, n),
           jvp=_prod_others_jvp,
           sympy_operands=_group_size, example=Example(((4,),), (ANY,), {"axes": (0,)}),
           doc="backward-only: each element's product of the others in its group, no "
               "division"),
]


def _softmax_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    ax = a["axis"]
    M = np.max(x, axis=ax, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - np.where(np.isfinite(M), M, 0))     # (an infinite maximum: no shift)
        return e / np.sum(e, axis=ax, keepdims=True)


def _log_softmax_eval(a, x):
    x = np.asarray(x, dtype=np.float64)
    M, finite, t = _log_sum_parts(x, (a["axis"],))
    with np.errstate(invalid="ignore"):
        return (x - M) - np.where(finite, np.log1p(t), 0.0)


def _softmax_vjp(b, g, out, x):
    """s (g - sum(s g)), of g centered (softmax_tangent: the Jacobian is symmetric)."""
    return (softmax_tangent(b, out, g, x, (out.attr("axis"),)),)


def _log_softmax_vjp(b, g, out, x):
    """g - s sum(g); at each group's (first) maximum m, g_m r - s_m (sum(g) - g_m) with
    r = 1 - s_m summed from the other s, which g_m - s_m sum(g) loses once s_m rounds
    to 1 (-log_softmax([0, -40])[0] had gradient 0 for -4.2e-18)."""
    axes = (out.attr("axis"),)
    soft = b.emit("softmax", (x,), axis=axes[0])
    plain = b.sub(g, b.mul(soft, expand(b, b.emit("sum", (g,), axes=axes), x, axes)))
    top = b.emit("eq", (b.emit("argext_mask", (x,), axes=axes, kind="max"),
                        b.const(1.0, x.shape)))
    zero = b.zeros_like(x)
    rest_s = expand(b, b.emit("sum", (b.where(top, zero, soft),), axes=axes), x, axes)
    rest_g = expand(b, b.emit("sum", (b.where(top, zero, g),), axes=axes), x, axes)
    return (b.where(top, b.sub(b.mul(g, rest_s), b.mul(soft, rest_g)), plain),)


def softmax_tangent(b, s, t, x, axes):
    """The tangent of s = softmax(x) over `axes` along x's tangent t: s (u - sum(s u)),
    u = t centered (_centered). (The Jacobian diag(s) - s s^T is symmetric: this is
    also its vjp.)"""
    u = _centered(b, t, x, axes)[0]
    return b.mul(s, b.sub(u, expand(b, _weighted_sum(b, s, u, axes), x, axes)))


def softmax_written_out(n):
    """(x, axes) if n is exp(x - logsumexp(x)): the gradient of logsumexp (_lse_vjp),
    whose tangent is softmax's; else None."""
    d = n.inputs[0] if n.op == "exp" else None
    if d is None or d.op != "sub" or d.inputs[1].op != "broadcast":
        return None
    x, lse = d.inputs[0], d.inputs[1].inputs[0]
    if lse.op != "logsumexp" or lse.inputs[0] is not x:
        return None
    axes = lse.attr("axes")
    kept = tuple(k for k in range(x.rank) if k not in axes)
    return (x, axes) if d.inputs[1].attr("dims") == kept else None


def _softmax_jvp(b, out, ts, x):
    return softmax_tangent(b, out, ts[0], x, (out.attr("axis"),))


def _log_softmax_jvp(b, out, ts, x):
    """t - sum(softmax(x) * t) along the axis (the Jacobian I - 1 s^T), of t centered
    (_centered)."""
    ax = out.attr("axis")
    soft = b.emit("softmax", (x,), axis=ax)
    u = _centered(b, ts[0], x, (ax,))[0]
    return b.sub(u, expand(b, _weighted_sum(b, soft, u, (ax,)), x, (ax,)))


def _softmax_mask(b, g, m, out, x):
    """Every element of a group depends on every other: an element's adjoint is kept
    where any element of its group was chosen; the sum over the group takes the chosen
    elements only."""
    if m is None:
        return [(_softmax_vjp(b, g, out, x)[0], None)]
    ax = out.attr("axis")
    keep = expand(b, any_of(b, m, (ax,)), x, (ax,))
    return [(select(b, keep, softmax_tangent(b, out, select(b, m, g), x, (ax,))), keep)]


def _log_softmax_mask(b, g, m, out, x):
    """As softmax's; the sum over the group is of g alone, exact zeros where unchosen."""
    (gx,) = _log_softmax_vjp(b, g, out, x)
    if m is None:
        return [(gx, None)]
    keep = expand(b, any_of(b, m, (out.attr("axis"),)), x, (out.attr("axis"),))
    return [(select(b, keep, gx), keep)]


def _softmax_form(s, n, x):
    axis = n.attr("axis")
    total = np.expand_dims(s.reduce(x, (axis,), lambda v: s.sp.Add(*[s.sp.exp(t) for t in v])),
                           axis)
    if n.op == "softmax":
        return s.apply(lambda t, u: s.sp.exp(t) / u, x, total)
    return s.apply(lambda t, u: t - s.sp.log(u), x, total)


def _softmax_operands(n):
    return n.inputs[0].shape[n.attr("axis")] + 1


SOFTMAX = [
    tensor("softmax", names=("softmax",), axis=True, infer=same_as_input,
           eval=_softmax_eval, sympy=_softmax_form, vjp=_softmax_vjp, mask=_softmax_mask,
           jvp=_softmax_jvp,
           lower=lambda em, g, n: em.softmax(g, n, log=False),
           sympy_operands=_softmax_operands,
           example=Example(((2, 3),), (ANY,), {"axis": 0}),
           doc="softmax along an axis, stable"),
    tensor("log_softmax", names=("log_softmax",), axis=True, infer=same_as_input,
           eval=_log_softmax_eval, sympy=_softmax_form, vjp=_log_softmax_vjp,
           mask=_log_softmax_mask, jvp=_log_softmax_jvp,
           lower=lambda em, g, n: em.softmax(g, n, log=True),
           sympy_operands=_softmax_operands,
           example=Example(((4,),), (ANY,), {"axis": 0}),
           doc="log(softmax) along an axis, stable"),
]


def _matmul_infer(a, x, y):
    assert x.shape[-1] == y.shape[0] and x.rank + y.rank >= 3
    return x.shape[:-1] + y.shape[1:], REAL


def _matmul_vjp(b, g, out, x, y):
    if x.rank == 2 and y.rank == 2:       # [M,K] @ [K,N]
        return (b.emit("matmul", (g, b.emit("transpose", (y,)))),
                b.emit("matmul", (b.emit("transpose", (x,)), g)))
    if x.rank == 2:                       # [M,K] @ [K] -> [M]
        return outer(b, g, y), b.emit("matmul", (g, x))
    return b.emit("matmul", (y, g)), outer(b, x, g)   # [K] @ [K,N] -> [N]


def outer(b, u, v):
    """outer(u, v) as the product of two broadcasts (how build.py writes `outer` too)."""
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
        rows = b.broadcast(any_of(b, m, (1,)), x.shape, (0,))
        cols = b.broadcast(any_of(b, m, (0,)), y.shape, (1,))
        gx = b.emit("matmul", (g, b.emit("transpose", (select(b, cols, y),))))
        gy = b.emit("matmul", (b.emit("transpose", (select(b, rows, x),)), g))
        return [(select(b, rows, gx), rows), (select(b, cols, gy), cols)]
    # (the vector operand's adjoint: kept wherever anything was chosen)
    chosen = b.broadcast(any_of(b, m, (0,)), y.shape if x.rank == 2 else x.shape)
    if x.rank == 2:                       # [M,K] @ [K] -> [M]
        rows = b.broadcast(m, x.shape, (0,))
        return [(select(b, rows, outer(b, g, y)), rows),
                (b.emit("matmul", (g, select(b, rows, x))), chosen)]
    cols = b.broadcast(m, y.shape, (1,))  # [K] @ [K,N] -> [N]
    return [(b.emit("matmul", (select(b, cols, y), g)), chosen),
            (select(b, cols, outer(b, x, g)), cols)]


def _matmul_jvp(b, out, ts, x, y):
    """Bilinear: tx @ y + x @ ty."""
    tx, ty = ts
    terms = ([b.emit("matmul", (tx, y))] if tx is not None else []) + \
        ([b.emit("matmul", (x, ty))] if ty is not None else [])
    return terms[0] if len(terms) == 1 else b.add(*terms)


MATMUL = tensor(
    "matmul", arity=2, infer=_matmul_infer, eval=lambda a, x, y: np.matmul(x, y),
    sympy=numpy_form(lambda a, x, y: np.matmul(x, y)), vjp=_matmul_vjp, mask=_matmul_mask,
    jvp=_matmul_jvp,
    lower=lambda em, g, n: em.matmul(g, n), sympy_operands=lambda n: 2 * n.inputs[0].shape[-1],
    example=Example(((2, 3), (3, 4)), (ANY, ANY)), doc="A @ B, A @ x, x @ A")


def _pack_infer(a, *xs):
    assert all(x.shape == () and x.dtype == REAL for x in xs) and len(xs) == np.prod(a["shape"])
    return tuple(a["shape"]), REAL


def _pack_eval(a, *xs):
    """Reals, or (for the LaTeX forms) sympy expressions, as an array of `shape`."""
    out = np.array([np.asarray(x).item() for x in xs], dtype=object).reshape(a["shape"])
    try:
        return out.astype(np.float64)
    except TypeError:
        return out


def _pack_vjp(b, g, out, *xs):
    """Each element's adjoint: g at its position."""
    adjoints = []
    for p in range(len(xs)):
        v = g
        for i in np.unravel_index(p, out.shape):
            v = b.emit("take", (v, b.emit("iconst", (), value=int(i))), axis=0)
        adjoints.append(v)
    return adjoints


def _pack_jvp(b, out, ts, *xs):
    """The literal of the elements' tangents, 0 for an element that has none (pack is
    linear in every input, not only the first as linear_jvp assumes)."""
    return b.emit("pack", tuple(b.const(0.0, ()) if t is None else t for t in ts),
                  **dict(out.attrs))


def _pack_lower(em, g, n):
    """Its buffer, element p from input p. (Computed where each element is read, as a
    view, an element at a position known only at run time, in a loop over the literal,
    would be a chain of selects over all n inputs: n^2 work a pass, every input live
    throughout, and LLVM's register allocation superlinear in the chain.)"""
    em.result_buffer(g, n)
    for p, x in enumerate(n.inputs):
        idx = tuple(em.iconst(int(i)) for i in np.unravel_index(p, n.shape))
        em.store(g, n, idx, em.elem(g, x, ()))


PACK = tensor(
    "pack", arity=None, infer=_pack_infer, eval=_pack_eval, sympy=numpy_form(_pack_eval),
    vjp=_pack_vjp, mask=moved_mask(_pack_vjp), jvp=_pack_jvp, lower=_pack_lower,
    example=Example(((), (), (), ()), (ANY, ANY, ANY, ANY), {"shape": (2, 2)}),
    doc="an array literal: its scalar inputs, row-major, as a vector or matrix of "
        "`shape` (any number of inputs)")


OPS = REDUCTIONS + BACKWARD + SOFTMAX + [MATMUL, PACK]
