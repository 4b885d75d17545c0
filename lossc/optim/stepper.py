"""The optimizer steps of one epoch, behind one interface.

    stepper.epoch(theta, order, count, log) -> (loss, gnorm) or None
    stepper.sync()

`epoch` takes `count` optimizer steps, updating theta in place, on the batches
order[k*bs:(k+1)*bs], k = 0.. (the last holding the remainder), and records each step in
`log` (monitor.StepLog). It returns the training objective and gradient norm at the new
theta when the steps computed them anyway (batch descent), None otherwise (the driver
then makes its own pass). A NaN or infinite objective or gradient raises Diverged,
after recording the steps taken before it. `sync` hands the optimizer's state back to
the optimizer object when the steps kept it elsewhere.

- FullBatchSteps: batch descent, one step an epoch on the whole training set.
- NativeBatchSteps: mini-batches in native code, lossc_train_steps_<optimizer>
  (runtime/fused.py), for the optimizers it implements; bit for bit PythonBatchSteps
  in float64.
- PythonBatchSteps: mini-batches one value_and_grad call and one optimizer.step each.
- LineSearchSteps: the full-batch optimizers (lossc.optim.fullbatch: L-BFGS, OWL-QN,
  Newton-CG), one iteration an epoch, written to the interface below.

`make_stepper` picks one.

A full-batch method whose step evaluates the objective several times (a quasi-Newton
or Newton-CG direction with a line search, a proximal step with backtracking) is one
more class with these two methods and one more case in make_stepper, ahead of batch
descent's. It runs by a plan with full_batch set (`order` is None, `count` 1: an epoch
is one iteration) and gets what FullBatchSteps gets: `objectives` and `initial`, the
(objective, gradient norm) at the initial theta, whose gradient objectives.g holds.
Its `epoch`:

- evaluates the training objective where its step needs it, at points in arrays of its
  own: `objectives.value_and_grad(x, objectives.full, grad_out)` returns the objective
  at x and writes the gradient into grad_out. theta itself changes only when the step
  is accepted (theta is the run's live vector: the monitor copies the bests from it,
  and an interrupt leaves the run with it as it is);
- records the iteration once, `log.record(objective where the step started, rows)`
  (rows: the training samples, objectives.full.B; 0 for a model without inputs), which
  also calls the progress hook;
- returns (objective, gradient norm) at the new theta, which its last evaluation gave:
  the driver then makes no pass of its own, and the monitor applies tol_grad, tol_loss,
  patience and the callback to them, and reports a non-finite objective as divergence;
- raises Diverged(value) where a step meets an objective or gradient it cannot go on
  from, and monitor.Stop(word, sentence) to end the run for a reason of its own (a line
  search that finds no decrease): the driver catches it as it catches the monitor's
  own, keeps the best parameters and reports `word` as TrainResult.stopped;
- keeps its state (an L-BFGS history) on itself, or hands it to the optimizer object
  in `sync` where a callback or the caller may read it there.

The driver asks of every optimizer a positive `opt.lr` (the schedule's base rate, set
on it at the start of each epoch) and `opt.reset()`; a method without a learning rate
gives these a meaning of its own (a first trial step, say) or the driver a case for it.
"""
from __future__ import annotations

import math
from typing import Optional, Protocol

import numpy as np

from lossc.optim.monitor import Stop
from lossc.optim.solver import (UNMOVED, Objective, Point, inf_norm, relative_change,
                                two_norm, unmoved_away_from_a_minimum)
from lossc.runtime import fused

FUSED_CHUNK = 256   # batches per native call (progress and Ctrl-C stay live between)


