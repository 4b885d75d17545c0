"""L-BFGS over a callable: minimize f given fun(x) -> (f(x), grad f(x)) on a flat
float64 vector.

    res = lbfgs(fun, x0, m=10, tol_grad=1e-5)
    res.x, res.value, res.grad_norm, res.iterations, res.evaluations, res.stopped

Each iteration takes the quasi-Newton direction d = -H g of the last `m` steps
(Nocedal and Wright, algorithm 7.4, the two-loop recursion), with the initial inverse
Hessian gamma I, gamma = s'y / y'y of the newest pair, and a strong-Wolfe line search
(lossc.optim.linesearch) starting at step 1. The first iteration, and any after the
history was cleared, step along -g / ||g||_2 starting at 1 (a unit move in x;
solver.steepest_descent). A zero gradient is a stationary point: the run has
converged, whatever tol_grad says.

A pair (s, y) = (x_new - x, g_new - g) is kept only if its curvature s'y exceeds
eps * y'y (machine epsilon): one without positive curvature would make H indefinite,
so it is skipped. If the direction is not a descent direction (rounding, with a
nearly singular history) or the line search finds no decrease along it, the history is
cleared and the iteration retried along -g; if that fails too, the run stops
("line_search").

Stopping (lossc.optim.solver): ||g||_inf <= tol_grad, the relative change of the
objective <= tol_loss, max_iter, max_evals, the callback, a failed line search or
KeyboardInterrupt. The defaults are scipy's L-BFGS-B ones (gtol 1e-5, ftol 2.2e-9,
maxiter and maxfun 15000), whose gradient test is the same inf-norm.
"""
from __future__ import annotations

import ctypes
from typing import Callable, Optional

import numpy as np

from lossc.optim import linesearch
from lossc.optim.solver import (Iterate, MinimizeResult, Objective, Point, count,
                                first_point, iterate, no_direction, start_point,
                                steepest_descent)

EPS = np.finfo(np.float64).eps
TOL_GRAD = 1e-5
TOL_LOSS = 1e7 * EPS     # scipy's factr 1e7, as ftol
MAX_ITER = 15000
MAX_EVALS = 15000


class History:
    """The last m curvature pairs (s, y) and the two-loop product with them.

    The pairs are rows of two (m + 1, n) arrays: m in use (`order`, oldest first) and
    a spare, which receives each new pair and, kept, takes the place of the oldest,
    whose rows become the spare. The product works in two vectors of its own: an
    iteration allocates nothing here but the direction it returns. Each dot product
    is one BLAS ddot of two vectors, as in the textbook loop (and bit for bit its
    result): a matrix-vector product over the history would be a dgemv, which OpenBLAS
    may run on its threads for large enough histories.

    two_loop, lossc_lbfgs_two_loop (codegen/two_loop.py, as the training driver passes
    it): the product in native code over the same rows instead, one call, no BLAS;
    the same operations but for the order in which its dot products add."""

    def __init__(self, m: int, two_loop=None):
        self.m = count("m", m)
        self.s_rows = self.y_rows = None    # m + 1 views each, made at the first push
        self.rho = [0.0] * (self.m + 1)     # 1 / s'y of each row in use
        self.order = []                     # the rows in use, oldest first
        self.free = list(range(self.m, -1, -1))     # the others; free[-1] the spare
        self.alphas = [0.0] * (self.m + 1)
        self.q = self.scaled = None         # the product's work vectors
        self.skipped = 0
        # the product in native code (codegen/two_loop.py), or None: in NumPy
        self.two_loop = two_loop
        self.native = None                  # its frame and arrays, made at the first push

    def __len__(self) -> int:
        return len(self.order)

    def clear(self) -> None:
        self.free[:0] = self.order
        self.order.clear()

    def push(self, s: np.ndarray, y: np.ndarray) -> bool:
        """Keep the pair if its curvature s'y is positive enough (see the module
        docstring); whether it was kept. s and y are copied."""
        spare = self._spare(s.size)
        self.s_rows[spare][...] = s
        self.y_rows[spare][...] = y
        return self._keep(spare)

    def push_step(self, x_new: np.ndarray, x: np.ndarray, g_new: np.ndarray,
                  g: np.ndarray) -> bool:
        """push(x_new - x, g_new - g), the differences written straight into the rows."""
        spare = self._spare(x.size)
        np.subtract(x_new, x, out=self.s_rows[spare])
        np.subtract(g_new, g, out=self.y_rows[spare])
        return self._keep(spare)

    def _spare(self, n: int) -> int:
        if self.s_rows is None:
            S, Y = np.empty((self.m + 1, n)), np.empty((self.m + 1, n))
            self.s_rows, self.y_rows = list(S), list(Y)
            self.q, self.scaled = np.empty(n), np.empty(n)
            if self.two_loop is not None:
                self.native = _NativeTwoLoop(self.two_loop, S, Y)
        return self.free[-1]

    def _keep(self, row: int) -> bool:
        s, y = self.s_rows[row], self.y_rows[row]
        sy, yy = float(s.dot(y)), float(y.dot(y))
        if not (sy > EPS * yy) or not np.isfinite(sy) or not np.isfinite(yy):
            self.skipped += 1
            return False
        self.rho[row] = 1.0 / sy
        if self.native is not None:
            self.native.rho[row] = self.rho[row]
        self.order.append(self.free.pop())
        if len(self.order) > self.m:
            self.free.append(self.order.pop(0))
        return True

    def direction(self, g: np.ndarray) -> np.ndarray:
        """-H g, H the L-BFGS inverse Hessian approximation (-g with no pairs)."""
        if not self.order:
            return -np.asarray(g, dtype=np.float64)
        if self.native is not None:
            return self.native.direction(self.order, g)
        S, Y, rho, alphas = self.s_rows, self.y_rows, self.rho, self.alphas
        q, scaled, multiply = self.q, self.scaled, np.multiply
        q[...] = g
        for k in reversed(self.order):          # q -= a y, newest pair first
            a = alphas[k] = rho[k] * S[k].dot(q)
            q -= multiply(Y[k], a, out=scaled)
        newest = self.order[-1]
        q *= 1.0 / (rho[newest] * Y[newest].dot(Y[newest]))     # gamma = s'y / y'y
        for k in self.order:                    # q += (a - b) s, oldest pair first
            b = rho[k] * Y[k].dot(q)
            q += multiply(S[k], alphas[k] - b, out=scaled)
        return -q


