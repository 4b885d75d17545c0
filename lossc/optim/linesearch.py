"""Line searches: a strong-Wolfe search for L-BFGS and Newton, and a projected
backtracking search for OWL-QN.

`strong_wolfe` looks along a descent direction d from x for a step a with

    f(x + a d) <= f(x) + c1 a g'd           (sufficient decrease, Armijo)
    |g(x + a d)'d| <= c2 |g'd|              (strong curvature condition)

by the bracketing and zoom of Nocedal and Wright (Numerical Optimization, 2nd ed.,
algorithms 3.5 and 3.6), with each trial step the minimizer of the cubic through the
values and slopes at the ends of the interval, kept at least a tenth of the interval
away from the worse end (else the midpoint), and the midpoint whenever two trials did
not shrink the interval to 2/3 of its width (Moré and Thuente's safeguard). While
bracketing, the step grows by cubic extrapolation, between 1.1 and 4 times the last
increase.

A trial where the objective or its gradient is NaN or infinite (x + a d left the
domain: a log of a negative number, an overflowing exp) counts as a step that was too
long: it becomes the far end of the bracket, and the next trial is the midpoint towards
the last finite one. So the search backs off a NaN region instead of stopping there.

Near a minimum the objective's values stop telling steps apart: differences of a few
ulps are rounding, and a search that compares them stalls (the last digits of x that
the gradient still determines are lost). So where two values differ by less than
`value_rtol` (default 1e-10) relative, their difference is taken instead from the slopes,
as the trapezoid rule gives it, (a_2 - a_1) (slope_1 + slope_2) / 2, exact for a
quadratic: the approximate Wolfe conditions of Hager and Zhang (CG_DESCENT, 2005), used
only where the values cannot decide.

Parameters: c1 (default 1e-4) and c2 (0.9, the usual value for quasi-Newton and Newton
directions, whose natural step is 1; 0.1 would suit conjugate gradients), 0 < c1 < c2
< 1; max_evals (default 25), the objective evaluations one search may take. When they
run out, or the bracket shrinks below rounding, the search returns the best step that
satisfied the sufficient decrease condition (`wolfe` False: the curvature condition
does not hold there), or, if there is none, step 0 (the search failed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

C1 = 1e-4
C2 = 0.9
MAX_EVALS = 25
VALUE_RTOL = 1e-10
# bracket widths below this fraction of the step are rounding: the search stops there
REL_WIDTH = 1e-12
SHRINK = 2 / 3           # the bracket's least shrinking over two trials before bisection


@dataclass
class LineSearchResult:
    """step: the step length taken (0: no acceptable step was found, and x, value and
    grad are those at the start, grad None from `backtracking`); x, value, grad: the
    point x + step d and the objective and gradient there; wolfe: whether both
    strong-Wolfe conditions hold (False with step > 0: sufficient decrease only);
    evals: objective evaluations."""

    step: float
    x: np.ndarray
    value: float
    grad: np.ndarray
    wolfe: bool
    evals: int


class _Trial:
    """A trial step: the point x + step d, the objective and gradient there, the slope
    g'd; finite: whether the value and the slope are."""

    __slots__ = ("step", "value", "slope", "x", "grad", "finite")

    def __init__(self, step: float, value: float, slope: float, x: np.ndarray,
                 grad: np.ndarray):
        self.step, self.value, self.slope, self.x, self.grad = step, value, slope, x, grad
        self.finite = math.isfinite(value) and math.isfinite(slope)


def rise(value0: float, value1: float, trapezoid: Callable[[], float],
         value_rtol: float = VALUE_RTOL) -> float:
    """value1 - value0, or, where the two differ by less than value_rtol relative (by
    rounding, near a minimum), the trapezoid estimate of it from the slopes."""
    diff = value1 - value0
    return diff if _resolved(diff, value0, value1, value_rtol) else trapezoid()


def _rise(a: "_Trial", b: "_Trial", value_rtol: float) -> float:
    """b.value - a.value (see rise; the trapezoid computed here, where the searches call
    it twice a trial, without a closure)."""
    diff = b.value - a.value
    if _resolved(diff, a.value, b.value, value_rtol):
        return diff
    return 0.5 * (b.step - a.step) * (a.slope + b.slope)


