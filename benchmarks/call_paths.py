"""Per-call latency of each way of calling a model's gradient, on W1 and W2 at B=256.

    python -m benchmarks.call_paths [--rounds 3]

The ways (runtime/callpaths.py): `value_and_grad` called again with the same arrays
(the repeated call), the checked call (every argument checked, as on a first call),
`value_and_grad_flat` on a bound batch with grad_out, the same through every check,
and a prepared call. Each figure is the best of many short timings (200 calls each),
so that a machine shared with other work still shows what a call costs; the ways are
timed in turns, in alternating order, round after round. Run it in two checkouts in
turn to compare them (it also runs in trees from before runtime/callpaths.py, where
the checked call is reached another way). docs/runtime.md has the figures.
"""
from __future__ import annotations

import argparse
import json
import timeit
import warnings

import numpy as np

import lossc
from benchmarks import w1_seed, w2_logistic

CALLS, REPEATS = 200, 40


def best_us(fn) -> float:
    return min(timeit.repeat(fn, number=CALLS, repeat=REPEATS)) / CALLS * 1e6


def _compile(src: str, dims: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lossc.compile(src, dims=dims)


def _checked(m, src, dims, theta, kwargs):
    """value_and_grad through every check."""
    if hasattr(m, "_paths"):
        calls = m._paths.take()          # (a frame of its own)
        return lambda: calls.checked.value_and_grad(theta, kwargs)
    other = _compile(src, dims)          # (older trees: no repeated call at all)
    other._fast_function = False
    return lambda: other.value_and_grad(theta, **kwargs)


def _checked_flat(m, flat, bound, grad):
    name = ("checked_value_and_grad_flat" if hasattr(m, "checked_value_and_grad_flat")
            else "_checked_value_and_grad_flat")
    fn = getattr(m, name)
    return lambda: fn(flat, bound, None, grad)


def ways(src: str, dims: dict, theta: dict, kwargs: dict) -> dict:
    m = _compile(src, dims)
    flat = m.pack_params(theta)
    grad, grad2 = np.empty_like(flat), np.empty_like(flat)
    bound = m.bind(kwargs)
    prepared = m.prepare(flat.copy(), bound, grad_out=np.empty_like(flat))
    for _ in range(3):
        m.value_and_grad(theta, **kwargs)
        m.value_and_grad_flat(flat, bound, grad_out=grad)
    return {"value_and_grad, repeated": lambda: m.value_and_grad(theta, **kwargs),
            "value_and_grad, checked": _checked(m, src, dims, theta, kwargs),
            "flat, repeated": lambda: m.value_and_grad_flat(flat, bound, grad_out=grad),
            "flat, checked": _checked_flat(m, flat, bound, grad2),
            "prepared call": prepared}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.call_paths")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    X, y = w2_logistic.make_data(w2_logistic.B_SMALL)
    workloads = {
        "W1": ways(w1_seed.SRC, {}, {"x1": np.array(2.0), "x2": np.array(5.0)}, {}),
        "W2 B=256": ways(w2_logistic.SRC, {"D": w2_logistic.D}, w2_logistic.make_theta(),
                         {"x": X, "y": y}),
    }
    best: dict = {}
    for r in range(args.rounds):
        for name, fns in workloads.items():
            order = list(fns) if r % 2 == 0 else list(fns)[::-1]
            for way in order:
                t = best_us(fns[way])
                mine = best.setdefault(name, {})
                mine[way] = min(t, mine.get(way, t))
    for name, fns in best.items():
        print(name)
        for way, t in fns.items():
            print(f"  {way:28s} {t:6.2f} us")
    print(json.dumps(best))


if __name__ == "__main__":
    main()
