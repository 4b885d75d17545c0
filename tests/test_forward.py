"""Forward mode (passes/forward.py) and what is built on it: each op's jvp rule, Model.jvp,
Model.hvp, Model.hessian and Model.scipy_hessp, against central differences, <grad, t>
and Hessians written out by hand."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import lossc
from lossc.ir.evaluate import evaluate_batch
from lossc.ir.graph import Builder, Graph
from lossc.ir.ops import OPS, Example, OpDef
from lossc.ir.spec import InputSpec
from lossc.passes import PassError, pipeline, run_pipeline

from test_ops import scaled_params

# polygamma2's rule refuses (a third derivative through digamma: no polygamma(3, x)),
# and so does forward over reverse through trigamma, whose gradient holds polygamma2;
# test_a_third_derivative_through_digamma_is_refused checks both
REFUSED, FIRST_ORDER_ONLY = {"polygamma2"}, {"trigamma"}
CASES = {name: d.example for name, d in OPS.items()
         if isinstance(d.example, Example) and d.jvp is not None and name not in REFUSED}
B = 5


def op_graph(op, example):
    """loss = sum(op(t * params) * w), as tests/test_ops.py builds it."""
    g = Graph()
    b = Builder(g, share=False)
    t = b.emit("input", (), name="t", shape=(), is_int=False, index=1)
    out = b.emit(op, scaled_params(b, g, example.shapes, t), **example.attrs)
    w = b.emit("input", (), name="w", shape=out.shape, is_int=False, index=0)
    g.inputs += [InputSpec("w", out.shape, False), InputSpec("t", (), False)]
    prod = b.mul(out, w)
    g.outputs["loss"] = b.emit("sum", (prod,), axes=tuple(range(prod.rank))) \
        if prod.rank else prod
    return g, out.shape


def mean_of(graph, theta, data, name):
    return np.mean(evaluate_batch(graph, theta, data, {}, [name])[name], axis=0)


@pytest.mark.parametrize("op", sorted(CASES))
def test_op_jvp_and_forward_over_reverse(op):
    """Each jvp rule, through the reference interpreter: the tangent of the loss against
    central differences along a random direction, and (forward over reverse) the
    tangent of the gradient against central differences of the gradient."""
    ex = CASES[op]
    g, out_shape = op_graph(op, ex)
    rng = np.random.default_rng(sum(map(ord, op)))
    theta = {f"p{k}": rng.uniform(lo, hi, size=s)
             for k, (s, (lo, hi)) in enumerate(zip(ex.shapes, ex.domains))}
    # (a direction small enough that theta +- h t stays in the op's domain)
    tangent = {k: rng.normal(size=np.shape(v)) * 0.1 for k, v in theta.items()}
    data = {"w": rng.normal(size=(B,) + out_shape), "t": rng.uniform(0.9, 1.1, size=B)}
    fwd = run_pipeline(g, check=True, until="forward", passes=pipeline("forward"))
    hvp = None if op in FIRST_ORDER_ONLY else \
        run_pipeline(g, check=True, until="forward", passes=pipeline("hvp"))
    grad = run_pipeline(g, check=True, until="autodiff")
    both = {**theta, **{f"tangent.{k}": v for k, v in tangent.items()}}

    def moved(h):
        return {k: v + h * tangent[k] for k, v in theta.items()}

    h = 1e-5
    numeric = (mean_of(grad, moved(h), data, "loss")
               - mean_of(grad, moved(-h), data, "loss")) / (2 * h)
    assert mean_of(fwd, both, data, "tangent.loss") == pytest.approx(numeric, rel=1e-6,
                                                                     abs=1e-8)
    if op in FIRST_ORDER_ONLY:
        return
    for k in theta:
        numeric = (mean_of(grad, moved(h), data, f"grad.{k}")
                   - mean_of(grad, moved(-h), data, f"grad.{k}")) / (2 * h)
        np.testing.assert_allclose(mean_of(hvp, both, data, f"tangent.grad.{k}"), numeric,
                                   rtol=1e-5, atol=1e-7, err_msg=f"H t, d/d {k} of {op}")


def test_a_third_derivative_through_digamma_is_refused():
    """polygamma2 (digamma's second derivative) has no derivative lossc computes: forward
    mode over it, directly or over trigamma's gradient, stops with an error that says
    so instead of a wrong value. (No program of the language reaches it: trigamma is no
    function of the language, and a Hessian differentiates digamma's gradient once.)"""
    for op, mode in (("polygamma2", "forward"), ("trigamma", "hvp")):
        g, _ = op_graph(op, OPS[op].example)
        with pytest.raises(PassError, match=r"cannot differentiate polygamma2 .* "
                                            r"needs polygamma\(3, x\)"):
            run_pipeline(g, until="forward", passes=pipeline(mode))


def test_an_entry_without_a_forward_rule_is_found():
    """The table test (test_ops.test_table_is_complete) fails for a differentiable op
    that lacks a jvp, a backward-only one included, and for one that has a rule it
    should not."""
    facts = dict(infer=lambda a, x: (x.shape, "real"), eval=lambda a, x: x ** 3,
                 sympy=lambda s, n, x: x ** 3, names=(), axis=False, reduction=False,
                 single_pass=True, foldable=True, lower=lambda em, g, n, x: x, example="",
                 differentiable=True, stage="backward", vjp=None, mask=None)
    assert OpDef("cube", 1, "elem", jvp=None, **facts).missing() == \
        ["jvp (the forward-mode rule)"]
    assert OpDef("cube", 1, "elem", **facts).missing() == ["jvp"]
    facts["differentiable"] = False
    assert OpDef("cube", 1, "elem", jvp=lambda *a: None, **facts).missing() == \
        ["no jvp (forward mode never differentiates it)"]
    facts.update(differentiable=True, stage="lower")     # (made after forward mode)
    assert OpDef("cube", 1, "elem", jvp=None, **facts).missing() == []


def test_prod_second_derivatives_with_zeros_are_exact():
    """prod_others' rule takes no division: at zeros the Hessian of prod is exact."""
    m = lossc.compile("param p[4]\nloss = prod(p)\n", cache=False)
    x = np.array([2.0, 0.0, 3.0, 5.0])
    H = m.hessian({"p": x})
    want = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            if i != j:
                want[i, j] = np.prod(np.delete(x, [i, j]))
    np.testing.assert_array_equal(H, want)


# ----------------------------------------------------------------- compiled models

LOGISTIC = """
dim D = 5
input x[D]
input y
param w[D]
param b
hyper lam = 0.1
z = dot(w, x) + b
loss = softplus(z) - y * z + lam * sum(w ^ 2)
"""

LEAST_SQUARES = """
dim D = 4
input x[D]
input y
param w[D]
param b
r = dot(w, x) + b - y
loss = 0.5 * r ^ 2
"""

SOFTMAX = """
dim D = 3
dim K = 4
input x[D]
input label: int
param W[K, D]
param c[K]
z = W @ x + c
loss = logsumexp(z) - z[label]
"""

MLP = """
dim D = 2
dim H = 3
input x[D]
input y
param W1[H, D]
param b1[H]
param w2[H]
param b2
h = tanh(W1 @ x + b1)
loss = (dot(w2, h) + b2 - y) ^ 2
"""


def random_theta(m, rng, scale=0.5):
    return {p.name: rng.normal(size=p.shape) * scale for p in m.params}


@pytest.fixture(scope="module")
def logistic():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(41, 5))
    Y = (rng.random(41) < 0.4).astype(float)
    return lossc.compile(LOGISTIC, cache=False), {"x": X, "y": Y}


def central_gradient(m, theta, v, data, h=1e-5):
    up = {k: theta[k] + h * v[k] for k in theta}
    down = {k: theta[k] - h * v[k] for k in theta}
    gu, gd = m.value_and_grad(up, **data)[1], m.value_and_grad(down, **data)[1]
    return {k: (gu[k] - gd[k]) / (2 * h) for k in theta}


def test_jvp_is_the_directional_derivative(logistic):
    m, data = logistic
    rng = np.random.default_rng(1)
    theta, t = random_theta(m, rng), random_theta(m, rng, 1.0)
    value, dval = m.jvp(theta, t, **data, lam=0.3)
    v, g = m.value_and_grad(theta, **data, lam=0.3)
    assert value == v
    assert dval == pytest.approx(sum(np.sum(g[k] * t[k]) for k in g), rel=1e-13)
    h = 1e-5
    up = m.loss({k: theta[k] + h * t[k] for k in theta}, **data, lam=0.3)
    down = m.loss({k: theta[k] - h * t[k] for k in theta}, **data, lam=0.3)
    assert dval == pytest.approx((up - down) / (2 * h), rel=1e-8)


def test_hvp_of_logistic_regression_is_its_hessian_times_v(logistic):
    """H = X1^T diag(s (1 - s)) X1 / B + 2 lam I on w (X1 = [X, 1])."""
    m, data = logistic
    rng = np.random.default_rng(2)
    theta, v = random_theta(m, rng), random_theta(m, rng, 1.0)
    X1 = np.hstack([data["x"], np.ones((41, 1))])
    s = 1 / (1 + np.exp(-(X1 @ m.pack_params(theta))))
    H = X1.T @ (X1 * (s * (1 - s))[:, None]) / 41 + np.diag([0.2] * 5 + [0])
    hv = m.hvp(theta, v, **data)
    np.testing.assert_allclose(m.pack_params(hv), H @ m.pack_params(v), rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(m.hessian(theta, **data), H, rtol=1e-12, atol=1e-15)
    numeric = central_gradient(m, theta, v, data)
    for k in hv:
        np.testing.assert_allclose(hv[k], numeric[k], rtol=1e-7, atol=1e-9)


def test_hessian_of_least_squares_is_x_transpose_x():
    m = lossc.compile(LEAST_SQUARES, cache=False)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(23, 4))
    X1 = np.hstack([X, np.ones((23, 1))])
    H = m.hessian(random_theta(m, rng), x=X, y=rng.normal(size=23))
    np.testing.assert_allclose(H, X1.T @ X1 / 23, rtol=1e-13, atol=1e-15)


def test_hessian_of_softmax_regression():
    """sum over samples of (diag(p) - p p^T) kron x1 x1^T, in pack_params order (W row by
    row, then c)."""
    m = lossc.compile(SOFTMAX, cache=False)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(17, 3))
    labels = rng.integers(0, 4, size=17)
    theta = random_theta(m, rng)
    H = m.hessian(theta, x=X, label=labels)
    want = np.zeros((16, 16))
    for x in X:
        z = theta["W"] @ x + theta["c"]
        p = np.exp(z - z.max())
        p /= p.sum()
        S = np.diag(p) - np.outer(p, p)
        # d z / d params: W[k, d] -> x[d] into z[k]; c[k] -> 1 into z[k]
        J = np.zeros((4, 16))
        for k in range(4):
            J[k, 3 * k:3 * k + 3] = x
            J[k, 12 + k] = 1
        want += J.T @ S @ J / 17
    np.testing.assert_allclose(H, want, rtol=1e-12, atol=1e-14)


