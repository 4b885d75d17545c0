"""A training run's options, checked in one place, and the run's plan.

`TrainConfig` holds every option of `lossc.train` but the model, the data and the
optimizer, grouped by concern (the data and its batches, when to stop, what to record),
and checks them when it is made: each mistake a ValueError (or TypeError) naming the
option. `TrainConfig.plan(model, n_samples)` turns the options and the data's length
into the run's sizes (a `Plan`): the training and validation samples, the batch size,
the steps an epoch, the epochs, the step limit and the patience, with the defaults
filled in. The driver runs by that plan, and `lossc train` prints it before the run.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

import numpy as np

from lossc.optim import schedules as _schedules
from lossc.optim.data import DataError
from lossc.optim.freeze import frozen_names

DEFAULT_EPOCHS = 10       # data models, when neither epochs nor steps is given
DEFAULT_STEPS = 1000      # models without inputs
DEFAULT_PATIENCE = 5      # with a validation split
MONITORS = ("full", "batches")


@dataclass(frozen=True)
class TrainConfig:
    """The options of a training run (see lossc.optim.driver.train for each one's
    meaning). Made with keywords; checked and normalized when made: counts become ints,
    tolerances floats, hypers a new dict, schedule a callable."""

    # the data and its batches
    batch_size: Optional[int] = 64          # None or 0: the whole training set a step
    validation: Optional[float] = None      # the fraction of samples held out
    val_data: Any = None                    # or a validation set of its own
    shuffle: bool = True
    seed: int = 0                           # initial parameters, shuffles, the split
    hypers: dict = field(default_factory=dict)
    init: Any = None                        # initial parameters: a dict or flat vector
    freeze: Any = ()                        # names of parameters kept at their initial values
    # when to stop
    epochs: Optional[int] = None
    steps: Optional[int] = None
    tol_grad: Optional[float] = None
    tol_loss: Optional[float] = None
    patience: Optional[int] = None
    schedule: Optional[Callable] = None     # lr(base_lr, k); None: constant
    # what to record and whom to tell
    monitor: str = "full"
    callback: Optional[Callable] = None     # callback(EpochInfo) after each epoch
    progress: Optional[Callable] = None     # progress(step, epoch, loss, rows) each step

    def __post_init__(self):
        set_ = object.__setattr__      # (the fields are frozen once checked)
        set_(self, "hypers", finite_hypers(self.hypers))
        set_(self, "freeze", frozen_names(self.freeze))
        schedule = self.schedule if self.schedule is not None else _schedules.Constant()
        if not callable(schedule):
            raise TypeError("schedule must be a callable lr(base_lr, k), e.g. "
                            "lossc.optim.schedules.cosine()")
        set_(self, "schedule", schedule)
        for name in ("epochs", "steps", "patience"):
            set_(self, name, count(name, getattr(self, name), 1))
        set_(self, "batch_size", count("batch_size", self.batch_size, 0,
                                       "a positive integer (or None/0 for the whole data set)"))
        # (None, as NumPy's, draws a seed from the operating system)
        set_(self, "seed", count("seed", self.seed, 0, "an integer >= 0 (or None)"))
        for name in ("tol_grad", "tol_loss"):
            set_(self, name, tolerance(name, getattr(self, name)))
        for name in ("callback", "progress"):
            f = getattr(self, name)
            if f is not None and not callable(f):
                raise TypeError(f"{name} must be a function or None, got {f!r}")
        set_(self, "shuffle", flag("shuffle", self.shuffle))
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}")
        v = self.validation
        if v is not None and not is_real(v):
            raise TypeError(f"validation is the fraction of the data to hold out, got "
                            f"{type(v).__name__}; pass a validation set of its own as "
                            "val_data=")
        if v is not None and not 0 <= v < 1:
            raise ValueError(f"validation must be a fraction between 0 and 1, got {v!r}")
        if v and self.val_data is not None:
            raise ValueError("validation= and val_data= are exclusive: hold out a fraction "
                             "of the data, or give a validation set, not both")

    @classmethod
    def from_options(cls, options: dict) -> "TrainConfig":
        """A TrainConfig from keyword options, an unknown name a TypeError that lists
        the known ones (a misspelt option must not be ignored)."""
        known = [f.name for f in fields(cls)]
        for name in options:
            if name not in known:
                raise TypeError(f"train() got an unexpected option {name!r}; the options "
                                f"are {', '.join(known)}")
        return cls(**options)

    def plan(self, model, n_samples: int, n_val: Optional[int] = None,
             chunk_sizes: Optional[tuple] = None) -> "Plan":
        """The run's sizes for `model` (anything with `.inputs`) on n_samples samples
        (before the validation split; ignored for a model without inputs), or, with a
        validation set of its own (val_data), n_samples to train on and n_val to
        validate on. A split that leaves either side empty is a DataError. chunk_sizes:
        the training rows per partition of chunked data (lossc.optim.chunked), whose
        mini-batch epochs take each partition's batches, its last the remainder."""
        return make_plan(bool(model.inputs), n_samples, self, n_val, chunk_sizes)

    def schedule_for(self, plan: "Plan") -> Callable:
        """The schedule, a cosine without T_max annealing over the planned epochs."""
        if isinstance(self.schedule, _schedules.Cosine):
            return self.schedule.over(plan.epochs)
        return self.schedule


