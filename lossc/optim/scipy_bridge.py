"""A compiled model as a SciPy objective: `scipy.optimize.minimize(fun, x0, jac=True)`.

    fun, x0 = scipy_objective(model, x=X, y=Y, lam=0.1)
    res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")
    params = fun.unpack(res.x)        # or model.unpack_params(res.x)

`fun(theta)` returns (value, gradient) over the whole data set as float64 (SciPy's
line searches want float64 even when the model computes in float32). The data are
validated and converted once, here, not on every call. The flat layout is the model's:
parameters concatenated in declaration order, each in C order (`model.pack_params`).
SciPy itself is not needed to build the objective, only to minimize it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class Objective:
    """fun(theta_flat) -> (value, grad_flat), with the data bound once."""

    def __init__(self, model, bound):
        self.model = model
        self.bound = bound
        self.n_calls = 0

    def __call__(self, theta) -> tuple[float, np.ndarray]:
        self.n_calls += 1
        value, grad = self.model.value_and_grad_flat(np.asarray(theta), self.bound)
        return float(value), np.asarray(grad, dtype=np.float64)

    def value(self, theta) -> float:
        """The objective alone (for methods that take no gradient)."""
        return float(self.model.loss_flat(np.asarray(theta), self.bound))

    def grad(self, theta) -> np.ndarray:
        return self(theta)[1]

    def pack(self, params: dict) -> np.ndarray:
        return pack_params(self.model, params)

    def unpack(self, theta) -> dict:
        return unpack_params(self.model, theta)


def scipy_objective(model, hypers: Optional[dict] = None, seed: int = 0, init=None,
                    **data) -> tuple[Objective, np.ndarray]:
    """(fun, x0) for scipy.optimize.minimize(fun, x0, jac=True). Keyword arguments are
    the model's inputs (arrays, samples first) and, like in `model.loss`, may also be
    hyperparameters; x0 is model.init_params(seed) (or `init`, a dict) flattened."""
    hypers = dict(hypers or {})
    names = {h.name for h in model.hypers}
    inputs = {}
    for k, v in data.items():
        (hypers if k in names and k not in {i.name for i in model.inputs} else inputs)[k] = v
    bound = model.bind(inputs, hypers)
    x0 = pack_params(model, init if init is not None else model.init_params(seed))
    return Objective(model, bound), x0


def pack_params(model, params: dict) -> np.ndarray:
    """A parameter dict as the flat float64 vector SciPy works on."""
    return np.asarray(model.pack_params(params), dtype=np.float64)


def unpack_params(model, theta) -> dict:
    """A flat vector back to a dict of arrays in the model's dtype (copies)."""
    return model.unpack_params(np.asarray(theta, dtype=model.dtype))
