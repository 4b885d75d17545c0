"""W2: L2-regularized logistic regression, D=32. B=256 (latency) and B=1,000,000
(throughput: GB/s of X streamed, B*D*8 bytes per call), 1 and 2 threads, float64 and
float32."""
from __future__ import annotations

import numpy as np

from benchmarks.common import (as_np, bandwidth_target, child_case, child_row, compile_model,
                               lossc_result, na_peers, peer_impls, read_bandwidth_impl,
                               small_batch_impls, thread_impls, threaded_call)
from benchmarks.harness import Impl, fmt_ratio

SRC = """\
dim D = 32
input x[D]
input y
param w[D]
param b
z = dot(w, x) + b
loss = softplus(z) - y * z + 1e-3 * sum(w ^ 2)
"""
D = 32
LAM = 1e-3
B_SMALL = 256
BANDWIDTH_SHARE = 0.85     # of the one-pass read bandwidth measured in the same run


def big_batch(quick: bool) -> int:
    return 250_000 if quick else 1_000_000


def make_data(B: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, D))
    w_true = rng.standard_normal(D)
    y = (rng.random(B) < 1 / (1 + np.exp(-(X @ w_true)))).astype(np.float64)
    return X, y


def make_theta(seed: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(0, 0.3, D), "b": np.array(0.1)}


def numpy_vg(theta, X, y):
    """By hand: z = Xw + b, objective mean(softplus(z) - y z) + lam |w|^2;
    d/dz = sigmoid(z) - y, so grad w = X^T r + 2 lam w, grad b = sum r, r = (s - y)/B."""
    w, b = theta["w"], float(theta["b"])
    B = X.shape[0]
    z = X @ w
    z += b
    e = np.exp(-np.abs(z))
    sp = np.maximum(z, 0.0) + np.log1p(e)                 # stable softplus
    value = float(np.mean(sp - y * z)) + LAM * float(w @ w)
    s = np.where(z >= 0, 1.0, e) / (1.0 + e)               # stable sigmoid
    r = (s - y) / B
    return value, {"w": X.T @ r + 2 * LAM * w, "b": np.array(r.sum())}


def jax_vg(jax):
    jnp = jax.numpy

    def f(p, x, y):
        z = x @ p["w"] + p["b"]
        return jnp.mean(jax.nn.softplus(z) - y * z) + LAM * jnp.sum(p["w"] ** 2)
    return jax.jit(jax.value_and_grad(f))


def jax_impl(jax, theta, X, y, name="jax jit", note=""):
    vg = jax_vg(jax)
    jnp = jax.numpy
    p = {k: jnp.asarray(v) for k, v in theta.items()}
    xj, yj = jnp.asarray(X), jnp.asarray(y)
    return Impl(name, lambda: jax.block_until_ready(vg(p, xj, yj)),
                lambda o: (float(o[0]), {k: np.asarray(a) for k, a in o[1].items()}),
                note=note, gbytes=X.nbytes / 1e9)


def torch_impl(torch, theta, X, y, name="torch eager"):
    F = torch.nn.functional
    w = torch.tensor(theta["w"], requires_grad=True)
    b = torch.tensor(float(theta["b"]), dtype=torch.float64, requires_grad=True)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def call():
        z = xt @ w + b
        val = (F.softplus(z) - yt * z).mean() + LAM * (w * w).sum()
        return val, torch.autograd.grad(val, (w, b))
    return Impl(name, call, lambda o: (float(o[0].detach()), {"w": as_np(o[1][0]), "b": as_np(o[1][1])}),
                gbytes=X.nbytes / 1e9)


def jax_child(ctx) -> dict:
    """Run in a child process started with 2 XLA threads: JAX at the large batch."""
    X, y = make_data(big_batch(ctx.quick))
    theta = make_theta()
    ref = numpy_vg(theta, X, y)
    im = jax_impl(ctx.jax, theta, X, y)
    return child_case(ctx, im, ref, "W2")


