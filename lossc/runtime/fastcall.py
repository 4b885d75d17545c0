"""Model.value_and_grad (and value_and_grad_flat) called again on the same batch: one
native call from the objects.

The checked way through value_and_grad (runtime/model.py) spends a few microseconds in
Python for a small model: each parameter checked and copied into the flat vector, the
inputs compared with the last call's, each gradient copied out (logistic regression
at B=256: 3 us of Python around 2 us of native work). When a call repeats the last
call's batch (an optimizer's loop; the same array objects, used as they are), the
model prepares a `FastCall`: a description of what the arguments must look like, and
lossc_call_objects (codegen/objects.py), which checks the arrays from their NumPy
structs, copies the parameters in, runs the gradient and copies it out, in one call.
Anything unexpected (another shape, dtype or memory layout, a subclass, a scalar, a
changed input, a hyperparameter) makes it return without doing anything, and the
checked way runs, with its errors and conversions.

The native code reads fields of NumPy's array struct (PyArrayObject_fields: data, nd,
dimensions, strides, descr, flags; public C API) and of tuples. `layout()` finds
their offsets and checks them against arrays whose values it knows; if anything
disagrees (another NumPy or Python build), there is no fast call.

The call holds the GIL (ctypes.PYFUNCTYPE) while it checks the arrays and copies the
parameters, so that they cannot change meanwhile, and releases it for the gradient
itself, as every other native call does.
"""
from __future__ import annotations

import ctypes
import functools
import keyword
from typing import Optional

import numpy as np

from lossc.codegen import objects as native
from lossc.codegen.units import CALL_OBJECTS, VALUE_AND_GRAD

SIGNATURE = ctypes.PYFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)


@functools.lru_cache(maxsize=None)
def gil_functions() -> Optional[tuple]:
    """The addresses of PyEval_SaveThread and PyEval_RestoreThread, which
    lossc_call_objects calls to release the GIL and take it back; None without them."""
    try:
        api = ctypes.pythonapi
        return tuple(ctypes.cast(f, ctypes.c_void_p).value
                     for f in (api.PyEval_SaveThread, api.PyEval_RestoreThread))
    except (AttributeError, ValueError):
        return None


def _read(address: int, ctype):
    return ctype.from_address(address).value


@functools.lru_cache(maxsize=None)
def layout() -> Optional[tuple]:
    """(ob_type offset, tuple items offset, data, nd, dimensions, strides, descr, flags
    offsets in an ndarray), checked on arrays of several kinds; None if they disagree."""
    head = object.__basicsize__
    type_at, items_at = head - 8, tuple.__basicsize__
    fields = (head, head + 8, head + 16, head + 24, head + 40, head + 48)
    data, nd, dims, strides, descr, flags = fields
    base = np.arange(24.0).reshape(4, 6)
    samples = (base, base[1:, ::2], np.zeros((2, 3), np.int64), np.empty(0),
               np.array(1.5, np.float32), base.T, np.arange(5)[::-1])
    try:
        for a in samples:
            at = id(a)
            ok = (_read(at + type_at, ctypes.c_void_p) == id(np.ndarray)
                  and _read(at + data, ctypes.c_void_p) == a.__array_interface__["data"][0]
                  and _read(at + nd, ctypes.c_int32) == a.ndim
                  and _read(at + descr, ctypes.c_void_p) == id(a.dtype)
                  and _read(at + flags, ctypes.c_int32) == a.flags.num)
            if ok and a.ndim:
                d, s = _read(at + dims, ctypes.c_void_p), _read(at + strides, ctypes.c_void_p)
                ok = (tuple((ctypes.c_int64 * a.ndim).from_address(d)) == a.shape
                      and tuple((ctypes.c_int64 * a.ndim).from_address(s)) == a.strides)
            if not ok:
                return None
        t = (base, samples)
        if (_read(id(t) + items_at, ctypes.c_void_p) != id(base)
                or _read(id(t) + items_at + 8, ctypes.c_void_p) != id(samples)):
            return None
    except (ValueError, OverflowError):
        return None
    return (type_at, items_at) + fields


