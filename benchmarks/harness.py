"""Timing, gradient checks, result rows, targets and the report.

Every figure is a median of repeated samples taken round-robin across the
implementations of one case (so a burst of noise on this shared machine hits them all
alike); each sample times a loop of calls long enough to dwarf the timer's resolution.
Every implementation is called and its value and gradient compared with lossc's before
anything is timed.
"""
from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


# ---------------------------------------------------------------- formatting


def fmt_time(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.{2 if s < 1e-5 else 1}f} us"
    if s < 1:
        return f"{s * 1e3:.{2 if s < 1e-2 else 1}f} ms"
    if s >= 600:
        return f"{s / 60:.0f} min"
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def fmt_ratio(x: Optional[float]) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def fmt_speedup(x: Optional[float]) -> str:
    """A peer's time over lossc's, as "3.2x faster" or, below 1, "4.1x slower"."""
    if x is None or not math.isfinite(x) or x <= 0:
        return "n/a"
    return f"{fmt_ratio(x)}x faster" if x >= 1 else f"{fmt_ratio(1 / x)}x slower"


def fmt_err(e: float) -> str:
    return "0" if e == 0 else f"{e:.0e}"


# ---------------------------------------------------------------- timing


@dataclass
class Stat:
    median: float            # seconds per call
    q1: float
    q3: float
    inner: int               # calls per sample
    samples: int

    @property
    def spread(self) -> str:
        """The interquartile range as a percentage of the median."""
        if self.samples < 3 or self.median <= 0:
            return ""
        return f"±{50 * (self.q3 - self.q1) / self.median:.0f}%"


def _percentile(xs, q):
    return float(np.percentile(np.asarray(xs), q))


def measure(fns: dict, *, samples: int, sample_s: float = 0.005, warmup: int = 3,
            budget_s: Optional[float] = None) -> dict:
    """Median seconds per call of each zero-argument callable, sampled round-robin.

    Each sample runs a callable `inner` times in a loop (inner chosen so a sample takes
    about `sample_s`); `samples` samples are taken per callable unless `budget_s`
    (seconds for the whole measurement) runs out first, after at least 3.
    """
    inner = {}
    for name, f in fns.items():
        for _ in range(warmup):
            f()
        t0 = time.perf_counter_ns()
        f()
        one = max((time.perf_counter_ns() - t0) * 1e-9, 1e-8)
        # a second, steadier estimate for fast calls
        if one < sample_s / 10:
            k = max(1, int(sample_s / 10 / one))
            t0 = time.perf_counter_ns()
            for _ in range(k):
                f()
            one = max((time.perf_counter_ns() - t0) * 1e-9 / k, 1e-8)
        inner[name] = max(1, int(round(sample_s / one)))
    times = {name: [] for name in fns}
    start = time.perf_counter()
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(samples):
            for name, f in fns.items():
                n = inner[name]
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    f()
                t1 = time.perf_counter_ns()
                times[name].append((t1 - t0) * 1e-9 / n)
            if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
                break
    finally:
        if gc_was:
            gc.enable()
    return {name: Stat(float(np.median(ts)), _percentile(ts, 25), _percentile(ts, 75),
                       inner[name], len(ts)) for name, ts in times.items()}


def time_once(f: Callable) -> tuple[float, object]:
    t0 = time.perf_counter_ns()
    out = f()
    return (time.perf_counter_ns() - t0) * 1e-9, out


# ---------------------------------------------------------------- checks


