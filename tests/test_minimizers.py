"""L-BFGS, Newton-CG and Newton (lossc.optim.quasi_newton, lossc.optim.second_order)
against scipy's L-BFGS-B and exact optima: W9's logistic regression (NumPy and lossc's
compiled gradient), Rosenbrock, ill-conditioned quadratics, a function with NaN
regions; their stopping rules, callbacks and argument checks. Work is bounded by
counting evaluations."""
import math

import numpy as np
import pytest
import scipy.optimize

import lossc
from lossc.optim import Iterate, lbfgs, newton, newton_cg
from lossc.optim.quasi_newton import History
from lossc.optim.second_order import shifted_cholesky, truncated_cg

from conftest import SAMPLES
from problems import (Counted, barrier, logistic, logistic_data, quadratic, relative,
                      rosenbrock)

METHODS = {
    "lbfgs": lambda p, x0, **kw: lbfgs(p.fun, x0, **kw),
    "newton_cg": lambda p, x0, **kw: newton_cg(p.fun, p.hvp, x0, **kw),
    "newton": lambda p, x0, **kw: newton(p.fun, p.hessian, x0, **kw),
}
TIGHT = {"tol_grad": 1e-13, "tol_loss": None}


def exact_optimum(p, x0):
    """The minimizer by plain Newton steps with the exact Hessian (a strictly convex
    problem), to the last bits."""
    x = np.array(x0, dtype=float)
    for _ in range(50):
        step = np.linalg.solve(p.hessian(x), p.fun(x)[1])
        x -= step
        if np.max(np.abs(step)) <= 1e-16 * np.max(np.abs(x)):
            break
    return x


@pytest.fixture(scope="module")
def w9():
    """W9's model (W2's logistic regression with 1e-3 sum(w^2), D = 32) on 3,000 samples,
    its optimum, and scipy's L-BFGS-B run on it to its tightest tolerances."""
    X, y = logistic_data(3000, 32, seed=9)
    p = logistic(X, y, lam=1e-3)
    x0 = np.zeros(p.n)
    best = exact_optimum(p, x0)
    sp = scipy.optimize.minimize(p.fun, x0, jac=True, method="L-BFGS-B",
                                 options={"gtol": 1e-13, "ftol": 0, "maxiter": 10000})
    return p, x0, best, sp


@pytest.mark.parametrize("method", METHODS)
def test_w9_reaches_scipys_optimum(w9, method):
    p, x0, best, sp = w9
    res = METHODS[method](p, x0, **TIGHT)
    assert res.stopped == "tol_grad" and res.converged
    assert abs(res.value - sp.fun) <= 1e-10 * abs(sp.fun)
    assert res.value <= sp.fun + 1e-15
    # the point: to the exact optimum (scipy's own is only as close to it as its line
    # search's comparisons of values allow, 1e-9 here)
    assert relative(res.x, best) <= 1e-10
    if method == "lbfgs":
        # evaluations until it is as low as scipy's final value: no more than scipy's
        counted = Counted(p.fun)
        at = []
        lbfgs(counted, x0, callback=lambda i: i.value <= sp.fun and not at.append(
            counted.calls), **TIGHT)
        assert at[0] <= sp.nfev
    else:
        assert res.iterations <= 10


def test_w9_with_lossc_compiled_gradient(w9):
    """The same on lossc's own objective (m.scipy_objective: the compiled gradient),
    Newton-CG with the NumPy Hessian's products: both reach scipy's optimum."""
    p, x0, best, _ = w9
    X, y = logistic_data(3000, 32, seed=9)
    m = lossc.compile(SAMPLES / "logistic.loss", dims={"D": 32})
    fun, _ = m.scipy_objective(x=X, y=y)          # lam = 1e-3 is the file's default
    assert m.reduce == "mean"
    assert abs(fun(best)[0] - p.fun(best)[0]) <= 1e-14
    sp = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
                                 options={"gtol": 1e-13, "ftol": 0, "maxiter": 10000})
    for run in (lambda: lbfgs(fun, x0, **TIGHT), lambda: newton_cg(fun, p.hvp, x0, **TIGHT)):
        before = fun.n_calls
        res = run()
        assert res.converged and fun.n_calls - before == res.evaluations
        assert abs(res.value - sp.fun) <= 1e-10 * abs(sp.fun)
        assert relative(res.x, best) <= 1e-10