def test_hessian_of_an_mlp_is_sympys():
    sympy = pytest.importorskip("sympy")
    m = lossc.compile(MLP, cache=False)
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(3, 2)), rng.normal(size=3)
    theta = random_theta(m, rng)
    W1 = sympy.Matrix(3, 2, sympy.symbols("W0:6"))
    b1, w2 = sympy.Matrix(sympy.symbols("b0:3")), sympy.Matrix(sympy.symbols("v0:3"))
    b2 = sympy.Symbol("c")
    symbols = list(W1) + list(b1) + list(w2) + [b2]        # pack_params order
    f = 0
    for x, y in zip(X, Y):
        h = (W1 * sympy.Matrix(x) + b1).applyfunc(sympy.tanh)
        f += ((w2.T * h)[0] + b2 - y) ** 2 / 3
    point = dict(zip(symbols, m.pack_params(theta)))
    want = np.array(sympy.hessian(f, symbols).subs(point).evalf(), dtype=np.float64)
    H = m.hessian(theta, x=X, y=Y)
    np.testing.assert_allclose(H, want, rtol=1e-11, atol=1e-13)
    v = random_theta(m, rng, 1.0)
    np.testing.assert_allclose(m.pack_params(m.hvp(theta, v, x=X, y=Y)),
                               want @ m.pack_params(v), rtol=1e-11, atol=1e-13)