def rel_err(a, ref) -> float:
    """Largest difference relative to the largest magnitude of the reference (norm-wise:
    a gradient element near zero is judged on the scale of the whole gradient)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if a.shape != ref.shape:
        return math.inf
    if a.size == 0:
        return 0.0
    d = float(np.max(np.abs(a - ref)))
    if not math.isfinite(d):
        return math.inf
    scale = float(np.max(np.abs(ref)))
    return d / scale if scale > 0 else d


def compare(value, grads: dict, ref_value, ref_grads: dict) -> tuple[float, str]:
    """(worst relative error, where) of a value and gradient dict against a reference."""
    worst, where = rel_err(value, ref_value), "value"
    for k, r in ref_grads.items():
        if k not in grads:
            return math.inf, f"gradient {k!r} missing"
        e = rel_err(grads[k], r)
        if e > worst or not math.isfinite(e):
            worst, where = e, f"d/d{k}"
    return worst, where


# ---------------------------------------------------------------- results


@dataclass
class Row:
    workload: str
    case: str                      # rows of one case share the lossc reference
    impl: str
    stat: Optional[Stat] = None
    seconds: Optional[float] = None     # when there is no Stat (a single timing)
    gbytes: Optional[float] = None      # bytes streamed per call / 1e9, for GB/s
    gflop: Optional[float] = None       # floating-point operations per call / 1e9
    check: str = ""
    note: str = ""
    ref: bool = False                   # the lossc row the others are compared with
    target: str = ""                    # filled in from the targets

    @property
    def time(self) -> Optional[float]:
        return self.stat.median if self.stat is not None else self.seconds

    @property
    def gbps(self) -> Optional[float]:
        t = self.time
        return self.gbytes / t if self.gbytes and t else None

    @property
    def gflops(self) -> Optional[float]:
        t = self.time
        return self.gflop / t if self.gflop and t else None

    @property
    def rate(self) -> str:
        """GB/s streamed or GFLOP/s computed, for the table ("" for neither)."""
        if self.gbps:
            return f"{self.gbps:.1f} GB/s"
        if self.gflops:
            return f"{self.gflops:.1f} GFLOP/s"
        return ""


@dataclass
class Target:
    name: str
    measured: str
    required: str
    met: Optional[bool]            # None: could not be measured
    detail: str = ""
    anchor: Optional[tuple] = None  # (workload, case, impl) of the row it is about


@dataclass
class Impl:
    """One implementation of a case: `call()` is what is timed; `result(out)` turns its
    output into (float value, dict of numpy gradients) for the check."""
    name: str
    call: Callable
    result: Callable
    note: str = ""
    gbytes: Optional[float] = None
    gflop: Optional[float] = None      # operations per call / 1e9, for GFLOP/s
    rtol: Optional[float] = None       # overrides the case's tolerance
    checked: bool = True               # False: a machine limit, timed but not compared
    context: Optional[Callable] = None  # a context manager factory around its calls


@dataclass
class Context:
    quick: bool
    threads: int
    jax: object = None
    torch: object = None
    jax_why: str = ""
    torch_why: str = ""
    rows: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    bandwidth: dict = field(default_factory=dict)   # threads -> GB/s
    fma_peak: dict = field(default_factory=dict)    # dtype -> machine.FmaPeak
    lossc_threads: str = ""                          # how lossc is given threads
    child_runner: object = None        # workload -> dict, for peers run in a child process
    cpus_all: Optional[set] = None     # the CPUs the run may use; None: no pinning
    cpu_one: Optional[set] = None      # the one CPU the single-thread figures run on

    def all_cores(self):
        """Inside: this thread (and threads and processes it starts) may use every CPU;
        outside, the single-thread figures run pinned to one."""
        ctx = self

        class _All:
            def __enter__(self):
                if ctx.cpus_all is not None:
                    os.sched_setaffinity(0, ctx.cpus_all)

            def __exit__(self, *a):
                if ctx.cpu_one is not None:
                    os.sched_setaffinity(0, ctx.cpu_one)
                return False
        return _All()

    def run_child(self, workload: str):
        return self.child_runner(workload) if self.child_runner is not None else None

    def log(self, msg: str = "") -> None:
        print(msg, flush=True)

    def samples(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def na(self, workload: str, case: str, impl: str, why: str) -> None:
        self.rows.append(Row(workload, case, impl, check="n/a", note=why))

    def target(self, name, measured, required, met, detail="", anchor=None) -> None:
        self.targets.append(Target(name, measured, required, met, detail, anchor))

    def fail(self, msg: str) -> None:
        self.failures.append(msg)
        print(f"  FAIL: {msg}", flush=True)

    def run_case(self, workload: str, case: str, impls: list, *, samples: int,
                 sample_s: float = 0.005, rtol: float = 1e-8, budget_s=None,
                 interleave: bool = True, warmup: int = 3) -> dict:
        """Check every implementation against the first (lossc) and time them all:
        round-robin (interleave), or one after the other, each inside its own context
        (multi-thread figures, where one library's idle spinning threads would slow
        the next). Returns {impl name: Row}."""
        self.log(f"{workload} {case}")
        ref_v = ref_g = None
        ok = {}
        rows = {}
        for k, im in enumerate(impls):
            row = Row(workload, case, im.name, gbytes=im.gbytes, gflop=im.gflop, note=im.note,
                      ref=(k == 0))
            rows[im.name] = row
            self.rows.append(row)
            try:
                if im.context is not None:
                    with im.context():
                        out = im.call()
                else:
                    out = im.call()
                v, g = im.result(out)
                if not interleave:
                    with (im.context() if im.context is not None else _Null()):
                        row.stat = measure({im.name: im.call}, samples=samples,
                                           sample_s=sample_s, budget_s=budget_s,
                                           warmup=warmup)[im.name]
                    time.sleep(0.2)    # let idle worker threads go to sleep
            except Exception as e:   # a crash is a finding, not the end of the suite
                row.check = "ERROR"
                row.note = f"{type(e).__name__}: {e}"[:120]
                self.fail(f"{workload} {case} {im.name} raised {type(e).__name__}: {e}")
                continue
            if not im.checked:
                row.check = "-"
            elif k == 0:
                ref_v, ref_g = v, g
                row.check = "ref"
                if not (math.isfinite(v) and all(np.all(np.isfinite(x)) for x in g.values())):
                    row.check = "NONFINITE"
                    self.fail(f"{workload} {case} {im.name}: non-finite value or gradient")
            else:
                err, where = compare(v, g, ref_v, ref_g)
                tol = im.rtol if im.rtol is not None else rtol
                if err <= tol:
                    row.check = f"ok {fmt_err(err)}"
                else:
                    row.check = f"FAIL {fmt_err(err)}"
                    self.fail(f"{workload} {case}: {im.name} disagrees with lossc at {where}: "
                              f"relative error {err:.2e} > {tol:g} (value {v!r} vs {ref_v!r})")
            ok[im.name] = im.call
        if ok and interleave:
            stats = measure(ok, samples=samples, sample_s=sample_s, budget_s=budget_s,
                            warmup=warmup)
            for name, st in stats.items():
                rows[name].stat = st
        for name, row in rows.items():
            t = row.time
            self.log(f"  {name:<28} {fmt_time(t):>10} {row.stat.spread if row.stat else '':>5}"
                     f"  {row.check}" + (f"  {row.rate}" if row.rate else ""))
        return rows


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------- report


def ratio_rows(rows: list) -> list:
    """Each row with (lossc/peer time ratio, speedup) against its case's lossc row."""
    refs = {}
    for r in rows:
        if r.ref and r.time:
            refs[(r.workload, r.case)] = r.time
    out = []
    for r in rows:
        ref = refs.get((r.workload, r.case))
        if r.ref or not ref or not r.time:
            out.append((r, None, None))
        else:
            out.append((r, ref / r.time, r.time / ref))
    return out


