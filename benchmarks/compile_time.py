"""Compile time: a cold lossc.compile of W2's logistic model (no cache), the same from the
persistent cache in a new process, and JAX's first call (trace + XLA compile) for scale."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

import lossc
from benchmarks.common import compile_model
from benchmarks.harness import Row, Stat, fmt_time
from benchmarks.w2_logistic import SRC, D, jax_vg, make_data, make_theta

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import lossc                                   # importing is not compiling: not timed
compile_model = lossc.compile                  # (the package imports its names on first use)
src = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
t0 = time.perf_counter_ns()
m = compile_model(src, dims={"D": %d}, cache=True)
t1 = time.perf_counter_ns()
import numpy as np
theta = m.init_params(0)
X = np.ones((4, %d)); y = np.ones(4)
v, g = m.value_and_grad(theta, x=X, y=y)
t2 = time.perf_counter_ns()
print(json.dumps({"compile": (t1 - t0) * 1e-9, "first_call": (t2 - t1) * 1e-9, "value": v}))
""" % (D, D)


def run(ctx) -> None:
    ctx.log("compile")
    # samples/logistic.loss at D=32 (W2's model with a hyper); W2's source if it is gone
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "samples", "logistic.loss")
    src = path if os.path.exists(path) else SRC
    case = ("samples/logistic.loss" if src == path else "W2 logistic") + ", D=32"
    # cold, no cache: the first in this process may pay one-time LLVM set-up (reported
    # apart); the median of the next ones is the figure
    reps = ctx.samples(9, 3)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter_ns()
        compile_model(src, dims={"D": D}, cache=False)
        times.append((time.perf_counter_ns() - t0) * 1e-9)
    cold = float(np.median(times[1:]))
    ctx.rows.append(Row("compile", case, "lossc.compile, no cache",
                        stat=Stat(cold, float(np.percentile(times[1:], 25)),
                                  float(np.percentile(times[1:], 75)), 1, reps),
                        note=f"first in this process {fmt_time(times[0])}", ref=True))
    ctx.log(f"  lossc.compile (no cache)   {fmt_time(cold):>10}  "
            f"(first in process {fmt_time(times[0])})")
    ctx.target("compile: cold lossc.compile of logistic (D=32)", fmt_time(cold), "< 100 ms",
               cold < 0.1, anchor=("compile", case, "lossc.compile, no cache"))

    # from the persistent cache, in a new process
    with tempfile.TemporaryDirectory(prefix="lossc-bench-cache-") as d:
        options = dataclasses.replace(lossc.Options.from_env(), cache_dir=pathlib.Path(d))
        compile_model(src, dims={"D": D}, cache=True, options=options)   # fills the cache
        env = dict(os.environ, LOSSC_CACHE_DIR=d)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        hits, firsts, err = [], [], None
        for _ in range(ctx.samples(5, 2)):
            p = subprocess.run([sys.executable, "-c", CHILD] + ([src] if src == path else []),
                               input=None if src == path else SRC, env=env,
                               capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"
                break
            out = json.loads(p.stdout.strip().splitlines()[-1])
            hits.append(out["compile"])
            firsts.append(out["first_call"])
    if err is None and hits:
        hit = float(np.median(hits))
        ctx.rows.append(Row("compile", case + ", cached", "lossc.compile from cache, new process",
                            stat=Stat(hit, float(np.percentile(hits, 25)),
                                      float(np.percentile(hits, 75)), 1, len(hits)),
                            note=f"then first call {fmt_time(float(np.median(firsts)))}",
                            ref=True))
        ctx.log(f"  lossc.compile from cache, new process {fmt_time(hit):>10}")
        ctx.target("compile: from persistent cache, new process", fmt_time(hit), "< 5 ms",
                   hit < 0.005, anchor=("compile", case + ", cached",
                                        "lossc.compile from cache, new process"))
    else:
        ctx.fail(f"compile: the cache child process failed: {err}")
        ctx.target("compile: from persistent cache, new process", "n/a", "< 5 ms", None, err)

    # JAX's first call, for scale
    jax = ctx.jax
    if jax is not None:
        jnp = jax.numpy
        X, y = make_data(256)
        theta = make_theta()
        p = {k: jnp.asarray(v) for k, v in theta.items()}
        xj, yj = jnp.asarray(X), jnp.asarray(y)
        vg = jax_vg(jax)
        t0 = time.perf_counter_ns()
        jax.block_until_ready(vg(p, xj, yj))
        tj = (time.perf_counter_ns() - t0) * 1e-9
        ctx.rows.append(Row("compile", case, "jax jit first call (trace + compile)", seconds=tj))
        ctx.log(f"  jax jit first call         {fmt_time(tj):>10}")
    else:
        ctx.na("compile", case, "jax jit first call", ctx.jax_why)
