"""Learning-rate schedules: a factor applied to the optimizer's base rate, stepped once
per epoch (per step for models trained by steps), as PyTorch's LR schedulers are.

    constant            1
    step(size, gamma)   gamma ^ floor(k / size)
    exponential(gamma)  gamma ^ k
    cosine(T, floor)    floor + (1 - floor) (1 + cos(pi min(k, T) / T)) / 2
                        (floor as a fraction of the base rate)
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    def __call__(self, k: int) -> float:
        return 1.0


@dataclass(frozen=True)
class Step:
    size: int
    gamma: float = 0.1

    def __call__(self, k: int) -> float:
        return self.gamma ** (k // self.size)


@dataclass(frozen=True)
class Exponential:
    gamma: float

    def __call__(self, k: int) -> float:
        return self.gamma ** k


@dataclass(frozen=True)
class Cosine:
    T: int
    floor: float = 0.0

    def __call__(self, k: int) -> float:
        return self.floor + (1 - self.floor) * (1 + math.cos(math.pi * min(k, self.T) / self.T)) / 2


def parse_schedule(text: str | None, length: int):
    """'constant', 'step:10:0.5', 'exponential:0.95', 'cosine' (over the run's length)
    or 'cosine:T:floor', as the command line writes them."""
    if not text or text == "constant":
        return Constant()
    name, *args = text.split(":")
    try:
        nums = [float(a) for a in args]
        if name == "step":
            return Step(int(nums[0]), nums[1] if len(nums) > 1 else 0.1)
        if name == "exponential":
            return Exponential(nums[0])
        if name == "cosine":
            return Cosine(int(nums[0]) if nums else max(length, 1), nums[1] if len(nums) > 1 else 0.0)
    except (IndexError, ValueError):
        pass
    raise ValueError(f"bad schedule {text!r}: use constant, step:SIZE[:GAMMA], "
                     "exponential:GAMMA or cosine[:T[:FLOOR]]")