def _resolved(diff: float, value0: float, value1: float, value_rtol: float) -> bool:
    """Whether diff = value1 - value0 is more than rounding: above value_rtol of the
    larger magnitude."""
    return abs(diff) > value_rtol * max(abs(value0), abs(value1))


def check_constants(c1: float, c2: Optional[float] = None) -> None:
    """0 < c1 < c2 < 1 (c2 None: 0 < c1 < 1/2, for a backtracking search)."""
    hi = 0.5 if c2 is None else 1.0
    if not (isinstance(c1, (int, float)) and 0 < c1 < hi):
        raise ValueError(f"c1 must be a number in (0, {hi:g}), got {c1!r}")
    if c2 is not None and not (isinstance(c2, (int, float)) and c1 < c2 < 1):
        raise ValueError(f"c2 must be a number in (c1, 1) = ({c1:g}, 1), got {c2!r}")


def strong_wolfe(fun: Callable, x: np.ndarray, value: float, grad: np.ndarray,
                 d: np.ndarray, step: float = 1.0, c1: float = C1, c2: float = C2,
                 max_evals: int = MAX_EVALS, value_rtol: float = VALUE_RTOL
                 ) -> LineSearchResult:
    """A step along d from x satisfying the strong Wolfe conditions (see the module
    docstring). fun(x) -> (value, grad); value and grad are f and its gradient at x; d
    must be a descent direction (g'd < 0); step is the first trial."""
    check_constants(c1, c2)
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"the first trial step must be a positive number, got {step!r}")
    if max_evals < 1:
        raise ValueError(f"max_evals must be at least 1, got {max_evals!r}")
    slope0 = float(np.dot(grad, d))
    if not slope0 < 0:
        raise ValueError(f"d is not a descent direction: g'd = {slope0:g} must be < 0")
    start = _Trial(0.0, value, slope0, x, grad)
    search = _Search(fun, start, d, c1, c2, max_evals, value_rtol)
    return search.result(search.bracket(start, step))


class _Search:
    def __init__(self, fun, start: _Trial, d, c1, c2, max_evals, value_rtol):
        self.fun, self.start, self.d = fun, start, d
        self.x, self.slope0 = start.x, start.slope
        self.c1, self.c2, self.max_evals = c1, c2, max_evals
        self.value_rtol = value_rtol
        self.evals = 0
        self.best = None        # the lowest trial with sufficient decrease

    def trial(self, step: float) -> _Trial:
        self.evals += 1
        x = self.x + step * self.d
        value, grad = self.fun(x)
        t = _Trial(step, value, float(np.dot(grad, self.d)), x, grad)
        if t.finite and self.decreases(t) and (self.best is None or self.higher(self.best, t)):
            self.best = t
        return t

    def higher(self, a: _Trial, b: _Trial) -> bool:
        """Whether f is higher at a than at b (from the slopes, at rounding level)."""
        return _rise(b, a, self.value_rtol) > 0

    def decreases(self, t: _Trial) -> bool:
        return _rise(self.start, t, self.value_rtol) <= self.c1 * t.step * self.slope0

    def curved(self, t: _Trial) -> bool:
        return abs(t.slope) <= -self.c2 * self.slope0

    def bracket(self, prev: _Trial, step: float) -> Optional[_Trial]:
        """Algorithm 3.5: grow the step until an interval holding a Wolfe step is
        known, then zoom into it; the Wolfe step, or None."""
        first = True
        while self.evals < self.max_evals:
            t = self.trial(step)
            if not t.finite:
                return self.zoom(prev, t)
            if not self.decreases(t) or (not first and not self.higher(prev, t)):
                return self.zoom(prev, t)
            if self.curved(t):
                return t
            if t.slope >= 0:
                return self.zoom(t, prev)
            step = _extrapolate(prev, t)
            prev, first = t, False
        return None

    def zoom(self, lo: _Trial, hi: _Trial) -> Optional[_Trial]:
        """Algorithm 3.6: lo satisfies sufficient decrease with the lowest value so
        far, and slope(lo) (hi - lo) < 0; shrink [lo, hi] to a Wolfe step, or None."""
        widths = []
        while self.evals < self.max_evals:
            width = abs(hi.step - lo.step)
            if width <= REL_WIDTH * max(lo.step, hi.step):
                return None
            # bisect when two trials did not shrink the bracket to 2/3 (Moré and
            # Thuente's safeguard: the cubic may creep towards a minimizer near lo)
            slow = len(widths) >= 2 and width > SHRINK * widths[-2]
            widths.append(width)
            t = self.trial(_interpolate(lo, hi, bisect=slow))
            if not t.finite or not self.decreases(t) or not self.higher(lo, t):
                hi = t
                continue
            if self.curved(t):
                return t
            if t.slope * (hi.step - lo.step) >= 0:
                hi = lo
            lo = t
        return None

    def result(self, t: Optional[_Trial]) -> LineSearchResult:
        if t is not None:
            return LineSearchResult(t.step, t.x, t.value, t.grad, True, self.evals)
        b = self.best
        if b is not None:
            return LineSearchResult(b.step, b.x, b.value, b.grad, False, self.evals)
        s = self.start
        return LineSearchResult(0.0, s.x, s.value, s.grad, False, self.evals)


