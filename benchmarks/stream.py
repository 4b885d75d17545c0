"""Streaming at bandwidth: W2's logistic model at D = 8,192, B = 4,096 (a batch of 268 MB
that one value and gradient reads once), on one thread and on --threads threads, as a
share of the one-pass read bandwidth measured in the same run. (W2 at B = 1,000,000 is
judged the same way in W2's own rows.)"""
from __future__ import annotations

import numpy as np

from benchmarks.common import (bandwidth_target, compile_model, lossc_result, na_peers,
                               peer_impls, read_bandwidth_impl, thread_impls,
                               threaded_call)
from benchmarks.harness import Impl
from benchmarks.w2_logistic import SRC, jax_impl, numpy_vg, torch_impl

D, B = 8192, 4096
SHARE = 0.85           # of the read bandwidth


def make_data(seed: int = 41):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, D))
    w_true = rng.normal(0, 1 / np.sqrt(D), D)
    y = (rng.random(B) < 1 / (1 + np.exp(-(X @ w_true)))).astype(np.float64)
    return X, y


def make_theta(seed: int = 42) -> dict:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(0, 0.3 / np.sqrt(D), D), "b": np.array(0.1)}


def run(ctx) -> None:
    jax, torch = ctx.jax, ctx.torch
    m = compile_model(SRC, dims={"D": D})
    theta = make_theta()
    X, y = make_data()
    gb = X.nbytes / 1e9
    impls = [
        Impl("lossc value_and_grad", lambda: m.value_and_grad(theta, x=X, y=y), lossc_result,
             gbytes=gb),
        Impl("numpy (by hand)", lambda: numpy_vg(theta, X, y), lambda o: o, gbytes=gb),
    ]
    impls += peer_impls(jax, jax_impl, torch, torch_impl, theta, X, y)
    impls.append(read_bandwidth_impl(X))
    case = f"logistic D={D:,}, B={B:,}, 1 thread"
    samples = ctx.samples(9, 3)
    rows = ctx.run_case("stream", case, impls, samples=samples, sample_s=0.0)
    na_peers(ctx, "stream", case)
    bandwidth_target(ctx, target_name(1), "stream", case, rows, "lossc value_and_grad", 1,
                     SHARE)

    n = ctx.threads
    if n < 2:
        return
    case_n = f"logistic D={D:,}, B={B:,}, {n} threads"
    call = threaded_call(m, theta, {"x": X, "y": y}, n)
    if call is None:
        ctx.na("stream", case_n, f"lossc {n} threads", "not supported")
        bandwidth_target(ctx, target_name(n), "stream", case_n, {}, f"lossc {n} threads", n,
                         SHARE)
        return
    impls = thread_impls(m, call, theta, X, y, n, numpy_vg, torch, torch_impl, gbytes=gb)
    impls.append(read_bandwidth_impl(X, n))
    with ctx.all_cores():
        rows = ctx.run_case("stream", case_n, impls, samples=samples, sample_s=0.0,
                            interleave=False)
    bandwidth_target(ctx, target_name(n), "stream", case_n, rows, f"lossc {n} threads", n,
                     SHARE)


def target_name(threads: int) -> str:
    return (f"stream: logistic D={D:,} B={B:,}, {threads} thread{'s' * (threads > 1)}, "
            "share of read bandwidth")
