"""OWL-QN: L-BFGS for f(x) + sum_i l1_i |x_i|, with exact zeros (Andrew and Gao,
"Scalable training of L1-regularized log-linear models", ICML 2007).

    res = owlqn(fun, x0, l1=0.1)                          # every coordinate penalized
    res = owlqn(fun, x0, l1=l1_weights(model, {"w": 0.1}))  # w only; b unpenalized

fun(x) -> (f(x), grad f(x)) is the smooth part only; `l1` is a number or a flat vector
of weights >= 0 (lossc.optim.prox), a weight of 0 leaving that coordinate free. The
objective reported (`value`, `history`) is the whole of f + l1 |x|.

Each iteration:
- the pseudo-gradient v, the minimum-norm subgradient of the objective: v_i = g_i +
  l1_i sign(x_i) where x_i != 0; at x_i = 0, g_i + l1_i if that is < 0, g_i - l1_i if
  that is > 0, else 0 (zero is optimal for that coordinate as long as |g_i| <= l1_i);
- the L-BFGS direction d = -H v (the pairs (s, y) use the gradients of f alone),
  with each penalized coordinate whose sign disagrees with -v set to 0;
- the orthant: xi_i = sign(x_i), or sign(-v_i) where x_i = 0; a backtracking line
  search (halving, from step 1; 1 / ||v||_2 with an empty history) over the projected
  points p(x + a d), where p zeroes each penalized coordinate that left its orthant,
  accepts the first with F(p) <= F(x) + c1 v'(p - x). Coordinates set to zero by the
  projection are exact zeros; they leave zero only when |g_i| > l1_i.

The stopping tests are L-BFGS's (lossc.optim.quasi_newton) with the pseudo-gradient in
place of the gradient: `grad` and `grad_norm` in the result are the pseudo-gradient's.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from lossc.optim import linesearch
from lossc.optim.quasi_newton import MAX_EVALS, MAX_ITER, TOL_GRAD, TOL_LOSS, History
from lossc.optim.prox import check_l1, l1_norm
from lossc.optim.solver import (Iterate, MinimizeResult, Objective, Point, count,
                                first_point, iterate, no_direction, start_point,
                                steepest_descent)

MAX_BACKTRACKS = 40     # halvings of the step: 2^-40 ~ 1e-12 of the first trial


def pseudo_gradient(x: np.ndarray, g: np.ndarray, l1) -> np.ndarray:
    """The minimum-norm subgradient of f + l1 |x| at x, from f's gradient g (module
    docstring); l1 a number or a vector of weights."""
    v = g + l1 * np.sign(x)
    at_zero = x == 0
    right, left = g + l1, g - l1         # the one-sided derivatives at x_i = 0
    v[at_zero] = np.where(right < 0, right, np.where(left > 0, left, 0.0))[at_zero]
    return v


def owlqn(fun: Callable, x0, l1, *, m: int = 10, tol_grad: float = TOL_GRAD,
          tol_loss: float = TOL_LOSS, max_iter: int = MAX_ITER,
          max_evals: int = MAX_EVALS,
          callback: Optional[Callable[[Iterate], Optional[bool]]] = None,
          c1: float = linesearch.C1, line_search_evals: int = MAX_BACKTRACKS
          ) -> MinimizeResult:
    """Minimize f(x) + sum_i l1_i |x_i| from x0 with OWL-QN (module docstring)."""
    x = start_point(x0)
    l1 = check_l1(l1, x.size)
    if l1 is None:
        raise ValueError("l1 must be a number >= 0 or a vector of weights (use lbfgs "
                         "for an objective without an L1 term)")
    smooth = Objective(fun, x.size)
    step = owlqn_step(smooth, l1, m=m, c1=c1, line_search_evals=line_search_evals)
    start = first_point(smooth, x)
    start.value += l1_norm(x, l1)
    return iterate(step, smooth, start, tol_grad=tol_grad, tol_loss=tol_loss,
                   max_iter=max_iter, max_evals=max_evals, callback=callback,
                   stationarity=lambda p: pseudo_gradient(p.x, p.grad, l1))


def owlqn_step(smooth: Objective, l1, *, m: int = 10, c1: float = linesearch.C1,
               line_search_evals: int = MAX_BACKTRACKS, first_step: float = 1.0
               ) -> Callable[[Point], "Point | str"]:
    """OWL-QN's iteration as a function step(point) -> the next Point, or a sentence
    saying why it could not move (lossc.optim.solver), keeping its pairs between calls:
    `owlqn` runs it, and so does the training driver, one iteration an epoch. `smooth`
    is f alone; a point's value is the whole objective f + l1 |x|, its grad f's
    gradient; l1 as checked by check_l1 (a float or a vector of smooth.n weights).
    first_step: the search's first trial step along the quasi-Newton direction."""
    linesearch.check_constants(c1)
    line_search_evals = count("line_search_evals", line_search_evals)
    penalized = l1 > 0 if isinstance(l1, np.ndarray) else np.full(smooth.n, l1 > 0)

    def whole(z):
        """(f + l1|z|, f's gradient): the line search's objective."""
        value, grad = smooth(z)
        return value + l1_norm(z, l1), grad

    history = History(m)

    def search(p: Point, v: np.ndarray, d: np.ndarray, step: float):
        orthant = np.where(p.x != 0, np.sign(p.x), -np.sign(v))
        # on the closed orthant the objective is smooth, f(z) + (l1 orthant)'z: its
        # gradient there gives the slopes for steps the values cannot tell apart
        face = l1 * orthant

        def project(z):
            z[penalized & (np.sign(z) != orthant)] = 0.0
            return z

        def trapezoid(z, g):
            return 0.5 * float(np.dot(p.grad + g + 2 * face, z - p.x))
        return linesearch.backtracking(
            whole, p.x, p.value, d, lambda z: float(np.dot(v, z - p.x)), trapezoid, step,
            c1, max_evals=line_search_evals, project=project)

    def step(p: Point):
        v = pseudo_gradient(p.x, p.grad, l1)
        ls = None
        if history:
            d = history.direction(v)
            d[penalized & (d * v >= 0)] = 0.0     # keep to the orthant of -v
            if np.dot(d, v) < 0:
                ls = search(p, v, d, first_step)
        if ls is None or ls.step == 0:
            history.clear()
            d = steepest_descent(v)
            if d is None:
                return no_direction(v)
            ls = search(p, v, d, 1.0)
            if ls.step == 0:
                return "the line search found no decrease along the pseudo-gradient"
        history.push_step(ls.x, p.x, ls.grad, p.grad)
        return Point(ls.x, ls.value, ls.grad)
    return step