class Diverged(Exception):
    """A step's objective or gradient is not finite: `value` is the objective (a float),
    or a phrase saying what else went wrong."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


OVERFLOWED = "is finite but its gradient overflowed"


def gradient_finite(g: np.ndarray) -> bool:
    """Whether every element of a gradient is finite, as the native steps test it. (Its
    squared norm, one dot product, is finite in most steps and then decides; a float32
    one overflows from a norm of 1.8e19 with every element finite.)"""
    return math.isfinite(float(np.dot(g, g))) or bool(np.isfinite(g).all())


class Stepper(Protocol):
    def epoch(self, theta: np.ndarray, order: Optional[np.ndarray], count: int,
              log) -> Optional[tuple[float, float]]:
        """count steps on the batches of `order` (None in batch descent)."""

    def sync(self) -> None:
        """The optimizer object's state as the steps left it."""


def make_stepper(model, opt, prepared, objectives, initial: tuple,
                 sync_each_epoch: bool, train_has_tolerance: bool = False) -> Stepper:
    """The stepper for a run: `initial` is (objective, gradient norm) at the initial
    parameters, whose gradient objectives.g holds (batch descent's first step);
    sync_each_epoch: hand the optimizer's state back after every epoch (a callback
    may look at it). The parameters no step may change are objectives.frozen
    (freeze.Frozen, or None), whose gradient objectives takes as 0 already: each
    stepper puts them back after its steps. train_has_tolerance: train was given
    tol_grad or tol_loss (a full-batch optimizer's default tolerances then step aside).
    (Mini-batch epochs over chunked data: make_partition_steps.)"""
    frozen = objectives.frozen
    rows = prepared.full.B if model.inputs else 0
    if getattr(opt, "full_batch_only", False):
        return LineSearchSteps(opt, objectives, rows, initial, frozen,
                               opt.own_tolerances(train_has_tolerance))
    if getattr(opt, "lazy", False) and model.sparse_rows and (
            prepared.plan.full_batch or not fused.supports(opt)):
        raise ValueError(lazy_adam_refusal(opt, prepared.plan))
    if prepared.plan.full_batch:
        return FullBatchSteps(opt, objectives, rows, initial, frozen)
    if fused.supports(opt):
        return NativeBatchSteps(model, opt, prepared.full, prepared.plan.batch_size,
                                sync_each_epoch, frozen)
    return PythonBatchSteps(model, opt, prepared.full, prepared.plan.batch_size, frozen)


def lazy_adam_refusal(opt, plan) -> str:
    """Why lazy Adam cannot take this run's steps: only lossc's native mini-batch steps
    update the rows each batch touches (full-batch descent and Python's steps would
    take dense gradients, Adam's rule)."""
    if not fused.supports(opt):
        return (f"Adam(lazy=True) runs in lossc's native steps, which implement Adam "
                f"itself, not a subclass such as {type(opt).__name__} (its update may "
                "differ)")
    n = plan.n_train
    return ("Adam(lazy=True) takes its steps by mini-batches, updating the rows each "
            "batch touches; a batch_size that is None, 0 or at least the number of "
            f"training samples ({n}) makes every step full-batch descent: "
            + (f"give a batch_size below {n}, or use " if n > 1 else "use ")
            + "Adam(lazy=False)")


def make_partition_steps(model, opt, prepared, frozen, shuffler, shuffle: bool,
                         seed: int):
    """The stepper of mini-batch epochs over chunked data (lossc.optim.chunked
    PartitionSteps, which draws its partitions' orders itself, the rows' from the run's
    shuffler): on each partition, the steps an in-memory run takes."""
    from lossc.optim.chunked import PartitionSteps
    bs = prepared.plan.batch_size

    def batch_steps(bound):
        if fused.supports(opt):
            return NativeBatchSteps(model, opt, bound, bs, True, frozen)
        return PythonBatchSteps(model, opt, bound, bs, frozen)
    return PartitionSteps(model, prepared.full, bs, shuffler, shuffle, seed, batch_steps)


