"""What the native shuffle gains on W5: lossc.train's run timed with each epoch's
permutation drawn natively (lossc/optim/shuffle.py, codegen/rng.py) and drawn by NumPy,
np.random.default_rng(seed).permutation(N) each epoch: the same permutations, so the
same results bit for bit (checked first).

    python -m benchmarks.shuffle_gain [--rounds 40]     (pinned to CPU 0, one BLAS thread)

The two ways alternate within one process, round after round (which goes first
alternates too), so that the machine's load falls on both alike; the figures are the
median and the fastest of the rounds, for monitor="batches" (W5's lossc.train row) and
"full". Also the permutation of N alone, each way. The machine is shared: compare figures from one
run only, and say the CPU (the first line) with them.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import lossc  # noqa: E402
from benchmarks import machine, w5_train as w5  # noqa: E402
from benchmarks.common import compile_model  # noqa: E402
from lossc.optim import shuffle  # noqa: E402


def numpy_draws(on: bool) -> None:
    """Every permutation from NumPy (on), or native where it applies: the switch is
    the one shuffle.py itself throws when the native code disagrees with NumPy."""
    shuffle._agrees = False if on else None


def cpu_family() -> str:
    """'family F model M' from /proc/cpuinfo: the model name of a virtual machine's CPU
    ("AMD EPYC") may not say its generation."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return "family unknown"
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=40)
    rounds = p.parse_args().rounds
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    print(f"CPU: {machine.cpu_model()} ({cpu_family()}), {machine.simd()}")
    X, y = w5.make_data()
    m = compile_model(w5.SRC, dims={"D": w5.D}, cache=False)

    def run(monitor, numpy_shuffle):
        numpy_draws(numpy_shuffle)
        try:
            t = time.perf_counter_ns()
            r = lossc.train(m, data={"x": X, "y": y},
                            optimizer=lossc.Adam(lr=w5.LR, betas=(w5.B1, w5.B2), eps=w5.EPS),
                            batch_size=w5.BS, epochs=20, seed=w5.SEED, monitor=monitor)
            return (time.perf_counter_ns() - t) * 1e-9, r
        finally:
            numpy_draws(False)

    print(f"W5 lossc.train (N={w5.N:,}, 20 epochs), {rounds} rounds; load average "
          f"{machine.loadavg()} at the start")
    for monitor in ("batches", "full"):
        (_, a), (_, b) = run(monitor, False), run(monitor, True)
        if a.step_losses != b.step_losses or not np.array_equal(
                m.pack_params(a.last_params), m.pack_params(b.last_params)):
            raise SystemExit("the two shuffles gave different runs")
        for _ in range(3):
            run(monitor, False), run(monitor, True)
        times = {False: [], True: []}
        gc.collect()
        gc.disable()
        try:
            for k in range(rounds):
                for numpy_shuffle in ((False, True) if k % 2 == 0 else (True, False)):
                    times[numpy_shuffle].append(run(monitor, numpy_shuffle)[0])
        finally:
            gc.enable()
        for label, stat in (("median", statistics.median), ("fastest", min)):
            native, numpy = (stat(times[w]) for w in (False, True))
            print(f"  monitor={monitor!r:10} {label:8} native shuffle {native * 1e3:6.2f} ms, "
                  f"NumPy's {numpy * 1e3:6.2f} ms: saves {(numpy - native) * 1e3:.2f} ms, "
                  f"{(numpy - native) / numpy:.0%} of the run with NumPy's")
    rng = np.random.default_rng(0)
    native = shuffle.Shuffler(np.random.default_rng(0), reuse=True)
    times = {"NumPy": [], "native": []}
    for k in range(400 + 50):
        for name, draw in (("NumPy", rng.permutation), ("native", native.permutation)):
            t = time.perf_counter_ns()
            draw(w5.N)
            if k >= 50:
                times[name].append((time.perf_counter_ns() - t) * 1e-3)
    print(f"  one permutation of {w5.N:,}: " + ", ".join(
        f"{name} {statistics.median(ts):.1f} us" for name, ts in times.items()))


if __name__ == "__main__":
    main()
