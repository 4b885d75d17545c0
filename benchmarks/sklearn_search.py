"""sklearn: a GridSearchCV over 5 values of C with 5 folds on scikit-learn's
breast-cancer data (569 samples, 30 features), Pipeline(StandardScaler(), model):
lossc.sklearn.LossClassifier with logistic regression written so that C means what it
means to scikit-learn (C times the summed log-loss plus half the squared norm of w,
the intercept unpenalized), trained by lossc's L-BFGS, against
LogisticRegression(solver="lbfgs"), each with its default tolerances. Both searches
are the same (folds, grid, scoring) and must pick the same C.

The same search over a DummyClassifier (which fits nothing) is timed too: the search's
own work (cloning, the scaler, splitting, scoring), which neither estimator can
shorten, and which bounds the ratio any estimator can reach.

    python -m benchmarks.sklearn_search        # on its own
    python -m benchmarks.run --only sklearn    # in the suite (make bench runs it)
"""
from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.harness import Row, Stat, fmt_time

GRID = [0.01, 0.1, 1.0, 10.0, 100.0]
FOLDS = 5
RUNS = 7                  # timed searches of each kind, in turns
REQUIRED_SPEEDUP = 3.0    # LogisticRegression's search time over lossc's
LOGREG = """
dim D
input x[D]
input y
param w[D]
param b
hyper C = 1
reduce sum
z = dot(w, x) + b
loss = C * (softplus(z) - y * z)
penalty = 0.5 * sum(w ^ 2)
output p1 = sigmoid(z)
output label = z > 0
"""
NOTE = ("sklearn: GridSearchCV(Pipeline(StandardScaler(), estimator), 5 values of C, "
        "cv=5) on the breast-cancer data, refit included; medians of searches run in "
        "turns; the DummyClassifier row is the search's own work, which no estimator "
        "can shorten.")


def searches():
    """{name: a function that runs one search and returns it}."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lossc.sklearn import LossClassifier
    X, y = load_breast_cancer(return_X_y=True)

    def search(estimator, key, grid):
        def run():
            return GridSearchCV(make_pipeline(StandardScaler(), estimator), {key: grid},
                                cv=FOLDS).fit(X, y)
        return run
    return {
        "lossc LossClassifier (LBFGS)": search(
            LossClassifier(LOGREG, predict="label", proba="p1"), "lossclassifier__C", GRID),
        "scikit-learn LogisticRegression(solver='lbfgs')": search(
            LogisticRegression(solver="lbfgs"), "logisticregression__C", GRID),
        "DummyClassifier (the search alone)": search(
            DummyClassifier(), "dummyclassifier__constant", [None] * len(GRID)),
    }


def timed(runs: dict, n: int) -> tuple[dict, dict]:
    """({name: seconds of each search}, {name: the last search}), in turns."""
    times = {name: [] for name in runs}
    last = {}
    for name, run in runs.items():          # (the first search compiles; untimed)
        last[name] = run()
    for _ in range(n):
        for name, run in runs.items():
            t0 = time.perf_counter()
            last[name] = run()
            times[name].append(time.perf_counter() - t0)
    return times, last


def run(ctx) -> None:
    ctx.notes.append(NOTE)
    case = f"breast cancer, {len(GRID)} C x {FOLDS} folds"
    ctx.log(f"sklearn {case}")
    try:
        runs = searches()
    except ImportError as e:
        ctx.na("sklearn", case, "lossc LossClassifier (LBFGS)", f"not installed: {e}")
        ctx.target("sklearn GridSearchCV vs LogisticRegression(lbfgs)", "n/a",
                   f">= {REQUIRED_SPEEDUP:g}x", None, "scikit-learn not installed")
        return
    times, last = timed(runs, ctx.samples(RUNS, 2))
    names = list(runs)
    ours, theirs, dummy = (float(np.median(times[n])) for n in names)
    same = last[names[0]].best_params_["lossclassifier__C"] == \
        last[names[1]].best_params_["logisticregression__C"]
    for k, name in enumerate(names):
        ts = times[name]
        st = Stat(float(np.median(ts)), float(np.percentile(ts, 25)),
                  float(np.percentile(ts, 75)), 1, len(ts))
        best = last[name].best_score_
        ctx.rows.append(Row("sklearn", case, name, stat=st, ref=(k == 0),
                            check="ref" if k == 0 else ("same C" if same or k == 2
                                                        else "OTHER C"),
                            note=f"best mean accuracy {best:.4f}"))
        ctx.log(f"  {name:<48} {fmt_time(st.median):>10} {st.spread:>5}")
    speedup = theirs / ours
    ctx.target("sklearn GridSearchCV vs LogisticRegression(lbfgs)", f"{speedup:.2f}x faster",
               f">= {REQUIRED_SPEEDUP:g}x", speedup >= REQUIRED_SPEEDUP,
               f"lossc {fmt_time(ours)}, scikit-learn {fmt_time(theirs)}; the search "
               f"alone (DummyClassifier) {fmt_time(dummy)}, so the fits and scoring: "
               f"lossc {fmt_time(ours - dummy)}, scikit-learn {fmt_time(theirs - dummy)} "
               f"({(theirs - dummy) / max(ours - dummy, 1e-9):.2f}x)",
               anchor=("sklearn", case, names[0]))
    if not same:
        ctx.fail("sklearn: the two searches chose different values of C")


def main() -> None:
    from benchmarks.harness import Context
    from benchmarks.machine import this_cpu
    ctx = Context(quick=False, threads=1)
    ctx.log(f"CPU: {this_cpu().describe()}; OPENBLAS_NUM_THREADS="
            f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")
    run(ctx)
    for t in ctx.targets:
        ctx.log(f"{t.name}: {t.measured} (required {t.required}); {t.detail}")


if __name__ == "__main__":
    main()