class FastCall:
    """The prepared repeated call of one thread's frame with one bound batch.

    flat=False: value_and_grad's, the parameters and inputs each an array (`__call__`).
    flat=True: value_and_grad_flat's on a `bind()` result: the parameters are one flat
    vector, the gradient goes to grad_out, and the inputs are not looked at (the
    binding stands for them, as in the checked way) (`flat`)."""

    def __init__(self, model, frame, bound, fn, flat: bool = False):
        self.model, self.frame, self.bound, self.fn = model, frame, bound, fn
        params, inputs = model.signature.params, model.signature.inputs
        if flat:
            params = [_Flat(model.n_params)]
            inputs = []
        self.n_params, self.n_inputs = len(params), len(inputs)
        self.value = frame.value
        self.err = frame.err
        self.checked_theta = self.checked_out = None     # see flat_into
        # a frame of its own: the thread's buffers, this batch
        from lossc.runtime.calls import _addr
        self.vg_frame = frame.detached(bound)
        item = model.dtype.itemsize
        type_at, items_at, *fields = layout()
        desc = [0] * native.HEADER
        desc[0], desc[1], desc[2] = type_at, id(np.ndarray), items_at
        desc[3:9] = fields
        desc[9] = model.code.address(VALUE_AND_GRAD)
        desc[10] = _addr(self.vg_frame)
        desc[11], desc[12] = frame.theta_address, frame.grad_address
        desc[13], desc[14] = self.n_params, self.n_inputs
        desc[15] = id(model.dtype)
        desc[16], desc[17] = gil_functions()
        for p in params:
            dims = list(p.shape) + [0] * (native.MAX_NDIM - len(p.shape))
            desc += [p.offset * item, p.size * item, len(p.shape)] + dims
        for a in bound.arrays if inputs else ():
            pad = [0] * (native.MAX_NDIM - a.ndim)
            desc += ([a.__array_interface__["data"][0], a.ndim, id(a.dtype)]
                     + list(a.shape) + pad + list(a.strides) + pad)
        self.desc = np.array(desc, dtype=np.int64)
        self.desc_address = _addr(self.desc)
        if not flat:
            self.gather = _gatherer([p.name for p in params], [p.shape for p in params],
                                    [s.name for s in inputs], model.dtype)

    @staticmethod
    def applies(model, bound) -> bool:
        """Whether a fast call can stand for the checked one on this batch."""
        return (layout() is not None and gil_functions() is not None and model.n_params > 0
                and all(len(p.shape) <= native.MAX_NDIM for p in model.signature.params)
                and all(a.ndim <= native.MAX_NDIM for a in bound.arrays)
                and model.dtype is np.dtype(model.dtype.name))

    def __call__(self, theta, kwargs):
        """(value, gradient dict), or None when the checked way must run."""
        try:
            args, grads = self.gather(theta, kwargs)
        except Exception:          # a missing name, not a mapping: the checked way says
            return None
        if len(kwargs) != self.n_inputs or len(theta) != self.n_params:
            return None
        return self._run(args, grads)

    def flat(self, theta_flat, grad_out):
        """(value, grad_out), or None when the checked way must run."""
        return self._run((theta_flat, grad_out), grad_out)

    def flat_into(self, theta_flat, grad_out):
        """flat() into the caller's grad_out: refused (a ValueError) where it shares
        memory with theta_flat or the batch. The check runs once per pair of arrays:
        two arrays held here and found apart stay apart (a C-contiguous array of
        n_params, which lossc_call_objects requires, keeps its memory unless it owns
        it and is resized, and then gets memory no live array has)."""
        if grad_out is not self.checked_out or theta_flat is not self.checked_theta:
            self.model._check_disjoint(theta_flat, grad_out, self.bound)
            self.checked_theta, self.checked_out = theta_flat, grad_out
        return self._run((theta_flat, grad_out), grad_out)

    def _run(self, args: tuple, gradient):
        """lossc_call_objects on `args` (held here while the native code reads it):
        (value, gradient), None on a mismatch, or the index error raised."""
        rc = self.fn(self.desc_address, id(args))
        if rc == 0:
            return self.value.item(), gradient
        if rc == native.MISMATCH:
            return None
        raise self.model._index_error(self.err, self.bound)


class _Flat:
    """The flat parameter vector, described as one parameter."""

    def __init__(self, n: int):
        self.offset, self.size, self.shape = 0, n, (n,)


def _gatherer(param_names, shapes, input_names, dtype):
    """gather(theta, kwargs) -> (the objects lossc_call_objects takes, the gradient
    dict): written out for this model's names (a loop over them costs more than the
    native call)."""
    names = param_names + input_names
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in names):
        return _generic_gatherer(param_names, shapes, input_names, dtype)
    grads = [f"g_{n}" for n in param_names]
    lines = ["def gather(theta, kwargs, empty=empty, dtype=dtype):"]
    lines += [f"    {g} = empty({shape!r}, dtype)" for g, shape in zip(grads, shapes)]
    got = ([f"theta[{n!r}]" for n in param_names] + [f"kwargs[{n!r}]" for n in input_names]
           + grads)
    lines.append(f"    return ({', '.join(got)},), "
                 f"{{{', '.join(f'{n!r}: {g}' for n, g in zip(param_names, grads))}}}")
    space = {"empty": np.empty, "dtype": dtype}
    exec("\n".join(lines), space)       # (names checked above: identifiers only)
    return space["gather"]


def _generic_gatherer(param_names, shapes, input_names, dtype):
    def gather(theta, kwargs):
        grads = [np.empty(s, dtype) for s in shapes]
        args = tuple([theta[n] for n in param_names] + [kwargs[n] for n in input_names]
                     + grads)
        return args, dict(zip(param_names, grads))
    return gather


def native_function(model):
    """lossc_call_objects as a ctypes function that keeps the GIL (the function itself
    releases it around the gradient), or None."""
    try:
        return SIGNATURE(model.code.address(CALL_OBJECTS))
    except Exception:        # e.g. an older artifact without the unit and no LLVM here
        return None
