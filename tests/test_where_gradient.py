"""LANGUAGE.md "where and its gradient": the branch not chosen contributes nothing to
the gradient, even where its own derivative is infinite or NaN (passes/autodiff.py's
masked adjoints), while IEEE arithmetic stands everywhere else.

Each case is checked compiled (float64 and float32, one lane and AVX-512's lanes) and
in the reference interpreter (the graph after `dce`, sample by sample)."""
import dataclasses

import numpy as np
import pytest

import lossc
from lossc.compiler import compile_source
from lossc.ir.evaluate import evaluate

nan, inf = np.nan, np.inf
BITS = (64, 512)


def _interpreted(src, theta, data):
    """(objective, gradients) from the reference interpreter: the per-sample loss and
    gradient of the graph before hoisting, averaged over the batch."""
    c = compile_source(src, until="dce")
    g = c.graph
    names = [s.name for s in g.inputs]
    B = len(data[names[0]]) if names else 1
    rows = [{k: data[k][i] for k in names} for i in range(B)]
    hypers = {h.name: h.default for h in g.hypers}
    with np.errstate(all="ignore"):
        value = np.mean([evaluate(g, theta, r, hypers, "loss") for r in rows])
        grads = {p.name: np.mean([evaluate(g, theta, r, hypers, "grad." + p.name)
                                  for r in rows], axis=0) for p in g.params}
    return value, grads


def _same(got, want, dtype, what):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    # NaN where NaN is wanted, inf where inf is: assert_allclose compares them exactly
    np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == "float64" else 2e-6,
                               atol=0, err_msg=what)


def check(src, theta, want_value, want_grads, data=None):
    data = data or {}
    theta = {k: np.asarray(v, dtype=float) for k, v in theta.items()}
    value, grads = _interpreted(src, theta, data)
    _same(value, want_value, "float64", "interpreter: value")
    for k, w in want_grads.items():
        _same(grads[k], w, "float64", f"interpreter: grad {k}")
    for bits in BITS:
        options = dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)
        for dtype in ("float64", "float32"):
            m = lossc.compile(src, dtype=dtype, cache=False, options=options)
            with np.errstate(all="ignore"):
                value, grads = m.value_and_grad(theta, **data)
            what = f"{dtype}, {bits} bits"
            _same(value, want_value, dtype, f"{what}: value")
            for k, w in want_grads.items():
                _same(grads[k], w, dtype, f"{what}: grad {k}")


# ---------------------------------------------------------------- the contract's examples

SQRT = "param p\nloss = where(p > 0, sqrt(p), 0)\n"
SINC = "param q\nloss = where(q != 0, sin(q) / q, 1)\n"


@pytest.mark.parametrize("p, value, grad", [(-1.0, 0.0, 0.0), (0.0, 0.0, 0.0),
                                            (4.0, 2.0, 0.25), (-inf, 0.0, 0.0)])
def test_sqrt_of_a_negative_number_in_the_branch_not_chosen(p, value, grad):
    check(SQRT, {"p": p}, value, {"p": grad})


@pytest.mark.parametrize("q", [0.0, 0.5, -2.0])
def test_sin_q_over_q_at_zero(q):
    value = np.sin(q) / q if q else 1.0
    grad = (q * np.cos(q) - np.sin(q)) / q ** 2 if q else 0.0
    check(SINC, {"q": q}, value, {"q": grad})


# ---------------------------------------------------------------- IEEE arithmetic stays

def test_ieee_arithmetic_stands_outside_the_branch_not_chosen():
    # sqrt'(0) = inf; a chosen branch keeps its infinity
    check("param p\nloss = sqrt(p)\n", {"p": 0.0}, 0.0, {"p": inf})
    check("param p\nloss = where(p >= 0, sqrt(p), 0)\n", {"p": 0.0}, 0.0, {"p": inf})
    # 0 * sqrt(p) at 0: 0 * inf
    check("param p\nloss = 0 * sqrt(p)\n", {"p": 0.0}, 0.0, {"p": nan})
    # the value reached along a path without a where: NaN as IEEE says
    check("param p\nloss = where(p > 0, sqrt(p), 0) + 0 * sqrt(p)\n", {"p": -1.0}, nan,
          {"p": nan})
    # NaN in the branch chosen
    check("param p\nloss = where(p < 0, sqrt(p), 0)\n", {"p": -1.0}, nan, {"p": nan})


# ---------------------------------------------------------------- combinations

NESTED = "param p\nloss = where(p > 0, where(p > 1, log(p - 1), sqrt(p)), -p)\n"