def test_defaults_stop_where_scipys_do(w9):
    p, x0, best, _ = w9
    sp = scipy.optimize.minimize(p.fun, x0, jac=True, method="L-BFGS-B")
    res = lbfgs(p.fun, x0)
    assert res.converged and res.grad_norm <= 1e-5
    assert abs(res.value - sp.fun) <= 1e-9 * abs(sp.fun)
    assert res.evaluations <= sp.nfev + 2


@pytest.mark.parametrize("n,start", [(2, [-1.2, 1.0]), (10, None)])
def test_rosenbrock(n, start):
    p = rosenbrock(n)
    x0 = np.array(start) if start else np.zeros(n)
    sp = scipy.optimize.minimize(p.fun, x0, jac=True, method="L-BFGS-B",
                                 options={"gtol": 1e-10, "ftol": 0})
    sp_cg = scipy.optimize.minimize(p.fun, x0, jac=True, hessp=p.hvp, method="Newton-CG",
                                    options={"xtol": 1e-14})
    for method in METHODS:
        res = METHODS[method](p, x0, tol_grad=1e-10, tol_loss=None)
        assert res.stopped == "tol_grad", method
        np.testing.assert_allclose(res.x, np.ones(n), rtol=0, atol=1e-9)
        if method == "lbfgs":
            assert res.evaluations <= 1.2 * sp.nfev
        elif method == "newton_cg":
            # the forcing sequence solves loosely while ||g|| > 1/4: in Rosenbrock's
            # valley that is many short steps, as for scipy's Newton-CG (74 iterations
            # to its 86 in 2-D, 72 to 55 in 10-D, with fewer products in both)
            assert res.iterations <= 1.5 * sp_cg.nit and res.hvp_evaluations <= sp_cg.nhev
        else:
            assert res.iterations <= 30


@pytest.mark.parametrize("condition", [1e2, 1e4, 1e6])
def test_ill_conditioned_quadratic(condition):
    p, xstar = quadratic(40, condition, seed=3)
    x0 = np.zeros(p.n)
    # the gradient's own rounding is some eps ||A|| ||x||: tol_grad above it
    tol = {"tol_grad": 1e-15 * condition, "tol_loss": None}
    if condition <= 1e4:
        # (at 1e6 L-BFGS needs thousands of iterations, as scipy's L-BFGS-B does)
        res = lbfgs(p.fun, x0, max_iter=3000, **tol)
        assert res.converged and relative(res.x, xstar) <= 1e-11
        assert res.evaluations <= 1.2 * res.iterations
    res = newton_cg(p.fun, p.hvp, x0, **tol)
    # what tol_grad guarantees: ||x - x*|| <= ||A^-1|| ||g(x)|| = ||g(x)|| (A's least
    # eigenvalue is 1), with ||g(x)||_2 <= sqrt(n) tol_grad
    gx = p.fun(res.x)[1]
    assert res.converged and np.abs(gx).max() <= tol["tol_grad"]
    assert np.linalg.norm(res.x - xstar) <= np.linalg.norm(gx) * (1 + 1e-6)
    # (CG in floating point loses the conjugacy that would end it within n = 40
    # products: a few hundred per solve at 1e6)
    assert res.iterations <= 15 and res.hvp_evaluations <= 1000
    # Newton: one step, accepted at step 1 (the exact minimizer of a quadratic)
    res = newton(p.fun, p.hessian, x0, **tol)
    assert res.converged and res.iterations == 1 and relative(res.x, xstar) <= 1e-11


@pytest.mark.parametrize("method", METHODS)
def test_nan_region_is_backed_off(method):
    # the minimum is near the edge of the domain, where the first steps from 0 overshoot
    p, xstar = barrier([0.5, 5.0, 50.0])
    counted = Counted(p.fun)
    p.fun = counted
    res = METHODS[method](p, np.zeros(3), tol_grad=1e-12, tol_loss=None)
    assert res.converged and np.max(np.abs(res.x - xstar)) <= 1e-12
    assert math.isfinite(res.value) and counted.nonfinite >= 5      # it went there
    assert counted.calls == res.evaluations <= 40


def test_callback_sees_each_iteration_and_can_stop():
    p = rosenbrock(2)
    seen = []

    def callback(info):
        seen.append(info)
        return info.iteration == 3

    res = lbfgs(p.fun, [-1.2, 1.0], callback=callback)
    assert res.stopped == "callback" and res.iterations == 3 and not res.converged
    assert [i.iteration for i in seen] == [1, 2, 3]
    assert isinstance(seen[0], Iterate)
    assert seen[-1].value == res.value == res.history[3]
    assert seen[-1].grad_norm == res.grad_norm and seen[-1].x is res.x
    assert np.all(np.diff(res.history) < 0) and res.history[0] == p.fun(np.array([-1.2, 1.0]))[0]


