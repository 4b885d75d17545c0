"""W8: matrix factorization, (dot(P[u], Q[i]) - r) ^ 2 with int inputs u, i, F = 32.

One epoch of SGD (lr 0.05, batch 1,024) over 1,000,000 ratings at U = I = 100,000, against
PyTorch with nn.Embedding(sparse=True) and torch.optim.SGD; and the cost of one step at
U = I = 1,000 and 1,000,000. Both follow the batches lossc.train would take (the epoch's
permutation np.random.default_rng(0).permutation(N), batch k its k-th slice).

lossc's steps are those lossc.train takes for SGD: its fused native steps
(lossc.runtime.fused.FusedSteps), the batch's gradient and the update in one call, on
the rows the batch touches (P and Q are row-sparse: used only through gathers). The
driver itself is not run: before its first step and after its last it evaluates the
whole data set's objective, which with a gradient whose cost grows with the tables costs
as much as an epoch of steps. Such steps would also make a whole epoch take far longer
than the suite may, so the epoch is measured whole only when the first steps say it
fits in EPOCH_BUDGET_S; otherwise lossc's steps are capped by time (STEP_BUDGET_S, at
least one after an untimed first step, or the first itself when it alone takes longer
than the cap) and the epoch is extrapolated from their median, which the report says. lossc's steps alternate with PyTorch's epochs (or steps), so both
see the same load.
"""
from __future__ import annotations

import math
import time

import numpy as np

import lossc
from benchmarks.common import compile_model
from lossc.runtime.calls import aligned_copy
from lossc.runtime.fused import FusedSteps
from benchmarks.harness import (Row, Stat, compare, fmt_err, fmt_ratio, fmt_speedup, fmt_time,
                               rel_err)

SRC = """\
dim U = 1000
dim I = 1000
dim F = 32
input u: int
input i: int
input r
param P[U, F] = normal(0, 0.1)
param Q[I, F] = normal(0, 0.1)
loss = (dot(P[u], Q[i]) - r) ^ 2
"""
F = 32
N = 1_000_000
BS = 1024
LR = 0.05
SEED = 0
EPOCH_ROWS = 100_000
STEP_ROWS = (1_000, 1_000_000)
STEP_BUDGET_S = 8.0       # lossc's timed steps per size, after the first (at least one;
                          # the first itself when it alone takes longer)
EPOCH_BUDGET_S = 15.0     # the longest lossc epoch that is run whole, not extrapolated
MAX_STEPS = 25            # steps timed when they are fast
WARM_STEPS = 8            # untimed steps first: their first touches of the tables' and
                          # the state's pages (a huge page zeroed at a time) are set-up
TORCH_EPOCHS = 3
MIN_TORCH_STEPS = 10
VS_TORCH = 3.0            # one epoch, lossc's speed-up over PyTorch's sparse SGD
STEP_GROWTH = 1.3         # the most a step may cost more at 1,000,000 rows than at 1,000
NOTE = ("W8: lossc's steps are those lossc.train takes for SGD, its fused native steps "
        "(gradient and update in one call), without the driver's whole-data objective "
        "before the first step and after the last. Its epoch is run whole when the first "
        "steps say it takes at most 15 s; otherwise it is the median step times the "
        "epoch's steps, extrapolated from the steps the suite had time for (capped by "
        "time, the first step untimed), and the row says so. "
        "PyTorch: nn.Embedding(sparse=True) tables and torch.optim.SGD, whole epochs "
        "timed. Both follow lossc.train's batches (np.random.default_rng(0).permutation(N), "
        "batch k its k-th slice); lossc's parameters after its timed steps are checked "
        "against PyTorch's after the same steps.")


def steps_per_epoch() -> int:
    return math.ceil(N / BS)


