"""The strong-Wolfe line search on the test functions of Moré and Thuente (1994), in NaN
regions and at rounding level, and the projected backtracking search."""
import math

import numpy as np
import pytest

from lossc.optim.linesearch import backtracking, strong_wolfe


def along(phi):
    """phi(a) -> (value, slope) as fun(x) -> (value, grad) on x = [a], searched along
    d = [1] from x = [0]."""
    def fun(x):
        value, slope = phi(float(x[0]))
        return value, np.array([slope])
    return fun


def mt1(a, beta=2.0):
    return -a / (a * a + beta), (a * a - beta) / (a * a + beta) ** 2


def mt2(a, beta=0.004):
    return (a + beta) ** 5 - 2 * (a + beta) ** 4, 5 * (a + beta) ** 4 - 8 * (a + beta) ** 3


def mt3(a, beta=0.01, ell=39):
    """Moré and Thuente's function 3: a smoothed |a - 1| with a ripple."""
    if a <= 1 - beta:
        v, s = 1 - a, -1.0
    elif a >= 1 + beta:
        v, s = a - 1, 1.0
    else:
        v, s = (a - 1) ** 2 / (2 * beta) + beta / 2, (a - 1) / beta
    c = 2 * (1 - beta) / (ell * math.pi)
    angle = ell * math.pi * a / 2
    return v + c * math.sin(angle), s + (1 - beta) * math.cos(angle)


def check_wolfe(phi, res, c1, c2):
    v0, s0 = phi(0.0)
    v, s = phi(res.step)
    assert res.wolfe and res.step > 0
    assert v <= v0 + c1 * res.step * s0
    assert abs(s) <= c2 * abs(s0)
    assert res.value == v and res.grad[0] == s


# (function, c1, c2) as in Moré and Thuente's tables 1-3 (which take c1 = c2 = 0.1 for
# functions 2 and 3, where c1 < c2 is asked here), from first steps 1e-3 .. 1e3
@pytest.mark.parametrize("phi,c1,c2", [(mt1, 1e-3, 0.1), (mt2, 0.05, 0.1), (mt3, 0.05, 0.1)],
                         ids=["mt1", "mt2", "mt3"])
@pytest.mark.parametrize("step", [1e-3, 1e-1, 1e1, 1e3])
def test_strong_wolfe_on_more_thuente_functions(phi, c1, c2, step):
    fun = along(phi)
    v0, s0 = phi(0.0)
    res = strong_wolfe(fun, np.zeros(1), v0, np.array([s0]), np.ones(1), step, c1, c2)
    check_wolfe(phi, res, c1, c2)
    # Moré and Thuente's own search takes 1-13 evaluations on these (their tables),
    # this one 1-15
    assert res.evals <= 16


def test_nan_beyond_a_point_is_backed_off():
    # finite only for a < 0.3; the first trial, 1, lands in the NaN region
    def phi(a):
        if a >= 0.3:
            return math.nan, math.nan
        return (a - 0.2) ** 2, 2 * (a - 0.2)
    calls = []

    def fun(x):
        calls.append(x[0])
        return along(phi)(x)
    res = strong_wolfe(fun, np.zeros(1), 0.04, np.array([-0.4]), np.ones(1), 1.0, 1e-4, 0.9)
    check_wolfe(phi, res, 1e-4, 0.9)
    assert res.step < 0.3 and res.evals == len(calls) <= 8
    assert any(c >= 0.3 for c in calls)      # it did go there


def test_infinite_gradient_counts_as_too_long():
    def phi(a):
        return (a - 1) ** 2, (math.inf if a > 3 else 2 * (a - 1))
    res = strong_wolfe(along(phi), np.zeros(1), 1.0, np.array([-2.0]), np.ones(1), 10.0)
    check_wolfe(phi, res, 1e-4, 0.9)


def test_no_finite_point_is_a_failure_at_step_zero():
    x, g = np.zeros(1), np.array([-1.0])
    res = strong_wolfe(lambda z: (math.nan, np.array([math.nan])), x, 0.0, g, np.ones(1),
                       max_evals=10)
    assert res.step == 0 and not res.wolfe and res.evals == 10
    assert res.value == 0.0 and res.x is x and res.grad is g


def test_sufficient_decrease_only_when_evaluations_run_out():
    # slope -1 everywhere up to a = 1e6: the curvature condition never holds, but every
    # trial decreases; with 3 evaluations the best (longest) of them is returned
    res = strong_wolfe(along(lambda a: (-a, -1.0)), np.zeros(1), 0.0, np.array([-1.0]),
                       np.ones(1), 1.0, max_evals=3)
    assert not res.wolfe and res.step > 1 and res.evals == 3
    assert res.value == -res.step


def test_values_equal_to_rounding_are_judged_by_slopes():
    # f = 1e8 + (x - 1)^2 / 2 from x = 1 + 1e-6: every value the search sees is 1e8 to
    # the last bit, so comparing values cannot find the minimum; the slopes can.
    def fun(x):
        return 1e8 + 0.5 * (x[0] - 1) ** 2, np.array([x[0] - 1])
    x0 = np.array([1 + 1e-6])
    v0, g0 = fun(x0)
    assert fun(np.array([1.0]))[0] == v0
    res = strong_wolfe(fun, x0, v0, g0, -g0, 1.0)
    assert res.wolfe and abs(res.x[0] - 1) < 1e-15


@pytest.mark.parametrize("kw,match", [
    ({"c1": 0.0}, "c1"), ({"c1": 0.5, "c2": 0.4}, "c2"), ({"c2": 1.0}, "c2"),
    ({"step": 0.0}, "first trial step"), ({"step": math.inf}, "first trial step"),
    ({"max_evals": 0}, "max_evals")])
def test_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        strong_wolfe(along(mt1), np.zeros(1), 0.0, np.array([-0.5]), np.ones(1), **kw)


def test_not_a_descent_direction():
    with pytest.raises(ValueError, match="not a descent direction"):
        strong_wolfe(along(mt1), np.zeros(1), 0.0, np.array([-0.5]), -np.ones(1))


def test_backtracking_projects_and_halves():
    # |x| on the orthant x >= 0 from x = 1 along d = -3: the first trial, -2, is
    # projected to 0 (the orthant's edge), which is accepted
    def fun(x):
        return float(abs(x[0])), np.array([np.sign(x[0])])
    x = np.array([1.0])
    res = backtracking(fun, x, 1.0, np.array([-3.0]), lambda z: float(z[0] - x[0]),
                       lambda z, g: 0.0, project=lambda z: np.maximum(z, 0.0))
    assert res.step == 1.0 and res.x[0] == 0.0 and res.evals == 1


def test_backtracking_backs_off_nan_and_fails_cleanly():
    def fun(x):
        return (math.nan, x) if x[0] < 0.5 else (float(x[0] ** 2), 2 * x)
    x = np.array([1.0])
    res = backtracking(fun, x, 1.0, np.array([-2.0]), lambda z: float(2 * (z[0] - 1)),
                       lambda z, g: 0.0, step=1.0)
    # trials 1 and 0.5 land on -1 and 0, NaN; 0.25 on 0.5, which decreases enough
    assert res.step == 0.25 and res.x[0] == 0.5 and res.evals == 3
    res = backtracking(lambda z: (math.nan, z), x, 1.0, np.array([-1.0]),
                       lambda z: -1.0, lambda z, g: 0.0, max_evals=5)
    assert res.step == 0 and res.grad is None and res.x is x and res.evals == 5