@pytest.mark.parametrize("method", METHODS)
def test_stopping_rules(method):
    p = rosenbrock(4)
    x0 = np.zeros(4)
    res = METHODS[method](p, x0, max_iter=3)
    assert res.stopped == "max_iter" and res.iterations == 3 and len(res.history) == 4
    res = METHODS[method](p, x0, max_evals=5)
    assert res.stopped == "max_evals" and res.evaluations >= 5
    res = METHODS[method](p, x0, tol_loss=1e-2)
    assert res.stopped == "tol_loss"
    h = res.history
    assert (h[-2] - h[-1]) / max(abs(h[-2]), abs(h[-1]), 1) <= 1e-2
    res = METHODS[method](p, np.ones(4))
    assert res.stopped == "tol_grad" and res.iterations == 0 and res.evaluations == 1


def _at_zero(x):
    """A quadratic whose gradient is exactly 0 at x = 0 (and at no other point)."""
    return float(x @ x), 2 * x


@pytest.mark.parametrize("method", ["lbfgs", "newton_cg", "owlqn"])
def test_a_zero_gradient_is_converged_whatever_the_tolerances(method):
    """With both tolerances off, a run that reaches (or starts at) a gradient of exact
    zeros stops there as converged: there is no direction to search along (the
    steepest-descent step 1 / ||g|| divided by zero)."""
    from lossc.optim import owlqn
    run = {"lbfgs": lambda x0: lbfgs(_at_zero, x0, tol_grad=None, tol_loss=None),
           "newton_cg": lambda x0: newton_cg(_at_zero, lambda x, v: 2 * v, x0,
                                             tol_grad=None, tol_loss=None),
           "owlqn": lambda x0: owlqn(_at_zero, x0, 0.0, tol_grad=None, tol_loss=None)}
    for x0 in (np.zeros(3), np.array([1.0, -2.0, 0.5])):
        r = run[method](x0)
        assert r.converged and r.stopped == "tol_grad", r.message
        assert "the gradient is 0" in r.message
        np.testing.assert_array_equal(r.x, np.zeros(3))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("method", ["lbfgs", "newton_cg"])
def test_a_finite_gradient_past_1e154_still_gives_a_direction(method):
    """exp(a) + exp(-a) from a = 360: the value and gradient (2.2e156) are finite, but
    ||g||^2 overflows: 1 / ||g|| was a first step of 0 (refused by the line search),
    and -g . g in the line search -inf. Steepest descent at unit length reaches 0."""
    def fun(x):
        return float(np.exp(x[0]) + np.exp(-x[0])), np.array([np.exp(x[0]) - np.exp(-x[0])])
    run = {"lbfgs": lambda: lbfgs(fun, [360.0], max_iter=2000, max_evals=20000),
           "newton_cg": lambda: newton_cg(fun, lambda x, v: (np.exp(x) + np.exp(-x)) * v,
                                          [360.0], max_iter=2000, max_evals=20000)}
    r = run[method]()
    assert r.converged, r.message
    assert abs(r.x[0]) < 1e-4 and r.value == pytest.approx(2.0)


def test_newton_cg_keeps_its_newton_direction_past_1e154():
    """s x'Ax / 2 with s = 1e150 and cond(A) = 100, from x = (1e3, 1e3): ||g||^2
    overflowed in CG's residual, which then stopped at its first iteration. The
    iterations were those of steepest descent, and 200 of them did not converge.
    Scaled to unit length, CG finds the Newton direction."""
    a, s = np.array([1.0, 100.0]), 1e150
    r = newton_cg(lambda x: (float(s * (x @ (a * x)) / 2), s * a * x),
                  lambda x, v: s * a * v, [1e3, 1e3])
    assert r.converged and r.iterations <= 20, r.message
    assert np.all(np.abs(r.x) < 1e-80)


def test_the_steepest_descent_direction_is_unit_length_at_any_scale():
    from lossc.optim.solver import steepest_descent
    for scale in (1e-300, 1.0, 1e154, 1e300):
        g = np.array([3.0, -4.0, 0.0]) * scale
        np.testing.assert_allclose(steepest_descent(g), [-0.6, 0.8, 0.0], rtol=1e-15)
    for g in (np.zeros(2), np.array([1.0, np.inf]), np.array([np.nan, 1.0]), np.zeros(0)):
        assert steepest_descent(g) is None, g


