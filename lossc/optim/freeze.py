"""Frozen parameters: those a training run leaves at their initial values (freeze=).

A frozen parameter's gradient is taken as 0 in every step (so it counts for nothing in
gradient clipping's norm, in tol_grad's or in a line search), its L1 weight as 0 (its
term of an optimizer's l1= penalty is a constant of the run), and after each step it is
put back as it was, so that what moves it besides its gradient (weight decay, an L1
step) leaves it too: it ends the run bit for bit as it started. The native steps
(codegen/fused.py) do the same, reading the byte mask `Frozen.bytes`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def frozen_names(names) -> tuple:
    """freeze= as a tuple of names (one name may be given as a string); a TypeError
    for anything else."""
    if names is None:
        return ()
    if isinstance(names, str):
        return (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(f"freeze must be a list of parameter names, got "
                        f"{type(names).__name__}") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"freeze must be a list of parameter names, got "
                            f"{type(name).__name__} {name!r} in it")
    return names


def check_frozen(model, names: tuple) -> None:
    """A ValueError naming the first of `names` that is not a parameter of the model."""
    known = [p.name for p in model.params]
    for name in names:
        if name not in known:
            raise ValueError(f"freeze: {name!r} is not a parameter of the model "
                             f"(parameters: {', '.join(known)})")


class Frozen:
    """The frozen parameters of a run, and their values at its start."""

    def __init__(self, model, names: tuple, theta: np.ndarray):
        self.mask = np.zeros(model.n_params, dtype=bool)
        for p in model.params:
            if p.name in names:
                self.mask[p.offset:p.offset + p.size] = True
        self.bytes = self.mask.astype(np.uint8)     # (what the native steps read)
        self.values = theta[self.mask].copy()

    def zero_grad(self, g: np.ndarray) -> None:
        """Take the frozen parameters' gradient as 0, in place."""
        g[self.mask] = 0

    def masked_l1(self, l1):
        """An optimizer's L1 weights (a number or a vector) with the frozen parameters'
        taken as 0: their term is a constant of the run, which moves no direction, no
        orthant projection and no tol_grad test (OWL-QN's pseudo-gradient would have
        moved them otherwise)."""
        if l1 is None:
            return None
        weights = np.broadcast_to(np.asarray(l1, dtype=np.float64), self.mask.shape)
        return np.where(self.mask, 0.0, weights)

    def restore(self, theta: np.ndarray) -> None:
        """Put the frozen parameters back as they were, in place."""
        theta[self.mask] = self.values


def frozen(model, names: tuple, theta: np.ndarray) -> Optional[Frozen]:
    """A Frozen for the run (None when nothing is frozen)."""
    return Frozen(model, names, theta) if names else None
