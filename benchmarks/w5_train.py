"""W5: a whole training run. W2's model on N=16,384 samples, Adam (lr 1e-2, betas
0.9/0.999, eps 1e-8), batch 64, reshuffled each epoch from a fixed seed, 20 epochs:
total wall time and the final full-data loss, every implementation on the same shuffles
(the permutations lossc.train draws: np.random.default_rng(seed).permutation(N) per
epoch). Each implementation draws them in its run, as lossc.train does in its own: the
reshuffle is part of the workload (NumPy's permutation takes some 0.15 ms an epoch
here, the peers' share of a run of 25 ms and more)."""
from __future__ import annotations

import gc
import math
import time

import numpy as np

import lossc
from benchmarks.common import compile_model
from benchmarks.harness import Row, fmt_err, fmt_ratio, fmt_time, measure, rel_err
from benchmarks.w2_logistic import SRC, numpy_vg

N, D, BS = 16_384, 32, 64
LR, B1, B2, EPS = 1e-2, 0.9, 0.999, 1e-8
LAM = 1e-3
SEED = 0


def make_data(seed: int = 7):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    w_true = rng.standard_normal(D)
    y = (rng.random(N) < 1 / (1 + np.exp(-(X @ w_true)))).astype(np.float64)
    return X, y


def shuffles(epochs: int, seed: int = SEED):
    """Each epoch's permutation, drawn as it is needed."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        yield rng.permutation(N)


def full_loss(p, X, y) -> float:
    return numpy_vg({"w": p[:D], "b": np.array(p[D])}, X, y)[0]


# ---------------------------------------------------------------- numpy

def numpy_run(X, y, epochs: int) -> np.ndarray:
    """Mini-batch Adam by hand, in PyTorch's (and lossc's) order of operations."""
    p = np.zeros(D + 1)
    m = np.zeros(D + 1)
    v = np.zeros(D + 1)
    g = np.empty(D + 1)
    t = 0
    for perm in shuffles(epochs):
        Xp, yp = X[perm], y[perm]
        for s in range(0, N, BS):
            xb, yb = Xp[s:s + BS], yp[s:s + BS]
            z = xb @ p[:D] + p[D]
            e = np.exp(-np.abs(z))
            r = (np.where(z >= 0, 1.0, e) / (1.0 + e) - yb) / len(yb)
            np.dot(xb.T, r, out=g[:D])
            g[:D] += 2 * LAM * p[:D]
            g[D] = r.sum()
            t += 1
            m += (1 - B1) * (g - m)
            v *= B2
            v += (1 - B2) * g * g
            bc1 = 1 - B1 ** t
            bc2_sqrt = (1 - B2 ** t) ** 0.5
            denom = np.sqrt(v) / bc2_sqrt
            denom += EPS
            p -= (LR / bc1) * m / denom
    return p


# ---------------------------------------------------------------- JAX

def jax_fns(jax):
    jnp = jax.numpy
    lax = jax.lax

    def loss(p, xb, yb):
        z = xb @ p[:D] + p[D]
        return jnp.mean(jax.nn.softplus(z) - yb * z) + LAM * jnp.sum(p[:D] ** 2)
    vg = jax.value_and_grad(loss)

    def step(state, xb, yb):
        p, m, v, t = state
        val, g = vg(p, xb, yb)
        t = t + 1
        m = m + (1 - B1) * (g - m)
        v = v * B2 + (1 - B2) * g * g
        bc1 = 1 - B1 ** t
        bc2_sqrt = jnp.sqrt(1 - B2 ** t)
        denom = jnp.sqrt(v) / bc2_sqrt + EPS
        return (p - (LR / bc1) * m / denom, m, v, t), val

    def init():
        z = jnp.zeros(D + 1)
        return (z, z, z, jnp.asarray(0.0))

    def epoch(state, X, y, perms, e):
        # (epoch e's permutation picked inside the compiled function: an index into
        # an array outside it is an operation dispatched of its own)
        perm = perms[e]
        nb = N // BS
        Xb = X[perm].reshape(nb, BS, D)
        yb = y[perm].reshape(nb, BS)
        state, _ = lax.scan(lambda s, xy: step(s, *xy), state, (Xb, yb))
        return state
    return init, step, epoch


def jax_loop_run(jax, step_jit, init, X, y, epochs: int):
    state = init()
    nb = N // BS
    for perm in shuffles(epochs):
        Xb = X[perm].reshape(nb, BS, D)
        yb = y[perm].reshape(nb, BS)
        for k in range(nb):
            state, _ = step_jit(state, Xb[k], yb[k])
    return np.asarray(jax.block_until_ready(state[0]))


def jax_scan_run(jax, epoch_jit, init, Xj, yj, epochs: int):
    # (the run's permutations drawn first and moved to JAX at once: one transfer, not
    # one an epoch. NumPy draws them in 0.15 ms each; jax.random.permutation, sorting,
    # took 6.8 ms here, and would not give lossc's shuffles)
    perms = jax.numpy.asarray(np.stack(list(shuffles(epochs))))
    state = init()
    for e in range(epochs):
        state = epoch_jit(state, Xj, yj, perms, e)
    return np.asarray(jax.block_until_ready(state[0]))


# ---------------------------------------------------------------- PyTorch

def torch_run(torch, Xt, yt, epochs: int) -> np.ndarray:
    F = torch.nn.functional
    w = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=LR, betas=(B1, B2), eps=EPS)
    for perm in shuffles(epochs):
        perm = torch.from_numpy(perm)
        Xp, yp = Xt[perm], yt[perm]
        for s in range(0, N, BS):
            xb, yb = Xp[s:s + BS], yp[s:s + BS]
            opt.zero_grad(set_to_none=True)
            z = xb @ w + b
            val = (F.softplus(z) - yb * z).mean() + LAM * (w * w).sum()
            val.backward()
            opt.step()
    return np.concatenate([w.detach().numpy(), b.detach().numpy()[None]])


# ---------------------------------------------------------------- the workload

COLD_SAMPLES = 3
WARM_UP_SRC = "input x\nparam a\nloss = (a * x - 1) ^ 2\n"


def _clear_scratch() -> None:
    """Let go of the memory lossc keeps between training runs (a new model's first run
    in a process that trained before may find it)."""
    try:
        from lossc.runtime import scratch
    except ImportError:        # (trees before runtime/scratch.py)
        return
    scratch.clear()


def cold_start_begins() -> bool:
    """Collect, then pause the garbage collector for a cold-start timing; returns
    whether it was enabled."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    return was


