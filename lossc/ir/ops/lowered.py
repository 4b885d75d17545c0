"""The ops of the lower pass (passes/lower.py): each a fusion code generation takes,
made an op of its own so that `lossc graph --after lower` shows it, the verifier checks
its operands and the reference interpreter evaluates it. They appear only after
autodiff (stage "lower"): no derivative rules.

    row_dot(w, x)            sum(w * x) along an input's row (codegen/rows.py)
    row_matvec(W, x)         W @ x along an input's row (codegen/rows.py)
    block_matmul(W, x),      W @ x or x @ A of an input x, computed for a block of
    block_matmul(x, A)       samples at once as one matrix product (codegen/gemm.py)
    outer_grad(u, v) kind=   a per-sample gradient outer(u, v) (u * v for a scalar u),
                             accumulated over the batch by a kernel (codegen/outer.py):
                             kind=rows reads v, an input, along its rows; kind=block
                             stages both factors
    logsumexp_softmax(z)     [softmax(z), logsumexp(z)] in one buffer, from one set of
                             exponentials (codegen/softmax.py); views read each part
    exp_neg_abs(z)           exp(-|z|), shared by sigmoid_e, softplus_e, log_sigmoid_e
                             and dsigmoid_e of z (or of -z)
    expm1_2abs(z)            expm1(2|z|), shared by tanh_e and sech2_e of z (or of -z)
    row_scatter(g0, i0, ...) size=
                             a row-sparse parameter's per-sample gradient: zeros of
                             `size` rows with each g_k added at the rows its i_k names
                             (an index, or a vector of them), accumulated over the batch
                             into the touched rows only (codegen/sparse.py)
"""
from __future__ import annotations

import numpy as np

from lossc.ir.dtypes import INT, REAL
from lossc.ir.ops.base import ANY, Example, OpDef, numpy_form
from lossc.ir.ops.elementwise import (dsigmoid_with, exp_neg_abs, log_sigmoid_with,
                                      negative_part, positive_part, sech2_with,
                                      sigmoid_with, softplus_with, tanh_with)
from lossc.ir.ops.tensors import lse_eval

_MADE_BY_LOWER = ("made by the lower pass where its operands fit a kernel: "
                  "tests/test_lower.py compares its code with the plain code's")
E_DOMAIN = (0.05, 0.9)   # e = exp(-|x|) lies in (0, 1]
EXPM1_2ABS_CLAMP = 354.0  # codegen/vmath.py expm1_2abs_clamp, float64's (these evals')


def lowered(name, arity, kind, *, single_pass=False, **facts) -> OpDef:
    return OpDef(name, arity, kind, names=(), axis=False, reduction=False, stage="lower",
                 differentiable=True, vjp=None, mask=None, jvp=None,
                 single_pass=single_pass,
                 foldable=kind == "elem", **facts)


def _row_input(x) -> bool:
    """A real input vector, read along its rows (one row a sample)."""
    return x.op == "input" and x.rank == 1 and x.dtype == REAL


def _row_dot_infer(a, w, x):
    assert _row_input(x) and w.shape == x.shape and w.dtype == REAL, "row_dot(w, x)"
    return (), REAL


def _row_matvec_infer(a, w, x):
    assert (_row_input(x) and w.rank == 2 and w.shape[1] == x.shape[0]
            and w.dtype == REAL), "row_matvec(W, x)"
    return (w.shape[0],), REAL


def _block_matmul_infer(a, p, q):
    """W @ x (W a matrix, x an input row) or x @ A: a vector per sample."""
    if _row_input(q):
        assert p.rank == 2 and p.shape[1] == q.shape[0] and p.dtype == REAL, \
            "block_matmul(W, x)"
        return (p.shape[0],), REAL
    assert (_row_input(p) and q.rank == 2 and q.shape[0] == p.shape[0]
            and q.dtype == REAL), "block_matmul(x, A)"
    return (q.shape[1],), REAL