def run(ctx) -> None:
    jax, torch = ctx.jax, ctx.torch
    m = compile_model(SRC, dims={"D": D})
    theta = make_theta()

    # ------------------------------------------------------------ B = 256
    X, y = make_data(B_SMALL)
    impls = small_batch_impls(m, theta, X, y, numpy_vg)
    impls += peer_impls(jax, jax_impl, torch, torch_impl, theta, X, y)
    for im in impls:
        im.gbytes = None
    case = f"B={B_SMALL}"
    rows = ctx.run_case("W2", case, impls, samples=ctx.samples(25, 7))
    na_peers(ctx, "W2", case)
    peers = [r for n, r in rows.items() if not n.startswith("lossc") and r.time]
    hi = rows["lossc value_and_grad"].time
    if peers and hi:
        fastest = min(peers, key=lambda r: r.time)
        r = fastest.time / hi
        lo = rows["lossc flat (low level)"].time
        ctx.target("W2 B=256 vs fastest peer", f"{fmt_ratio(r)}x faster", ">= 5x", r >= 5,
                   f"fastest peer {fastest.impl} {fastest.time * 1e6:.1f} us, lossc "
                   f"{hi * 1e6:.1f} us (flat {lo * 1e6:.1f} us: "
                   f"{fmt_ratio(fastest.time / lo)}x)" if lo else "",
                   anchor=("W2", case, fastest.impl))

    # ------------------------------------------------------------ B = 1e6, 1 thread
    B = big_batch(ctx.quick)
    X, y = make_data(B)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    m32 = compile_model(SRC, dims={"D": D}, dtype="float32")
    theta32 = {k: v.astype(np.float32) for k, v in theta.items()}
    gb = X.nbytes / 1e9
    impls = [
        Impl("lossc value_and_grad", lambda: m.value_and_grad(theta, x=X, y=y), lossc_result,
             gbytes=gb),
        Impl("lossc float32", lambda: m32.value_and_grad(theta32, x=X32, y=y32),
             lossc_result, gbytes=X32.nbytes / 1e9, rtol=1e-4,
             note="checked against float64 at rtol 1e-4"),
        Impl("numpy (by hand)", lambda: numpy_vg(theta, X, y), lambda o: o, gbytes=gb),
    ]
    impls += peer_impls(jax, jax_impl, torch, torch_impl, theta, X, y)
    impls.append(read_bandwidth_impl(X))
    case = f"B={B:,}, 1 thread"
    samples = ctx.samples(9, 3)
    rows = ctx.run_case("W2", case, impls, samples=samples, sample_s=0.0)
    na_peers(ctx, "W2", case)
    t1 = rows["lossc value_and_grad"].time
    bandwidth_target(ctx, "W2 B=1e6 share of 1-thread read bandwidth", "W2", case, rows,
                     "lossc value_and_grad", 1, BANDWIDTH_SHARE)
    peers = [r for n, r in rows.items()
             if not n.startswith("lossc") and r.check != "-" and r.time]
    if peers and t1:
        slowest_ratio = min(r.time / t1 for r in peers)
        closest = min(peers, key=lambda r: r.time)
        ctx.target("W2 B=1e6 vs every peer (1 thread)", f"{fmt_ratio(slowest_ratio)}x faster",
                   ">= 2.5x", slowest_ratio >= 2.5,
                   f"closest peer {closest.impl} {closest.time * 1e3:.1f} ms, lossc "
                   f"{t1 * 1e3:.1f} ms", anchor=("W2", case, closest.impl))
    t32 = rows["lossc float32"].time
    if t1 and t32:
        ctx.target("W2 float32 vs float64 throughput", f"{fmt_ratio(t1 / t32)}x", ">= 1.6x",
                   t1 / t32 >= 1.6, f"f64 {t1 * 1e3:.1f} ms, f32 {t32 * 1e3:.1f} ms",
                   anchor=("W2", case, "lossc float32"))

    # ------------------------------------------------------------ B = 1e6, n threads
    n = ctx.threads
    if n < 2:
        return
    case_n = f"B={B:,}, {n} threads"
    call = threaded_call(m, theta, {"x": X, "y": y}, n)
    if call is None:
        ctx.na("W2", case_n, f"lossc {n} threads", "not supported")
        ctx.target(f"W2 B=1e6 {n} threads vs 1 thread", "n/a (not supported)", ">= 1.7x", None)
        return
    impls = thread_impls(m, call, theta, X, y, n, numpy_vg, torch, torch_impl, gbytes=gb)
    impls.append(read_bandwidth_impl(X, n))
    with ctx.all_cores():
        rows = ctx.run_case("W2", case_n, impls, samples=samples,
                            sample_s=0.0, interleave=False)
        child_row(ctx, "W2", case_n, gb)
    tn = rows[f"lossc {n} threads"].time
    bandwidth_target(ctx, f"W2 B=1e6 share of {n}-thread read bandwidth", "W2", case_n, rows,
                     f"lossc {n} threads", n, BANDWIDTH_SHARE)
    if tn and t1:
        # Threads cannot stream faster than the machine reads: where the n-thread read
        # bandwidth is not 1.7x the one-thread one (the cores share the memory channels),
        # the scaling target is met by reaching that bandwidth instead.
        probe = next((r for name, r in rows.items() if name.startswith("numpy sum of X")),
                     None)
        bw_n = probe.gbps if probe is not None else None
        ours = rows[f"lossc {n} threads"].gbps
        at_bandwidth = bool(bw_n and ours and ours >= BANDWIDTH_SHARE * bw_n)
        detail = f"1 thread {t1 * 1e3:.1f} ms, {n} threads {tn * 1e3:.1f} ms"
        if bw_n and ours:
            detail += (f"; {n} threads stream {ours:.1f} GB/s of the {bw_n:.1f} GB/s the "
                       f"machine reads with {n}")
        ctx.target(f"W2 B=1e6 {n} threads vs 1 thread", f"{fmt_ratio(t1 / tn)}x",
                   f">= 1.7x, or >= {100 * BANDWIDTH_SHARE:.0f}% of the {n}-thread read "
                   f"bandwidth", t1 / tn >= 1.7 or at_bandwidth, detail,
                   anchor=("W2", case_n, f"lossc {n} threads"))
