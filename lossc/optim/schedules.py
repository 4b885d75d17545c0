"""Learning-rate schedules: the rate to use at the k-th period, from the base rate.

A schedule is a callable `lr(base_lr, k)`. The driver calls it at the start of each
epoch (k = 0, 1, ...), as PyTorch's LR schedulers are usually stepped; a model without
inputs trains by steps, and there every step is an epoch, so k counts steps. The
formulas are PyTorch's closed forms:

    constant()                 base_lr
    step(step_size, gamma)     base_lr * gamma ^ floor(k / step_size)        (StepLR)
    exponential(gamma)         base_lr * gamma ^ k                           (ExponentialLR)
    cosine(T_max, eta_min)     eta_min + (base_lr - eta_min) (1 + cos(pi k / T_max)) / 2
                               for k <= T_max, and eta_min after     (CosineAnnealingLR)

PyTorch's cosine rises again after T_max (a periodic schedule); here it stays at eta_min,
which is what a run longer than T_max wants. `cosine()` without T_max anneals over the
whole run (the driver fills in its length).

A rate must be a finite number >= 0 (`valid_lr`); the driver stops a run whose schedule
gives anything else. The schedules here check their arguments when made, so that
theirs never do.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional


def valid_lr(lr) -> bool:
    """Whether lr is a learning rate a schedule may give: a finite number >= 0."""
    # (a float, the common case, without the ABC's isinstance)
    if type(lr) is not float and (not isinstance(lr, numbers.Real) or isinstance(lr, bool)):
        return False
    return math.isfinite(lr) and lr >= 0


def _need(ok: bool, schedule: str, name: str, what: str, value) -> None:
    if not ok:
        raise ValueError(f"{schedule} schedule: {name} must be {what}, got {value!r}")


def _power(gamma: float, n: int) -> float:
    """gamma ^ n, infinite where that overflows a float (a rate the driver stops on,
    where Python's power raises OverflowError)."""
    try:
        return gamma ** n
    except OverflowError:
        return math.inf


def _whole(v) -> bool:
    return (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            and v == int(v) and v >= 1)


@dataclass(frozen=True)
class Constant:
    def __call__(self, base_lr: float, k: int) -> float:
        return base_lr


@dataclass(frozen=True)
class Step:
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        _need(_whole(self.step_size), "step", "step_size", "an integer >= 1", self.step_size)
        _need(valid_lr(self.gamma), "step", "gamma", "a finite number >= 0", self.gamma)

    def __call__(self, base_lr: float, k: int) -> float:
        return base_lr * _power(self.gamma, k // self.step_size)


@dataclass(frozen=True)
class Exponential:
    gamma: float

    def __post_init__(self):
        _need(valid_lr(self.gamma), "exponential", "gamma", "a finite number >= 0",
              self.gamma)

    def __call__(self, base_lr: float, k: int) -> float:
        return base_lr * _power(self.gamma, k)


@dataclass(frozen=True)
class Cosine:
    T_max: Optional[int] = None     # None: the length of the run
    eta_min: float = 0.0

    def __post_init__(self):
        _need(self.T_max is None or _whole(self.T_max), "cosine", "T_max",
              "an integer >= 1", self.T_max)
        _need(valid_lr(self.eta_min), "cosine", "eta_min", "a finite number >= 0",
              self.eta_min)

    def __call__(self, base_lr: float, k: int) -> float:
        T = self.T_max or 1
        k = min(k, T)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * k / T)) / 2

    def over(self, length: int) -> "Cosine":
        """This schedule with T_max set to `length` if it had none."""
        return self if self.T_max is not None else Cosine(max(1, length), self.eta_min)


def constant() -> Constant:
    return Constant()


def step(step_size: int, gamma: float = 0.1) -> Step:
    s = Step(step_size, gamma)          # (checked as given, then made an int, a float)
    return Step(int(s.step_size), float(s.gamma))


def exponential(gamma: float) -> Exponential:
    return Exponential(float(Exponential(gamma).gamma))


def cosine(T_max: Optional[int] = None, eta_min: float = 0.0) -> Cosine:
    c = Cosine(T_max, eta_min)
    return Cosine(None if T_max is None else int(c.T_max), float(c.eta_min))


def parse(text: Optional[str]):
    """A schedule from its command-line spelling: constant, step:SIZE[:GAMMA],
    exponential:GAMMA, cosine[:T_MAX[:ETA_MIN]]."""
    if text is None or text == "constant":     # ("" is a mistake, not a schedule)
        return Constant()
    name, *args = text.split(":")

    factor = float      # (the schedules check their factors and floors by name)
    try:
        if name == "step" and 1 <= len(args) <= 2:
            return step(int(args[0]), *map(factor, args[1:]))
        if name == "exponential" and len(args) == 1:
            return exponential(factor(args[0]))
        if name == "cosine" and len(args) <= 2:
            return cosine(int(args[0]) if args else None, *map(factor, args[1:]))
    except ValueError as e:
        if "schedule:" in str(e):
            raise
    raise ValueError(f"bad schedule {text!r}: use constant, step:SIZE[:GAMMA], "
                     "exponential:GAMMA or cosine[:T_MAX[:ETA_MIN]]")