def test_hessian_is_symmetric_and_its_columns_are_hvps():
    """More parameters than one native call's block of directions, reduce sum, a
    once-per-call penalty: every block and its remainder."""
    m = lossc.compile("dim D = 11\ninput x[D]\ninput y\nparam w[D]\nparam b\n"
                      "reduce sum\nz = dot(w, x) + b\n"
                      "loss = softplus(z) - y * z + 0.01 * sum(w ^ 4)\n", cache=False)
    rng = np.random.default_rng(6)
    data = {"x": rng.normal(size=(30, 11)), "y": (rng.random(30) < 0.5) * 1.0}
    theta = random_theta(m, rng)
    H = m.hessian(theta, **data)
    assert H.shape == (12, 12)
    np.testing.assert_array_equal(H, H.T)
    for i in range(12):
        e = np.zeros(12)
        e[i] = 1
        col = m.pack_params(m.hvp(theta, m.unpack_params(e), **data))
        np.testing.assert_allclose(H[:, i], col, rtol=1e-12, atol=1e-13)


def test_float32(logistic):
    _, data = logistic
    m = lossc.compile(LOGISTIC, dtype="float32", cache=False)
    m64 = logistic[0]
    rng = np.random.default_rng(7)
    theta, v = random_theta(m, rng), random_theta(m, rng, 1.0)
    value, dval = m.jvp(theta, v, **data)
    want_value, want_dval = m64.jvp(theta, v, **data)
    assert value == pytest.approx(want_value, rel=1e-5)
    assert dval == pytest.approx(want_dval, rel=1e-4, abs=1e-5)
    hv = m.hvp(theta, v, **data)
    assert hv["w"].dtype == np.float32
    want = m64.hvp(theta, v, **data)
    for k in hv:
        np.testing.assert_allclose(hv[k], want[k], rtol=1e-4, atol=1e-5)
    H = m.hessian(theta, **data)
    assert H.dtype == np.float32
    np.testing.assert_allclose(H, m64.hessian(theta, **data), rtol=1e-4, atol=1e-5)