def make_ratings(rows: int, seed: int = 21):
    """u, i uniform over the tables; r from a rank-4 truth plus noise, about 3 +- 1."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, rows, N)
    i = rng.integers(0, rows, N)
    a = rng.standard_normal((rows, 4), dtype=np.float32)
    b = rng.standard_normal((rows, 4), dtype=np.float32)
    r = 3.0 + 0.5 * np.einsum("nk,nk->n", a[u], b[i], dtype=np.float64) \
        + 0.1 * rng.standard_normal(N)
    return u, i, r


def make_tables(rows: int, seed: int = 22):
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((rows, F), dtype=np.float32).astype(np.float64) * 0.1
    Q = rng.standard_normal((rows, F), dtype=np.float32).astype(np.float64) * 0.1
    return P, Q


def epoch_order():
    return np.random.default_rng(SEED).permutation(N)


def numpy_vg(P, Q, u, i, r):
    """By hand: e = sum(P[u] * Q[i], axis=1) - r, objective mean(e^2); grad P[u] += 2 e
    Q[i] / B (and likewise Q), rows repeated in the batch adding up."""
    B = len(r)
    pu, qi = P[u], Q[i]
    e = np.einsum("bf,bf->b", pu, qi) - r
    d = (2.0 / B) * e[:, None]
    gP = np.zeros_like(P)
    gQ = np.zeros_like(Q)
    np.add.at(gP, u, d * qi)
    np.add.at(gQ, i, d * pu)
    return float(np.mean(e * e)), {"P": gP, "Q": gQ}


# ---------------------------------------------------------------- lossc

class LosscSteps:
    """lossc's SGD steps over the epoch's batches: the fused native steps lossc.train
    takes for SGD, one batch or a whole epoch a call."""

    def __init__(self, m, P, Q, u, i, r, order):
        self.m = m
        self.order = np.ascontiguousarray(order, dtype=np.int64)
        # on a cache line, as lossc.train's parameters are (optim/driver.py _initial)
        self.theta = aligned_copy(m.pack_params({"P": P, "Q": Q}))
        self.data = m.bind({"u": u, "i": i, "r": r})
        self.fused = FusedSteps(m, lossc.SGD(lr=LR), self.data, BS)
        self.k = 0                  # steps taken; batch k % steps_per_epoch() is next

    def step(self) -> None:
        self._run(self.k % steps_per_epoch(), 1)

    def epoch(self) -> None:
        """steps_per_epoch() steps, on from the next batch (wrapping round the order)."""
        spe, first = steps_per_epoch(), self.k % steps_per_epoch()
        self._run(first, spe - first)
        if first:
            self._run(0, first)

    def _run(self, first: int, count: int) -> None:
        self.fused.run(self.theta, self.order, first, count)
        self.k += count


# ---------------------------------------------------------------- PyTorch

class TorchSteps:
    """PyTorch's sparse-embedding SGD over the same batches."""

    def __init__(self, torch, P, Q, u, i, r, order):
        nn = torch.nn
        self.torch = torch
        self.P = nn.Embedding(P.shape[0], F, sparse=True, dtype=torch.float64)
        self.Q = nn.Embedding(Q.shape[0], F, sparse=True, dtype=torch.float64)
        with torch.no_grad():
            self.P.weight.copy_(torch.from_numpy(P))
            self.Q.weight.copy_(torch.from_numpy(Q))
        self.opt = torch.optim.SGD(list(self.P.parameters()) + list(self.Q.parameters()),
                                   lr=LR)
        self.u, self.i, self.r = (torch.from_numpy(a) for a in (u, i, r))
        self.order = torch.from_numpy(order)
        self.k = 0

    def step(self) -> None:
        k, order = self.k % steps_per_epoch(), self.order
        self._step(order[k * BS:(k + 1) * BS])
        self.k += 1

    def _step(self, idx) -> None:
        self.opt.zero_grad(set_to_none=True)
        pred = (self.P(self.u[idx]) * self.Q(self.i[idx])).sum(dim=1)
        loss = ((pred - self.r[idx]) ** 2).mean()
        loss.backward()
        self.opt.step()

    def epoch(self) -> None:
        """A whole epoch, its permutation drawn as lossc.train draws it."""
        order = self.torch.from_numpy(epoch_order())
        for k in range(steps_per_epoch()):
            self._step(order[k * BS:(k + 1) * BS])

    def value_and_grad(self, idx):
        """The objective and the dense gradient on one batch, at the current tables."""
        torch = self.torch
        idx = torch.from_numpy(idx)
        self.opt.zero_grad(set_to_none=True)
        pred = (self.P(self.u[idx]) * self.Q(self.i[idx])).sum(dim=1)
        loss = ((pred - self.r[idx]) ** 2).mean()
        loss.backward()
        grads = {"P": self.P.weight.grad.to_dense().numpy(),
                 "Q": self.Q.weight.grad.to_dense().numpy()}
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    def tables(self) -> np.ndarray:
        return np.concatenate([self.P.weight.detach().numpy().ravel(),
                               self.Q.weight.detach().numpy().ravel()])


