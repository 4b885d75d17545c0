"""The compiled model users hold: argument validation around the native functions.

Every argument is checked before any native call (names, shapes, dtypes, batch sizes,
integer inputs), so no call can make the native code read outside an array. Arrays are
copied only when they are not already C-contiguous in the model's dtype.
"""
from __future__ import annotations

import threading
from math import copysign
from typing import Optional

import numpy as np

from lossc.codegen.units import LOSS, VALUE_AND_GRAD
from lossc.runtime.calls import BoundArgs, PreparedCall, _Frame, data_pointer
from lossc.runtime import fastcall, forks
from lossc.runtime.code import ModelCode
from lossc.runtime.spec import Signature

def _shape_text(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


PARALLEL_MIN_SAMPLES = 16384   # below this per thread, a thread costs more than it saves


class Model:
    """A `.loss` file compiled to native code for this CPU.

    `loss` and `value_and_grad` take the parameters as a dict (see `init_params`), the
    inputs as keyword arrays with the batch first, and hyperparameters as keyword
    numbers (defaults from the file).
    """

    def __init__(self, signature: Signature, dtype: str, code: "ModelCode", meta: dict):
        self.signature = signature
        self.dtype = np.dtype(dtype)
        self.code = code             # the machine code, unit by unit (runtime/code.py)
        self.meta = meta
        self._vg = code.function(VALUE_AND_GRAD)
        self._loss = None            # compiled on first use
        self.n_params = signature.n_params
        self._view_index = [
            (p.name, (p.offset, Ellipsis) if not p.shape else slice(p.offset, p.offset + p.size),
             p.shape if len(p.shape) > 1 else None) for p in signature.params]
        self._offsets = {p.name: p.offset for p in signature.params}
        self._input_names = [i.name for i in signature.inputs]
        self._input_set = set(self._input_names)
        self._hyper_index = {h.name: k for k, h in enumerate(signature.hypers)}
        self._default_hypers = np.array([h.default for h in signature.hypers] or [0.0],
                                        dtype=self.dtype)
        self._no_inputs = BoundArgs(self, [], 1, self._default_hypers)
        self._tls = threading.local()
        self._last_call = None       # see _bind_kwargs
        self._fast_function = None   # lossc_call_objects (runtime/fastcall.py), or False
        self._pool = None
        self.threads = 1   # threads for large batches; see set_threads

    # ------------------------------------------------------------ description

    @property
    def params(self):
        return self.signature.params

    @property
    def inputs(self):
        return self.signature.inputs

    @property
    def hypers(self):
        return self.signature.hypers

    @property
    def reduce(self) -> str:
        return self.signature.reduce

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("warnings", []))

    def __repr__(self) -> str:
        ps = ", ".join(f"{p.name}{list(p.shape) if p.shape else ''}" for p in self.params)
        xs = ", ".join(f"{i.name}{list(i.shape) if i.shape else ''}{': int' if i.is_int else ''}"
                       for i in self.inputs)
        return (f"<lossc.Model {self.meta.get('name', '')} params({ps}) inputs({xs}) "
                f"{self.dtype.name}>")

    def __copy__(self) -> "Model":
        """A model of its own (buffers, thread pool, remembered calls) over the same
        machine code, which never changes once loaded."""
        twin = Model(self.signature, self.dtype.name, self.code, self.meta)
        twin.threads = self.threads
        return twin

    def __deepcopy__(self, memo) -> "Model":
        return self.__copy__()

    def set_threads(self, n: Optional[int]) -> "Model":
        """Use n threads for batches of at least PARALLEL_MIN_SAMPLES per thread (None:
        one per core). Results are deterministic for a given n; they may differ from
        another n in the last bits, as any reordered floating-point sum does."""
        import os
        n = (os.cpu_count() or 1) if n is None else int(n)
        if n < 1:
            raise ValueError(f"threads must be at least 1, got {n}")
        self.threads = n
        return self

    # ------------------------------------------------------------ parameters

    def init_params(self, seed: int = 0) -> dict:
        """Initial values as the file declares them, drawn from `seed`."""
        rng = np.random.default_rng(seed)
        out = {}
        for p in self.params:
            kind, args = p.init
            if kind == "const":
                v = np.full(p.shape, args[0])
            elif kind == "normal":
                v = rng.normal(args[0], args[1], size=p.shape)
            elif kind == "uniform":
                v = rng.uniform(args[0], args[1], size=p.shape)
            elif kind == "glorot":
                fan_out, fan_in = (p.shape + (1, 1))[:2] if len(p.shape) == 2 else (
                    (p.shape[0], p.shape[0]) if p.shape else (1, 1))
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                v = rng.uniform(-limit, limit, size=p.shape)
            else:
                raise ValueError(f"unknown initializer {kind!r} for {p.name}")
            out[p.name] = np.asarray(v, dtype=self.dtype)
        return out

    def pack_params(self, theta: dict, /, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The flat parameter vector (declaration order, C order within each)."""
        if out is not None:
            self._pack(theta, self._param_views(out))
            return out
        # packed where value_and_grad packs (this thread's buffer, free between calls,
        # with its views made once), then copied out
        f = self._frame()
        self._pack(theta, f.theta_views)
        return f.theta[:self.n_params].copy()

    def _pack(self, theta: dict, views: list) -> None:
        """Check `theta` and copy it into `views` (_param_views of a flat vector)."""
        if type(theta) is not dict and not isinstance(theta, dict):
            raise TypeError(f"parameters must be a dict of arrays with keys "
                            f"{[p.name for p in self.params]}, got {type(theta).__name__}")
        if len(theta) != len(views):
            extra = [k for k in theta if k not in self._offsets]
            if extra:
                raise ValueError(f"unknown parameter {extra[0]!r}; the model's parameters "
                                 f"are {sorted(self._offsets)}")
        dtype = self.dtype
        for name, shape, view in views:
            try:
                v = theta[name]
            except KeyError:
                raise ValueError(f"missing parameter {name!r} (shape {_shape_text(shape)})") \
                    from None
            # the common cases, without numpy's conversion overhead: an array already of
            # the right shape and a real dtype, and a scalar as a Python number. (A copy
            # into a view of the parameter's shape costs half a slice assignment.)
            t = type(v)
            if t is _ndarray:
                if v.shape == shape and (v.dtype is dtype or v.dtype.kind in "fiu"):
                    view[...] = v
                    continue
            elif t in _SCALAR_TYPES and not shape:
                view[()] = v
                continue
            a = np.asarray(v)
            if a.shape != shape:
                raise ValueError(f"parameter {name!r} must have shape {_shape_text(shape)}, "
                                 f"got {_shape_text(a.shape)}")
            if a.dtype.kind not in "biuf":
                raise TypeError(f"parameter {name!r} must hold real numbers, got dtype "
                                f"{a.dtype}")
            view[...] = a

    def unpack_params(self, flat: np.ndarray, /) -> dict:
        """A dict of arrays (copies) from a flat parameter vector."""
        flat = np.array(flat, dtype=self.dtype)
        if flat.shape != (self.n_params,):
            raise ValueError(f"flat parameters must have shape ({self.n_params},), got "
                             f"{_shape_text(flat.shape)}")
        return self._views(flat)

    def _views(self, flat: np.ndarray) -> dict:
        # one indexing operation per parameter: (off, ...) gives a 0-d view, a slice a
        # vector; only matrices need a reshape
        return {name: flat[index] if shape is None else flat[index].reshape(shape)
                for name, index, shape in self._view_index}

    def _param_views(self, flat: np.ndarray) -> list:
        """(name, shape, view of flat with that shape) for each parameter."""
        return [(p.name, p.shape, view)
                for p, view in zip(self.signature.params, self._views(flat).values())]

    # ------------------------------------------------------------ calls

    @property
    def work_size(self) -> int:
        """Elements of scratch space the compiled functions need."""
        return self.code.work_size

    def _loss_function(self):
        if self._loss is None:
            self._loss = self.code.function(LOSS)
        return self._loss

    def loss(self, theta: dict, /, **kwargs) -> float:
        """The objective over the batch."""
        fn = self._loss_function()
        f = self._frame()
        self._pack(theta, f.theta_views)
        f.use_theta()
        self._bind_kwargs(f, kwargs)
        self._run(fn, f)
        return f.value.item()

    def value_and_grad(self, theta: dict, /, **kwargs) -> tuple[float, dict]:
        """The objective and its gradient, a dict shaped like `theta`."""
        fast = getattr(self._tls, "fast", None)
        if fast is not None and self.threads == 1:
            out = fast(theta, kwargs)        # (None: the checked way below decides)
            if out is not None:
                return out
        f = self._frame()
        self._pack(theta, f.theta_views)
        f.use_theta()
        self._bind_kwargs(f, kwargs)
        fn = self._vg
        if self.threads > 1:
            self._run(fn, f)
        elif fn(f.address):       # (_run's one-thread case, without the cost of a call)
            raise self._index_error(f.err, f.bound)
        # a copy of each parameter's part of the gradient (the caller's to keep: the
        # next call overwrites f.grad), cheaper than one copy and a view of it for each;
        # (a loop, not a comprehension: that is a function call before Python 3.12)
        grads = {}
        for name, g in f.grad_views:
            grads[name] = g.copy()
        # the batch as the caller's arrays are (no conversion, no hyperparameters): a
        # fast call can check it from them
        if len(kwargs) == len(self.inputs) and (not self.inputs or (
                self._last_call is not None and self._last_call[3] is f.bound)):
            self._prepare_fast(f, f.bound, flat=False)
        return f.value.item(), grads

    def _prepare_fast(self, f: "_Frame", bound: "BoundArgs", flat: bool) -> None:
        """After a checked call on `bound`: when the thread's previous call of the same
        kind (flat or not) had it too, the next ones may take the native checks of
        runtime/fastcall.py. (A fast call already there for it stays: it is what
        declined this call, for an argument it does not take.)"""
        tls = self._tls
        last, slot = ("last_flat_bound", "flat_fast") if flat else ("last_bound", "fast")
        again = bound is getattr(tls, last, None)
        setattr(tls, last, bound)
        current = getattr(tls, slot, None)
        if (not again or self.threads != 1
                or (current is not None and current.bound is bound and current.frame is f)
                or not fastcall.FastCall.applies(self, bound) or not self._fast_call_function()):
            return
        setattr(tls, slot, fastcall.FastCall(self, f, bound, self._fast_function, flat=flat))

    def _fast_call_function(self):
        """lossc_call_objects (compiled the first time on a machine, then cached), or
        False where it cannot be had."""
        if self._fast_function is None:
            self._fast_function = fastcall.native_function(self) or False
        return self._fast_function

    def value_and_grad_flat(self, theta_flat, /, data=None, hypers: Optional[dict] = None,
                            grad_out=None):
        """Low-level: flat parameters in, (value, flat gradient) out. `data` may be a
        `bind()` result, validated once for repeated calls; with `grad_out` (a
        C-contiguous array of n_params in the model's dtype) the gradient is written
        there and no array is allocated."""
        fast = getattr(self._tls, "flat_fast", None)
        if fast is not None and data is fast.bound and not hypers and self.threads == 1:
            out = (fast.flat(theta_flat, np.empty(self.n_params, self.dtype))
                   if grad_out is None else fast.flat_into(theta_flat, grad_out))
            if out is not None:
                return out
        value, grad = self._checked_value_and_grad_flat(theta_flat, data, hypers, grad_out)
        if type(data) is BoundArgs and not hypers:
            self._prepare_fast(self._frame(), data, flat=True)
        return value, grad

    def _checked_value_and_grad_flat(self, theta_flat, data, hypers, grad_out):
        """value_and_grad_flat through every Python check (the training driver's
        full-data passes: a few calls, not worth a fast call)."""
        f = self._frame()
        f.use_theta(self._flat(theta_flat))
        self._bind_data(f, data, hypers)
        if grad_out is not None:
            self._check_out(grad_out)
            self._check_disjoint(theta_flat, grad_out, f.bound)
        self._run(self._vg, f)
        if grad_out is not None:
            grad_out[...] = f.grad
            return f.value.item(), grad_out
        return f.value.item(), f.grad.copy()

    def loss_flat(self, theta_flat, /, data=None, hypers: Optional[dict] = None) -> float:
        fn = self._loss_function()
        f = self._frame()
        f.use_theta(self._flat(theta_flat))
        self._bind_data(f, data, hypers)
        self._run(fn, f)
        return f.value.item()

    def prepare(self, theta_flat: np.ndarray, /, data=None, hypers: Optional[dict] = None,
                grad_out: Optional[np.ndarray] = None) -> "PreparedCall":
        """The fastest way to call the compiled gradient repeatedly (an optimizer's inner
        loop): everything is checked once, here, and each call is one native call.

            call = m.prepare(theta, bound, grad_out=g)   # theta, g: flat arrays you own
            value = call()      # reads theta as it is now, writes the gradient into g

        theta and grad_out must be C-contiguous arrays of n_params in the model's dtype;
        change theta in place between calls. A PreparedCall is for one thread."""
        theta = theta_flat
        if (type(theta) is not np.ndarray or theta.dtype != self.dtype
                or theta.shape != (self.n_params,) or not theta.flags.c_contiguous):
            raise ValueError(f"prepare() needs the parameters as a C-contiguous "
                             f"{self.dtype.name} array of shape ({self.n_params},)")
        grad = np.zeros(self.n_params, dtype=self.dtype) if grad_out is None else grad_out
        self._check_out(grad)
        bound = data if isinstance(data, BoundArgs) and not hypers else \
            self.bind(data or {}, hypers)
        self._check_disjoint(theta, grad, bound)
        return PreparedCall(self, theta, bound, grad)

    def save(self, path) -> None:
        """Write a `.lossc` artifact: machine code for this CPU (every code unit,
        compiled now if it was not yet, so loading it never needs LLVM) and the
        signature."""
        from lossc.runtime import artifact
        objects = self.code.complete()
        artifact.write(path, dict(self.meta, work_size=self.code.work_size), objects)

    def scipy_objective(self, /, **kwargs):
        """(fun, x0) for scipy.optimize.minimize(fun, x0, jac=True); the keywords are
        those of lossc.optim.scipy_objective (the inputs and hyperparameters by name)."""
        from lossc.optim.scipy_bridge import scipy_objective
        return scipy_objective(self, **kwargs)

    # ------------------------------------------------------------ beyond the gradient
    # (runtime/derivatives.py: forward mode, compiled on first use, one thread)

    def jvp(self, theta: dict, tangent: dict, /, **kwargs) -> tuple[float, float]:
        """(objective, its directional derivative along `tangent`, <grad, tangent>):
        forward mode, one pass. `tangent` is a dict shaped like theta."""
        from lossc.runtime import derivatives
        return derivatives.jvp(self, theta, tangent, kwargs)

    def hvp(self, theta: dict, v: dict, /, **kwargs) -> dict:
        """The Hessian of the objective at theta times v (a dict shaped like theta), by
        forward mode over the gradient."""
        from lossc.runtime import derivatives
        return derivatives.hvp(self, theta, v, kwargs)

    def hvp_flat(self, theta_flat, v_flat, /, data=None, hypers: Optional[dict] = None,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
        """Low-level hvp: flat parameters and direction in, H v as a flat vector out
        (into `out` if given); `data` may be a bind() result."""
        from lossc.runtime import derivatives
        theta = derivatives.flat_vector(self, theta_flat, "theta_flat")
        v = derivatives.flat_vector(self, v_flat, "v_flat")
        if out is not None:
            derivatives.check_out(self, out)
        return derivatives.hvp_flat(self, theta, v, self.bind(data or {}, hypers), out)

    def hessian(self, theta: dict, /, **kwargs) -> np.ndarray:
        """The (n_params, n_params) Hessian of the objective in pack_params order, a
        block of columns per native call; a ValueError past
        derivatives.MAX_HESSIAN_PARAMS parameters."""
        from lossc.runtime import derivatives
        return derivatives.hessian(self, theta, kwargs)

    def scipy_hessp(self, /, **kwargs):
        """hessp(x, p) -> H(x) p for scipy.optimize.minimize(..., hessp=...) (Newton-CG,
        trust-ncg, trust-krylov, trust-constr), next to scipy_objective; the keywords
        are the inputs and hyperparameters, bound once."""
        from lossc.runtime import derivatives
        return derivatives.scipy_hessp(self, kwargs)

    # ------------------------------------------------------------ binding arguments

    def bind(self, data: dict, /, hypers: Optional[dict] = None) -> "BoundArgs":
        """Validate and convert a batch once, for repeated calls (the low-level path)."""
        if isinstance(data, BoundArgs):
            if hypers:
                return BoundArgs(self, data.arrays, data.B, self._hyper_vector(hypers))
            return data
        arrays, B = self._check_inputs(data or {})
        return BoundArgs(self, arrays, B, self._hyper_vector(hypers or {}))

    # Calling again with the very same arguments (an optimizer's loop, a benchmark) skips
    # validation: the last call's binding is kept with references to the caller's arrays
    # (_remember) and reused when every array is the same object, unchanged in shape,
    # strides, dtype and data address (ndarray.resize moves the data, and resizing back
    # restores the shape), and was used as it is (not a converted copy, which could have
    # gone stale); and the hyperparameters, Python numbers, are equal.

    def _bind_kwargs(self, f: "_Frame", kwargs: dict) -> None:
        if not kwargs:
            if self.inputs:
                self._check_inputs({})      # raises: the inputs are missing
            f.use_defaults(self)
            return
        last = self._last_call
        if last is not None and len(kwargs) == last[0]:
            for name, a, shape, strides, dtype, pointer, address in last[1]:
                v = kwargs.get(name)
                if (v is not a or v.shape != shape or v.strides != strides
                        or v.dtype is not dtype or pointer.value != address):
                    break
            else:
                for name, value in last[2]:
                    v = kwargs.get(name)
                    # (equal numbers, and 0.0 and -0.0 told apart: 1/h differs)
                    if v is not value and (type(v) not in _HYPER_TYPES or v != value
                                           or (not v and copysign(1, v) != copysign(1, value))):
                        break
                else:
                    bound = last[3]
                    if f.bound is not bound:
                        f.use(bound)
                    return
        data, hypers = {}, {}
        for k, v in kwargs.items():
            if k in self._hyper_index:
                hypers[k] = v
            elif k in self._input_set:
                data[k] = v
            else:
                raise ValueError(f"unknown argument {k!r}; the model takes inputs "
                                 f"{self._input_names} and hyperparameters "
                                 f"{list(self._hyper_index)}")
        bound = self.bind(data, hypers)
        self._remember(len(kwargs), data, hypers, bound)
        f.use(bound)

    def _remember(self, n_kwargs: int, data: dict, hypers: dict, bound: "BoundArgs") -> None:
        if (any(data[n] is not a for n, a in zip(self._input_names, bound.arrays))
                or any(type(v) not in _HYPER_TYPES for v in hypers.values())):
            self._last_call = None
            return
        arrays = []
        for name, a in zip(self._input_names, bound.arrays):
            pointer = data_pointer(a)
            arrays.append((name, a, a.shape, a.strides, a.dtype, pointer, pointer.value))
        self._last_call = (n_kwargs, arrays, tuple(hypers.items()), bound)

    def _bind_data(self, f: "_Frame", data, hypers) -> None:
        if not hypers and type(data) is BoundArgs:
            f.use(data)
            return
        if data is None and not hypers and not self.inputs:
            f.use_defaults(self)
            return
        f.use(self.bind(data or {}, hypers))

    def _flat(self, theta_flat) -> np.ndarray:
        a = theta_flat
        if type(a) is not np.ndarray or a.dtype != self.dtype or not a.flags.c_contiguous:
            a = np.asarray(a)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"flat parameters must hold real numbers, got dtype {a.dtype}")
            a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.shape != (self.n_params,):
            raise ValueError(f"flat parameters must have shape ({self.n_params},), got "
                             f"{_shape_text(a.shape)}")
        return a

    def _check_out(self, g) -> None:
        if type(g) is not np.ndarray or g.dtype != self.dtype or g.shape != (self.n_params,):
            ok = False
        else:
            flags = g.flags
            ok = flags.c_contiguous and flags.writeable
        if not ok:
            raise ValueError(f"grad_out must be a writable C-contiguous {self.dtype.name} "
                             f"array of shape ({self.n_params},)")

    def _check_disjoint(self, theta_flat, grad_out, bound: "BoundArgs") -> None:
        """A ValueError if the flat parameters, grad_out and the batch's inputs share
        memory: the gradient written over the parameters or an input would change what
        the call reads, or what the next one does."""
        named = [("theta_flat", theta_flat), ("grad_out", grad_out)] + [
            (f"input {s.name!r}", a) for s, a in zip(self.inputs, bound.arrays)]
        for k, (first, a) in enumerate(named[:2]):
            for second, other in named[k + 1:]:
                if np.shares_memory(a, other):
                    raise ValueError(f"{first} and {second} share memory; the native call "
                                     "needs separate arrays for them")

    def _hyper_vector(self, hypers: dict) -> np.ndarray:
        if not hypers:
            return self._default_hypers
        v = self._default_hypers.copy()
        for k, x in hypers.items():
            if k not in self._hyper_index:
                raise ValueError(f"unknown hyperparameter {k!r}; the model's hyperparameters "
                                 f"are {list(self._hyper_index)}")
            a = np.asarray(x)
            if a.shape != () or a.dtype.kind not in "biuf":
                raise ValueError(f"hyperparameter {k!r} must be a real number, got {x!r}")
            v[self._hyper_index[k]] = float(a)
        return v

    def _check_inputs(self, data: dict):
        for k in data:
            if k not in self._input_set:
                raise ValueError(f"unknown input {k!r}; the model's inputs are "
                                 f"{self._input_names}")
        arrays, B, first = [], None, None
        for spec in self.inputs:
            if spec.name not in data:
                raise ValueError(f"missing input {spec.name!r}: expected an array of shape "
                                 f"{_shape_text(('B',) + spec.shape)}")
            a = np.asarray(data[spec.name])
            want = ("B",) + spec.shape
            if a.ndim != len(want) or a.shape[1:] != spec.shape:
                raise ValueError(f"input {spec.name!r} must have shape {_shape_text(want)}, "
                                 f"got {_shape_text(a.shape)}")
            if B is None:
                B, first = a.shape[0], spec.name
            elif a.shape[0] != B:
                raise ValueError(f"batch sizes disagree: input {first!r} has {B} samples, "
                                 f"input {spec.name!r} has {a.shape[0]}")
            if spec.is_int:
                a = _as_int(a, spec.name)
            else:
                a = np.ascontiguousarray(_as_real(a, f"input {spec.name!r}", self.dtype))
            arrays.append(a)
        if B is None:
            B = 1           # a model with no inputs: the objective is the loss itself
        elif B == 0:
            raise ValueError("the batch is empty: inputs need at least one sample")
        return arrays, B

    def _frame(self) -> "_Frame":
        f = getattr(self._tls, "frame", None)
        if f is None or f.work_size < self.code.work_size:
            # (a code unit compiled since may need more scratch space)
            f = self._tls.frame = _Frame(self)
            self._tls.fast = self._tls.flat_fast = None   # (they used the old frame's)
        return f

    def _run(self, fn, f: "_Frame") -> None:
        if self.threads > 1 and f.bound.B >= self.threads * PARALLEL_MIN_SAMPLES:
            return self._run_parallel(fn, f)
        rc = fn(f.address)
        if rc != 0:
            raise self._index_error(f.err, f.bound)

    def _run_parallel(self, fn, f: "_Frame") -> None:
        """Split the batch into one contiguous chunk per thread; each runs the native
        function (which releases the GIL) into its own buffers; chunk results are
        combined in chunk order, so the result is the same on every run for a given
        thread count. Each chunk's objective already includes the once-per-call terms,
        scaled as its reduction says, so mean chunks are weighted by their share of the
        batch and sum chunks add up."""
        from concurrent.futures import ThreadPoolExecutor
        if self._pool is None or self._pool._max_workers != self.threads:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lossc")
            forks.renew_in_child(self)
        bound, theta = f.bound, int(f.frame[0])
        chunks = bound.chunks(self.threads)

        # The workers read the parameters by address, so each task holds the arrays
        # behind it (the frame's own, or the caller's in f.keep): a call interrupted
        # while it waits (KeyboardInterrupt) returns with tasks still queued or running,
        # and the caller's next call replaces f.keep, which must not free the array
        # under them (a worker reading pages given back to the system crashes).
        def run(chunk, holds=(f, f.keep)):
            wf = self._frame()
            wf.use_address(theta)
            wf.use(chunk)
            rc = fn(wf.address)
            return rc, chunk, wf.value[0], wf.grad.copy(), wf.err.copy()

        results = list(self._pool.map(run, chunks))
        for rc, chunk, _, _, err in results:
            if rc != 0:
                raise self._index_error(err, chunk)
        weights = [c.B / bound.B if self.reduce == "mean" else 1.0 for c in chunks]
        f.value[0] = sum(w * r[2] for w, r in zip(weights, results))
        if fn is self._vg:
            f.grad[...] = 0
            for w, r in zip(weights, results):
                f.grad += w * r[3]

    def _after_fork_in_child(self) -> None:
        """In a child made by os.fork: the pool's threads stayed in the parent (work
        handed to them here would wait forever); the next parallel call makes a pool
        of the child's own. (runtime/forks.py)"""
        self._pool = None

    def _index_error(self, err, bound: "BoundArgs") -> ValueError:
        """The error of a native call that returned 1: err holds (check, sample, value),
        the check as -1 - check where the arithmetic computing the index overflowed."""
        check, sample, value = (int(v) for v in err[:3])
        overflow = check < 0
        check = -1 - check if overflow else check
        sample_in_chunk, sample = sample, sample + bound.start
        info = self.meta["index_checks"][check]
        ints = ", ".join(f"{s.name} = {int(a[sample_in_chunk])}"
                         for s, a in zip(self.inputs, bound.arrays) if s.is_int)
        what = (f"index {info['text']} overflows a 64-bit integer, so it" if overflow else
                f"index {info['text']} = {value}")
        return ValueError(f"{what} is out of range 0..{info['size'] - 1} "
                          f"at sample {sample} (line {info['line']}, col {info['col']}"
                          f"{'; ' + ints if ints else ''})")


_ndarray = np.ndarray          # (a global: one attribute lookup less, per parameter)
_SCALAR_TYPES = (float, int, np.float64, np.float32)
_HYPER_TYPES = (float, int)    # the hyperparameters a remembered call can be reused for


def _as_real(x, what: str, dtype: np.dtype) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}")
    return a.astype(dtype, copy=False)