HEAD = ["workload", "case", "implementation", "median", "IQR", "rate", "lossc/peer",
        "lossc speedup", "check", "target", "note"]


def table_cells(rows: list) -> list:
    cells = []
    for r, ratio, speed in ratio_rows(rows):
        cells.append([r.workload, r.case, r.impl, fmt_time(r.time),
                      r.stat.spread if r.stat else "",
                      r.rate,
                      fmt_ratio(ratio) if ratio is not None else ("1" if r.ref and r.time else ""),
                      (fmt_ratio(speed) + "x") if speed is not None else "",
                      r.check, r.target, r.note])
    return cells


def target_cells(targets: list) -> list:
    out = []
    for t in targets:
        met = ("-" if t.required.startswith("(") else "n/a") if t.met is None else (
            "met" if t.met else "MISSED")
        out.append([t.name, t.measured, t.required, met, t.detail])
    return out


def annotate(rows: list, targets: list) -> None:
    for t in targets:
        if not t.anchor or t.required.startswith("("):     # a figure, not a target
            continue
        for r in rows:
            if (r.workload, r.case, r.impl) == t.anchor:
                met = "n/a" if t.met is None else ("met" if t.met else "MISSED")
                r.target = (r.target + "; " if r.target else "") + f"{t.required}: {met}"


def text_table(head: list, cells: list, groups: bool = True) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *cells)] if cells else \
        [len(h) for h in head]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths)), line]
    prev = None
    for c in cells:
        if groups and prev is not None and c[0] != prev:
            out.append("")
        prev = c[0]
        out.append("  ".join(str(x).ljust(w) for x, w in zip(c, widths)).rstrip())
    return "\n".join(out)


def md_table(head: list, cells: list) -> str:
    def esc(x):
        return str(x).replace("|", "\\|")
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(esc(x) for x in c) + " |" for c in cells]
    return "\n".join(out)