# ---------------------------------------------------------------- timing

def steps(n: int) -> str:
    return f"{n} step{'s' * (n != 1)}"


def stat_of(times: list) -> Stat:
    return Stat(float(np.median(times)), float(np.percentile(times, 25)),
                float(np.percentile(times, 75)), 1, len(times))


def spread(st: Stat) -> str:
    """" ±x%", or nothing where too few times were taken to tell."""
    return f" {st.spread}" if st.spread else ""


def timed(f) -> float:
    t0 = time.perf_counter_ns()
    f()
    return (time.perf_counter_ns() - t0) * 1e-9


def alternate(lossc_step, peer, budget_s: float, max_steps: int, min_peer: int) -> tuple:
    """lossc's steps and the peer's runs in turns: lossc steps while the budget lasts (at
    least one, at most max_steps); the peer runs beside each, and at least min_peer
    times. Returns (lossc step times, peer times)."""
    ours, theirs = [], []
    start = time.perf_counter()
    while True:
        more = len(ours) < max_steps and (not ours or time.perf_counter() - start < budget_s)
        if more:
            ours.append(timed(lossc_step))
        peer_more = peer is not None and (len(theirs) < min_peer
                                          or (more and len(theirs) < max_steps))
        if peer_more:
            theirs.append(timed(peer))
        if not more and not peer_more:
            return ours, theirs


def memory_available() -> "int | None":
    """Bytes the kernel reckons can be had without swapping, or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def scratch_gib(m) -> float:
    """The scratch memory lossc's calls take at these sizes (Model.work_size)."""
    return m.work_size * np.dtype(m.dtype).itemsize / 2 ** 30


def bytes_needed(m) -> int:
    """What a step at these sizes holds: the flat parameters, the fused steps' gradient
    and optimizer state (three vectors) and scratch, the initial tables, and PyTorch's
    tables and gradients."""
    item = np.dtype(m.dtype).itemsize
    return item * (m.work_size + 9 * m.n_params)


# ---------------------------------------------------------------- the workload

def run(ctx) -> None:
    ctx.notes.append(NOTE)
    budget = STEP_BUDGET_S / (4 if ctx.quick else 1)
    epoch_case(ctx, budget)
    per_step = {rows: step_case(ctx, rows, budget) for rows in STEP_ROWS}
    small, large = (per_step[r] for r in STEP_ROWS)
    name = f"W8 step cost, {STEP_ROWS[1]:,} vs {STEP_ROWS[0]:,} rows"
    if small and large:
        growth = large / small
        ctx.target(name, f"{fmt_ratio(growth)}x", f"<= {STEP_GROWTH:g}x",
                   growth <= STEP_GROWTH,
                   f"lossc {fmt_time(small)} a step at {STEP_ROWS[0]:,} rows, "
                   f"{fmt_time(large)} at {STEP_ROWS[1]:,}",
                   anchor=("W8", step_case_name(STEP_ROWS[1]), "lossc SGD step"))
    else:
        ctx.target(name, "n/a", f"<= {STEP_GROWTH:g}x", None, "a size was not measured")


def step_case_name(rows: int) -> str:
    return f"U=I={rows:,}, one step of {BS:,}"