def _outer_infer(a, u, v):
    assert a["kind"] in ("rows", "block") and u.rank <= 1 and v.rank == 1, "outer_grad"
    assert a["kind"] == "block" or _row_input(v), "outer_grad kind=rows of an input"
    return u.shape + v.shape, REAL


def _outer_lower(em, g, n, idx):
    """An element, where one is read (an outer-product gradient is otherwise added by
    its kernel, codegen/outer.py)."""
    u, v = n.inputs
    return em.fmul(em.elem(g, u, tuple(idx[:u.rank])), em.elem(g, v, tuple(idx[-1:])))


def _lse_softmax_infer(a, z):
    assert z.rank == 1 and z.dtype == REAL, "logsumexp_softmax(z) of a vector"
    return (z.size + 1,), REAL


def _lse_softmax_eval(a, z):
    """softmax(z) as exp(z - m) * (1 / s) (s = sum(exp(z - m)), m the max or 0 where it
    is infinite), then logsumexp(z) = m + log(s): the kernel's way."""
    z = np.asarray(z, dtype=np.float64)
    lse = lse_eval({"axes": (0,)}, z)
    m = np.max(z)
    m = m if np.isfinite(m) else 0.0
    e = np.exp(z - m)
    return np.concatenate([e * (1 / np.sum(e)), [lse]])


def _lse_softmax_form(s, n, z):
    total = s.sp.Add(*[s.sp.exp(t) for t in z])
    return np.array([s.sp.exp(t) / total for t in z] + [s.sp.log(total)], dtype=object)


def _row_pairs(inputs) -> list:
    """row_scatter's (g, i) pairs."""
    return list(zip(inputs[0::2], inputs[1::2]))


def _row_scatter_infer(a, *xs):
    assert xs and len(xs) % 2 == 0, "row_scatter(g0, i0, g1, i1, ...)"
    rows = None
    for g, i in _row_pairs(xs):
        assert i.dtype == INT and i.rank <= 1 and g.dtype == REAL, "row_scatter's pairs"
        row = g.shape if i.rank == 0 else g.shape[1:]
        assert i.rank == 0 or g.shape[0] == i.shape[0], "one row of g per index"
        assert rows in (None, row), "row_scatter's rows differ in shape"
        rows = row
    return (a["size"],) + rows, REAL


def _row_scatter_eval(a, *xs):
    """The dense gradient: each pair's rows added where its indices say (repeated
    indices add up)."""
    out = None
    for g, i in _row_pairs(xs):
        i = np.asarray(i, dtype=np.int64)
        g = np.asarray(g, dtype=np.float64)
        if out is None:
            out = np.zeros((a["size"],) + (g.shape if i.ndim == 0 else g.shape[1:]))
        np.add.at(out, i.reshape(-1), g.reshape((-1,) + out.shape[1:]))
    return out


def _row_scatter_form(s, n, *xs):
    """The sum of each pair's rows placed by cases on their indices."""
    total = None
    for g, i in _row_pairs(xs):
        g, i = np.asarray(g, dtype=object), np.asarray(i, dtype=object)
        if i.ndim == 0:
            g, i = g[None], i[None]
        out = np.full((n.attr("size"),) + g.shape[1:], s.sp.Integer(0), dtype=object)
        for l in range(len(i)):
            k = s.index_value(np.asarray(i[l]))
            for p in range(n.attr("size")):
                if k is not None:
                    if k == p:
                        out[p] = out[p] + g[l]
                    continue
                out[p] = out[p] + s.apply(
                    lambda v: s.sp.Piecewise((v, s.sp.Eq(i[l], p)), (0, True)), g[l])
        total = out if total is None else total + out
    return total


def _row_scatter_lower(em, g, n, idx):
    """An element, where one is read: the sum of the rows added at its row (the
    gradient is otherwise accumulated into the touched rows, codegen/sparse.py)."""
    total = em.fconst(0)
    for grad, i in _row_pairs(n.inputs):
        for l in range(1 if i.rank == 0 else i.shape[0]):
            at = em.elem(g, i, () if i.rank == 0 else (em.iconst(l),))
            v = em.elem(g, grad, tuple(idx[1:]) if i.rank == 0
                        else (em.iconst(l),) + tuple(idx[1:]))
            total = em.fadd(total, em.select(em.icmp("==", idx[0], at), v, em.fconst(0)))
    return total


