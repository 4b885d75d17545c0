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
objective is not finite, the earlier bests are tried, then the initial parameters.)

Training stops at the first of: `epochs` epochs, `steps` steps, a full-data gradient
norm <= tol_grad, an epoch-to-epoch change of the objective <= tol_loss (absolute),
`patience` epochs without a new best, a callback returning True, a NaN or infinite loss
or gradient ("diverged": the message names the step and suggests a smaller learning
rate), a learning rate from the schedule that is negative or not finite ("bad_lr",
checked at the start of each epoch as the schedule gives it), or KeyboardInterrupt
("interrupted"). In every case the result holds the best parameters seen. Arguments
are checked before anything runs: counts (epochs, steps, patience, batch_size) must be
whole numbers, tolerances numbers >= 0, and hypers finite (a NaN or an infinity there
would make every objective of the run NaN).
"""
from __future__ import annotations

import math
import numbers
import pathlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from lossc.codegen.units import PERMUTATION
from lossc.optim import schedules as _schedules
from lossc.optim.data import DataError, check_arrays, check_finite, load_data
from lossc.optim.optimizers import Adam, Optimizer
from lossc.optim.shuffle import Shuffler
from lossc.runtime import fused, scratch

DEFAULT_EPOCHS = 10       # data models, when neither epochs nor steps is given
DEFAULT_STEPS = 1000      # models without inputs
DEFAULT_PATIENCE = 5      # with a validation split
MONITORS = ("full", "batches")
KEPT_BESTS = 3            # earlier bests kept to fall back on, with monitor="batches"
# Rows of objective-only passes (the monitor's, over the training set and the validation
# split) from which a run compiles the model's objective alone (lossc_loss, code unit
# LOSS) for them; below, they go through the gradient's code, which is there already.
# The gradient's pass costs 1-10 ns a row more (logistic regression, the MLP of W3), the
# objective's compile 30-50 ms: some 5 million rows pay for it. (A 20-epoch run on
# 16,384 samples, 330,000 rows, started 30 ms sooner: 40 ms instead of 70 from compile
# to trained.) The choice depends on the run's arguments only, so that a run gives the
# same history whatever was compiled before it (the two codes can differ in the last bit
# of the objective).
LOSS_UNIT_ROWS = 5_000_000


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
                                  # schedule gave a negative or non-finite rate) or
                                  # interrupted
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


@dataclass
class EpochInfo:
    """What a callback sees after each epoch. `theta` is the live flat parameter
    vector (model.unpack_params(info.theta) gives a dict): read or copy it, do not
    change it."""

    epoch: int
    total_epochs: int
    steps: int
    loss: float
    val_loss: Optional[float]
    best_loss: float
    lr: float
    seconds: float
    samples: int
    theta: np.ndarray


class _Stop(Exception):
    def __init__(self, stopped: str, reason: str):
        self.stopped, self.reason = stopped, reason


def train(model, data=None, optimizer: Optional[Optimizer] = None,
          batch_size: Optional[int] = 64, epochs: Optional[int] = None,
          steps: Optional[int] = None, seed: int = 0, hypers: Optional[dict] = None,
          schedule=None, tol_grad: Optional[float] = None, tol_loss: Optional[float] = None,
          validation: Optional[float] = None, patience: Optional[int] = None,
          callback: Optional[Callable[[EpochInfo], Optional[bool]]] = None,
          progress: Optional[Callable[[int, int, float, int], None]] = None,
          init=None, shuffle: bool = True, monitor: str = "full") -> TrainResult:
    """Train `model` (a compiled lossc Model) and return a TrainResult.

    data: a dict input name -> array (samples first), or the path of a .csv, .npz or
    .npy file (see lossc.optim.data); None for a model without inputs. optimizer: a
    lossc optimizer (default Adam(lr=1e-3)); its state is reset first, and its `lr` is
    the base rate of `schedule` (a callable lr(base, k) from lossc.optim.schedules,
    applied at the start of each epoch). epochs/steps: stop after that many (the first
    reached; with neither, 10 epochs, or 1000 steps for a model without inputs).
    hypers: the model's hyperparameters. validation: a fraction of the samples held
    out (drawn from the seed) to choose the best parameters; training stops after
    `patience` epochs without a new best (default 5 with a validation split, never
    without one unless given). callback(info: EpochInfo) runs after each epoch and
    stops training by returning True; progress(step, epoch, batch_loss, batch_samples)
    runs after each step. init: initial parameters, a dict or a flat vector (default
    model.init_params(seed)). monitor: "full" (the objective over the training set after
    each epoch) or "batches" (the epoch's mini-batch objectives combined, no extra
    pass; see the module docstring).
    """
    opt = optimizer if optimizer is not None else Adam()
    if not isinstance(opt, Optimizer):
        raise TypeError(f"optimizer must be a lossc optimizer (SGD, Adam, ...), got "
                        f"{type(opt).__name__}")
    hypers = _finite_hypers(hypers)
    sched = schedule if schedule is not None else _schedules.Constant()
    if not callable(sched):
        raise TypeError("schedule must be a callable lr(base_lr, k), e.g. "
                        "lossc.optim.schedules.cosine()")
    if not _schedules.valid_lr(opt.lr) or not opt.lr > 0:
        raise ValueError(f"the optimizer's learning rate must be a positive number, got "
                         f"{opt.lr!r}")
    epochs, steps, patience = (_count(name, v, 1) for name, v in (
        ("epochs", epochs), ("steps", steps), ("patience", patience)))
    batch_size = _count("batch_size", batch_size, 0,
                        "a positive integer (or None/0 for the whole data set)")
    tol_grad, tol_loss = (_tolerance(name, v) for name, v in (
        ("tol_grad", tol_grad), ("tol_loss", tol_loss)))
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
    if validation is not None and not (_is_real(validation) and 0 <= validation < 1):
        raise ValueError(f"validation must be a fraction between 0 and 1, got {validation!r}")

    train_data, val_data, unchecked = _split(model, data, validation, seed)
    n, full_batch, bs, per_epoch, total_epochs, steps = plan(
        bool(model.inputs), _n_samples(train_data), batch_size, epochs, steps)
    taken = []      # scratch buffers holding copies of the data (runtime/scratch.py)
    if train_data and total_epochs >= ALIGN_MIN_EPOCHS:
        train_data = _line_aligned(train_data, taken)
    try:
        if unchecked:
            # (on the copy, if one was made: it is in cache, where the arrays passed
            # may have to come from memory)
            check_finite(train_data, model, "data")
        full = model.bind(train_data or {}, hypers)
        val = model.bind(val_data, hypers) if val_data is not None else None
        if isinstance(sched, _schedules.Cosine):
            sched = sched.over(total_epochs)
        if patience is None and val is not None:
            patience = DEFAULT_PATIENCE

        theta = _initial(model, init, seed)
        opt.reset()
        base_lr = opt.lr
        run = _Run(model, opt, theta, full, val, callback, progress, total_epochs, monitor)
        # rng.permutation(n) each epoch, drawn natively when that gives the same result
        # (each epoch's permutation is done with when the next is drawn: reuse=True)
        shuffler = Shuffler(np.random.default_rng(seed), run.native_permutation, reuse=True)
        t0 = time.perf_counter()
        try:
            # Overflow on the way to a NaN is reported as divergence, with the step; numpy's
            # warnings about it would only repeat that, less clearly.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                stopped, reason = _loop(run, sched, base_lr, shuffler, full_batch, n, bs,
                                        per_epoch, total_epochs, steps, shuffle, t0, tol_grad,
                                        tol_loss, patience)
                run.verify_best()
        finally:
            shuffler.close()
            run.sync()
            opt.lr = base_lr
        return TrainResult(
            params=model.unpack_params(run.best_theta), history=run.history,
            val_history=run.val_history, best_loss=run.best_loss, best_epoch=run.best_epoch,
            best_step=run.best_step, last_params=model.unpack_params(theta), steps=run.steps,
            epochs=run.epoch, stopped=stopped, stopped_reason=reason,
            seconds=time.perf_counter() - t0, samples=run.samples,
            step_losses=run.step_losses, lr=run.lr)
    finally:
        # (nothing the run made reads the copies after it: the result holds parameters)
        for buf in taken:
            scratch.give(buf)


def _is_real(v) -> bool:
    """A real number (a Python or NumPy int or float, not a bool)."""
    return isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_)) \
        and np.isrealobj(v)


def _count(name: str, v, minimum: int, what: str = "a positive integer"):
    """v as an int (None stays None): an integer, or a float with a whole value, of at
    least `minimum`; else a ValueError naming the argument."""
    if v is None:
        return None
    if _is_real(v) and math.isfinite(v) and v == int(v) and v >= minimum:
        return int(v)
    raise ValueError(f"{name} must be {what}, got {v!r}")


def _tolerance(name: str, v) -> Optional[float]:
    if v is None:
        return None
    if _is_real(v) and v >= 0:          # (NaN fails this)
        return float(v)
    raise ValueError(f"{name} must be a number >= 0, got {v!r}")


def _finite_hypers(hypers) -> dict:
    """The run's hyperparameters, each a finite number: a NaN or an infinity would make
    every objective of the run NaN, reported as a divergence at the first step."""
    hypers = dict(hypers or {})
    for name, v in hypers.items():
        a = np.asarray(v)
        if a.shape == () and a.dtype.kind in "biuf" and not np.isfinite(a):
            raise ValueError(f"hypers: {name!r} must be a finite number, got {v!r}")
    return hypers


def _loop(run, sched, base_lr, shuffler, full_batch, n, bs, per_epoch, total_epochs, steps,
          shuffle, t0, tol_grad, tol_loss, patience) -> tuple[str, str]:
    """The epochs; returns (stopped, stopped_reason)."""
    opt = run.opt
    try:
        run.start()
        for epoch in range(total_epochs):
            lr = float(sched(base_lr, epoch))
            if not _schedules.valid_lr(lr):
                return "bad_lr", (f"the schedule gave the learning rate {lr} for epoch "
                                  f"{epoch + 1} (it must be a finite number >= 0); training "
                                  f"stopped and the best parameters so far are kept")
            opt.lr = lr
            run.lr.append(opt.lr)
            if full_batch:
                run.full_batch_step()
            else:
                order = shuffler.permutation(n) if shuffle else np.arange(n)
                count = per_epoch if steps is None else min(per_epoch, steps - run.steps)
                run.batch_steps(order, bs, count)
            run.end_epoch(epoch + 1, time.perf_counter() - t0, tol_grad, tol_loss, patience)
            if steps is not None and run.steps >= steps:
                return "steps", f"reached {steps} step{'s' * (steps != 1)}"
        return "epochs", f"reached {total_epochs} epoch{'s' * (total_epochs != 1)}"
    except _Stop as stop:
        return stop.stopped, stop.reason
    except KeyboardInterrupt:
        return "interrupted", (f"interrupted at step {run.steps + 1} (epoch {run.epoch + 1});"
                               " the best parameters so far are kept")


def plan(has_inputs: bool, n: int, batch_size, epochs, steps) -> tuple:
    """The shape of a run: (n, full_batch, batch size, steps per epoch, epochs, step
    limit or None), with the defaults filled in. n: training samples."""
    if not has_inputs:
        n = 1
    full_batch = not has_inputs or not batch_size or batch_size >= n
    bs = n if full_batch else int(batch_size)
    per_epoch = math.ceil(n / bs)
    if epochs is None and steps is None:
        if has_inputs:
            epochs = DEFAULT_EPOCHS
        else:
            steps = DEFAULT_STEPS
    if not has_inputs and epochs is not None:   # here an epoch is a step
        steps = epochs if steps is None else min(steps, epochs)
        epochs = None
    total_epochs = epochs if steps is None else math.ceil(steps / per_epoch)
    if epochs is not None:
        total_epochs = min(total_epochs, epochs)
    return n, full_batch, bs, per_epoch, total_epochs, steps


FUSED_CHUNK = 256   # batches per native call of the fused path


class _Run:
    """The loop's state: the gradient steps and the end-of-epoch bookkeeping."""

    def __init__(self, model, opt, theta, full, val, callback, progress, total_epochs,
                 monitor="full"):
        self.model, self.opt, self.theta = model, opt, theta
        self.monitor = monitor
        # this epoch's batch objectives, for monitor="batches": (weighted) sum, rows
        self.epoch_sum, self.epoch_rows = 0.0, 0
        self.mean = model.reduce == "mean"
        self.g = np.zeros(model.n_params, dtype=model.dtype)
        self.full, self.val = full, val
        self.callback, self.progress = callback, progress
        self.total_epochs = total_epochs
        self.steps = self.samples = self.epoch = 0
        self.history, self.val_history, self.step_losses, self.lr = [], [], [], []
        self.best_theta = theta.copy()
        self.best_loss = math.inf
        self.best_epoch = self.best_step = self.since_best = 0
        self.loss = math.nan
        self.gnorm = None
        self.fused = None       # lossc.runtime.fused.FusedSteps, made on first use
        # the shuffle's native code: the model's copy (a saved model carries one)
        self.native_permutation = lambda: model.code.function(PERMUTATION)
        # monitor="batches" without a validation split judges an epoch by its batches,
        # not by the parameters it ends with: those are checked at the end, and the
        # bests before them are kept to fall back on (the initial parameters, verified
        # by start(), are the last resort)
        self.unverified_best = monitor == "batches" and val is None
        self.earlier_bests = []
        self.initial = (theta.copy(), 0, 0)
        monitor_rows = total_epochs * ((full.B if monitor == "full" and model.inputs else 0)
                                       + (val.B if val is not None else 0))
        self.objective_by_gradient = monitor_rows < LOSS_UNIT_ROWS
        self.g_spare = np.zeros(model.n_params, dtype=model.dtype)

    def start(self) -> None:
        # The initial evaluation also leaves the full gradient in g: the first step's
        # gradient in batch mode.
        self.loss, self.gnorm = self._full_value_and_grad()
        self.history.append(self.loss)
        if not math.isfinite(self.loss):
            raise _Stop("diverged", f"the loss is {self.loss} at the initial parameters; "
                                    "check the data, the hyperparameters and the initial "
                                    "values")
        self.best_loss = self._monitored(self.loss)
        if not math.isfinite(self.best_loss):
            raise _Stop("diverged", f"the validation loss is {self.best_loss} at the "
                                    "initial parameters")

    def _full_value_and_grad(self):
        value, _ = self.model.checked_value_and_grad_flat(self.theta, self.full, None,
                                                             self.g)
        return value, math.sqrt(float(np.dot(self.g, self.g)))

    def _objective(self, data) -> float:
        """The objective at theta over bound data (the monitor's passes): through the
        gradient's code or the objective's alone, as LOSS_UNIT_ROWS decides."""
        if self.objective_by_gradient:
            return self.model.checked_value_and_grad_flat(self.theta, data, None,
                                                           self.g_spare)[0]
        return self.model.loss_flat(self.theta, data)

    def _diverged(self, value, at_end: bool = False) -> "_Stop":
        where = (f"after step {self.steps} (end of epoch {self.epoch + 1})" if at_end else
                 f"at step {self.steps + 1} (epoch {self.epoch + 1})")
        what = f"became {value}" if isinstance(value, float) else value
        return _Stop("diverged", f"the loss {what} {where}; training stopped and the best "
                                 f"parameters so far are kept. Try a smaller learning rate "
                                 f"(it was {self.opt.lr:g})")

    def _after_step(self, value: float, samples: int) -> None:
        self.steps += 1
        self.samples += samples
        self.step_losses.append(value)
        self.epoch_sum += value * samples if self.mean else value
        self.epoch_rows += samples
        if self.progress is not None:
            self.progress(self.steps, self.epoch, value, samples)

    def full_batch_step(self) -> None:
        # g holds the gradient at theta from the last evaluation, and the evaluation
        # after the step is both the epoch's loss and the next step's gradient: one
        # native call per step.
        value = self.loss
        self.opt.step(self.theta, self.g)
        self._after_step(value, self.full.B if self.model.inputs else 0)
        self.loss, self.gnorm = self._full_value_and_grad()

    def batch_steps(self, order: np.ndarray, bs: int, count: int) -> None:
        """`count` steps on the batches order[k*bs:(k+1)*bs], k = 0.., the last one
        holding the remainder. With an optimizer the native code implements, whole runs
        of batches go through lossc_train_steps_<optimizer> (one native call for gather,
        gradient and update, bit for bit the loop below in float64); otherwise, the loop
        below."""
        if self.fused is None and fused.supports(self.opt) and self.model.inputs:
            self.fused = fused.FusedSteps(self.model, self.opt, self.full, bs)
        if self.fused is not None and self.fused.bs == bs:
            return self._fused_steps(np.ascontiguousarray(order, dtype=np.int64), count)
        self.sync()       # the Python steps take over the optimizer's state
        from lossc.runtime.calls import BoundArgs
        model, full, g = self.model, self.full, self.g
        for k in range(count):
            idx = order[k * bs:(k + 1) * bs]
            # rows of the bound (validated, converted) data: no re-validation needed
            batch = BoundArgs(model, [a[idx] for a in full.arrays], len(idx), full.hypers)
            value, _ = model.value_and_grad_flat(self.theta, batch, grad_out=g)
            if not math.isfinite(value):
                raise self._diverged(value)
            if not math.isfinite(float(np.dot(g, g))):
                raise self._diverged("is finite but its gradient overflowed")
            self.opt.step(self.theta, g)
            self._after_step(value, len(idx))
        self.loss = None        # the full-data objective is now out of date

    def _fused_steps(self, order: np.ndarray, count: int) -> None:
        f, N = self.fused, self.full.B
        for first in range(0, count, FUSED_CHUNK):   # chunks: progress and Ctrl-C stay live
            n = min(FUSED_CHUNK, count - first)
            try:
                losses = f.run(self.theta, order, first, n)
            except fused.FusedError as e:
                done = e.batch - first if e.kind == "diverged" else 0
                self._bulk_after_steps(f.losses[first:first + done], first, done, order, N)
                f.sync()
                if e.kind == "index":
                    raise e.index_error from None
                value = float(f.losses[e.batch])
                raise self._diverged(value if not math.isfinite(value)
                                     else "is finite but its gradient overflowed") from None
            self._bulk_after_steps(losses, first, n, order, N)
        if self.callback is not None:    # it may look at the optimizer (its state, t)
            f.sync()
        self.loss = None

    def sync(self) -> None:
        """Hand the fused steps' optimizer state back to the optimizer object (done
        after every epoch only when a callback may look at it)."""
        if self.fused is not None:
            self.fused.sync()

    def _bulk_after_steps(self, losses, first: int, n: int, order, N: int) -> None:
        if not n:
            return
        bs = self.fused.bs
        if self.progress is not None:     # the contract: a call after every step
            for k in range(n):
                rows = min(N, (first + k + 1) * bs) - (first + k) * bs
                self._after_step(float(losses[k]), rows)
            return
        rows = min(N, (first + n) * bs) - first * bs
        self.steps += n
        self.samples += rows
        values = losses[:n].tolist()
        self.step_losses.extend(values)
        # (ndarray.sum: np.sum's sum without its Python wrapper, 2x faster here)
        if self.mean:
            # every batch but the epoch's last holds bs rows; the last, the remainder
            last = min(N, (first + n) * bs) - (first + n - 1) * bs
            self.epoch_sum += float(losses[:n - 1].sum()) * bs + values[-1] * last
        else:
            self.epoch_sum += float(losses[:n].sum())
        self.epoch_rows += rows

    def verify_best(self) -> None:
        """With unverified bests: keep the latest whose full-data objective is finite."""
        if not self.unverified_best or self.best_epoch == 0:
            return
        candidates = [(self.best_theta.copy(), self.best_loss, self.best_epoch,
                       self.best_step)] + self.earlier_bests[::-1]
        for theta, loss, epoch, step in candidates:
            # (the gradient's code is there already; the loss alone may not be compiled)
            value, _ = self.model.checked_value_and_grad_flat(theta, self.full, None, self.g)
            if math.isfinite(value):
                break
        else:
            theta, epoch, step = self.initial
            loss = self.history[0]
        self.best_theta[...] = theta
        self.best_loss, self.best_epoch, self.best_step = loss, epoch, step

    def _monitored(self, loss: float) -> float:
        if self.val is None:
            return loss
        v = self._objective(self.val)
        self.val_history.append(v)
        return v

    def end_epoch(self, epoch, seconds, tol_grad, tol_loss, patience) -> None:
        if self.loss is None:
            from_batches = self.monitor == "batches" and self.epoch_rows
            if tol_grad is not None:
                self.loss, self.gnorm = self._full_value_and_grad()
            elif not from_batches:
                self.loss, self.gnorm = self._objective(self.full), None
            if from_batches:
                self.loss = (self.epoch_sum / self.epoch_rows if self.mean
                             else self.epoch_sum)
        self.epoch_sum, self.epoch_rows = 0.0, 0
        loss = self.loss
        if not math.isfinite(loss):
            raise self._diverged(loss, at_end=True)
        if self.gnorm is not None and not math.isfinite(self.gnorm):
            raise self._diverged("is finite but its gradient overflowed", at_end=True)
        self.epoch = epoch
        prev = self.history[-1]
        self.history.append(loss)
        monitored = self._monitored(loss)
        if monitored < self.best_loss:
            if self.unverified_best:
                self.earlier_bests = (self.earlier_bests + [(
                    self.best_theta.copy(), self.best_loss, self.best_epoch,
                    self.best_step)])[-KEPT_BESTS:]
            self.best_loss, self.best_epoch, self.best_step = monitored, epoch, self.steps
            self.since_best = 0
            self.best_theta[...] = self.theta
        else:
            self.since_best += 1
        if self.callback is not None:
            info = EpochInfo(epoch, self.total_epochs, self.steps, loss,
                             monitored if self.val is not None else None, self.best_loss,
                             self.opt.lr, seconds, self.samples, self.theta)
            if self.callback(info) is True:
                raise _Stop("callback", f"stopped by the callback after epoch {epoch}")
        if tol_grad is not None and self.gnorm <= tol_grad:
            raise _Stop("tol_grad", f"converged: the gradient norm is {self.gnorm:.3g} <= "
                                    f"{tol_grad:g} after epoch {epoch}")
        if tol_loss is not None and abs(prev - loss) <= tol_loss:
            raise _Stop("tol_loss", f"converged: the loss changed by {abs(prev - loss):.3g} "
                                    f"<= {tol_loss:g} in epoch {epoch}")
        if patience is not None and self.since_best >= patience:
            what = "validation loss" if self.val is not None else "loss"
            raise _Stop("early_stop", f"stopped early: the {what} has not improved for "
                                      f"{patience} epochs (best {self.best_loss:.6g} after "
                                      f"epoch {self.best_epoch})")