def _cubic_min(a: _Trial, b: _Trial) -> Optional[float]:
    """The minimizer of the cubic with a's and b's values and slopes (Nocedal and
    Wright, eq. 3.59), or None when it has none or it is not finite."""
    d1 = a.slope + b.slope - 3 * (a.value - b.value) / (a.step - b.step)
    disc = d1 * d1 - a.slope * b.slope
    if not (disc >= 0 and math.isfinite(disc)):
        return None
    d2 = math.copysign(math.sqrt(disc), b.step - a.step)
    denom = b.slope - a.slope + 2 * d2
    if denom == 0:
        return None
    t = b.step - (b.step - a.step) * (b.slope + d2 - d1) / denom
    return t if math.isfinite(t) else None


def _interpolate(lo: _Trial, hi: _Trial, bisect: bool) -> float:
    """The next trial inside [lo, hi]: the cubic's minimizer, unless it is outside, on
    an end or within a tenth of the width from hi (the end known to be worse); the
    midpoint then, when `bisect` is asked, or when hi is not finite."""
    mid = lo.step + 0.5 * (hi.step - lo.step)
    if bisect or not hi.finite:
        return mid
    t = _cubic_min(lo, hi)
    if t is None:
        return mid
    towards_hi = (t - lo.step) / (hi.step - lo.step)    # 0 at lo, 1 at hi
    if not (0 < towards_hi <= 0.9) or t == lo.step:
        return mid
    return t


def _extrapolate(prev: _Trial, t: _Trial) -> float:
    """The next, longer trial: the cubic's minimizer beyond t, kept between 1.1 and 4
    times the last increase past t."""
    grow = t.step - prev.step
    lo, hi = t.step + 1.1 * grow, t.step + 4.0 * grow
    c = _cubic_min(prev, t)
    if c is None or not (lo <= c <= hi):
        return hi
    return c


def backtracking(fun: Callable, x: np.ndarray, value: float, d: np.ndarray,
                 predicted: Callable[[np.ndarray], float],
                 trapezoid: Callable[[np.ndarray, np.ndarray], float], step: float = 1.0,
                 c1: float = C1, shrink: float = 0.5, max_evals: int = MAX_EVALS,
                 project: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 value_rtol: float = VALUE_RTOL) -> LineSearchResult:
    """Armijo backtracking along d from x: trial points z = project(x + a d) for a =
    step, step * shrink, ..., accepted at the first whose value v = fun(z)[0] has
    v - value <= c1 * predicted(z), predicted(z) being the first-order change (for
    OWL-QN, pseudo-gradient'(z - x), negative). Where v and value differ by rounding
    only, trapezoid(z, grad at z) stands for v - value (see `rise`). A NaN or infinite
    trial counts as too long. OWL-QN's search: a curvature condition means nothing
    across the kinks of |x|, so none is asked (`wolfe` is always False). On failure
    (step 0) x and value are the start's and grad is None."""
    check_constants(c1)
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
    evals = 0
    while evals < max_evals:
        z = x + step * d
        if project is not None:
            z = project(z)
        evals += 1
        v, g = fun(z)
        if math.isfinite(v) and np.all(np.isfinite(g)) and \
                rise(value, v, lambda: trapezoid(z, g), value_rtol) <= c1 * predicted(z):
            return LineSearchResult(step, z, v, g, False, evals)
        step *= shrink
    return LineSearchResult(0.0, x, value, None, False, evals)