@pytest.mark.parametrize("p, value, grad", [
    (-1.0, 1.0, -1.0),                  # log(-2) and sqrt(-1) both untaken
    (0.25, 0.5, 1.0),                   # log(-0.75) untaken
    (1.0, 1.0, 0.5),                    # log(0) = -inf, its derivative inf: untaken
    (3.0, np.log(2.0), 0.5)])
def test_nested_where(p, value, grad):
    check(NESTED, {"p": p}, value, {"p": grad})


def test_a_where_whose_branches_share_a_value():
    # r = 1/p is used by both branches and the condition; at p = 0 the branch chosen
    # does not use it
    src = "param p\nr = 1 / p\nloss = where(p == 0, 2 * p, r * r)\n"
    check(src, {"p": 0.0}, 0.0, {"p": 2.0})
    check(src, {"p": 2.0}, 0.25, {"p": -0.25})


def test_where_inside_a_sum_over_a_vector_parameter():
    src = "param v[5]\nloss = sum(where(v > 0, sqrt(v) + log(v), v ^ 2))\n"
    v = np.array([-1.0, 0.0, 4.0, -9.0, 1.0])
    value = (1 + 0 + (2 + np.log(4)) + 81 + 1)
    grad = np.array([-2.0, 0.0, 0.25 + 0.25, -18.0, 0.5 + 1.0])
    check(src, {"v": v}, value, {"v": grad})


def test_a_mask_reaching_a_scalar_parameter_through_a_broadcast():
    src = "dim N = 4\ninput x[N]\nparam p\nloss = sum(where(x > 0, sqrt(p) * x, 0))\n"
    # no element chosen: sqrt(-1)'s NaN derivative never reaches p
    check(src, {"p": -1.0}, 0.0, {"p": 0.0},
          data={"x": np.array([[-1.0, -2.0, 0.0, -3.0], [-1.0, 0.0, 0.0, -0.5]])})
    # some chosen: the mean of 0.5 / sqrt(p) times the chosen x's sum
    x = np.array([[-1.0, 2.0, 0.0, 3.0], [1.0, -1.0, -1.0, -1.0]])
    check(src, {"p": 4.0}, np.mean([10.0, 2.0]), {"p": np.mean([5 * 0.25, 0.25])},
          data={"x": x})
    # chosen elements with a NaN: NaN, as IEEE says
    check(src, {"p": -1.0}, nan, {"p": nan}, data={"x": x})


def test_a_vector_parameter_broadcast_over_a_matrix_input():
    src = ("dim M = 3\ndim N = 2\ninput X[M, N]\nparam v[N]\n"
           "loss = sum(where(X > 0, log(v) * X, 0))\n")
    X = np.array([[[1.0, -1.0], [2.0, -3.0], [0.0, -1.0]]])      # column 1 never chosen
    v = np.array([2.0, -1.0])                                    # log(-1) = NaN
    check(src, {"v": v}, 3 * np.log(2.0), {"v": [3 / 2.0, 0.0]}, data={"X": X})


def test_untaken_branches_through_reductions():
    v = np.array([1.0, -2.0, 3.0])
    for f in ("sum(sqrt(v))", "prod(sqrt(v))", "logsumexp(log(v))", "norm(log(v))",
              "max(sqrt(v))", "min(log(v))"):
        src = f"param v[3]\nparam s\nloss = where(s > 0, {f}, s)\n"
        check(src, {"v": v, "s": -1.0}, -1.0, {"v": np.zeros(3), "s": 1.0})


def test_untaken_branches_through_softmax_and_log_softmax():
    # element 1 is never chosen; its log_softmax's derivative still reaches v through
    # the chosen ones (every element depends on every other), so v's gradient is exact
    v = np.array([0.5, -1.0, 2.0])
    c = np.array([1.0, 0.0, 1.0])
    src = ("param v[3]\ninput c[3]\nloss = sum(where(c > 0, log_softmax(v), 0)) "
           "+ sum(where(c > 0, softmax(v), 0))\n")
    s = np.exp(v - np.log(np.sum(np.exp(v))))
    ls = np.log(s)
    jac_ls = np.eye(3) - s[None, :]                 # d log_softmax_i / d v_j
    jac_s = np.diag(s) - np.outer(s, s)             # d softmax_i / d v_j
    want = c @ jac_ls + c @ jac_s
    check(src, {"v": v}, np.sum(c * ls) + np.sum(c * s), {"v": want},
          data={"c": c[None, :]})
    # nothing chosen, and a NaN in the branch: gradient 0
    src = "param v[3]\nparam s\nloss = where(s > 0, sum(softmax(log(v))), s)\n"
    check(src, {"v": [1.0, -1.0, 2.0], "s": -1.0}, -1.0, {"v": np.zeros(3), "s": 1.0})