def _initial(model, init, seed) -> np.ndarray:
    if init is None:
        init = model.init_params(seed)
    if isinstance(init, dict):
        return model.pack_params(init)
    flat = np.array(init, dtype=model.dtype)     # a copy: training must not touch it
    if flat.shape != (model.n_params,):
        raise ValueError(f"init must be a dict of parameters or a flat vector of "
                         f"{model.n_params}, got shape {flat.shape}")
    return flat


def _n_samples(data) -> int:
    return len(next(iter(data.values()))) if data else 1


ALIGN_MAX_BYTES = 256 << 20   # training data up to this size is copied to aligned rows
ALIGN_MIN_EPOCHS = 8          # ... for runs of at least this many epochs


def _line_aligned(data: dict, taken: list) -> dict:
    """The training data with each input whose rows straddle cache lines copied to
    memory that starts on a line (see calls.misaligned_rows). Each epoch reads every
    row, in shuffled order for mini-batches: a 256-byte row 16 bytes into a line costs
    5 line fetches instead of 4 and splits every vector load (an Adam run on 4 MB of
    data: 14% less time in the fused steps). Arrays from NumPy start 16 bytes into a
    line as often as not. Up to ALIGN_MAX_BYTES in all: above that, the copy's memory
    would matter more than its time (an aligned array is used as it is). Only for
    runs of ALIGN_MIN_EPOCHS epochs or more: the copy costs some 7 epochs' gain in
    memory the process has used before (4 MB: 0.3 ms, against 45 us an epoch), which is
    where repeated runs (sweeps, notebooks) put it; in fresh memory, a process's first
    run, some 35 (1.7 ms of page faults and copying), a millisecond lost beside the
    process's start and the model's load. The copies go into scratch memory
    (runtime/scratch.py), which the next run reuses instead of faulting in new pages;
    the buffers are appended to `taken`, for the caller to give back."""
    from lossc.runtime.calls import aligned_copy, misaligned_rows
    fix = [k for k, a in data.items() if misaligned_rows(a)]
    if not fix or sum(data[k].nbytes for k in fix) > ALIGN_MAX_BYTES:
        return data

    def allocate(nbytes, dtype):
        taken.append(scratch.take(nbytes))
        return taken[-1][:nbytes]
    return {k: aligned_copy(a, allocate=allocate) if k in fix else a
            for k, a in data.items()}