def test_scipy_newton_cg_reaches_the_optimum_without_finite_differences(logistic):
    optimize = pytest.importorskip("scipy.optimize")
    m, data = logistic
    fun, x0 = m.scipy_objective(**data)
    hessp = m.scipy_hessp(**data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # (a finite-difference fallback warns)
        res = optimize.minimize(fun, x0, jac=True, hessp=hessp, method="Newton-CG",
                                options={"xtol": 1e-12})
        trust = optimize.minimize(fun, x0, jac=True, hessp=hessp, method="trust-ncg",
                                  options={"gtol": 1e-10})
    assert res.success and trust.success
    ref = optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                            options={"gtol": 1e-12, "ftol": 1e-15})
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(trust.x, res.x, rtol=1e-7, atol=1e-9)
    assert np.linalg.norm(m.value_and_grad_flat(res.x, m.bind(data))[1]) < 1e-8
    assert res.nhev > 0 and res.nit < 20


# ----------------------------------------------------------------- version 2 models

# a penalty, an output, a literal, gathers by an int vector (their gradient a scatter,
# whose tangent forward over reverse takes) and the special functions
V2_MODEL = """
dim N = 5
input tok[3]: int
input x[3]
input y
param E[N, 2] = normal(0, 0.3)
param v[N] = normal(0, 0.3)
param a[3] = normal(0, 0.3)
{reduce}
def soft(t, u) = log_sigmoid(t) + xlogy(u, exp(0.5 * tanh(t)))
h = mean(E[tok], axis=0)
s = dot(a, x) + sum(v[tok]) / 3 + erfc(a[0])
loss = -soft(s * y, x[0] ^ 2) + lgamma(2 + tanh(s)) + digamma(3 + h[1] ^ 2) + dot([a[1], -2] * h, [1, 2])
penalty = 0.01 * sum(E ^ 2) + 0.1 * sum(a ^ 2) + lgamma(2 + a[2] ^ 2)
output score = s
"""