def cold_start_ends(was: bool) -> None:
    if was:
        gc.enable()


def run(ctx) -> None:
    jax, torch = ctx.jax, ctx.torch
    epochs = 3 if ctx.quick else 20
    X, y = make_data()
    case = f"N={N:,}, {epochs} epochs"
    ctx.log(f"W5 {case}")
    data = {"x": X, "y": y}
    runs = {}        # name -> (callable returning final flat params, note)

    train = getattr(lossc, "train", None)
    adam = getattr(lossc, "Adam", None)
    m = None
    cold = None
    if train is not None and adam is not None:
        # Adam's native steps and the shuffle are the same for every model, compiled
        # once per machine (lossc/runtime/library.py): made ready here, as any earlier
        # run on this machine would have, so that "cold" is this model's compile and
        # first run
        from lossc.runtime import library
        folder = lossc.Options.from_env().cache_dir
        library.unit_object("train.adam", "float64", folder)
        library.unit_object("rng.permutation", "any", folder)

        def lossc_run(monitor="batches"):
            res = train(m, data=data, optimizer=adam(lr=LR, betas=(B1, B2), eps=EPS),
                        batch_size=BS, epochs=epochs, seed=SEED, monitor=monitor)
            last = getattr(res, "last_params", None) or res.params
            return m.pack_params(last)
        # The process has compiled before, as in the full suite after W1-W4 (run alone,
        # W5 does it here, for JAX too): what LLVM sets up on a process's first compile
        # (some 20 ms) is not this model's cold start, and the samples below are alike.
        compile_model(WARM_UP_SRC, cache=False)
        gc_was = gc.isenabled()
        try:
            # COLD_SAMPLES cold starts, each a compile of the model with no cache and its
            # first training run, the training data's scratch copy let go before each;
            # the median is the figure (one sample is at the mercy of the host)
            colds = []
            for _ in range(COLD_SAMPLES):
                _clear_scratch()
                # (the garbage collector paused, as measure() does for every timing: by
                # now JAX and PyTorch have left some 250,000 objects, and a full
                # collection, 0.1 s, could fall into the cold start, of either side)
                gc_was = cold_start_begins()
                t0 = time.perf_counter_ns()
                m = compile_model(SRC, dims={"D": D}, cache=False)
                compiled = (time.perf_counter_ns() - t0) * 1e-9
                first = lossc_run()
                colds.append(((time.perf_counter_ns() - t0) * 1e-9, compiled))
                cold_start_ends(gc_was)
            cold, compiled = sorted(colds)[len(colds) // 2]
            # like the peers, no pass over the data between epochs (monitor="batches")
            runs["lossc.train"] = (lossc_run, "monitor=\"batches\": the epoch loss from "
                                   "its batches, as the peers")
            runs["lossc.train, full-data loss each epoch"] = (
                lambda: lossc_run("full"), "the default monitor=\"full\": one more pass "
                "over the data per epoch")
        except Exception as e:
            cold_start_ends(gc_was)
            ctx.fail(f"W5 lossc.train raised {type(e).__name__}: {e}")
            ctx.na("W5", case, "lossc.train", f"{type(e).__name__}: {e}"[:100])
    else:
        ctx.na("W5", case, "lossc.train", "lossc.train not available")

    runs["numpy Adam (by hand)"] = (lambda: numpy_run(X, y, epochs), "")
    jax_cold = None
    if jax is not None:
        jnp = jax.numpy
        init, step, epoch = jax_fns(jax)
        step_jit = jax.jit(step)
        Xj, yj = jnp.asarray(X), jnp.asarray(y)
        epoch_jit = jax.jit(epoch)
        # (JAX has compiled before in this process too, as lossc has above)
        jax.block_until_ready(jax.jit(lambda v: v * 2.0 + 1.0)(Xj[0]))
        gc_was = cold_start_begins()
        t0 = time.perf_counter_ns()
        jax_scan_run(jax, epoch_jit, init, Xj, yj, epochs)      # compiles
        jax_cold = (time.perf_counter_ns() - t0) * 1e-9
        cold_start_ends(gc_was)
        runs["jax jit step, Python loop"] = (
            lambda: jax_loop_run(jax, step_jit, init, X, y, epochs), "")
        runs["jax lax.scan epoch"] = (
            lambda: jax_scan_run(jax, epoch_jit, init, Xj, yj, epochs),
            "one call per epoch; the shuffles from NumPy, in one transfer")
    if torch is not None:
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        runs["torch.optim.Adam eager"] = (lambda: torch_run(torch, Xt, yt, epochs), "")

    # ---- check: every run's final parameters and loss against lossc's (or numpy's)
    finals = {}
    for name, (f, _) in runs.items():
        try:
            finals[name] = first if name == "lossc.train" else f()
        except Exception as e:
            ctx.fail(f"W5 {name} raised {type(e).__name__}: {e}")
    ref_name = "lossc.train" if "lossc.train" in finals else "numpy Adam (by hand)"
    ref_p = finals[ref_name]
    ref_loss = full_loss(ref_p, X, y)
    checks = {}
    for name, p in finals.items():
        if name == ref_name:
            checks[name] = "ref"
            continue
        err = max(rel_err(p, ref_p), abs(full_loss(p, X, y) - ref_loss) / abs(ref_loss))
        checks[name] = ("ok " if err <= 1e-8 else "FAIL ") + fmt_err(err)
        if err > 1e-8:
            ctx.fail(f"W5 {name}: final parameters/loss differ from {ref_name}'s by {err:.2e}")
    if m is not None and "lossc.train" in finals:
        # lossc's own objective at its final parameters, against numpy's hand-written one
        lv = m.loss(m.unpack_params(finals["lossc.train"]), x=X, y=y)
        if abs(lv - ref_loss) > 1e-10 * abs(ref_loss):
            ctx.fail(f"W5 lossc's final loss {lv!r} differs from numpy's {ref_loss!r}")

    # ---- time the warm runs (round-robin; PyTorch's slow loop gets fewer samples)
    fast = {k: f for k, (f, _) in runs.items() if k in finals and not k.startswith("torch")}
    slow = {k: f for k, (f, _) in runs.items() if k in finals and k.startswith("torch")}
    stats = measure(fast, samples=ctx.samples(7, 2), sample_s=0.0, warmup=1)
    if slow:
        stats.update(measure(slow, samples=ctx.samples(3, 1), sample_s=0.0, warmup=0))
    rows = {}
    for name in runs:
        if name not in finals:
            continue
        row = Row("W5", case, name, stat=stats.get(name), check=checks[name],
                  note=runs[name][1], ref=(name == "lossc.train"))
        rows[name] = row
        ctx.rows.append(row)
        ctx.log(f"  {name:<28} {fmt_time(row.time):>10} {row.stat.spread:>5}  {row.check}")
    if jax is None:
        ctx.na("W5", case, "jax (step loop, lax.scan epoch)", ctx.jax_why)
    if torch is None:
        ctx.na("W5", case, "torch.optim.Adam eager", ctx.torch_why)
    if cold is not None:
        split = (f"median of {len(colds)} ({', '.join(fmt_time(c) for c, _ in colds)}): "
                 f"compile {fmt_time(compiled)}, first run {fmt_time(cold - compiled)}")
        ctx.rows.append(Row("W5", case + ", cold", "lossc compile + train", seconds=cold,
                            check="", note=f"{split}; model compiled without cache; Adam's "
                            "steps and the shuffle precompiled per machine", ref=True))
        ctx.log(f"  {'lossc cold (compile + train)':<28} {fmt_time(cold):>10}  ({split})")
    if jax_cold is not None:
        ctx.rows.append(Row("W5", case + ", cold", "jax lax.scan compile + run",
                            seconds=jax_cold, note="first call compiles"))
        ctx.log(f"  {'jax lax.scan cold':<28} {fmt_time(jax_cold):>10}")

    # ---- targets
    t = rows["lossc.train"].time if "lossc.train" in rows else None
    for peer, need, label in (("jax lax.scan epoch", 3, "JAX lax.scan-fused epochs"),
                              ("torch.optim.Adam eager", 100, "PyTorch eager loop")):
        r = rows.get(peer)
        if t and r is not None and r.time:
            ctx.target(f"W5 whole run vs {label}", f"{fmt_ratio(r.time / t)}x faster",
                       f">= {need}x", r.time / t >= need,
                       f"lossc {fmt_time(t)}, peer {fmt_time(r.time)}", anchor=("W5", case, peer))
        else:
            ctx.target(f"W5 whole run vs {label}", "n/a", f">= {need}x", None)
    if cold is not None:
        ctx.target("W5 cold start (compile + train)", fmt_time(cold), "< 0.1 s", cold < 0.1,
                   anchor=("W5", case + ", cold", "lossc compile + train"))
    if "lossc.train" in finals:
        np_p = finals.get("numpy Adam (by hand)")
        if np_p is not None:
            d = abs(full_loss(np_p, X, y) - ref_loss)
            ctx.target("W5 final loss equals numpy Adam (same shuffles)",
                       f"{ref_loss:.12f} vs {full_loss(np_p, X, y):.12f}",
                       "|diff| <= 1e-8 rel", d <= 1e-8 * abs(ref_loss),
                       f"abs diff {d:.1e}", anchor=("W5", case, "numpy Adam (by hand)"))
    if not math.isfinite(ref_loss):
        ctx.fail("W5 final loss is not finite")
