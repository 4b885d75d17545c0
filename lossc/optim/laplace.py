"""The Laplace approximation at a minimum: the inverse Hessian of the objective as the
covariance of the parameters, and their standard errors.

For an objective that is a negative log-likelihood summed over the samples (`reduce
sum`), at its minimum (the maximum-likelihood estimate), the inverse of its Hessian
there is the asymptotic covariance of the estimate, the one statsmodels reports for
Logit and GLM fits. With `reduce mean` the objective is that sum over B: its inverse
Hessian is B times the covariance, and `laplace` reports what it is asked for, the
inverse Hessian of the objective.

The Hessian comes from Model.hessian (forward mode over the gradient, compiled). It must
be positive definite: a zero or negative eigenvalue is an error naming the directions
in parameter space along which the objective is flat (the parameters are not
identified: collinear inputs, an unused parameter) or curves down (not a minimum).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

# an eigenvalue of the Hessian scaled to a unit diagonal (`inverse`) at most this times
# the largest one counts as zero, by the dtype the Hessian was computed in: its own
# rounding is about 1e-16 of it in float64 and 1e-7 in float32, and an inverse whose
# condition is near the reciprocal of that is noise (float32's cutoff keeps the standard
# errors' rounding near 1%)
RELATIVE_FLATNESS = {"float64": 1e-10, "float32": 1e-5}
Z_975 = 1.959963984540054          # the normal distribution's 97.5% quantile


class LaplaceError(ValueError):
    """The Hessian at the parameters is singular or indefinite (the message names the
    directions)."""


@dataclass
class Laplace:
    """The Laplace approximation at `params`: `cov`, the inverse Hessian of the objective
    in pack_params order ((n, n)); `stderr`, the square roots of its diagonal, a dict
    shaped like the parameters; `hessian`, the Hessian it inverts; `names`, the name of
    each element of the flat vector (w[0], ..., b)."""

    params: dict
    hessian: np.ndarray
    cov: np.ndarray
    stderr: dict
    names: list

    def table(self) -> list[tuple]:
        """(name, estimate, std err, z, P>|z|, 2.5%, 97.5%) for each parameter element,
        as statsmodels' summary reports coefficients (normal, two-sided)."""
        rows = []
        estimates = np.concatenate([np.ravel(v) for v in self.params.values()]) \
            if self.params else np.zeros(0)
        errors = np.sqrt(np.diag(self.cov))
        for name, est, se in zip(self.names, estimates, errors):
            z = est / se
            rows.append((name, float(est), float(se), float(z),
                         math.erfc(abs(z) / math.sqrt(2)),
                         float(est - Z_975 * se), float(est + Z_975 * se)))
        return rows

    def summary(self) -> str:
        """The coefficient table as text."""
        width = max([len(n) for n in self.names] + [4])
        head = (f"{'':<{width}} {'coef':>11} {'std err':>11} {'z':>9} {'P>|z|':>7} "
                f"{'[0.025':>11} {'0.975]':>11}")
        lines = [head, "-" * len(head)]
        for name, est, se, z, p, lo, hi in self.table():
            lines.append(f"{name:<{width}} {est:>11.4g} {se:>11.4g} {z:>9.3f} {p:>7.3f} "
                         f"{lo:>11.4g} {hi:>11.4g}")
        return "\n".join(lines)


def element_names(model) -> list[str]:
    """The name of each element of the flat parameter vector: b, w[3], W[1, 2]."""
    names = []
    for p in model.params:
        if not p.shape:
            names.append(p.name)
        for idx in np.ndindex(*p.shape) if p.shape else ():
            names.append(f"{p.name}[{', '.join(map(str, idx))}]")
    return names


def laplace(model, params: dict, data: Optional[dict] = None,
            hypers: Optional[dict] = None) -> Laplace:
    """The Laplace approximation of `model`'s objective at `params` on `data` (a dict of
    input arrays) with `hypers`. A LaplaceError (a ValueError) if the Hessian there is
    not positive definite, naming the directions."""
    data, hypers = dict(data or {}), dict(hypers or {})
    for name in set(data) & set(hypers):
        raise ValueError(f"{name!r} is given both as data and as a hyperparameter")
    H = np.asarray(model.hessian(params, **data, **hypers), dtype=np.float64)
    names = element_names(model)
    cov = inverse(H, names, RELATIVE_FLATNESS[model.dtype.name])
    flat_se = np.sqrt(np.diag(cov))
    stderr = model.unpack_params(flat_se.astype(model.dtype))
    estimates = {p.name: np.array(params[p.name], dtype=np.float64).reshape(p.shape)
                 for p in model.params}
    return Laplace(estimates, H, cov, stderr, names)


