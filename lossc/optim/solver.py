"""What the library's full-batch minimizers share: the objective wrapper that checks
and counts calls, the iteration loop with its stopping tests, and the result.

A method is a `step(point) -> Point | str` function: from the current point (x, the
objective's value, its gradient) to the next one, or a sentence saying why it could not
move (its line search found no decrease). `iterate` runs it and stops at the first of:

    tol_grad    the stationarity measure ||g||_inf <= tol_grad (g: the gradient, or
                OWL-QN's pseudo-gradient), as scipy's L-BFGS-B measures its projected
                gradient, so the two stop at the same points; also checked at x0
    tol_loss    the relative change (f_prev - f) / max(|f_prev|, |f|, 1) <= tol_loss,
                scipy's `ftol` test (tol_loss=0 still stops when f no longer decreases)
    (either tolerance None: that test is off; a stationarity measure of exactly 0
    stops as tol_grad whatever the tolerance: there is no direction to move in)
    max_iter    that many iterations
    max_evals   that many objective evaluations (checked after each iteration)
    callback    callback(Iterate(iteration, x, value, grad_norm)) returned True
    line_search the method could not find a step that decreases the objective (the
                point is then the best seen, as every accepted step decreases it)
    interrupted KeyboardInterrupt: the result holds the last accepted point

As in lossc's training driver, `history[0]` is the objective at x0 and `history[k]`
after iteration k, and the result always holds the best point seen (here: the last
one, since every step decreases the objective).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import numpy as np

from lossc.optim.monitor import asks_to_stop

CONVERGED = ("tol_grad", "tol_loss")


class Iterate(NamedTuple):
    """What a callback sees after each iteration. `x` is the current point: read or
    copy it, do not change it."""

    iteration: int
    x: np.ndarray
    value: float
    grad_norm: float


@dataclass
class Point:
    x: np.ndarray
    value: float
    grad: np.ndarray


@dataclass
class MinimizeResult:
    x: np.ndarray                 # the final (and best) point
    value: float                  # the objective there
    grad: np.ndarray              # its gradient (OWL-QN: the pseudo-gradient)
    grad_norm: float              # ||grad||_inf, the stationarity measure
    iterations: int
    evaluations: int              # calls of fun
    stopped: str                  # tol_grad, tol_loss, max_iter, max_evals, callback,
                                  # line_search or interrupted (see lossc.optim.solver)
    message: str                  # the same, as a sentence for people
    history: list = field(default_factory=list)   # [0] at x0, [k] after iteration k
    hvp_evaluations: int = 0      # Newton-CG: Hessian-vector products
    hessian_evaluations: int = 0  # Newton: Hessians
    hessian_shifts: int = 0       # Newton: iterations whose Hessian was not positive
                                  # definite and was shifted by a multiple of I

    @property
    def converged(self) -> bool:
        """True when a tolerance stopped it (tol_grad or tol_loss)."""
        return self.stopped in CONVERGED

    def __repr__(self) -> str:
        return (f"MinimizeResult(stopped={self.stopped!r}, value={self.value:.10g}, "
                f"grad_norm={self.grad_norm:.3g}, iterations={self.iterations}, "
                f"evaluations={self.evaluations})")


class Objective:
    """fun(x) -> (value, grad) as a float and a float64 array of x's shape, counted.
    A gradient of another shape is a ValueError naming `fun`."""

    def __init__(self, fun: Callable, n: int, what: str = "fun"):
        if not callable(fun):
            raise TypeError(f"{what} must be a callable returning (value, gradient), got "
                            f"{type(fun).__name__}")
        self.fun, self.n, self.what = fun, n, what
        self.evals = 0

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.evals += 1
        out = self.fun(x)
        try:
            value, grad = out
        except (TypeError, ValueError):
            raise ValueError(f"{self.what} must return (value, gradient), got "
                             f"{type(out).__name__}") from None
        if type(grad) is not np.ndarray or grad.dtype != np.float64:
            grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != (self.n,):
            raise ValueError(f"{self.what} returned a gradient of shape {grad.shape}; x "
                             f"has shape ({self.n},)")
        return float(value), grad


def start_point(x0, what: str = "x0") -> np.ndarray:
    """x0 as a new flat float64 vector (the caller's array is never changed)."""
    x = np.array(x0, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what} must be a non-empty flat vector, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} has a NaN or infinite coordinate: "
                         f"{what}[{int(np.flatnonzero(~np.isfinite(x))[0])}]")
    return x