class _NativeTwoLoop:
    """History.direction by lossc_lbfgs_two_loop: its frame (abi.LBFGS_TWO_LOOP) over
    the history's rows, filled once; a call sets the pairs in use and copies g in."""

    def __init__(self, function, S: np.ndarray, Y: np.ndarray):
        from lossc.codegen.abi import LBFGS_TWO_LOOP
        from lossc.runtime.calls import _addr
        self.function = function
        rows, n = S.shape
        self.S, self.Y = S, Y               # (kept alive: the frame holds their addresses)
        self.order = np.zeros(rows, dtype=np.int64)
        self.rho, self.alpha, self.q = np.zeros(rows), np.zeros(rows), np.empty(n)
        self.frame = frame = LBFGS_TWO_LOOP.new()
        frame.n = n
        frame.order, frame.s, frame.y = _addr(self.order), _addr(S), _addr(Y)
        frame.rho, frame.alpha, frame.q = _addr(self.rho), _addr(self.alpha), _addr(self.q)
        self.address = ctypes.addressof(frame)

    def direction(self, order: list, g: np.ndarray) -> np.ndarray:
        pairs = len(order)
        self.order[:pairs] = order
        self.frame.pairs = pairs
        self.q[...] = g
        self.function(self.address)
        return self.q.copy()


def lbfgs(fun: Callable, x0, *, m: int = 10, tol_grad: float = TOL_GRAD,
          tol_loss: float = TOL_LOSS, max_iter: int = MAX_ITER,
          max_evals: int = MAX_EVALS,
          callback: Optional[Callable[[Iterate], Optional[bool]]] = None,
          c1: float = linesearch.C1, c2: float = linesearch.C2,
          line_search_evals: int = linesearch.MAX_EVALS) -> MinimizeResult:
    """Minimize f from x0 with L-BFGS (module docstring). fun(x) -> (value, gradient);
    m: pairs kept; c1, c2, line_search_evals: the line search's (see
    lossc.optim.linesearch); callback(Iterate(iteration, x, value, grad_norm)) after
    each iteration stops the run by returning True."""
    x = start_point(x0)
    obj = Objective(fun, x.size)
    step = lbfgs_step(obj, m=m, c1=c1, c2=c2, line_search_evals=line_search_evals)
    return iterate(step, obj, first_point(obj, x), tol_grad=tol_grad, tol_loss=tol_loss,
                   max_iter=max_iter, max_evals=max_evals, callback=callback)


def lbfgs_step(obj: Objective, *, m: int = 10, c1: float = linesearch.C1,
               c2: float = linesearch.C2, line_search_evals: int = linesearch.MAX_EVALS,
               first_step: float = 1.0, two_loop=None) -> Callable[[Point], "Point | str"]:
    """L-BFGS's iteration as a function step(point) -> the next Point, or a sentence
    saying why it could not move (lossc.optim.solver), keeping its pairs between calls:
    `lbfgs` runs it, and so does the training driver, one iteration an epoch.
    first_step: the line search's first trial step along the quasi-Newton direction;
    two_loop: the native product (History), as the driver passes it."""
    linesearch.check_constants(c1, c2)
    line_search_evals = count("line_search_evals", line_search_evals)
    history = History(m, two_loop)

    def search(p: Point, d: np.ndarray, step: float):
        return linesearch.strong_wolfe(obj, p.x, p.value, p.grad, d, step, c1, c2,
                                       line_search_evals)

    def step(p: Point):
        ls = None
        if history.order:
            d = history.direction(p.grad)
            if d.dot(p.grad) < 0:
                ls = search(p, d, first_step)
        if ls is None or ls.step == 0:
            history.clear()
            d = steepest_descent(p.grad)
            if d is None:
                return no_direction(p.grad)
            ls = search(p, d, 1.0)
            if ls.step == 0:
                return "the line search found no decrease along -g"
        history.push_step(ls.x, p.x, ls.grad, p.grad)
        return Point(ls.x, ls.value, ls.grad)
    return step