def test_keyboard_interrupt_keeps_the_last_point():
    p = rosenbrock(2)
    calls = []

    def fun(x):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return p.fun(x)
    res = lbfgs(fun, [-1.2, 1.0])
    assert res.stopped == "interrupted" and res.evaluations == 12
    assert res.value == res.history[-1] == p.fun(res.x)[0]
    assert res.value < p.fun(np.array([-1.2, 1.0]))[0]


def test_history_two_loop_is_the_bfgs_inverse_update():
    """The two-loop product equals the dense BFGS inverse Hessian built from the same
    pairs, H0 = gamma I with gamma = s'y / y'y of the newest pair."""
    rng = np.random.default_rng(4)
    n, pairs = 6, []
    A = np.diag(np.linspace(1, 5, n))
    h = History(m=3)
    for _ in range(5):                           # the oldest two fall out of the history
        s = rng.normal(size=n)
        y = A @ s
        pairs.append((s, y))
        assert h.push(s, y)
    kept = pairs[-3:]
    s, y = kept[-1]
    H = (s @ y) / (y @ y) * np.eye(n)
    for s, y in kept:
        rho = 1 / (s @ y)
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    g = rng.normal(size=n)
    np.testing.assert_allclose(h.direction(g), -H @ g, rtol=1e-12)


def textbook_direction(pairs, g):
    """-H g by the two-loop recursion as Nocedal and Wright write it, on a list of
    (s, y) pairs, oldest first: one np.dot and one new array per pair and loop."""
    q = np.array(g, dtype=np.float64)
    rhos = [1.0 / float(np.dot(s, y)) for s, y in pairs]
    alphas = []
    for (s, y), rho in zip(reversed(pairs), reversed(rhos)):
        a = rho * float(np.dot(s, q))
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y = pairs[-1]
        q *= 1.0 / (rhos[-1] * float(np.dot(y, y)))
    for (s, y), rho, a in zip(pairs, rhos, reversed(alphas)):
        b = rho * float(np.dot(y, q))
        q += (a - b) * s
    return -q


@pytest.mark.parametrize("n", [2, 31, 300])
def test_history_is_the_textbook_two_loop_bit_for_bit(n):
    # the pairs kept in reused rows (a ring, once m are kept), pairs without positive
    # curvature skipped, the history cleared: the same arithmetic as the textbook loop
    rng = np.random.default_rng(n)
    h, kept = History(m=4), []
    for k in range(15):
        s = rng.normal(size=n)
        y = -s if k % 5 == 3 else s * rng.uniform(0.5, 2.0, size=n)
        # (push_step: the differences of two points and their gradients)
        x, g = rng.normal(size=n), rng.normal(size=n)
        pushed = h.push(s, y) if k % 2 else h.push_step(x + s, x, g + y, g)
        if pushed:
            kept.append(((x + s) - x, (g + y) - g) if k % 2 == 0 else (s.copy(), y.copy()))
        s[:] = y[:] = np.nan                 # (the history holds copies)
        if k == 9:
            h.clear()
            kept = []
        g = rng.normal(size=n)
        assert len(h) == len(kept[-4:])
        np.testing.assert_array_equal(h.direction(g), textbook_direction(kept[-4:], g))