def epoch_case(ctx, budget: float) -> None:
    torch = ctx.torch
    rows = EPOCH_ROWS
    spe = steps_per_epoch()
    case = f"U=I={rows:,}, one epoch ({spe} steps of {BS:,})"
    ctx.log(f"W8 {case}")
    m = compile_model(SRC, dims={"U": rows, "I": rows})
    u, i, r = make_ratings(rows)
    P, Q = make_tables(rows)
    order = epoch_order()
    ours = LosscSteps(m, P, Q, u, i, r, order)
    if not check_batch(ctx, case, m, ours, torch, P, Q, u, i, r, order):
        return
    first = timed(ours.step)      # (untimed: the first call sets up its scratch memory)
    for _ in range(WARM_STEPS - 1):
        ours.step()
    peer = TorchSteps(torch, P, Q, u, i, r, order) if torch is not None else None
    if peer is not None:
        peer.epoch()          # (a warm-up epoch: PyTorch's first calls set up its kernels)
    lossc_times, torch_times = alternate(ours.step, peer.epoch if peer else None, budget,
                                         MAX_STEPS, TORCH_EPOCHS)
    step = stat_of(lossc_times)
    whole = step.median * spe <= EPOCH_BUDGET_S
    if whole:                 # measured, not extrapolated: whole epochs, in turns
        epochs, more_torch = alternate(ours.epoch, peer.epoch if peer else None,
                                       TORCH_EPOCHS * EPOCH_BUDGET_S, TORCH_EPOCHS,
                                       TORCH_EPOCHS)
        epoch, torch_times = stat_of(epochs), more_torch or torch_times
        est, how = epoch.median, f"{len(epochs)} whole epochs{spread(epoch)}"
    else:
        est = step.median * spe
        how = (f"EXTRAPOLATED, not run whole: median step {fmt_time(step.median)}"
               f"{spread(step)} over {steps(len(lossc_times))} (the first {ours.k} of the "
               f"epoch's {spe} batches; capped by time) x {spe}")
    check = check_steps(ctx, case, ours, torch, P, Q, u, i, r, order)
    impl = "lossc SGD, fused steps" + ("" if whole else " (extrapolated)")
    ctx.rows.append(Row("W8", case, impl, seconds=est, ref=True,
                        note=f"{how}; first step {fmt_time(first)} (untimed); scratch "
                        f"{scratch_gib(m):.2f} GiB"))
    ctx.log(f"  lossc: one epoch {fmt_time(est)}: {how}")
    ctx.rows.append(Row("W8", step_case_name(rows), "lossc SGD step", stat=step, ref=True,
                        note=steps(len(lossc_times))))
    target = "W8 one epoch vs PyTorch sparse SGD"
    if peer is None:
        ctx.na("W8", case, "torch sparse Embedding + SGD", ctx.torch_why)
        ctx.target(target, "n/a", f">= {VS_TORCH:g}x", None, ctx.torch_why)
        return
    tstat = stat_of(torch_times)
    ctx.rows.append(Row("W8", case, "torch sparse Embedding + SGD", stat=tstat,
                        check=check, note=f"{len(torch_times)} whole epochs"))
    ctx.log(f"  torch: {len(torch_times)} epochs, median {fmt_time(tstat.median)} "
            f"{tstat.spread}")
    ctx.target(target, fmt_speedup(tstat.median / est), f">= {VS_TORCH:g}x",
               tstat.median / est >= VS_TORCH,
               f"lossc {fmt_time(est)} (" + ("measured whole" if whole else
                                             f"extrapolated from {steps(len(lossc_times))}")
               + f"), PyTorch {fmt_time(tstat.median)}",
               anchor=("W8", case, "torch sparse Embedding + SGD"))


def check_batch(ctx, case, m, ours, torch, P, Q, u, i, r, order) -> bool:
    """lossc's value and gradient on the first batch against NumPy by hand and PyTorch."""
    idx = order[:BS]
    batch = m.bind({"u": u[idx], "i": i[idx], "r": r[idx]})
    value, flat = m.value_and_grad_flat(ours.theta, batch)
    got = m.unpack_params(flat)
    refs = {"numpy (by hand)": numpy_vg(P, Q, u[idx], i[idx], r[idx])}
    if torch is not None:
        refs["torch sparse Embedding + SGD"] = TorchSteps(
            torch, P, Q, u, i, r, order).value_and_grad(idx)
    ok = True
    for name, (v, g) in refs.items():
        err, where = compare(value, got, v, g)
        ctx.log(f"  check: lossc vs {name} on the first batch: {fmt_err(err)}")
        if not err <= 1e-8:
            ok = False
            ctx.fail(f"W8 {case}: lossc disagrees with {name} on the first batch at "
                     f"{where}: relative error {err:.2e} (value {value!r} vs {v!r})")
    if not ok:
        ctx.na("W8", case, "lossc SGD steps", "lossc's gradient disagrees: not timed")
    return ok


