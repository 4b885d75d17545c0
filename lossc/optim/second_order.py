"""Newton's method over callables: Newton-CG on Hessian-vector products, and Newton on
whole Hessians for small problems.

    res = newton_cg(fun, hvp, x0)        # fun(x) -> (value, grad), hvp(x, v) -> H(x) v
    res = newton(fun, hessian, x0)       # hessian(x) -> the n x n matrix H(x)

Newton-CG (Nocedal and Wright, algorithm 7.1, "line search Newton-CG"): each iteration
solves H d = -g approximately by conjugate gradients on hvp(x, .), stopping when the
residual is at most eta ||g||_2 with the forcing sequence eta = min(0.5, sqrt(||g||_2))
(superlinear convergence), or at max_cg iterations, or, Steihaug-style, at the first
direction p of non-positive curvature p'Hp <= 0: the iterate reached so far is the
direction then (-g if that happens at once). A strong-Wolfe line search from step 1
(lossc.optim.linesearch) follows; if it finds no decrease, the iteration is retried
along -g.

Newton with Hessians: d solves (H + tau I) d = -g by a Cholesky factorization, tau = 0
when H is positive definite; otherwise tau grows from beta = 1e-3 max|H_ii| (or past
-min H_ii) by doubling until the factorization succeeds (Nocedal and Wright, algorithm
3.3), so that d is a descent direction; `hessian_shifts` in the result counts such
iterations. Then the same line search.

The stopping tests are those of lossc.optim.solver (tol_grad on ||g||_inf, tol_loss,
max_iter, max_evals, the callback, a failed line search, KeyboardInterrupt); the
result counts hvp calls (`hvp_evaluations`) and Hessians (`hessian_evaluations`).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import numpy as np

from lossc.optim import linesearch
from lossc.optim.quasi_newton import TOL_GRAD, TOL_LOSS
from lossc.optim.solver import (Iterate, MinimizeResult, Objective, Point, count,
                                first_point, iterate, no_direction, start_point,
                                steepest_descent, two_norm)
from lossc.runtime.derivatives import symmetrized

MAX_ITER = 200
CG_ITER_PER_COORDINATE = 20     # max_cg default: 20 n, as scipy's Newton-CG
MAX_SHIFTS = 100                # doublings of tau before a Hessian is given up on


class CGResult(NamedTuple):
    d: np.ndarray               # the direction found
    iterations: int             # CG iterations (one hvp each)
    stopped: str                # residual, negative_curvature or max_iter


def truncated_cg(hvp: Callable[[np.ndarray], np.ndarray], g: np.ndarray, tol: float,
                 max_iter: int) -> CGResult:
    """Conjugate gradients on H d = -g, H given as hvp(v) = H v, from d = 0, until the
    residual ||H d + g||_2 <= tol, max_iter iterations, or a direction of non-positive
    (or non-finite) curvature (then the d reached so far, or -g at the first)."""
    d = np.zeros_like(g)
    r = np.array(g, dtype=np.float64)        # the residual H d + g
    p = -r
    rr = float(np.dot(r, r))
    for j in range(max_iter):
        hp = hvp(p)
        curvature = float(np.dot(p, hp))
        if not curvature > 0 or not math.isfinite(curvature):
            return CGResult(-g if j == 0 else d, j + 1, "negative_curvature")
        alpha = rr / curvature
        d += alpha * p
        r += alpha * hp
        rr_next = float(np.dot(r, r))
        if math.sqrt(rr_next) <= tol:
            return CGResult(d, j + 1, "residual")
        p *= rr_next / rr
        p -= r
        rr = rr_next
    return CGResult(d, max_iter, "max_iter")


def _search(obj, c1, c2, line_search_evals, first_step: float = 1.0):
    """The step of both methods: the line search along d from first_step (1: the
    natural step of a Newton direction), retried along -g / ||g||_2 (from 1) when it
    finds no decrease or d is not a descent direction."""
    def move(p: Point, d: np.ndarray):
        ls = None
        if np.dot(d, p.grad) < 0:
            ls = linesearch.strong_wolfe(obj, p.x, p.value, p.grad, d, first_step, c1,
                                         c2, line_search_evals)
        if ls is None or ls.step == 0:
            d = steepest_descent(p.grad)
            if d is None:
                return no_direction(p.grad)
            ls = linesearch.strong_wolfe(obj, p.x, p.value, p.grad, d, 1.0, c1, c2,
                                         line_search_evals)
            if ls.step == 0:
                return "the line search found no decrease along the Newton direction "\
                       "or -g"
        return Point(ls.x, ls.value, ls.grad)
    return move


def newton_cg(fun: Callable, hvp: Callable, x0, *, tol_grad: float = TOL_GRAD,
              tol_loss: float = TOL_LOSS, max_iter: int = MAX_ITER,
              max_evals: int = 100 * MAX_ITER, max_cg: Optional[int] = None,
              callback: Optional[Callable[[Iterate], Optional[bool]]] = None,
              c1: float = linesearch.C1, c2: float = linesearch.C2,
              line_search_evals: int = linesearch.MAX_EVALS) -> MinimizeResult:
    """Minimize f from x0 by Newton-CG (module docstring). fun(x) -> (value, gradient);
    hvp(x, v) -> the Hessian at x times v; max_cg: CG iterations per Newton iteration
    (default 20 n)."""
    x = start_point(x0)
    obj = Objective(fun, x.size)
    step = NewtonCGStep(obj, hvp, max_cg=max_cg, c1=c1, c2=c2,
                        line_search_evals=line_search_evals)
    return iterate(step, obj, first_point(obj, x), tol_grad=tol_grad, tol_loss=tol_loss,
                   max_iter=max_iter, max_evals=max_evals, callback=callback,
                   counts=lambda: {"hvp_evaluations": step.hvp_evaluations})


class NewtonCGStep:
    """Newton-CG's iteration, called as step(point) -> the next Point, or a sentence
    saying why it could not move (lossc.optim.solver): `newton_cg` runs it, and so does
    the training driver, one iteration an epoch. hvp(x, v) -> H(x) v;
    `hvp_evaluations` counts its calls. first_step: the line search's first trial step
    along the Newton direction."""

    def __init__(self, obj: Objective, hvp: Callable, *, max_cg: Optional[int] = None,
                 c1: float = linesearch.C1, c2: float = linesearch.C2,
                 line_search_evals: int = linesearch.MAX_EVALS, first_step: float = 1.0):
        linesearch.check_constants(c1, c2)
        if not callable(hvp):
            raise TypeError(f"hvp must be a callable hvp(x, v) -> H v, got "
                            f"{type(hvp).__name__}")
        self.n, self.hvp = obj.n, hvp
        # (at least 1: a model without parameters has n = 0)
        self.max_cg = count("max_cg", max(1, CG_ITER_PER_COORDINATE * obj.n)
                            if max_cg is None else max_cg)
        self.move = _search(obj, c1, c2, count("line_search_evals", line_search_evals),
                            first_step)
        self.hvp_evaluations = 0

    def product(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """v -> H(x) v, checked and counted."""
        def hv(v):
            self.hvp_evaluations += 1
            out = np.asarray(self.hvp(x, v), dtype=np.float64)
            if out.shape != (self.n,):
                raise ValueError(f"hvp returned shape {out.shape}; x has shape ({self.n},)")
            return out
        return hv

    def __call__(self, p: Point):
        # CG runs on g / ||g|| to a residual of eta, and its direction is scaled back
        # (it is linear in g from d = 0): a gradient past 1e154 would overflow r'r.
        gnorm = two_norm(p.grad)
        scale = gnorm if 0 < gnorm < math.inf else 1.0
        eta = min(0.5, math.sqrt(gnorm))
        cg = truncated_cg(self.product(p.x), p.grad / scale, eta, self.max_cg)
        return self.move(p, cg.d * scale)


def shifted_cholesky(h: np.ndarray) -> tuple[np.ndarray, float]:
    """(L, tau) with L L' = H + tau I, tau >= 0 the first of 0, beta, 2 beta, ... (or
    starting past -min H_ii) for which the factorization succeeds (module docstring)."""
    diag = np.diag(h)
    beta = 1e-3 * max(float(np.max(np.abs(diag))), np.finfo(np.float64).tiny)
    tau = 0.0 if np.min(diag) > 0 else -float(np.min(diag)) + beta
    eye = np.eye(h.shape[0])
    for _ in range(MAX_SHIFTS):
        try:
            return np.linalg.cholesky(h + tau * eye if tau else h), tau
        except np.linalg.LinAlgError:
            tau = max(2 * tau, beta)
    raise np.linalg.LinAlgError("no multiple of I made the Hessian positive definite")


def newton(fun: Callable, hessian: Callable, x0, *, tol_grad: float = TOL_GRAD,
           tol_loss: float = TOL_LOSS, max_iter: int = MAX_ITER,
           max_evals: int = 100 * MAX_ITER,
           callback: Optional[Callable[[Iterate], Optional[bool]]] = None,
           c1: float = linesearch.C1, c2: float = linesearch.C2,
           line_search_evals: int = linesearch.MAX_EVALS) -> MinimizeResult:
    """Minimize f from x0 by Newton's method with whole Hessians (module docstring), for
    small problems: hessian(x) -> the n x n Hessian at x."""
    linesearch.check_constants(c1, c2)
    x = start_point(x0)
    n = x.size
    obj = Objective(fun, n)
    if not callable(hessian):
        raise TypeError(f"hessian must be a callable hessian(x) -> H, got "
                        f"{type(hessian).__name__}")
    move = _search(obj, c1, c2, count("line_search_evals", line_search_evals))
    counts = {"hessian_evaluations": 0, "hessian_shifts": 0}

    def step(p: Point):
        h = np.asarray(hessian(p.x), dtype=np.float64)
        counts["hessian_evaluations"] += 1
        if h.shape != (n, n):
            raise ValueError(f"hessian returned shape {h.shape}; it must be ({n}, {n})")
        if not np.all(np.isfinite(h)):
            return "the Hessian is not finite"
        try:
            low, tau = shifted_cholesky(symmetrized(h))
        except np.linalg.LinAlgError as e:
            return str(e)
        counts["hessian_shifts"] += tau > 0
        d = -np.linalg.solve(low.T, np.linalg.solve(low, p.grad))
        return move(p, d)

    return iterate(step, obj, first_point(obj, x), tol_grad=tol_grad, tol_loss=tol_loss,
                   max_iter=max_iter, max_evals=max_evals, callback=callback,
                   counts=lambda: dict(counts))