def _as_int(a: np.ndarray, name: str) -> np.ndarray:
    """An int input as int64: any integer array whose values fit 64 bits (every signed
    dtype; uint64 up to 2^63 - 1), or a real array holding such whole numbers."""
    if a.dtype.kind in "ib" or (a.dtype.kind == "u" and a.dtype.itemsize < 8):
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind == "u":
        _refuse_first(a, a > np.iinfo(np.int64).max, name, "does not fit a 64-bit integer")
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind == "f":
        if a.dtype.itemsize < 8:
            # (exactly; a float16 compared with 2.0 ** 63 would overflow, with a warning)
            a = a.astype(np.float64)
        _refuse_first(a, ~np.isfinite(a), name, "it must hold integers")
        _refuse_first(a, a != np.round(a), name, "it must hold integers")
        # (float64 holds -2^63 and 2^63 exactly: the first fits int64, the second not)
        _refuse_first(a, (a < -2.0 ** 63) | (a >= 2.0 ** 63), name,
                      "does not fit a 64-bit integer")
        return np.ascontiguousarray(a, dtype=np.int64)
    raise TypeError(f"int input {name!r} must hold integers, got dtype {a.dtype}")


def _refuse_first(a: np.ndarray, bad: np.ndarray, name: str, why: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"int input {name!r} holds {a.flat[i]} at sample {i}; {why}")
