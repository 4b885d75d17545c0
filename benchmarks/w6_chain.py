"""W6: expression swell. f_0 = x, f_k = sin(f_{k-1}) * f_{k-1} + x, loss f_n for
n = 4 .. 200: compile time (cold, no cache), graph size per stage, the size the gradient
would have as an expanded tree, and the gradient checked against the chain rule by hand."""
from __future__ import annotations

import math
import time

import numpy as np

from benchmarks.common import compile_model
from benchmarks.harness import Row, Stat, fmt_ratio, fmt_time

X0 = 0.5


def source(n: int) -> str:
    lines = [f"# the deep chain, depth {n}", f"param x = {X0}"]
    prev = "x"
    for k in range(1, n):
        lines.append(f"f{k} = sin({prev}) * {prev} + x")
        prev = f"f{k}"
    lines.append(f"loss = sin({prev}) * {prev} + x")
    return "\n".join(lines) + "\n"


def by_hand(n: int, x: float = X0) -> tuple[float, float]:
    """f_n and df_n/dx in forward mode: df_k = (f_{k-1} cos f_{k-1} + sin f_{k-1}) df_{k-1} + 1."""
    f, df = x, 1.0
    for _ in range(n):
        f, df = math.sin(f) * f + x, (f * math.cos(f) + math.sin(f)) * df + 1.0
    return f, df


def run(ctx) -> None:
    from lossc.compiler import compile_source
    try:
        from lossc.ir.stats import forward_size, tree_sizes
    except ImportError:
        forward_size = tree_sizes = None
    depths = [4, 16, 50, 100, 200] if ctx.quick else [4, 8, 16, 32, 50, 100, 150, 200]
    reps = ctx.samples(5, 1)
    ctx.log("W6 deep chain")
    ctx.log(f"  {'n':>4} {'compile':>10} {'to LLVM IR':>12} {'stages (nodes)':<40} "
            f"{'loss':>5} {'final':>6} {'ratio':>6} {'tree':>12}")
    compile_times = {}
    ratios = {}
    # round-robin over the depths: a slow spell of a shared machine then slows every
    # depth alike instead of bending the line
    all_times = {n: [] for n in depths}
    models = {}
    for _ in range(reps):
        for n in depths:
            t0 = time.perf_counter_ns()
            models[n] = compile_model(source(n), cache=False)
            all_times[n].append((time.perf_counter_ns() - t0) * 1e-9)
    for n in depths:
        src = source(n)
        times, m = all_times[n], models[n]
        t = float(np.median(times))
        compile_times[n] = t
        fronts = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            c = compile_source(src, None, "float64")
            fronts.append((time.perf_counter_ns() - t0) * 1e-9)
        t_front = float(np.median(fronts))
        stages = {k: len(g.nodes) for k, g in c.stages.items()}
        final = len(c.graph.nodes)
        loss_nodes = forward_size(c.graph) if forward_size else None
        ratio = final / loss_nodes if loss_nodes else None
        ratios[n] = ratio
        tree = None
        if tree_sizes is not None:
            ad = c.stages.get("cse") or c.graph
            sizes = tree_sizes(ad)
            tree = sum(sizes[v.id] for k, v in ad.outputs.items() if k.startswith("grad."))
        # the gradient against the chain rule
        v, g = m.value_and_grad(m.init_params(0))
        fv, dfv = by_hand(n)
        err = max(abs(v - fv) / max(abs(fv), 1e-300), abs(float(g["x"]) - dfv) / max(abs(dfv), 1e-300))
        check = ("ok " if err <= 1e-8 else "FAIL ") + f"{err:.0e}"
        if err > 1e-8:
            ctx.fail(f"W6 n={n}: lossc gives {v}, {float(g['x'])}; by hand {fv}, {dfv}")
        stage_txt = " ".join(f"{k}:{s}" for k, s in stages.items())
        tree_txt = (f"{tree:.2e}" if tree > 1e6 else str(tree)) if tree is not None else "n/a"
        ctx.log(f"  {n:>4} {fmt_time(t):>10} {fmt_time(t_front):>12} {stage_txt:<40} "
                f"{loss_nodes or 'n/a':>5} {final:>6} {fmt_ratio(ratio) if ratio else 'n/a':>6} "
                f"{tree_txt:>12}  {check}")
        note = f"graph {final} nodes (loss alone {loss_nodes}, {fmt_ratio(ratio)}x)" \
            if ratio else f"graph {final} nodes"
        if tree is not None:
            note += f"; gradient as an expanded tree {tree_txt}"
        note += f"; source to LLVM IR {fmt_time(t_front)}"
        ctx.rows.append(Row("W6", f"depth {n}", "lossc compile (no cache)",
                            stat=Stat(t, float(np.percentile(times, 25)),
                                      float(np.percentile(times, 75)), 1, len(times)),
                            check=check, note=note))

    # JAX's tracing + XLA compile of the same chain, for scale
    jax = ctx.jax
    if jax is not None:
        jnp = jax.numpy
        for n in ([50, 200] if not ctx.quick else [200]):
            def f(x, n=n):
                fk = x
                for _ in range(n):
                    fk = jnp.sin(fk) * fk + x
                return fk
            vg = jax.jit(jax.value_and_grad(f))
            t0 = time.perf_counter_ns()
            out = jax.block_until_ready(vg(jnp.asarray(X0)))
            tj = (time.perf_counter_ns() - t0) * 1e-9
            fv, dfv = by_hand(n)
            ok = abs(float(out[1]) - dfv) <= 1e-8 * abs(dfv)
            ctx.rows.append(Row("W6", f"depth {n}", "jax jit first call (trace + compile)",
                                seconds=tj, check="ok" if ok else "FAIL"))
            ctx.log(f"  jax jit first call, depth {n}: {fmt_time(tj)}")

    # targets
    n_hi = max(depths)
    n_mid = n_hi // 2 if n_hi // 2 in compile_times else sorted(compile_times)[-2]
    n_lo = min(depths)
    t_hi, t_mid, t_lo = compile_times[n_hi], compile_times[n_mid], compile_times[n_lo]
    # linear: the cost above the smallest depth grows in proportion to the depth
    growth = (t_hi - t_lo) / max(t_mid - t_lo, 1e-9)
    linear = (n_hi - n_lo) / (n_mid - n_lo)
    ctx.target("W6 compile time linear in depth",
               f"t({n_hi})-t({n_lo}) = {fmt_ratio(growth)} x (t({n_mid})-t({n_lo}))",
               f"~{linear:.2f} (linear); <= {1.25 * linear:.2f}", growth <= 1.25 * linear,
               "per level: " + ", ".join(f"n={n}: {compile_times[n] / n * 1e3:.2f} ms"
                                         for n in (n_lo, n_mid, n_hi)))
    ctx.target(f"W6 compile at depth {n_hi}", fmt_time(t_hi), "< 0.5 s", t_hi < 0.5,
               anchor=("W6", f"depth {n_hi}", "lossc compile (no cache)"))
    worst = max((r for r in ratios.values() if r), default=None)
    if worst is not None:
        ctx.target("W6 gradient graph vs loss graph", f"{fmt_ratio(worst)}x (worst depth)",
                   "<= 4x", worst <= 4,
                   ", ".join(f"n={n}: {fmt_ratio(r)}x" for n, r in ratios.items() if r))
    else:
        ctx.target("W6 gradient graph vs loss graph", "n/a", "<= 4x", None,
                   "lossc.ir.stats.forward_size not available")
