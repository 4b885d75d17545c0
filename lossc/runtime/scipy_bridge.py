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


# scipy_objective's own options; a model's input or hyperparameter of the same name
# takes the keyword instead (see scipy_objective)
OPTIONS = ("hypers", "seed", "init")


def scipy_objective(model, /, **kwargs) -> tuple[Objective, np.ndarray]:
    """(fun, x0) for scipy.optimize.minimize(fun, x0, jac=True).

    The keywords are the model's inputs (arrays, samples first) and hyperparameters by
    name, as in `model.loss`, and three options: `hypers` (a dict of hyperparameters),
    `seed` (x0 is model.init_params(seed), default 0) and `init` (a dict of parameters
    to start from instead). A keyword that names one of the model's inputs or
    hyperparameters always means it: for a model with an input called `seed`, start
    from another point with `fun.pack(model.init_params(3))`."""
    inputs, hypers, options = split_arguments(model, kwargs, OPTIONS)
    bound = model.bind(inputs, hypers)
    init = options.get("init")
    x0 = pack_params(model, init if init is not None
                     else model.init_params(options.get("seed", 0)))
    return Objective(model, bound), x0


def split_arguments(model, kwargs: dict, options: tuple) -> tuple[dict, dict, dict]:
    """(inputs, hyperparameters, options) of a keyword call: the hyperparameters by name
    and in `hypers=` (a dict), the options named in `options` unless the model has an
    input or hyperparameter of that name."""
    kwargs = dict(kwargs)
    names = {s.name for s in model.inputs} | {h.name for h in model.hypers}
    found = {k: kwargs.pop(k) for k in options if k in kwargs and k not in names}
    given = found.get("hypers")
    if given is not None and not isinstance(given, dict):
        raise TypeError(f"hypers must be a dict name -> value, got {type(given).__name__}")
    hypers = dict(given or {})
    hyper_names = {h.name for h in model.hypers}
    inputs = {}
    for k, v in kwargs.items():
        if k in hyper_names:
            if k in hypers:
                raise ValueError(f"hyperparameter {k!r} is given twice: by name and in "
                                 "hypers=")
            hypers[k] = v
        else:
            inputs[k] = v
    return inputs, hypers, found


def pack_params(model, params: dict) -> np.ndarray:
    """A parameter dict as the flat float64 vector SciPy works on."""
    return np.asarray(model.pack_params(params), dtype=np.float64)


def unpack_params(model, theta) -> dict:
    """A flat vector back to a dict of arrays in the model's dtype (copies)."""
    return model.unpack_params(np.asarray(theta, dtype=model.dtype))