def _split(model, data, validation, seed):
    """(train, validation, unchecked): dicts of arrays in the model's dtypes (or None,
    None), and whether the training arrays are still to be checked for NaN and infinity
    (data.check_finite: after the copy to aligned rows, which reads them anyway)."""
    if not model.inputs:
        if data:
            raise ValueError("the model has no inputs, so it takes no data; train it by "
                             "steps (steps=...)")
        if validation:
            raise ValueError("a model without inputs has no data to hold out for "
                             "validation")
        return None, None, False
    if data is None:
        raise ValueError("the model has inputs " + ", ".join(i.name for i in model.inputs)
                         + ": pass data= (a dict of arrays or a data file)")
    if isinstance(data, (str, pathlib.Path)):
        data = load_data(data, model)         # checked, naming the file's rows
        unchecked = False
    elif isinstance(data, dict):
        data = check_arrays(data, model, "data", finite=False)
        unchecked = True
    else:
        raise TypeError(f"data must be a dict of arrays or a file path, got "
                        f"{type(data).__name__}")
    # a float64 value beyond float32's range becomes infinite in a float32 model's data
    unchecked = unchecked or any(data[s.name].dtype.itemsize > model.dtype.itemsize
                                 for s in model.inputs if not s.is_int)
    # Converted once, so that each epoch's shuffled copy is already what the native
    # code reads and binding a batch copies nothing.
    with np.errstate(over="ignore"):
        data = {s.name: np.ascontiguousarray(data[s.name],
                                             dtype=np.int64 if s.is_int else model.dtype)
                for s in model.inputs}
    if not validation:
        return data, None, unchecked
    if unchecked:           # (the rows named as they were passed, before the split)
        check_finite(data, model, "data")
    n = _n_samples(data)
    n_val = int(round(validation * n))
    if n_val < 1 or n_val >= n:
        raise DataError(f"validation={validation} of {n} samples leaves "
                        f"{n - n_val} for training and {n_val} for validation; both need "
                        "at least one")
    # A generator of its own, so the split does not shift the epochs' shuffles.
    perm = np.random.default_rng([seed, 1]).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return ({k: a[train_idx] for k, a in data.items()},
            {k: a[val_idx] for k, a in data.items()}, False)