class FullBatchSteps:
    def __init__(self, opt, objectives, rows: int, initial: tuple, frozen=None,
                 tolerances: tuple = (None, None)):
        self.opt, self.objectives, self.rows = opt, objectives, rows
        self.tolerances = tolerances
        self.loss, self.gnorm = initial      # at theta, whose gradient is objectives.g
        self.frozen = frozen

    def epoch(self, theta, order, count, log):
        # The evaluation after the step is both the epoch's objective and the next
        # step's gradient: one native call a step.
        self.opt.step(theta, self.objectives.g)
        if self.frozen is not None:
            self.frozen.restore(theta)
        log.record(self.loss, self.rows)
        self.loss, self.gnorm = self.objectives.value_and_gradnorm(theta)
        return self.loss, self.gnorm

    def sync(self) -> None:
        pass


class PythonBatchSteps:
    def __init__(self, model, opt, full, bs: int, frozen=None):
        self.model, self.opt, self.full, self.bs = model, opt, full, bs
        self.g = np.zeros(model.n_params, dtype=model.dtype)
        self.frozen = frozen

    def epoch(self, theta, order, count, log):
        from lossc.runtime.calls import BoundArgs
        model, full, g, bs = self.model, self.full, self.g, self.bs
        for k in range(count):
            idx = order[k * bs:(k + 1) * bs]
            # rows of the bound (validated, converted) data: no re-validation needed
            batch = BoundArgs(model, [a[idx] for a in full.arrays], len(idx), full.hypers)
            value, _ = model.value_and_grad_flat(theta, batch, grad_out=g)
            if not math.isfinite(value):
                raise Diverged(value)
            if not gradient_finite(g):
                raise Diverged(OVERFLOWED)
            if self.frozen is not None:     # (as the native steps do: after the check)
                self.frozen.zero_grad(g)
            self.opt.step(theta, g)
            if self.frozen is not None:
                self.frozen.restore(theta)
            log.record(value, len(idx))
        return None

    def sync(self) -> None:
        pass


class NativeBatchSteps:
    """Whole runs of batches in one native call each: gather, gradient and update (the
    optimizer's state kept in native arrays meanwhile, and handed back by sync)."""

    def __init__(self, model, opt, full, bs: int, sync_each_epoch: bool, frozen=None):
        self.model, self.opt, self.full, self.bs = model, opt, full, bs
        self.sync_each_epoch = sync_each_epoch
        self.frozen = frozen
        self.steps = None     # fused.FusedSteps, made (and compiled) on the first epoch

    def epoch(self, theta, order, count, log):
        if self.steps is None:
            self.steps = fused.FusedSteps(self.model, self.opt, self.full, self.bs,
                                          frozen=None if self.frozen is None
                                          else self.frozen.bytes)
        f, N = self.steps, self.full.B
        order = np.ascontiguousarray(order, dtype=np.int64)
        for first in range(0, count, FUSED_CHUNK):
            n = min(FUSED_CHUNK, count - first)
            try:
                losses = f.run(theta, order, first, n)
            except fused.FusedError as e:
                done = e.batch - first if e.kind == "diverged" else 0
                log.record_batches(f.losses[first:first + done], first, done, self.bs, N)
                f.sync()
                if e.kind == "index":
                    raise e.index_error from None
                value = float(f.losses[e.batch])
                raise Diverged(value if not math.isfinite(value) else OVERFLOWED) from None
            log.record_batches(losses, first, n, self.bs, N)
        if self.sync_each_epoch:
            f.sync()
        return None

    def sync(self) -> None:
        if self.steps is not None:
            self.steps.sync()