@pytest.mark.parametrize("reduce", ["", "reduce sum"])
def test_jvp_and_hvp_of_a_version_2_model(reduce):
    """The penalty counts once in the directional derivative and the Hessian-vector
    product, as in the objective (under either reduction); the declared output is no
    part of them; gathers by an int vector, literals, lgamma, digamma, erfc and xlogy
    have forward rules that central differences of the compiled loss and gradient
    confirm."""
    m = lossc.compile(V2_MODEL.format(reduce=reduce), cache=False)
    rng = np.random.default_rng(6)
    B = 7
    data = {"tok": rng.integers(0, 5, size=(B, 3)), "x": rng.normal(size=(B, 3)),
            "y": rng.normal(size=B)}
    theta, t = random_theta(m, rng), random_theta(m, rng, 1.0)
    value, dval = m.jvp(theta, t, **data)
    v, g = m.value_and_grad(theta, **data)
    assert value == pytest.approx(v, rel=1e-14)
    assert dval == pytest.approx(sum(np.sum(g[k] * t[k]) for k in g), rel=1e-12)
    h = 1e-5
    up = m.loss({k: theta[k] + h * t[k] for k in theta}, **data)
    down = m.loss({k: theta[k] - h * t[k] for k in theta}, **data)
    assert dval == pytest.approx((up - down) / (2 * h), rel=1e-8)
    hv = m.hvp(theta, t, **data)
    numeric = central_gradient(m, theta, t, data)
    for k in hv:
        np.testing.assert_allclose(hv[k], numeric[k], rtol=1e-7, atol=1e-9, err_msg=k)
    H = m.hessian(theta, **data)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(H @ m.pack_params(t), m.pack_params(hv), rtol=1e-11,
                               atol=1e-13)


def test_the_penalty_alone_is_counted_once_by_jvp_and_hvp():
    """A model whose objective is its penalty plus a per-sample term without parameters:
    the tangent and the Hessian are the penalty's, whatever the batch size."""
    m = lossc.compile("input x\nparam w[2]\nreduce sum\nloss = x ^ 2\n"
                      "penalty = sum(w ^ 2) + w[0] * w[1] ^ 2\n", cache=False)
    theta = {"w": np.array([0.5, -1.5])}
    t = {"w": np.array([1.0, 2.0])}
    for B in (1, 4, 9):
        x = np.ones(B)
        value, dval = m.jvp(theta, t, x=x)
        assert value == pytest.approx(B + 0.25 + 2.25 + 0.5 * 2.25)
        # grad = (2 w0 + w1^2, 2 w1 + 2 w0 w1); H = [[2, 2 w1], [2 w1, 2 + 2 w0]]
        assert dval == pytest.approx((1 + 2.25) * 1 + (-3 - 1.5) * 2)
        H = np.array([[2, -3], [-3, 3]])
        np.testing.assert_allclose(m.hvp(theta, t, x=x)["w"], H @ t["w"], rtol=1e-14)
        np.testing.assert_allclose(m.hessian(theta, x=x), H, rtol=1e-14)


