"""Derivatives beyond the gradient: directional derivatives (jvp), Hessian-vector
products (hvp) and whole Hessians of the objective, through the native code units of
forward mode (codegen/units.py DERIVED_UNITS).

Each unit is a model function of the gradient's frame layout (codegen/abi.py
VALUE_AND_GRAD) over a signature of its own: the model's parameters followed by the
directions' (tangent<k>.p, the same shapes), and for jvp a one-number result slot.
Its `grad` buffer receives the gradient in the model's parameters' slots and the
results in the directions' slots: H v_k for hvp and hessian, the loss's tangent
<grad, v> for jvp (codegen/units.py result_graph). The buffers here are made for each
call (a Hessian reuses them across its blocks of columns), so calls from several
threads do not share them; a call runs on one thread.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import numpy as np

from lossc.codegen.abi import ERROR, OK, VALUE_AND_GRAD
from lossc.codegen.units import HESSIAN, HVP, JVP, hessian_directions
from lossc.runtime.calls import BoundArgs, _addr, aligned_zeros, as_array, index_error

# the largest model Model.hessian takes: its Hessian of float64 holds 128 MB
MAX_HESSIAN_PARAMS = 4096


class DirectionalCall:
    """One derived unit's native function with buffers for `directions` directions:
    params = [theta, v_0, ..., v_{K-1}] (and jvp's result slot), grad alike."""

    def __init__(self, model, unit: str, directions: int, bound: BoundArgs):
        self.model, self.bound = model, bound
        self.fn = model.code.function(unit)      # (compiled first, if need be)
        n = model.n_params
        size = n * (1 + directions) + (1 if unit == JVP else 0)
        self.params = np.zeros(max(size, 1), dtype=model.dtype)
        self.grad = np.zeros(max(size, 1), dtype=model.dtype)
        self.value = np.zeros(1, dtype=model.dtype)
        self.work = aligned_zeros(model.code.work_size, model.dtype)
        self.err = ERROR.new()
        frame = self.frame = VALUE_AND_GRAD.new()
        frame.params, frame.grad = _addr(self.params), _addr(self.grad)
        frame.hypers, frame.inputs, frame.B = (bound.hypers_address,
                                               bound.pointers_address, bound.B)
        frame.value, frame.work = _addr(self.value), _addr(self.work)
        frame.err = ctypes.addressof(self.err)
        self.address = ctypes.addressof(frame)
        self.theta = self.params[:n]
        self.directions = self.params[n:n * (1 + directions)].reshape(directions, n)
        self.results = self.grad[n:n * (1 + directions)].reshape(directions, n)

    def __call__(self) -> float:
        if self.fn(self.address) != OK:
            raise index_error(self.model, self.err, self.bound)
        return self.value.item()


def bound_arguments(model, kwargs: dict) -> BoundArgs:
    """The inputs and hyperparameters of a call, checked as value_and_grad checks them."""
    return model.bind(*model._split_kwargs(kwargs))


def flat_of(model, tree: dict, argument: str) -> np.ndarray:
    """A dict shaped like the parameters as a flat vector; a mistake in it is a
    ValueError (TypeError) naming `argument`."""
    out = np.zeros(max(model.n_params, 1), dtype=model.dtype)
    try:
        model._pack(tree, model._param_views(out[:model.n_params]))
    except (ValueError, TypeError) as e:
        raise type(e)(f"{argument}: {e}") from None
    return out[:model.n_params]


def flat_vector(model, a, argument: str) -> np.ndarray:
    """A flat vector of n_params real numbers, as the model's dtype; a ValueError
    (TypeError) naming `argument` otherwise."""
    v = as_array(a, argument)
    if v.dtype.kind not in "biuf":
        raise TypeError(f"{argument} must hold real numbers, got dtype {v.dtype}")
    if v.shape != (model.n_params,):
        raise ValueError(f"{argument} must have shape ({model.n_params},), got "
                         f"{tuple(v.shape)}")
    return v.astype(model.dtype, copy=False)


def check_out(model, out) -> None:
    """`out` of hvp_flat: a writable array of n_params in the model's dtype."""
    if (type(out) is not np.ndarray or out.dtype != model.dtype
            or out.shape != (model.n_params,) or not out.flags.writeable):
        raise ValueError(f"out must be a writable {model.dtype.name} array of shape "
                         f"({model.n_params},)")


def jvp(model, theta: dict, tangent: dict, kwargs: dict) -> tuple[float, float]:
    call = DirectionalCall(model, JVP, 1, bound_arguments(model, kwargs))
    call.theta[...] = flat_of(model, theta, "theta")
    call.directions[0] = flat_of(model, tangent, "tangent")
    value = call()
    return value, call.grad[-1].item()


def hvp_flat(model, theta: np.ndarray, v: np.ndarray, bound: BoundArgs,
             out: Optional[np.ndarray] = None) -> np.ndarray:
    call = DirectionalCall(model, HVP, 1, bound)
    call.theta[...] = theta
    call.directions[0] = v
    call()
    if out is None:
        return call.results[0].copy()
    out[...] = call.results[0]
    return out


def hvp(model, theta: dict, v: dict, kwargs: dict) -> dict:
    bound = bound_arguments(model, kwargs)
    flat = hvp_flat(model, flat_of(model, theta, "theta"), flat_of(model, v, "v"), bound)
    return model.unpack_params(flat)


def hessian(model, theta: dict, kwargs: dict) -> np.ndarray:
    """The (n, n) Hessian in pack_params order, K columns per native call (the unit
    vectors as directions), symmetrized: (H + H^T) / 2 of the columns computed."""
    n = model.n_params
    if n > MAX_HESSIAN_PARAMS:
        raise ValueError(f"hessian: the model has {n} parameters; the Hessian is computed "
                         f"for at most {MAX_HESSIAN_PARAMS} (use hvp for larger models)")
    bound = bound_arguments(model, kwargs)
    flat = flat_of(model, theta, "theta")
    H = np.zeros((n, n), dtype=model.dtype)
    if n == 0:
        return H
    K = hessian_directions(n)
    call = DirectionalCall(model, HESSIAN, K, bound)
    call.theta[...] = flat
    for start in range(0, n, K):
        call.directions[...] = 0
        block = range(start, min(start + K, n))
        for k, column in enumerate(block):
            call.directions[k, column] = 1
        call()
        H[:, block.start:block.stop] = call.results[:len(block)].T
    return symmetrized(H)


def symmetrized(H: np.ndarray) -> np.ndarray:
    """(H + H^T) / 2, halved first where the sum overflows (entries past 9e307) and
    not elsewhere (halving first rounds an odd subnormal)."""
    with np.errstate(over="ignore"):
        S = (H + H.T) / 2
    over = np.isinf(S) & np.isfinite(H) & np.isfinite(H.T)
    S[over] = 0.5 * H[over] + 0.5 * H.T[over]
    return S


def scipy_hessp(model, kwargs: dict):
    """hessp(x, p) -> H(x) p as float64, the batch bound once (the keywords as
    scipy_objective takes them, hypers= among them)."""
    from lossc.runtime.scipy_bridge import split_arguments
    inputs, hypers, _ = split_arguments(model, kwargs, ("hypers",))
    bound = model.bind(inputs, hypers)

    def hessp(x, p):
        x = flat_vector(model, x, "x")
        p = flat_vector(model, p, "p")
        return hvp_flat(model, x, p, bound).astype(np.float64)
    return hessp
