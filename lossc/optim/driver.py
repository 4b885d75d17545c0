"""The training driver: runs a compiled model's gradient over data with an optimizer.

    result = train(model, data={"x": X, "y": Y}, optimizer=Adam(lr=0.01),
                   batch_size=64, epochs=20, seed=0)
    result.params          # the best parameters seen (a dict, like model.init_params())
    result.history         # the training objective: at the start, then after each epoch

Descent modes, by batch_size: None or 0 (or at least the number of samples) is batch
descent, one step per epoch on the whole training set; 1 is stochastic descent; anything
else is mini-batch descent. Each epoch draws a permutation `order` of the samples from
np.random.default_rng(seed) (one generator for the run); batch k is the samples
order[k*bs:(k+1)*bs], so the last batch holds the remainder: it is neither dropped nor
padded, and its gradient is that of its own objective. Everything random comes from
`seed`, so a run is reproducible bit for bit.

A model without inputs (Rosenbrock, the seed example) takes no data: each step is an
epoch, and `epochs` and `steps` mean the same thing.

The full-batch optimizers (LBFGS, OWL-QN as LBFGS with l1=, NewtonCG; see
lossc.optim.fullbatch) run in batch descent only, one iteration (a line search over the
whole training set) an epoch: with them batch_size defaults to None and, without epochs
or steps, a run takes at most 1000 iterations. With an optimizer's L1 penalty (l1=) the
training objective recorded and judged is the penalized one (lossc.optim.objectives).

After each epoch the driver evaluates the objective on the whole training set (and the
validation split, if any); that is `history`. With monitor="batches" it skips that pass
(which costs about a third of an epoch of gradients) and records instead the epoch's
mini-batch objectives combined as one call would combine them (the mean weighted by
batch size for a mean objective, the sum for a sum), as Keras and most hand-written
loops report; the objective at the initial parameters is still a full pass. The
parameters with the lowest such value (validation if there is a split, training
otherwise; the initial parameters count as epoch 0) are `result.params`. (With
monitor="batches" and no split, an epoch is judged by its batches rather than by the
parameters it ends with, so at the end those are checked with one full pass: if their
objective is not finite, the earlier bests are tried, then the initial parameters; in
batch descent the one batch's objective is that at the parameters the epoch ends with,
and there is no such pass.)

Training stops at the first of: `epochs` epochs, `steps` steps, a full-data gradient
norm <= tol_grad, an epoch-to-epoch change of the objective <= tol_loss (absolute),
`patience` epochs without a new best, a callback returning True, a NaN or infinite loss
or gradient ("diverged": the message names the step and suggests a smaller learning
rate), a learning rate from the schedule that is negative or not finite ("bad_lr",
checked at the start of each epoch as the schedule gives it), or KeyboardInterrupt
("interrupted"); with a full-batch optimizer (LBFGS, NewtonCG: lossc.optim.fullbatch)
also its own tol_grad and tol_loss, or a line search that finds no decrease
("line_search"). In every case the result holds the best parameters seen. Arguments
are checked before anything runs: counts (epochs, steps, patience, batch_size) must be
whole numbers, tolerances numbers >= 0, and hypers finite (a NaN or an infinity there
would make every objective of the run NaN).

The pieces, each testable on its own: config.py (the options, checked, and the run's
plan), prepare.py (the data: checked, split, aligned, bound), stepper.py (an epoch's
optimizer steps: native or Python, mini-batch or batch descent), objectives.py (the
passes over whole data sets), monitor.py (the history, the bests and the stopping
rules). This module joins them: `train` and its epoch loop.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from lossc.codegen.units import PERMUTATION
from lossc.optim import linesearch
from lossc.optim.config import TrainConfig
from lossc.optim.freeze import check_frozen, frozen
from lossc.optim.fullbatch import check_run, full_batch_config, train_options
# (EpochInfo, what a callback gets, is part of train's interface here too)
from lossc.optim.monitor import EpochInfo, Monitor, StepLog, Stop  # noqa: F401
from lossc.optim.objectives import Objectives, by_gradient
from lossc.optim.optimizers import Adam, Optimizer
from lossc.optim.prepare import prepare
from lossc.optim.schedules import valid_lr
from lossc.optim.shuffle import Shuffler
from lossc.optim.stepper import Diverged, make_partition_steps, make_stepper
from lossc.runtime.calls import aligned_copy, as_array


@dataclass
class TrainResult:
    params: dict                  # best parameters (lowest monitored loss)
    history: list                 # training objective: [0] initial, [k] after epoch k
    val_history: list             # the same on the validation split (if any)
    best_loss: float              # the monitored loss of `params`
    best_epoch: int               # the epoch after which `params` were seen (0: initial)
    best_step: int                # ... and the number of steps taken by then
    last_params: dict             # the parameters when training stopped
    steps: int                    # optimizer steps taken
    epochs: int                   # epochs completed (a last one cut short by `steps`
                                  # counts)
    stopped: str                  # why it stopped: epochs, steps, tol_grad, tol_loss,
                                  # early_stop, callback, diverged, bad_lr (the
                                  # schedule gave a negative or non-finite rate),
                                  # line_search (a full-batch optimizer's search found
                                  # no decrease) or interrupted
    stopped_reason: str           # the same, as a sentence for people
    seconds: float = 0.0
    samples: int = 0              # samples processed by gradient steps
    step_losses: list = field(default_factory=list)   # each step's batch objective
    lr: list = field(default_factory=list)            # learning rate used in each epoch

    @property
    def ok(self) -> bool:
        """False when training diverged, was interrupted or met a bad learning rate."""
        return self.stopped not in ("diverged", "interrupted", "bad_lr")

    @property
    def initial_loss(self) -> float:
        return self.history[0]

    @property
    def final_loss(self) -> float:
        return self.history[-1]

    def __repr__(self) -> str:
        return (f"TrainResult(stopped={self.stopped!r}, epochs={self.epochs}, "
                f"steps={self.steps}, initial_loss={self.initial_loss:.6g}, "
                f"final_loss={self.final_loss:.6g}, best_loss={self.best_loss:.6g} "
                f"after epoch {self.best_epoch})")


def format_seconds(t: float) -> str:
    """A duration as people read it: 3.2 ms, 0.41 s, 12.3 s."""
    return f"{t * 1e3:.1f} ms" if t < 0.1 else f"{t:.2f} s" if t < 10 else f"{t:.1f} s"


def train(model, data=None, optimizer: Optional[Optimizer] = None, *,
          config: Optional[TrainConfig] = None, **options) -> TrainResult:
    """Train `model` (a compiled lossc Model) and return a TrainResult.

    data: a dict input name -> array (samples first), a pandas DataFrame (columns named
    as a CSV header's: y, x.0, x.1, ...), or the path of a .csv, .npz or .npy file (see
    lossc.optim.data); None for a model without inputs. Or data in chunks, computed
    chunk by chunk: a dict of dask arrays, a dask DataFrame, a folder or glob of .npy or
    .parquet files, or lossc.optim.chunked.in_chunks of memory maps (docs/dask.md). optimizer: a
    lossc optimizer (default Adam(lr=1e-3)); its state is reset first, and its `lr` is
    the base rate of `schedule`. The options, by keyword (or as one TrainConfig in
    `config=`):

    batch_size (64; None or 0: batch descent; None for LBFGS and NewtonCG, which take
    no other), epochs/steps: stop after that many (the first reached; with neither, 10
    epochs, or 1000 steps for a model without inputs, or 1000 iterations for LBFGS and
    NewtonCG).
    seed (0): the initial parameters, the shuffles and the validation split. hypers:
    the model's hyperparameters. schedule: a callable lr(base, k) from
    lossc.optim.schedules, applied at the start of each epoch. validation: a fraction
    of the samples held out (drawn from the seed) to choose the best parameters; or
    val_data: a validation set of its own, in any form data takes (a time-ordered or
    grouped hold-out), not with validation;
    training stops after `patience` epochs without a new best (default 5 with a
    validation split, never without one unless given). tol_grad, tol_loss: stop on a
    small gradient norm or change of the objective. callback(info: EpochInfo) runs
    after each epoch and stops training by returning True; progress(step, epoch,
    batch_loss, batch_samples) runs after each step. init: initial parameters, a dict
    or a flat vector (default model.init_params(seed)). freeze: names of parameters
    kept at their initial values (lossc.optim.freeze; an unknown name is a
    ValueError). shuffle (True): draw each
    epoch's order from the seed. monitor: "full" (the objective over the training set
    after each epoch) or "batches" (the epoch's mini-batch objectives combined, no
    extra pass; see the module docstring).
    """
    opt = optimizer if optimizer is not None else Adam()
    if not isinstance(opt, Optimizer):
        raise TypeError(f"optimizer must be a lossc optimizer (SGD, Adam, ...), got "
                        f"{type(opt).__name__}")
    if config is None:
        config = TrainConfig.from_options(train_options(opt, options))
    elif options:
        raise TypeError("train() takes its options either as keywords or as config=, "
                        "not both")
    else:
        config = full_batch_config(opt, config)
    if not valid_lr(opt.lr) or not opt.lr > 0:
        raise ValueError(f"the optimizer's learning rate must be a positive number, got "
                         f"{opt.lr!r}")
    check_run(opt, model, config)
    check_frozen(model, config.freeze)
    with prepare(model, data, config) as prepared:
        return _run(model, opt, prepared, config)


def _run(model, opt, prepared, config: TrainConfig) -> TrainResult:
    """The run itself, on prepared data: the initial parameters, the pieces, the
    epochs, and the result."""
    plan = prepared.plan
    theta = _initial(model, config.init, config.seed)
    fixed = frozen(model, config.freeze, theta)
    opt.reset()
    base_lr, base_l1 = opt.lr, opt.l1
    run_l1 = fixed.masked_l1(opt.l1) if fixed is not None else opt.l1
    objectives = Objectives(model, prepared.full, prepared.val,
                            by_gradient(plan, config.monitor, bool(model.inputs)),
                            l1=run_l1, hypers=config.hypers, frozen=fixed)
    log = StepLog(model.reduce == "mean", config.progress, epoch_rows=plan.n_train)
    # monitor="batches" without a validation split judges an epoch by its batches, not
    # by the parameters it ends with: those are checked at the end (verify_best). In
    # batch descent the one batch's objective is that at the parameters the epoch ends
    # with (its steppers return it): nothing to check.
    monitor = Monitor(theta, log, validated=prepared.val is not None,
                      judged_by_batches=(config.monitor == "batches"
                                         and not plan.full_batch),
                      ties_rtol=(linesearch.VALUE_RTOL
                                 if getattr(opt, "full_batch_only", False) else None),
                      total_epochs=plan.epochs, tol_grad=config.tol_grad,
                      tol_loss=config.tol_loss, patience=plan.patience,
                      callback=config.callback)
    # rng.permutation(n) each epoch, drawn natively when that gives the same result
    # (the model's copy of the native code: a saved model carries one; each epoch's
    # permutation is done with when the next is drawn: reuse=True); batch descent
    # draws none
    shuffler = None if plan.full_batch else Shuffler(
        np.random.default_rng(config.seed), lambda: model.code.function(PERMUTATION),
        reuse=True)
    stepper = None
    t0 = time.perf_counter()
    try:
        opt.l1 = run_l1          # (the optimizer's own, put back after the run)
        # Overflow on the way to a NaN is reported as divergence, with the step; numpy's
        # warnings about it would only repeat that, less clearly.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                # The initial evaluation also leaves the full gradient in objectives.g:
                # the first step's gradient in batch descent.
                initial = objectives.value_and_gradnorm(theta)
                monitor.start(initial[0], lambda: objectives.validation(theta))
                if getattr(prepared.full, "chunked", False) and not plan.full_batch:
                    stepper = make_partition_steps(model, opt, prepared, fixed, shuffler,
                                                   config.shuffle, config.seed)
                else:
                    stepper = make_stepper(
                        model, opt, prepared, objectives, initial,
                        sync_each_epoch=config.callback is not None,
                        train_has_tolerance=(config.tol_grad is not None
                                             or config.tol_loss is not None))
                # (a stepper over chunked data draws its partitions' orders itself)
                next_order = (_orders(plan, config.shuffle, shuffler)
                              if not getattr(stepper, "orders_itself", False)
                              else lambda: None)
                stopped, reason = _epochs(
                    theta, opt, stepper=stepper, objectives=objectives, monitor=monitor,
                    next_order=next_order, config=config, plan=plan, t0=t0)
            except Stop as stop:
                stopped, reason = stop.stopped, stop.reason
            except KeyboardInterrupt:
                stop = monitor.interrupted()
                stopped, reason = stop.stopped, stop.reason
            monitor.verify_best(objectives.is_finite_at)
    finally:
        if shuffler is not None:
            shuffler.close()
        if stepper is not None:
            stepper.sync()
        opt.lr, opt.l1 = base_lr, base_l1
    return TrainResult(
        params=model.unpack_params(monitor.best_theta), history=monitor.history,
        val_history=monitor.val_history, best_loss=monitor.best_loss,
        best_epoch=monitor.best_epoch, best_step=monitor.best_step,
        last_params=model.unpack_params(theta), steps=log.steps, epochs=monitor.epoch,
        stopped=stopped, stopped_reason=reason, seconds=time.perf_counter() - t0,
        samples=log.samples, step_losses=log.step_losses, lr=monitor.lr)


def _orders(plan, shuffle: bool, shuffler):
    """A callable giving each epoch's order of the training samples (None in batch
    descent, which steps on them all)."""
    n = plan.n_train
    if plan.full_batch:
        return lambda: None
    if shuffle:
        return lambda: shuffler.permutation(n)
    return lambda: np.arange(n)


def _epochs(theta, opt, *, stepper, objectives, monitor, next_order, config, plan,
            t0) -> tuple[str, str]:
    """The epochs, each: the schedule's rate, the steps, the epoch's objective, the
    monitor's verdict. Returns (stopped, stopped_reason), or raises Stop."""
    schedule, base_lr, log = config.schedule_for(plan), opt.lr, monitor.log
    for epoch in range(plan.epochs):
        opt.lr = monitor.begin_epoch(epoch, schedule(base_lr, epoch))
        order = next_order()
        count = plan.per_epoch if plan.steps is None else min(plan.per_epoch,
                                                              plan.steps - log.steps)
        steps_before = log.steps
        try:
            known = stepper.epoch(theta, order, count, log)
        except Diverged as d:
            raise monitor.diverged(d.value) from None
        except Stop:
            if log.steps == steps_before:     # (converged before a step: no rate used)
                monitor.lr.pop()
            raise
        loss, gnorm = _epoch_objective(known, log.end_epoch(), config, objectives, theta)
        monitor.end_epoch(loss, gnorm, theta, lambda: objectives.validation(theta),
                          time.perf_counter() - t0)
        if plan.steps is not None and log.steps >= plan.steps:
            return "steps", f"reached {plan.steps} step{'s' * (plan.steps != 1)}"
    return "epochs", f"reached {plan.epochs} epoch{'s' * (plan.epochs != 1)}"


