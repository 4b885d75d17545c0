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
    name: str
    default: float


@dataclass(frozen=True)
class Signature:
    params: tuple[ParamSpec, ...]
    inputs: tuple[InputSpec, ...]
    hypers: tuple[HyperSpec, ...]
    reduce: str = "mean"  # or "sum"
    dims: dict = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return sum(p.size for p in self.params)

    def to_json(self) -> dict:
        return {
            "params": [[p.name, list(p.shape), [p.init[0], list(p.init[1])], p.offset]
                       for p in self.params],
            "inputs": [[i.name, list(i.shape), i.is_int] for i in self.inputs],
            "hypers": [[h.name, h.default] for h in self.hypers],
            "reduce": self.reduce,
            "dims": dict(self.dims),
        }

    @staticmethod
    def from_json(d: dict) -> "Signature":
        return Signature(
            params=tuple(ParamSpec(n, tuple(s), (i[0], tuple(i[1])), o)
                         for n, s, i, o in d["params"]),
            inputs=tuple(InputSpec(n, tuple(s), bool(k)) for n, s, k in d["inputs"]),
            hypers=tuple(HyperSpec(n, float(v)) for n, v in d["hypers"]),
            reduce=d["reduce"],
            dims=dict(d["dims"]),
        )
