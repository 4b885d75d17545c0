"""The training driver: a compiled model's gradient, an optimizer, and data in batches.

Descent modes: batch (batch_size=None: the whole data set each step), mini-batch (the
default, 64), stochastic (batch_size=1). Samples are reshuffled every epoch from
`seed`, so a run is reproducible bit for bit; the last batch of an epoch holds the
remainder (it is not dropped). A model with no inputs (Rosenbrock, say) trains by
steps on its own objective.

The best parameters seen are kept: by the full training objective at the end of each
epoch (by the validation objective when `validation` holds out a fraction). A run that
diverges (a loss or gradient that is NaN or infinite), or is interrupted with Ctrl-C,
stops and returns those best parameters with the reason.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from lossc.optim.optimizers import Adam, Optimizer
from lossc.optim.schedules import Constant
from lossc.runtime.model import BoundArgs


@dataclass
class TrainResult:
    params: dict                      # the best parameters found
    # history[k]: the objective on the training data after k epochs (history[0]: at the
    # start); val_history likewise on the validation split, if any
    history: list = field(default_factory=list)
    val_history: list = field(default_factory=list)
    step_losses: list = field(default_factory=list)    # every mini-batch's objective
    best_loss: float = math.inf
    best_epoch: int = 0
    best_step: int = 0
    steps: int = 0
    epochs: int = 0
    stopped: str = "finished"         # finished, converged, early-stop, diverged, interrupted
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stopped not in ("diverged", "interrupted")


def train(model, data: Optional[dict] = None, optimizer: Optional[Optimizer] = None,
          batch_size: Optional[int] = 64, epochs: Optional[int] = None,
          steps: Optional[int] = None, seed: int = 0, hypers: Optional[dict] = None,
          schedule: Callable[[int], float] = Constant(), tol_grad: Optional[float] = None,
          tol_loss: Optional[float] = None, validation: Optional[float] = None,
          patience: int = 5, init: Optional[dict] = None, shuffle: bool = True,
          callback: Optional[Callable] = None, progress: Optional[Callable] = None) -> TrainResult:
    """Train `model` and return a TrainResult with the best parameters.

    Stops after `epochs` epochs or `steps` optimizer steps (whichever comes first; with
    neither, 10 epochs, or 1000 steps for a model without inputs), or earlier when the
    full-data gradient norm falls below `tol_grad`, the objective changes by less than
    `tol_loss` between epochs, or the validation objective has not improved for
    `patience` epochs. `callback(epoch, loss, params)` runs after every epoch and may
    return False to stop; `progress(step, epoch, loss, samples)` after every step.
    """
    optimizer = optimizer or Adam()
    base_lr = optimizer.lr
    theta = model.pack_params(init if init is not None else model.init_params(seed))
    theta = theta.astype(model.dtype, copy=False)
    result = TrainResult(params=model.unpack_params(theta))
    start = time.perf_counter()
    if model.inputs:
        if not data:
            raise ValueError(f"the model has inputs {[i.name for i in model.inputs]}: "
                             "training needs data")
        train_set, val_set = _split(model, data, hypers, validation, seed)
        if epochs is None and steps is None:
            epochs = 10
    else:
        if data:
            raise ValueError("the model has no inputs: train it without data")
        train_set, val_set = model.bind({}, hypers), None
        if epochs is None and steps is None:
            steps = 1000
        batch_size = None
    try:
        _run(model, optimizer, base_lr, theta, train_set, val_set, batch_size, epochs, steps,
             seed, schedule, tol_grad, tol_loss, patience, shuffle, callback, progress,
             result)
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        result.message = f"interrupted at step {result.steps}; kept the best parameters"
    finally:
        optimizer.lr = base_lr
        result.seconds = time.perf_counter() - start
    return result


def _split(model, data, hypers, validation, seed):
    full = model.bind(data, hypers)
    if not validation:
        return full, None
    if not 0 < validation < 1:
        raise ValueError(f"validation must be a fraction between 0 and 1, got {validation}")
    n_val = max(1, int(round(full.B * validation)))
    if n_val >= full.B:
        raise ValueError("the validation split leaves no training data")
    order = np.random.default_rng([seed, 1]).permutation(full.B)
    take = lambda idx: BoundArgs(model, [a[idx] for a in full.arrays], len(idx), full.hypers)
    return take(np.sort(order[n_val:])), take(np.sort(order[:n_val]))


def _run(model, opt, base_lr, theta, train_set, val_set, batch_size, epochs, steps, seed,
         schedule, tol_grad, tol_loss, patience, shuffle, callback, progress, result):
    rng = np.random.default_rng(seed)
    N = train_set.B
    by_steps = not model.inputs
    bs = N if not batch_size or batch_size >= N else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    grad = np.empty(model.n_params, dtype=model.dtype)

    def evaluate(bound):
        return model.loss_flat(theta, bound)

    def consider(loss: float, epoch: int):
        if math.isfinite(loss) and loss < result.best_loss:
            result.best_loss, result.best_epoch, result.best_step = loss, epoch, result.steps
            result.params = model.unpack_params(theta)

    monitor = val_set if val_set is not None else train_set
    initial = evaluate(train_set)
    result.history.append(initial)
    if val_set is not None:
        result.val_history.append(evaluate(val_set))
    consider(result.val_history[0] if val_set is not None else initial, 0)
    prev, since_best, epoch = None, 0, 0
    while True:
        if epochs is not None and epoch >= epochs:
            break
        if steps is not None and result.steps >= steps:
            break
        opt.lr = base_lr * schedule(epoch)
        order = rng.permutation(N) if shuffle and bs < N else None
        batch_losses = []
        for lo in range(0, N, bs):
            if steps is not None and result.steps >= steps:
                break
            if bs == N:
                batch = train_set
            else:
                idx = order[lo:lo + bs] if order is not None else np.arange(lo, min(lo + bs, N))
                batch = BoundArgs(model, [a[idx] for a in train_set.arrays], len(idx),
                                  train_set.hypers)
            loss, _ = model.value_and_grad_flat(theta, batch, grad_out=grad)
            result.steps += 1
            if not math.isfinite(loss) or not np.all(np.isfinite(grad)):
                what = "loss" if not math.isfinite(loss) else "gradient"
                result.stopped = "diverged"
                result.message = (f"the {what} became {loss if what == 'loss' else 'non-finite'}"
                                  f" at step {result.steps} (epoch {epoch + 1}); try a smaller "
                                  f"learning rate (now {opt.lr:g}); kept the best parameters")
                return
            opt.step(theta, grad)
            batch_losses.append(loss)
            result.step_losses.append(loss)
            if progress is not None:
                progress(result.steps, epoch, loss, batch.B)
            if by_steps:
                consider(evaluate(monitor), epoch)
                opt.lr = base_lr * schedule(result.steps)
        epoch += 1
        if by_steps:          # a model without data has steps, not epochs
            if steps is None or result.steps >= steps:
                break
            continue
        result.epochs = epoch
        train_loss, full_grad = model.value_and_grad_flat(theta, train_set)
        result.history.append(train_loss)
        if not math.isfinite(train_loss):
            result.stopped = "diverged"
            result.message = (f"the loss became {train_loss} after epoch {epoch}; try a smaller "
                              f"learning rate (now {opt.lr:g}); kept the best parameters")
            return
        if val_set is not None:
            val_loss = evaluate(val_set)
            result.val_history.append(val_loss)
            improved = val_loss < result.best_loss
            consider(val_loss, epoch)
            since_best = 0 if improved else since_best + 1
            if since_best >= patience:
                result.stopped = "early-stop"
                result.message = (f"validation loss did not improve for {patience} epochs; "
                                  f"best at epoch {result.best_epoch}")
                return
        else:
            consider(train_loss, epoch)
        if tol_grad is not None and float(np.linalg.norm(full_grad)) < tol_grad:
            result.stopped, result.message = "converged", f"gradient norm below {tol_grad:g}"
            return
        if tol_loss is not None and prev is not None and abs(prev - train_loss) < tol_loss:
            result.stopped, result.message = "converged", f"loss changed by less than {tol_loss:g}"
            return
        prev = train_loss
        if callback is not None and callback(epoch, train_loss, model.unpack_params(theta)) is False:
            result.stopped, result.message = "finished", "stopped by the callback"
            return
    if by_steps:
        result.history.append(evaluate(monitor))
