"""Test problems for the full-batch minimizers and the Laplace approximation, written in
NumPy with their gradients, Hessian-vector products and Hessians derived by hand: each
`Problem` has fun(x) -> (value, grad), hvp(x, v) and hessian(x) on a flat vector."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Problem:
    fun: Callable
    hvp: Callable
    hessian: Callable
    n: int


def sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))      # no overflow warnings for large |z|


def logistic_data(n: int, d: int, seed: int = 0):
    """Features X (n x d) and 0/1 labels y from a logistic model with an intercept."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(scale=0.5, size=d)
    y = (rng.random(n) < sigmoid(X @ w + 0.3)).astype(np.float64)
    return X, y


def logistic(X, y, lam: float = 0.0, mean: bool = True) -> Problem:
    """W2's model on (X, y): softplus(z) - y z with z = w.x + b, averaged over the
    samples (or summed, mean=False), plus lam * sum(w^2); x = (w, b)."""
    n, d = X.shape
    A = np.hstack([X, np.ones((n, 1))])
    scale = 1.0 / n if mean else 1.0
    ridge = np.append(np.full(d, 2 * lam), 0.0)

    def fun(x):
        z = A @ x
        value = scale * np.sum(np.logaddexp(0, z) - y * z) + lam * x[:d] @ x[:d]
        return value, scale * (A.T @ (sigmoid(z) - y)) + ridge * x

    def hessian(x):
        p = sigmoid(A @ x)
        return scale * (A.T @ (A * (p * (1 - p))[:, None])) + np.diag(ridge)

    def hvp(x, v):
        p = sigmoid(A @ x)
        return scale * (A.T @ (p * (1 - p) * (A @ v))) + ridge * v

    return Problem(fun, hvp, hessian, d + 1)


def poisson_data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=0.5, size=(n, d))
    w = rng.normal(scale=0.5, size=d)
    counts = rng.poisson(np.exp(X @ w + 0.5)).astype(np.float64)
    return X, counts


def poisson(X, counts) -> Problem:
    """The Poisson negative log-likelihood up to a constant, summed: exp(eta) - c eta
    with eta = w.x + b; x = (w, b)."""
    n, d = X.shape
    A = np.hstack([X, np.ones((n, 1))])

    def fun(x):
        eta = A @ x
        return np.sum(np.exp(eta) - counts * eta), A.T @ (np.exp(eta) - counts)

    def hessian(x):
        return A.T @ (A * np.exp(A @ x)[:, None])

    def hvp(x, v):
        return A.T @ (np.exp(A @ x) * (A @ v))

    return Problem(fun, hvp, hessian, d + 1)


def rosenbrock(n: int) -> Problem:
    """sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2; minimum 0 at (1, ..., 1)."""
    def fun(x):
        a, b = x[:-1], x[1:]
        value = np.sum(100 * (b - a * a) ** 2 + (1 - a) ** 2)
        g = np.zeros_like(x)
        g[:-1] = -400 * a * (b - a * a) - 2 * (1 - a)
        g[1:] += 200 * (b - a * a)
        return value, g

    def hessian(x):
        a, b = x[:-1], x[1:]
        h = np.zeros((n, n))
        idx = np.arange(n - 1)
        h[idx, idx] += 1200 * a * a - 400 * b + 2
        h[idx + 1, idx + 1] += 200
        h[idx, idx + 1] = h[idx + 1, idx] = -400 * a
        return h

    return Problem(fun, lambda x, v: hessian(x) @ v, hessian, n)


def quadratic(n: int, condition: float, seed: int = 0):
    """0.5 x'Ax - b'x with A's eigenvalues spread log-uniformly over [1, condition]
    in a random basis; also returns the minimizer A^-1 b."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (q * np.geomspace(1.0, condition, n)) @ q.T
    A = 0.5 * (A + A.T)
    b = rng.normal(size=n)

    def fun(x):
        ax = A @ x
        return 0.5 * x @ ax - b @ x, ax - b

    return Problem(fun, lambda x, v: A @ v, lambda x: A, n), np.linalg.solve(A, b)


def barrier(c):
    """sum_i -log(1 - x_i^2) - c_i x_i: NaN outside (-1, 1)^n (the log of a negative
    number), its minimum at x_i = (sqrt(1 + c_i^2) - 1) / c_i, near 1 for a large c_i;
    also returns the minimizer and the Hessian."""
    c = np.asarray(c, dtype=np.float64)

    def fun(x):
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.sum(-np.log(1 - x * x) - c * x)
            g = 2 * x / (1 - x * x) - c
        if not np.all(np.abs(x) < 1):
            g = np.full_like(x, np.nan)
        return value, g

    def hessian(x):
        return np.diag(2 * (1 + x * x) / (1 - x * x) ** 2)

    return (Problem(fun, lambda x, v: hessian(x) @ v, hessian, c.size),
            (np.sqrt(1 + c * c) - 1) / c)


class Counted:
    """fun(x), counting calls and the calls whose value was not finite."""

    def __init__(self, fun):
        self.fun, self.calls, self.nonfinite = fun, 0, 0

    def __call__(self, x):
        self.calls += 1
        value, grad = self.fun(x)
        if not np.isfinite(value):
            self.nonfinite += 1
        return value, grad


def relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))