def first_point(obj: Objective, x: np.ndarray) -> Point:
    value, grad = obj(x)
    if not (math.isfinite(value) and np.all(np.isfinite(grad))):
        what = "objective" if not math.isfinite(value) else "gradient"
        raise ValueError(f"the {what} at x0 is not finite (value {value}); start from a "
                         f"point where the objective and its gradient are finite")
    return Point(x, value, grad)


def count(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum:
        return int(v)
    raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


def tolerance(name: str, v) -> Optional[float]:
    """v as a float (None stays None: the test is off)."""
    if v is None:
        return None
    if isinstance(v, numbers.Real) and not isinstance(v, bool) and v >= 0:
        return float(v)
    raise ValueError(f"{name} must be a number >= 0, got {v!r}")


def inf_norm(g: np.ndarray) -> float:
    """The largest |g_i|; 0 for no elements (a model without parameters)."""
    if not g.size:
        return 0.0
    return float(np.maximum.reduce(np.abs(g)))      # (np.max's Python wrappers cost more)


def steepest_descent(g: np.ndarray) -> Optional[np.ndarray]:
    """-g / ||g||_2: steepest descent at unit length, whose natural first trial step is
    1 (a step of length 1). Taken of g over its largest element: ||g||^2, and the line
    search's products g . d with d = -g, overflow from a finite ||g|| of 1.3e154
    (exp(360)'s gradient, say). None for a g of zeros or with an infinity or NaN: no
    direction."""
    # (inf_norm's body, not a call to it: L-BFGS's iteration is a budget of Python calls,
    # tests/test_train_fullbatch.py)
    top = float(np.maximum.reduce(np.abs(g))) if g.size else 0.0
    if not 0 < top < math.inf:
        return None
    unit = g / top
    return unit / -float(np.linalg.norm(unit))


def no_direction(g: np.ndarray) -> str:
    """Why a step along -g cannot be taken (steepest_descent gave None)."""
    return (f"the gradient is {'0' if inf_norm(g) == 0 else 'not finite'} (no direction "
            "to search along)")


def two_norm(g: np.ndarray) -> float:
    """The Euclidean norm of a vector: infinite only if an element is not finite (or
    the norm passes float64's largest). The dot product of g with itself under- or
    overflows (from a norm of 1.3e154 in float64, 1.8e19 in float32): outside a safe
    range of |g|'s largest element, and for float32, it is taken of g over that element
    in float64."""
    # (inf_norm's body, not a call to it: L-BFGS's iteration is a budget of Python calls,
    # tests/test_train_fullbatch.py)
    top = float(np.maximum.reduce(np.abs(g))) if g.size else 0.0
    if not 0 < top < math.inf:
        return top          # (0, inf or NaN)
    if g.dtype == np.float64 and _SQUARES_SAFE[0] < top < _SQUARES_SAFE[1]:
        return math.sqrt(float(np.dot(g, g)))
    unit = g.astype(np.float64) / top
    return top * math.sqrt(float(np.dot(unit, unit)))


_SQUARES_SAFE = (1e-140, 1e140)     # float64 elements whose squares add up normally


# why a step that leaves every parameter where it was, the gradient larger than at
# the start, ends a run, not as converged
UNMOVED = ("the step leaves the parameters unchanged with the gradient larger than at "
           "the start (the objective may be unbounded below)")


def unmoved_away_from_a_minimum(point, nxt, initial_gnorm: float, stationarity) -> bool:
    """Whether the step from `point` to `nxt` left every parameter where it was while
    the gradient grew past its size at the start: an objective that "changed by 0"
    then shows no minimum (-x^2 or -x^4 from Newton's directions stall so, at -1.8e308
    or with x at 1e51). A step that rounds to nothing near a minimum (an ill-conditioned
    quadratic) has a gradient far below the start's, and stops on tol_loss as before."""
    return (nxt.value == point.value and np.array_equal(nxt.x, point.x)
            and not inf_norm(stationarity(nxt)) <= initial_gnorm)


def relative_change(before: float, after: float) -> float:
    return (before - after) / max(abs(before), abs(after), 1.0)


def iterate(step: Callable[[Point], "Point | str"], obj: Objective, point: Point, *,
            tol_grad: float, tol_loss: float, max_iter: int, max_evals: int,
            callback: Optional[Callable[[Iterate], Optional[bool]]] = None,
            stationarity: Callable[[Point], np.ndarray] = lambda p: p.grad,
            counts: Optional[Callable[[], dict]] = None) -> MinimizeResult:
    """Run `step` from `point` until a stopping test holds (module docstring).
    stationarity(point) is the vector whose inf-norm is tested against tol_grad (the
    gradient, or OWL-QN's pseudo-gradient); counts() adds the method's own counts
    (hvp_evaluations, ...) to the result."""
    run = _Run(step, obj, point, tolerance("tol_grad", tol_grad),
               tolerance("tol_loss", tol_loss), count("max_iter", max_iter),
               count("max_evals", max_evals), callback, stationarity)
    try:
        stopped, message = run.loop()
    except KeyboardInterrupt:
        stopped, message = "interrupted", "interrupted; the last accepted point is kept"
    point = run.point
    g = stationarity(point)
    return MinimizeResult(point.x, point.value, g, inf_norm(g), len(run.history) - 1,
                          obj.evals, stopped, message, run.history,
                          **(counts() if counts else {}))


class _Run:
    """The loop's state: `point`, the last accepted point, is current at every moment,
    so that an interrupt anywhere (in fun, in the line search) leaves it."""

    def __init__(self, step, obj, point, tol_grad, tol_loss, max_iter, max_evals,
                 callback, stationarity):
        if callback is not None and not callable(callback):
            raise TypeError("callback must be a callable taking an Iterate, or None")
        self.step, self.obj, self.point = step, obj, point
        self.tol_grad, self.tol_loss = tol_grad, tol_loss
        self.max_iter, self.max_evals = max_iter, max_evals
        self.callback, self.stationarity = callback, stationarity
        self.history = [point.value]

    def loop(self) -> tuple[str, str]:
        tol_grad = self.tol_grad
        gnorm = self.initial_gnorm = inf_norm(self.stationarity(self.point))
        if gnorm == 0:
            return "tol_grad", "converged at x0: the gradient is 0"
        if tol_grad is not None and gnorm <= tol_grad:
            return "tol_grad", (f"converged at x0: the gradient norm is {gnorm:.3g} <= "
                                f"{tol_grad:g}")
        for k in range(1, self.max_iter + 1):
            nxt = self.step(self.point)
            if isinstance(nxt, str):
                return "line_search", f"iteration {k}: {nxt}; the best point so far is kept"
            if unmoved_away_from_a_minimum(self.point, nxt, self.initial_gnorm,
                                           self.stationarity):
                return "line_search", (f"iteration {k}: {UNMOVED}; the best point so far "
                                       "is kept")
            before, self.point = self.point.value, nxt
            self.history.append(nxt.value)
            gnorm = inf_norm(self.stationarity(nxt))
            if self.callback is not None and \
                    asks_to_stop(self.callback(Iterate(k, nxt.x, nxt.value, gnorm))):
                return "callback", f"stopped by the callback after iteration {k}"
            if gnorm == 0:
                return "tol_grad", f"converged: the gradient is 0 after iteration {k}"
            if tol_grad is not None and gnorm <= tol_grad:
                return "tol_grad", (f"converged: the gradient norm is {gnorm:.3g} <= "
                                    f"{tol_grad:g} after iteration {k}")
            change = relative_change(before, nxt.value)
            if self.tol_loss is not None and change <= self.tol_loss:
                return "tol_loss", (f"converged: the objective changed by {change:.3g} "
                                    f"(relative) <= {self.tol_loss:g} in iteration {k}")
            if self.obj.evals >= self.max_evals:
                return "max_evals", (f"stopped after {self.obj.evals} evaluations of the "
                                     f"objective (max_evals={self.max_evals}), at "
                                     f"iteration {k}")
        return "max_iter", f"stopped after max_iter={self.max_iter} iterations"