class LineSearchSteps:
    """A full-batch optimizer's iterations (lossc.optim.fullbatch), one an epoch, on the
    training objective in float64 (objectives.smooth): `opt.iteration` gives the
    method's step function, which keeps its own state (L-BFGS's pairs) between epochs.
    The objective a point carries, and the epoch's, include the optimizer's L1 term
    (objectives.penalty), which OWL-QN minimizes with the rest.

    The optimizer's own stopping tests, `tolerances` (tol_grad on the inf-norm of its
    stationarity measure, tol_loss on the relative change of the last iteration, as
    lossc.optim.solver makes them; fullbatch.FullBatchOptimizer.own_tolerances; with
    opt.relative_tol_grad, tol_grad times the size of the initial objective), are
    applied at the start of each epoch, to the parameters the last one left (or the
    initial ones): they end the run with a Stop, as does a line search that finds no
    decrease ("line_search")."""

    def __init__(self, opt, objectives, rows: int, initial: tuple, frozen=None,
                 tolerances: tuple = (None, None)):
        self.opt, self.objectives, self.rows = opt, objectives, rows
        self.tolerances = _scaled(tolerances, opt, initial[0])
        self.frozen = frozen
        self.objective = Objective(objectives.smooth, objectives.g.size, "the objective")
        self.step = opt.iteration(self.objective, objectives.hvp if opt.needs_hvp else None,
                                  code=objectives.model.code)
        self.initial_value = initial[0]     # (with the L1 term)
        self.point = None           # the current point, made from theta at the first epoch
        self.previous = None        # the objective before the last iteration

    def epoch(self, theta, order, count, log):
        if self.point is None:      # the initial theta, whose gradient objectives.g holds
            self.point = Point(theta.astype(np.float64), self.initial_value,
                               self.objectives.g.astype(np.float64))
            self.initial_gnorm = inf_norm(self.opt.stationarity(self.point))
        self.check_converged(log.steps)
        p = self.point
        nxt = self.step(p)
        if isinstance(nxt, str):
            raise Stop("line_search", f"{nxt} after step {log.steps}; the best parameters "
                                      f"so far are kept")
        if unmoved_away_from_a_minimum(p, nxt, self.initial_gnorm, self.opt.stationarity):
            raise Stop("line_search", f"{UNMOVED} after step {log.steps}; the best "
                                      "parameters so far are kept")
        gnorm = two_norm(nxt.grad)
        if not math.isfinite(gnorm):
            raise Diverged(OVERFLOWED)
        theta[...] = nxt.x
        if self.frozen is not None:     # (its direction is 0 there; an L1 term may not be)
            self.frozen.restore(theta)
        log.record(p.value, self.rows)
        self.previous, self.point = p.value, nxt
        g = self.opt.stationarity(nxt)
        return nxt.value, gnorm if g is nxt.grad else two_norm(g)

    def check_converged(self, steps: int) -> None:
        """Stop if the optimizer's tol_grad or tol_loss holds at the current point."""
        tol_grad, tol_loss = self.tolerances
        after = f"after step {steps}" if steps else "at the initial parameters"
        gnorm = inf_norm(self.opt.stationarity(self.point))
        if gnorm == 0:
            raise Stop("tol_grad", f"converged: the gradient is 0 {after}")
        if tol_grad is not None and gnorm <= tol_grad:
            whose = ("tol_grad times the initial objective's size"
                     if self.opt.relative_tol_grad else "tol_grad")
            raise Stop("tol_grad", f"converged: the gradient's largest component is "
                                   f"{gnorm:.3g} <= {tol_grad:g} (the optimizer's "
                                   f"{whose}) {after}")
        if tol_loss is not None and self.previous is not None:
            change = relative_change(self.previous, self.point.value)
            if change <= tol_loss:
                raise Stop("tol_loss", f"converged: the objective changed by {change:.3g} "
                                       f"(relative) <= {tol_loss:g} (the optimizer's "
                                       f"tol_loss) in step {steps}")

    def sync(self) -> None:
        pass


def _scaled(tolerances: tuple, opt, initial_value: float) -> tuple:
    """(tol_grad, tol_loss) with a relative tol_grad (opt.relative_tol_grad) made
    absolute: times |the objective at the initial parameters|."""
    tol_grad, tol_loss = tolerances
    if tol_grad is not None and opt.relative_tol_grad:
        tol_grad *= abs(initial_value)
    return tol_grad, tol_loss