def test_history_direction_allocates_only_the_direction():
    # the two-loop product works in vectors of the history's own: a call allocates
    # the direction it returns and no temporary a pair
    import tracemalloc
    n, rng = 20000, np.random.default_rng(0)
    h = History(m=10)
    for _ in range(10):
        s = rng.normal(size=n)
        assert h.push(s, 2.0 * s + 0.1 * rng.normal(size=n))
    g = rng.normal(size=n)
    h.direction(g)
    tracemalloc.start()
    try:
        d = h.direction(g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert d.nbytes <= peak < 1.5 * d.nbytes


@pytest.fixture(scope="module")
def two_loop():
    """lossc_lbfgs_two_loop, loaded (the loaded code kept alive with it)."""
    from lossc.codegen.unit_names import EXPORTS, TWO_LOOP
    from lossc.runtime import library
    from lossc.runtime.native import load_object
    code = load_object(library.unit_object(TWO_LOOP, "any", None), (EXPORTS[TWO_LOOP],))
    return code, code.functions[EXPORTS[TWO_LOOP]]


@pytest.mark.parametrize("n", [1, 2, 31, 300])
def test_the_native_two_loop_is_the_numpy_one_but_for_the_dot_products(two_loop, n):
    # the same pairs (ring, skipped pairs, a cleared history) in both: the directions
    # agree to rounding, and bit for bit where a dot product has no order to its sum
    rng = np.random.default_rng(n)
    numpy_h, native_h = History(m=4), History(m=4, two_loop=two_loop[1])
    for k in range(15):
        s = rng.normal(size=n)
        y = -s if k % 5 == 3 else s * rng.uniform(0.5, 2.0, size=n)
        assert numpy_h.push(s, y) == native_h.push(s, y)
        if k == 9:
            numpy_h.clear()
            native_h.clear()
        g = rng.normal(size=n)
        d, native = numpy_h.direction(g), native_h.direction(g)
        assert native is not native_h.direction(g)          # (a new array each call)
        if n <= 2:
            np.testing.assert_array_equal(native, d)
        else:
            np.testing.assert_allclose(native, d, rtol=1e-12, atol=1e-12 * np.abs(d).max())


def test_history_skips_pairs_without_positive_curvature():
    h = History(m=5)
    assert not h.push(np.array([1.0, 0.0]), np.array([-1.0, 0.0]))
    assert not h.push(np.array([1.0, 0.0]), np.array([0.0, 1.0]))        # s'y = 0
    assert len(h) == 0 and h.skipped == 2
    np.testing.assert_array_equal(h.direction(np.array([1.0, 2.0])), [-1.0, -2.0])


def test_lbfgs_on_a_nonconvex_function_skips_negative_curvature():
    # f = sum(x^4/4 - x^2): each pair that crosses the concave middle is skipped
    def fun(x):
        return float(np.sum(x ** 4 / 4 - x ** 2)), x ** 3 - 2 * x
    res = lbfgs(fun, np.array([0.1, -0.2, 0.05]), tol_grad=1e-12, tol_loss=None)
    assert res.converged
    np.testing.assert_allclose(np.abs(res.x), math.sqrt(2), rtol=1e-12)


def test_truncated_cg():
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    A = (q * np.linspace(1, 10, 8)) @ q.T
    g = rng.normal(size=8)
    cg = truncated_cg(lambda v: A @ v, g, 1e-12, 100)
    assert cg.stopped == "residual" and cg.iterations <= 10
    np.testing.assert_allclose(A @ cg.d, -g, atol=1e-11)
    # negative curvature at the first direction: -g; later: the iterate so far
    B = (q * np.r_[-1.0, np.linspace(1, 10, 7)]) @ q.T
    cg = truncated_cg(lambda v: -A @ v, g, 1e-12, 100)
    assert cg.stopped == "negative_curvature" and cg.iterations == 1
    np.testing.assert_array_equal(cg.d, -g)
    cg = truncated_cg(lambda v: B @ v, g, 1e-12, 100)
    if cg.iterations > 1:
        assert cg.stopped == "negative_curvature" and cg.d @ g < 0
    cg = truncated_cg(lambda v: A @ v, g, 0.0, 3)
    assert cg.stopped == "max_iter" and cg.iterations == 3


def test_shifted_cholesky():
    H = np.array([[1.0, 2.0], [2.0, 1.0]])          # eigenvalues 3 and -1
    low, tau = shifted_cholesky(H)
    assert tau > 1
    np.testing.assert_allclose(low @ low.T, H + tau * np.eye(2), rtol=1e-14)
    low, tau = shifted_cholesky(np.diag([2.0, 3.0]))
    assert tau == 0


def test_newton_shifts_an_indefinite_hessian():
    # Rosenbrock at (0, 1): H = diag(-398, 200), indefinite
    p = rosenbrock(2)
    assert np.linalg.eigvalsh(p.hessian(np.array([0.0, 1.0])))[0] < 0
    res = newton(p.fun, p.hessian, [0.0, 1.0], tol_grad=1e-10)
    assert res.converged and res.hessian_shifts >= 1
    assert res.hessian_evaluations == res.iterations
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-9)


