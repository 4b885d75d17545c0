"""W7: an MNIST-sized MLP classifier, D=784, K=10: h = tanh(W1 x + b1), z = W2 h + b2,
objective mean(logsumexp(z) - z[y]); H = 128 and 512, B = 256 and 4,096, float64 and
float32. GFLOP/s against NumPy's single-thread matrix-multiply rate at the workload's
own products, measured in the same run, and lossc's compile time. Each case also shows
lossc's and JAX's share of the core's FMA peak (benchmarks/machine.py fma_peak, measured
at the start of the workload): how far each is from the arithmetic ceiling.

FLOPs are counted as the matrix products the value and gradient need: forward
2B(DH + HK) (X W1^T and h W2^T), backward 2B(DH + 2HK) (the weight gradients dZ1^T X
and dZ2^T h, and dh = dZ2 W2; no implementation computes the gradient of the input x,
so the usual "backward is twice the forward" would count 2BDH that nobody does). The
elementwise terms (tanh, exp, the softmax) are not counted. The GEMM row is NumPy doing
exactly those five products, on one BLAS thread, so "share of the GEMM rate" is the
GEMM row's time over lossc's.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks import machine
from benchmarks.common import (Null, as_np, blas_threads, compile_model, lossc_result,
                               na_peers, softmax_cross_entropy)
from benchmarks.harness import Impl, Row, fmt_speedup, fmt_time

SRC = """\
dim D = 784
dim H = 128
dim K = 10
input x[D]
input y: int
param W1[H, D] = glorot
param b1[H]
param W2[K, H] = glorot
param b2[K]
h = tanh(W1 @ x + b1)
z = W2 @ h + b2
loss = logsumexp(z) - z[y]
"""
D, K = 784, 10
HIDDEN = (128, 512)
BATCHES = (256, 4096)
DTYPES = ("float64", "float32")
GEMM_SHARE = 0.85           # of NumPy's single-thread GEMM rate at the same products
VS_JAX = 1.2                # lossc's speed-up over JAX jit pinned to one core
COMPILE_S = 1.0
NOTE = ("W7: FLOPs are the matrix products the value and gradient need, 2B(DH + HK) "
        "forward and 2B(DH + 2HK) backward (the weight gradients and dh; no one computes "
        "the input's gradient, which the usual 3x-forward count would add); elementwise "
        "work is not counted. The GEMM row is NumPy (BLAS on one thread, threadpoolctl) "
        "doing exactly those five products on preallocated arrays; the share of the GEMM "
        "rate is its time over lossc's. Compile time: lossc.compile without cache. The FMA "
        "peak row is the time the case's FLOPs take at the core's FMA peak for the dtype "
        "(independent vector FMAs on the widest vectors lossc uses, compiled by LLVM for "
        "this CPU, measured at the start of W7): lossc's and JAX's rows say their share "
        "of it.")


def flops(B: int, H: int) -> float:
    """Multiply-adds x 2 of the products a value and gradient need (see the docstring)."""
    return 2.0 * B * (D * H + H * K) + 2.0 * B * (D * H + 2 * H * K)


def make_data(B: int, dtype: str, seed: int = 11):
    rng = np.random.default_rng(seed)
    X = rng.random((B, D)).astype(dtype)            # pixel-like values in [0, 1)
    y = rng.integers(0, K, B).astype(np.int64)
    return X, y


def make_theta(m, H: int, seed: int = 12) -> dict:
    theta = m.init_params(seed)
    rng = np.random.default_rng(seed)
    theta["b1"] = rng.normal(0, 0.1, H).astype(m.dtype)
    theta["b2"] = rng.normal(0, 0.1, K).astype(m.dtype)
    return theta


def numpy_vg(p, X, y):
    """By hand: Z1 = X W1^T + b1, h = tanh(Z1), Z2 = h W2^T + b2, objective
    mean(logsumexp(Z2) - Z2[y]); P = (softmax(Z2) - onehot(y)) / B; grad W2 = P^T h,
    grad b2 = column sums of P; dZ1 = (P W2) * (1 - h^2); grad W1 = dZ1^T X, grad b1 =
    column sums of dZ1."""
    h = np.tanh(X @ p["W1"].T + p["b1"])
    value, P = softmax_cross_entropy(h @ p["W2"].T + p["b2"], y)
    dZ1 = (P @ p["W2"]) * (1.0 - h * h)
    return value, {"W1": dZ1.T @ X, "b1": dZ1.sum(axis=0), "W2": P.T @ h,
                   "b2": P.sum(axis=0)}


def gemm_call(p, X):
    """The five products of a value and gradient, on preallocated arrays (NumPy's BLAS,
    one thread): X W1^T, h W2^T, P^T h, P W2, dZ1^T X."""
    B, H = X.shape[0], p["W1"].shape[0]
    dt = X.dtype
    h, Z, dW2, dh, dW1 = (np.empty(s, dt) for s in ((B, H), (B, K), (K, H), (B, H), (H, D)))
    W1t, W2t = np.ascontiguousarray(p["W1"].T), np.ascontiguousarray(p["W2"].T)
    W2 = np.ascontiguousarray(p["W2"])
    P = np.full((B, K), 0.01, dt)

    def call():
        np.matmul(X, W1t, out=h)
        np.matmul(h, W2t, out=Z)
        np.matmul(P.T, h, out=dW2)
        np.matmul(P, W2, out=dh)
        np.matmul(dh.T, X, out=dW1)
        return dW1
    return call


def jax_impl(jax, theta, X, y):
    jnp = jax.numpy

    def f(p, x, y):
        h = jnp.tanh(x @ p["W1"].T + p["b1"])
        z = h @ p["W2"].T + p["b2"]
        picked = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - picked)
    vg = jax.jit(jax.value_and_grad(f))
    p = {k: jnp.asarray(v) for k, v in theta.items()}
    xj, yj = jnp.asarray(X), jnp.asarray(y)
    return Impl("jax jit", lambda: jax.block_until_ready(vg(p, xj, yj)),
                lambda o: (float(o[0]), {k: np.asarray(a) for k, a in o[1].items()}),
                note="pinned to one core, XLA on one thread")


def torch_impl(torch, theta, X, y):
    F = torch.nn.functional
    ps = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in theta.items()}
    names = list(ps)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def call():
        h = torch.tanh(xt @ ps["W1"].T + ps["b1"])
        val = F.cross_entropy(h @ ps["W2"].T + ps["b2"], yt)
        return val, torch.autograd.grad(val, [ps[k] for k in names])
    return Impl("torch eager", call, lambda o: (
        float(o[0].detach()), {k: as_np(g) for k, g in zip(names, o[1])}),
        note="cross_entropy")


def compile_timed(H: int, dtype: str):
    t0 = time.perf_counter_ns()
    m = compile_model(SRC, dims={"H": H}, dtype=dtype, cache=False)
    return m, (time.perf_counter_ns() - t0) * 1e-9


def run(ctx) -> None:
    ctx.notes.append(NOTE)
    measure_peaks(ctx)
    # NumPy's BLAS on one thread for the whole workload (the single-thread run starts it
    # so; the limit makes sure), so every implementation can be timed round-robin
    with blas_threads(1) or Null():
        run_cases(ctx)


def run_cases(ctx) -> None:
    # the process's first compile pays LLVM's own set-up, which is not this model's
    compile_model("input x\nparam a\nloss = (a * x - 1) ^ 2\n", cache=False)
    compiles = []
    for dtype in DTYPES:
        for H in HIDDEN:
            m, seconds = compile_timed(H, dtype)
            compiles.append((dtype, H, seconds))
            case = f"{dtype}, H={H}"
            ctx.rows.append(Row("W7", case + ", compile", "lossc.compile, no cache",
                                seconds=seconds, ref=True))
            ctx.log(f"W7 {case}: lossc.compile {fmt_time(seconds)}")
            theta = make_theta(m, H)
            for B in BATCHES:
                one_case(ctx, m, theta, dtype, H, B)
    worst = max(compiles, key=lambda c: c[2])
    ctx.target("W7 lossc.compile, slowest of the four models", fmt_time(worst[2]),
               f"< {COMPILE_S:g} s", worst[2] < COMPILE_S,
               ", ".join(f"{d} H={h}: {fmt_time(s)}" for d, h, s in compiles),
               anchor=("W7", f"{worst[0]}, H={worst[1]}, compile", "lossc.compile, no cache"))


def one_case(ctx, m, theta, dtype: str, H: int, B: int) -> None:
    jax, torch = ctx.jax, ctx.torch
    X, y = make_data(B, dtype)
    gf = flops(B, H) / 1e9
    rtol = 1e-8 if dtype == "float64" else 1e-4
    impls = [
        Impl("lossc value_and_grad", lambda: m.value_and_grad(theta, x=X, y=y), lossc_result,
             gflop=gf),
        Impl("numpy (by hand)", lambda: numpy_vg(theta, X, y), lambda o: o, gflop=gf),
        Impl("numpy GEMMs alone (1 BLAS thread)", gemm_call(theta, X), lambda o: (0.0, {}),
             gflop=gf, checked=False,
             note="the workload's five matrix products: the machine's rate"),
    ]
    if jax is not None:
        impls.append(jax_impl(jax, theta, X, y))
    if torch is not None:
        impls.append(torch_impl(torch, theta, X, y))
    for im in impls:
        im.gflop = gf
    case = f"{dtype}, H={H}, B={B:,}"
    big = B * H >= 4096 * 128           # (calls of a tenth of a second and more)
    rows = ctx.run_case("W7", case, impls, samples=ctx.samples(5 if big else 9, 3),
                        sample_s=0.0 if big else 0.02, rtol=rtol, warmup=1)
    na_peers(ctx, "W7", case)
    peak_share(ctx, case, rows, ctx.fma_peak.get(dtype), gf)
    t = rows["lossc value_and_grad"].time
    gemm = rows["numpy GEMMs alone (1 BLAS thread)"]
    if t and gemm.time:
        share = gemm.time / t
        ctx.target(f"W7 {case}: share of the GEMM rate",
                   f"{100 * share:.0f}% ({gf / t:.1f} of {gf / gemm.time:.1f} GFLOP/s)",
                   f">= {100 * GEMM_SHARE:.0f}%", share >= GEMM_SHARE,
                   f"lossc {fmt_time(t)}, the GEMMs alone {fmt_time(gemm.time)}",
                   anchor=("W7", case, "lossc value_and_grad"))
    r = rows.get("jax jit")
    name = f"W7 {case}: vs JAX jit (one core)"
    if r is not None and r.time and t:
        ctx.target(name, fmt_speedup(r.time / t), f">= {VS_JAX:g}x",
                   r.time / t >= VS_JAX, f"lossc {fmt_time(t)}, JAX {fmt_time(r.time)}",
                   anchor=("W7", case, "jax jit"))
    else:
        ctx.target(name, "n/a", f">= {VS_JAX:g}x", None, ctx.jax_why or "JAX failed")


PEAK_IMPL = "FMA peak (machine limit)"


def measure_peaks(ctx) -> None:
    """The FMA peak of each dtype into ctx.fma_peak, unless measured already; where it
    cannot be measured (no code generation for this CPU), W7 runs without the peak's
    rows and says why."""
    for dtype in DTYPES:
        if dtype not in ctx.fma_peak:
            try:
                ctx.fma_peak[dtype] = machine.fma_peak(dtype)
            except Exception as e:      # the figure is extra: the workload goes on
                ctx.log(f"W7 FMA peak, {dtype}: not measured ({type(e).__name__}: {e})")
                continue
        ctx.log(f"W7 FMA peak, {ctx.fma_peak[dtype].describe()}")


def peak_share(ctx, case: str, rows: dict, peak, gf: float) -> None:
    """The case's FLOPs at the core's FMA peak as a row, each of lossc's and JAX's share
    of it in their row's note, and both as a figure."""
    if peak is None:
        return
    ctx.rows.append(Row("W7", case, PEAK_IMPL, seconds=gf / peak.gflops, gflop=gf,
                        check="-", note=f"{peak.bits}-bit FMAs, one core: the ceiling"))
    shares = []
    for impl, label in (("lossc value_and_grad", "lossc"), ("jax jit", "JAX")):
        r = rows.get(impl)
        if r is None or not r.gflops:
            continue
        share = r.gflops / peak.gflops
        r.note = "; ".join(filter(None, [r.note, f"{100 * share:.0f}% of the FMA peak"]))
        shares.append(f"{label} {100 * share:.0f}%")
    ctx.target(f"W7 {case}: share of the FMA peak", ", ".join(shares) or "n/a", "(figure)",
               None, f"peak {peak.gflops:.1f} GFLOP/s")
