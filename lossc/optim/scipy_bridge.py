"""A compiled model as a SciPy objective: a flat float64 vector in, (value, gradient) out.

    fun, x0 = m.scipy_objective(x=X, y=Y)
    res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")
    params = m.unpack_params(res.x)
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def scipy_objective(model, hypers: Optional[dict] = None, init: Optional[dict] = None,
                    seed: int = 0, **data):
    """(fun, x0): fun(theta) -> (value, grad) as float64, for minimize(..., jac=True).
    The data are validated and converted once, here."""
    bound = model.bind(data, hypers) if model.inputs or hypers else None
    x0 = model.pack_params(init if init is not None else model.init_params(seed))

    def fun(theta):
        value, grad = model.value_and_grad_flat(np.asarray(theta, dtype=np.float64), bound)
        return value, np.asarray(grad, dtype=np.float64)

    return fun, x0.astype(np.float64)
