"""Which parameter each coordinate of a flat parameter vector belongs to.

The library optimizers (lbfgs, owlqn, newton) and the Laplace approximation work on flat
float64 vectors in `Model.pack_params` order: parameters in declaration order, each in C
order. A `Layout` maps that vector back to names, so that an error can say `w[3]`
rather than "coordinate 3", standard errors come back shaped like the parameters, and
per-parameter weights (an L1 penalty that leaves the biases alone) become a flat vector.

A layout is made from a compiled lossc Model, a dict {name: shape} (in pack order), or
a sequence of (name, shape) pairs.
"""
from __future__ import annotations

from math import prod
from typing import NamedTuple

import numpy as np


class Slot(NamedTuple):
    name: str
    shape: tuple
    offset: int         # where the parameter starts in the flat vector
    size: int


class Layout:
    """The parameters of a flat vector: `slots` (name, shape, offset, size) in pack
    order and `n`, the vector's length."""

    def __init__(self, params):
        pairs = _pairs(params)
        slots, offset, seen = [], 0, set()
        for name, shape in pairs:
            if not isinstance(name, str) or not name:
                raise ValueError(f"params: a parameter name must be a non-empty string, "
                                 f"got {name!r}")
            if name in seen:
                raise ValueError(f"params: {name!r} is named twice")
            seen.add(name)
            shape = _shape(name, shape)
            size = prod(shape)
            slots.append(Slot(name, shape, offset, size))
            offset += size
        self.slots = tuple(slots)
        self.n = offset

    def __repr__(self) -> str:
        return "Layout(" + ", ".join(f"{s.name}{list(s.shape)}" for s in self.slots) + ")"

    def names(self) -> list[str]:
        """Each coordinate's name: `b` for a scalar, `w[3]`, `W[1,2]`."""
        out = []
        for s in self.slots:
            if not s.shape:
                out.append(s.name)
                continue
            for index in np.ndindex(*s.shape):
                out.append(f"{s.name}[{','.join(map(str, index))}]")
        return out

    def coordinate(self, i: int) -> str:
        """The name of coordinate i (see names)."""
        for s in self.slots:
            if s.offset <= i < s.offset + s.size:
                if not s.shape:
                    return s.name
                index = np.unravel_index(i - s.offset, s.shape)
                return f"{s.name}[{','.join(str(int(k)) for k in index)}]"
        raise IndexError(f"coordinate {i} is outside the {self.n} parameters")

    def unflatten(self, flat) -> dict:
        """A dict {name: array shaped like the parameter} (copies) from a flat vector."""
        flat = self.check_flat(flat, "flat")
        return {s.name: flat[s.offset:s.offset + s.size].reshape(s.shape).copy()
                for s in self.slots}

    def flatten(self, values: dict, default=None) -> np.ndarray:
        """A flat float64 vector from {name: scalar or array of the parameter's shape};
        a parameter left out takes `default` (None: it must be given)."""
        unknown = [k for k in values if k not in {s.name for s in self.slots}]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; the parameters are "
                             f"{[s.name for s in self.slots]}")
        out = np.empty(self.n, dtype=np.float64)
        for s in self.slots:
            v = values.get(s.name, default)
            if v is None:
                raise ValueError(f"missing parameter {s.name!r}")
            a = np.asarray(v, dtype=np.float64)
            if a.shape not in ((), s.shape):
                raise ValueError(f"{s.name!r} must be a number or an array of shape "
                                 f"{s.shape}, got shape {a.shape}")
            out[s.offset:s.offset + s.size] = np.broadcast_to(a, s.shape).ravel()
        return out

    def check_flat(self, flat, what: str) -> np.ndarray:
        a = np.asarray(flat, dtype=np.float64)
        if a.shape != (self.n,):
            raise ValueError(f"{what} must be a flat vector of the {self.n} parameters, "
                             f"got shape {a.shape}")
        return a


def _pairs(params) -> list:
    if isinstance(params, Layout):
        return [(s.name, s.shape) for s in params.slots]
    if hasattr(params, "params") and not isinstance(params, dict):     # a lossc Model
        return [(p.name, p.shape) for p in params.params]
    if isinstance(params, dict):
        return list(params.items())
    try:
        pairs = [tuple(p) for p in params]
    except TypeError:
        raise TypeError(f"params must be a lossc Model, a dict {{name: shape}} or a "
                        f"sequence of (name, shape) pairs, got {type(params).__name__}") \
            from None
    if any(len(p) != 2 for p in pairs):
        raise ValueError("params: each entry must be a (name, shape) pair")
    return pairs


def _shape(name: str, shape) -> tuple:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(int(k) for k in shape)
    except (TypeError, ValueError):
        raise ValueError(f"params: the shape of {name!r} must be a tuple of sizes, got "
                         f"{shape!r}") from None
    if any(k < 0 for k in shape):
        raise ValueError(f"params: the shape of {name!r} has a negative size: {shape}")
    return shape
