"""Views: ops that read elements of their input at other positions. Code generation
maps the index instead of copying, so a view is never stored; how often it reads its
input is up to its readers (single_pass is false)."""
from __future__ import annotations

import numpy as np

from lossc.ir.dtypes import INT, REAL
from lossc.ir.ops.base import ANY, Example, OpDef, linear_jvp, moved_mask, numpy_form


def view(name, arity, *, names=(), stage="any", vjp=None, mask=None, jvp=linear_jvp,
         **facts) -> OpDef:
    """A view: linear in its first argument (the others are indices), so its forward
    rule is itself applied to the tangent, unless `jvp` says otherwise."""
    return OpDef(name, arity, "view", names=names, axis=False, reduction=False,
                 stage=stage, differentiable=True, vjp=vjp,
                 mask=mask if mask is not None or vjp is None else moved_mask(vjp),
                 jvp=jvp, single_pass=False, foldable=False, **facts)


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


def _transpose_vjp(b, g, out, x):
    return (b.emit("transpose", (g,)),)


def _take_infer(a, x, i):
    assert i.dtype == INT and i.shape == ()
    return tuple(s for k, s in enumerate(x.shape) if k != a["axis"]), x.dtype


def _take_lower(em, g, n, idx):
    axis = n.attr("axis")
    i = em.elem(g, n.inputs[1], ())
    return em.elem(g, n.inputs[0], tuple(idx[:axis]) + (i,) + tuple(idx[axis:]))


def _take_vjp(b, g, out, x, i):
    return b.emit("put", (g, i), axis=out.attr("axis"), size=x.shape[out.attr("axis")]), None


def _take_form(s, n, x, i):
    """x[i]; an index from data by cases over the positions it can take (it is checked
    at run time)."""
    axis = n.attr("axis")
    k = s.index_value(i)
    if k is not None:
        return np.asarray(np.take(x, k, axis=axis), dtype=object)
    i = i.item()
    picks = np.moveaxis(x, axis, -1)
    out = np.empty(picks.shape[:-1], dtype=object)
    for idx in np.ndindex(*out.shape):
        out[idx] = s.sp.Piecewise(*[(v, s.sp.Eq(i, k)) for k, v in enumerate(picks[idx])])
    return out


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


def _put_form(s, n, g, i):
    """Zeros with g at the index: by cases for an index from data."""
    g, k, i = np.asarray(g, dtype=object), s.index_value(i), i.item()
    zeros = np.full(g.shape, s.sp.Integer(0), dtype=object)

    def at(p: int) -> np.ndarray:
        if k is not None:
            return g if p == k else zeros
        return s.apply(lambda v: s.sp.Piecewise((v, s.sp.Eq(i, p)), (0, True)), g)
    return np.stack([at(p) for p in range(n.attr("size"))], axis=n.attr("axis"))


def _gather_infer(a, x, i):
    assert i.dtype == INT and i.rank == 1 and x.rank >= 1
    shape = list(x.shape)
    shape[a["axis"]] = i.shape[0]
    return tuple(shape), x.dtype


def _gather_eval(a, x, i):
    return np.take(np.asarray(x), np.asarray(i, dtype=np.int64), axis=a["axis"])


def _gather_lower(em, g, n, idx):
    axis = n.attr("axis")
    i = em.elem(g, n.inputs[1], (idx[axis],))
    return em.elem(g, n.inputs[0], tuple(idx[:axis]) + (i,) + tuple(idx[axis + 1:]))


def _gather_vjp(b, g, out, x, i):
    axis = out.attr("axis")
    return b.emit("scatter", (g, i), axis=axis, size=x.shape[axis]), None


def _by_cases(s, value_at, i, size):
    """A value chosen by a data-dependent index i (0..size-1), as cases."""
    return s.sp.Piecewise(*[(value_at(k), s.sp.Eq(i, k)) for k in range(size)])


def _gather_form(s, n, x, i):
    axis = n.attr("axis")
    x = np.moveaxis(np.asarray(x, dtype=object), axis, -1)
    out = np.empty(x.shape[:-1] + (len(i),), dtype=object)
    for idx in np.ndindex(*out.shape):
        row, l = x[idx[:-1]], idx[-1]
        k = s.index_value(np.asarray(i[l]))
        out[idx] = row[k] if k is not None else _by_cases(s, lambda k: row[k], i[l], len(row))
    return np.moveaxis(out, -1, axis)


def _scatter_infer(a, g, i):
    shape = list(g.shape)
    shape[a["axis"]] = a["size"]
    return tuple(shape), REAL


def _scatter_eval(a, g, i):
    g = np.moveaxis(np.asarray(g, dtype=np.float64), a["axis"], 0)
    out = np.zeros((a["size"],) + g.shape[1:])
    np.add.at(out, np.asarray(i, dtype=np.int64), g)
    return np.moveaxis(out, 0, a["axis"])