@pytest.mark.parametrize("call,error,match", [
    (lambda: lbfgs(rosenbrock(2).fun, [np.nan, 1.0]), ValueError, r"x0\[0\]"),
    (lambda: lbfgs(rosenbrock(2).fun, np.zeros((2, 2))), ValueError, "flat vector"),
    (lambda: lbfgs(lambda x: (0.0, np.zeros(3)), np.zeros(2)), ValueError, "fun returned"),
    (lambda: lbfgs(lambda x: 1.0, np.zeros(2)), ValueError, r"\(value, gradient\)"),
    (lambda: lbfgs(lambda x: (math.nan, x), np.zeros(2)), ValueError, "at x0"),
    (lambda: lbfgs(rosenbrock(2).fun, np.zeros(2), m=0), ValueError, "m must"),
    (lambda: lbfgs(rosenbrock(2).fun, np.zeros(2), tol_grad=-1), ValueError, "tol_grad"),
    (lambda: lbfgs(rosenbrock(2).fun, np.zeros(2), max_iter=2.5), ValueError, "max_iter"),
    (lambda: lbfgs(rosenbrock(2).fun, np.zeros(2), c2=1e-5), ValueError, "c2"),
    (lambda: lbfgs(rosenbrock(2).fun, np.zeros(2), callback=3), TypeError, "callback"),
    (lambda: newton_cg(rosenbrock(2).fun, None, np.zeros(2)), TypeError, "hvp"),
    (lambda: newton_cg(rosenbrock(2).fun, lambda x, v: v[:1], np.zeros(2)), ValueError,
     "hvp returned"),
    (lambda: newton(rosenbrock(2).fun, lambda x: np.eye(3), np.zeros(2)), ValueError,
     "hessian returned"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_x0_is_not_changed():
    x0 = np.array([-1.2, 1.0])
    res = lbfgs(rosenbrock(2).fun, x0)
    assert x0.tolist() == [-1.2, 1.0] and res.x is not x0


@pytest.mark.parametrize("power", [2, 4])
@pytest.mark.parametrize("method", ["newton_cg", "newton"])
def test_an_objective_unbounded_below_is_not_reported_as_converged(method, power):
    """-x^2 and -x^4: Newton's directions drive x until the step no longer moves it
    (x near 1e154 with the objective at -1.8e308, or x at 1e51), where the objective
    "changed by 0" and the run claimed convergence."""
    def f(x):
        with np.errstate(over="ignore", invalid="ignore"):
            return -x[0] ** power, np.array([-power * x[0] ** (power - 1)])
    with np.errstate(over="ignore", invalid="ignore"):
        if method == "newton_cg":
            r = newton_cg(f, lambda x, v: -power * (power - 1) * x[0] ** (power - 2) * v,
                          [0.1])
        else:
            r = newton(f, lambda x: np.array([[-power * (power - 1) * x[0] ** (power - 2)]]),
                       [0.1])
    assert not r.converged and r.stopped == "line_search", r.message
    assert "leaves the parameters unchanged" in r.message
    assert r.value < -1e100


def test_lossc_train_on_an_objective_unbounded_below_is_not_converged():
    m = lossc.compile("param x = 0.1\nloss = -x ^ 2\n", cache=False)
    with np.errstate(over="ignore", invalid="ignore"):
        result = lossc.train(m, optimizer=lossc.NewtonCG())
    assert result.stopped == "line_search", result.stopped_reason
    assert "leaves the parameters unchanged" in result.stopped_reason


@pytest.mark.parametrize("method", ["lbfgs", "newton_cg"])
def test_a_step_that_rounds_to_nothing_at_a_minimum_still_converges(method):
    """An ill-conditioned quadratic (condition 1e8, the optimum of size 1e3): near the
    optimum a step leaves x as it is, the objective "changed by 0", and the run
    converged on tol_loss; the stop for an objective unbounded below took it for one
    (line_search, "may be unbounded below")."""
    rng = np.random.default_rng(0)
    for n in (2, 5):            # (the draws of the case that stalled, in their order)
        for cond in (1, 1e4, 1e8):
            Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
            A = Q @ np.diag(np.logspace(0, np.log10(cond), n)) @ Q.T
            b = rng.normal(size=n) * 1e3
            if (n, cond) == (5, 1e8):
                break
    def f(x):
        return 0.5 * x @ A @ x - b @ x, A @ x - b
    if method == "lbfgs":
        r = lbfgs(f, np.zeros(5))
    else:
        r = newton_cg(f, lambda x, v: A @ v, np.zeros(5))
    assert r.converged and r.stopped in ("tol_loss", "tol_grad"), r.message
    x_star = np.linalg.solve(A, b)
    assert np.linalg.norm(r.x - x_star) <= 1e-4 * np.linalg.norm(x_star)
