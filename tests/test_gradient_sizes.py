"""The sizes at which the row-outer-product kernel once dropped samples: a tile of three
accumulators (rows x vectors) took samples six at a time from groups of eight lanes, so
two samples in every eight were missing from the gradient (D mod 32 in 24..31 at
AVX-512's eight doubles; D = 57 in float32's sixteen lanes). Each model is compared
with its gradient written out in NumPy, at every vector width the machine can run."""
import dataclasses

import numpy as np
import pytest

import lossc

WIDTHS = (64, 128, 256, 512)


def _compile(src, dtype, bits):
    options = dataclasses.replace(lossc.Options.from_env(), vector_bits=bits)
    return lossc.compile(src, dtype=dtype, cache=False, options=options)


def _close(got, want, dtype, magnitude=None):
    """got == want to a few roundings of `magnitude`: the same sum taken over the
    terms' absolute values (cancellation leaves a small result with a large error)."""
    tol = 1e-11 if dtype == "float64" else 2e-5
    scale = max(np.max(np.abs(want if magnitude is None else magnitude)), 1e-30)
    assert np.max(np.abs(got - want)) <= tol * scale, np.max(np.abs(got - want)) / scale


LOGISTIC = """
dim D = 30
input x[D]
input y
param w[D]
param b
z = dot(w, x) + b
loss = softplus(z) - y * z
"""


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("dtype, D", [("float64", D) for D in (24, 27, 30, 31, 56, 63, 127)]
                         + [("float32", D) for D in (24, 30, 57, 63)])
def test_logistic_gradient_at_the_sizes_that_lost_samples(dtype, D, bits):
    m = _compile(LOGISTIC.replace("D = 30", f"D = {D}"), dtype, bits)
    rng = np.random.default_rng(D)
    w, b = rng.normal(size=D) * 0.3, 0.1
    for B in (7, 8, 9, 64, 65):
        X = rng.normal(size=(B, D)).astype(dtype)
        Y = (rng.random(B) < 0.5).astype(dtype)
        _, g = m.value_and_grad({"w": w, "b": b}, x=X, y=Y)
        Xd = X.astype(np.float64)
        s = 1 / (1 + np.exp(-(Xd @ w.astype(dtype).astype(np.float64) + np.float64(b))))
        _close(g["w"], Xd.T @ (s - Y) / B, dtype, np.abs(Xd).T @ np.abs(s - Y) / B)
        _close(g["b"], np.mean(s - Y), dtype, np.mean(np.abs(s - Y)))


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("D, K", [(30, 9), (30, 17), (24, 9), (25, 3), (57, 5)])
def test_softmax_regression_gradient_at_tile_remainders(D, K, bits):
    src = f"""
dim D = {D}
dim K = {K}
input x[D]
input y: int
param W[K, D]
z = W @ x
loss = logsumexp(z) - z[y]
"""
    m = _compile(src, "float64", bits)
    rng = np.random.default_rng(D * K)
    W = rng.normal(size=(K, D)) * 0.3
    for B in (9, 64, 67):
        X, Y = rng.normal(size=(B, D)), rng.integers(0, K, size=B)
        _, g = m.value_and_grad({"W": W}, x=X, y=Y)
        Z = X @ W.T
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        P[np.arange(B), Y] -= 1
        _close(g["W"], P.T @ X / B, "float64")


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("D, H", [(24, 9), (25, 3), (31, 1), (57, 11)])
def test_tanh_layer_gradient_at_tile_remainders(D, H, bits):
    src = f"""
dim D = {D}
dim H = {H}
input x[D]
input y
param W[H, D]
param c[H]
param v[H]
loss = (dot(v, tanh(W @ x + c)) - y) ^ 2
"""
    m = _compile(src, "float64", bits)
    rng = np.random.default_rng(D + H)
    W, c, v = rng.normal(size=(H, D)) * 0.3, rng.normal(size=H) * 0.1, rng.normal(size=H)
    for B in (9, 64, 67):
        X, Y = rng.normal(size=(B, D)), rng.normal(size=B)
        _, g = m.value_and_grad({"W": W, "c": c, "v": v}, x=X, y=Y)
        Hh = np.tanh(X @ W.T + c)
        r = 2 * (Hh @ v - Y) / B
        U = r[:, None] * v[None, :] * (1 - Hh ** 2)
        _close(g["W"], U.T @ X, "float64")
        _close(g["c"], U.sum(axis=0), "float64")
        _close(g["v"], Hh.T @ r, "float64")


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("D", [24, 25, 26, 31, 57])
def test_quadratic_form_gradient_at_tile_remainders(D, bits):
    src = f"dim D = {D}\ninput x[D]\nparam A[D, D]\nloss = dot(x, A @ x)\n"
    m = _compile(src, "float64", bits)
    rng = np.random.default_rng(D)
    A = rng.normal(size=(D, D))
    for B in (9, 64, 67):
        X = rng.normal(size=(B, D))
        _, g = m.value_and_grad({"A": A}, x=X)
        _close(g["A"], X.T @ X / B, "float64")
