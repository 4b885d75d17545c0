"""The L1 penalty `sum_i l1_i |x_i|`: its proximal step and its per-coordinate weights.

`l1` is a number (every coordinate penalized alike) or a flat vector of weights >= 0 in
pack order, one per coordinate, where 0 leaves a coordinate unpenalized (biases,
usually). `l1_weights` builds that vector from per-parameter values:

    l1 = l1_weights(model, {"w": 0.1})      # w penalized, every other parameter not
    owlqn(fun, x0, l1=l1)                   # or SGD(lr=0.1, l1=l1), Adam(..., l1=l1)

The proximal step of `t * l1 * |x|` is soft thresholding, `prox_l1(x, t * l1)`:
x_i <- sign(x_i) max(|x_i| - t l1_i, 0). A first-order method that takes the step
`x <- x - t g` on the smooth part and then this one (proximal gradient, ISTA) minimizes
the penalized objective and reaches exact zeros, which a subgradient of |x| added to g
never does.
"""
from __future__ import annotations

import math

import numpy as np

from lossc.optim.layout import Layout


def prox_l1(x, threshold, out=None) -> np.ndarray:
    """Soft thresholding: sign(x) * max(|x| - threshold, 0), elementwise. `threshold`
    is a number or an array shaped like x, each >= 0 (a step size times the L1
    weights). With `out` (may be x itself) the result is written there."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"prox_l1: x must be a float array, got dtype {x.dtype}")
    t = np.asarray(threshold, dtype=x.dtype)
    if t.shape not in ((), x.shape):
        raise ValueError(f"prox_l1: threshold must be a number or an array of shape "
                         f"{x.shape}, got shape {t.shape}")
    if not np.all(t >= 0):          # (NaN fails this too)
        raise ValueError("prox_l1: threshold must be >= 0 everywhere")
    if out is None:
        out = np.empty_like(x)
    # |x| - t clipped at 0, carrying x's sign; x in (-t, t) becomes exactly +0.0
    shrunk = np.abs(x) - t
    np.maximum(shrunk, 0.0, out=shrunk)
    np.copysign(shrunk, x, out=out)
    out[shrunk == 0] = 0.0          # no -0.0: a zero coordinate is a plain zero
    return out


def check_l1(l1, n: int | None = None, what: str = "l1"):
    """l1 as a float (a number >= 0) or a float64 vector (weights >= 0, of length n
    when n is given); None stays None. A ValueError names `what` otherwise."""
    if l1 is None:
        return None
    a = np.asarray(l1)
    if a.dtype.kind not in "biuf" or a.dtype.kind == "b":
        raise ValueError(f"{what} must be a number >= 0 or a vector of weights >= 0, "
                         f"got {l1!r}")
    a = a.astype(np.float64)
    if a.ndim == 0:
        v = float(a)
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{what} must be a finite number >= 0, got {l1!r}")
        return v
    if a.ndim != 1 or (n is not None and a.shape != (n,)):
        want = f"({n},)" if n is not None else "one-dimensional"
        raise ValueError(f"{what} must be a number or a flat vector of weights, one per "
                         f"parameter coordinate ({want}), got shape {a.shape}")
    bad = np.flatnonzero(~(np.isfinite(a) & (a >= 0)))
    if bad.size:
        raise ValueError(f"{what}: every weight must be a finite number >= 0; "
                         f"{what}[{bad[0]}] is {a[bad[0]]}")
    return a


def l1_weights(params, weights: dict) -> np.ndarray:
    """The flat L1 weight vector for a model (or any layout, see lossc.optim.layout):
    `weights` maps parameter names to a number or an array of the parameter's shape;
    parameters not named get 0 (unpenalized)."""
    out = Layout(params).flatten(weights, default=0.0)
    return check_l1(out, what="l1_weights")


def l1_norm(x: np.ndarray, l1) -> float:
    """sum_i l1_i |x_i| (l1 a number or a vector of weights)."""
    if isinstance(l1, float):
        return l1 * float(np.sum(np.abs(x)))
    return float(np.dot(l1, np.abs(x)))