def test_untaken_rows_of_matrix_products():
    # z = log(A) @ v: row 1 of A is negative (NaN logs) and never chosen
    src = ("dim M = 2\ndim K = 3\ninput A[M, K]\ninput u[M]\nparam v[K]\nparam W[M, K]\n"
           "z = log(A) @ v + sqrt(W) @ v\n"
           "loss = sum(where(u > 0, z, 0))\n")
    A = np.array([[[1.0, 2.0, 4.0], [-1.0, -2.0, -3.0]]])
    u = np.array([[1.0, -1.0]])
    v = np.array([0.5, -1.0, 2.0])
    W = np.array([[1.0, 4.0, 9.0], [-1.0, -4.0, -9.0]])          # sqrt: NaN in row 1
    z0 = np.log(A[0, 0]) @ v + np.sqrt(W[0]) @ v
    grad_v = np.log(A[0, 0]) + np.sqrt(W[0])
    grad_W = np.array([0.5 / np.sqrt(W[0]) * v, np.zeros(3)])
    check(src, {"v": v, "W": W}, z0, {"v": grad_v, "W": grad_W},
          data={"A": A, "u": u})
    # x @ B: the columns of B no chosen element uses
    src = ("dim K = 2\ndim N = 3\ninput u[N]\nparam x[K]\nparam B[K, N]\n"
           "loss = sum(where(u > 0, x @ log(B), 0))\n")
    B = np.array([[1.0, -1.0, 2.0], [3.0, -1.0, 4.0]])             # column 1: NaN logs
    x = np.array([2.0, -1.0])
    u = np.array([[1.0, 0.0, 1.0]])
    chosen = np.log(B[:, [0, 2]])
    grad_B = np.zeros((2, 3))
    grad_B[:, [0, 2]] = x[:, None] / B[:, [0, 2]]
    check(src, {"x": x, "B": B}, np.sum(x @ chosen), {"x": chosen.sum(axis=1), "B": grad_B},
          data={"u": u})


def test_matrix_times_matrix_with_untaken_rows_and_columns():
    src = ("dim M = 2\ndim K = 2\ndim N = 2\ninput C[M, N]\nparam A[M, K]\nparam B[K, N]\n"
           "loss = sum(where(C > 0, sqrt(A) @ sqrt(B), 0))\n")
    A = np.array([[1.0, 4.0], [-1.0, -1.0]])         # row 1: NaN, never chosen
    B = np.array([[9.0, -1.0], [16.0, -1.0]])        # column 1: NaN, never chosen
    C = np.array([[[1.0, 0.0], [0.0, 0.0]]])         # only (0, 0) chosen
    sa, sb = np.sqrt(A[0]), np.sqrt(B[:, 0])
    grad_A = np.zeros((2, 2))
    grad_A[0] = sb * 0.5 / sa
    grad_B = np.zeros((2, 2))
    grad_B[:, 0] = sa * 0.5 / sb
    check(src, {"A": A, "B": B}, sa @ sb, {"A": grad_A, "B": grad_B},
          data={"C": C})


def test_untaken_branches_through_indexing_and_slices():
    src = ("dim N = 4\ninput k: int\ninput x\nparam v[N]\n"
           "loss = where(x > 0, sqrt(v[k]) + sum(log(v[1:3])), x)\n")
    v = np.array([4.0, -1.0, -2.0, 9.0])
    data = {"k": np.array([1, 3]), "x": np.array([-1.0, 2.0])}
    # sample 0: nothing chosen (x); sample 1: sqrt(9) + log(-1) + log(-2) = NaN, with
    # the finite derivatives 1/v of log (IEEE: the value's NaN is not the derivative's)
    check(src, {"v": v}, nan, {"v": [0.0, -1 / 2, -0.5 / 2, 0.5 / 3 / 2]},
          data=data)
    data = {"k": np.array([1, 0]), "x": np.array([-1.0, -2.0])}
    check(src, {"v": v}, -1.5, {"v": np.zeros(4)}, data=data)
    v = np.array([4.0, 1.0, 2.0, -9.0])
    data = {"k": np.array([3, 0]), "x": np.array([-1.0, 2.0])}
    want = np.array([0.25, 1.0, 0.5, 0.0]) / 2
    check(src, {"v": v}, (-1.0 + 2.0 + np.log(2.0)) / 2, {"v": want},
          data=data)