def check_steps(ctx, case, ours, torch, P, Q, u, i, r, order) -> str:
    """lossc's parameters after its timed steps against PyTorch's after the same ones;
    the check's text for PyTorch's row."""
    if torch is None:
        return ""
    peer = TorchSteps(torch, P, Q, u, i, r, order)
    for _ in range(ours.k):
        peer.step()
    err = rel_err(ours.theta, peer.tables())
    ctx.log(f"  check: lossc's tables after {steps(ours.k)} vs PyTorch's: {fmt_err(err)}")
    if not err <= 1e-10:
        ctx.fail(f"W8 {case}: lossc's tables after {ours.k} SGD steps differ from "
                 f"PyTorch's by {err:.2e}")
        return f"FAIL {fmt_err(err)}"
    return f"ok {fmt_err(err)}"


def step_case(ctx, rows: int, budget: float):
    """The median seconds of one lossc step at U = I = rows (None if not measured)."""
    torch = ctx.torch
    case = step_case_name(rows)
    ctx.log(f"W8 {case}")
    if ctx.quick and rows > EPOCH_ROWS:
        ctx.log("  skipped (--quick)")
        ctx.na("W8", case, "lossc SGD step", "skipped in a quick run")
        return None
    m = compile_model(SRC, dims={"U": rows, "I": rows})
    need, have = bytes_needed(m), memory_available()
    if have is not None and need * 1.25 > have:
        why = (f"needs about {need / 2 ** 30:.1f} GiB, {have / 2 ** 30:.1f} GiB available: "
               "not run")
        ctx.log(f"  {why}")
        ctx.na("W8", case, "lossc SGD step", why)
        return None
    u, i, r = make_ratings(rows)
    P, Q = make_tables(rows)
    order = epoch_order()
    ours = LosscSteps(m, P, Q, u, i, r, order)
    first = timed(ours.step)      # (untimed: the first call sets up its scratch memory)
    for _ in range(WARM_STEPS - 1):
        ours.step()
    peer = TorchSteps(torch, P, Q, u, i, r, order) if torch is not None else None
    if peer is not None:
        for _ in range(3):
            peer.step()
    if first > budget:
        # one step is all the cap allows, and its set-up (the first touch of the fused
        # steps' gradient and state) is small beside it: the first step is the figure
        lossc_times = [first]
        torch_times = [timed(peer.step) for _ in range(MIN_TORCH_STEPS)] if peer else []
        how = "1 step, the first (alone over the time cap)"
    else:
        lossc_times, torch_times = alternate(ours.step, peer.step if peer else None, budget,
                                             MAX_STEPS, MIN_TORCH_STEPS)
        how = (f"{steps(len(lossc_times))} (capped by time: {budget:g} s); first step "
               f"{fmt_time(first)} (untimed)")
    check = check_steps(ctx, case, ours, torch, P, Q, u, i, r, order)
    del P, Q
    step = stat_of(lossc_times)
    ctx.rows.append(Row("W8", case, "lossc SGD step", stat=step, ref=True,
                        note=f"{how}; scratch {scratch_gib(m):.2f} GiB"))
    ctx.log(f"  lossc: median {fmt_time(step.median)}{spread(step)}: {how}")
    if torch_times:
        tstat = stat_of(torch_times)
        ctx.rows.append(Row("W8", case, "torch sparse Embedding + SGD", stat=tstat,
                            check=check, note=f"{len(torch_times)} steps"))
        ctx.log(f"  torch: {len(torch_times)} steps, median {fmt_time(tstat.median)}")
    return step.median