def _e_form(f):
    """The sympy form of an `_e` op: its function of x, given its exponential e of x
    (exp_neg_abs or expm1_2abs)."""
    return lambda s, n, x, e: f(s.sp, x, e)


OPS = [
    lowered("row_dot", 2, "tensor", single_pass=True, infer=_row_dot_infer,
            eval=lambda a, w, x: np.sum(np.multiply(w, x)),
            sympy=lambda s, n, w, x: np.array(s.sp.Add(*np.multiply(w, x).reshape(-1)),
                                              dtype=object),
            sympy_operands=lambda n: 2 * n.inputs[1].size,
            lower=lambda em, g, n: em.row_dot(g, n), example=_MADE_BY_LOWER,
            doc="sum(w * x), x an input read along its rows: returns its value"),
    lowered("row_matvec", 2, "tensor", infer=_row_matvec_infer,
            eval=lambda a, w, x: np.matmul(w, x),
            sympy=numpy_form(lambda a, w, x: np.matmul(w, x)),
            sympy_operands=lambda n: 2 * n.inputs[1].size,
            lower=lambda em, g, n: em.row_matvec(g, n), example=_MADE_BY_LOWER,
            doc="W @ x, x an input read along its rows"),
    lowered("block_matmul", 2, "tensor", infer=_block_matmul_infer,
            eval=lambda a, p, q: np.matmul(p, q),
            sympy=numpy_form(lambda a, p, q: np.matmul(p, q)),
            sympy_operands=lambda n: 2 * next(i.size for i in n.inputs if i.rank == 1),
            lower=lambda em, g, n: em.block_matmul(g, n), example=_MADE_BY_LOWER,
            doc="W @ x or x @ A, x an input: a block of samples as one matrix product"),
    lowered("outer_grad", 2, "view", infer=_outer_infer,
            eval=lambda a, u, v: np.multiply.outer(u, v),
            sympy=numpy_form(lambda a, u, v: np.multiply.outer(u, v)),
            lower=_outer_lower, example=_MADE_BY_LOWER,
            doc="a per-sample gradient outer(u, v), added over the batch by a kernel"),
    lowered("logsumexp_softmax", 1, "tensor", infer=_lse_softmax_infer,
            eval=_lse_softmax_eval, sympy=_lse_softmax_form,
            sympy_operands=lambda n: n.inputs[0].size + 1,
            lower=lambda em, g, n: em.logsumexp_softmax(g, n), example=_MADE_BY_LOWER,
            doc="softmax(z) in elements 0..n-1 and logsumexp(z) in element n"),
    lowered("exp_neg_abs", 1, "elem", single_pass=True, infer=lambda a, z: (z.shape, REAL),
            eval=lambda a, z: np.exp(-np.abs(np.asarray(z, dtype=np.float64))),
            sympy=lambda s, n, z: s.sp.exp(-s.sp.Abs(z)),
            lower=lambda em, g, n, z: exp_neg_abs(em, z),
            example=Example(((3,),), (ANY,)), doc="exp(-|z|)"),
    lowered("sigmoid_e", 2, "elem", single_pass=True, infer=lambda a, x, e: (x.shape, REAL),
            eval=lambda a, x, e: np.where(np.asarray(x) >= 0, 1.0, e) / (1 + np.asarray(e)),
            sympy=_e_form(lambda sp, x, e: sp.Piecewise((1, x >= 0), (e, True)) / (1 + e)),
            lower=lambda em, g, n, x, e: sigmoid_with(em, x, e),
            example=Example(((3,), (3,)), (ANY, E_DOMAIN)), doc="sigmoid(x), e = exp(-|x|)"),
    lowered("softplus_e", 2, "elem", single_pass=True, infer=lambda a, x, e: (x.shape, REAL),
            eval=lambda a, x, e: np.maximum(x, 0) + np.log1p(e),
            sympy=_e_form(lambda sp, x, e: sp.Max(x, 0) + sp.log(1 + e)),
            lower=lambda em, g, n, x, e: softplus_with(em, positive_part(em, x), e),
            example=Example(((3,), (3,)), (ANY, E_DOMAIN)), doc="softplus(x), e = exp(-|x|)"),
    lowered("log_sigmoid_e", 2, "elem", single_pass=True,
            infer=lambda a, x, e: (x.shape, REAL),
            eval=lambda a, x, e: np.minimum(x, 0) - np.log1p(e),
            sympy=_e_form(lambda sp, x, e: sp.Min(x, 0) - sp.log(1 + e)),
            lower=lambda em, g, n, x, e: log_sigmoid_with(em, negative_part(em, x), e),
            example=Example(((3,), (3,)), (ANY, E_DOMAIN)),
            doc="log_sigmoid(x), e = exp(-|x|)"),
    lowered("dsigmoid_e", 2, "elem", single_pass=True,
            infer=lambda a, x, e: (x.shape, REAL),
            eval=lambda a, x, e: np.asarray(e) / (1 + np.asarray(e)) ** 2,
            sympy=_e_form(lambda sp, x, e: e / (1 + e) ** 2),
            lower=lambda em, g, n, x, e: dsigmoid_with(em, e),
            example=Example(((3,), (3,)), (ANY, E_DOMAIN)),
            doc="dsigmoid(x) = sigmoid(x) sigmoid(-x), e = exp(-|x|)"),
    lowered("expm1_2abs", 1, "elem", single_pass=True, infer=lambda a, z: (z.shape, REAL),
            eval=lambda a, z: np.expm1(2 * np.minimum(np.abs(np.asarray(z, np.float64)),
                                                      EXPM1_2ABS_CLAMP)),
            sympy=lambda s, n, z: s.sp.exp(2 * s.sp.Abs(z)) - 1,
            lower=lambda em, g, n, z: em.math("expm1_2abs", z),
            example=Example(((3,),), (ANY,)), doc="expm1(2|z|) (|z| at most 354)"),
    lowered("tanh_e", 2, "elem", single_pass=True, infer=lambda a, x, e: (x.shape, REAL),
            eval=lambda a, x, e: np.sign(x) * np.asarray(e) / (np.asarray(e) + 2),
            sympy=_e_form(lambda sp, x, e: sp.sign(x) * e / (e + 2)),
            lower=lambda em, g, n, x, e: tanh_with(em, x, e),
            example=Example(((3,), (3,)), (ANY, E_DOMAIN)),
            doc="tanh(x), e = expm1(2|x|)"),
    lowered("sech2_e", 2, "elem", single_pass=True, infer=lambda a, x, e: (x.shape, REAL),
            eval=lambda a, x, e: np.where(np.abs(x) > EXPM1_2ABS_CLAMP, 0.0,
                                          4 * (1 + np.asarray(e)) / (np.asarray(e) + 2) ** 2),
            sympy=_e_form(lambda sp, x, e: 4 * (1 + e) / (e + 2) ** 2),
            lower=lambda em, g, n, x, e: sech2_with(em, x, e),
            example=Example(((3,), (3,)), (ANY, E_DOMAIN)),
            doc="sech(x)^2, e = expm1(2|x|)"),
    lowered("row_scatter", None, "view", infer=_row_scatter_infer,
            eval=_row_scatter_eval, sympy=_row_scatter_form, lower=_row_scatter_lower,
            sympy_operands=lambda n: 2 * sum(1 if i.rank == 0 else i.shape[0]
                                             for i in n.inputs[1::2]),
            example=_MADE_BY_LOWER,
            doc="a row-sparse parameter's per-sample gradient: g_k added at the rows i_k "
                "names; accumulated into the touched rows only"),
]
