"""Where the time of two workloads goes, for deciding what to work on next.

    python -m benchmarks.breakdown            (pinned to CPU 0, one BLAS thread)

W2 at B=256 through the public API: the repeated call (the same arrays again), the
checked call (every argument checked, as on a first call), the flat and prepared
calls, the native call alone, and the pieces of the checked call (timed one by one;
runtime/callpaths.py). W5 (lossc.train, the benchmark's run): the native training steps, the shuffle, the full-data passes and the Python
left over, from wrappers around the driver's calls. Best of several runs each; the
machine is shared, so compare figures from one run of this script only.
"""
from __future__ import annotations

import os
import time
import timeit

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import lossc  # noqa: E402
from benchmarks import w2_logistic, w5_train  # noqa: E402
from benchmarks.common import compile_model  # noqa: E402


def best_us(f, number: int = 2000, repeat: int = 9) -> float:
    return min(timeit.repeat(f, number=number, repeat=repeat)) / number * 1e6


def w2_api() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((256, 32)), (rng.random(256) < 0.5).astype(float)
    m = compile_model(w2_logistic.SRC, dims={"D": 32}, cache=False)
    theta = m.init_params(1)
    flat = m.pack_params(theta)
    grad = np.empty_like(flat)
    bound = m.bind({"x": X, "y": y})
    kwargs = {"x": X, "y": y}
    m.value_and_grad(theta, **kwargs)
    calls = m._paths.take()            # (a frame of its own, for the pieces below)
    f, checked = calls.frame, calls.checked
    checked.value_and_grad(theta, kwargs)
    parts = [
        ("value_and_grad (public API, repeated)", lambda: m.value_and_grad(theta, **kwargs)),
        ("value_and_grad, checked call", lambda: checked.value_and_grad(theta, kwargs)),
        ("value_and_grad_flat on a bound batch", lambda: m.value_and_grad_flat(
            flat, bound, grad_out=grad)),
        ("prepared call", m.prepare(flat, bound, grad_out=grad)),
        ("  native call alone", lambda: m._vg(f.address)),
        ("the checked call's pieces:", None),
        ("  _pack (parameters into the frame)", lambda: m._pack(theta, f.theta_views)),
        ("  bind (inputs checked and bound)", lambda: checked.bind(kwargs)),
        ("  gradient dict copies", lambda: {k: g.copy() for k, g in f.grad_views}),
    ]
    print("W2 logistic, B=256, D=32 (us per call)")
    for name, fn in parts:
        print(f"  {name:40s} {best_us(fn):7.2f}" if fn else f"  {name}")


def w5_split(runs: int = 15) -> None:
    from lossc.optim import driver
    from lossc.runtime import fused
    X, y = w5_train.make_data()
    m = compile_model(w5_train.SRC, dims={"D": w5_train.D}, cache=False)
    spent: dict[str, float] = {}

    def timed(owner, name: str, label: str):
        inner = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
        setattr(owner, name, wrapper)
        return inner

    # (the shuffle: driver.Shuffler's draws; before it existed, driver.permutation)
    shuffle_owner = getattr(driver, "Shuffler", driver)
    saved = [(fused.FusedSteps, "run", timed(fused.FusedSteps, "run", "native steps")),
             (shuffle_owner, "permutation", timed(shuffle_owner, "permutation", "shuffle"))]
    # (the driver's full-data passes: the checked flat call, where there is one)
    full_pass = ("checked_value_and_grad_flat" if hasattr(m, "checked_value_and_grad_flat")
                 else "value_and_grad_flat")
    saved.append((type(m), full_pass, timed(type(m), full_pass, "full-data passes")))

    def run():
        return lossc.train(m, data={"x": X, "y": y},
                           optimizer=lossc.Adam(lr=w5_train.LR, betas=(w5_train.B1, w5_train.B2),
                                                eps=w5_train.EPS),
                           batch_size=w5_train.BS, epochs=20, seed=w5_train.SEED,
                           monitor="batches")
    try:
        run()
        best = None
        for _ in range(runs):
            spent.clear()
            t = time.perf_counter()
            run()
            total = time.perf_counter() - t
            if best is None or total < best[0]:
                best = (total, dict(spent))
    finally:
        for owner, name, inner in saved:
            setattr(owner, name, inner)
    total, parts = best
    print(f"W5 lossc.train, 20 epochs of 256 Adam steps (best of {runs} runs, ms)")
    print(f"  {'whole run':40s} {total * 1e3:7.2f}")
    for name, t in parts.items():
        print(f"  {name:40s} {t * 1e3:7.2f}")
    print(f"  {'the rest (Python)':40s} {(total - sum(parts.values())) * 1e3:7.2f}")


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    w2_api()
    w5_split()


if __name__ == "__main__":
    main()