def test_xlogy_at_x_zero_has_zero_tangent_and_hessian_in_y():
    """xlogy(0, y) is 0 for every y, 0 included: its tangent and second derivative in
    y are 0 there too (not 0 / 0); elsewhere x / y and -x / y^2."""
    m = lossc.compile("input u\nparam p\nloss = xlogy(u, p)\n", cache=False)
    zeros = np.zeros(3)
    value, dval = m.jvp({"p": 0.0}, {"p": 1.0}, u=zeros)
    assert (value, dval) == (0.0, 0.0)
    assert m.hvp({"p": 0.0}, {"p": 1.0}, u=zeros)["p"] == 0.0
    u = np.array([0.0, 0.0, 2.0])       # the objective 2 log(p) / 3
    value, dval = m.jvp({"p": 0.5}, {"p": 1.0}, u=u)
    assert dval == pytest.approx(2 / 3 / 0.5, rel=1e-14)
    assert m.hvp({"p": 0.5}, {"p": 1.0}, u=u)["p"] == pytest.approx(-2 / 3 / 0.25, rel=1e-14)


def test_xlogy_at_x_zero_keeps_its_mixed_second_derivative():
    """x log y is smooth at x = 0 for y > 0: its Hessian there is [[0, 1/y], [1/y, 0]].
    The gradient in y is 0 at x = 0, but its derivative in x is 1/y, not the 0 of a
    masked constant. hvp, hessian and the columns of one are the other's. (At y = 0
    the Hessian is not finite: d/dy of d/dx = log(y) is 1/y.)"""
    m = lossc.compile("param a\nparam b = 1\nloss = xlogy(a, b) + a ^ 2\n", cache=False)
    for b_ in (1.0, 0.25, 3.0):
        H = np.array([[2, 1 / b_], [1 / b_, 0]])
        np.testing.assert_allclose(m.hessian({"a": 0.0, "b": b_}), H, rtol=1e-15)
        hv = m.hvp({"a": 0.0, "b": b_}, {"a": 1.0, "b": 0.0})
        np.testing.assert_allclose([hv["a"], hv["b"]], H[:, 0], rtol=1e-15)
        # the same, just off x = 0 (no jump at exactly 0)
        near = m.hessian({"a": 1e-300, "b": b_})
        np.testing.assert_allclose(near, H, rtol=1e-15, atol=1e-290)
    g = m.value_and_grad({"a": 0.0, "b": 0.0})[1]
    assert g["b"] == 0.0 and g["a"] == -np.inf


@pytest.mark.parametrize("dtype, x", [("float64", 40.0), ("float32", 20.0)])
def test_sigmoids_derivatives_keep_their_precision_on_both_sides(dtype, x):
    """sigmoid'(x) = sigmoid(x) sigmoid(-x), the second derivative of softplus, and
    minus log_sigmoid's: exact where sigmoid(x) rounds to 1 as where it is tiny (as
    out * (1 - out) they were 0 there), in the gradient, jvp, hvp and hessian."""
    exact = np.exp(-x) / (1 + np.exp(-x)) ** 2          # sigmoid'(+-x)
    first = {"sigmoid": lambda s: exact, "softplus": lambda s: 1.0 if s > 0 else exact,
             "log_sigmoid": lambda s: exact if s > 0 else 1.0}
    second = {"sigmoid": lambda s: -s * exact, "softplus": lambda s: exact,
              "log_sigmoid": lambda s: -exact}
    rtol = 1e-13 if dtype == "float64" else 1e-5

    def near(v):
        return pytest.approx(v, rel=rtol, abs=0)
    for f in first:
        m = lossc.compile(f"param a\nloss = {f}(a)\n", dtype=dtype, cache=False)
        for s in (1, -1):
            theta = {"a": np.array(s * x, dtype)}
            assert m.value_and_grad(theta)[1]["a"] == near(first[f](s))
            assert m.jvp(theta, {"a": 1.0})[1] == near(first[f](s))
            assert m.hvp(theta, {"a": 1.0})["a"] == near(second[f](s))
            assert m.hessian(theta)[0, 0] == near(second[f](s))