def _epoch_objective(known, from_batches, config, objectives, theta) -> tuple:
    """(training objective, gradient norm or None) after an epoch: what the steps
    computed if they did (batch descent); else with monitor="batches" the epoch's batch
    objectives combined (from_batches), otherwise a pass over the training set; and the
    gradient norm from a pass with the gradient when tol_grad needs it."""
    if known is not None:
        return known
    loss, gnorm = None, None
    if config.tol_grad is not None:
        loss, gnorm = objectives.value_and_gradnorm(theta)
    if config.monitor == "batches" and from_batches is not None:
        loss = from_batches + objectives.penalty(theta)
    elif config.tol_grad is None:
        loss = objectives.training(theta)
    return loss, gnorm


def _initial(model, init, seed) -> np.ndarray:
    """The flat parameters training starts from: a vector of its own (training must
    not touch `init`) starting on a cache line (aligned_copy), so that a table's rows
    start lines as in the table: a row of 256 bytes 16 bytes into a line spans five
    lines, and its vector loads straddle two."""
    if init is None:
        init = model.init_params(seed)
    if isinstance(init, dict):
        return aligned_copy(model.pack_params(init))
    want = f"init must be a dict of parameters or a flat vector of {model.n_params} reals"
    if isinstance(init, TrainResult):
        raise ValueError(f"{want}, got a TrainResult: pass its params or last_params")
    if isinstance(init, (str, bytes, os.PathLike)):
        raise ValueError(f"{want}, got {init!r} (a file's parameters: "
                         f"lossc.optim.load_params(path, model))")
    a = as_array(init, "init")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{want}, got an array of dtype {a.dtype}")
    flat = aligned_copy(np.asarray(a, dtype=model.dtype))
    if flat.shape != (model.n_params,):
        raise ValueError(f"{want}, got shape {flat.shape}")
    return flat