def _scatter_lower(em, g, n, idx):
    """Element p along the axis: the sum of g's elements whose index is p."""
    axis = n.attr("axis")
    grad, i = n.inputs
    total = em.fconst(0)
    for l in range(i.shape[0]):
        hit = em.icmp("==", idx[axis], em.elem(g, i, (em.iconst(l),)))
        v = em.elem(g, grad, tuple(idx[:axis]) + (em.iconst(l),) + tuple(idx[axis + 1:]))
        total = em.fadd(total, em.select(hit, v, em.fconst(0)))
    return total


def _scatter_form(s, n, g, i):
    axis, size = n.attr("axis"), n.attr("size")
    g = np.moveaxis(np.asarray(g, dtype=object), axis, 0)
    out = np.empty((size,) + g.shape[1:], dtype=object)
    for idx in np.ndindex(*out.shape):
        terms = []
        for l in range(len(i)):
            k = s.index_value(np.asarray(i[l]))
            v = g[(l,) + idx[1:]]
            terms.append((v if k == idx[0] else s.sp.Integer(0)) if k is not None
                         else s.sp.Piecewise((v, s.sp.Eq(i[l], idx[0])), (0, True)))
        out[idx] = s.sp.Add(*terms)
    return np.moveaxis(out, 0, axis)


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


def _pad_form(s, n, g):
    axis, start = n.attr("axis"), n.attr("start")
    shape = list(g.shape)
    shape[axis] = n.attr("size")
    out = np.full(shape, s.sp.Integer(0), dtype=object)
    where = [slice(None)] * len(shape)
    where[axis] = slice(start, start + g.shape[axis])
    out[tuple(where)] = g
    return out


_INDEXED = "an int index argument: checked through models that index (the sweep's gathers)"


OPS = [
    view("broadcast", 1, infer=_broadcast_infer, eval=_broadcast_eval,
         sympy=numpy_form(_broadcast_eval), vjp=_broadcast_vjp,
         lower=lambda em, g, n, idx: em.elem(g, n.inputs[0],
                                             tuple(idx[d] for d in n.attr("dims"))),
         example=Example(((3,),), (ANY,), {"shape": (3, 2), "dims": (0,)}),
         doc="copies along new axes; dims[i] is the output axis of input axis i"),
    view("transpose", 1, names=("transpose",), infer=lambda a, x: (x.shape[::-1], x.dtype),
         eval=lambda a, x: np.transpose(x), sympy=numpy_form(lambda a, x: np.transpose(x)),
         vjp=_transpose_vjp,
         lower=lambda em, g, n, idx: em.elem(g, n.inputs[0], tuple(reversed(idx))),
         example=Example(((2, 3),), (ANY,))),
    view("take", 2, infer=_take_infer, eval=lambda a, x, i: np.take(x, int(i), axis=a["axis"]),
         sympy=_take_form, vjp=_take_vjp, lower=_take_lower, example=_INDEXED,
         sympy_operands=lambda n: len(n.inputs) if n.inputs[1].op == "iconst"
         else 2 * n.inputs[0].shape[n.attr("axis")],     # (by cases)
         doc="x[i] along an axis; a data-dependent i is range-checked at run time"),
    view("put", 2, stage="backward", infer=_put_infer, eval=_put_eval, sympy=_put_form,
         lower=_put_lower, example=_INDEXED,
         doc="backward-only: zeros with g at index i along an axis (the adjoint of take)"),
    view("gather", 2, infer=_gather_infer, eval=_gather_eval, sympy=_gather_form,
         vjp=_gather_vjp, lower=_gather_lower, example=_INDEXED,
         sympy_operands=lambda n: 2 * n.inputs[0].shape[n.attr("axis")],
         doc="x[i] for a vector i of indices (an int vector input): the axis becomes i's; "
             "each index is range-checked at run time"),
    view("scatter", 2, stage="backward", infer=_scatter_infer, eval=_scatter_eval,
         sympy=_scatter_form, lower=_scatter_lower, example=_INDEXED,
         sympy_operands=lambda n: 2 * n.inputs[1].shape[0],
         doc="backward-only: zeros of `size` along an axis with g's elements added at "
             "their indices (the adjoint of gather; repeated indices add up)"),
    view("slice", 1, infer=_slice_infer, eval=_slice_eval, sympy=numpy_form(_slice_eval),
         vjp=_slice_vjp, lower=_slice_lower,
         example=Example(((2, 5),), (ANY,), {"axis": 1, "start": 1, "stop": 4}),
         doc="x[start:stop] along an axis (constant bounds)"),
    view("pad", 1, stage="backward", infer=_pad_infer, eval=_pad_eval, sympy=_pad_form,
         lower=_pad_lower, example=Example(((2,),), (ANY,), {"axis": 0, "start": 1, "size": 4}),
         doc="backward-only: zeros with g placed at start along an axis (the adjoint of "
             "slice)"),
]