def test_the_derived_units_leave_the_declared_outputs_out():
    from lossc.compiler import compile_source
    from lossc.passes.forward import forward
    c = compile_source(V2_MODEL.format(reduce=""))
    for unit in ("jvp", "hvp", "hessian"):
        outputs = c.unit_graph(unit).outputs
        assert outputs and not any("out." in k or "score" in k for k in outputs), unit
    fwd = forward(c.stages["autodiff"])
    assert "out.score" in fwd.outputs and "tangent.out.score" not in fwd.outputs


# ----------------------------------------------------------------- arguments


def test_arguments_are_checked_and_named(logistic):
    m, data = logistic
    theta = m.init_params()
    with pytest.raises(ValueError, match="tangent: parameter 'w' must have shape"):
        m.jvp(theta, {"w": np.zeros(4), "b": 0.0}, **data)
    with pytest.raises(ValueError, match="v: missing parameter 'b'"):
        m.hvp(theta, {"w": np.zeros(5)}, **data)
    with pytest.raises(ValueError, match="theta: unknown parameter 'q'"):
        m.hessian({**theta, "q": 1.0}, **data)
    with pytest.raises(TypeError, match="tangent: parameter 'w' must hold real numbers"):
        m.jvp(theta, {"w": np.array(["a"] * 5), "b": 0.0}, **data)
    with pytest.raises(ValueError, match="unknown argument 'z'"):
        m.hvp(theta, theta, z=1, **data)
    with pytest.raises(ValueError, match="missing input 'y'"):
        m.hessian(theta, x=data["x"])
    with pytest.raises(ValueError, match="input 'x' must have shape"):
        m.jvp(theta, theta, x=data["x"][:, :3], y=data["y"])
    hessp = m.scipy_hessp(**data)
    with pytest.raises(ValueError, match=r"p must have shape \(6,\)"):
        hessp(np.zeros(6), np.zeros(5))
    with pytest.raises(ValueError, match=r"theta_flat must have shape \(6,\)"):
        m.hvp_flat(np.zeros(7), np.zeros(6), m.bind(data))
    with pytest.raises(ValueError, match=r"out must be a writable float64 array of shape "
                                         r"\(6,\)"):
        m.hvp_flat(np.zeros(6), np.zeros(6), m.bind(data), out=np.zeros(6, np.float32))
    out = np.zeros(6)
    flat, v = m.pack_params(theta), np.arange(6.0)
    assert m.hvp_flat(flat, v, data, out=out) is out
    np.testing.assert_allclose(out, m.hessian(theta, **data) @ v, rtol=1e-12)


def test_a_hessian_too_large_is_refused_before_any_work():
    from lossc.runtime.derivatives import MAX_HESSIAN_PARAMS
    m = lossc.compile(f"dim D = {MAX_HESSIAN_PARAMS}\ninput x[D]\nparam w[D]\nparam b\n"
                      "loss = (dot(w, x) + b) ^ 2\n", cache=False)
    with pytest.raises(ValueError, match=f"4097 parameters; the Hessian is computed for "
                                         f"at most {MAX_HESSIAN_PARAMS}"):
        m.hessian(m.init_params(), x=np.zeros((1, MAX_HESSIAN_PARAMS)))
    assert "hessian" not in m.code.objects


def test_an_index_out_of_range_is_reported_by_hvp():
    m = lossc.compile(SOFTMAX, cache=False)
    theta = m.init_params()
    with pytest.raises(ValueError, match="out of range 0..3 at sample 1"):
        m.hvp(theta, theta, x=np.zeros((2, 3)), label=np.array([0, 7]))


def test_hyperparameters_and_models_without_inputs():
    m = lossc.compile("param x1 = 2\nparam x2 = 5\nhyper a = 1\n"
                      "loss = a * log(x1) + x1 * x2 - sin(x2)\n", cache=False)
    theta = m.init_params()
    value, dval = m.jvp(theta, {"x1": 1.0, "x2": 0.0}, a=2.0)
    assert value == pytest.approx(2 * np.log(2) + 10 - np.sin(5))
    assert dval == pytest.approx(2 / 2 + 5)
    np.testing.assert_allclose(m.hessian(theta, a=2.0),
                               [[-2 / 4, 1], [1, np.sin(5)]], rtol=1e-15)