def test_where_over_a_batch_in_lanes():
    """Samples differ in the branch they take: each lane masks its own."""
    src = "input x\nparam p = 1\nloss = where(x > 0, sqrt(p * x), log(-p * x))\n"
    x = np.array([1.0, -2.0, 4.0, -0.5, 9.0, 3.0, -1.0, 2.0, -8.0, 1.0, 0.0])
    p = 2.0
    with np.errstate(all="ignore"):
        per_value = np.where(x > 0, np.sqrt(p * x), np.log(-p * x))
        per_grad = np.where(x > 0, 0.5 * x / np.sqrt(p * x), 1 / p)
    # x = 0 takes log(0): -inf, with derivative 1/p (finite: -p*x's derivative is 0...)
    per_grad[x == 0] = nan            # d/dp log(-p * 0) = 0 * (1 / 0): IEEE's NaN
    check(src, {"p": p}, np.mean(per_value), {"p": np.mean(per_grad)},
          data={"x": x})
    x = x[x != 0]
    with np.errstate(all="ignore"):
        per_value = np.where(x > 0, np.sqrt(p * x), np.log(-p * x))
        per_grad = np.where(x > 0, 0.5 * x / np.sqrt(p * x), 1 / p)
    check(src, {"p": p}, np.mean(per_value), {"p": np.mean(per_grad)},
          data={"x": x})


# ---------------------------------------------------------------- every op's mask rule

def _masked_op_model(op, shapes, attrs):
    """loss = sum(where(c > 0, op(t * params...), 0) * w): each element of the op's
    result chosen where the input c says (per sample), weighted by w."""
    from lossc.api import compile_graph
    from lossc.ir.graph import Builder, Graph
    from lossc.passes import run_pipeline
    from lossc.ir.spec import InputSpec
    from test_ops import scaled_params
    g = Graph()
    b = Builder(g, share=False)
    t = b.emit("input", (), name="t", shape=(), is_int=False, index=2)
    out = b.emit(op, scaled_params(b, g, shapes, t), **attrs)
    c = b.emit("input", (), name="c", shape=out.shape, is_int=False, index=0)
    w = b.emit("input", (), name="w", shape=out.shape, is_int=False, index=1)
    g.inputs += [InputSpec("c", out.shape, False), InputSpec("w", out.shape, False),
                 InputSpec("t", (), False)]
    chosen = b.where(b.emit("gt", (c, b.zeros_like(c))), out, b.zeros_like(out))
    prod = b.mul(chosen, w)
    loss = b.emit("sum", (prod,), axes=tuple(range(prod.rank))) if prod.rank else prod
    g.outputs["loss"] = loss
    return compile_graph(run_pipeline(g, check=True)), out.shape


def _differentiable_cases():
    from lossc.ir.ops import OPS
    from test_ops import CASES
    return sorted(op for op in CASES if OPS[op].vjp is not None)


@pytest.mark.parametrize("op", _differentiable_cases())
def test_every_op_passes_no_gradient_from_elements_not_chosen(op):
    """Nothing chosen, the arguments NaN or infinite: the gradient is exactly 0. Some
    elements chosen (per sample and element), finite arguments: central differences
    of the objective with the where."""
    from test_ops import CASES
    from lossc.ir.ops import OPS
    shapes, domains, attrs = CASES[op]
    model, out_shape = _masked_op_model(op, shapes, attrs)
    B = 11
    rng = np.random.default_rng(sum(map(ord, op)))
    w = rng.normal(size=(B,) + out_shape)
    t = rng.uniform(0.9, 1.1, size=B)
    for bad in (nan, inf, -inf):
        theta = {f"p{k}": np.full(s, bad) for k, s in enumerate(shapes)}
        with np.errstate(all="ignore"):
            _, grads = model.value_and_grad(theta, c=-np.ones((B,) + out_shape), w=w, t=t)
        for k, gk in grads.items():
            np.testing.assert_array_equal(gk, 0.0, err_msg=f"{op}: {k} with {bad}")
    args = [rng.uniform(lo, hi, size=s) for s, (lo, hi) in zip(shapes, domains)]
    theta = {f"p{k}": a for k, a in enumerate(args)}
    c = rng.choice([-1.0, 1.0], size=(B,) + out_shape)

    def objective(args):
        return np.mean([np.sum(np.where(c[i] > 0, OPS[op].eval(attrs, *[a * t[i] for a in args]),
                                        0) * w[i]) for i in range(B)])

    _, grads = model.value_and_grad(theta, c=c, w=w, t=t)
    for k, a in enumerate(args):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(*a.shape):
            up, down = [x.copy() for x in args], [x.copy() for x in args]
            up[k][idx] += 1e-6
            down[k][idx] -= 1e-6
            numeric[idx] = (objective(up) - objective(down)) / 2e-6
        np.testing.assert_allclose(grads[f"p{k}"], numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=f"d/d p{k} of {op}, some chosen")
