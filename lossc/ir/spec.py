"""The signature of a model: its parameters, inputs and hyperparameters.

The front end (ir/build.py) makes these records as it reads the declarations; they
travel with the graph through every pass and code generation into the compiled model
and the saved artifact (lossc/runtime), so they hold only JSON-friendly values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod


@dataclass(frozen=True)
class ParamSpec:
    """A trainable parameter. `init` is (kind, args): ("const", [v]), ("normal", [mean,
    std]), ("uniform", [lo, hi]) or ("glorot", [])."""

    name: str
    shape: tuple[int, ...]
    init: tuple[str, tuple[float, ...]] = ("const", (0.0,))
    offset: int = 0  # where it starts in the flat parameter vector

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class InputSpec:
    """One sample's data. At call time the array has shape (B, *shape)."""

    name: str
    shape: tuple[int, ...]
    is_int: bool = False

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class HyperSpec:
    """A value given at call time. A scalar hyper's default is a float; a shaped one's
    a tuple of its elements in C order. `offset`: where it starts in the vector of
    hyperparameters the native code reads."""

    name: str
    default: object
    shape: tuple[int, ...] = ()
    offset: int = 0

    @property
    def size(self) -> int:
        return prod(self.shape)

    def default_array(self):
        """The default with its shape (a 0-d array for a scalar)."""
        import numpy as np
        return np.array(self.default, dtype=np.float64).reshape(self.shape)


@dataclass(frozen=True)
class OutputSpec:
    """A per-sample value `predict` returns (`output name = ...`): its shape without
    the batch axis, and the inputs it depends on (the ones predict needs)."""

    name: str
    shape: tuple[int, ...]
    inputs: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class Signature:
    params: tuple[ParamSpec, ...]
    inputs: tuple[InputSpec, ...]
    hypers: tuple[HyperSpec, ...]
    reduce: str = "mean"  # or "sum"
    dims: dict = field(default_factory=dict)
    penalty: bool = False  # a `penalty = ...`: added once to every call's objective
    outputs: tuple[OutputSpec, ...] = ()

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return sum(p.size for p in self.params)

    def to_json(self) -> dict:
        return {
            "params": [[p.name, list(p.shape), [p.init[0], list(p.init[1])], p.offset]
                       for p in self.params],
            "inputs": [[i.name, list(i.shape), i.is_int] for i in self.inputs],
            "hypers": [[h.name, list(h.default) if h.shape else h.default, list(h.shape),
                        h.offset] for h in self.hypers],
            "reduce": self.reduce,
            "dims": dict(self.dims),
            "penalty": self.penalty,
            "outputs": [[o.name, list(o.shape), list(o.inputs)] for o in self.outputs],
        }

    @staticmethod
    def from_json(d: dict) -> "Signature":
        return Signature(
            params=tuple(ParamSpec(n, tuple(s), (i[0], tuple(i[1])), o)
                         for n, s, i, o in d["params"]),
            inputs=tuple(InputSpec(n, tuple(s), bool(k)) for n, s, k in d["inputs"]),
            hypers=tuple(_hyper_of_json(h, k) for k, h in enumerate(d["hypers"])),
            reduce=d["reduce"],
            dims=dict(d["dims"]),
            penalty=bool(d.get("penalty", False)),
            outputs=tuple(OutputSpec(n, tuple(s), tuple(i)) for n, s, i in d.get("outputs", [])),
        )


def _hyper_of_json(h: list, k: int) -> HyperSpec:
    """[name, default, shape, offset]; [name, default] as version 1 wrote it."""
    if len(h) == 2:
        return HyperSpec(h[0], float(h[1]), (), k)
    name, default, shape, offset = h
    shape = tuple(shape)
    value = tuple(float(v) for v in default) if shape else float(default)
    return HyperSpec(name, value, shape, int(offset))