# ----------------------------------------------------------------- units, cache, CLI


def test_the_units_are_compiled_on_first_use_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path / "cache"))
    m = lossc.compile(LEAST_SQUARES)
    assert "hvp" not in m.code.objects
    theta = m.init_params()
    data = {"x": np.ones((3, 4)), "y": np.zeros(3)}
    want = m.hessian(theta, **data)
    m.hvp(theta, theta, **data)
    m.jvp(theta, theta, **data)
    assert {"jvp", "hvp", "hessian"} <= set(m.code.objects)
    script = (
        "import numpy as np, lossc, lossc.codegen.jit as jit\n"
        "def refuse(*a, **k): raise AssertionError('compiled again')\n"
        "jit.compile_ir = refuse\n"
        f"m = lossc.compile({LEAST_SQUARES!r})\n"
        "print(m.hessian(m.init_params(), x=np.ones((3, 4)), y=np.zeros(3)).tolist())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ,
                                           "LOSSC_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert np.array_equal(eval(out.stdout), want)
    # a saved model holds the units it has compiled; loaded, it runs them as they are
    m.save(tmp_path / "m.lossc")
    loaded = lossc.load(tmp_path / "m.lossc")
    assert {"jvp", "hvp", "hessian"} <= set(loaded.code.objects)
    np.testing.assert_array_equal(loaded.hessian(theta, **data), want)


def test_a_trusted_artifact_with_a_wrong_work_size_for_hvp_is_refused(tmp_path, monkeypatch):
    """A trusted artifact's header is checked against its source compiled again, the
    work sizes of the derived units included."""
    from lossc.runtime import artifact
    monkeypatch.setenv("LOSSC_CACHE_DIR", str(tmp_path / "cache"))
    m = lossc.compile(MLP, cache=False)
    theta = m.init_params()
    m.hvp(theta, theta, x=np.ones((2, 2)), y=np.ones(2))
    path = tmp_path / "m.lossc"
    m.save(path)
    contents = artifact.read_file(path, None)
    work = dict(contents.header["unit_work"])
    work["hvp"] += 1
    header = dict(contents.header, unit_work=work,
                  work_size=max(contents.header["work_size"], work["hvp"]))
    path.write_bytes(artifact.encode(header, dict(contents.objects), None))   # (unsigned)
    with pytest.raises(artifact.ArtifactError, match="code unit 'hvp' is not its source's"):
        lossc.load(path, trust=True)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lossc.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_graph_command_shows_the_forward_and_hvp_graphs():
    out = run_cli("graph", "samples/seed.loss", "--mode", "forward")
    assert out.returncode == 0, out.stderr
    assert "param tangent.x1" in out.stdout and "tangent.loss.once" in out.stdout
    assert "grad.x1" not in out.stdout
    out = run_cli("graph", "samples/logistic.loss", "--mode", "hvp", "--after", "forward")
    assert out.returncode == 0, out.stderr
    assert "tangent.grad.w = " in out.stdout and "grad.w = " in out.stdout
    out = run_cli("graph", "samples/seed.loss", "--mode", "forward", "--after", "autodiff")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "lossc: error: unknown pass 'autodiff'; the passes of mode forward are build, "
        "stabilize, forward, fold, cse, dce, hoist, tidy, lower"]
    out = run_cli("graph", "samples/seed.loss", "--mode", "hvp", "--format", "latex")
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_ir_command_shows_the_derived_units():
    out = run_cli("ir", "samples/logistic.loss", "--unit", "hvp", "--unit", "jvp")
    assert out.returncode == 0, out.stderr
    assert "@lossc_hvp(" in out.stdout and "@lossc_jvp(" in out.stdout