def inverse(H: np.ndarray, names: list[str], flatness: float) -> np.ndarray:
    """H^-1 of a symmetric positive definite H, through the eigendecomposition of H
    scaled to a unit diagonal (which also finds the directions that make it singular
    or indefinite): the eigenvalues of D^-1 H D^-1, D = sqrt(diag H), do not depend on
    the units of the parameters, where those of H do (an income in dollars beside an
    intercept made a well-determined model's eigenvalue of 71 "flat" beside one of
    7e11). flatness: RELATIVE_FLATNESS of the Hessian's dtype."""
    if H.size == 0:
        return H.copy()
    if not np.all(np.isfinite(H)):
        bad = sorted({names[i] for i in np.argwhere(~np.isfinite(H))[:, 0]})
        raise LaplaceError("the Hessian of the objective is not finite in the rows of "
                           + ", ".join(bad[:6]) + (", ..." if len(bad) > 6 else ""))
    # (scaled by |H_ii|: a diagonal element that is not positive already makes H
    # singular or indefinite, and the scaling keeps its sign for the eigenvalues to
    # show it; a zero one is left unscaled)
    diagonal = np.abs(np.diag(H))
    scale = np.sqrt(np.where(diagonal > 0, diagonal, 1.0))
    S = H / np.outer(scale, scale)
    values, vectors = np.linalg.eigh(S)
    top = max(float(np.max(np.abs(values))), np.finfo(np.float64).tiny)
    flat = values <= flatness * top
    if np.any(flat):
        # the directions in the parameters' own units: S's u is D u in theirs
        directions = vectors / scale[:, None]
        directions /= np.linalg.norm(directions, axis=0)
        raise LaplaceError(problem(values, directions, flat, top, names, flatness))
    return ((vectors / values) @ vectors.T) / np.outer(scale, scale)


def problem(values, vectors, flat, top: float, names: list[str], flatness: float) -> str:
    """Which directions make the Hessian singular or indefinite, for the error (one
    line): values, the eigenvalues of the Hessian scaled to a unit diagonal, and
    vectors, their directions in the parameters' units (along which the Hessian is
    flat or curves down as the scaled one does)."""
    negative = values < -flatness * top
    parts = []
    for k in np.flatnonzero(flat)[:5]:
        kind = "curves down" if negative[k] else "flat"
        parts.append(f"along {direction(vectors[:, k], names)} (eigenvalue "
                     f"{values[k] / top:.3g} times the largest, {kind})")
    more = int(np.sum(flat)) - len(parts)
    if more > 0:
        parts.append(f"and {more} more direction{'s' if more > 1 else ''}")
    what = ("indefinite: the parameters are not a minimum" if np.any(negative) else
            "singular: the objective does not identify the parameters")
    return (f"the Hessian of the objective is {what}, so it has no inverse (eigenvalues "
            f"of the Hessian scaled to a unit diagonal, relative to the largest; at "
            f"most {flatness:g} counts as zero): " + "; ".join(parts))


def direction(v: np.ndarray, names: list[str], terms: int = 4) -> str:
    """A unit vector as its largest components, in parameter order, the first one
    positive: 0.707 w[0] - 0.707 w[1]."""
    order = np.argsort(-np.abs(v), kind="stable")
    shown = sorted(k for k in order[:terms] if abs(v[k]) >= 1e-3)
    v = v if v[shown[0]] > 0 else -v
    text = f"{v[shown[0]]:.3g} {names[shown[0]]}"
    for k in shown[1:]:
        text += f" {'-' if v[k] < 0 else '+'} {abs(v[k]):.3g} {names[k]}"
    rest = int(np.sum(np.abs(v) >= 1e-3)) - len(shown)
    return text + (f" + ... ({rest} more)" if rest > 0 else "")
