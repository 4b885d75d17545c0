"""W3: a one-hidden-layer tanh MLP, D=16, H=32, squared error; B=256 and B=65,536
(1 and 2 threads; float64 and float32)."""
from __future__ import annotations

import numpy as np

from benchmarks.common import (as_np, child_case, child_row, compile_model, lossc_result,
                               na_peers, peer_impls, small_batch_impls, thread_impls,
                               threaded_call)
from benchmarks.harness import Impl, fmt_ratio

SRC = """\
dim D = 16
dim H = 32
input x[D]
input y
param W1[H, D] = glorot
param b1[H]
param w2[H] = normal(0, 0.1)
param b2
h = tanh(W1 @ x + b1)
out = dot(w2, h) + b2
loss = (out - y) ^ 2
"""
D, H = 16, 32
B_SMALL = 256


def big_batch(quick: bool) -> int:
    return 16_384 * 2 if quick else 65_536


def make_data(B: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, D))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(B)
    return X, y


def make_theta(m, seed: int = 4) -> dict:
    theta = m.init_params(seed)
    rng = np.random.default_rng(seed)
    theta["b1"] = rng.normal(0, 0.1, H)      # nonzero everywhere, for a sharper check
    theta["b2"] = np.array(0.05)
    return theta


def numpy_vg(p, X, y):
    """By hand: h = tanh(X W1^T + b1), out = h w2 + b2, objective mean((out - y)^2);
    d = 2 (out - y) / B; grad w2 = h^T d, grad b2 = sum d;
    dZ = (d w2^T) * (1 - h^2); grad W1 = dZ^T X, grad b1 = column sums of dZ."""
    B = X.shape[0]
    Z = X @ p["W1"].T
    Z += p["b1"]
    h = np.tanh(Z)
    r = h @ p["w2"] + float(p["b2"]) - y
    value = float(r @ r) / B
    d = r * (2.0 / B)
    dZ = np.multiply.outer(d, p["w2"])
    dZ *= 1.0 - h * h
    return value, {"W1": dZ.T @ X, "b1": dZ.sum(axis=0), "w2": h.T @ d,
                   "b2": np.array(d.sum())}


def jax_impl(jax, theta, X, y, name="jax jit"):
    jnp = jax.numpy

    def f(p, x, y):
        h = jnp.tanh(x @ p["W1"].T + p["b1"])
        out = h @ p["w2"] + p["b2"]
        return jnp.mean((out - y) ** 2)
    vg = jax.jit(jax.value_and_grad(f))
    p = {k: jnp.asarray(v) for k, v in theta.items()}
    xj, yj = jnp.asarray(X), jnp.asarray(y)
    return Impl(name, lambda: jax.block_until_ready(vg(p, xj, yj)),
                lambda o: (float(o[0]), {k: np.asarray(a) for k, a in o[1].items()}))


def torch_impl(torch, theta, X, y, name="torch eager"):
    ps = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True)
          for k, v in theta.items()}
    names = list(ps)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def call():
        h = torch.tanh(xt @ ps["W1"].T + ps["b1"])
        out = h @ ps["w2"] + ps["b2"]
        val = ((out - yt) ** 2).mean()
        return val, torch.autograd.grad(val, [ps[k] for k in names])
    return Impl(name, call, lambda o: (float(o[0].detach()), {k: as_np(g) for k, g in zip(names, o[1])}))


def jax_child(ctx) -> dict:
    m = compile_model(SRC, dims={"D": D, "H": H})
    X, y = make_data(big_batch(ctx.quick))
    theta = make_theta(m)
    return child_case(ctx, jax_impl(ctx.jax, theta, X, y), numpy_vg(theta, X, y), "W3")


def _peer_targets(ctx, rows, case, label):
    t = rows["lossc value_and_grad"].time
    for peer in ("jax jit", "torch eager"):
        r = rows.get(peer)
        name = f"W3 {label} vs {'JAX' if peer.startswith('jax') else 'PyTorch'}"
        if r is None or not r.time or not t:
            ctx.target(name, "n/a", ">= 3x", None, "peer not installed" if r is None else "")
            continue
        ctx.target(name, f"{fmt_ratio(r.time / t)}x faster", ">= 3x", r.time / t >= 3,
                   f"lossc {_t(t)}, {peer} {_t(r.time)}", anchor=("W3", case, peer))


def _t(s):
    from benchmarks.harness import fmt_time
    return fmt_time(s)


def run(ctx) -> None:
    jax, torch = ctx.jax, ctx.torch
    m = compile_model(SRC, dims={"D": D, "H": H})
    theta = make_theta(m)

    # ------------------------------------------------------------ B = 256
    X, y = make_data(B_SMALL)
    impls = small_batch_impls(m, theta, X, y, numpy_vg)
    impls += peer_impls(jax, jax_impl, torch, torch_impl, theta, X, y)
    case = f"B={B_SMALL}"
    rows = ctx.run_case("W3", case, impls, samples=ctx.samples(25, 7))
    na_peers(ctx, "W3", case)
    _peer_targets(ctx, rows, case, "B=256")

    # ------------------------------------------------------------ B = 65,536, 1 thread
    B = big_batch(ctx.quick)
    X, y = make_data(B)
    m32 = compile_model(SRC, dims={"D": D, "H": H}, dtype="float32")
    theta32 = {k: np.asarray(v, dtype=np.float32) for k, v in theta.items()}
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    impls = [
        Impl("lossc value_and_grad", lambda: m.value_and_grad(theta, x=X, y=y), lossc_result),
        Impl("lossc float32", lambda: m32.value_and_grad(theta32, x=X32, y=y32),
             lossc_result, rtol=1e-4, note="checked against float64 at rtol 1e-4"),
        Impl("numpy (by hand)", lambda: numpy_vg(theta, X, y), lambda o: o),
    ]
    impls += peer_impls(jax, jax_impl, torch, torch_impl, theta, X, y)
    case = f"B={B:,}, 1 thread"
    samples = ctx.samples(11, 3)
    rows = ctx.run_case("W3", case, impls, samples=samples, sample_s=0.02)
    na_peers(ctx, "W3", case)
    _peer_targets(ctx, rows, case, f"B={B:,}")
    t1, t32 = rows["lossc value_and_grad"].time, rows["lossc float32"].time
    if t1 and t32:
        ctx.target("W3 float32 vs float64 throughput", f"{fmt_ratio(t1 / t32)}x", ">= 1.6x",
                   t1 / t32 >= 1.6, f"f64 {_t(t1)}, f32 {_t(t32)}",
                   anchor=("W3", case, "lossc float32"))

    # ------------------------------------------------------------ B = 65,536, n threads
    n = ctx.threads
    if n < 2:
        return
    case_n = f"B={B:,}, {n} threads"
    call = threaded_call(m, theta, {"x": X, "y": y}, n)
    if call is None:
        ctx.na("W3", case_n, f"lossc {n} threads", "not supported")
        return
    impls = thread_impls(m, call, theta, X, y, n, numpy_vg, torch, torch_impl)
    with ctx.all_cores():
        rows = ctx.run_case("W3", case_n, impls, samples=samples,
                            sample_s=0.02, interleave=False)
        child_row(ctx, "W3", case_n, None)
    tn = rows[f"lossc {n} threads"].time
    if tn and t1:
        ctx.target(f"W3 B={B:,} {n} threads vs 1 thread", f"{fmt_ratio(t1 / tn)}x",
                   "(figure)", None, f"1 thread {_t(t1)}, {n} threads {_t(tn)}")
