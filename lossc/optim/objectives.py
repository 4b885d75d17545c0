"""The objective over whole data sets: the passes a training run makes besides its steps.

`Objectives` computes, at given parameters, the objective and gradient norm over the
training set (the start of a run, batch descent's steps, tol_grad), the objective alone
over the training set or the validation split (the monitor's passes), and checks
candidate parameters at the end of a run. The objective alone goes through the
gradient's code, which `lossc.compile` made already, or through the objective's own
code, compiled on first use (code unit LOSS): `by_gradient` says which, decided from
the run's arguments alone so that the same arguments give the same history whatever was
compiled before (the two codes can differ in the last bit of the objective).

With an optimizer's L1 penalty (`l1`: SGD, Adam or LBFGS with l1=), the training
objective is the penalized one the optimizer minimizes, sum_i l1_i |theta_i| added, and
its gradient norm is that of the pseudo-gradient (the minimum-norm subgradient, zero at
the optimum); the validation objective stays the model's alone (what held-out data
measures). The full-batch optimizers also take the training objective as a function of
a float64 vector (`smooth`, without the penalty, which OWL-QN adds itself) and, for
Newton-CG, its Hessian-vector products (`hvp`, through model.hvp).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from lossc.optim.orthant_wise import pseudo_gradient
from lossc.optim.prox import l1_norm
from lossc.optim.solver import two_norm

# Rows of objective-only passes (the monitor's, over the training set and the
# validation split) from which a run compiles the objective's own code for them: below,
# the gradient's code is cheaper in all (its pass costs a little more a row, but the
# objective's compile costs as much as millions of rows; docs/training.md has the
# figures).
LOSS_UNIT_ROWS = 5_000_000


def by_gradient(plan, monitor: str, has_inputs: bool) -> bool:
    """Whether a run's objective-only passes take the gradient's code: when they cover
    fewer than LOSS_UNIT_ROWS rows."""
    per_epoch = ((plan.n_train if monitor == "full" and has_inputs else 0) + plan.n_val)
    return plan.epochs * per_epoch < LOSS_UNIT_ROWS


class Objectives:
    def __init__(self, model, full, val, by_gradient: bool, *, l1=None,
                 hypers: Optional[dict] = None, frozen=None):
        self.model, self.full, self.val = model, full, val
        self.by_gradient = by_gradient
        self.l1 = l1                    # the optimizer's L1 weights, or None
        self.hypers = dict(hypers or {})     # (for model.hvp, which takes them by name)
        self.frozen = frozen            # the run's frozen parameters (freeze.py), or None
        # the full gradient at the parameters of the last value_and_grad pass (batch
        # descent steps with it); objective-only passes through the gradient's code
        # write theirs elsewhere
        self.g = np.zeros(model.n_params, dtype=model.dtype)
        self.g_spare = np.zeros(model.n_params, dtype=model.dtype)
        self._prepared = None           # smooth's call (see _smooth_call), made on first use

    def value_and_grad(self, theta, data, grad_out) -> float:
        """The objective over bound data, its gradient written to grad_out: the driver's
        one call of the model's checked flat path."""
        if getattr(data, "chunked", False):      # (lossc.optim.chunked.ChunkedData)
            value, grad_out[...] = data.value_and_grad(theta)
        else:
            value, _ = self.model.checked_value_and_grad_flat(theta, data, None, grad_out)
        if self.frozen is not None:
            self.frozen.zero_grad(grad_out)
        return value

    def value_and_gradnorm(self, theta) -> tuple[float, float]:
        """The training objective at theta and its gradient's norm (the gradient is
        left in self.g; with an L1 penalty, the model's gradient, while the objective
        and the norm are the penalized objective's: see the module docstring)."""
        value = self.value_and_grad(theta, self.full, self.g)
        g = self.g if self.l1 is None else pseudo_gradient(theta, self.g, self.l1)
        return value + self.penalty(theta), two_norm(g)

    def penalty(self, theta) -> float:
        """The optimizer's L1 term at theta (0.0 without one)."""
        return 0.0 if self.l1 is None else l1_norm(theta, self.l1)

    def objective(self, theta, data) -> float:
        """The objective alone at theta over bound data (see by_gradient)."""
        if self.by_gradient or getattr(data, "chunked", False):
            return self.value_and_grad(theta, data, self.g_spare)
        return self.model.loss_flat(theta, data)

    def training(self, theta) -> float:
        return self.objective(theta, self.full) + self.penalty(theta)

    def validation(self, theta) -> float:
        return self.objective(theta, self.val)

    def is_finite_at(self, theta) -> bool:
        """Whether the training objective at theta is finite (through the gradient's
        code, there already: the objective's alone may not be compiled)."""
        return math.isfinite(self.value_and_grad(theta, self.full, self.g))

    def smooth(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The model's training objective and its gradient (a new float64 array) at the
        float64 vector x (converted to the model's dtype for the call)."""
        call = self._smooth_call()
        if call is None:
            grad = np.empty(self.model.n_params, dtype=self.model.dtype)
            value = self.value_and_grad(x, self.full, grad)
            return value, grad.astype(np.float64, copy=False)
        call.theta[...] = x
        value = call()
        grad = call.grad.astype(np.float64)     # (a copy: the caller keeps it)
        if self.frozen is not None:
            self.frozen.zero_grad(grad)
        return value, grad

    def _smooth_call(self):
        """The training set's gradient as a prepared call (Model.prepare: arrays of its
        own for the parameters and the gradient, checked once), for a full-batch
        optimizer's many evaluations on the one data set; None where the checked call
        does work the prepared one would not: chunked data, or a batch split across
        threads."""
        if self._prepared is None:
            model, full = self.model, self.full
            if getattr(full, "chunked", False) or model.splits(full.B):
                self._prepared = False
            else:
                self._prepared = model.prepare(np.zeros(model.n_params, model.dtype), full,
                                               grad_out=np.zeros(model.n_params, model.dtype))
        return self._prepared or None

    def hvp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Hessian of the training objective at x times v (float64 vectors in pack
        order), through model.hvp(theta, v, **inputs, **hypers) on dicts."""
        model = self.model
        if self.frozen is not None:      # (the Hessian's rows and columns of frozen ones: 0)
            v = np.where(self.frozen.mask, 0.0, v)
        if getattr(self.full, "chunked", False):
            hv = self.full.hvp(x, v)
        else:
            inputs = {spec.name: a for spec, a in zip(model.inputs, self.full.arrays)}
            out = model.hvp(model.unpack_params(x), model.unpack_params(v), **inputs,
                            **self.hypers)
            hv = model.pack_params(out).astype(np.float64)
        if self.frozen is not None:
            self.frozen.zero_grad(hv)
        return hv