@dataclass(frozen=True)
class Plan:
    """The sizes of a run, defaults filled in."""

    n_train: int             # samples trained on (1 for a model without inputs)
    n_val: int               # samples held out for validation
    full_batch: bool         # batch descent: one step an epoch on the whole training set
    batch_size: int          # rows a step (n_train in batch descent)
    per_epoch: int           # steps an epoch
    epochs: int              # epochs the run takes at most
    steps: Optional[int]     # the step limit, if any
    patience: Optional[int]  # epochs without a new best before stopping, if any

    @property
    def total_steps(self) -> int:
        """The steps the run takes at most."""
        return self.steps if self.steps is not None else self.epochs * self.per_epoch


# the random streams a run draws besides the initial parameters' and the shuffles'
SPLIT_STREAM, PARTITION_STREAM = 1, 2


def stream_rng(seed: Optional[int], stream: int) -> np.random.Generator:
    """A generator of its own for one of a run's random streams (the validation split,
    chunked data's partitions), so that it does not shift the epochs' shuffles: from
    (seed, stream), or from the operating system's entropy for seed None."""
    return np.random.default_rng(None if seed is None else [seed, stream])


def split_sizes(n: int, validation: Optional[float]) -> tuple[int, int]:
    """(training, validation) samples of n with `validation` held out: both at least
    one, else a DataError."""
    if not validation:
        return n, 0
    n_val = int(round(validation * n))
    if n_val < 1 or n_val >= n:
        raise DataError(f"validation={validation} of {n} samples leaves "
                        f"{n - n_val} for training and {n_val} for validation; both need "
                        "at least one")
    return n - n_val, n_val


def make_plan(has_inputs: bool, n_samples: int, config: TrainConfig,
              n_val: Optional[int] = None, chunk_sizes: Optional[tuple] = None) -> Plan:
    if not has_inputs:
        n, n_val = 1, 0
    elif n_val is not None:
        n = n_samples
    else:
        n, n_val = split_sizes(n_samples, config.validation)
    batch_size, epochs, steps = config.batch_size, config.epochs, config.steps
    full_batch = not has_inputs or not batch_size or batch_size >= n
    bs = n if full_batch else batch_size
    per_epoch = math.ceil(n / bs)
    if chunk_sizes and not full_batch:
        per_epoch = sum(math.ceil(c / bs) for c in chunk_sizes)
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
    patience = config.patience
    if patience is None and n_val:
        patience = DEFAULT_PATIENCE
    return Plan(n, n_val, full_batch, bs, per_epoch, total_epochs, steps, patience)


def is_real(v) -> bool:
    """A real number (a Python or NumPy int or float, not a bool)."""
    if type(v) is int or type(v) is float:      # (the common case, without NumPy's test)
        return True
    return isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_)) \
        and np.isrealobj(v)


def flag(name: str, v) -> bool:
    """An option that is True or False (a NumPy bool too); a ValueError naming it for
    anything else: bool() would take the string "no" for True."""
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def count(name: str, v, minimum: int, what: str = "a positive integer"):
    """v as an int (None stays None): an integer, or a float with a whole value, of at
    least `minimum`; else a ValueError naming the argument."""
    if v is None:
        return None
    if is_real(v) and math.isfinite(v) and v == int(v) and v >= minimum:
        return int(v)
    raise ValueError(f"{name} must be {what}, got {v!r}")


def tolerance(name: str, v) -> Optional[float]:
    if v is None:
        return None
    if is_real(v) and v >= 0:          # (NaN fails this)
        return float(v)
    raise ValueError(f"{name} must be a number >= 0, got {v!r}")


def finite_hypers(hypers) -> dict:
    """The run's hyperparameters, each a finite number: a NaN or an infinity would make
    every objective of the run NaN, reported as a divergence at the first step."""
    hypers = dict(hypers or {})
    for name, v in hypers.items():
        a = np.asarray(v)
        if a.shape == () and a.dtype.kind in "biuf" and not np.isfinite(a):
            raise ValueError(f"hypers: {name!r} must be a finite number, got {v!r}")
    return hypers
