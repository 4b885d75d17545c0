"""What a training run records and when it stops: the step log and the monitor.

`StepLog` counts the steps and the samples they used, keeps each step's batch
objective, combines an epoch's batch objectives as one call over them would (for
monitor="batches"), and calls the `progress` hook after each step. `Monitor` keeps the
epochs' history (training and validation objectives, learning rates), the best
parameters seen, and applies the stopping rules: each ends the run by raising `Stop`
with the reason, as a word and as a sentence. Neither computes an objective: the driver
hands them numbers (and the validation pass as a callable, run only when needed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from lossc.optim import schedules as _schedules

KEPT_BESTS = 3            # earlier bests kept to fall back on, with monitor="batches"


def asks_to_stop(answer) -> bool:
    """Whether a callback's return value asks the run to stop: True, Python's or
    NumPy's (a comparison of NumPy numbers gives numpy.bool_); any other value, a
    number or None among them, does not."""
    return answer is True or (isinstance(answer, np.bool_) and bool(answer))


class Stop(Exception):
    """The run stops: `stopped` is the reason's word (TrainResult.stopped), `reason`
    the sentence."""

    def __init__(self, stopped: str, reason: str):
        super().__init__(reason)
        self.stopped, self.reason = stopped, reason


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


class StepLog:
    def __init__(self, mean: bool, progress: Optional[Callable] = None,
                 epoch_rows: int = 0):
        self.mean = mean              # the objective is a mean over the batch (not a sum)
        self.progress = progress      # progress(step, epoch, batch objective, rows)
        self.full_epoch_rows = epoch_rows    # the rows of a whole epoch (0: not known)
        self.steps = self.samples = 0
        self.epoch = 0                # epochs completed (the monitor moves it on)
        self.step_losses = []
        # this epoch's batch objectives: (weighted) sum, rows
        self.epoch_sum, self.epoch_rows = 0.0, 0

    def record(self, value: float, rows: int) -> None:
        """One step on `rows` samples, whose batch objective was `value`."""
        self.steps += 1
        self.samples += rows
        self.step_losses.append(value)
        self.epoch_sum += value * rows if self.mean else value
        self.epoch_rows += rows
        if self.progress is not None:
            self.progress(self.steps, self.epoch, value, rows)

    def record_batches(self, losses, first: int, n: int, bs: int, N: int) -> None:
        """n steps on the batches first .. first+n-1 of an epoch over N samples in
        batches of bs (the last holding the remainder), their objectives losses[:n]."""
        if not n:
            return
        if self.progress is not None:     # the contract: a call after every step
            def rows_of(k):
                return min(N, (first + k + 1) * bs) - (first + k) * bs
            for k in range(n):
                try:
                    self.record(float(losses[k]), rows_of(k))
                except BaseException:
                    # (a Ctrl-C, or the hook's own error: the native code has taken
                    # every step, so the rest are counted before it goes on)
                    hook, self.progress = self.progress, None
                    try:
                        for j in range(k + 1, n):
                            self.record(float(losses[j]), rows_of(j))
                    finally:
                        self.progress = hook
                    raise
            return
        rows = min(N, (first + n) * bs) - first * bs
        self.steps += n
        self.samples += rows
        values = losses[:n].tolist()
        self.step_losses.extend(values)
        # (ndarray.sum: without np.sum's Python wrapper, which costs more than the sum)
        if self.mean:
            # every batch but the epoch's last holds bs rows; the last, the remainder
            last = min(N, (first + n) * bs) - (first + n - 1) * bs
            self.epoch_sum += float(losses[:n - 1].sum()) * bs + values[-1] * last
        else:
            self.epoch_sum += float(losses[:n].sum())
        self.epoch_rows += rows

    def end_epoch(self) -> Optional[float]:
        """The epoch's batch objectives combined as one call over their rows would
        combine them (the mean weighted by rows, or the sum), None if it took no step;
        the next epoch starts from zero."""
        rows, total = self.epoch_rows, self.epoch_sum
        self.epoch_sum, self.epoch_rows = 0.0, 0
        if not rows:
            return None
        if self.mean:
            return total / rows
        # a sum over an epoch cut short (by steps=) is scaled to a whole epoch's rows,
        # to compare with the whole epochs' sums
        whole = self.full_epoch_rows
        return total * (whole / rows) if 0 < rows < whole else total


class Monitor:
    """The history, the bests and the stopping rules of a run.

    judged_by_batches: epochs are judged by their batches' objectives (monitor="batches"
    without a validation split), not by the parameters they end with; those parameters
    are then unverified, and the bests before them are kept to fall back on (see
    verify_best). ties_rtol: an epoch whose monitored value exceeds the best's by at
    most this much relative is the new best (a full-batch method's line search judges
    values that close by their slopes, as rounding, and accepts a step that the slopes
    say descends: the later point is the better by its gradient); None: on a tie the
    earlier one stays."""

    def __init__(self, theta: np.ndarray, log: StepLog, *, validated: bool,
                 judged_by_batches: bool, total_epochs: int,
                 ties_rtol: Optional[float] = None,
                 tol_grad: Optional[float] = None, tol_loss: Optional[float] = None,
                 patience: Optional[int] = None, callback: Optional[Callable] = None):
        self.log = log
        self.validated = validated
        self.judged_by_batches = judged_by_batches
        self.unverified_best = judged_by_batches and not validated
        self.ties_rtol = ties_rtol
        self.total_epochs = total_epochs
        self.tol_grad, self.tol_loss, self.patience = tol_grad, tol_loss, patience
        self.callback = callback
        self.history, self.val_history, self.lr = [], [], []
        self.best_theta = theta.copy()
        self.best_loss = math.inf
        self.best_epoch = self.best_step = self.since_best = 0
        self.earlier_bests = []
        self.initial = (theta.copy(), 0, 0)

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.log.epoch

    def start(self, loss: float, validate: Callable[[], float]) -> None:
        """The objective at the initial parameters (and the validation pass's, run by
        `validate` when there is a split)."""
        self.history.append(loss)
        if not math.isfinite(loss):
            raise Stop("diverged", f"the loss is {loss} at the initial parameters; "
                                   "check the data, the hyperparameters and the initial "
                                   "values")
        self.best_loss = self._monitored(loss, validate)
        if not math.isfinite(self.best_loss):
            raise Stop("diverged", f"the validation loss is {self.best_loss} at the "
                                   "initial parameters")

    def begin_epoch(self, epoch: int, lr) -> float:
        """The learning rate a schedule gave for epoch `epoch` (from 0), as a float, if
        it is a finite number >= 0 (else Stop, "bad_lr")."""
        # (a number as it is, not float(lr): float would take "0.1" and raise on None)
        if not _schedules.valid_lr(lr):
            shown = (float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool)
                     else repr(lr))
            raise Stop("bad_lr", f"the schedule gave the learning rate {shown} for epoch "
                                 f"{epoch + 1} (it must be a finite number >= 0); training "
                                 f"stopped and the best parameters so far are kept")
        lr = float(lr)
        self.lr.append(lr)
        return lr

    def diverged(self, value, at_end: bool = False, counted: bool = False) -> Stop:
        """The Stop for a non-finite objective (a float) or what else `value` says,
        at the current step or (at_end) at the end of the current epoch (`counted`:
        the epoch is already counted as done)."""
        steps, epoch = self.log.steps, self.epoch - counted
        where = (f"after step {steps} (end of epoch {epoch + 1})" if at_end else
                 f"at step {steps + 1} (epoch {epoch + 1})")
        what = f"became {value}" if isinstance(value, float) else value
        return Stop("diverged", f"the loss {what} {where}; training stopped and the best "
                                f"parameters so far are kept. Try a smaller learning rate "
                                f"(it was {self.lr[-1]:g})")

    def interrupted(self) -> Stop:
        return Stop("interrupted", f"interrupted at step {self.log.steps + 1} (epoch "
                                   f"{self.epoch + 1}); the best parameters so far are kept")

    def end_epoch(self, loss: float, gnorm: Optional[float], theta: np.ndarray,
                  validate: Callable[[], float], seconds: float) -> None:
        """After an epoch: its training objective `loss` (and the gradient norm, if it
        was computed) at `theta`. Records them, runs the validation pass, keeps a new
        best, calls the callback, and raises Stop if a stopping rule says so."""
        if not math.isfinite(loss):
            raise self.diverged(loss, at_end=True)
        if gnorm is not None and not math.isfinite(gnorm):
            raise self.diverged("is finite but its gradient overflowed", at_end=True)
        self.log.epoch += 1
        epoch = self.epoch
        prev = self.history[-1]
        self.history.append(loss)
        monitored = self._monitored(loss, validate)
        if (self.validated and self.judged_by_batches and not math.isfinite(monitored)
                and len(self.val_history) > 1 and math.isfinite(self.val_history[-2])):
            # (monitor="batches" judged the epoch by finite batch objectives; its last
            # steps made the parameters' objective on held-out data non-finite)
            raise self.diverged(f"is finite, but the validation objective became "
                                f"{monitored}", at_end=True, counted=True)
        self._keep_best(monitored, epoch, theta)
        if self.callback is not None:
            info = EpochInfo(epoch, self.total_epochs, self.log.steps, loss,
                             monitored if self.validated else None, self.best_loss,
                             self.lr[-1], seconds, self.log.samples, theta)
            if asks_to_stop(self.callback(info)):
                raise Stop("callback", f"stopped by the callback after epoch {epoch}")
        self._check_rules(prev, loss, gnorm, epoch)

    def _monitored(self, loss: float, validate) -> float:
        """The value that judges an epoch: the validation objective, if any."""
        if not self.validated:
            return loss
        v = validate()
        self.val_history.append(v)
        return v

    def _keep_best(self, monitored: float, epoch: int, theta: np.ndarray) -> None:
        if monitored < self.best_loss or self._ties_best(monitored):
            if self.unverified_best:
                self.earlier_bests = (self.earlier_bests + [(
                    self.best_theta.copy(), self.best_loss, self.best_epoch,
                    self.best_step)])[-KEPT_BESTS:]
            self.best_loss, self.best_epoch, self.best_step = monitored, epoch, self.log.steps
            self.since_best = 0
            self.best_theta[...] = theta
        else:
            self.since_best += 1

    def _ties_best(self, monitored: float) -> bool:
        """Whether `monitored` (not below the best) ties the best within ties_rtol."""
        if self.ties_rtol is None:
            return False
        return monitored - self.best_loss <= self.ties_rtol * max(abs(monitored),
                                                                  abs(self.best_loss))

    def _check_rules(self, prev: float, loss: float, gnorm, epoch: int) -> None:
        tol_grad, tol_loss, patience = self.tol_grad, self.tol_loss, self.patience
        if tol_grad is not None and gnorm <= tol_grad:
            raise Stop("tol_grad", f"converged: the gradient norm is {gnorm:.3g} <= "
                                   f"{tol_grad:g} after epoch {epoch}")
        if tol_loss is not None and abs(prev - loss) <= tol_loss:
            raise Stop("tol_loss", f"converged: the loss changed by {abs(prev - loss):.3g} "
                                   f"<= {tol_loss:g} in epoch {epoch}")
        if patience is not None and self.since_best >= patience:
            what = "validation loss" if self.validated else "loss"
            raise Stop("early_stop", f"stopped early: the {what} has not improved for "
                                     f"{patience} epochs (best {self.best_loss:.6g} after "
                                     f"epoch {self.best_epoch})")

    def verify_best(self, is_finite_at: Callable[[np.ndarray], bool]) -> None:
        """With unverified bests: keep the latest whose training objective is finite
        (`is_finite_at(theta)` says), else the initial parameters."""
        if not self.unverified_best or self.best_epoch == 0:
            return
        candidates = [(self.best_theta.copy(), self.best_loss, self.best_epoch,
                       self.best_step)] + self.earlier_bests[::-1]
        for theta, loss, epoch, step in candidates:
            if is_finite_at(theta):
                break
        else:
            theta, epoch, step = self.initial
            loss = self.history[0]
        self.best_theta[...] = theta
        self.best_loss, self.best_epoch, self.best_step = loss, epoch, step
