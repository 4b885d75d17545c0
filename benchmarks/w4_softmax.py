"""W4: softmax regression, D=64, K=10, integer labels, B=1,024:
loss = logsumexp(W x + c) - (W x + c)[y]."""
from __future__ import annotations

import numpy as np

from benchmarks.common import (small_batch_impls, as_np, compile_model, na_peers,
                               softmax_cross_entropy)
from benchmarks.harness import Impl, fmt_ratio, fmt_time

SRC = """\
dim D = 64
dim K = 10
input x[D]
input y: int
param W[K, D]
param c[K]
loss = logsumexp(W @ x + c) - (W @ x + c)[y]
"""
D, K, B = 64, 10, 1024


def make_data(seed: int = 5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, D))
    W_true = rng.standard_normal((K, D))
    y = np.argmax(X @ W_true.T + rng.gumbel(size=(B, K)), axis=1).astype(np.int64)
    return X, y


def make_theta(seed: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    return {"W": rng.normal(0, 0.2, (K, D)), "c": rng.normal(0, 0.2, K)}


def numpy_vg(p, X, y):
    """By hand: Z = X W^T + c, objective mean(logsumexp(Z) - Z[y]);
    dZ = (softmax(Z) - onehot(y)) / B; grad W = dZ^T X, grad c = column sums of dZ."""
    Z = X @ p["W"].T
    Z += p["c"]
    value, P = softmax_cross_entropy(Z, y)
    return value, {"W": P.T @ X, "c": P.sum(axis=0)}


def run(ctx) -> None:
    jax, torch = ctx.jax, ctx.torch
    m = compile_model(SRC, dims={"D": D, "K": K})
    theta = make_theta()
    X, y = make_data()
    impls = small_batch_impls(m, theta, X, y, numpy_vg)
    if jax is not None:
        jnp = jax.numpy

        def f(p, x, y):
            z = x @ p["W"].T + p["c"]
            picked = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
            return jnp.mean(jax.nn.logsumexp(z, axis=1) - picked)
        vg = jax.jit(jax.value_and_grad(f))
        pj = {k: jnp.asarray(v) for k, v in theta.items()}
        xj, yj = jnp.asarray(X), jnp.asarray(y)
        impls.append(Impl("jax jit", lambda: jax.block_until_ready(vg(pj, xj, yj)),
                          lambda o: (float(o[0]), {k: np.asarray(a) for k, a in o[1].items()})))
    if torch is not None:
        F = torch.nn.functional
        W = torch.tensor(theta["W"], requires_grad=True)
        c = torch.tensor(theta["c"], requires_grad=True)
        xt, yt = torch.from_numpy(X), torch.from_numpy(y)

        def tcall():
            val = F.cross_entropy(xt @ W.T + c, yt)
            return val, torch.autograd.grad(val, (W, c))
        impls.append(Impl("torch eager", tcall, lambda o: (
            float(o[0].detach()), {"W": as_np(o[1][0]), "c": as_np(o[1][1])}), note="cross_entropy"))
    case = f"B={B:,}"
    rows = ctx.run_case("W4", case, impls, samples=ctx.samples(25, 7))
    na_peers(ctx, "W4", case)
    t = rows["lossc value_and_grad"].time
    r = rows.get("jax jit")
    if r is not None and r.time and t:
        ctx.target("W4 vs JAX jit", f"{fmt_ratio(r.time / t)}x faster", ">= 3x",
                   r.time / t >= 3, f"lossc {fmt_time(t)}, JAX {fmt_time(r.time)}",
                   anchor=("W4", case, "jax jit"))
    else:
        ctx.target("W4 vs JAX jit", "n/a", ">= 3x", None, ctx.jax_why)
